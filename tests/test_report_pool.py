"""Pooling on purpose: `harness-report --pool AXIS[,AXIS]` keeps named swept params out of the
configuration label, and the report says so first of all.

Experiment `pool-test`: the LSTM on copy at gaps 10 and 20, seeds 0 and 1, at two learning
rates. At lr 0.003 every run solves; at lr 0.001 only gap 10 is solved. Without pooling the
lr joins the label and the two learning rates are two configurations (largest gap solved by
every seed: 10 and 20); pooled, they are one configuration with two runs per (gap, seed),
and gap 20 counts as solved by no seed (a re-run counts only if every run of it solved).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from harness import names
from harness.report import ReportError, build_report
from harness.report.cli import main as cli_main

EXPERIMENT = "pool-test"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("pool-store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=(root / "a").as_uri())
    for lr in (0.001, 0.003):
        for gap in (10, 20):
            for seed in (0, 1):
                solved = lr == 0.003 or gap == 10
                status = names.SOLVED if solved else names.UNSOLVED
                name = f"{names.run_name('copy', 'lstm', 'tanh', 'none', 1.0, gap, seed)}-{lr}"
                run_id = client.create_run(exp_id, run_name=name,
                                           tags={names.STATUS: status}).info.run_id
                params = {names.TASK: "copy", names.GAP: gap, names.MODEL: "lstm",
                          names.ACTIVATION: "tanh", names.CLIP_MODE: "none", names.SEED: seed,
                          names.LR: lr, "train.batch_size": 32}
                client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()],
                                 metrics=[Metric(names.FINAL_EVAL_ACCURACY,
                                                 1.0 if solved else 0.2, 0, 100)])
                client.set_terminated(run_id)
    return uri


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_without_pool_the_lr_splits_the_configurations(store: str, tmp_path: Path) -> None:
    index = build_report(EXPERIMENT, store, tmp_path, workers=1)
    solved = {r["label"]: r["largest_solved_gap"]
              for r in _rows(index.parent / "largest_solved_gap.csv")}
    assert solved == {"lstm-tanh-noclip-lr=0.001": "10", "lstm-tanh-noclip-lr=0.003": "20"}
    assert "Pooled on purpose" not in index.read_text()
    assert "Pooled on purpose" not in (index.parent / "summary.md").read_text()


def test_pooled_on_purpose_mixes_them_and_says_so_first(store: str, tmp_path: Path) -> None:
    index = build_report(EXPERIMENT, store, tmp_path, workers=1, pool=[names.LR])
    solved = _rows(index.parent / "largest_solved_gap.csv")
    assert [(r["label"], r["largest_solved_gap"]) for r in solved] == [
        ("lstm-tanh-noclip", "10")]
    accuracy = {r[names.GAP]: r for r in _rows(index.parent / "accuracy_by_gap.csv")}
    assert accuracy["20"]["n_seeds"] == "4"  # two lrs x two seeds in one point
    assert float(accuracy["20"]["final_eval_accuracy_mean"]) == pytest.approx(0.6)
    banner = (f"Pooled on purpose (--pool) over {names.LR}: every table, figure, finding and "
              "claim of this report mixes runs that differ in it, and no configuration label "
              "names it.")
    html = index.read_text()
    assert f'<p class="pool-banner" role="alert">{banner}</p>' in html
    assert html.index("pool-banner") < html.index('id="overview"')
    summary = (index.parent / "summary.md").read_text()
    assert summary.splitlines()[2] == (
        f"> **Pooled on purpose (`--pool`) over `{names.LR}`: every table, figure, finding and "
        "claim of this report mixes runs that differ in it, and no configuration label names "
        "it.**")
    # the automatic pooled-axes sentence does not repeat it
    assert f"`{names.LR}` also vary" not in summary


def test_pool_refuses_what_cannot_be_pooled(store: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ReportError, match="part of the configuration label"):
        build_report(EXPERIMENT, store, tmp_path, workers=1, pool=[names.MODEL])
    with pytest.raises(ReportError, match=f"swept params that can be pooled: {names.LR}"):
        build_report(EXPERIMENT, store, tmp_path, workers=1, pool=["train.batch_size"])
    code = cli_main(["--experiment", EXPERIMENT, "--tracking-uri", store, "--out",
                     str(tmp_path), "--pool", f"{names.LR},{names.SEED}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"cannot pool over {names.SEED}" in err
    code = cli_main(["--experiment", EXPERIMENT, "--tracking-uri", store, "--out",
                     str(tmp_path), "--pool", f" {names.LR} "])
    assert code == 0
    assert "Pooled on purpose" in (tmp_path / EXPERIMENT / "summary.md").read_text()
    with pytest.raises(SystemExit, match="^2$") as exit_:
        cli_main(["--experiment", EXPERIMENT, "--compare", EXPERIMENT, "--pool", names.LR])
    assert exit_.value.code == 2
