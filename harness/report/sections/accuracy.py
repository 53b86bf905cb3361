"""Accuracy vs gap: final accuracy per configuration, faceted by activation and clipping,
normalized loss, and accuracy by gap within variable-gap runs; each figure's data and drawing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D

from harness import names
from harness.report import tables
from harness.report.inputs import Inputs
from harness.report.load import CLIP_SETTING, FINAL_NORMALIZED_LOSS, LABEL, RUN_ID
from harness.report.plotting import (
    ACCURACY_AXIS,
    CHANCE_HANDLE_LABEL,
    CHANCE_STYLE,
    CI_TEXT,
    UNCERTAINTY_TEXT,
    add_legend,
    ci_lines,
    draw_chance,
    empty_panel,
    gap_axis,
    grid,
    log_y,
    save_png,
    share_panel,
    task_panels,
)
from harness.report.registry import Block, Figure, Heading, Plot, Section, Table, not_drawn

ACCURACY_CSV = "accuracy_by_gap.csv"
ACCURACY_FACETS_CSV = "accuracy_by_activation_clip.csv"
NORMALIZED_LOSS_CSV = "normalized_loss_vs_gap.csv"
EVAL_BY_GAP_CSV = "accuracy_by_gap_variable.csv"
U = UNCERTAINTY_TEXT


def accuracy_panel(ax: Axes, cell: pd.DataFrame, runs: pd.DataFrame, task: str,
                   colors: dict[str, str], markers: dict[str, str], n: str = "n") -> set[str]:
    """Mean accuracy vs gap lines (seed dots or clipped CI bands, see `ci_lines`), the task's
    chance level and the gap axis; returns the labels drawn."""
    raw = runs[runs[names.TASK_LABEL] == task]
    drawn = ci_lines(ax, cell, names.GAP, colors, markers, raw=raw,
                     value=names.FINAL_EVAL_ACCURACY, n=n)
    draw_chance(ax, runs[runs[names.TASK_LABEL] == task])
    gap_axis(ax, cell[names.GAP].astype(float).to_numpy())
    return drawn


def accuracy_vs_gap(runs: pd.DataFrame, table: pd.DataFrame, colors: dict[str, str],
                    markers: dict[str, str], experiment: str, path: Path) -> None:
    """One facet per task: final eval accuracy vs gap, one line per label, 95% CI over seeds.

    `table` is `tables.accuracy_by_gap(runs)`: the figure draws exactly its numbers.
    """
    tasks = sorted(runs[names.TASK_LABEL].dropna().unique())
    n = max(len(tasks), 1)
    fig = MplFigure(figsize=(4.6 * n + 2.2, 4.2), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    seen: set[str] = set()
    data = table.rename(columns={f"{names.FINAL_EVAL_ACCURACY}_mean": "mean"})
    for ax, task in zip(axes, tasks, strict=False):
        at_task = data[(data[names.TASK_LABEL] == task) & data["mean"].notna()]
        if at_task.empty:
            empty_panel(ax, "no final accuracy logged")
        else:
            seen.update(accuracy_panel(ax, at_task, runs, task, colors, markers,
                                       n="n_seeds"))
        share_panel(ax, task, "gap (time steps)", ACCURACY_AXIS)
    if not tasks:
        empty_panel(axes[0], "no runs with a task")
    fig.suptitle(f"{experiment}: final eval accuracy vs gap\n{CI_TEXT}")
    chance_handle = Line2D([], [], **CHANCE_STYLE, label=CHANCE_HANDLE_LABEL)
    add_legend(fig, sorted(seen), colors, markers, [chance_handle])
    save_png(fig, path)



SEQUENCES = "sequences"


BIN = "gap_bin"


def accuracy_facets(runs: pd.DataFrame, colors: dict[str, str], markers: dict[str, str],
                    experiment: str, path: Path) -> pd.DataFrame:
    """Final accuracy vs gap: one row per (task, clip setting), one column per activation."""
    group = [names.TASK_LABEL, CLIP_SETTING, names.ACTIVATION, LABEL, names.GAP]
    keyed = runs.assign(**{names.ACTIVATION: runs[names.ACTIVATION].fillna("?")})
    table = tables.mean_ci(keyed, group, names.FINAL_EVAL_ACCURACY, tables.ACCURACY_BOUNDS)
    settings = tables.clip_settings(runs)
    rows = [(t, c) for t in sorted(keyed[names.TASK_LABEL].dropna().unique()) for c in settings
            if ((keyed[names.TASK_LABEL] == t) & (keyed[CLIP_SETTING] == c)).any()]
    activations = sorted(keyed[names.ACTIVATION].unique())
    fig, axes = grid(max(len(rows), 1), max(len(activations), 1))
    seen: set[str] = set()
    for i, (task, setting) in enumerate(rows):
        for j, activation in enumerate(activations):
            ax = axes[i, j]
            cell = table[(table[names.TASK_LABEL] == task) & (table[CLIP_SETTING] == setting)
                         & (table[names.ACTIVATION] == activation) & table[tables.MEAN].notna()]
            if cell.empty:
                empty_panel(ax, "no runs")
            else:
                seen.update(accuracy_panel(ax, cell, runs, task, colors, markers))
                ax.set_ylim(-0.03, 1.03)
                ax.grid(True, alpha=0.3)
            ax.set_title(f"{task} · clip {setting} · activation {activation}", fontsize=9)
            ax.set_xlabel("gap (time steps)")
            ax.set_ylabel(ACCURACY_AXIS, fontsize=8)
    if not rows:
        empty_panel(axes[0, 0], "no runs with a task")
    fig.suptitle(f"{experiment}: final eval accuracy vs gap\nrows: task and clip setting; "
                 f"columns: activation\n{CI_TEXT}")
    add_legend(fig, sorted(seen), colors, markers,
            [Line2D([], [], **CHANCE_STYLE, label=CHANCE_HANDLE_LABEL)])
    save_png(fig, path)
    return table


def normalized_loss_vs_gap(runs: pd.DataFrame, colors: dict[str, str], markers: dict[str, str],
                           experiment: str, path: Path) -> pd.DataFrame:
    """Final eval loss / chance loss vs gap on a log axis, one panel per task; 1 = chance."""
    data = runs[np.isfinite(runs[FINAL_NORMALIZED_LOSS].astype(float))
                & (runs[FINAL_NORMALIZED_LOSS] > 0)]
    table = tables.mean_ci(data, [names.TASK_LABEL, LABEL, names.GAP], FINAL_NORMALIZED_LOSS,
                           tables.NONNEGATIVE)
    tasks = sorted(runs[names.TASK_LABEL].dropna().unique())
    fig, axes = task_panels(tasks)
    seen: set[str] = set()
    for ax, task in zip(axes, tasks, strict=False):
        panel = table[table[names.TASK_LABEL] == task].copy()
        if panel.empty:
            empty_panel(ax, "no final eval loss logged")
            continue
        # A log axis cannot show a band reaching zero or below: floor it at the smallest mean.
        floor = float(panel[tables.MEAN].min()) / 10
        panel[tables.CI_LOW] = panel[tables.CI_LOW].clip(lower=floor)
        seen.update(ci_lines(ax, panel, names.GAP, colors, markers,
                             raw=data[data[names.TASK_LABEL] == task],
                             value=FINAL_NORMALIZED_LOSS))
        ax.axhline(1.0, **CHANCE_STYLE)
        log_y(ax)
        gap_axis(ax, panel[names.GAP].astype(float).to_numpy())
        ax.set_title(f"task: {task}")
        ax.set_xlabel("gap (time steps)")
        ax.set_ylabel("final eval loss / chance loss (log scale)")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    fig.suptitle(f"{experiment}: normalized loss vs gap (1 = the best memoryless predictor)\n"
                 f"{CI_TEXT}")
    add_legend(fig, sorted(seen), colors, markers,
            [Line2D([], [], **CHANCE_STYLE, label="chance loss (normalized loss 1)")])
    save_png(fig, path)
    return table


def eval_by_gap_points(runs: pd.DataFrame, by_gap: pd.DataFrame) -> pd.DataFrame:
    """Each run's accuracy in each gap bin of its eval_by_gap.csv, with its task and label."""
    data = by_gap.merge(runs[[RUN_ID, names.TASK_LABEL, LABEL]], on=RUN_ID, how="inner")
    data = data.dropna(subset=[names.TASK_LABEL, "gap", "eval_accuracy"])
    return data.rename(columns={"gap": BIN})


