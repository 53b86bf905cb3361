"""Scorecard of published claims (only when the experiment has a claims file)."""

from __future__ import annotations

from markupsafe import Markup

from harness.report import claims
from harness.report.inputs import Inputs
from harness.report.registry import Block, Section, Table, Text


def blocks(r: Inputs) -> list[Block]:
    card = r.card
    assert card is not None
    verdicts = [str(v).replace(" ", "-") for v in card.table["verdict"]]
    return [
        Text(f"{claims.summary_text(card)} {claims.source_text(card).replace('`', '')}"),
        Text(claims.RULE_TEXT, "meta"),
        Table(list(claims.DISPLAY_HEADER), claims.display_rows(card),
              row_classes=[f"verdict-{v}" for v in verdicts], cls="scorecard"),
        Text(Markup("Data: <code>{}</code>.").format(claims.SCORECARD_CSV), "meta"),
    ]


SECTION = Section(id="scorecard", heading="Scorecard of published claims", toc="Scorecard",
                  figures=(), blocks=blocks, present=lambda r: r.card is not None)
