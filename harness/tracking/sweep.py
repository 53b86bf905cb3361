"""A sweep: its parent run (opened, found by its jobs through the sweep folder, closed with
its jobs' counts and report), the files where it lists unfinished jobs, and the tuning summary
of an Optuna sweep."""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig

from harness import names
from harness.tracking.run import mark_killed, source_tags
from harness.tracking.store import client, ensure_store, experiment_id

log = logging.getLogger(__name__)

PARENT_RUN_FILE = ".mlflow_parent_run"  # in the sweep's folder: how jobs find their sweep

SWEEP_LOCK_FILE = ".sweep.lock"  # in the sweep's folder: held by the launching process

FAILED_JOBS_FILE = "failed_jobs.txt"  # in the sweep's folder: one line per job that raised

KILLED_JOBS_FILE = "killed_jobs.txt"  # in the sweep's folder: one line per job a signal stopped

INVALID_JOBS_FILE = "invalid_jobs.txt"  # in the sweep's folder: one line per invalid job

FULL_DISK_JOBS_FILE = "full_disk_jobs.txt"  # in the sweep's folder: jobs a full disk stopped

# in the sweep's folder: jobs that ended because the tracking server did not answer
UNREACHABLE_JOBS_FILE = "unreachable_jobs.txt"

# in the sweep's folder: the keys that vary among its jobs, which every run name shows
NAME_AXES_FILE = "name_axes.json"


def write_name_axes(sweep_dir: Path, keys: list[str]) -> None:
    """Leave the sweep's varying keys for its jobs (`read_name_axes`), before any job starts."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / NAME_AXES_FILE).write_text(json.dumps(keys))


def read_name_axes(sweep_dir: Path) -> list[str]:
    """The varying keys the sweep's sweeper left in its folder ([] where it left none)."""
    path = sweep_dir / NAME_AXES_FILE
    return json.loads(path.read_text()) if path.exists() else []


def start_sweep(uri: str, experiment: str, sweep_dir: Path, overrides: list[str],
                space: dict[str, Any], tags: dict[str, str] | None = None) -> str:
    """Open the parent run of a multirun and leave its id in the sweep folder for the jobs.

    A file, not an environment variable, so jobs find it wherever the launcher starts them
    (joblib workers, SLURM nodes sharing the folder), and a stray MLFLOW_RUN_ID cannot
    interfere.
    """
    from mlflow.entities import Param

    ensure_store(uri)
    mlflow_client = client(uri)
    run = mlflow_client.create_run(
        experiment_id(uri, experiment), run_name=f"sweep-{sweep_dir.name}",
        tags={names.RUN_KIND: names.SWEEP_KIND, **source_tags(),
              names.SWEEP_DIR: str(sweep_dir.resolve()), **(tags or {})})
    mlflow_client.log_batch(run.info.run_id, params=[
        Param(names.SWEEP_OVERRIDES, " ".join(overrides)[:6000]),
        Param(names.SWEEP_SPACE, json.dumps(space, sort_keys=True)[:6000])])
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / PARENT_RUN_FILE).write_text(run.info.run_id)
    return run.info.run_id


def sweep_run_id(sweep_dir: Path) -> str | None:
    """The parent run id a multirun's callback left in its folder, if any."""
    path = sweep_dir / PARENT_RUN_FILE
    return path.read_text().strip() if path.exists() else None


def end_sweep(uri: str, sweep_dir: Path, report_dir: Path | None,
              killed: bool = False, run_id: str | None = None) -> dict[str, int]:
    """Close the parent run (`run_id`, by default the one the sweep's folder names) with its
    jobs' counts by status and attach the sweep's report; `killed`: the sweep was
    interrupted (MLflow status KILLED)."""
    from mlflow.entities import Metric

    run_id = run_id or sweep_run_id(sweep_dir)
    if run_id is None:
        return {}
    mlflow_client = client(uri)
    parent = mlflow_client.get_run(run_id)
    jobs = mlflow_client.search_runs([parent.info.experiment_id],
                                     filter_string=f"tags.{names.SWEEP_ID} = '{run_id}'")
    counts = {status: 0 for status in names.STATUSES}
    for job in jobs:
        # no status yet: still running (an interrupted sweep's job alive elsewhere), or crashed
        fallback = names.RUNNING if job.info.status == "RUNNING" else names.FAILED
        status = job.data.tags.get(names.STATUS, fallback)
        counts[status] = counts.get(status, 0) + 1
    now = int(time.time() * 1000)
    mlflow_client.log_batch(run_id, metrics=[Metric(names.JOBS, len(jobs), now, 0)] + [
        Metric(f"{names.JOBS}_{status}", n, now, 0) for status, n in counts.items()])
    if report_dir is not None and report_dir.is_dir():
        mlflow_client.log_artifacts(run_id, str(report_dir), "report")
    if killed:
        mark_killed(mlflow_client, run_id, "the sweep was interrupted before all its jobs ended")
    else:
        mlflow_client.set_terminated(run_id, "FINISHED")
    return counts


def log_tuning_summary(uri: str, sweep_dir: Path, tuned: list[str]) -> dict[str, float]:
    """On a tuning sweep's parent run: the best and the median objective over the trials it
    created (finite objective only), their count, and the best trial's tuned values."""
    from mlflow.entities import Metric, RunTag

    run_id = sweep_run_id(sweep_dir)
    if run_id is None:
        return {}
    mlflow_client = client(uri)
    parent = mlflow_client.get_run(run_id)
    trials = [run for run in mlflow_client.search_runs(
                  [parent.info.experiment_id], filter_string=f"tags.{names.SWEEP_ID} = '{run_id}'")
              if math.isfinite(run.data.metrics.get(names.TUNING_OBJECTIVE, math.nan))]
    if not trials:
        return {}
    trials.sort(key=lambda run: run.data.metrics[names.TUNING_OBJECTIVE])
    best = trials[0]
    summary = {names.TUNING_BEST: best.data.metrics[names.TUNING_OBJECTIVE],
               names.TUNING_MEDIAN: statistics.median(
                   run.data.metrics[names.TUNING_OBJECTIVE] for run in trials),
               names.TUNING_TRIALS: float(len(trials))}
    now = int(time.time() * 1000)
    best_params = " ".join(f"{key}={best.data.params.get(key)}" for key in tuned)
    mlflow_client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in summary.items()],
                            tags=[RunTag(names.TUNING_BEST_PARAMS, best_params),
                                  RunTag(names.TUNING_BEST_RUN, best.info.run_id)])
    return summary


def record_job(sweep_dir: Path, err: Exception, file_name: str,
               message: str | None = None) -> None:
    """Append one line for a failed (or killed) job to the sweep folder's file_name (where
    the sweep folder's own disk is full, the job's log line is all there is)."""
    hydra_cfg = HydraConfig.get()
    # the job's own overrides, space-joined (override_dirname joins them with commas, which
    # a value such as batched_seeds=[0,1] also contains)
    what = message or f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    line = f"job {hydra_cfg.job.num} ({' '.join(hydra_cfg.overrides.task)}): {what}\n"
    try:
        with (sweep_dir / file_name).open("a") as handle:
            handle.write(line)
    except OSError as failed:
        log.error("could not record the job in %s: %s", sweep_dir / file_name, failed)
