"""The Gradients section's figures, drawn from the frames of `harness.report.gradients`.

Same rules as `figures`: bare `Figure` objects on an Agg canvas, one colour (and marker) per
configuration label in every figure, the colour-blind palette for labels, and a panel that
says so wherever a figure has nothing to draw.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullFormatter, ScalarFormatter

from harness import names
from harness.cells import CELLS
from harness.report import gradients as g
from harness.report import tables
from harness.report.figures import (
    CI_TEXT,
    GRAD_SYMBOL,
    LEGEND_IN,
    Margins,
    _empty,
    _gap_axis,
    _legend,
    ci_lines,
    fixed,
    log_y,
    panel_grid,
    save_png,
)
from harness.report.load import LABEL, RUN_NAME, STEP

# Perceptually uniform and readable with the common colour-vision deficiencies.
HEATMAP_CMAP = "viridis"
THRESHOLD_STYLE = {"ls": "--", "color": "0.2", "lw": 1.3}
REFERENCE_STYLE = {"ls": ":", "color": "0.45", "lw": 1.2}
_BLOCK_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))
MAX_COLS = 3
MIN_WIDTH = 8.5  # inches: room for the two-line titles even with a single panel


def _grid(n_panels: int, width: float = 4.4, height: float = 3.5,
          extra_width: float = 2.4, margins: Margins | None = None,
          legend: float = LEGEND_IN) -> tuple[Figure, np.ndarray]:
    """Panels in rows of MAX_COLS; many panels get `margins` (a fixed layout)."""
    ncols = min(max(n_panels, 1), MAX_COLS)
    nrows = max(math.ceil(n_panels / ncols), 1)
    size = (max(width * ncols + extra_width, MIN_WIDTH), height * nrows + 1.0)
    chosen = (margins or Margins()) if fixed(n_panels) else None
    fig = Figure(figsize=size, layout=None if chosen else "constrained")
    return fig, panel_grid(fig, nrows, ncols, *size, chosen, legend).ravel()


def _hide_rest(axes: np.ndarray, used: int, message: str) -> None:
    for ax in axes[used:]:
        if used:
            ax.set_visible(False)
        else:
            _empty(ax, message)


def _centred_edges(values: np.ndarray) -> np.ndarray:
    """Cell edges around sorted unique centres: halfway between neighbours."""
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


def _step_edges(values: np.ndarray) -> np.ndarray:
    """Each profile step's cell runs until the next profile step (the last: one more spacing)."""
    v = np.asarray(values, dtype=float)
    width = v[-1] - v[-2] if len(v) > 1 else 1.0
    return np.concatenate([v, [v[-1] + width]])


HEATMAP_PERCENTILES = (2.0, 98.0)  # each panel's colour range: robust to a few extreme cells
UNDERFLOW_HATCH = "////"
UNDERFLOW_TEXT = "hatched grey: no finite nonzero norm (underflow to 0)"


def panel_range(values: np.ndarray) -> tuple[float, float]:
    """A panel's colour range: the HEATMAP_PERCENTILES of its finite values (never empty)."""
    finite_values = values[np.isfinite(values)]
    if not len(finite_values):
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite_values, HEATMAP_PERCENTILES))
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    return low, high


def grad_heatmap(table: pd.DataFrame, experiment: str, path: Path) -> None:
    """log10‖∂L/∂h_t‖ over (training step × lag), one panel per (task, label).

    Each panel has its own colour range (the 2nd to 98th percentile of its cells, values
    outside drawn in the end colours) and its own colour bar; cells without a finite nonzero
    norm (underflow) are hatched grey, so they cannot read as a small value.
    """
    panels = sorted(table.groupby(g.PANEL).groups) if not table.empty else []
    fig, axes = _grid(len(panels), width=5.2, extra_width=1.2, legend=1.4)
    cmap = matplotlib.colormaps[HEATMAP_CMAP].with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    for ax, (task, label) in zip(axes, panels, strict=False):
        panel = table[(table[names.TASK_LABEL] == task) & (table[LABEL] == label)]
        grid = panel.pivot(index=g.LAG, columns=STEP, values=g.LOG10_GRAD_NORM).sort_index()
        grid = grid.reindex(columns=sorted(grid.columns))
        values = grid.to_numpy(dtype=float)
        low, high = panel_range(values)
        xs = _step_edges(grid.columns.to_numpy())
        ys = _centred_edges(grid.index.to_numpy())
        # Underflow shows through the masked (transparent) cells as a hatched grey ground.
        ax.add_patch(Rectangle((xs[0], ys[0]), xs[-1] - xs[0], ys[-1] - ys[0],
                               facecolor="0.85", edgecolor="0.55", hatch=UNDERFLOW_HATCH,
                               lw=0, zorder=0))
        mesh = ax.pcolormesh(xs, ys, np.ma.masked_invalid(values), cmap=cmap,
                             norm=Normalize(vmin=low, vmax=high), shading="flat", zorder=1)
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(ys[0], ys[-1])
        fig.colorbar(mesh, ax=ax, extend="both", fraction=0.08, pad=0.02,
                     label=f"log10 {GRAD_SYMBOL}, this panel's 2–98th pct.")
        underflow = int((~np.isfinite(values)).sum())
        ax.set_title(f"{task} · {label}\ngap {int(panel[names.GAP].iloc[0])} · "
                     f"layer {int(panel[g.LAYER].max())} (last) · {underflow} underflow cells")
        ax.set_xlabel("training step (each column lasts until the next profile)")
        ax.set_ylabel("lag: distance from the loss (time steps)")
    _hide_rest(axes, len(panels), "no gradient profiles logged")
    fig.suptitle(f"{experiment}: log10 {GRAD_SYMBOL} by training step and lag\n"
                 "last layer, largest gap, mean over seeds; colour range per panel "
                 f"(2nd–98th percentile of its cells); {UNDERFLOW_TEXT}")
    save_png(fig, path)


