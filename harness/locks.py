"""Which runs are alive: a process holds an OS lock on a file for as long as it runs a job
(or launches a sweep), and the kernel releases it when the process ends, however it ends
(SIGKILL, a node that goes down). A run that MLflow shows RUNNING while nobody holds its
lock was left behind by a dead process; one whose lock is held is being run right now and
must be left alone.

The locks are `flock` locks: per open file, so a second open in the same process conflicts
too; they work across machines on file systems that support them (NFSv4, Lustre with the
`flock` option). Where locking is not supported, liveness is unknown and nothing is marked.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


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
