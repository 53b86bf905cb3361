"""1 Overview: run counts by status, compute, what was swept, how to reproduce it."""

from __future__ import annotations

from harness.report import overview, tables
from harness.report.inputs import Inputs
from harness.report.registry import Block, Partial, Section


def blocks(r: Inputs) -> list[Block]:
    view = r.view
    return [Partial("overview.html", {
        "n_runs": len(r.runs),
        "counts": tables.display_rows(r.counts),
        "compute_text": overview.compute_text(view).replace("`", ""),
        "n_profiled": r.reads.n_profiled,
        "axes_rows": tables.display_rows(view.axes, [overview.AXIS, overview.VALUES]),
        "pooled_text": overview.pooled_text(view).replace("`", ""),
        "sweeps": view.sweeps,
        "n_outside": view.n_outside,
    }, overview.markdown(view, r.counts))]


SECTION = Section(id="overview", heading="Overview", toc="Overview", figures=(),
                  blocks=blocks)
