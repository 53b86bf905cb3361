"""The report through a real MLflow tracking server: the bulk history endpoint gives the same
histories as the SQL store's bulk query, and every run row links to its page in the UI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers.report_store import EXPERIMENT
from helpers.servers import mlflow_server

from harness.report import build_report, load
from harness.report.gradients import grad_norm_plan, spectral_plan
from harness.tracking import internals


@pytest.mark.slow
def test_report_over_http_matches_sqlite(report_store: str, tmp_path: Path,
                                         cli_env: dict[str, str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = load.load_sweep(EXPERIMENT, report_store)
    plan = {**grad_norm_plan(sweep.runs, sweep.finals)}
    for run_id, keys in spectral_plan(sweep.runs, sweep.finals).items():
        plan[run_id] = [*plan.get(run_id, []), *keys]
    from_sql = load.load_metric_histories(plan, report_store)
    assert len(from_sql) >= 40
    with mlflow_server(tmp_path / "server", cli_env, report_store) as base:
        from_http = load.load_metric_histories(plan, base)
        # A request that hits the point cap is split until it fits: force tiny caps.
        monkeypatch.setattr(internals, "BULK_MAX_POINTS", 7)
        monkeypatch.setattr(internals, "BULK_MAX_RUNS", 3)
        split = load.load_metric_histories(plan, base)
        monkeypatch.undo()
        index = build_report(EXPERIMENT, base, tmp_path / "reports")
    pd.testing.assert_frame_equal(from_http, from_sql)
    pd.testing.assert_frame_equal(split, from_sql)
    html = index.read_text()
    for row in sweep.runs.itertuples():
        link = f'{base}/#/experiments/{row.experiment_id}/runs/{row.run_id}'
        assert f'<a href="{link}">{row.run_name}</a>' in html
    # The profiles came from the (local) artifact store, as with the SQLite URI.
    assert len(pd.read_csv(index.parent / "grad_heatmap.csv")) > 0
