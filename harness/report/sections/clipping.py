"""Clipping: what it did per threshold, measured (`harness.report.clip_effect`: clip rate,
largest pre-clip norm, divergence, gap held against no clipping), and the clipping × gap
heatmaps per model; the heatmaps' data and drawing."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.colors import Normalize
from matplotlib.figure import Figure as MplFigure
from matplotlib.patches import Rectangle

from harness import names
from harness.report import clip_effect, criteria, held, tables
from harness.report.inputs import Inputs
from harness.report.load import CLIP_SETTING, LABEL, MODEL_VARIANT
from harness.report.plotting import HEATMAP_CMAP, save_png
from harness.report.registry import Block, Figure, Items, Plot, Section, Table, Text, not_drawn

CLIP_HEATMAP_CSV = "clip_activation_heatmap.csv"


MEASURE, HELD_CELL = "measure", "gap_held"  # columns of CLIP_HEATMAP_CSV beside mean_ci's


def heatmap_table(runs: pd.DataFrame, answers: pd.DataFrame) -> pd.DataFrame:
    """Per (task, model variant, clip setting, gap): the mean of the task's measure over seeds
    (`criteria.measure`: final accuracy, or normalized MSE for a regression task; column
    MEASURE names it), and HELD_CELL: whether that gap is the gap held (`held`) of the one
    configuration of that row (left unmarked where several configurations share the row)."""
    group = [names.TASK_LABEL, MODEL_VARIANT, CLIP_SETTING, names.GAP]
    frames = []
    for _, at_task in runs.groupby(names.TASK_LABEL, sort=True):
        measure = criteria.measure(at_task)
        frames.append(tables.mean_ci(at_task, group, measure.column).assign(
            **{MEASURE: measure.column}))
    table = (pd.concat(frames, ignore_index=True) if frames
             else tables.mean_ci(runs, group, names.FINAL_EVAL_ACCURACY).assign(**{MEASURE: ""}))
    rows = runs.drop_duplicates([names.TASK_LABEL, LABEL])[[names.TASK_LABEL, LABEL,
                                                            *group[1:3]]]
    keyed = answers.merge(rows, on=[names.TASK_LABEL, LABEL], how="inner")
    unique = keyed.groupby(group[:3]).filter(lambda g: len(g) == 1)
    held_at = {(t, v, c): held.count(g) for t, v, c, g in zip(
        unique[names.TASK_LABEL], unique[MODEL_VARIANT], unique[CLIP_SETTING],
        unique[held.GAP_HELD], strict=True)}
    table[HELD_CELL] = [held_at.get((t, v, c)) == int(g) for t, v, c, g in zip(
        table[names.TASK_LABEL], table[MODEL_VARIANT], table[CLIP_SETTING], table[names.GAP],
        strict=True)]
    return table


def clip_heatmaps(table: pd.DataFrame, settings: list[str], experiment: str,
                  path: Path) -> None:
    """`heatmap_table` drawn: the measure over (clip setting × gap), one panel per (task, model
    variant); the gap held of each row framed. Accuracy and normalized MSE share one colour
    map, the MSE's reversed (bright is good in both), each on 0 to 1 with its own colour bar."""
    panels = sorted(table.groupby([names.TASK_LABEL, MODEL_VARIANT]).groups)
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = MplFigure(figsize=(max(4.6 * cols + 1.6, 8.5), 0.5 * len(settings) * rows + 2.0 * rows
                          + 1.0), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    norm = Normalize(vmin=0.0, vmax=1.0)
    meshes: dict[str, object] = {}
    for ax, (task, variant) in zip(axes, panels, strict=False):
        panel = table[(table[names.TASK_LABEL] == task) & (table[MODEL_VARIANT] == variant)]
        measure = str(panel[MEASURE].iloc[0])
        loss = measure != names.FINAL_EVAL_ACCURACY
        cmap = matplotlib.colormaps[HEATMAP_CMAP]
        cmap = (cmap.reversed() if loss else cmap).with_extremes(bad="0.85")
        grid = panel.pivot(index=CLIP_SETTING, columns=names.GAP, values=tables.MEAN)
        grid = grid.reindex(index=[s for s in settings if s in set(panel[CLIP_SETTING])],
                            columns=sorted(grid.columns))
        values = grid.to_numpy(dtype=float)
        mesh = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
        meshes.setdefault(measure, mesh)
        for (r, c), value in np.ndenumerate(values):
            if np.isfinite(value):
                bright = value < 0.4 if loss else value > 0.6
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if bright else "white")
        framed = panel[panel[HELD_CELL]]
        for setting, gap in zip(framed[CLIP_SETTING], framed[names.GAP], strict=True):
            r, c = list(grid.index).index(setting), list(grid.columns).index(gap)
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="#d62728", lw=2.4))
        ax.set_xticks(range(len(grid.columns)), [str(int(g)) for g in grid.columns])
        ax.set_yticks(range(len(grid.index)), list(grid.index))
        ax.set_title(f"{task} · {variant}")
        ax.set_xlabel("gap (time steps)")
        ax.set_ylabel("clipping (mode threshold)")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for measure, mesh in meshes.items():  # side by side at the right
        label = ("final eval accuracy" if measure == names.FINAL_EVAL_ACCURACY
                 else "final normalized MSE (eval / memoryless)")
        fig.colorbar(mesh, ax=[a for a in axes if a.get_visible()],  # type: ignore[arg-type]
                     label=f"{label} (mean over seeds)")
    fig.suptitle(f"{experiment}: final eval accuracy (normalized MSE on regression tasks) by "
                 "clipping and gap, per model\nframed: the gap held; grey: no run with a value")
    save_png(fig, path)


