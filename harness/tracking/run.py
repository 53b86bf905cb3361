"""A run: its identity (flattened params, config hash), its MLflow run opened and closed,
and the buffered writer of its metrics, params, tags and artifacts.

- Identity: params are the flattened resolved config; `config_hash` hashes it without the
  keys that do not change the result (where things are written, thread count, device).
- Speed: metrics are buffered and written with `log_batch`, a few hundred points a call.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import subprocess
import time
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from mlflow.entities import Metric, Param, Run, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from harness import names
from harness.diagnostics import GradProfile
from harness.schema import PROJECT_ROOT
from harness.tracking.store import ensure_store, experiment_id

log = logging.getLogger(__name__)
# MLflow's SQL store logs every database error with its traceback, then raises it; the harness
# reports the raised error itself (a full disk in one line: harness.tracking.store.disk_full).
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

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
                if not k.startswith(names.NON_SEMANTIC_PREFIXES) and k not in names.CHOICE_PARAMS}
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


class RunStopped(Exception):
    """A signal asked the run to stop (SIGTERM from `kill` or `scancel`, or a SLURM time
    limit); it saved a checkpoint first. The run ends `killed` and rerunning resumes it."""


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
        rows = [row for profile in profiles for row in profile.rows()]
        self.log_text(csv_text(names.PROFILE_COLUMNS, rows), names.GRAD_PROFILE_ARTIFACT)


def csv_text(columns: tuple[str, ...], rows: list[tuple]) -> str:
    """A CSV file's text: a header line, then one line per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


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


def mark_killed(client: MlflowClient, run_id: str, reason: str) -> None:
    """End a run `killed` (MLflow status KILLED): not a result, so rerunning resumes it."""
    client.log_batch(run_id, tags=[RunTag(names.STATUS, names.KILLED),
                                   RunTag(names.STATUS_REASON, reason[:500])])
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