def _lineplot(ax: Axes, data: pd.DataFrame, y: str, colors: dict[str, str],
              markers: dict[str, str]) -> list[str]:
    """Mean of `y` over seeds vs gap per label, seed dots or a clipped CI band (`ci_lines`)."""
    bounds = tables.NONNEGATIVE if y == names.GRAD_REACH else (None, None)
    table = tables.mean_ci(data, [LABEL, names.GAP], y, bounds)
    return ci_lines(ax, table, names.GAP, colors, markers, raw=data, value=y)


def grad_decay_vs_gap(points: pd.DataFrame, colors: dict[str, str], markers: dict[str, str],
                      experiment: str, path: Path) -> None:
    """Final decay rate (top row) and reach (bottom row) vs gap, one column per task."""
    tasks = sorted(points[names.TASK_LABEL].unique()) if not points.empty else []
    n = max(len(tasks), 1)
    fig = Figure(figsize=(max(4.6 * n + 2.4, MIN_WIDTH), 7.8), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False, sharex="col")
    seen: set[str] = set()
    rows = (
        (names.GRAD_DECAY_RATE, "final grad_decay_rate (1/time step of lag)"),
        (names.GRAD_REACH, "final grad_reach (time steps)"),
    )
    for col, task in enumerate(tasks):
        for row, (key, ylabel) in enumerate(rows):
            ax = axes[row, col]
            data = points[(points[names.TASK_LABEL] == task)].dropna(subset=[key]).copy()
            data[names.GAP] = data[names.GAP].astype(float)
            if data.empty:
                _empty(ax, f"no final {key} logged")
            else:
                seen.update(_lineplot(ax, data, key, colors, markers))
                _gap_axis(ax, data[names.GAP].to_numpy())
                if key == names.GRAD_DECAY_RATE:
                    ax.axhline(0.0, **REFERENCE_STYLE)
                else:
                    gaps = np.unique(data[names.GAP].to_numpy())
                    ax.plot(gaps, gaps, **REFERENCE_STYLE)
                ax.grid(True, alpha=0.3)
            ax.set_title(f"task: {task}")
            ax.set_xlabel("gap (time steps)")
            ax.set_ylabel(ylabel)
    if not tasks:
        for ax in axes.ravel():
            _empty(ax, "no run logged grad_decay_rate or grad_reach")
    fig.suptitle(f"{experiment}: final gradient decay rate and reach vs gap\n({CI_TEXT})")
    reference = [Line2D([], [], **REFERENCE_STYLE, label="rate 0 / reach = gap")]
    if seen:
        _legend(fig, sorted(seen), colors, markers, reference)
    save_png(fig, path)


def _threshold_axis(ax: Axes, thresholds: np.ndarray) -> None:
    thresholds = np.unique(thresholds[np.isfinite(thresholds)])
    if len(thresholds) and thresholds.min() > 0 and thresholds.max() / thresholds.min() > 8:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    if len(thresholds):
        ax.set_xticks(thresholds)


