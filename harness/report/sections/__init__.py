"""The report's sections, one module each, in page order (`SECTIONS`).

Each module defines `SECTION` (a `registry.Section`): its heading, its figures (each a
`registry.Figure`: id, caption, data, draw, with the figure's data and drawing functions in
the same module) and its blocks in page order. The page (`templates/index.html`), summary.md
and the build (`harness.report.build.build_report`) loop over `SECTIONS`.
"""

from __future__ import annotations

from harness.report.registry import Figure, Section, figure_ids
from harness.report.sections import (
    accuracy,
    clipping,
    findings,
    frontier,
    gradients,
    overview,
    runs,
    scorecard,
    solved,
)

SECTIONS: tuple[Section, ...] = (
    overview.SECTION,
    scorecard.SECTION,
    frontier.SECTION,
    findings.SECTION,
    accuracy.SECTION,
    solved.SECTION,
    gradients.SECTION,
    clipping.SECTION,
    runs.SECTION,
)
figure_ids(SECTIONS)  # no figure registered twice or in another section than its own
FIGURES: tuple[Figure, ...] = tuple(fig for section in SECTIONS for fig in section.figures)

__all__ = ["FIGURES", "SECTIONS"]
