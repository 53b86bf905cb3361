"""The report benchmark end to end, at 200 runs: the synthetic store is built, the report
is timed and complete (every section's files), and the timing lands in the CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from benchmarks import __main__ as benchmarks_entry
from benchmarks import report as bench
from harness import names


@pytest.mark.slow
def test_report_bench_at_200_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out_csv = tmp_path / "bench.csv"
    reports = tmp_path / "reports"
    assert benchmarks_entry.main(["report", "--runs", "200", "--cache", str(tmp_path / "cache"),
                                  "--out", str(out_csv), "--report-dir", str(reports),
                                  "--results", str(tmp_path / "results")]) == 0
    printed = capsys.readouterr().out
    assert "build_report:" in printed and "for 200 runs" in printed
    with out_csv.open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["runs"] == "200" and float(row["build_report_s"]) > 0
    with (tmp_path / "results" / "report.csv").open(newline="") as f:
        (result,) = list(csv.DictReader(f))  # the results row: the sitting, then the figures
    assert result["runs"] == "200" and float(result["sgemm_gflops"]) > 0 and result["date"]
    folder = reports / bench.EXPERIMENT
    with (folder / "runs.csv").open(newline="") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 200
    pngs = {p.name for p in folder.glob("*.png")}
    # Five clip settings: every figure is drawn, the clip heatmap included.
    assert {"accuracy_vs_gap.png", "accuracy_by_activation_clip.png",
            "normalized_loss_vs_gap.png", "steps_to_solve_vs_gap.png",
            "clip_activation_heatmap.png", "grad_profile.png", "grad_heatmap.png",
            "grad_decay_vs_gap.png", "grad_norm_over_training.png",
            "spectral_radius.png"} <= pngs
    html = (folder / "index.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(pngs)
    # The histories came in bulk: every configuration's top-gap runs have their grad norms.
    with (folder / "grad_norm_over_training.csv").open(newline="") as f:
        norms = list(csv.DictReader(f))
    top = {(r[names.TASK_LABEL], r["label"]) for r in norms}
    assert len(top) == len(bench.TASKS) * len(bench.MODELS) * len(bench.CLIPS)
    solved = (folder / "summary.md").read_text()
    # configurations with the same numbers share one sentence (findings without repetition)
    assert ("GRU, no clipping, GRU clipped at 0.5, GRU clipped at 1, GRU clipped at 5 and GRU "
            "value-clipped at 1 held gap 160 on delayed_recall (1/1 seed each); above it: the "
            "largest gap run: what lies beyond is untested. Rule: a gap holds when all the "
            "seeds the configuration ran with solved it.") in solved


def test_the_bulk_written_store_reads_back_through_mlflow(tmp_path: Path) -> None:
    """The benchmark writes its runs straight into MLflow's SQLite tables; MLflow's own client
    must read back exactly what each synthetic run logs, as if it had logged it."""
    from mlflow.tracking import MlflowClient

    n = 12
    uri = bench.build_store(tmp_path, n)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(bench.EXPERIMENT)
    found = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])
             if r.data.tags.get(names.RUN_KIND) != names.SWEEP_KIND}
    (parent,) = [r for r in client.search_runs([experiment.experiment_id])
                 if r.data.tags.get(names.RUN_KIND) == names.SWEEP_KIND]
    expected = bench.synthetic_runs(bench._grid(n), parent.info.run_id)
    assert sorted(found) == sorted(r.run_id for r in expected)
    for run in expected:
        got = found[run.run_id]
        assert got.info.run_name == run.name
        assert got.info.status == ("FAILED" if run.status == names.DIVERGED else "FINISHED")
        assert got.data.params == run.params
        assert run.tags.items() <= got.data.tags.items()
        last: dict[str, tuple[int, float]] = {}
        for key, value, step in run.metrics:
            last[key] = max(last.get(key, (step, value)), (step, value))
        assert got.data.metrics == {k: v for k, (_, v) in last.items()}
        history = client.get_metric_history(run.run_id, names.GRAD_NORM_PRE_CLIP)
        assert [(m.step, m.value) for m in history] == [
            (s, v) for k, v, s in run.metrics if k == names.GRAD_NORM_PRE_CLIP]
        assert [a.path for a in client.list_artifacts(run.run_id)] == [
            names.GRAD_PROFILE_ARTIFACT]
        local = Path(client.download_artifacts(run.run_id, names.GRAD_PROFILE_ARTIFACT,
                                               str(tmp_path / "dl")))
        assert local.read_text() == run.profile
    assert bench.build_store(tmp_path, n) == uri  # cached: built once
