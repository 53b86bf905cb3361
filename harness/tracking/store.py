"""The store: where an MLflow store lives, its creation, its client, its experiments, a
tracking server's outages, and a full disk.

Several processes opening a *new* SQLite store at once race on its schema migration, so
`ensure_store` creates it once under a file lock before any job logs to it. Shared by the
writer (the rest of harness.tracking) and the reader (harness.report).

MLflow (1.4 s to import) is imported where a store is used, never by this module's import: a
bad config is refused before it loads (harness/train.py).
"""

from __future__ import annotations

import errno
import logging
import os
import time
import urllib.request
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from harness import names

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

T = TypeVar("T")


def sqlite_path(tracking_uri: str) -> Path | None:
    """File behind a `sqlite:///...` URI (relative or absolute), None for other stores."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    # SQLAlchemy URIs may carry driver options after '?'; they are not part of the path.
    rest = tracking_uri[len(prefix):].split("?", 1)[0]
    if rest in ("", ":memory:"):
        return None
    return Path(rest)


def is_server(tracking_uri: str) -> bool:
    """Whether the store is a tracking server (its own UI; it can be down for a while)."""
    return tracking_uri.startswith(("http://", "https://"))


class StoreError(RuntimeError):
    """The tracking store cannot be used (unwritable folder, unreachable server)."""


class TrackingUnreachable(RuntimeError):
    """The tracking server did not answer within `tracking.wait_s`: a transient fault, not a
    bad config. The job ends without a result (its checkpoint keeps its training); the same
    command, once the server is back, resumes it."""


# The harness waits out a server's outage itself, within `tracking.wait_s` (`patiently`);
# MLflow's own retries (7, with backoff: about 4 minutes per call) would come on top of it.
HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
HEALTH_TIMEOUT_S = 5.0  # a server that does not answer /health in this time is unreachable
POLL_S = 1.0  # how often a waiting job asks the server again


@cache
def client(uri: str) -> MlflowClient:
    """The MlflowClient of `uri`: one per process and URI (MLflow keeps one store object per
    URI too, but every client construction and experiment lookup costs a store round trip
    in the callers that made their own)."""
    from mlflow.tracking import MlflowClient

    if is_server(uri):
        for key, value in HTTP_RETRIES.items():
            os.environ.setdefault(key, value)  # a user's own setting wins
        # a warning per retried request (with the whole connection error) while the server
        # is down: the harness says so itself, once per wait (`wait_for_server`)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    return MlflowClient(uri)


def unreachable(uri: str) -> str | None:
    """Why the tracking server at `uri` does not answer its /health endpoint now (None: it
    answers, or `uri` is no server)."""
    if not is_server(uri):
        return None
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health",
                                    timeout=HEALTH_TIMEOUT_S) as response:
            response.read()
    except OSError as err:
        return str(getattr(err, "reason", err))
    return None


def wait_for_server(uri: str, wait_s: float, reason: str) -> None:
    """Wait until the server at `uri` answers again, at most `wait_s` seconds from now;
    TrackingUnreachable when it does not (`reason`: why it did not answer first)."""
    log.warning("tracking server %s unreachable (%s): waiting up to %.0f s for it", uri,
                reason, wait_s)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        if unreachable(uri) is None:
            log.warning("tracking server %s answers again", uri)
            return
    raise TrackingUnreachable(f"tracking server {uri} unreachable for {wait_s:g} s "
                              f"(tracking.wait_s; {reason})")


def patiently(uri: str, wait_s: float, call: Callable[[], T]) -> T:
    """`call()`, which talks to the store at `uri`; when it fails while the store is a server
    that does not answer, wait for the server (at most `wait_s`, `wait_for_server`) and call
    again. Any other failure is raised as it is."""
    while True:
        try:
            return call()
        except Exception as err:
            reason = unreachable(uri)
            if reason is None:
                raise
            try:
                wait_for_server(uri, wait_s, reason)
            except TrackingUnreachable as gone:
                raise gone from err


_ENSURED: set[str] = set()  # SQLite stores this process has created or found


def ensure_store(uri: str, wait_s: float | None = None) -> None:
    """Create (and migrate) the tracking store once, before parallel jobs use it.

    For SQLite this happens under a file lock next to the database, once per process; for a
    server it checks that the server answers, so a wrong URL fails in seconds, before any
    training. Raises StoreError naming the path or URL; with `wait_s` (a job of a sweep whose
    server answered when it started), a server that does not answer is waited for instead
    (TrackingUnreachable after `wait_s`).
    """
    path = sqlite_path(uri)
    if path is not None:
        if uri in _ENSURED:
            return
        from filelock import FileLock

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"tracking.uri: cannot create the store's folder {path.parent}: "
                             f"{err.strerror}") from err
        if not os.access(path.parent, os.W_OK):
            raise StoreError(f"tracking.uri: cannot write the store's folder {path.parent}")
        with FileLock(f"{path}.lock", timeout=300):
            client(uri).search_experiments(max_results=1)
        _ENSURED.add(uri)
        return
    reason = unreachable(uri)
    if reason is None:
        return
    if wait_s is None:
        raise StoreError(f"tracking.uri: MLflow server {uri} unreachable ({reason})")
    wait_for_server(uri, wait_s, reason)


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


_EXPERIMENTS: dict[tuple[str, str], str] = {}  # (uri, name) -> id, found in this process


def experiment_id(uri: str, name: str) -> str:
    """Id of the named experiment of the store at `uri`, creating it; safe when parallel jobs
    race to create it. Remembered per process: an experiment's id never changes."""
    from mlflow.exceptions import MlflowException

    for _ in range(5):
        found = existing_experiment(uri, name)
        if found is not None:
            return found
        try:
            _EXPERIMENTS[(uri, name)] = client(uri).create_experiment(
                name, artifact_location=artifact_location(uri, name),
                tags={names.EXPERIMENT_KIND: names.TRAINING_EXPERIMENT})
            return _EXPERIMENTS[(uri, name)]
        except MlflowException:
            time.sleep(0.2)  # another job created it between our two calls
    raise RuntimeError(f"could not get or create MLflow experiment {name!r}")


