"""Tests of harness.report against a real MLflow SQLite store whose answers are known
(tests/helpers/report_store.py; the `report_store` fixture of tests/conftest.py).

The store holds one sweep: task `copy`, gaps 10/20/40, seeds 0/1, two configurations.
`lstm-tanh-norm1` solves gaps 10 and 20 with both seeds and gap 40 with seed 0 only, so its
largest gap solved by every seed is 20 and its per-seed list [40, 20]; `rnn-tanh-noclip`
solves nothing, and one of its runs diverged. Two extra `adding` runs give a second facet,
one of them `failed` (the job raised) with nothing but its tags.
Some runs lack grad_profile.csv or have an empty/broken one, to show the report survives.

Gradient diagnostics have known answers too: profiles decay exactly geometrically (the LSTM
runs have two layers whose first layer decays differently, so using the wrong layer shows),
decay rate / reach / spectral radius / grad-norm histories are closed-form functions of the
run, and the diverged run logs an infinite spectral radius. A second experiment sweeps
clipping thresholds (norm and value, LSTM and GRU); a third holds pre-diagnostics runs (old
five-column profile, no new metrics); a fourth only a run that failed before logging.
"""

from __future__ import annotations

import base64
import csv
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import seaborn as sns
from helpers.report_store import (
    BARE_EXPERIMENT,
    CLIP_EXPERIMENT,
    EMPTY_EXPERIMENT,
    EXPERIMENT,
    LABEL_A,
    LABEL_B,
    LEGACY_EXPERIMENT,
    LOG_STEPS,
    PROFILE_STEPS,
    UNDERFLOW_LAG,
    A,
    B,
    FakeRun,
    clip_rate,
    clip_runs,
    decay_rate,
    fake_runs,
    grad_norm,
    profile_norm,
    reach,
    spectral,
)
from mlflow.tracking import MlflowClient

from harness import names
from harness.cells import GATE_BLOCKS
from harness.report import ReportError, build_report, load
from harness.report.cli import main as cli_main
from harness.report.gradients import HEATMAP_COLUMNS, grad_norm_plan, spectral_plan
from harness.report.load import RUN_COLUMNS, load_metric_histories, load_sweep
from harness.report.plotting import label_colors, label_markers
from harness.report.tables import markdown_table
from harness.tracking import internals
from harness.tracking.links import UI_HOST, UI_PORT, UI_URL, experiment_url

REPO = Path(__file__).resolve().parents[1]
NEW_CSVS = ("grad_heatmap.csv", "grad_decay_vs_gap.csv", "grad_norm_over_training.csv",
            "clip_rate_by_threshold.csv", "spectral_radius.csv", "grad_profile_by_lag.csv")
NEW_PNGS = ("grad_heatmap.png", "grad_decay_vs_gap.png", "grad_norm_over_training.png",
            "spectral_radius.png")


