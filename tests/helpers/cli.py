"""Running `harness-train` as a user would: in a subprocess, through `python -m harness.train`
(the console script's module), so its exit status and stderr are what a user sees."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from harness import names

TRAIN = [sys.executable, "-m", "harness.train"]
# A run of a few seconds: enough steps to log, evaluate and profile.
TINY = ["model.hidden_size=8", "train.steps=30", "train.batch_size=8", "train.eval_every=10",
        "train.log_every=3", "train.eval_batch_size=32", "train.profile_batch_size=4"]


def harness_train(*args: str, cwd: Path, env: dict[str, str],
                  timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`harness-train ARGS` in `cwd`, its output captured."""
    return subprocess.run([*TRAIN, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def jobs_and_sweeps(client: MlflowClient, experiment: str) -> tuple[list, list]:
    """An experiment's job runs and its sweeps' parent runs."""
    everything = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    sweeps = [r for r in everything if r.data.tags.get(names.RUN_KIND) == names.SWEEP_KIND]
    return [r for r in everything if r not in sweeps], sweeps


def wait_for_first_job(sweep: subprocess.Popen, sweep_dir: Path, timeout: float = 240) -> None:
    """Wait until the first job of the running `sweep` has ended (its progress count, in
    `sweep_dir`, is past 0); fail if the sweep ends first or `timeout` passes."""
    count = sweep_dir / ".progress" / "count"
    deadline = time.monotonic() + timeout
    while not (count.exists() and count.read_text().strip() not in ("", "0")):
        assert sweep.poll() is None, sweep.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no job of the sweep ended in {timeout:.0f} s"
        time.sleep(0.02)
