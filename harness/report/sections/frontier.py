"""Frontier (only with a frontier sweep or variable-gap runs): the gap each configuration
held, its gradients at the gap held and the first gap not held, and how far variable-gap runs
held; the two figures' drawing (their data: `harness.report.frontier`, `frontier_grads`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter, NullLocator, ScalarFormatter

from harness import names
from harness.report import frontier as frontier_
from harness.report import frontier_grads as fg
from harness.report import held, tables, variable_gap
from harness.report.frontier import (
    FAILED,
    GAP,
    GAP_FAILED,
    GAP_HELD,
    OUTCOME,
    SEED,
    SOLVED,
    UNDECIDED,
    missing,
)
from harness.report.inputs import Inputs
from harness.report.load import LABEL, P_GRAD_NORM, P_LAG
from harness.report.plotting import (
    GRAD_SYMBOL,
    add_legend,
    empty_panel,
    hide_rest,
    log_y,
    save_png,
    wrapped_panels,
)
from harness.report.registry import (
    Block,
    Figure,
    Heading,
    Items,
    Plot,
    Section,
    Table,
    Text,
    not_drawn,
)
from harness.tracking.links import run_url

# --- the frontier figure -----------------------------------------------------------------

OUTCOME_STYLE = {  # distinct shapes, so the figure reads without colour too
    SOLVED: {"marker": "o", "color": "#029e73", "facecolor": "#029e73", "label": "solved"},
    FAILED: {"marker": "X", "color": "0.1", "facecolor": "0.1", "label": "failed"},
    UNDECIDED: {"marker": "s", "color": "0.25", "facecolor": "none",
                "label": "undecided (censored)"},
}


_ROW_IN = 0.62  # inches per configuration row


_SEED_SPREAD = 0.44  # the seeds of a probed gap span this much of a row, top to bottom


_WIDTH_IN = 5.4  # the figure's width when its labels leave the gap axis room enough: it
# stands beside the headline's rows


_AXIS_IN = 3.3  # inches kept for the gap axis itself, however long the labels


_PAD_IN = 0.4  # around the labels and the panel's edges


def _fit_width(fig: MplFigure, axes: Sequence[Axes]) -> None:
    """Widen the figure so the longest configuration name leaves the gap axis `_AXIS_IN`
    inches: constrained layout cannot shrink the axis below nothing, and where it gives up
    the names run off the figure's left edge."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    labels = [t for ax in axes for t in ax.get_yticklabels()]
    left = max((t.get_window_extent(renderer).width for t in labels), default=0.0) / fig.dpi
    fig.set_figwidth(max(_WIDTH_IN, left + _AXIS_IN + 2 * _PAD_IN))


