"""All runs: one row per run, linked to its MLflow page against a tracking server."""

from __future__ import annotations

from harness import names
from harness.report import tables
from harness.report.inputs import Inputs
from harness.report.load import EXPERIMENT_ID, RUN_ID
from harness.report.registry import Block, Partial, Section


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI when the store is a tracking server, else ""."""
    if not tracking_uri.startswith(("http://", "https://")):
        return ""
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def blocks(r: Inputs) -> list[Block]:
    header, rows = tables.run_display(r.runs)
    links = [run_link(r.tracking_uri, str(e), str(i))
             for e, i in zip(r.runs[EXPERIMENT_ID], r.runs[RUN_ID], strict=True)]
    return [Partial("runs.html", {
        "header": header,
        "rows": list(zip(rows, links, strict=True)),
        "has_links": any(links),
        "status_key": names.STATUS,
        "reason_key": names.STATUS_REASON,
    })]


SECTION = Section(id="runs", heading="All runs", toc="Runs", figures=(), blocks=blocks)
