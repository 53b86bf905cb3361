"""Clipping × activation: mean final accuracy per clip setting and gap, per model; the
heatmaps' data and drawing."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure as MplFigure

from harness import names
from harness.report import tables
from harness.report.inputs import Inputs
from harness.report.load import CLIP_SETTING, MODEL_VARIANT
from harness.report.plotting import HEATMAP_CMAP, save_png
from harness.report.registry import Block, Figure, Plot, Section, not_drawn

CLIP_HEATMAP_CSV = "clip_activation_heatmap.csv"


def clip_heatmaps(runs: pd.DataFrame, experiment: str, path: Path) -> pd.DataFrame:
    """Mean final accuracy over (clip setting × gap), one panel per (task, model variant).

    Returns the drawn table; draws nothing (and returns an empty frame) when the experiment
    has fewer than two clip settings.
    """
    settings = tables.clip_settings(runs)
    group = [names.TASK_LABEL, MODEL_VARIANT, CLIP_SETTING, names.GAP]
    table = tables.mean_ci(runs, group, names.FINAL_EVAL_ACCURACY)
    if len(settings) < 2:
        return table.iloc[0:0]
    panels = sorted(table.groupby([names.TASK_LABEL, MODEL_VARIANT]).groups)
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = MplFigure(figsize=(max(4.6 * cols + 1.6, 8.5), 0.5 * len(settings) * rows + 2.0 * rows
                          + 1.0), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    cmap = matplotlib.colormaps[HEATMAP_CMAP].with_extremes(bad="0.85")
    norm = Normalize(vmin=0.0, vmax=1.0)
    mesh = None
    for ax, (task, variant) in zip(axes, panels, strict=False):
        panel = table[(table[names.TASK_LABEL] == task) & (table[MODEL_VARIANT] == variant)]
        grid = panel.pivot(index=CLIP_SETTING, columns=names.GAP, values=tables.MEAN)
        grid = grid.reindex(index=[s for s in settings if s in set(panel[CLIP_SETTING])],
                            columns=sorted(grid.columns))
        values = grid.to_numpy(dtype=float)
        mesh = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
        for (r, c), value in np.ndenumerate(values):
            if np.isfinite(value):
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if value > 0.6 else "white")
        ax.set_xticks(range(len(grid.columns)), [str(int(g)) for g in grid.columns])
        ax.set_yticks(range(len(grid.index)), list(grid.index))
        ax.set_title(f"{task} · {variant}")
        ax.set_xlabel("gap (time steps)")
        ax.set_ylabel("clipping (mode threshold)")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if mesh is not None:
        fig.colorbar(mesh, ax=[a for a in axes if a.get_visible()],
                     label="final eval accuracy (mean over seeds)")
    fig.suptitle(f"{experiment}: final eval accuracy by clipping and gap, per model\n"
                 "grey: no run with a final accuracy")
    save_png(fig, path)
    return table


# --- the section -------------------------------------------------------------------------

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
    csvs=(CLIP_HEATMAP_CSV,), data=_data, draw=clip_heatmaps)


def blocks(r: Inputs) -> list[Block]:
    return [CLIP_HEATMAP]


SECTION = Section(id="clipping", heading="Clipping × activation", toc="Clipping × activation",
                  figures=(CLIP_HEATMAP,), blocks=blocks)
