"""The store: where an MLflow store lives, its creation, its experiments, and a full disk.

Several processes opening a *new* SQLite store at once race on its schema migration, so
`ensure_store` creates it once under a file lock before any job logs to it. Shared by the
writer (the rest of harness.tracking) and the reader (harness.report).
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness import names


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


class StoreError(RuntimeError):
    """The tracking store cannot be used (unwritable folder, unreachable server)."""


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
