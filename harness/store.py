"""Where an MLflow store lives: shared by the writer (tracking) and the reader (report)."""

from __future__ import annotations

import errno
import os
from pathlib import Path


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

