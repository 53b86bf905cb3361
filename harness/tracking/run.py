"""A run: its identity (flattened params, config hash), its MLflow run opened and closed,
and the buffered writer of its metrics, params, tags and artifacts.

- Identity: params are the flattened resolved config; `config_hash` hashes it without the
  keys that do not change the result (where things are written, thread count, device).
- Speed: metrics are buffered and written with `log_batch`, a few hundred points a call; the
  runs of a config are found with one search (`config_runs`), and the store's client is the
  process's one (`harness.tracking.store.client`).
- Outages: every write waits out a tracking server's outage within `tracking.wait_s`
  (`harness.tracking.store.patiently`).
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
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

from harness import names
from harness.schema import PROJECT_ROOT
from harness.tracking.store import (
    TrackingUnreachable,
    client,
    ensure_store,
    existing_experiment,
    experiment_id,
    patiently,
)

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from harness.diagnostics import GradProfile

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


@cache
def git_commit() -> str:
    """The current commit, with `-dirty` if tracked files changed; `unknown` outside git. Read
    once per process (two `git` subprocesses): the code a process runs is the code it imported
    when it started."""
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


def config_runs(uri: str, experiment: str, hash_: str, wait_s: float = 0.0) -> list[Run]:
    """Every run of this experiment with this config hash, in one search (none while the
    experiment does not exist); a server's outage is waited out within `wait_s`."""

    def search() -> list[Run]:
        found = existing_experiment(uri, experiment)
        if found is None:
            return []
        return client(uri).search_runs([found],
                                       filter_string=f"tags.{names.CONFIG_HASH} = '{hash_}'")

    return patiently(uri, wait_s, search)


def finished_of(runs: Sequence[Run]) -> Run | None:
    """The run among `runs` that already ended with a result.

    Runs that failed or were killed (no result status) do not count: they are run again,
    from their checkpoint if they left one.
    """
    for run in runs:
        if run.info.status == "FINISHED" and run.data.tags.get(names.STATUS) in RESULT_STATUSES:
            return run
    return None


def budget_reached(run: Run) -> int:
    """The step budget a run was trained to: its tag `steps_budget` where it was continued
    past `train.steps` (harness/lifecycle/runs.py), else its param `train.steps`."""
    return int(run.data.tags.get(names.STEPS_BUDGET) or run.data.params[names.TRAIN_STEPS])


