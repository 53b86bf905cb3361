"""Learning-rate tuning: one Optuna study per (model, task, gap), its rule and summary on the
study's sweep run."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import TINY, jobs_and_sweeps
from mlflow.tracking import MlflowClient

from harness import names
from harness.tune import combinations


def test_every_combination_of_the_lists_is_one_study() -> None:
    studies = combinations(["experiment=tune_lr", "model=rnn,lstm", "task=copy",
                            "task.gap=50,100", "hydra.sweeper.n_trials=4",
                            "train.steps=100"])
    assert len(studies) == 4
    assert all(s[:3] == ["experiment=tune_lr", "task=copy", "hydra.sweeper.n_trials=4"]
               for s in studies)
    assert {tuple(s[4:]) for s in studies} == {
        ("model=rnn", "task.gap=50"), ("model=rnn", "task.gap=100"),
        ("model=lstm", "task.gap=50"), ("model=lstm", "task.gap=100")}
    # Hydra's own sweep syntax is not a list to expand
    assert combinations(["hydra.sweeper.params.optim.lr=tag(log, interval(1e-4, 1e-2))"]) == [
        ["hydra.sweeper.params.optim.lr=tag(log, interval(1e-4, 1e-2))"]]
    # ranges are expanded as Hydra reads them (a hand-written parser let range(...) through)
    assert [s[-1] for s in combinations(["task.gap=range(10,30,10)"])] == ["task.gap=10",
                                                                         "task.gap=20"]


def test_a_malformed_override_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    from harness.tune import main

    assert main(["model=rnn,", "task.gap=(("]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness-tune: ")


@pytest.mark.slow
def test_a_tiny_tuning_sweep_end_to_end(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """harness-tune over two models: two studies of 2 trials, each trial a run with its own
    learning rate in the preset's range; each study's sweep run states the rule and holds the
    best and the median final eval loss of its trials."""
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    command = [sys.executable, "-m", "harness.tune", *TINY, "model=rnn,gru", "task=adding",
               "task.gap=4", "hydra.sweeper.n_trials=2", f"tracking.uri={uri}",
               f"report.out_dir={tmp_path}/reports", "report.on_multirun_end=false",
               f"train.checkpoint_dir={tmp_path}/ckpt"]
    done = subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("harness-tune: study") == 2
    client = MlflowClient(uri)
    runs, studies = jobs_and_sweeps(client, "tune_lr")
    assert len(studies) == 2 and len(runs) == 4
    models = set()
    for study in studies:
        assert study.info.status == "FINISHED"
        rule = study.data.tags[names.SWEEP_TUNING]
        assert rule.startswith("optuna TPE (seed 0, 4 random startup trials) over optim.lr: "
                               "tag(log, interval(1e-4, 1e-2)); 2 trials per study")
        assert "best of 2" in rule
        trials = [r for r in runs if r.data.tags[names.SWEEP_ID] == study.info.run_id]
        assert len(trials) == 2
        (model,) = {r.data.params[names.MODEL] for r in trials}  # one model per study
        models.add(model)
        rates = [float(r.data.params[names.LR]) for r in trials]
        assert len(set(rates)) == 2 and all(1e-4 <= lr <= 1e-2 for lr in rates)
        losses = {r.info.run_id: r.data.metrics[names.FINAL_EVAL_LOSS] for r in trials}
        assert all(math.isfinite(v) for v in losses.values())
        metrics = study.data.metrics
        assert metrics[names.TUNING_TRIALS] == 2
        assert metrics[names.TUNING_BEST] == min(losses.values())
        assert metrics[names.TUNING_MEDIAN] == statistics.median(losses.values())
        best = min(losses, key=losses.get)
        assert study.data.tags[names.TUNING_BEST_RUN] == best
        best_lr = next(r for r in trials if r.info.run_id == best).data.params[names.LR]
        assert study.data.tags[names.TUNING_BEST_PARAMS] == f"optim.lr={best_lr}"
    assert models == {"rnn", "gru"}
