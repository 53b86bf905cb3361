"""Clipping × activation: mean final accuracy per clip setting and gap, per model."""

from __future__ import annotations

from harness.report import gap_figures
from harness.report.inputs import Inputs
from harness.report.registry import Block, Figure, Plot, Section, not_drawn

CLIP_HEATMAP_CSV = "clip_activation_heatmap.csv"


def _data(r: Inputs) -> Plot:
    if r.n_clip_settings < 2:
        return not_drawn(f"Not drawn: the experiment has {r.n_clip_settings} clip setting(s); "
                         "the heatmaps need at least two")
    return Plot(args=(r.runs, r.experiment), returns=CLIP_HEATMAP_CSV)


CLIP_HEATMAP = Figure(
    id="clip_activation_heatmap", section="clipping", title="Clipping × gap, per model",
    caption="Mean final eval accuracy over seeds for every clip setting (rows) and gap "
    "(columns), one panel per task and model variant; one shared colour range, accuracy 0 to "
    "1, with each cell's value printed.",
    csvs=(CLIP_HEATMAP_CSV,), data=_data, draw=gap_figures.clip_heatmaps)


def blocks(r: Inputs) -> list[Block]:
    return [CLIP_HEATMAP]


SECTION = Section(id="clipping", heading="Clipping × activation", toc="Clipping × activation",
                  figures=(CLIP_HEATMAP,), blocks=blocks)