def grad_norm_over_training(norms: pd.DataFrame, clip_points: pd.DataFrame,
                            colors: dict[str, str], markers: dict[str, str], experiment: str,
                            path: Path) -> None:
    """Top: grad_norm_pre_clip vs step per (task, label) at its largest gap, one line per seed,
    with the norm-clipping threshold dashed. Bottom: final clip rate vs clipping threshold."""
    panels = sorted(norms.groupby(g.PANEL).groups) if not norms.empty else []
    clip_panels = (sorted(clip_points.groupby([names.TASK_LABEL, names.CLIP_MODE]).groups)
                   if not clip_points.empty else [])
    top_cols = min(max(len(panels), 1), MAX_COLS)
    bottom_cols = min(max(len(clip_panels), 1), MAX_COLS)
    top_rows = max(math.ceil(len(panels) / top_cols), 1)
    bottom_rows = max(math.ceil(len(clip_panels) / bottom_cols), 1)
    width = max(4.4 * max(top_cols, bottom_cols) + 2.6, MIN_WIDTH)
    height = 3.5 * (top_rows + bottom_rows) + 1.6
    many = fixed(len(panels) + len(clip_panels))
    fig = Figure(figsize=(width, height), layout=None if many else "constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[top_rows, bottom_rows])
    top_h = height * top_rows / (top_rows + bottom_rows)
    top_axes = panel_grid(top, top_rows, top_cols, width, top_h,
                          Margins(top=1.6) if many else None).ravel()
    seen: set[str] = set()
    drew_threshold = False
    for ax, (task, label) in zip(top_axes, panels, strict=False):
        panel = norms[(norms[names.TASK_LABEL] == task) & (norms[LABEL] == label)]
        seen.add(str(label))
        for _, line in panel.groupby([names.SEED, RUN_NAME], sort=True, dropna=False):
            ax.plot(line[STEP], line[names.GRAD_NORM_PRE_CLIP], color=colors[str(label)],
                    marker=markers[str(label)], ms=3, lw=1.2, alpha=0.75,
                    markevery=max(len(line) // 8, 1))
        mode = str(panel[names.CLIP_MODE].iloc[0])
        threshold = float(panel[names.CLIP_THRESHOLD].iloc[0])
        note = ""
        if mode == g.NORM_CLIP and math.isfinite(threshold) and threshold > 0:
            ax.axhline(threshold, **THRESHOLD_STYLE)
            drew_threshold = True
        elif mode not in (g.NO_CLIP, g.NORM_CLIP):
            note = f"\n{mode} clipping: no norm threshold to draw"
        log_y(ax)
        n_seeds = panel[RUN_NAME].nunique()
        ax.set_title(f"{task} · {label}\ngap {int(panel[names.GAP].iloc[0])} · "
                     f"{n_seeds} run(s), one line each{note}")
        ax.set_xlabel("training step")
        ax.set_ylabel("grad_norm_pre_clip (global L2, window mean)")
        ax.grid(True, which="major", alpha=0.3)
    _hide_rest(top_axes, len(panels), "no grad_norm_pre_clip history logged")
    top.suptitle("gradient norm before clipping over training\n"
                 "largest gap of each configuration (log scale)")

    bottom_axes = panel_grid(bottom, bottom_rows, bottom_cols, width, height - top_h,
                             Margins(top=0.9) if many else None).ravel()
    for ax, (task, mode) in zip(bottom_axes, clip_panels, strict=False):
        data = clip_points[(clip_points[names.TASK_LABEL] == task)
                           & (clip_points[names.CLIP_MODE] == mode)].copy()
        table = tables.mean_ci(data, [g.MODEL_ACTIVATION, names.CLIP_THRESHOLD],
                               names.CLIP_RATE_TOTAL, tables.ACCURACY_BOUNDS)
        for i, (model_act, line) in enumerate(table.groupby(g.MODEL_ACTIVATION, sort=True)):
            # No t interval over few runs (SEED_POINTS_MAX or fewer): their dots show instead.
            many = line[tables.N] > tables.SEED_POINTS_MAX
            low = (line[tables.MEAN] - line[tables.CI_LOW]).where(many).fillna(0.0)
            high = (line[tables.CI_HIGH] - line[tables.MEAN]).where(many).fillna(0.0)
            ax.errorbar(line[names.CLIP_THRESHOLD], line[tables.MEAN], yerr=[low, high],
                        color="0.45", ls=_BLOCK_STYLES[i % len(_BLOCK_STYLES)][0], capsize=3,
                        label=str(model_act))
        ax.legend(title="model-activation", fontsize=8, title_fontsize=8)
        means = data.groupby([LABEL, names.CLIP_THRESHOLD], sort=True)[names.CLIP_RATE_TOTAL]
        for (label, threshold), values in means:
            seen.add(str(label))
            if len(values) <= tables.SEED_POINTS_MAX:
                ax.scatter(np.full(len(values), threshold), values.to_numpy(dtype=float),
                           color=colors[str(label)], marker=markers[str(label)], s=12,
                           alpha=0.55, lw=0, zorder=2)
            ax.scatter([threshold], [values.mean()], color=colors[str(label)],
                       marker=markers[str(label)], s=42, zorder=3, edgecolors="0.2",
                       linewidths=0.5)
        _threshold_axis(ax, data[names.CLIP_THRESHOLD].to_numpy(dtype=float))
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{task} · clip.mode {mode} · gap {int(data[names.GAP].iloc[0])}")
        ax.set_xlabel(f"clip.threshold ({'global L2 norm' if mode == g.NORM_CLIP else 'value'})")
        ax.set_ylabel("final clip_rate_total (fraction of steps)")
        ax.grid(True, alpha=0.3)
    _hide_rest(bottom_axes, len(clip_panels), "no clipping in this experiment")
    bottom.suptitle("share of training steps where clipping fired vs clipping threshold\n"
                    f"(mean; ≤{tables.SEED_POINTS_MAX} runs: every run a dot, no error bar; "
                    "more: Student-t 95% CI clipped to [0, 1]), largest clipped gap")
    fig.suptitle(f"{experiment}: gradient norms and clipping")
    extra = ([Line2D([], [], **THRESHOLD_STYLE, label="norm-clipping threshold")]
             if drew_threshold else [])
    if seen:
        _legend(fig, sorted(seen), colors, markers, extra)
    save_png(fig, path)


def _block_label(model: str, block: str) -> str:
    meaning = CELLS[model].meaning(block) if model in CELLS else None
    return f"{block} ({meaning})" if meaning else block


def spectral_radius(table: pd.DataFrame, runs: pd.DataFrame, colors: dict[str, str],
                    markers: dict[str, str], experiment: str, path: Path) -> None:
    """Spectral radius of each gate block of the last layer's W_hh over training, mean over
    seeds (band: ± one std), one panel per (task, label) at its largest gap."""
    panels = sorted(table.groupby(g.PANEL).groups) if not table.empty else []
    # Each panel has its legend of gate blocks below it: more room between rows.
    fig, axes = _grid(len(panels), height=4.2, margins=Margins(hspace=1.9))
    model_of = runs.dropna(subset=[names.MODEL]).groupby(LABEL)[names.MODEL].first()
    for ax, (task, label) in zip(axes, panels, strict=False):
        panel = table[(table[names.TASK_LABEL] == task) & (table[LABEL] == label)]
        color = colors[str(label)]
        model = str(model_of.get(label, ""))
        blocks = list(dict.fromkeys(panel[g.BLOCK]))  # table order = the cell's gate order
        for i, block in enumerate(blocks):
            line = panel[panel[g.BLOCK] == block]
            ls, marker = _BLOCK_STYLES[i % len(_BLOCK_STYLES)]
            ax.plot(line[STEP], line[g.SR_MEAN], color=color, ls=ls, marker=marker, ms=4,
                    lw=1.5, markevery=max(len(line) // 8, 1), label=_block_label(model, block))
            # ± one std only over more than SEED_POINTS_MAX runs; a radius is never below 0.
            band = line[line[g.N_RUNS] > tables.SEED_POINTS_MAX]
            if len(band):
                std = band[g.SR_STD].fillna(0.0)
                ax.fill_between(band[STEP], (band[g.SR_MEAN] - std).clip(lower=0.0),
                                band[g.SR_MEAN] + std, color=color, alpha=0.12, lw=0)
        ax.axhline(1.0, **REFERENCE_STYLE, label="radius 1")
        ax.legend(title="gate block of W_hh", fontsize=8, title_fontsize=8, ncols=2,
                  loc="upper center", bbox_to_anchor=(0.5, -0.2))
        ax.set_title(f"{task} · {label}\ngap {int(panel[names.GAP].iloc[0])} · "
                     f"layer {int(panel[g.LAYER].iloc[0])} (last layer)")
        ax.set_xlabel("training step")
        ax.set_ylabel("spectral radius (max |eigenvalue|)")
        ax.grid(True, alpha=0.3)
    _hide_rest(axes, len(panels), "no spectral radius logged")
    fig.suptitle(f"{experiment}: spectral radius of each gate block of W_hh over training\n"
                 f"last layer, largest gap, mean over seeds; band ± std (≥ 0) only with more "
                 f"than {tables.SEED_POINTS_MAX} seeds")
    if panels:
        _legend(fig, sorted({str(lab) for _, lab in panels}), colors, markers, [])
    save_png(fig, path)
