"""The report's two figures: final accuracy vs gap, and the gradient-norm profile over lags.

Figures are drawn on bare `Figure` objects with an Agg canvas rather than through pyplot, so
building a report never opens a window, never changes the global backend, and leaves no
figures behind in pyplot's registry.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, NullFormatter, NullLocator, ScalarFormatter

from harness import names
from harness.report import tables
from harness.report.load import (
    LABEL,
    MODEL_VARIANT,
    P_GRAD_NORM,
    P_LAG,
    P_LAYER,
    P_STEP,
    RUN_ID,
)

PALETTE = "colorblind"
# A log x axis only pays off when the gaps span about an order of magnitude.
LOG_X_SPAN = 8.0
GRAD_SYMBOL = r"$\Vert\partial L/\partial h_t\Vert$"
INIT, MIDDLE, FINAL = "init", "middle", "final"
_PHASE_STYLE = {INIT: "--", MIDDLE: ":", FINAL: "-"}
DPI = 110
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


# The palette slot of each known model variant, so a model has the same colour in every
# figure of every report (and of a comparison); other variants take the slots after these.
MODEL_ORDER = ("rnn-tanh", "rnn-relu", "rnn-relu-identity", "lstm-tanh", "gru-tanh")


def variant_colors(variants: Iterable[str]) -> dict[str, str]:
    """One fixed colour-blind-safe colour per model variant (`lstm-tanh`, `rnn-relu`, ...)."""
    palette = sns.color_palette(PALETTE).as_hex()
    seen = set(variants)
    extra = sorted(seen - set(MODEL_ORDER))
    slots = {v: i for i, v in enumerate([*MODEL_ORDER, *extra])}
    return {v: palette[slots[v] % len(palette)] for v in sorted(seen)}


def label_colors(runs: pd.DataFrame) -> dict[str, str]:
    """Colour of each configuration label: the colour of its model variant.

    Labels of one model (e.g. with and without clipping) share its colour and differ by
    marker (`label_markers`).
    """
    pairs = runs[[LABEL, MODEL_VARIANT]].drop_duplicates(LABEL)
    colors = variant_colors(pairs[MODEL_VARIANT])
    return {str(lab): colors[str(v)] for lab, v in zip(pairs[LABEL], pairs[MODEL_VARIANT],
                                                       strict=True)}


def label_markers(runs: pd.DataFrame) -> dict[str, str]:
    """One marker per label within its model's colour: the label's rank among that model's
    labels in sorted order (a model's `noclip` label sorts before its clipped ones)."""
    pairs = runs[[LABEL, MODEL_VARIANT]].drop_duplicates(LABEL).sort_values(LABEL)
    rank = pairs.groupby(MODEL_VARIANT).cumcount()
    return {str(lab): _MARKERS[int(r) % len(_MARKERS)] for lab, r in zip(pairs[LABEL], rank,
                                                                          strict=True)}


def _pin_titles(fig: Figure) -> None:
    """In a fixed layout, put suptitles a fixed distance below the top edge (in inches).

    matplotlib places a suptitle at 98% of the height, which on a tall figure lands inside
    the first row of panels; constrained layout would have moved it.
    """
    offset = 0.08
    for target in (fig, *fig.subfigs):
        title = getattr(target, "_suptitle", None)
        if title is None:
            continue
        height = target.bbox.height / fig.dpi
        title.set(y=1 - offset / height, va="top")
        offset = 0.45  # a subfigure's title sits below the figure's own


def save_png(fig: Figure, path: Path) -> None:
    """Write `fig` as PNG without the software/version stamp, so reruns give the same bytes."""
    # Attach the Agg canvas explicitly: output never depends on the default/GUI backend.
    FigureCanvasAgg(fig)
    if fig.get_layout_engine() is None:
        _pin_titles(fig)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})


def log_y(ax: Axes) -> None:
    """A log y axis with a few labelled decades and no minor ticks.

    Minor log ticks are invisible at this size but cost most of the layout time of a figure
    with dozens of panels (every tick is a text object that is measured twice per save).
    """
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(numticks=6))
    ax.yaxis.set_minor_locator(NullLocator())


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _gap_axis(ax: Axes, gaps: np.ndarray) -> None:
    """Log-x when the gaps span more than LOG_X_SPAN, with the actual gaps as tick labels."""
    gaps = np.unique(gaps[np.isfinite(gaps)])
    if len(gaps) and gaps.min() > 0 and gaps.max() / gaps.min() > LOG_X_SPAN:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    if len(gaps):
        ax.set_xticks(gaps)


