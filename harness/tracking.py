"""The only module that writes to MLflow: store creation, run identity, params, metrics,
tags and artifacts.

- Store: the tracking URI comes from config (default an SQLite file at the project root).
  Several processes opening a *new* SQLite store at once race on its schema migration, so
  `ensure_store` creates it once under a file lock before any job logs to it.
- Identity: params are the flattened resolved config; `config_hash` hashes it without the
  keys that do not change the result (where things are written, thread count).
- Speed: metrics are buffered and written with `log_batch`, a few hundred points a call.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import statistics
import subprocess
import time
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock
from mlflow.entities import Metric, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness import locks, names
from harness.diagnostics import GradProfile
from harness.schema import PROJECT_ROOT
from harness.store import sqlite_path

log = logging.getLogger(__name__)
# MLflow's SQL store logs every database error with its traceback, then raises it; the harness
# reports the raised error itself (a full disk in one line: harness.store.disk_full).
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

# Keys that say where or how fast a run is executed, not what it computes (a batched
# member's config has `batched_seeds` null: it is the run of its `seed`).
NON_SEMANTIC_PREFIXES = ("tracking.", "report.", "train.threads", "train.checkpoint", "force",
                         "batched_seeds", "train.device")
# A run that ended with one of these is a result: rerunning its config skips it.
RESULT_STATUSES = (names.SOLVED, names.UNSOLVED, names.DIVERGED)
FLUSH_POINTS = 500  # buffered metric points that trigger a write
FLUSH_SECONDS = 15.0  # ... or time since the last write, so the UI shows live progress
PARAM_BATCH = 100  # MLflow's limit of params per log_batch call
METRIC_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{'model': {'name': 'lstm'}} -> {'model.name': 'lstm'}: MLflow param keys = config keys."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{full}."))
        else:
            flat[full] = str(value)
    return flat


def config_hash(flat: dict[str, str]) -> str:
    """Stable 12-hex-digit hash of the semantic part of a flattened config: without where and
    how fast it runs, and without the option names it was composed from (`model=irnn` and
    `model=rnn model.activation=relu model.init=identity` are the same run)."""
    semantic = {k: v for k, v in flat.items()
                if not k.startswith(NON_SEMANTIC_PREFIXES) and k not in names.CHOICE_PARAMS}
    return hashlib.sha256(json.dumps(semantic, sort_keys=True).encode()).hexdigest()[:12]


def git_commit() -> str:
    """The current commit, with `-dirty` if tracked files changed; `unknown` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, check=True,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def source_tags() -> dict[str, str]:
    """MLflow's system tags of where a run comes from: the commit and the entry point."""
    return {names.GIT_COMMIT: git_commit(), names.SOURCE_NAME: "harness-train",
            names.SOURCE_TYPE: "LOCAL"}


class StoreError(RuntimeError):
    """The tracking store cannot be used (unwritable folder, unreachable server)."""


class RunStopped(Exception):
    """A signal asked the run to stop (SIGTERM from `kill` or `scancel`, or a SLURM time
    limit); it saved a checkpoint first. The run ends `killed` and rerunning resumes it."""