# --- the section -------------------------------------------------------------------------

def _data(r: Inputs) -> Plot:
    if r.n_clip_settings < 2:
        return not_drawn(f"Not drawn: the experiment has {r.n_clip_settings} clip setting(s); "
                         "the heatmaps need at least two")
    table = heatmap_table(r.runs, r.answers)
    return Plot(args=(table, tables.clip_settings(r.runs), r.experiment),
                csvs=((CLIP_HEATMAP_CSV, table),))


CLIP_HEATMAP = Figure(
    id="clip_activation_heatmap", section="clipping", title="Clipping × gap, per model",
    caption="Mean over seeds of each task's own measure, final eval accuracy (normalized MSE, "
    "eval MSE / the memoryless MSE, on a regression task), for every clip setting (rows) and "
    "gap (columns), one panel per task and model variant, each cell's value printed; one "
    "colour range, 0 to 1, reversed for the MSE so that bright is good in both. Framed in red: "
    "the gap held of the row's configuration, by the headline's rule (not framed where "
    "several configurations share a row, or none held).",
    csvs=(CLIP_HEATMAP_CSV,), data=_data, draw=clip_heatmaps)


INTRO = Markup(
    "Per model run with clipping, one row per threshold and one without where it ran: the "
    "share of training steps where clipping fired (<code>{rate}</code>), the largest gradient "
    "norm before clipping of each run (<code>{norm}</code>, its range over the runs), the runs "
    "that diverged, and the gap held (by the rule named beside it) against the same model "
    "without clipping. A threshold that never fired changed nothing. Data: <code>{csv}</code>."
).format(rate=names.CLIP_RATE_TOTAL, norm=names.GRAD_NORM_PRE_CLIP_MAX,
         csv=clip_effect.CLIPPING_CSV)


def blocks(r: Inputs) -> list[Block]:
    table = r.clipping
    if table.empty:
        return [Text(clip_effect.NO_CLIPPING_TEXT, "none"), CLIP_HEATMAP]
    return [Text(INTRO), Table(list(clip_effect.DISPLAY_HEADER), clip_effect.display_rows(table),
                               cls="wrap"),
            Items(clip_effect.sentences(table)), CLIP_HEATMAP]


SECTION = Section(id="clipping", heading="Clipping", toc="Clipping",
                  figures=(CLIP_HEATMAP,), blocks=blocks)
