"""Figures of results against the gap: accuracy faceted by activation and clipping, normalized
loss, steps to solve, clipping × gap heatmaps, and accuracy by gap within variable-gap runs.

Each function returns the frame it drew (the report writes it as the figure's CSV) and draws
with the rules of `figures`: bare `Figure` objects on an Agg canvas, the model's colour and
the label's marker in every figure, titles, axis labels with units and a legend.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness import names
from harness.report import tables
from harness.report.figures import (
    ACCURACY_AXIS,
    CHANCE_HANDLE_LABEL,
    CHANCE_STYLE,
    CI_TEXT,
    Margins,
    _empty,
    _gap_axis,
    _legend,
    accuracy_panel,
    ci_lines,
    fixed,
    log_y,
    panel_grid,
    save_png,
)
from harness.report.load import (
    CLIP_SETTING,
    FINAL_NORMALIZED_LOSS,
    LABEL,
    MODEL_VARIANT,
    NO_CLIP_SETTING,
    RUN_ID,
)

HEATMAP_CMAP = "viridis"  # perceptually uniform, readable with colour-vision deficiencies
MEAN_ACCURACY = f"{names.FINAL_EVAL_ACCURACY}_mean"
SEQUENCES = "sequences"
BIN = "gap_bin"
N_SOLVED, N_RUNS = tables.N_SOLVED, tables.N_RUNS
SOLVE_RATE, SOLVE_RATE_LOW, SOLVE_RATE_HIGH = (tables.SOLVE_RATE, tables.SOLVE_RATE_LOW,
                                               tables.SOLVE_RATE_HIGH)
MAX_COLS = 4


def clip_settings(runs: pd.DataFrame) -> list[str]:
    """The clip settings of the experiment, `none` first, then by mode and threshold."""
    keyed = runs[[CLIP_SETTING, names.CLIP_MODE, names.CLIP_THRESHOLD]].drop_duplicates(
        CLIP_SETTING)
    keyed = keyed.assign(_none=keyed[CLIP_SETTING] != NO_CLIP_SETTING)
    keyed = keyed.sort_values(["_none", names.CLIP_MODE, names.CLIP_THRESHOLD, CLIP_SETTING],
                              na_position="last")
    return keyed[CLIP_SETTING].astype(str).tolist()


def _grid(rows: int, cols: int, width: float = 4.0,
          height: float = 3.3) -> tuple[Figure, np.ndarray]:
    size = (max(width * cols + 2.6, 9.5), height * rows + 1.2)
    margins = Margins() if fixed(rows * cols) else None
    fig = Figure(figsize=size, layout=None if margins else "constrained")
    return fig, panel_grid(fig, rows, cols, *size, margins)


def accuracy_facets(runs: pd.DataFrame, colors: dict[str, str], markers: dict[str, str],
                    experiment: str, path: Path) -> pd.DataFrame:
    """Final accuracy vs gap: one row per (task, clip setting), one column per activation."""
    group = [names.TASK_LABEL, CLIP_SETTING, names.ACTIVATION, LABEL, names.GAP]
    keyed = runs.assign(**{names.ACTIVATION: runs[names.ACTIVATION].fillna("?")})
    table = tables.mean_ci(keyed, group, names.FINAL_EVAL_ACCURACY, tables.ACCURACY_BOUNDS)
    settings = clip_settings(runs)
    rows = [(t, c) for t in sorted(keyed[names.TASK_LABEL].dropna().unique()) for c in settings
            if ((keyed[names.TASK_LABEL] == t) & (keyed[CLIP_SETTING] == c)).any()]
    activations = sorted(keyed[names.ACTIVATION].unique())
    fig, axes = _grid(max(len(rows), 1), max(len(activations), 1))
    seen: set[str] = set()
    for i, (task, setting) in enumerate(rows):
        for j, activation in enumerate(activations):
            ax = axes[i, j]
            cell = table[(table[names.TASK_LABEL] == task) & (table[CLIP_SETTING] == setting)
                         & (table[names.ACTIVATION] == activation) & table[tables.MEAN].notna()]
            if cell.empty:
                _empty(ax, "no runs")
            else:
                seen.update(accuracy_panel(ax, cell, runs, task, colors, markers))
                ax.set_ylim(-0.03, 1.03)
                ax.grid(True, alpha=0.3)
            ax.set_title(f"{task} · clip {setting} · activation {activation}", fontsize=9)
            ax.set_xlabel("gap (time steps)")
            ax.set_ylabel(ACCURACY_AXIS, fontsize=8)
    if not rows:
        _empty(axes[0, 0], "no runs with a task")
    fig.suptitle(f"{experiment}: final eval accuracy vs gap\nrows: task and clip setting; "
                 f"columns: activation\n{CI_TEXT}")
    _legend(fig, sorted(seen), colors, markers,
            [Line2D([], [], **CHANCE_STYLE, label=CHANCE_HANDLE_LABEL)])
    save_png(fig, path)
    return table


def _task_panels(tasks: list[str]) -> tuple[Figure, np.ndarray]:
    n = max(len(tasks), 1)
    cols = min(n, MAX_COLS)
    fig = Figure(figsize=(max(4.4 * cols + 2.6, 8.5), 3.9 * math.ceil(n / cols) + 0.8),
                 layout="constrained")
    return fig, fig.subplots(math.ceil(n / cols), cols, squeeze=False).ravel()


def normalized_loss_vs_gap(runs: pd.DataFrame, colors: dict[str, str], markers: dict[str, str],
                           experiment: str, path: Path) -> pd.DataFrame:
    """Final eval loss / chance loss vs gap on a log axis, one panel per task; 1 = chance."""
    data = runs[np.isfinite(runs[FINAL_NORMALIZED_LOSS].astype(float))
                & (runs[FINAL_NORMALIZED_LOSS] > 0)]
    table = tables.mean_ci(data, [names.TASK_LABEL, LABEL, names.GAP], FINAL_NORMALIZED_LOSS,
                           tables.NONNEGATIVE)
    tasks = sorted(runs[names.TASK_LABEL].dropna().unique())
    fig, axes = _task_panels(tasks)
    seen: set[str] = set()
    for ax, task in zip(axes, tasks, strict=False):
        panel = table[table[names.TASK_LABEL] == task].copy()
        if panel.empty:
            _empty(ax, "no final eval loss logged")
            continue
        # A log axis cannot show a band reaching zero or below: floor it at the smallest mean.
        floor = float(panel[tables.MEAN].min()) / 10
        panel[tables.CI_LOW] = panel[tables.CI_LOW].clip(lower=floor)
        seen.update(ci_lines(ax, panel, names.GAP, colors, markers,
                             raw=data[data[names.TASK_LABEL] == task],
                             value=FINAL_NORMALIZED_LOSS))
        ax.axhline(1.0, **CHANCE_STYLE)
        log_y(ax)
        _gap_axis(ax, panel[names.GAP].astype(float).to_numpy())
        ax.set_title(f"task: {task}")
        ax.set_xlabel("gap (time steps)")
        ax.set_ylabel("final eval loss / chance loss (log scale)")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    fig.suptitle(f"{experiment}: normalized loss vs gap (1 = the best memoryless predictor)\n"
                 f"{CI_TEXT}")
    _legend(fig, sorted(seen), colors, markers,
            [Line2D([], [], **CHANCE_STYLE, label="chance loss (normalized loss 1)")])
    save_png(fig, path)
    return table


def steps_to_solve_vs_gap(runs: pd.DataFrame, colors: dict[str, str], markers: dict[str, str],
                          experiment: str, path: Path) -> pd.DataFrame:
    """Training steps until solved vs gap, solved runs only, one panel per task.

    The CSV also counts the solved runs and the result runs of each point (`n_solved`,
    `n_runs`) and gives the solve rate with its Wilson interval (`tables.solve_rates`).
    """
    group = [names.TASK_LABEL, LABEL, names.GAP]
    solved = runs[runs[names.STATUS] == names.SOLVED]
    table = tables.mean_ci(solved, group, names.STEPS_TO_SOLVE, tables.NONNEGATIVE)
    table = tables.solve_rates(runs, group).merge(table, on=group, how="left")
    table[tables.N] = table[tables.N].fillna(0).astype(int)
    tasks = sorted(runs[names.TASK_LABEL].dropna().unique())
    fig, axes = _task_panels(tasks)
    seen: set[str] = set()
    for ax, task in zip(axes, tasks, strict=False):
        panel = table[(table[names.TASK_LABEL] == task) & table[tables.MEAN].notna()]
        if panel.empty:
            _empty(ax, "no run solved this task")
        else:
            seen.update(ci_lines(ax, panel, names.GAP, colors, markers,
                                 raw=solved[solved[names.TASK_LABEL] == task],
                                 value=names.STEPS_TO_SOLVE))
            _gap_axis(ax, table.loc[table[names.TASK_LABEL] == task, names.GAP].astype(float)
                      .to_numpy())
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
        ax.set_title(f"task: {task}")
        ax.set_xlabel("gap (time steps)")
        ax.set_ylabel("steps to solve (training steps)")
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    fig.suptitle(f"{experiment}: training steps until solved vs gap (solved runs only)\n"
                 f"{CI_TEXT}")
    if seen:
        _legend(fig, sorted(seen), colors, markers, [])
    save_png(fig, path)
    return table[[*group, N_SOLVED, N_RUNS, SOLVE_RATE, SOLVE_RATE_LOW, SOLVE_RATE_HIGH,
                  tables.MEAN, tables.STD, tables.CI_LOW,
                  tables.CI_HIGH, tables.N]]


# Configurations at one gap are drawn side by side, this far apart in log-gap units.
DODGE = 0.025


def solve_rate_vs_gap(runs: pd.DataFrame, colors: dict[str, str], markers: dict[str, str],
                      experiment: str, path: Path) -> pd.DataFrame:
    """Share of result runs solved vs gap with Wilson 95% error bars, one panel per task.

    Returns the drawn table (`tables.solve_rates` by task, label and gap). Configurations at
    one gap are dodged sideways (by DODGE in log units) so their bars do not cover each other.
    """
    group = [names.TASK_LABEL, LABEL, names.GAP]
    table = tables.solve_rates(runs, group)
    tasks = sorted(table[names.TASK_LABEL].unique())
    fig, axes = _task_panels(tasks)
    seen: set[str] = set()
    for ax, task in zip(axes, tasks, strict=False):
        panel = table[table[names.TASK_LABEL] == task]
        labels = sorted(panel[LABEL].unique())
        for i, label in enumerate(labels):
            line = panel[panel[LABEL] == label].sort_values(names.GAP)
            shift = np.exp(DODGE * (i - (len(labels) - 1) / 2))
            xs = line[names.GAP].astype(float).to_numpy() * shift
            rate = line[SOLVE_RATE].to_numpy(dtype=float)
            errors = np.vstack([rate - line[SOLVE_RATE_LOW].to_numpy(dtype=float),
                                line[SOLVE_RATE_HIGH].to_numpy(dtype=float) - rate])
            ax.errorbar(xs, rate, yerr=errors, color=colors[label], marker=markers[label],
                        ms=5, lw=1.4, capsize=3, elinewidth=1.0)
            seen.add(str(label))
        _gap_axis(ax, panel[names.GAP].astype(float).to_numpy())
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"task: {task}")
        ax.set_xlabel("gap (time steps)")
        ax.set_ylabel("solve rate (share of result runs solved)")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    if not tasks:
        _empty(axes[0], "no result runs")
    fig.suptitle(f"{experiment}: solve rate vs gap\nerror bars: Wilson 95% interval "
                 "(never empty at 0 of n or n of n)")
    if seen:
        _legend(fig, sorted(seen), colors, markers, [])
    save_png(fig, path)
    return table


def clip_heatmaps(runs: pd.DataFrame, experiment: str, path: Path) -> pd.DataFrame:
    """Mean final accuracy over (clip setting × gap), one panel per (task, model variant).

    Returns the drawn table; draws nothing (and returns an empty frame) when the experiment
    has fewer than two clip settings.
    """
    settings = clip_settings(runs)
    group = [names.TASK_LABEL, MODEL_VARIANT, CLIP_SETTING, names.GAP]
    table = tables.mean_ci(runs, group, names.FINAL_EVAL_ACCURACY)
    if len(settings) < 2:
        return table.iloc[0:0]
    panels = sorted(table.groupby([names.TASK_LABEL, MODEL_VARIANT]).groups)
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(max(4.6 * cols + 1.6, 8.5), 0.5 * len(settings) * rows + 2.0 * rows
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
    dot where a bin has few runs (`figures.ci_lines`), never a t band over one or two."""
    points = eval_by_gap_points(runs, by_gap)
    tasks = sorted(table[names.TASK_LABEL].unique())
    fig, axes = _task_panels(tasks)
    seen: set[str] = set()
    for ax, task in zip(axes, tasks, strict=False):
        panel = table[table[names.TASK_LABEL] == task]
        seen.update(ci_lines(ax, panel, BIN, colors, markers,
                             raw=points[points[names.TASK_LABEL] == task],
                             value="eval_accuracy"))
        chance = runs.loc[runs[names.TASK_LABEL] == task, names.CHANCE_ACCURACY].dropna()
        if len(chance):
            ax.axhline(float(chance.mean()), **CHANCE_STYLE)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"task: {task}")
        ax.set_xlabel("gap of the sequence (time steps)")
        ax.set_ylabel("eval accuracy at the final evaluation")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    fig.suptitle(f"{experiment}: accuracy by gap within variable-gap runs\n"
                 f"mean over runs; ≤{tables.SEED_POINTS_MAX} runs: every run a dot, no band; "
                 "more: Student-t 95% CI band clipped to [0, 1]")
    _legend(fig, sorted(seen), colors, markers,
            [Line2D([], [], **CHANCE_STYLE, label=CHANCE_HANDLE_LABEL)])
    save_png(fig, path)