def ensure_store(uri: str) -> None:
    """Create (and migrate) the tracking store once, before parallel jobs use it.

    For SQLite this happens under a file lock next to the database; for a server it checks
    that the server answers, so a wrong URL fails in seconds, before any training. Raises
    StoreError naming the path or URL.
    """
    path = sqlite_path(uri)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"tracking.uri: cannot create the store's folder {path.parent}: "
                             f"{err.strerror}") from err
        if not os.access(path.parent, os.W_OK):
            raise StoreError(f"tracking.uri: cannot write the store's folder {path.parent}")
        with FileLock(f"{path}.lock", timeout=300):
            MlflowClient(uri).search_experiments(max_results=1)
        return
    if uri.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as response:
                response.read()
        except OSError as err:
            reason = getattr(err, "reason", err)
            raise StoreError(f"tracking.uri: MLflow server {uri} unreachable ({reason})") from err


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside an SQLite store, in `mlartifacts/`.

    MLflow's default for a database store is `./mlruns` under the *current* directory, which
    would scatter one sweep's artifacts over wherever its jobs were started. A server keeps
    its own artifact root (None).
    """
    path = sqlite_path(uri)
    if path is None:
        return None
    return (path.parent / "mlartifacts" / experiment).as_uri()


def experiment_id(client: MlflowClient, name: str) -> str:
    """Id of the named experiment, creating it; safe when parallel jobs race to create it."""
    for _ in range(5):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(
                name, artifact_location=artifact_location(client.tracking_uri, name),
                tags={names.EXPERIMENT_KIND: names.TRAINING_EXPERIMENT})
        except MlflowException:
            time.sleep(0.2)  # another job created it between our two calls
    raise RuntimeError(f"could not get or create MLflow experiment {name!r}")


def finished_run(uri: str, experiment: str, hash_: str) -> Run | None:
    """The run of this experiment with this config hash that already ended with a result.

    Runs that failed or were killed (no result status) do not count: they are run again,
    from their checkpoint if they left one.
    """
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id],
                              filter_string=f"tags.{names.CONFIG_HASH} = '{hash_}'")
    for run in runs:
        if (run.info.status == RunStatus.to_string(RunStatus.FINISHED)
                and run.data.tags.get(names.STATUS) in RESULT_STATUSES):
            return run
    return None


class MlflowTracker:
    """One MLflow run: buffered metric writes, params, tags and artifacts."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        # With checkpoints, metrics are written only at checkpoints (and the end): then the
        # store never holds points past the last checkpoint, and a resumed run adds no
        # duplicates.
        self.auto_flush = True
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if self.auto_flush and (len(self._buffer) >= FLUSH_POINTS
                                or time.monotonic() - self._last_flush > FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        for chunk in chunks(self._buffer, METRIC_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk)
        self._buffer = []
        self._last_flush = time.monotonic()

    def log_params(self, params: dict[str, str]) -> None:
        for chunk in chunks([Param(k, v) for k, v in params.items()], PARAM_BATCH):
            self.client.log_batch(self.run_id, params=chunk)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_profiles(self, profiles: list[GradProfile]) -> None:
        """Write the gradient-by-lag profiles as one CSV artifact (long format)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(names.PROFILE_COLUMNS)
        for profile in profiles:
            writer.writerows(profile.rows())
        self.log_text(buffer.getvalue(), names.GRAD_PROFILE_ARTIFACT)


def chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@contextmanager
def mlflow_run(uri: str, experiment: str, run_name: str, params: dict[str, str],
               tags: dict[str, str], parent_run_id: str | None = None,
               resume_run_id: str | None = None) -> Iterator[MlflowTracker]:
    """Open a run (or reopen `resume_run_id`), yield its tracker, and close it FINISHED, or
    FAILED with the traceback.

    Uses MlflowClient rather than the fluent API, so a stray `MLFLOW_RUN_ID` in the
    environment or another active run cannot capture this one.
    """
    ensure_store(uri)
    client = MlflowClient(uri)
    if parent_run_id is not None:  # a job of a multirun: nest it under its sweep
        tags = {**tags, names.PARENT_RUN_ID: parent_run_id, names.SWEEP_ID: parent_run_id}
    if resume_run_id is not None:
        run = client.get_run(resume_run_id)
        client.update_run(resume_run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        tracker = MlflowTracker(client, resume_run_id)
        if parent_run_id is not None:  # it now belongs to the sweep that finishes it
            tracker.set_tags({names.PARENT_RUN_ID: parent_run_id, names.SWEEP_ID: parent_run_id})
    else:
        run = client.create_run(experiment_id(client, experiment), run_name=run_name,
                                tags={**tags, **source_tags()})
        tracker = MlflowTracker(client, run.info.run_id)
    try:
        if resume_run_id is None:
            tracker.log_params(params)
        yield tracker
        tracker.flush()
    except BaseException as err:
        # Ctrl-C (SIGINT) or a stop signal: killed, resumable from the last checkpoint.
        killed = isinstance(err, (KeyboardInterrupt, RunStopped))
        try:
            if tracker.auto_flush:  # with checkpoints the store stays at the last checkpoint
                tracker.flush()
            tracker.set_tags({names.STATUS: names.KILLED if killed else names.FAILED,
                              names.STATUS_REASON: repr(err)[:500]})
            if not killed:
                tracker.log_text(traceback.format_exc(), "traceback.txt")
        finally:
            client.set_terminated(run.info.run_id, RunStatus.to_string(
                RunStatus.KILLED if killed else RunStatus.FAILED))
        raise
    client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))


PARENT_RUN_FILE = ".mlflow_parent_run"  # in the sweep's folder: how jobs find their sweep
SWEEP_LOCK_FILE = ".sweep.lock"  # in the sweep's folder: held by the launching process
FAILED_JOBS_FILE = "failed_jobs.txt"  # in the sweep's folder: one line per job that raised
KILLED_JOBS_FILE = "killed_jobs.txt"  # in the sweep's folder: one line per job a signal stopped
INVALID_JOBS_FILE = "invalid_jobs.txt"  # in the sweep's folder: one line per invalid job
FULL_DISK_JOBS_FILE = "full_disk_jobs.txt"  # in the sweep's folder: jobs a full disk stopped
ORPHAN_REASON = "its process ended without closing the run (killed, or torn down by the launcher)"


def run_lock_path(checkpoint_dir: str | Path, experiment: str, hash_: str) -> Path:
    """The file a job holds locked while it runs this config (beside its checkpoint)."""
    return Path(checkpoint_dir) / experiment / f"{hash_}.lock"


def mark_killed(client: MlflowClient, run_id: str, reason: str) -> None:
    """End a run `killed` (MLflow status KILLED): not a result, so rerunning resumes it."""
    client.log_batch(run_id, tags=[RunTag(names.STATUS, names.KILLED),
                                   RunTag(names.STATUS_REASON, reason[:500])])
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))


def running_runs(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    running = f"attributes.status = '{RunStatus.to_string(RunStatus.RUNNING)}'"
    return client.search_runs([experiment_id], filter_string=f"{filter_string} and {running}")


def close_orphans_of_config(uri: str, experiment: str, hash_: str, checkpoint_dir: str,
                            keep: str | None) -> list[str]:
    """Mark killed the RUNNING runs of this config (except `keep`): the caller holds the
    config's lock, so no live process runs them. Returns their ids."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    closed = []
    for run in running_runs(client, found.experiment_id, f"tags.{names.CONFIG_HASH} = '{hash_}'"):
        same_lock = run.data.params.get(names.CHECKPOINT_DIR) == str(checkpoint_dir)
        if run.info.run_id != keep and same_lock:
            mark_killed(client, run.info.run_id, ORPHAN_REASON)
            closed.append(run.info.run_id)
    return closed


def close_dead_jobs(uri: str, sweep_id: str, wait_s: float) -> tuple[list[str], list[str]]:
    """Mark killed the sweep's RUNNING jobs whose process is gone (nobody holds their lock).

    Jobs still held are tried again for up to `wait_s` seconds in all: a job that handles the
    interrupt closes its own run. Returns (closed, still running) run ids; a job whose
    liveness cannot be told (lock file not visible here) counts as still running.
    """
    client = MlflowClient(uri)
    parent = client.get_run(sweep_id)
    pending = running_runs(client, parent.info.experiment_id,
                           f"tags.{names.SWEEP_ID} = '{sweep_id}'")
    closed: list[str] = []
    deadline = time.monotonic() + wait_s
    while True:
        held = []
        for run in pending:
            params = run.data.params
            path = run_lock_path(params.get(names.CHECKPOINT_DIR, ""),
                                 params.get(names.EXPERIMENT_NAME, ""),
                                 run.data.tags.get(names.CONFIG_HASH, ""))
            with locks.if_dead(path) as dead:
                if not dead:
                    held.append(run)
                # read again under the lock: it may have closed itself meanwhile
                elif client.get_run(run.info.run_id).info.status == "RUNNING":
                    mark_killed(client, run.info.run_id, ORPHAN_REASON)
                    closed.append(run.info.run_id)
        pending = held
        if not pending or time.monotonic() >= deadline:
            return closed, [run.info.run_id for run in pending]
        time.sleep(0.5)


def close_dead_sweeps(uri: str, experiment: str) -> list[str]:
    """End `killed` the RUNNING sweep runs of this experiment whose launching process is gone
    (their folder's lock is free), with their dead jobs. Returns their ids."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    closed = []
    for sweep in running_runs(client, found.experiment_id,
                              f"tags.{names.RUN_KIND} = '{names.SWEEP_KIND}'"):
        folder = sweep.data.tags.get(names.SWEEP_DIR)
        if folder is None:
            continue
        with locks.if_dead(Path(folder) / SWEEP_LOCK_FILE) as dead:
            if dead:
                close_dead_jobs(uri, sweep.info.run_id, wait_s=0.0)
                end_sweep(uri, Path(folder), None, killed=True)
                closed.append(sweep.info.run_id)
    return closed


def start_sweep(uri: str, experiment: str, sweep_dir: Path, overrides: list[str],
                space: dict[str, Any], tags: dict[str, str] | None = None) -> str:
    """Open the parent run of a multirun and leave its id in the sweep folder for the jobs.

    A file, not an environment variable, so jobs find it wherever the launcher starts them
    (joblib workers, SLURM nodes sharing the folder), and a stray MLFLOW_RUN_ID cannot
    interfere.
    """
    ensure_store(uri)
    client = MlflowClient(uri)
    run = client.create_run(experiment_id(client, experiment), run_name=f"sweep-{sweep_dir.name}",
                            tags={names.RUN_KIND: names.SWEEP_KIND, **source_tags(),
                                  names.SWEEP_DIR: str(sweep_dir.resolve()), **(tags or {})})
    client.log_batch(run.info.run_id, params=[
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
              killed: bool = False) -> dict[str, int]:
    """Close the parent run with its jobs' counts by status and attach the sweep's report;
    `killed`: the sweep was interrupted (MLflow status KILLED)."""
    run_id = sweep_run_id(sweep_dir)
    if run_id is None:
        return {}
    client = MlflowClient(uri)
    parent = client.get_run(run_id)
    jobs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.{names.SWEEP_ID} = '{run_id}'")
    counts = {status: 0 for status in names.STATUSES}
    for job in jobs:
        # no status yet: still running (an interrupted sweep's job alive elsewhere), or crashed
        fallback = names.RUNNING if job.info.status == "RUNNING" else names.FAILED
        status = job.data.tags.get(names.STATUS, fallback)
        counts[status] = counts.get(status, 0) + 1
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(names.JOBS, len(jobs), now, 0)] + [
        Metric(f"{names.JOBS}_{status}", n, now, 0) for status, n in counts.items()])
    if report_dir is not None and report_dir.is_dir():
        client.log_artifacts(run_id, str(report_dir), "report")
    if killed:
        mark_killed(client, run_id, "the sweep was interrupted before all its jobs ended")
    else:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return counts


def log_tuning_summary(uri: str, sweep_dir: Path, tuned: list[str]) -> dict[str, float]:
    """On a tuning sweep's parent run: the best and the median objective over the trials it
    created (finite objective only), their count, and the best trial's tuned values."""
    run_id = sweep_run_id(sweep_dir)
    if run_id is None:
        return {}
    client = MlflowClient(uri)
    parent = client.get_run(run_id)
    trials = [run for run in client.search_runs(
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
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in summary.items()],
                     tags=[RunTag(names.TUNING_BEST_PARAMS, best_params),
                           RunTag(names.TUNING_BEST_RUN, best.info.run_id)])
    return summary
