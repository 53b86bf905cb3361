"""Gradients: at each configuration's largest gap, on the last layer: the profile by lag,
its heatmap over training, decay rate and reach, gradient norms and clipping, spectral radius;
each figure's drawing (its data: `harness.report.gradients`).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullFormatter, ScalarFormatter

from harness import names
from harness.cells import CELLS
from harness.report import gradients as g
from harness.report import tables
from harness.report.inputs import Inputs
from harness.report.load import LABEL, P_GRAD_NORM, P_LAG, RUN_NAME, STEP
from harness.report.plotting import (
    CI_TEXT,
    GRAD_SYMBOL,
    HEATMAP_CMAP,
    MIN_WIDTH,
    PANEL_COLS,
    REFERENCE_STYLE,
    UNCERTAINTY_TEXT,
    Margins,
    add_legend,
    ci_lines,
    empty_panel,
    fixed,
    gap_axis,
    hide_rest,
    log_y,
    panel_grid,
    save_png,
    wrapped_panels,
)
from harness.report.registry import Block, Figure, Heading, Plot, Section, Table, Text

GRAD_PROFILE_CSV = "grad_profile_by_lag.csv"  # not grad_profile.csv: that is the run artifact
GRAD_HEATMAP_CSV = "grad_heatmap.csv"
GRAD_DECAY_CSV = "grad_decay_vs_gap.csv"
GRAD_NORM_CSV = "grad_norm_over_training.csv"
CLIP_RATE_CSV = "clip_rate_by_threshold.csv"
SPECTRAL_CSV = "spectral_radius.csv"


_PHASE_STYLE = {g.INIT: "--", g.MIDDLE: ":", g.FINAL: "-"}


def _pooled_profiles(runs: pd.DataFrame, profiles: pd.DataFrame) -> pd.DataFrame:
    """Mean grad norm per (task, model/activation, label, phase, lag) at each panel's top gap
    (`g.run_profiles` pooled over runs). Non-positive means (underflow) are dropped because the
    y axis is logarithmic."""
    per_run = g.run_profiles(runs, profiles)
    if per_run.empty:
        return pd.DataFrame(columns=g.POOLED_COLUMNS)
    top_gap = per_run.groupby([names.TASK_LABEL, g.PANEL_MODEL])[names.GAP].transform("max")
    per_run = per_run[per_run[names.GAP] == top_gap]
    pooled = g.pool_runs(per_run, [names.TASK_LABEL, g.PANEL_MODEL, names.GAP, LABEL, g.PHASE,
                                   P_LAG])
    return pooled.loc[pooled[P_GRAD_NORM] > 0, g.POOLED_COLUMNS].reset_index(drop=True)


def grad_profile(runs: pd.DataFrame, profiles: pd.DataFrame, colors: dict[str, str],
                 markers: dict[str, str], experiment: str, path: Path) -> pd.DataFrame:
    """‖∂L/∂h_t‖ vs lag, log y, one panel per (task, model/activation) at its largest gap.

    Draws each run's last layer; returns the drawn data (columns `g.POOLED_COLUMNS`).
    """
    pooled = (_pooled_profiles(runs, profiles) if not profiles.empty
              else pd.DataFrame(columns=g.POOLED_COLUMNS))
    panels = (
        sorted(pooled.groupby([names.TASK_LABEL, g.PANEL_MODEL]).groups) if not pooled.empty else []
    )
    ncols = min(max(len(panels), 1), 3)
    nrows = max(math.ceil(len(panels) / ncols), 1)
    fig = MplFigure(figsize=(4.6 * ncols + 2.4, 3.8 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    seen: set[str] = set()
    for ax, (task, model) in zip(axes, panels, strict=False):
        panel = pooled[(pooled[names.TASK_LABEL] == task) & (pooled[g.PANEL_MODEL] == model)]
        gap = int(panel[names.GAP].iloc[0])
        for (label, phase), line in panel.groupby([LABEL, g.PHASE], sort=True):
            seen.add(str(label))
            ax.plot(line[P_LAG], line[P_GRAD_NORM], color=colors[str(label)],
                    ls=_PHASE_STYLE[str(phase)], lw=1.5, marker=markers[str(label)], ms=4,
                    markevery=max(len(line) // 8, 1))
        log_y(ax)
        ax.set_title(f"{task} · {model} · gap {gap} · last layer")
        ax.set_xlabel("lag: distance from the loss (time steps)")
        ax.set_ylabel(f"{GRAD_SYMBOL} (mean over seeds)")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(panels):]:
        if panels:
            ax.set_visible(False)
        else:
            empty_panel(ax, "no gradient profiles logged")
    fig.suptitle(f"{experiment}: gradient norm {GRAD_SYMBOL} vs lag, at init, mid-training "
                 "and at the end")
    phases = [
        Line2D([], [], color="0.3", ls=_PHASE_STYLE[g.INIT], label=f"{g.INIT} (step 0)"),
        Line2D([], [], color="0.3", ls=_PHASE_STYLE[g.MIDDLE],
               label=f"{g.MIDDLE} (profiled step nearest half the run)"),
        Line2D([], [], color="0.3", ls=_PHASE_STYLE[g.FINAL],
               label=f"{g.FINAL} (last profiled step)"),
    ]
    if panels:
        add_legend(fig, sorted(seen), colors, markers, phases)
    save_png(fig, path)
    return pooled


THRESHOLD_STYLE = {"ls": "--", "color": "0.2", "lw": 1.3}
_BLOCK_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))


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
    fig, axes = wrapped_panels(len(panels), width=5.2, extra_width=1.2, legend=1.4)
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
    hide_rest(axes, len(panels), "no gradient profiles logged")
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
    fig = MplFigure(figsize=(max(4.6 * n + 2.4, MIN_WIDTH), 7.8), layout="constrained")
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
                empty_panel(ax, f"no final {key} logged")
            else:
                seen.update(_lineplot(ax, data, key, colors, markers))
                gap_axis(ax, data[names.GAP].to_numpy())
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
            empty_panel(ax, "no run logged grad_decay_rate or grad_reach")
    fig.suptitle(f"{experiment}: final gradient decay rate and reach vs gap\n({CI_TEXT})")
    reference = [Line2D([], [], **REFERENCE_STYLE, label="rate 0 / reach = gap")]
    if seen:
        add_legend(fig, sorted(seen), colors, markers, reference)
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
    top_cols = min(max(len(panels), 1), PANEL_COLS)
    bottom_cols = min(max(len(clip_panels), 1), PANEL_COLS)
    top_rows = max(math.ceil(len(panels) / top_cols), 1)
    bottom_rows = max(math.ceil(len(clip_panels) / bottom_cols), 1)
    width = max(4.4 * max(top_cols, bottom_cols) + 2.6, MIN_WIDTH)
    height = 3.5 * (top_rows + bottom_rows) + 1.6
    many = fixed(len(panels) + len(clip_panels))
    fig = MplFigure(figsize=(width, height), layout=None if many else "constrained")
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
    hide_rest(top_axes, len(panels), "no grad_norm_pre_clip history logged")
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
    hide_rest(bottom_axes, len(clip_panels), "no clipping in this experiment")
    bottom.suptitle("share of training steps where clipping fired vs clipping threshold\n"
                    f"(mean; ≤{tables.SEED_POINTS_MAX} runs: every run a dot, no error bar; "
                    "more: Student-t 95% CI clipped to [0, 1]), largest clipped gap")
    fig.suptitle(f"{experiment}: gradient norms and clipping")
    extra = ([Line2D([], [], **THRESHOLD_STYLE, label="norm-clipping threshold")]
             if drew_threshold else [])
    if seen:
        add_legend(fig, sorted(seen), colors, markers, extra)
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
    fig, axes = wrapped_panels(len(panels), height=4.2, margins=Margins(hspace=1.9))
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
    hide_rest(axes, len(panels), "no spectral radius logged")
    fig.suptitle(f"{experiment}: spectral radius of each gate block of W_hh over training\n"
                 f"last layer, largest gap, mean over seeds; band ± std (≥ 0) only with more "
                 f"than {tables.SEED_POINTS_MAX} seeds")
    if panels:
        add_legend(fig, sorted({str(lab) for _, lab in panels}), colors, markers, [])
    save_png(fig, path)


# --- the section -------------------------------------------------------------------------

def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


PROFILE = Figure(
    id="grad_profile", section="gradients", title="Gradient norm vs lag",
    caption="Norm of the loss gradient with respect to the last layer's hidden state at each "
    "time step, against its distance from the scored position, at initialisation (dashed), "
    "at the profiled step nearest half the run (dotted) and at each run's last profiled step "
    "(solid); mean over seeds at the largest gap of each panel. Zero values (underflow) are "
    "not shown on the log scale.",
    csvs=(GRAD_PROFILE_CSV,),
    data=lambda r: Plot(args=(r.runs, r.profiles, *r.style), returns=GRAD_PROFILE_CSV),
    draw=grad_profile, weight=6)

HEATMAP = Figure(
    id="grad_heatmap", section="gradients", title="Gradient norm by training step and lag",
    caption="log10 of the norm of the loss gradient with respect to the last layer's hidden "
    "state at each lag (rows) and training step (columns), mean over seeds at each "
    "configuration's largest gap. Each panel has its own colour range, the 2nd to 98th "
    "percentile of its cells (beyond it: the end colours), and its own colour bar, so compare "
    "colours within a panel, numbers across panels; hatched grey cells had no finite nonzero "
    "value (underflow to 0).",
    csvs=(GRAD_HEATMAP_CSV,),
    data=lambda r: Plot(args=(r.heatmap, r.experiment), csvs=((GRAD_HEATMAP_CSV, r.heatmap),),
                        note="No run logged a gradient profile" if r.heatmap.empty else ""),
    draw=grad_heatmap, weight=7)

DECAY = Figure(
    id="grad_decay_vs_gap", section="gradients", title="Gradient decay rate and reach vs gap",
    caption="Each run's final decay rate (slope of ln‖∂L/∂h_t‖ per time step of lag; "
    "negative means vanishing) and reach (how many steps back the gradient is still ≥ "
    f"{g.REACH_TEXT} of its peak) against the gap; {UNCERTAINTY_TEXT} "
    "(reach ≥ 0).",
    csvs=(GRAD_DECAY_CSV,),
    data=lambda r: Plot(args=(r.decay_points, *r.style), csvs=((GRAD_DECAY_CSV, r.decay),),
                        note=(f"No run logged {names.GRAD_DECAY_RATE} or {names.GRAD_REACH}"
                              if r.decay.empty else "")),
    draw=grad_decay_vs_gap, weight=5)


def _norm_data(r: Inputs) -> Plot:
    clip_note = "" if not r.clip_rates.empty else "no run clipped: the bottom row is empty"
    norm_note = f"No run logged a {names.GRAD_NORM_PRE_CLIP} history" if r.norms.empty else ""
    return Plot(args=(r.norms, r.clip_points, *r.style),
                csvs=((GRAD_NORM_CSV, r.norms), (CLIP_RATE_CSV, r.clip_rates)),
                note=_sentence_case("; ".join(n for n in (norm_note, clip_note) if n)))


NORMS = Figure(
    id="grad_norm_over_training", section="gradients",
    title="Gradient norm over training and clipping",
    caption="Top: the global gradient norm before clipping (window mean) over training, one "
    "line per seed at each configuration's largest gap, with the norm-clipping threshold "
    "dashed; bottom: the final share of training steps where clipping fired against the "
    "clipping threshold, at the largest clipped gap (with ≤5 runs at a threshold every run "
    "is a dot and no error bar is drawn; with more, error bars: Student-t 95% CI clipped to "
    "[0, 1]).",
    csvs=(GRAD_NORM_CSV, CLIP_RATE_CSV), data=_norm_data,
    draw=grad_norm_over_training, weight=10)

SPECTRAL = Figure(
    id="spectral_radius", section="gradients", title="Spectral radius of W_hh over training",
    caption="The spectral radius (largest |eigenvalue|) of each gate block of the last "
    "layer's recurrent matrix W_hh over training, mean over seeds at each configuration's "
    "largest gap; the dotted line marks radius 1; a band of ± one std (floored at 0) only "
    "where more than 5 seeds are pooled.",
    csvs=(SPECTRAL_CSV,),
    data=lambda r: Plot(args=(r.spectral, r.runs, *r.style), csvs=((SPECTRAL_CSV, r.spectral),),
                        note="No run logged a spectral radius" if r.spectral.empty else ""),
    draw=spectral_radius, weight=8)

FIGURES = (PROFILE, HEATMAP, DECAY, NORMS, SPECTRAL)


def blocks(r: Inputs) -> list[Block]:
    rows = g.decay_display(r.decay)
    return [
        *FIGURES,
        Heading("Final gradient decay by gap"),
        Text(g.DECAY_SENTENCE),
        Table(g.DECAY_HEADER, rows) if rows else Text(
            "No run in this experiment logged a final decay rate, half-life or reach.", "none"),
    ]


SECTION = Section(id="gradients", heading="Gradients", toc="Gradients", figures=FIGURES,
                  blocks=blocks)
