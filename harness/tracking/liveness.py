"""Which runs are alive: a process holds an OS lock on a file for as long as it runs a job
(or launches a sweep), and the kernel releases it when the process ends, however it ends
(SIGKILL, a node that goes down). A run that MLflow shows RUNNING while nobody holds its
lock was left behind by a dead process; one whose lock is held is being run right now and
must be left alone.

The locks are `flock` locks: per open file, so a second open in the same process conflicts
too; they work across machines on file systems that support them (NFSv4, Lustre with the
`flock` option). Where locking is not supported, liveness is unknown and nothing is marked.

Here: the locks themselves (`hold`, `if_dead`), where a run's lock lives, and closing the
RUNNING runs and sweeps whose process is gone (`close_*`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from harness import names
from harness.tracking.run import mark_killed
from harness.tracking.store import client, existing_experiment
from harness.tracking.sweep import SWEEP_LOCK_FILE, end_sweep

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

ORPHAN_REASON = "its process ended without closing the run (killed, or torn down by the launcher)"


class Busy(RuntimeError):
    """Another live process holds the lock."""


@contextmanager
def hold(path: Path) -> Iterator[bool]:
    """Hold the lock at `path` (created if missing) for the block; yields whether it is
    really held (False where the file system does not support locking).

    Raises Busy at once if another live process holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"{path} is held by another process") from None
        except OSError as err:  # e.g. ENOLCK: no locking on this file system
            log.warning("cannot lock %s (%s): running without a liveness lock", path, err)
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.uname().nodename} {os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)  # closing the file releases the lock


@contextmanager
def if_dead(path: Path) -> Iterator[bool]:
    """Yields True, holding the lock, if no live process holds `path`: its owner is gone.

    Yields False if a live process holds it, if the file does not exist (nothing to tell
    from: another machine, another store), or if the file system cannot lock.
    """
    if not path.exists():
        yield False
        return
    try:
        with hold(path) as held:
            yield held
    except Busy:
        yield False


def run_lock_path(checkpoint_dir: str | Path, experiment: str, hash_: str) -> Path:
    """The file a job holds locked while it runs this config (beside its checkpoint)."""
    return Path(checkpoint_dir) / experiment / f"{hash_}.lock"


def running_runs(mlflow_client: MlflowClient, experiment_id: str,
                 filter_string: str) -> list[Run]:
    return mlflow_client.search_runs([experiment_id],
                                     filter_string=f"{filter_string} and attributes.status = "
                                                   "'RUNNING'")


def dead_runs_of_config(runs: list[Run], checkpoint_dir: str) -> list[Run]:
    """The RUNNING ones among `runs` (a config's, `harness.tracking.run.config_runs`) whose
    process is gone: the caller holds the config's lock, so no live process runs those that
    lock the same file (same `train.checkpoint_dir`). A run without that param was left by a
    process killed between creating it and logging its params, milliseconds into its life:
    it counts as this lock's (another process would have to start the same config under
    another checkpoint folder in those same milliseconds)."""
    mine = str(checkpoint_dir)
    return [run for run in runs if run.info.status == "RUNNING"
            and run.data.params.get(names.CHECKPOINT_DIR, mine) == mine]


def close_dead(uri: str, runs: list[Run]) -> list[str]:
    """Mark `runs` (dead: `dead_runs_of_config`) killed. Returns their ids."""
    for run in runs:
        mark_killed(client(uri), run.info.run_id, ORPHAN_REASON)
    return [run.info.run_id for run in runs]


def close_dead_jobs(uri: str, sweep_id: str, wait_s: float) -> tuple[list[str], list[str]]:
    """Mark killed the sweep's RUNNING jobs whose process is gone (nobody holds their lock).

    Jobs still held are tried again for up to `wait_s` seconds in all: a job that handles the
    interrupt closes its own run. Returns (closed, still running) run ids; a job whose
    liveness cannot be told (lock file not visible here) counts as still running.
    """
    mlflow_client = client(uri)
    parent = mlflow_client.get_run(sweep_id)
    pending = running_runs(mlflow_client, parent.info.experiment_id,
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
            with if_dead(path) as dead:
                if not dead:
                    held.append(run)
                # read again under the lock: it may have closed itself meanwhile
                elif mlflow_client.get_run(run.info.run_id).info.status == "RUNNING":
                    mark_killed(mlflow_client, run.info.run_id, ORPHAN_REASON)
                    closed.append(run.info.run_id)
        pending = held
        if not pending or time.monotonic() >= deadline:
            return closed, [run.info.run_id for run in pending]
        time.sleep(0.5)


def close_dead_sweeps(uri: str, experiment: str, predecessor: str | None = None) -> list[str]:
    """End `killed` the RUNNING sweep runs of this experiment whose launching process is gone
    (their folder's lock is free), with their dead jobs. Returns their ids.

    `predecessor`: the parent run that an earlier sweep left in the caller's own folder; the
    caller holds that folder's lock, so its launcher is gone (the lock cannot tell, being the
    caller's)."""
    found = existing_experiment(uri, experiment)
    if found is None:
        return []
    closed = []
    for sweep in running_runs(client(uri), found,
                              f"tags.{names.RUN_KIND} = '{names.SWEEP_KIND}'"):
        folder = sweep.data.tags.get(names.SWEEP_DIR)
        if folder is None:
            continue
        with if_dead(Path(folder) / SWEEP_LOCK_FILE) as dead:
            if dead or sweep.info.run_id == predecessor:
                close_dead_jobs(uri, sweep.info.run_id, wait_s=0.0)
                end_sweep(uri, Path(folder), None, killed=True, run_id=sweep.info.run_id)
                closed.append(sweep.info.run_id)
    return closed
