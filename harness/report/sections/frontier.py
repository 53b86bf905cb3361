"""Frontier (only with a frontier sweep or variable-gap runs): the gap each configuration
held, its gradients at the gap held and the first gap not held, and how far variable-gap runs
held."""

from __future__ import annotations

from markupsafe import Markup

from harness import names
from harness.report import frontier as frontier_
from harness.report import frontier_grads, tables, variable_gap
from harness.report.inputs import Inputs
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


def _frontier_data(r: Inputs) -> Plot:
    if r.fronts.empty:
        return not_drawn()
    return Plot(args=(r.fronts.table, r.fronts.levels, r.colors, r.experiment),
                csvs=((frontier_.FRONTIER_CSV, r.fronts.table),))


FRONTIER = Figure(
    id=frontier_.FRONTIER_PNG.removesuffix(".png"), section="frontier",
    title=frontier_.FIGURE_TITLE,
    caption=lambda r: f"{frontier_.FIGURE_SENTENCE} {frontier_.rule_text(r.fronts)}",
    csvs=(frontier_.FRONTIER_CSV,), data=_frontier_data, draw=frontier_.frontier_figure)


def _gradients_data(r: Inputs) -> Plot:
    found = r.front_grads
    if found is None:
        return not_drawn()
    table = ((frontier_grads.FRONTIER_GRAD_CSV, found.table),)
    if found.curves.empty:  # the table says what is missing; the notes say it in words
        return not_drawn(csvs=table)
    return Plot(args=(found.curves, found.table, *r.style),
                csvs=((frontier_grads.FRONTIER_GRAD_CURVES_CSV, found.curves), *table))


GRADIENTS = Figure(
    id=frontier_grads.FRONTIER_GRAD_PNG.removesuffix(".png"), section="frontier",
    title=frontier_grads.FIGURE_TITLE, caption=frontier_grads.SENTENCE,
    csvs=(frontier_grads.FRONTIER_GRAD_CURVES_CSV, frontier_grads.FRONTIER_GRAD_CSV),
    data=_gradients_data, draw=frontier_grads.frontier_gradient_figure)


def _frontier_blocks(r: Inputs) -> list[Block]:
    fronts, found = r.fronts, r.front_grads
    assert found is not None
    out: list[Block] = [
        Text(f"{frontier_.source_text(fronts)} {frontier_.MEANING.replace('*', '')}"),
        Table(list(frontier_.DISPLAY_HEADER), frontier_.display_rows(fronts)),
        FRONTIER,
        Heading(frontier_grads.TITLE),
        *(Text(note, "none") for note in found.notes),
        GRADIENTS,
    ]
    if frontier_grads.profiled(found):
        out.append(Table(list(frontier_grads.DISPLAY_HEADER),
                         frontier_grads.display_rows(found.table)))
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
