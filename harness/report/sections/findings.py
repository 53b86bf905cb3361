"""Findings: short computed sentences, one kind of sentence per group of configurations."""

from __future__ import annotations

from markupsafe import Markup

from harness import names
from harness.report.inputs import Inputs
from harness.report.registry import Block, Items, Section, Text


def blocks(r: Inputs) -> list[Block]:
    return [
        Text(Markup("Computed from the runs. A run is solved when its <code>{}</code> tag says "
                    "<code>{}</code> (the task's own criterion); which gap a configuration "
                    "holds is decided by the rule each finding names, the same as the "
                    "headline's.").format(names.STATUS, names.SOLVED), "meta"),
        Items([f.text for f in r.found]),
    ]


SECTION = Section(id="findings", heading="Findings", toc="Findings", figures=(),
                  blocks=blocks)