def existing_experiment(uri: str, name: str) -> str | None:
    """Id of the named experiment of the store at `uri`; None while it has none."""
    key = (uri, name)
    if key not in _EXPERIMENTS:
        found = client(uri).get_experiment_by_name(name)
        if found is None:
            return None
        _EXPERIMENTS[key] = found.experiment_id
    return _EXPERIMENTS[key]


# Below this many free bytes a file system counts as full (a write of a checkpoint or a batch
# of metrics needs more).
FULL_BELOW = 1 << 20
_FULL_TEXTS = ("no space left on device", "database or disk is full", "disk quota exceeded",
               "file write failed")


def disk_full(err: BaseException, tracking_uri: str, checkpoint_dir: str | Path) -> Path | None:
    """The full path behind `err` when a full file system is its cause; None otherwise.

    The places a run writes are the SQLite store's folder (database and mlartifacts/) and
    `checkpoint_dir`. The path is the file an ENOSPC/EDQUOT in the error's chain names; else
    the first of those places on a file system with under FULL_BELOW bytes free; else, when
    the error reads as a full disk (`_FULL_TEXTS`), the first place."""
    store = sqlite_path(str(tracking_uri))
    paths = [*([store.parent] if store else []), Path(str(checkpoint_dir))]
    chain: list[BaseException] = []
    seen: BaseException | None = err
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    no_space = [link for link in chain
                if isinstance(link, OSError) and link.errno in (errno.ENOSPC, errno.EDQUOT)]
    named = next((link.filename for link in no_space if link.filename), None)
    if named:
        return Path(named)
    full = next((path for path in paths if free_bytes(path) < FULL_BELOW), None)
    if full is None and (no_space or any(text in str(link).lower() for link in chain
                                         for text in _FULL_TEXTS)):
        return paths[0]
    return full  # any failure while a file system the run writes to is full


def free_bytes(path: Path) -> int:
    """Bytes free to this user on the file system of `path` (or of its nearest existing
    parent); a very large number where that cannot be told."""
    for candidate in (path, *path.parents):
        try:
            stats = os.statvfs(candidate)
        except OSError:
            continue
        return stats.f_bavail * stats.f_frsize
    return 1 << 62