@pytest.fixture(scope="module")
def report(report_store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(EXPERIMENT, report_store, tmp_path_factory.mktemp("reports"))


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_runs_csv_has_one_typed_row_per_run(report: Path) -> None:
    rows = _csv(report.parent / "runs.csv")
    fakes = {run.name: run for run in fake_runs()}
    assert len(rows) == len(fakes) == 14
    assert list(rows[0]) == list(RUN_COLUMNS)
    by_name = {row["run_name"]: row for row in rows}
    assert set(by_name) == set(fakes)
    for name, fake in fakes.items():
        row = by_name[name]
        assert row[names.TASK] == fake.task
        assert row[names.GAP] == str(fake.gap)
        assert row[names.SEED] == str(fake.seed)
        assert row[names.STATUS] == fake.status
        assert row["label"] == names.config_label(*fake.config)
        if fake.accuracy is None:
            assert row[names.FINAL_EVAL_ACCURACY] == ""
        else:
            assert float(row[names.FINAL_EVAL_ACCURACY]) == pytest.approx(fake.accuracy)
    solved_a = by_name[names.run_name("copy", *A, 20, 1)]
    assert float(solved_a[names.STEPS_TO_SOLVE]) == 80.0
    assert float(solved_a[names.CHANCE_ACCURACY]) == 0.125
    assert by_name[names.run_name("copy", *B, 20, 1)][names.STEPS_TO_SOLVE] == ""


def test_largest_solved_gap(report: Path) -> None:
    rows = {(r[names.TASK_LABEL], r["label"]): r
            for r in _csv(report.parent / "largest_solved_gap.csv")}
    assert set(rows) == {("copy", LABEL_A), ("copy", LABEL_B), ("adding", LABEL_A),
                         ("adding", LABEL_B)}
    a = rows[("copy", LABEL_A)]
    assert (a["largest_solved_gap"], a["largest_solved_gap_per_seed"], a["seeds"]) == (
        "20", "[40, 20]", "[0, 1]"
    )
    assert a["n_seeds"] == "2"
    b = rows[("copy", LABEL_B)]
    assert (b["largest_solved_gap"], b["largest_solved_gap_per_seed"]) == ("none", "[none, none]")
    assert rows[("adding", LABEL_A)]["largest_solved_gap"] == "10"
    failed = rows[("adding", LABEL_B)]
    assert (failed["largest_solved_gap"], failed["largest_solved_gap_per_seed"]) == (
        "none", "[none]"
    )


def test_accuracy_table_means_match_logged_values(report: Path) -> None:
    rows = _csv(report.parent / "accuracy_by_gap.csv")
    logged: dict[tuple[str, str, int], list[float]] = {}
    for run in fake_runs():
        if run.accuracy is not None:
            key = (run.task, names.config_label(*run.config), run.gap)
            logged.setdefault(key, []).append(run.accuracy)
    assert len(rows) == 8  # 2 labels x 3 gaps for copy, 2 labels x 1 gap for adding
    for row in rows:
        values = logged.get((row[names.TASK_LABEL], row["label"], int(row[names.GAP])), [])
        if not values:  # the failed run: listed, but with no accuracy to average
            assert (row["final_eval_accuracy_mean"], row["n_seeds"]) == ("", "0")
            continue
        assert float(row["final_eval_accuracy_mean"]) == pytest.approx(sum(values) / len(values))
        assert int(row["n_seeds"]) == len(values)
    diverged_gap = [r for r in rows if r["label"] == LABEL_B and r[names.GAP] == "40"][0]
    assert diverged_gap["n_seeds"] == "1"  # the diverged seed logged no final accuracy


def test_summary_counts_and_tables(report: Path) -> None:
    text = (report.parent / "summary.md").read_text()
    assert EXPERIMENT in text and "sqlite:///" in text
    assert "| solved | 6 |" in text
    assert "| unsolved | 6 |" in text
    assert "| diverged | 1 |" in text
    assert "| failed | 1 |" in text
    assert "- runs: 14" in text
    # the gap held by its rule (here, with no frontier sweep, every seed), then the every-seed
    # view: the same answer
    assert (f"| copy | tanh RNN | {LABEL_B} | none | every seed | none | [0, 1] | "
            "[none, none] |") in text
    assert (f"| copy | LSTM clipped at 1 | {LABEL_A} | 20 (2/2 seeds) | every seed | 20 | "
            "[0, 1] | [40, 20] |") in text
    assert "±" in text


def test_index_html_is_self_contained_and_escaped(report: Path) -> None:
    assert report.name == "index.html" and report.is_file()
    html = report.read_text()
    assert html.count('src="data:image/png;base64,') == len(list(report.parent.glob("*.png")))
    assert 'src="http' not in html
    # the only links out of the page lead to the MLflow UI (its runs table and each run)
    outside = re.findall(r'href="(http[^"]*)"', html)
    assert outside and all(u.startswith(f"{UI_URL}/#/experiments/") for u in outside)
    # The one script is inline: the browser check (templates/browser_check.html).
    assert "<link" not in html and html.count("<script") == 1 and "<script>" in html
    assert "&lt;script&gt;" in html
    for run in fake_runs():
        assert run.name in html
    for png in ("accuracy_vs_gap.png", "grad_profile.png"):
        assert (report.parent / png).read_bytes().startswith(b"\x89PNG")


def test_rebuild_is_byte_identical(report_store: str, tmp_path: Path) -> None:
    files = ("runs.csv", "summary.md", "largest_solved_gap.csv", "accuracy_by_gap.csv",
             "accuracy_vs_gap.png", "grad_profile.png", "index.html", *NEW_CSVS, *NEW_PNGS)
    first_index = build_report(EXPERIMENT, report_store, tmp_path)
    first = {f.name: f.read_bytes() for f in first_index.parent.iterdir()}
    assert set(files) <= set(first)
    shutil.rmtree(first_index.parent)
    second_index = build_report(EXPERIMENT, report_store, tmp_path)
    assert second_index == first_index
    second = {f.name: f.read_bytes() for f in second_index.parent.iterdir()}
    assert set(second) == set(first)
    for f in first:
        assert second[f] == first[f], f


def test_missing_and_empty_experiment_raise(report_store: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no-such-sweep") as err:
        build_report("no-such-sweep", report_store, tmp_path)
    assert EXPERIMENT in str(err.value)  # lists what is in the store
    with pytest.raises(ValueError, match=f"{EMPTY_EXPERIMENT}.*no runs"):
        build_report(EMPTY_EXPERIMENT, report_store, tmp_path)
    assert not (tmp_path / "no-such-sweep").exists()


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "absent.db"
    with pytest.raises(ReportError, match="does not exist"):
        build_report(EXPERIMENT, f"sqlite:///{db}", tmp_path)
    assert not db.exists()


def test_cli_missing_experiment_exits_2_with_one_line(report_store: str, tmp_path: Path) -> None:
    # A stray MLFLOW_* variable in the caller's shell must not steer the subprocess.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "harness.report.cli", "--experiment", "no-such-sweep",
         "--tracking-uri", report_store, "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("harness-report:")]
    assert len(errors) == 1 and "no-such-sweep" in errors[0] and "Traceback" not in proc.stderr


HEAVY = ("torch", "mlflow", "pandas", "matplotlib")


def test_cli_refuses_a_missing_experiment_before_loading_the_report(report_store: str,
                                                                     tmp_path: Path) -> None:
    """A SQLite store without the experiment is refused from its experiments table alone: in a
    fresh interpreter nothing heavy is imported, and the whole command takes less time than
    Python takes to import hydra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    code = ("import sys\nfrom harness.report.cli import main\n"
            f"rc = main(['--experiment', 'no-such-sweep', '--tracking-uri', {report_store!r}])\n"
            f"print(rc, sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.stdout.splitlines()[-1] == "2 []", done.stderr[-2000:]
    assert f"'{EXPERIMENT}'" in done.stderr  # the experiments it could have meant

    def best(command: list[str]) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, env=env, cwd=tmp_path, timeout=120)
            times.append(time.perf_counter() - start)
        return min(times)

    refuse = best([str(Path(sys.executable).parent / "harness-report"), "--experiment",
                   "no-such-sweep", "--tracking-uri", report_store])
    assert refuse < best([sys.executable, "-c", "import hydra"])


def test_make_ui_prints_each_experiments_runs_url(report_store: str) -> None:
    """`make ui` serves the project's store where the report's links point, after one line
    per experiment with its runs URL (read without MLflow)."""
    from harness.report import ui

    lines = ui.runs_lines(report_store)
    experiments = MlflowClient(report_store).search_experiments()
    assert len(lines) == 1 + len(experiments)
    for experiment in experiments:
        url = experiment_url(report_store, experiment.experiment_id)
        assert f"  {experiment.name}: {url}" in lines and url.startswith(UI_URL)
    assert ui.ui_command(report_store) == (f"mlflow ui --backend-store-uri {report_store} "
                                           f"--host {UI_HOST} --port {UI_PORT}")
    assert ui.ui_command("http://127.0.0.1:5001/") == ""  # a server is its own UI
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile[makefile.index("\nui: setup\n"):].split("\n\n")[0]
    assert "$(BIN)/python -m harness.report.ui sqlite:///$(CURDIR)/mlflow.db" in recipe


def test_the_preflight_reads_stores_as_the_tracking_code_does() -> None:
    from harness.report import cli, preflight
    from harness.schema import PROJECT_ROOT
    from harness.tracking.store import sqlite_path

    for uri in ("sqlite:///mlflow.db", "sqlite:////abs/x.db?timeout=5", "sqlite:///:memory:",
                "sqlite:///", "http://127.0.0.1:5000", "file:///tmp/mlruns"):
        assert preflight.sqlite_file(uri) == sqlite_path(uri), uri
    assert cli.PROJECT_ROOT == PROJECT_ROOT


def test_cli_default_uri_without_db_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # The default store is the project's mlflow.db (harness-train's default): point the
    # project root at an empty folder so the test does not depend on a demo having run.
    monkeypatch.setattr("harness.report.cli.PROJECT_ROOT", tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli_main(["--experiment", EXPERIMENT]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(tmp_path / "mlflow.db") in err
    assert not (tmp_path / "mlflow.db").exists()


def test_cli_success_prints_index_and_ui_command(report_store: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--experiment", EXPERIMENT, "--tracking-uri", report_store,
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    index = tmp_path / EXPERIMENT / "index.html"
    assert str(index) in out and index.is_file()
    experiment = MlflowClient(report_store).get_experiment_by_name(EXPERIMENT).experiment_id
    assert f"{EXPERIMENT} in the MLflow UI: {experiment_url(report_store, experiment)}" in out
    assert f"mlflow ui --backend-store-uri {report_store} --host" in out


def test_task_variants_are_reported_as_their_own_tasks() -> None:
    raw = pd.DataFrame({
        "run_id": ["a", "b", "c", "d"],
        "params.task.name": ["adding", "adding", "adding", "copy"],
        "params.task.variant": ["sum", "mean", "hochreiter1997", None],
    })
    runs = load.typed_runs(raw)
    assert dict(zip(runs[load.RUN_ID], runs[names.TASK_LABEL], strict=True)) == {
        "a": "adding", "b": "adding_mean", "c": "adding_hochreiter1997", "d": "copy"}
    assert set(runs[names.TASK]) == {"adding", "copy"}


def test_helpers() -> None:
    assert markdown_table(["a", "b"], [["x|y", "1"]]) == "| a | b |\n| --- | --- |\n| x\\|y | 1 |"
    runs = pd.DataFrame({"label": ["gru-tanh-noclip", "lstm-tanh-norm1", "lstm-tanh-noclip",
                                   "odd-x-noclip"],
                         "model_variant": ["gru-tanh", "lstm-tanh", "lstm-tanh", "odd-x"]})
    colors = label_colors(runs)
    palette = sns.color_palette("colorblind").as_hex()
    # One colour per model, fixed by MODEL_ORDER whatever else is in the experiment.
    assert colors["lstm-tanh-noclip"] == colors["lstm-tanh-norm1"] == palette[3]
    assert colors["gru-tanh-noclip"] == palette[4] and colors["odd-x-noclip"] == palette[5]
    assert label_colors(runs.iloc[::-1]) == colors
    assert label_colors(runs.iloc[1:3])["lstm-tanh-norm1"] == palette[3]
    markers = label_markers(runs)
    assert markers["lstm-tanh-noclip"] != markers["lstm-tanh-norm1"]


# --- the Gradients section ---------------------------------------------------------------------


def _top_gap(fakes: list[FakeRun], has_data: Callable[[FakeRun], bool]
             ) -> dict[tuple[str, str], list[FakeRun]]:
    """Per (task, label): all its runs at the largest gap where some run has data."""
    configs: dict[tuple[str, str], list[FakeRun]] = {}
    for run in fakes:
        configs.setdefault((run.task, run.label), []).append(run)
    chosen = {}
    for key, runs in configs.items():
        gaps = [r.gap for r in runs if has_data(r)]
        if gaps:
            chosen[key] = [r for r in runs if r.gap == max(gaps)]
    return chosen


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _close(cell: str, value: float | None) -> bool:
    return cell == "" if value is None else float(cell) == pytest.approx(value, rel=1e-9)


def test_heatmap_is_mean_log10_of_last_layer_at_top_gap(report: Path) -> None:
    rows = _csv(report.parent / "grad_heatmap.csv")
    assert list(rows[0]) == HEATMAP_COLUMNS
    expected: dict[tuple[str, str, int, int, int], list[float]] = {}
    for (task, label), runs in _top_gap(fake_runs(), lambda r: bool(r.profile_steps)).items():
        for run in runs:
            for step in run.profile_steps:
                for lag in range(run.gap + 5):
                    norm = profile_norm(run, step, run.layers - 1, lag)
                    logs = expected.setdefault((task, label, run.gap, step, lag), [])
                    if math.isfinite(norm) and norm > 0:
                        logs.append(math.log10(norm))
    keys = [(r[names.TASK_LABEL], r["label"], int(r[names.GAP]), int(r["step"]), int(r["lag"]))
            for r in rows]
    assert set(keys) == set(expected) and len(keys) == len(expected)
    assert [(k[0], k[1], k[3], k[4]) for k in keys] == sorted((k[0], k[1], k[3], k[4])
                                                              for k in keys)
    for key, row in zip(keys, rows, strict=True):
        logs = expected[key]
        assert _close(row["log10_grad_norm"], statistics.fmean(logs) if logs else None)
        assert int(row["n_runs"]) == len(logs)
        assert row["layer"] == ("1" if key[1] == LABEL_A else "0")  # the last layer
        assert (not logs) == (key[4] > UNDERFLOW_LAG)  # zeros (underflow) stay blank
    # The diverged seed's infinite norm at lag 0 is dropped, its other lags still count.
    assert len(expected[("copy", LABEL_B, 40, 0, 0)]) == 1
    assert len(expected[("copy", LABEL_B, 40, 0, 1)]) == 2


def test_grad_profile_figure_uses_last_layer(report: Path) -> None:
    rows = _csv(report.parent / "grad_profile_by_lag.csv")
    lstm = [r for r in rows if r[names.TASK_LABEL] == "copy" and r["panel_model"] == "lstm-tanh"]
    assert lstm and {r["layer"] for r in lstm} == {"1"} and {r[names.GAP] for r in lstm} == {"40"}
    by_key = {(r["phase"], int(r["lag"])): float(r["grad_norm"]) for r in lstm}
    assert by_key[("init", 1)] == pytest.approx((0.5 + 0.25) / 2)
    assert by_key[("final", 2)] == pytest.approx((0.9**2 + 0.81**2) / 2)


def test_decay_vs_gap_means_match_final_values(report: Path) -> None:
    rows = _csv(report.parent / "grad_decay_vs_gap.csv")
    finals: dict[tuple[str, str, int], list[tuple[float, float | None, float]]] = {}
    for run in fake_runs():
        if run.diagnosed:
            last = run.metric_steps[-1]
            rate = decay_rate(run, last)
            half = math.log(2) / -rate if rate < 0 else None
            finals.setdefault((run.task, run.label, run.gap), []).append(
                (rate, half, reach(run, last)))
    assert [(r[names.TASK_LABEL], r["label"], int(r[names.GAP])) for r in rows] == sorted(finals)
    for row in rows:
        values = finals[(row[names.TASK_LABEL], row["label"], int(row[names.GAP]))]
        for i, key in enumerate((names.GRAD_DECAY_RATE, names.GRAD_HALF_LIFE,
                                 names.GRAD_REACH)):
            logged = [v[i] for v in values if v[i] is not None]
            assert int(row[f"{key}_n"]) == len(logged)
            mean, std = _mean_std(logged) if logged else (None, None)
            assert _close(row[f"{key}_mean"], mean) and _close(row[f"{key}_std"], std)
    exploding = [r for r in rows if (r["label"], r[names.GAP]) == (LABEL_B, "40")][0]
    assert exploding[f"{names.GRAD_HALF_LIFE}_n"] == "1"  # the stale half-life is not used
    summary = (report.parent / "summary.md").read_text()
    assert "## Gradients" in summary and f"{names.GRAD_DECAY_RATE} (1/step" in summary
    assert f"| copy | {LABEL_A} | 40 | 2 | " in summary


def test_grad_norm_history_at_top_gap(report: Path) -> None:
    rows = _csv(report.parent / "grad_norm_over_training.csv")
    expected = {}
    for (task, label), runs in _top_gap(fake_runs(), lambda r: r.status != names.FAILED).items():
        for run in runs:
            for step in run.log_steps:
                expected[(task, label, run.gap, run.seed, step)] = (run, grad_norm(run, step))
    got = {(r[names.TASK_LABEL], r["label"], int(r[names.GAP]), int(r[names.SEED]),
            int(r["step"])): r for r in rows}
    assert set(got) == set(expected) and len(rows) == len(expected)
    for key, (run, value) in expected.items():
        row = got[key]
        assert float(row[names.GRAD_NORM_PRE_CLIP]) == pytest.approx(value)
        assert row[names.CLIP_MODE] == run.config[2]
        assert float(row[names.CLIP_THRESHOLD]) == run.config[3]
        assert row["run_name"] == run.name


def _expected_clip_rates(fakes: list[FakeRun]) -> dict[tuple[str, str, str, float], list[float]]:
    clipped = [r for r in fakes if r.config[2] != "none" and r.status != names.FAILED]
    top = {}
    for run in clipped:
        top[(run.task, run.config[2])] = max(top.get((run.task, run.config[2]), 0), run.gap)
    expected: dict[tuple[str, str, str, float], list[float]] = {}
    for run in clipped:
        if run.gap == top[(run.task, run.config[2])]:
            key = (run.task, run.config[2], run.label, run.config[3])
            expected.setdefault(key, []).append(clip_rate(run))
    return expected


def _check_clip_rates(path: Path, fakes: list[FakeRun]) -> None:
    rows = _csv(path)
    expected = _expected_clip_rates(fakes)
    assert len(rows) == len(expected)
    for row in rows:
        key = (row[names.TASK_LABEL], row[names.CLIP_MODE], row["label"],
               float(row[names.CLIP_THRESHOLD]))
        assert float(row[f"{names.CLIP_RATE_TOTAL}_mean"]) == pytest.approx(
            statistics.fmean(expected[key]))
        assert int(row["n_seeds"]) == len(expected[key])


def _check_spectral(path: Path, fakes: list[FakeRun]) -> None:
    rows = _csv(path)
    expected: dict[tuple[str, str, int, str, int], list[float]] = {}
    order = []
    for (task, label), runs in sorted(_top_gap(fakes, lambda r: r.diagnosed).items()):
        layer = runs[0].layers - 1  # the last layer
        for i, block in enumerate(GATE_BLOCKS[runs[0].config[0]]):
            for step in PROFILE_STEPS:
                values = [spectral(r, layer, i, step) for r in runs
                          if r.diagnosed and step in r.spectral_steps]
                values = [v for v in values if math.isfinite(v)]
                if values:
                    expected[(task, label, layer, block, step)] = values
                    order.append((task, label, layer, block, step))
    keys = [(r[names.TASK_LABEL], r["label"], int(r["layer"]), r["block"], int(r["step"]))
            for r in rows]
    assert keys == order  # blocks in GATE_BLOCKS order, steps ascending
    for key, row in zip(keys, rows, strict=True):
        assert float(row[f"{names.SPECTRAL_RADIUS}_mean"]) == pytest.approx(
            statistics.fmean(expected[key]))
        assert int(row["n_runs"]) == len(expected[key])


def test_clip_rate_and_spectral_radius(report: Path) -> None:
    _check_clip_rates(report.parent / "clip_rate_by_threshold.csv", fake_runs())
    _check_spectral(report.parent / "spectral_radius.csv", fake_runs())
    rows = _csv(report.parent / "spectral_radius.csv")
    lstm = {(r["layer"], r["block"]) for r in rows if r["label"] == LABEL_A}
    assert lstm == {("1", b) for b in GATE_BLOCKS["lstm"]}
    diverged_gap = [r for r in rows if r["label"] == LABEL_B]
    assert [r["n_runs"] for r in diverged_gap] == ["2", "1", "1"]  # inf at step 50 dropped


def test_clipping_sweep_with_gru_and_value_clipping(report_store: str, tmp_path: Path) -> None:
    index = build_report(CLIP_EXPERIMENT, report_store, tmp_path)
    _check_clip_rates(index.parent / "clip_rate_by_threshold.csv", clip_runs())
    _check_spectral(index.parent / "spectral_radius.csv", clip_runs())
    rows = _csv(index.parent / "clip_rate_by_threshold.csv")
    assert {(r[names.CLIP_MODE], r["model_activation"], r[names.CLIP_THRESHOLD], r[names.GAP])
            for r in rows} == {("norm", "lstm-tanh", "0.5", "20"),
                               ("norm", "lstm-tanh", "2.0", "20"),
                               ("value", "gru-tanh", "0.5", "20")}
    gru = {r["block"] for r in _csv(index.parent / "spectral_radius.csv")
           if r["label"].startswith("gru")}
    assert gru == set(GATE_BLOCKS["gru"])
    assert "No run clipped" not in (index.parent / "summary.md").read_text()


def test_every_new_figure_is_embedded(report: Path) -> None:
    html = report.read_text()
    assert '<h2 id="gradients">5 Gradients</h2>' in html
    for png in NEW_PNGS:
        data = (report.parent / png).read_bytes()
        assert data.startswith(b"\x89PNG")
        assert f'src="data:image/png;base64,{base64.b64encode(data).decode()}"' in html
    for name in (*NEW_CSVS, *NEW_PNGS):
        assert f"<code>{name}</code>" in html
    assert "negative means vanishing" in html


def test_experiment_without_new_metrics_still_builds(report_store: str, tmp_path: Path) -> None:
    index = build_report(LEGACY_EXPERIMENT, report_store, tmp_path)
    folder = index.parent
    for name in (*NEW_PNGS, *NEW_CSVS):
        assert (folder / name).is_file(), name
    for name in ("grad_decay_vs_gap.csv", "spectral_radius.csv", "clip_rate_by_threshold.csv"):
        assert _csv(folder / name) == [], name
    # The old five-column profile still counts, as layer 0.
    heatmap = _csv(folder / "grad_heatmap.csv")
    assert heatmap and {(r["layer"], r[names.GAP]) for r in heatmap} == {("0", "10")}
    assert len(_csv(folder / "grad_norm_over_training.csv")) == len(LOG_STEPS)
    summary = folder.joinpath("summary.md").read_text()
    html = index.read_text()
    for note in ("No run clipped", "No run logged a spectral radius",
                 f"No run logged {names.GRAD_DECAY_RATE} or {names.GRAD_REACH}"):
        assert note in summary and note in html
    assert html.count('src="data:image/png;base64,') == len(list(folder.glob("*.png")))
    assert not (folder / "clip_activation_heatmap.png").exists()  # one clip setting only
    assert "the heatmaps need at least two" in html


def test_experiment_with_nothing_logged_still_builds(report_store: str, tmp_path: Path) -> None:
    index = build_report(BARE_EXPERIMENT, report_store, tmp_path)
    for name in NEW_CSVS:
        assert _csv(index.parent / name) == [], name
    summary = index.parent.joinpath("summary.md").read_text()
    assert "No run logged a gradient profile" in summary
    assert f"No run logged a {names.GRAD_NORM_PRE_CLIP} history" in summary


def test_histories_are_fetched_only_for_top_gap_runs(report_store: str) -> None:
    sweep = load_sweep(EXPERIMENT, report_store)
    plan = {**grad_norm_plan(sweep.runs, sweep.finals)}
    for run_id, keys in spectral_plan(sweep.runs, sweep.finals).items():
        plan[run_id] = [*plan.get(run_id, []), *keys]
    by_id = sweep.runs.set_index("run_id")
    assert {int(by_id.loc[rid, names.GAP]) for rid in plan} == {40, 10}
    lstm = [keys for rid, keys in plan.items() if by_id.loc[rid, names.MODEL] == "lstm"]
    assert all(names.block_key(names.SPECTRAL_RADIUS, 1, "f") in keys for keys in lstm)
    assert not any(names.block_key(names.SPECTRAL_RADIUS, 0, "f") in keys for keys in lstm)
    histories = load_metric_histories(plan, report_store)
    assert list(histories.columns) == ["run_id", "key", "step", "value"]
    assert set(histories["run_id"]) <= set(plan)
    # SQL on the SQLite file, the SQL store's bulk query and one request per run and key
    # give exactly the same points (the diverged run's infinite radius included).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(internals, "sqlite_metric_histories", lambda *args: None)
        bulk = load_metric_histories(plan, report_store)
        patch.setattr(internals, "client_store", lambda client: None)
        per_run = load_metric_histories(plan, report_store)
    pd.testing.assert_frame_equal(histories, bulk)
    pd.testing.assert_frame_equal(histories, per_run)
    assert len(histories) >= 40


def test_labels_include_every_swept_axis_that_would_be_pooled() -> None:
    from harness.report.axes import label_axes, label_part

    rows = [("copy", "lstm", lr, hidden, "0.01" if task == "copy" else "0.1", task)
            for task in ("copy", "adding") for lr in ("0.001", "0.003") for hidden in ("64",)
            for _ in range(2)]
    raw = pd.DataFrame({
        "run_id": [f"r{i}" for i in range(len(rows))],
        f"params.{names.TASK}": [r[5] for r in rows],
        f"params.{names.MODEL}": [r[1] for r in rows],
        f"params.{names.ACTIVATION}": "tanh",
        f"params.{names.CLIP_MODE}": "none",
        f"params.{names.LR}": [r[2] for r in rows],
        f"params.{names.HIDDEN_SIZE}": [r[3] for r in rows],
        "params.train.weight_decay": [r[4] for r in rows],  # varies only between tasks
        f"params.{names.GAP}": "10",
        f"params.{names.SEED}": [str(i % 2) for i in range(len(rows))],
    })
    base = load.typed_runs(raw)
    params = load.params_of(raw, base.index)
    # lr splits each (task, label): it joins the label; weight decay only differs between
    # tasks and hidden_size never varies, so neither is pooled over and neither is added
    extra = label_axes(params, base[names.TASK_LABEL], base[load.LABEL])
    assert extra == [names.LR]
    runs = load.typed_runs(raw, extra)
    assert sorted(set(runs[load.LABEL])) == ["lstm-tanh-noclip-lr=0.001",
                                             "lstm-tanh-noclip-lr=0.003"]
    assert label_part(names.HIDDEN_SIZE, "128.0") == "hidden_size=128"
    assert label_part(names.LR, None) == "lr=unset"


def test_task_column_reads_the_chosen_option_when_logged() -> None:
    """A run that logged the task option it was given (param `task`, from Hydra's choices)
    is reported under it; a run from before, under the label rebuilt from its params."""
    from harness.report.axes import swept_axes

    raw = pd.DataFrame({
        "run_id": ["r0", "r1", "r2"],
        f"params.{names.TASK}": ["adding", "adding", "delayed_recall"],
        "params.task.variant": ["mean", "mean", None],
        f"params.{names.TASK_CHOICE}": ["adding_mean", None, "delayed_recall_noise"],
        f"params.{names.MODEL_CHOICE}": ["irnn", "irnn", "lstm"],
        f"params.{names.MODEL}": ["rnn", "rnn", "lstm"],
        f"params.{names.GAP}": "10",
        f"params.{names.SEED}": "0",
    })
    runs = load.typed_runs(raw).set_index(load.RUN_ID)
    assert runs.loc[["r0", "r1", "r2"], names.TASK_LABEL].tolist() == [
        "adding_mean", "adding_mean", "delayed_recall_noise"]
    # the chosen options restate their groups' keys: never a swept axis of their own
    axes = set(swept_axes(load.params_of(raw, load.typed_runs(raw).index))["axis"])
    assert names.MODEL in axes and not axes & set(names.CHOICE_PARAMS)


@pytest.mark.parametrize("experiment", [EXPERIMENT, CLIP_EXPERIMENT, LEGACY_EXPERIMENT,
                                        BARE_EXPERIMENT])
def test_sqlite_reads_equal_mlflow_search_runs(report_store: str, experiment: str) -> None:
    """The SQLite store is read with SQL (`internals.sqlite_search_runs`); MLflow's
    search_runs gives the same frames (runs, final metrics incl. infinite and missing ones,
    params, sweeps)."""
    fast = load_sweep(experiment, report_store)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(internals, "sqlite_search_runs", lambda *args: None)
        slow = load_sweep(experiment, report_store)
    for name in ("runs", "finals", "params", "sweeps"):
        pd.testing.assert_frame_equal(getattr(fast, name), getattr(slow, name))
    assert fast.label_axes == slow.label_axes


def test_drawn_profiles_read_each_configurations_top_profiled_gap_only() -> None:
    """Per (task, label) the runs at the top gap are read; a gap whose runs have no usable
    profile (none, or only zero norms) sends the reader one gap down; `also` runs are read."""
    rows = [("x", 40, "x40a"), ("x", 40, "x40b"), ("x", 20, "x20a"), ("x", 20, "x20b"),
            ("x", 10, "x10a"), ("x", 5, "x5a"), ("y", 40, "y40a"), ("y", 10, "y10a"),
            ("y", 5, "y5a")]
    runs = pd.DataFrame({load.RUN_ID: [r[2] for r in rows], names.TASK_LABEL: "copy",
                         load.LABEL: [r[0] for r in rows], names.GAP: [r[1] for r in rows],
                         load.ARTIFACT_URI: ""})
    norms = {"x20a": 0.0, "x10a": 0.5, "x5a": 0.5, "y40a": 0.3, "y10a": 0.2, "y5a": 0.1}
    asked: list[set[str]] = []

    def fake(batch: pd.DataFrame, uri: str) -> list[tuple[str, pd.DataFrame]]:
        asked.append(set(batch[load.RUN_ID]))
        return [(rid, pd.DataFrame([{"step": 0.0, "layer": 0.0, "t": 0.0, "lag": 0.0,
                                     "grad_norm": norms[rid], "grad_norm_std": 0.0,
                                     "hidden_norm": 0.0}]))
                for rid in batch[load.RUN_ID] if rid in norms]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(load, "_profile_tables", fake)
        got = load.load_drawn_profiles(runs, "sqlite:///x.db", also=["y5a"])
    assert asked[0] == {"y5a"}
    assert set().union(*asked) == {"y5a", "x40a", "x40b", "y40a", "x20a", "x20b", "x10a"}
    assert list(got[load.RUN_ID].astype(str)) == ["x20a", "x10a", "y40a", "y5a"]  # runs' order
