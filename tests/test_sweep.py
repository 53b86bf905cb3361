"""Real Hydra multiruns in a subprocess: parallel jobs, one store, nothing lost, a report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from harness import names

pytestmark = pytest.mark.slow

TINY = ["model.hidden_size=8", "train.steps=30", "train.batch_size=8", "train.eval_every=10",
        "train.log_every=3", "train.eval_batch_size=32", "train.profile_batch_size=4"]


def multirun(tmp_path: Path, env: dict[str, str], *overrides: str) -> subprocess.CompletedProcess:
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"  # the folder does not exist yet either
    command = [sys.executable, "-m", "harness.train", "-m", *TINY, f"tracking.uri={uri}",
               f"report.out_dir={tmp_path}/reports", f"hydra.sweep.dir={tmp_path}/sweep",
               *overrides]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_parallel_sweep_from_a_new_store_loses_nothing(tmp_path: Path,
                                                       cli_env: dict[str, str]) -> None:
    done = multirun(tmp_path, cli_env, "experiment_name=par", "hydra.launcher.n_jobs=4",
                    "task=delayed_recall,adding", "task.gap=3,6", "model=rnn,lstm", "seed=0")
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("par").experiment_id])
    assert len(runs) == 8
    assert len({r.info.run_name for r in runs}) == 8
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags[names.STATUS] in names.STATUSES
        steps_run = int(run.data.metrics[names.STEPS_RUN])
        history = client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)
        expected = sorted({*range(3, steps_run + 1, 3), steps_run} - {0})
        assert [m.step for m in history] == expected, run.info.run_name
        evals = client.get_metric_history(run.info.run_id, names.EVAL_LOSS)
        assert [m.step for m in evals] == sorted({*range(0, steps_run + 1, 10), steps_run})
    index = tmp_path / "reports" / "par" / "index.html"
    assert index.exists()
    assert f"Report: {index}" in done.stdout
    assert "mlflow ui --backend-store-uri" in done.stdout


def test_demo_preset_sweeps_all_its_axes(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """The demo preset's sweep space, with the gaps and seeds cut down on the command line."""
    multirun(tmp_path, cli_env, "experiment=demo", "task.gap=4", "seed=0")
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("demo").experiment_id])
    combos = {(r.data.params[names.TASK], r.data.params[names.MODEL],
               r.data.params[names.ACTIVATION]) for r in runs}
    assert combos == {(task, model, act) for task in ("delayed_recall", "copy")
                      for model, act in (("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"),
                                         ("gru", "tanh"))}
    report = tmp_path / "reports" / "demo"
    for name in ("index.html", "summary.md", "runs.csv", "accuracy_vs_gap.png",
                 "grad_profile.png"):
        assert (report / name).exists(), name