def eval_by_gap_table(runs: pd.DataFrame, by_gap: pd.DataFrame) -> pd.DataFrame:
    """Per (task, label, gap bin): mean over runs of each run's accuracy in that bin, 95% CI."""
    data = eval_by_gap_points(runs, by_gap)
    table = tables.mean_ci(data, [names.TASK_LABEL, LABEL, BIN], "eval_accuracy",
                           tables.ACCURACY_BOUNDS)
    seqs = data.groupby([names.TASK_LABEL, LABEL, BIN], sort=True)[SEQUENCES].sum().reset_index()
    return table.merge(seqs, on=[names.TASK_LABEL, LABEL, BIN], how="left")


# The rule of a line over runs rather than seeds (several runs may share a seed).
RUNS_UNCERTAINTY_TEXT = (f"line: mean over runs; with ≤{tables.SEED_POINTS_MAX} runs at a point "
                         "every run is a dot and no band is drawn; with more, band: Student-t "
                         "95% CI, clipped to the quantity's range")


def eval_by_gap(table: pd.DataFrame, by_gap: pd.DataFrame, runs: pd.DataFrame,
                colors: dict[str, str], markers: dict[str, str], experiment: str,
                path: Path) -> None:
    """Accuracy at the final evaluation by each sequence's gap, within variable-gap runs.

    `table` is `eval_by_gap_table(runs, by_gap)`; each run's own value (from `by_gap`) is a
    dot where a bin has few runs (`plotting.ci_lines`), never a t band over one or two."""
    points = eval_by_gap_points(runs, by_gap)
    tasks = sorted(table[names.TASK_LABEL].unique())
    fig, axes = task_panels(tasks)
    seen: set[str] = set()
    for ax, task in zip(axes, tasks, strict=False):
        panel = table[table[names.TASK_LABEL] == task]
        seen.update(ci_lines(ax, panel, BIN, colors, markers,
                             raw=points[points[names.TASK_LABEL] == task],
                             value="eval_accuracy"))
        chance = runs.loc[runs[names.TASK_LABEL] == task, names.CHANCE_ACCURACY].dropna()
        if len(chance):
            ax.axhline(float(chance.mean()), **CHANCE_STYLE)
        share_panel(ax, task, "gap of the sequence (time steps)",
                    "eval accuracy at the final evaluation")
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    fig.suptitle(f"{experiment}: accuracy by gap within variable-gap runs\n"
                 f"mean over runs; ≤{tables.SEED_POINTS_MAX} runs: every run a dot, no band; "
                 "more: Student-t 95% CI band clipped to [0, 1]")
    add_legend(fig, sorted(seen), colors, markers,
            [Line2D([], [], **CHANCE_STYLE, label=CHANCE_HANDLE_LABEL)])
    save_png(fig, path)