# Above this many panels a figure is laid out with fixed margins instead of constrained
# layout, which measures every tick label of every panel and took half the drawing time of a
# 40-panel figure (1,000-run benchmark).
MANY_PANELS = 12
LEGEND_IN = 2.6  # inches kept free on the right of a fixed-layout figure for its legend


@dataclass(frozen=True)
class Margins:
    """A fixed layout's space in inches: around the grid, and between panels."""

    left: float = 0.95
    right: float = 0.3
    top: float = 1.2
    bottom: float = 0.75
    wspace: float = 1.0
    hspace: float = 1.2


def fixed(n_panels: int) -> bool:
    return n_panels > MANY_PANELS


def panel_grid(target: Figure | SubFigure, nrows: int, ncols: int, width: float,
               height: float, margins: Margins | None = None,
               legend: float = LEGEND_IN) -> np.ndarray:
    """`nrows × ncols` axes; with `margins`, placed by hand in a `width × height` inch area
    with `legend` inches free on the right (the figure must have no layout engine)."""
    if margins is None:
        return target.subplots(nrows, ncols, squeeze=False)
    m = margins
    panel_w = max((width - m.left - m.right - legend - (ncols - 1) * m.wspace) / ncols, 0.5)
    panel_h = max((height - m.top - m.bottom - (nrows - 1) * m.hspace) / nrows, 0.5)
    return target.subplots(nrows, ncols, squeeze=False, gridspec_kw={
        "left": m.left / width, "right": 1 - (m.right + legend) / width,
        "bottom": m.bottom / height, "top": 1 - m.top / height,
        "wspace": m.wspace / panel_w, "hspace": m.hspace / panel_h})


def _legend(fig: Figure, labels: list[str], colors: dict[str, str], markers: dict[str, str],
            extra: list[Line2D]) -> None:
    handles: list[Line2D] = [
        Line2D([], [], color=colors[lab], marker=markers[lab], label=lab) for lab in labels
    ]
    if fig.get_layout_engine() is None:  # fixed layout: the right margin is kept for it
        height = fig.get_size_inches()[1]
        fig.legend(handles=[*handles, *extra], loc="upper right", title="configuration",
                   bbox_to_anchor=(1.0, 1 - Margins().top / height))
    else:
        fig.legend(handles=[*handles, *extra], loc="outside right upper",
                   title="configuration")


def ci_lines(ax: Axes, table: pd.DataFrame, x: str, colors: dict[str, str],
             markers: dict[str, str], mean: str = "mean", low: str = "ci95_low",
             high: str = "ci95_high", linestyle: str = "-", raw: pd.DataFrame | None = None,
             value: str | None = None, raw_x: str | None = None,
             n: str = "n") -> list[str]:
    """One line per label of `table` (mean vs x) with the uncertainty rule; returns labels.

    `table` is a `tables.mean_ci` frame. The rule (`UNCERTAINTY_TEXT`): at a point with at
    most `SEED_POINTS_MAX` values, every value of `raw` (column `value`, x in `raw_x`,
    default `x`) is drawn as a small dot beside the mean and no band; at points with more, a
    band from `low` to `high` (already clipped to the quantity's range by `mean_ci`). Without
    `raw` the small points get neither dots nor a band.
    """
    labels = sorted(table[LABEL].unique())
    raw_x = raw_x or x
    for label in labels:
        line = table[table[LABEL] == label].sort_values(x)
        line = line[line[mean].notna()]
        xs = line[x].astype(float).to_numpy()
        ax.plot(xs, line[mean].to_numpy(dtype=float), color=colors[label], ls=linestyle,
                marker=markers[label], ms=5, lw=1.6, zorder=3)
        counts = line[n] if n in line.columns else pd.Series(np.inf, index=line.index)
        band = line[line[low].notna() & (counts > SEED_POINTS_MAX)]
        if len(band):
            ax.fill_between(band[x].astype(float).to_numpy(), band[low].to_numpy(dtype=float),
                            band[high].to_numpy(dtype=float), color=colors[label], alpha=0.15,
                            lw=0)
        few = line.loc[counts <= SEED_POINTS_MAX, x].astype(float)
        if raw is not None and value is not None and len(few):
            dots = raw[(raw[LABEL] == label) & raw[raw_x].astype(float).isin(set(few))]
            dots = dots[np.isfinite(dots[value].astype(float))]
            if len(dots):
                ax.scatter(dots[raw_x].astype(float).to_numpy(),
                           dots[value].to_numpy(dtype=float), color=colors[label],
                           marker=markers[label], s=12, alpha=0.55, lw=0, zorder=2)
    return labels


