"""All runs: one row per run, each name linking to the run's page in the MLflow UI."""

from __future__ import annotations

from harness import names
from harness.report import tables
from harness.report.inputs import Inputs
from harness.report.load import EXPERIMENT_ID, RUN_ID
from harness.report.registry import Block, Partial, Section
from harness.tracking.links import experiment_url, run_url


def blocks(r: Inputs) -> list[Block]:
    header, rows = tables.run_display(r.runs)
    links = [run_url(r.tracking_uri, str(e), str(i))
             for e, i in zip(r.runs[EXPERIMENT_ID], r.runs[RUN_ID], strict=True)]
    runs_url = experiment_url(r.tracking_uri, r.experiment_id)
    return [Partial("runs.html", {
        "header": header,
        "rows": list(zip(rows, links, strict=True)),
        "status_key": names.STATUS,
        "reason_key": names.STATUS_REASON,
    }, f"{len(r.runs)} runs, every column of each in `{tables.RUNS_CSV}`; in the MLflow UI: "
       f"[{runs_url}]({runs_url}).")]


SECTION = Section(id="runs", heading="All runs", toc="Runs", figures=(), blocks=blocks)