def run_csv(uri: str, run_id: str, artifact: str) -> list[dict[str, str]]:
    """The rows of a run's CSV artifact ([] where it has none)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client(uri).download_artifacts(run_id, artifact, folder)
        except Exception:  # MLflow raises its own errors, or OSError, for a missing artifact
            return []
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))


def finished_run(uri: str, experiment: str, hash_: str) -> Run | None:
    """The run of this experiment with this config hash that already ended with a result."""
    return finished_of(config_runs(uri, experiment, hash_))


def logged_nothing(run: Run) -> bool:
    """Whether `run` ended, or was left by a dead process, before it wrote any metric point
    (the process was killed between creating the run and its first write): a stub that the
    config's next run takes over as if it had never started, rather than leave it beside
    (`mlflow_run`'s `reuse_run_id`). A failed run keeps its traceback: never a stub."""
    return not run.data.metrics and run.info.status in ("RUNNING", "KILLED")


# A metric point as the tracker buffers it, and a checkpoint keeps the points the store lacks:
# (key, value, timestamp in ms, step), the fields of mlflow.entities.Metric.
Point = tuple[str, float, int, int]


class MlflowTracker:
    """One MLflow run: buffered metric writes, params, tags and artifacts. Every write waits
    out a tracking server's outage, at most `wait_s` (then TrackingUnreachable)."""

    def __init__(self, mlflow_client: MlflowClient, run_id: str, wait_s: float = 0.0) -> None:
        self.client = mlflow_client
        self.run_id = run_id
        self.wait_s = wait_s
        # With checkpoints, metrics are written only at checkpoints (and the end): then the
        # store never holds points past the last checkpoint, and a resumed run adds no
        # duplicates.
        self.auto_flush = True
        self.run_name = ""  # the name the run has in the store (`mlflow_run` sets it)
        self.terminated = False  # its end status written (`terminate`)
        self._buffer: list[Point] = []
        self._last_flush = time.monotonic()

    def write(self, call: Any) -> Any:
        """`call()` on the store, an outage waited out (`patiently`)."""
        return patiently(self.client.tracking_uri, self.wait_s, call)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.buffer(metrics, step)
        if self.auto_flush and (len(self._buffer) >= FLUSH_POINTS
                                or time.monotonic() - self._last_flush > FLUSH_SECONDS):
            self.flush()

    def buffer(self, metrics: dict[str, float], step: int) -> None:
        """Add points, stamped now, to what the next `flush` writes (never writes)."""
        now = int(time.time() * 1000)
        self._buffer.extend((k, float(v), now, step) for k, v in metrics.items())

    def flush(self, tags: dict[str, str] | None = None) -> None:
        """Write the buffered points, with `tags` in the same call. A chunk leaves the buffer
        once written, so after a failure the buffer holds exactly what the store lacks."""
        from mlflow.entities import Metric, RunTag

        tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        while self._buffer or tag_list:
            chunk = [Metric(*point) for point in self._buffer[:METRIC_BATCH]]
            self.write(lambda chunk=chunk, tag_list=tag_list: self.client.log_batch(
                self.run_id, metrics=chunk, tags=tag_list))
            del self._buffer[:len(chunk)]
            tag_list = []
        self._last_flush = time.monotonic()

    def unflushed(self) -> list[Point]:
        """The points logged but not yet written (what a checkpoint keeps for the store)."""
        return list(self._buffer)

    def restore(self, points: Iterable[Point]) -> None:
        """Points a checkpoint kept (`unflushed`), written before anything logged later."""
        self._buffer[:0] = [tuple(point) for point in points]  # type: ignore[misc]

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        for chunk in chunks([Param(k, v) for k, v in params.items()], PARAM_BATCH):
            self.write(lambda chunk=chunk: self.client.log_batch(self.run_id, params=chunk))

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        listed = [RunTag(k, str(v)) for k, v in tags.items()]
        self.write(lambda: self.client.log_batch(self.run_id, tags=listed))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.write(lambda: self.client.log_text(self.run_id, text, artifact_file))

    def log_profiles(self, profiles: list[GradProfile]) -> None:
        """Write the gradient-by-lag profiles as one CSV artifact (long format)."""
        rows = [row for profile in profiles for row in profile.rows()]
        self.log_text(csv_text(names.PROFILE_COLUMNS, rows), names.GRAD_PROFILE_ARTIFACT)

    def terminate(self, status: str) -> None:
        """End the run with MLflow status `status` (FINISHED, FAILED, KILLED)."""
        self.write(lambda: self.client.set_terminated(self.run_id, status))
        self.terminated = True


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
               resume_run_id: str | None = None, *, reuse_run_id: str | None = None,
               unflushed: Iterable[Point] = (), wait_s: float = 0.0) -> Iterator[MlflowTracker]:
    """Open a run, yield its tracker, and close it FINISHED, or FAILED with the traceback.

    `resume_run_id`: reopen that run, killed part-way, to continue it from its checkpoint
    (whose `unflushed` points are written first). `reuse_run_id`: take over a run of this
    config that logged nothing (`logged_nothing`), tagged and given its params as a new run
    would be. `wait_s`: how long each write waits for a tracking server that does not answer;
    when it is still down, TrackingUnreachable, and the run is left as it is (RUNNING, its
    lock free: the next run of its config takes it over or resumes it).

    Uses MlflowClient rather than the fluent API, so a stray `MLFLOW_RUN_ID` in the
    environment or another active run cannot capture this one.
    """
    ensure_store(uri, wait_s)
    if parent_run_id is not None:  # a job of a multirun: nest it under its sweep
        tags = {**tags, names.PARENT_RUN_ID: parent_run_id, names.SWEEP_ID: parent_run_id}
    mlflow_client = client(uri)
    exp_id = patiently(uri, wait_s, lambda: experiment_id(uri, experiment))
    name = patiently(uri, wait_s, lambda: free_name(mlflow_client, exp_id, run_name,
                                                    tags.get(names.CONFIG_HASH, "")))
    if resume_run_id is not None:
        tracker = MlflowTracker(mlflow_client, resume_run_id, wait_s)
        # named as its sweep names it now (a run keeps its config: only the name may change)
        tracker.write(lambda: mlflow_client.update_run(resume_run_id, status="RUNNING",
                                                       name=name))
        if parent_run_id is not None:  # it now belongs to the sweep that finishes it
            tracker.set_tags({names.PARENT_RUN_ID: parent_run_id, names.SWEEP_ID: parent_run_id})
        params = {}
    elif reuse_run_id is not None:
        tracker = MlflowTracker(mlflow_client, reuse_run_id, wait_s)
        logged = tracker.write(lambda: mlflow_client.get_run(reuse_run_id)).data.params
        tracker.write(lambda: mlflow_client.update_run(reuse_run_id, status="RUNNING",
                                                       name=name))
        tracker.set_tags({**tags, **source_tags()})
        params = {k: v for k, v in params.items() if k not in logged}  # killed mid-way
    else:
        run = patiently(uri, wait_s, lambda: mlflow_client.create_run(
            exp_id, run_name=name, tags={**tags, **source_tags()}))
        tracker = MlflowTracker(mlflow_client, run.info.run_id, wait_s)
    tracker.run_name = name
    try:
        if params:
            tracker.log_params(params)
        tracker.restore(unflushed)
        yield tracker
        tracker.flush()
    except TrackingUnreachable:
        raise  # nothing more can be written; the run's lock frees as the job ends
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
            tracker.terminate("KILLED" if killed else "FAILED")
        raise
    tracker.terminate("FINISHED")


def free_name(mlflow_client: MlflowClient, exp_id: str, name: str, hash_: str) -> str:
    """`name`, unless a run of another config in the experiment has it: then `name` with the
    first 6 digits of the config hash (`...-gap20-s0-3fa9c1`), so two runs of one experiment
    never share a name. (A sweep's names differ by construction, showing every key that
    varies within it; two sweeps of one experiment may vary different keys.)"""
    if "'" in name:  # not expressible in a filter string; the harness's names have none
        return name
    taken = mlflow_client.search_runs([exp_id], filter_string=f"attributes.run_name = '{name}'")
    if any(run.data.tags.get(names.CONFIG_HASH) != hash_ for run in taken):
        return f"{name}-{hash_[:6]}"
    return name


def mark_killed(mlflow_client: MlflowClient, run_id: str, reason: str) -> None:
    """End a run `killed` (MLflow status KILLED): not a result, so rerunning resumes it."""
    from mlflow.entities import RunTag

    mlflow_client.log_batch(run_id, tags=[RunTag(names.STATUS, names.KILLED),
                                          RunTag(names.STATUS_REASON, reason[:500])])
    mlflow_client.set_terminated(run_id, "KILLED")