def accuracy_panel(ax: Axes, cell: pd.DataFrame, runs: pd.DataFrame, task: str,
                   colors: dict[str, str], markers: dict[str, str], n: str = "n") -> set[str]:
    """Mean accuracy vs gap lines (seed dots or clipped CI bands, see `ci_lines`), the task's
    chance level and the gap axis; returns the labels drawn."""
    raw = runs[runs[names.TASK_LABEL] == task]
    drawn = ci_lines(ax, cell, names.GAP, colors, markers, raw=raw,
                     value=names.FINAL_EVAL_ACCURACY, n=n)
    draw_chance(ax, runs[runs[names.TASK_LABEL] == task])
    _gap_axis(ax, cell[names.GAP].astype(float).to_numpy())
    return drawn


def draw_chance(ax: Axes, runs: pd.DataFrame, key: str = names.CHANCE_ACCURACY) -> None:
    """The chance level per gap (it may depend on the gap, e.g. via sequence length), dashed."""
    chance = runs.dropna(subset=[key, names.GAP]).groupby(names.GAP)[key].mean()
    if len(chance) == 1:
        ax.axhline(float(chance.iloc[0]), **CHANCE_STYLE)
    elif len(chance) > 1:
        ax.plot(chance.index.astype(float), chance.to_numpy(), **CHANCE_STYLE)


CHANCE_STYLE = {"ls": "--", "color": "0.35", "lw": 1.2}
CHANCE_HANDLE_LABEL = "chance accuracy"
ACCURACY_AXIS = "final eval accuracy (fraction correct)"
SEED_POINTS_MAX = tables.SEED_POINTS_MAX
# The uncertainty rule of every line figure, said in its title and caption.
UNCERTAINTY_TEXT = (f"line: mean over seeds; with ≤{SEED_POINTS_MAX} seeds at a point every "
                    "seed is a dot and no band is drawn; with more, band: Student-t 95% CI, "
                    "clipped to the quantity's range")
CI_TEXT = (f"mean over seeds; ≤{SEED_POINTS_MAX} seeds: every seed a dot, no band; "
           f"more: Student-t 95% CI band clipped to range")


def accuracy_vs_gap(runs: pd.DataFrame, table: pd.DataFrame, colors: dict[str, str],
                    markers: dict[str, str], experiment: str, path: Path) -> None:
    """One facet per task: final eval accuracy vs gap, one line per label, 95% CI over seeds.

    `table` is `tables.accuracy_by_gap(runs)`: the figure draws exactly its numbers.
    """
    tasks = sorted(runs[names.TASK_LABEL].dropna().unique())
    n = max(len(tasks), 1)
    fig = Figure(figsize=(4.6 * n + 2.2, 4.2), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    seen: set[str] = set()
    data = table.rename(columns={f"{names.FINAL_EVAL_ACCURACY}_mean": "mean"})
    for ax, task in zip(axes, tasks, strict=False):
        at_task = data[(data[names.TASK_LABEL] == task) & data["mean"].notna()]
        if at_task.empty:
            _empty(ax, "no final accuracy logged")
        else:
            seen.update(accuracy_panel(ax, at_task, runs, task, colors, markers,
                                       n="n_seeds"))
        ax.set_title(f"task: {task}")
        ax.set_xlabel("gap (time steps)")
        ax.set_ylabel(ACCURACY_AXIS)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, alpha=0.3)
    if not tasks:
        _empty(axes[0], "no runs with a task")
    fig.suptitle(f"{experiment}: final eval accuracy vs gap\n{CI_TEXT}")
    chance_handle = Line2D([], [], **CHANCE_STYLE, label=CHANCE_HANDLE_LABEL)
    _legend(fig, sorted(seen), colors, markers, [chance_handle])
    save_png(fig, path)


PANEL_MODEL = "panel_model"
PHASE = "phase"
N_RUNS = "n_runs"
POOLED_COLUMNS = [names.TASK_LABEL, PANEL_MODEL, names.GAP, LABEL, PHASE, P_LAYER, P_LAG,
                  P_GRAD_NORM, N_RUNS]