# --- the section -------------------------------------------------------------------------

ACCURACY = Figure(
    id="accuracy_vs_gap", section="accuracy", title="Final accuracy vs gap",
    caption=f"Final eval accuracy against the gap, one panel per task: {U} ([0, 1]); the "
    "dashed line is chance accuracy.",
    csvs=(ACCURACY_CSV,),
    data=lambda r: Plot(args=(r.runs, r.accuracy, *r.style), csvs=((ACCURACY_CSV, r.accuracy),)),
    draw=accuracy_vs_gap)

FACETS = Figure(
    id="accuracy_by_activation_clip", section="accuracy",
    title="Accuracy vs gap by activation and clipping",
    caption="Final eval accuracy against the gap, one row of panels per task and clip "
    "setting, one column per activation; lines are configurations in their model's colour; "
    f"{U} ([0, 1]); chance dashed.",
    csvs=(ACCURACY_FACETS_CSV,),
    data=lambda r: Plot(args=(r.runs, *r.style), returns=ACCURACY_FACETS_CSV),
    draw=accuracy_facets, weight=9)

NORMALIZED_LOSS = Figure(
    id="normalized_loss_vs_gap", section="accuracy", title="Normalized loss vs gap",
    caption="Final eval loss divided by the chance loss (the loss of the best memoryless "
    f"predictor; dashed at 1) against the gap, log scale; {U} (≥ 0; its lower edge floored "
    "for the log axis).",
    csvs=(NORMALIZED_LOSS_CSV,),
    data=lambda r: Plot(args=(r.runs, *r.style), returns=NORMALIZED_LOSS_CSV),
    draw=normalized_loss_vs_gap, weight=4)


def _by_gap(r: Inputs) -> Plot:
    table = eval_by_gap_table(r.runs, r.reads.by_gap_raw)
    if table.empty:
        return not_drawn()  # no variable-gap runs: nothing to say
    return Plot(args=(table, r.reads.by_gap_raw, r.runs, *r.style),
                csvs=((EVAL_BY_GAP_CSV, table),))


EVAL_BY_GAP = Figure(
    id="accuracy_by_gap_variable", section="accuracy",
    title="Accuracy by gap within variable-gap runs",
    caption=f"From each run's {names.EVAL_BY_GAP_ARTIFACT}: accuracy at the final evaluation "
    f"for the sequences of each gap; {RUNS_UNCERTAINTY_TEXT} ([0, 1]).",
    csvs=(EVAL_BY_GAP_CSV,), data=_by_gap, draw=eval_by_gap)


def blocks(r: Inputs) -> list[Block]:
    header, rows = tables.accuracy_display(r.accuracy)
    return [ACCURACY, FACETS, NORMALIZED_LOSS, EVAL_BY_GAP,
            Heading("Final accuracy by gap"), Table(header, rows)]


SECTION = Section(id="accuracy", heading="Accuracy vs gap", toc="Accuracy vs gap",
                  figures=(ACCURACY, FACETS, NORMALIZED_LOSS, EVAL_BY_GAP), blocks=blocks)
