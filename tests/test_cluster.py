"""Sweeps through submitit: on a real single-node SLURM cluster started on this machine
(tests/helpers/slurm.py), and with submitit's local executor; torch threads inside SLURM."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers.cli import TINY, TRAIN, jobs_and_sweeps
from helpers.slurm import slurm_cluster, why_not_available
from mlflow.tracking import MlflowClient

from harness import names
from harness.resources import cpu_count, torch_threads


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    reason = why_not_available()
    if reason is not None:
        pytest.skip(f"no SLURM test cluster: {reason}")
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env


def sweep_command(tmp_path: Path, *overrides: str) -> list[str]:
    return [*TRAIN, "-m", *TINY,
            f"tracking.uri=sqlite:///{tmp_path}/store/mlflow.db",
            f"report.out_dir={tmp_path}/reports", f"train.checkpoint_dir={tmp_path}/ckpt",
            "hydra.sweep.dir=sweep", *overrides]  # relative, as by default


def sweep(tmp_path: Path, env: dict[str, str], *overrides: str,
          expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run(sweep_command(tmp_path, *overrides), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == expect, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def check_runs(tmp_path: Path, experiment: str, expected: int, report: bool = True) -> list:
    """Every job's run finished, under the sweep's parent run, with a result."""
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    runs, sweeps = jobs_and_sweeps(client, experiment)
    assert len(runs) == expected and len(sweeps) == 1
    parent = sweeps[0]
    assert parent.info.status == "FINISHED" and parent.data.metrics[names.JOBS] == expected
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_name
        assert run.data.tags[names.STATUS] in (names.SOLVED, names.UNSOLVED, names.DIVERGED)
        assert run.data.tags[names.SWEEP_ID] == parent.info.run_id
        assert run.data.tags[names.PARENT_RUN_ID] == parent.info.run_id
        assert client.get_metric_history(run.info.run_id, names.EVAL_LOSS)
    assert (tmp_path / "reports" / experiment / "index.html").exists() == report
    return runs


@pytest.mark.slow
def test_sweep_on_a_real_slurm_cluster(tmp_path: Path, cli_env: dict[str, str],
                                       slurm_env: dict[str, str]) -> None:
    """The slurm preset: one job array, every run in its own SLURM allocation with 1 CPU,
    all in the launching machine's store, with the parent run, the report and the outputs."""
    env = {**cli_env, "SLURM_CONF": slurm_env["SLURM_CONF"], "PATH": slurm_env["PATH"]}
    done = sweep(tmp_path, env, "hydra/launcher=slurm", "hydra.launcher.partition=test",
                 "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
                 "hydra.launcher.array_parallelism=2", "experiment_name=slurm",
                 "task=delayed_recall", "task.gap=3,5", "model=rnn,gru")
    runs = check_runs(tmp_path, "slurm", 4)
    # torch threads came from SLURM_CPUS_PER_TASK (1), not from the machine's cores
    assert {r.data.tags[names.TORCH_THREADS] for r in runs} == {"1"}
    # submitit's folder holds one log per array task, with SLURM's array job ids
    logs = sorted((tmp_path / "sweep" / ".submitit").glob("*_*/*_log.out"))
    assert len(logs) == 4, done.stdout[-2000:]
    assert all("eval_accuracy" in log.read_text() for log in logs)
    array_ids = {log.parent.name.split("_")[0] for log in logs}
    assert len(array_ids) == 1  # one array job
    # each job wrote its Hydra outputs into the sweep folder, beside the launcher's
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.name.isdigit()) == \
        ["0", "1", "2", "3"]