RUN_PROFILE_COLUMNS = [RUN_ID, names.TASK_LABEL, PANEL_MODEL, names.GAP, LABEL, PHASE, P_LAG,
                       P_GRAD_NORM, P_LAYER, P_STEP]


_PHASE_ORDER = sorted((INIT, MIDDLE, FINAL))  # the order a groupby on the names gives


def run_profiles(runs: pd.DataFrame, profiles: pd.DataFrame) -> pd.DataFrame:
    """Each run's own ‖∂L/∂h_t‖ by lag at init, mid-training and at the end, last layer.

    One row per (run, phase, lag), columns `RUN_PROFILE_COLUMNS`: the run's mean over its
    positions at that lag, and the step it was profiled at. Only each run's last layer (the
    one next to the readout) is used. "final" is each run's own last profiled step, since runs
    stop at different steps; a run profiled only at step 0 has no final curve. "middle" is the
    run's profiled step nearest half its last one (not step 0 nor the last). Non-finite values
    (diverged runs) are dropped. Rows are ordered by task, panel model, gap, label, phase, lag
    and run id. The work is done on integer run codes (`gradients.run_codes`): a large
    sweep's profiles are millions of rows.
    """
    from harness.report.gradients import last_layer_rows, run_codes, run_meta

    if profiles.empty:
        return pd.DataFrame(columns=RUN_PROFILE_COLUMNS)
    codes, ids = run_codes(profiles)
    meta = run_meta(runs, ids, [names.TASK_LABEL, names.GAP, names.MODEL, names.ACTIVATION,
                                LABEL])
    meta[PANEL_MODEL] = (meta[names.MODEL].astype(str) + "-"
                         + meta[names.ACTIVATION].astype(str))
    group = [names.TASK_LABEL, PANEL_MODEL, names.GAP, LABEL]
    known = (meta["present"] & meta[group].notna().all(axis=1)).to_numpy()
    step = profiles[P_STEP].to_numpy(dtype=float)
    rows = (last_layer_rows(profiles, codes) & known[codes]
            & np.isfinite(profiles[P_GRAD_NORM].to_numpy(dtype=float))
            & ~np.isnan(profiles[P_LAG].to_numpy(dtype=float)) & ~np.isnan(step))
    if not rows.any():
        return pd.DataFrame(columns=RUN_PROFILE_COLUMNS)
    run, step = codes[rows], step[rows]
    last = pd.Series(step).groupby(run).transform("max").to_numpy()
    # the middle step: each run's profiled step nearest half its last (ties: the earlier)
    steps = pd.DataFrame({"_run": run, P_STEP: step, "last": last}).drop_duplicates(
        ["_run", P_STEP])
    inner = steps[(steps[P_STEP] > 0) & (steps[P_STEP] < steps["last"])]
    inner = inner.assign(distance=(inner[P_STEP] - inner["last"] / 2).abs())
    middle = inner.sort_values(["_run", "distance", P_STEP]).drop_duplicates("_run")
    middle_step = np.full(len(ids), np.nan)
    middle_step[middle["_run"].to_numpy()] = middle[P_STEP].to_numpy()
    data = pd.DataFrame({"_run": run, P_LAG: profiles[P_LAG].to_numpy()[rows],
                         P_GRAD_NORM: profiles[P_GRAD_NORM].to_numpy()[rows],
                         P_LAYER: profiles[P_LAYER].to_numpy()[rows],
                         P_STEP: profiles[P_STEP].to_numpy()[rows]})
    phases = [(INIT, step == 0), (MIDDLE, step == middle_step[run]),
              (FINAL, (step == last) & (last > 0))]
    parts = [data[mask].assign(_phase=_PHASE_ORDER.index(phase)) for phase, mask in phases]
    both = pd.concat(parts, ignore_index=True)
    # average within a run first, so a run scoring many positions per lag is not overweighted
    per_run = both.groupby(["_run", "_phase", P_LAG], sort=True).agg(
        **{P_GRAD_NORM: (P_GRAD_NORM, "mean"), P_LAYER: (P_LAYER, "max"),
           P_STEP: (P_STEP, "max")}).reset_index()
    # order: the run's configuration (task, panel model, gap, label), phase, lag, run id
    configs = meta[group].reset_index(drop=True)
    config_rank = np.full(len(ids), -1)
    ranked = configs[known].sort_values(group, kind="mergesort").drop_duplicates()
    position = pd.MultiIndex.from_frame(ranked).get_indexer(pd.MultiIndex.from_frame(configs))
    config_rank[known] = position[known]
    order = np.lexsort((per_run["_run"].to_numpy(), per_run[P_LAG].to_numpy(),
                        per_run["_phase"].to_numpy(), config_rank[per_run["_run"].to_numpy()]))
    per_run = per_run.iloc[order].reset_index(drop=True)
    keys = configs.iloc[per_run["_run"].to_numpy()].reset_index(drop=True)
    out = pd.concat([keys, per_run], axis=1)
    out[RUN_ID] = np.asarray(ids)[per_run["_run"].to_numpy()]
    out[PHASE] = np.asarray(_PHASE_ORDER)[per_run["_phase"].to_numpy()]
    return out[RUN_PROFILE_COLUMNS]


