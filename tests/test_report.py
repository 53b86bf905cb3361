"""Tests of harness.report against a real MLflow SQLite store whose answers are known.

The store holds one sweep: task `copy`, gaps 10/20/40, seeds 0/1, two configurations.
`lstm-tanh-norm1` solves gaps 10 and 20 with both seeds and gap 40 with seed 0 only, so its
largest gap solved by every seed is 20 and its per-seed list [40, 20]; `rnn-tanh-noclip`
solves nothing, and one of its runs diverged. Two extra `adding` runs give a second facet,
one of them `failed` (the job raised) with nothing but its tags.
Some runs lack grad_profile.csv or have an empty/broken one, to show the report survives.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from harness import names
from harness.report import ReportError, build_report
from harness.report.cli import main as cli_main
from harness.report.figures import label_colors
from harness.report.load import RUN_COLUMNS
from harness.report.tables import markdown_table

EXPERIMENT = "sweep-test"
EMPTY_EXPERIMENT = "sweep-empty"
REPO = Path(__file__).resolve().parents[1]
A = ("lstm", "tanh", "norm", 1.0)
B = ("rnn", "tanh", "none", 1.0)
LABEL_A = names.config_label(*A)
LABEL_B = names.config_label(*B)
HOSTILE_REASON = "<script>alert(1)</script> | pipe"


@dataclass
class FakeRun:
    """What one fake job logs; `profile` None = no artifact, "" = header-only file."""

    task: str
    config: tuple[str, str, str, float]
    gap: int
    seed: int
    status: str
    accuracy: float | None
    reason: str = "ok"
    profile: str | None = field(default="normal")

    @property
    def name(self) -> str:
        return names.run_name(self.task, *self.config, self.gap, self.seed)


def _accuracy(config: tuple[str, str, str, float], gap: int, seed: int, status: str) -> float:
    # Distinct value per run so that means can be checked against what was logged.
    base = 0.99 if status == names.SOLVED else 0.2 if config == B else 0.55
    return round(base - gap / 10_000 - seed / 1_000, 6)


def _fake_runs() -> list[FakeRun]:
    runs = []
    for gap in (10, 20, 40):
        for seed in (0, 1):
            status = names.SOLVED if (gap < 40 or seed == 0) else names.UNSOLVED
            runs.append(FakeRun("copy", A, gap, seed, status, _accuracy(A, gap, seed, status)))
            b_status = names.DIVERGED if (gap, seed) == (40, 1) else names.UNSOLVED
            b_acc = None if b_status == names.DIVERGED else _accuracy(B, gap, seed, b_status)
            runs.append(FakeRun("copy", B, gap, seed, b_status, b_acc))
    for run in runs:
        if run.config == A and (run.gap, run.seed) == (10, 1):
            run.profile = ""  # header only
        if run.config == B and (run.gap, run.seed) == (20, 0):
            run.profile = None  # artifact never written
        if run.status == names.DIVERGED:
            run.profile = "diverged"  # step 0 only, with non-finite values
            run.reason = HOSTILE_REASON
    runs.append(FakeRun("adding", A, 10, 0, names.SOLVED, 0.97))
    runs.append(FakeRun("adding", B, 10, 0, names.FAILED, None, "RuntimeError('oom')", None))
    return runs


def _profile_csv(run: FakeRun) -> str:
    header = ",".join(names.PROFILE_COLUMNS)
    if run.profile == "":
        return header + "\n"
    lines = [header]
    steps = (0,) if run.profile == "diverged" else (0, 50, 100)
    length = run.gap + 5
    for step in steps:
        for t in range(length):
            lag = length - 1 - t
            decay = 0.5 if step == 0 else 0.9
            norm = 0.0 if lag > 30 else decay**lag  # exact zeros: underflow at long lags
            if run.profile == "diverged" and lag == 0:
                norm = math.inf
            lines.append(f"{step},{t},{lag},{norm!r},{norm / 10!r}")
    return "\n".join(lines) + "\n"


def _log_run(client: MlflowClient, experiment_id: str, run: FakeRun, tmp: Path) -> None:
    model, activation, clip_mode, threshold = run.config
    mlflow_run = client.create_run(experiment_id, run_name=run.name)
    run_id = mlflow_run.info.run_id
    params = {
        names.TASK: run.task, names.GAP: run.gap, names.MODEL: model,
        names.ACTIVATION: activation, names.HIDDEN_SIZE: 32, names.CLIP_MODE: clip_mode,
        names.CLIP_THRESHOLD: threshold, names.LR: 0.001, names.SEED: run.seed,
    }
    tags = {names.STATUS: run.status, names.STATUS_REASON: run.reason,
            names.CONFIG_HASH: f"hash-{run.name}", names.GIT_COMMIT: "0" * 40}
    single = {
        names.CHANCE_LOSS: 2.0, names.CHANCE_ACCURACY: 0.125 if run.task == "copy" else 0.1,
        names.STEPS_RUN: 100.0, names.WALL_TIME_S: 12.5 + run.gap,
        names.GRAD_NORM_PRE_CLIP_MAX: 3.0, names.CLIP_RATE_TOTAL: 0.1,
    }
    if run.accuracy is not None:
        single |= {names.FINAL_EVAL_ACCURACY: run.accuracy, names.FINAL_EVAL_LOSS: 0.5,
                   names.BEST_EVAL_ACCURACY: run.accuracy}
    if run.status == names.SOLVED:
        single[names.STEPS_TO_SOLVE] = 80.0
    metrics = [Metric(k, v, 0, 100) for k, v in single.items()]
    for step in (0, 50, 100):
        metrics += [Metric(names.TRAIN_LOSS, 2.0 - step / 100, 0, step),
                    Metric(names.EVAL_ACCURACY, step / 100, 0, step)]
    client.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    if run.profile is not None:
        folder = tmp / run_id
        folder.mkdir()
        (folder / names.GRAD_PROFILE_ARTIFACT).write_text(_profile_csv(run))
        client.log_artifact(run_id, str(folder / names.GRAD_PROFILE_ARTIFACT))
    client.set_terminated(run_id, "FAILED" if run.status == names.DIVERGED else "FINISHED")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=(root / "art").as_uri())
    client.create_experiment(EMPTY_EXPERIMENT, artifact_location=(root / "art2").as_uri())
    staging = root / "staging"
    staging.mkdir()
    for run in _fake_runs():
        _log_run(client, exp_id, run, staging)
    return uri


@pytest.fixture(scope="module")
def report(store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(EXPERIMENT, store, tmp_path_factory.mktemp("reports"))


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_runs_csv_has_one_typed_row_per_run(report: Path) -> None:
    rows = _csv(report.parent / "runs.csv")
    fakes = {run.name: run for run in _fake_runs()}
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
    rows = {(r[names.TASK], r["label"]): r for r in _csv(report.parent / "largest_solved_gap.csv")}
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
    for run in _fake_runs():
        if run.accuracy is not None:
            key = (run.task, names.config_label(*run.config), run.gap)
            logged.setdefault(key, []).append(run.accuracy)
    assert len(rows) == 8  # 2 labels x 3 gaps for copy, 2 labels x 1 gap for adding
    for row in rows:
        values = logged.get((row[names.TASK], row["label"], int(row[names.GAP])), [])
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
    assert f"| copy | {LABEL_B} | none | [0, 1] | [none, none] | 2 |" in text
    assert f"| copy | {LABEL_A} | 20 | [0, 1] | [40, 20] | 2 |" in text
    assert "±" in text


def test_index_html_is_self_contained_and_escaped(report: Path) -> None:
    assert report.name == "index.html" and report.is_file()
    html = report.read_text()
    assert html.count('src="data:image/png;base64,') == 2
    assert 'src="http' not in html and 'href="http' not in html
    assert "<link" not in html and "<script" not in html
    assert "&lt;script&gt;" in html
    for run in _fake_runs():
        assert run.name in html
    for png in ("accuracy_vs_gap.png", "grad_profile.png"):
        assert (report.parent / png).read_bytes().startswith(b"\x89PNG")


def test_rebuild_is_byte_identical(store: str, tmp_path: Path) -> None:
    files = ("runs.csv", "summary.md", "largest_solved_gap.csv", "accuracy_by_gap.csv",
             "accuracy_vs_gap.png", "grad_profile.png")
    first_index = build_report(EXPERIMENT, store, tmp_path)
    first = {f: (first_index.parent / f).read_bytes() for f in files}
    shutil.rmtree(first_index.parent)
    second_index = build_report(EXPERIMENT, store, tmp_path)
    assert second_index == first_index
    for f in files:
        assert (second_index.parent / f).read_bytes() == first[f], f


def test_missing_and_empty_experiment_raise(store: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no-such-sweep") as err:
        build_report("no-such-sweep", store, tmp_path)
    assert EXPERIMENT in str(err.value)  # lists what is in the store
    with pytest.raises(ValueError, match=f"{EMPTY_EXPERIMENT}.*no runs"):
        build_report(EMPTY_EXPERIMENT, store, tmp_path)
    assert not (tmp_path / "no-such-sweep").exists()


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "absent.db"
    with pytest.raises(ReportError, match="does not exist"):
        build_report(EXPERIMENT, f"sqlite:///{db}", tmp_path)
    assert not db.exists()


def test_cli_missing_experiment_exits_2_with_one_line(store: str, tmp_path: Path) -> None:
    # A stray MLFLOW_* variable in the caller's shell must not steer the subprocess.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "harness.report.cli", "--experiment", "no-such-sweep",
         "--tracking-uri", store, "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("harness-report:")]
    assert len(errors) == 1 and "no-such-sweep" in errors[0] and "Traceback" not in proc.stderr


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


def test_cli_success_prints_index_and_ui_command(store: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--experiment", EXPERIMENT, "--tracking-uri", store,
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    index = tmp_path / EXPERIMENT / "index.html"
    assert str(index) in out and index.is_file()
    assert f"mlflow ui --backend-store-uri {store}" in out


def test_helpers() -> None:
    assert markdown_table(["a", "b"], [["x|y", "1"]]) == "| a | b |\n| --- | --- |\n| x\\|y | 1 |"
    colors = label_colors(["b", "a", "c"])
    assert list(colors) == ["a", "b", "c"]
    assert label_colors(["c", "a", "b"]) == colors