def signal_time_limit(tmp_path: Path, env: dict[str, str],
                      *overrides: str) -> tuple[subprocess.CompletedProcess, str]:
    """Launch a one-job SLURM sweep; once its log shows step 100, send the job the SIGUSR2
    that submitit has SLURM send `signal_delay_s` before a job's time limit. Sent with
    `scancel --signal=USR2`, as submitit's own tests do: SLURM's timer may fire up to 60 s
    early, even before the job has started training. Returns the sweep's result and the
    SLURM job id."""
    command = sweep_command(tmp_path, "hydra/launcher=slurm", "hydra.launcher.partition=test",
                            "hydra.launcher.mem_gb=1", "task=copy", "task.gap=20", "model=lstm",
                            "report.on_multirun_end=false", *overrides)
    launcher = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not any("step 100/" in log.read_text()
                  for log in (tmp_path / "sweep" / ".submitit").glob("*/*_log.out")):
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
        time.sleep(0.5)
    (job_dir,) = (tmp_path / "sweep" / ".submitit").glob("[0-9]*")
    subprocess.run(["scancel", "--signal=USR2", job_dir.name], env=env, check=True, timeout=30)
    stdout, stderr = launcher.communicate(timeout=400)
    return subprocess.CompletedProcess(command, launcher.returncode, stdout, stderr), \
        job_dir.name


@pytest.mark.slow
def test_a_run_at_its_slurm_time_limit_is_requeued_and_resumes(

        tmp_path: Path, cli_env: dict[str, str], slurm_env: dict[str, str]) -> None:
    """train.checkpoint_requeue (the default): the run stops at the end of its step with a
    checkpoint, submitit requeues the SLURM job, and the job resumes from that checkpoint into
    the same MLflow run, which finishes; the sweep exits 0."""
    env = {**cli_env, "SLURM_CONF": slurm_env["SLURM_CONF"], "PATH": slurm_env["PATH"]}
    done, job_id = signal_time_limit(tmp_path, env, "experiment_name=requeue",
                                     "train.steps=3000", "train.checkpoint_every=100000")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    (run,), _ = jobs_and_sweeps(client, "requeue")  # one run: resumed, not a second one
    assert run.info.status == "FINISHED" and run.data.tags[names.STATUS] in names.STATUSES
    assert run.data.metrics[names.STEPS_RUN] > 100
    logs = "\n".join(log.read_text() for log in
                     (tmp_path / "sweep" / ".submitit").glob(f"{job_id}*/*_log.*"))
    assert "submitit requeues the job" in logs
    assert "resuming run " + run.info.run_id in logs


@pytest.mark.slow
def test_a_run_at_its_slurm_time_limit_stops_with_a_checkpoint(
        tmp_path: Path, cli_env: dict[str, str], slurm_env: dict[str, str]) -> None:
    """train.checkpoint_requeue=false: the run stops at the end of its step with a
    checkpoint, `killed`; the sweep lists it and exits 1."""
    env = {**cli_env, "SLURM_CONF": slurm_env["SLURM_CONF"], "PATH": slurm_env["PATH"]}
    done, _ = signal_time_limit(tmp_path, env, "experiment_name=limit", "train.steps=100000",
                                "train.checkpoint_every=100000",
                                "train.checkpoint_requeue=false")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "1 job(s) were stopped by a signal" in done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    (run,), _ = jobs_and_sweeps(client, "limit")
    assert run.info.status == "KILLED" and run.data.tags[names.STATUS] == names.KILLED
    reason = run.data.tags[names.STATUS_REASON]
    assert "SIGUSR2 at step" in reason and "after saving a checkpoint" in reason
    step = int(reason.split("at step ")[1].split(",")[0])
    (saved,) = (tmp_path / "ckpt" / "limit").glob("*.pt")
    assert torch.load(saved, weights_only=False)["step"] == step >= 100


@pytest.mark.slow
def test_sweep_with_submitit_local(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """The local preset: submitit's executor on this machine, one process per run."""
    sweep(tmp_path, cli_env, "hydra/launcher=local", "experiment_name=local",
          "task=adding", "task.gap=4,6", "report.on_multirun_end=false")
    runs = check_runs(tmp_path, "local", 2, report=False)
    assert {r.data.tags[names.TORCH_THREADS] for r in runs} == {"1"}  # cpus_per_task
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))) == 2


def test_torch_threads_inside_a_slurm_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert torch_threads(0) == cpu_count()  # a single run outside SLURM: every core
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert torch_threads(0) == 3
    assert torch_threads(2) == 2  # train.threads wins