def pool_runs(per_run: pd.DataFrame, group: list[str]) -> pd.DataFrame:
    """The mean over runs of `run_profiles` rows per `group` (which ends with the lag), with
    the runs counted in `N_RUNS`; layers and lags as ints."""
    pooled = per_run.groupby(group, sort=True).agg(
        **{P_GRAD_NORM: (P_GRAD_NORM, "mean"), N_RUNS: (RUN_ID, "count"),
           P_LAYER: (P_LAYER, "max")}
    ).reset_index()
    pooled[P_LAYER] = pooled[P_LAYER].round().astype(int)
    pooled[P_LAG] = pooled[P_LAG].round().astype(int)
    return pooled


def _pooled_profiles(runs: pd.DataFrame, profiles: pd.DataFrame) -> pd.DataFrame:
    """Mean grad norm per (task, model/activation, label, phase, lag) at each panel's top gap
    (`run_profiles` pooled over runs). Non-positive means (underflow) are dropped because the
    y axis is logarithmic."""
    per_run = run_profiles(runs, profiles)
    if per_run.empty:
        return pd.DataFrame(columns=POOLED_COLUMNS)
    top_gap = per_run.groupby([names.TASK_LABEL, PANEL_MODEL])[names.GAP].transform("max")
    per_run = per_run[per_run[names.GAP] == top_gap]
    pooled = pool_runs(per_run, [names.TASK_LABEL, PANEL_MODEL, names.GAP, LABEL, PHASE, P_LAG])
    return pooled.loc[pooled[P_GRAD_NORM] > 0, POOLED_COLUMNS].reset_index(drop=True)


def grad_profile(runs: pd.DataFrame, profiles: pd.DataFrame, colors: dict[str, str],
                 markers: dict[str, str], experiment: str, path: Path) -> pd.DataFrame:
    """‖∂L/∂h_t‖ vs lag, log y, one panel per (task, model/activation) at its largest gap.

    Draws each run's last layer; returns the drawn data (columns `POOLED_COLUMNS`).
    """
    pooled = (_pooled_profiles(runs, profiles) if not profiles.empty
              else pd.DataFrame(columns=POOLED_COLUMNS))
    panels = (
        sorted(pooled.groupby([names.TASK_LABEL, PANEL_MODEL]).groups) if not pooled.empty else []
    )
    ncols = min(max(len(panels), 1), 3)
    nrows = max(math.ceil(len(panels) / ncols), 1)
    fig = Figure(figsize=(4.6 * ncols + 2.4, 3.8 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    seen: set[str] = set()
    for ax, (task, model) in zip(axes, panels, strict=False):
        panel = pooled[(pooled[names.TASK_LABEL] == task) & (pooled[PANEL_MODEL] == model)]
        gap = int(panel[names.GAP].iloc[0])
        for (label, phase), line in panel.groupby([LABEL, PHASE], sort=True):
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
            _empty(ax, "no gradient profiles logged")
    fig.suptitle(f"{experiment}: gradient norm {GRAD_SYMBOL} vs lag, at init, mid-training "
                 "and at the end")
    phases = [
        Line2D([], [], color="0.3", ls=_PHASE_STYLE[INIT], label=f"{INIT} (step 0)"),
        Line2D([], [], color="0.3", ls=_PHASE_STYLE[MIDDLE],
               label=f"{MIDDLE} (profiled step nearest half the run)"),
        Line2D([], [], color="0.3", ls=_PHASE_STYLE[FINAL], label=f"{FINAL} (last profiled step)"),
    ]
    if panels:
        _legend(fig, sorted(seen), colors, markers, phases)
    save_png(fig, path)
    return pooled
