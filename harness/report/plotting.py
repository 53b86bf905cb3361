"""What every figure of the report is drawn with: the colours and markers of configurations,
panel grids and layouts, axes, legends, the uncertainty rule's lines, and the PNG writer.

Each section module (`harness.report.sections`) draws its own figures with these. Figures are
drawn on bare `Figure` objects with an Agg canvas rather than through pyplot, so building a
report never opens a window, never changes the global backend, and leaves no figures behind
in pyplot's registry.
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
)

PALETTE = "colorblind"
# A log x axis only pays off when the gaps span about an order of magnitude.
LOG_X_SPAN = 8.0
GRAD_SYMBOL = r"$\Vert\partial L/\partial h_t\Vert$"
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


def empty_panel(ax: Axes, message: str) -> None:
    """A panel with nothing to draw: `message` in its middle, no ticks."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def gap_axis(ax: Axes, gaps: np.ndarray) -> None:
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


def add_legend(fig: Figure, labels: list[str], colors: dict[str, str], markers: dict[str, str],
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


def share_panel(ax: Axes, task: str, xlabel: str, ylabel: str) -> None:
    """A task's panel whose y axis is a share in [0, 1] (accuracy, solve rate): its range with
    a margin, title, axis labels and grid."""
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"task: {task}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


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


HEATMAP_CMAP = "viridis"  # perceptually uniform, readable with colour-vision deficiencies


TASK_COLS = 4  # panels per row of a figure with one panel per task


def grid(rows: int, cols: int, width: float = 4.0,
         height: float = 3.3) -> tuple[Figure, np.ndarray]:
    """`rows × cols` panels of `width × height` inches; many panels get a fixed layout."""
    size = (max(width * cols + 2.6, 9.5), height * rows + 1.2)
    margins = Margins() if fixed(rows * cols) else None
    fig = Figure(figsize=size, layout=None if margins else "constrained")
    return fig, panel_grid(fig, rows, cols, *size, margins)


def task_panels(tasks: list[str]) -> tuple[Figure, np.ndarray]:
    """One panel per task, in rows of TASK_COLS (the axes flattened)."""
    n = max(len(tasks), 1)
    cols = min(n, TASK_COLS)
    fig = Figure(figsize=(max(4.4 * cols + 2.6, 8.5), 3.9 * math.ceil(n / cols) + 0.8),
                 layout="constrained")
    return fig, fig.subplots(math.ceil(n / cols), cols, squeeze=False).ravel()


REFERENCE_STYLE = {"ls": ":", "color": "0.45", "lw": 1.2}


PANEL_COLS = 3  # panels per row of a figure with one panel per configuration


MIN_WIDTH = 8.5  # inches: room for the two-line titles even with a single panel


def wrapped_panels(n_panels: int, width: float = 4.4, height: float = 3.5,
                   extra_width: float = 2.4, margins: Margins | None = None,
                   legend: float = LEGEND_IN) -> tuple[Figure, np.ndarray]:
    """Panels in rows of PANEL_COLS; many panels get `margins` (a fixed layout)."""
    ncols = min(max(n_panels, 1), PANEL_COLS)
    nrows = max(math.ceil(n_panels / ncols), 1)
    size = (max(width * ncols + extra_width, MIN_WIDTH), height * nrows + 1.0)
    chosen = (margins or Margins()) if fixed(n_panels) else None
    fig = Figure(figsize=size, layout=None if chosen else "constrained")
    return fig, panel_grid(fig, nrows, ncols, *size, chosen, legend).ravel()


def hide_rest(axes: np.ndarray, used: int, message: str) -> None:
    """Hide the panels after the first `used`; with none used, the first says `message`."""
    for ax in axes[used:]:
        if used:
            ax.set_visible(False)
        else:
            empty_panel(ax, message)