def frontier_figure(table: pd.DataFrame, levels: pd.DataFrame, colors: dict[str, str],
                    names_of: dict[tuple[str, str], str], experiment: str, path: Path) -> None:
    """One panel per task, one row per configuration (in `table`'s order, named by
    `names_of`, the headline's plain names): probed gaps with per-seed outcomes and a bar up
    to the largest gap held (log-x gap axis). The figure is as wide as its names need
    (`_fit_width`)."""
    tasks = sorted(table[names.TASK_LABEL].astype(str).unique())
    counts = [int((table[names.TASK_LABEL] == t).sum()) for t in tasks]
    height = sum(_ROW_IN * n + 1.1 for n in counts) + 1.6
    fig = MplFigure(figsize=(_WIDTH_IN, height), layout="constrained")
    axes = fig.subplots(len(tasks), 1, squeeze=False,
                        gridspec_kw={"height_ratios": [n + 1.2 for n in counts]})[:, 0]
    for ax, task in zip(axes, tasks, strict=True):
        rows = table[table[names.TASK_LABEL] == task].to_dict("records")
        at_task = levels[levels[names.TASK_LABEL] == task]
        gaps = sorted({int(g) for g in at_task[GAP]}
                      | {int(r[GAP_HELD]) for r in rows if not missing(r[GAP_HELD])}
                      | {int(r[GAP_FAILED]) for r in rows if not missing(r[GAP_FAILED])})
        low, high = (min(gaps) / 1.5, max(gaps) * 1.5) if gaps else (1.0, 10.0)
        n_seeds = max([int(s) + 1 for s in at_task[SEED]] or [1])
        offsets = (np.linspace(-_SEED_SPREAD / 2, _SEED_SPREAD / 2, n_seeds) if n_seeds > 1
                   else np.zeros(1))
        for y, row in enumerate(rows):
            color = colors.get(str(row[LABEL]), "0.55")
            if not missing(row[GAP_HELD]):
                held = float(row[GAP_HELD])  # type: ignore[arg-type]
                ax.barh(y, held - low, left=low, height=0.72, color=color, alpha=0.28, lw=0,
                        zorder=1)
                ax.plot([held, held], [y - 0.36, y + 0.36], color=color, lw=2.4, zorder=2)
            mine = at_task[at_task[LABEL] == row[LABEL]]
            for outcome, style in OUTCOME_STYLE.items():
                dots = mine[mine[OUTCOME] == outcome]
                if dots.empty:
                    continue
                ax.scatter(dots[GAP].astype(float).to_numpy(),
                           y + offsets[dots[SEED].astype(int).to_numpy()],
                           marker=style["marker"], s=30, edgecolors=style["color"],
                           facecolors=style["facecolor"], linewidths=1.2, zorder=3)
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        if gaps:
            ax.set_xticks(gaps)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_yticks(range(len(rows)), [names_of.get((task, str(r[LABEL])), str(r[LABEL]))
                                         for r in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)  # first configuration on top
        ax.tick_params(labelsize=10)
        ax.set_title(f"task: {task}", fontsize=11)
        ax.set_xlabel("gap (time steps, log scale)", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    handles = [Line2D([], [], ls="", marker=s["marker"], markeredgecolor=s["color"],
                      markerfacecolor=s["facecolor"], markersize=7, label=s["label"])
               for s in OUTCOME_STYLE.values()]
    handles.append(Patch(facecolor="0.55", alpha=0.28, label="bar: up to the gap held"))
    fig.legend(handles=handles, loc="outside lower center", ncols=2,
               title="each probed gap's seeds, seed 0 on top", fontsize=9, title_fontsize=9)
    fig.suptitle(f"{experiment}: gap frontier", fontsize=12)
    _fit_width(fig, axes)
    save_png(fig, path)


# --- the gradients at the frontier -------------------------------------------------------

LEVEL_STYLE = {fg.HELD: "-", fg.NOT_HELD: "--"}


def frontier_gradient_figure(curves: pd.DataFrame, table: pd.DataFrame, colors: dict[str, str],
                             markers: dict[str, str], experiment: str, path: Path) -> None:
    """One panel per frontier configuration with runs: its mean profile at the gap held and at
    the first gap not held, the mean and min-max of the runs at lag = gap."""
    panels = list(dict.fromkeys(zip(table[fg.TASK], table[LABEL], strict=True)))
    fig, axes = wrapped_panels(len(panels))
    labels = sorted({str(label) for _, label in panels})
    colors = {lab: colors.get(lab, "0.55") for lab in labels}
    markers = {lab: markers.get(lab, "o") for lab in labels}
    for ax, (task, label) in zip(axes, panels, strict=False):
        color, marker = colors[str(label)], markers[str(label)]
        rows = table[(table[fg.TASK] == task) & (table[LABEL] == label)].to_dict("records")
        drew = False
        for row in rows:
            line = curves[(curves[fg.TASK] == task) & (curves[LABEL] == label)
                          & (curves[fg.LEVEL] == row[fg.LEVEL])]
            style = LEVEL_STYLE[str(row[fg.LEVEL])]
            gap = int(row[fg.GAP])
            ax.axvline(gap, color=color, ls=":", lw=1.0, alpha=0.8)
            if line.empty:
                continue
            drew = True
            ax.plot(line[P_LAG], line[P_GRAD_NORM], color=color, ls=style, lw=1.5,
                    marker=marker, ms=3, markevery=max(len(line) // 8, 1))
            mean, low, high = (frontier_.as_number(row[c])
                               for c in (fg.AT_GAP, fg.AT_GAP_MIN, fg.AT_GAP_MAX))
            if mean is not None and low is not None and high is not None and mean > 0:
                ax.errorbar([gap], [mean], yerr=[[max(mean - low, 0.0)], [max(high - mean, 0.0)]],
                            color=color, marker=marker, ms=7, capsize=4, lw=1.4, zorder=4,
                            markeredgecolor="0.15")
        levels = ", ".join(f"{r[fg.LEVEL]} {r[fg.GAP]}: {r[fg.N_PROFILED]}/{r[fg.N_PROBES]} "
                           "runs profiled" for r in rows)
        ax.set_title(f"{task} · {label}\n{levels}", fontsize=9)
        if drew:
            log_y(ax)
            ax.grid(True, which="major", alpha=0.3)
        else:
            empty_panel(ax, "its runs at these gaps logged no profile")
        ax.set_xlabel("lag: distance from the loss (time steps)")
        ax.set_ylabel(f"{GRAD_SYMBOL} (last profiled step)")
    hide_rest(axes, len(panels), "no frontier configuration with known runs")
    fig.suptitle(f"{experiment}: {GRAD_SYMBOL} vs lag at the gap held (solid) and the first gap "
                 "not held (dashed)\nlast layer, mean over the probe runs; at lag = gap: mean "
                 "and min-max over runs")
    extra = [Line2D([], [], color="0.3", ls=LEVEL_STYLE[fg.HELD], label="at the gap held"),
             Line2D([], [], color="0.3", ls=LEVEL_STYLE[fg.NOT_HELD],
                    label="at the first gap not held"),
             Line2D([], [], color="0.3", ls=":", label="lag = gap")]
    if panels:
        add_legend(fig, labels, colors, markers, extra)
    save_png(fig, path)


# --- the section -------------------------------------------------------------------------

def _frontier_data(r: Inputs) -> Plot:
    if r.fronts.empty:
        return not_drawn()
    # in the headline's order and names, which it stands beside
    order = held.ranked(r.answers[r.answers[held.RULE] == held.RULE_FRONTIER])
    keys = list(zip(order[names.TASK_LABEL], order[LABEL], strict=True))
    table = r.fronts.table.set_index([names.TASK_LABEL, LABEL], drop=False).loc[keys]
    return Plot(args=(table.reset_index(drop=True), r.fronts.levels, r.colors,
                      {key: r.name_of[key] for key in keys}, r.experiment),
                csvs=((frontier_.FRONTIER_CSV, r.fronts.table),))


FRONTIER = Figure(
    id=frontier_.FRONTIER_PNG.removesuffix(".png"), section="frontier",
    title=frontier_.FIGURE_TITLE,
    caption=frontier_.FIGURE_SENTENCE,
    csvs=(frontier_.FRONTIER_CSV,), data=_frontier_data, draw=frontier_figure, lead=True)


def _gradients_data(r: Inputs) -> Plot:
    found = r.front_grads
    if found is None:
        return not_drawn()
    table = ((fg.FRONTIER_GRAD_CSV, found.table),)
    if found.curves.empty:  # the table says what is missing; the notes say it in words
        return not_drawn(csvs=table)
    return Plot(args=(found.curves, found.table, *r.style),
                csvs=((fg.FRONTIER_GRAD_CURVES_CSV, found.curves), *table))


GRADIENTS = Figure(
    id=fg.FRONTIER_GRAD_PNG.removesuffix(".png"), section="frontier",
    title=fg.FIGURE_TITLE, caption=fg.SENTENCE,
    csvs=(fg.FRONTIER_GRAD_CURVES_CSV, fg.FRONTIER_GRAD_CSV),
    data=_gradients_data, draw=frontier_gradient_figure)


def _frontier_blocks(r: Inputs) -> list[Block]:
    fronts, found = r.fronts, r.front_grads
    assert found is not None
    out: list[Block] = [
        Text(f"{frontier_.source_text(fronts)} {frontier_.MEANING.replace('*', '')} "
             f"{frontier_.rule_text(fronts)}"),
        Table(list(frontier_.DISPLAY_HEADER), frontier_.display_rows(fronts),
              links=[run_url(r.tracking_uri, r.experiment_id, str(sweep))
                     for sweep in fronts.table[frontier_.SWEEP_RUN_ID]],
              link_column=frontier_.DISPLAY_HEADER.index("sweep"), cls="wrap"),
        Text(f"The figure of these rows, {frontier_.FIGURE_TITLE.lower()}, opens the page "
             "beside the headline.", "meta"),
        Heading(fg.TITLE),
        *(Text(note, "none") for note in found.notes),
        GRADIENTS,
    ]
    if fg.profiled(found):
        out.append(Table(list(fg.DISPLAY_HEADER),
                         fg.display_rows(found.table)))
    if found.clipping:
        out += [Text("What clipping changed:"), Items(list(found.clipping))]
    return out


def _variable_gap_blocks(r: Inputs) -> list[Block]:
    vgaps = r.vgaps
    out: list[Block] = [
        Heading("Variable-gap runs: held up to which gap"),
        Text(variable_gap.MEANING.replace("*", "")),
        Items([variable_gap.sentence(str(task), vgaps) for task in
               sorted(vgaps.table[names.TASK_LABEL].astype(str).unique())]),
        Table(list(variable_gap.DISPLAY_HEADER), variable_gap.display_rows(vgaps), tables.NONE),
    ]
    if variable_gap.note(vgaps):
        out.append(Text(variable_gap.note(vgaps), "none"))
    out.append(Text(Markup("Data: <code>{}</code>.").format(variable_gap.VARIABLE_GAP_CSV),
                    "meta"))
    return out


def blocks(r: Inputs) -> list[Block]:
    return [*([] if r.fronts.empty else _frontier_blocks(r)),
            *([] if r.vgaps.empty else _variable_gap_blocks(r))]


SECTION = Section(id="frontier", heading="Frontier", toc="Frontier",
                  figures=(FRONTIER, GRADIENTS), blocks=blocks,
                  present=lambda r: not r.fronts.empty or not r.vgaps.empty)
