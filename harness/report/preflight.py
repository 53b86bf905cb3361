"""What `harness-report` can tell before it loads the report (pandas, MLflow, matplotlib take
seconds to import): that a SQLite store is missing, or holds no experiment of that name.

A SQLite store is checked with `sqlite3` alone, read-only, from MLflow's `experiments` table
(columns `name`, `lifecycle_stage`); `load` raises the same messages when it finds the same
things through MLflow, so both paths say it alike. A tracking server is not checked here:
asking it needs MLflow's client (its auth and retries), so a missing experiment on a server is
found by `load`, after the imports. Anything this module cannot read is left to `load` too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

SQLITE_PREFIX = "sqlite:///"
ACTIVE = "active"  # MLflow's lifecycle stage of an experiment that is not deleted


def sqlite_file(tracking_uri: str) -> Path | None:
    """The file behind a `sqlite:///...` URI (driver options after '?' dropped); None for
    other stores. Agrees with `harness.tracking.store.sqlite_path`, which imports MLflow."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    rest = tracking_uri[len(SQLITE_PREFIX):].split("?", 1)[0]
    return None if rest in ("", ":memory:") else Path(rest)


def no_store(tracking_uri: str) -> str:
    """Why a SQLite store cannot be read: its file does not exist."""
    return f"no MLflow store at {tracking_uri}: file {sqlite_file(tracking_uri)} does not exist"


def not_found(experiment: str, tracking_uri: str, known: Sequence[str], why: str) -> str:
    """Why `experiment` cannot be reported on (`why`: "not found", "has no runs"), with the
    store's experiments (`known`) to choose from."""
    listing = ", ".join(repr(n) for n in sorted(known)) if known else "(none)"
    return (f"experiment {experiment!r} {why} in {tracking_uri}; experiments in this store: "
            f"{listing}")


def _experiment_rows(path: Path) -> list[tuple[str, str, str]] | None:
    """(id, name, lifecycle stage) of every experiment in the SQLite file, in id order; None
    when it cannot be read as an MLflow store."""
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT experiment_id, name, lifecycle_stage FROM experiments "
                              "ORDER BY experiment_id").fetchall()
    except sqlite3.Error:
        return None
    return [(str(eid), str(name), str(stage)) for eid, name, stage in rows]


def experiments(tracking_uri: str) -> list[tuple[str, str]]:
    """(id, name) of each experiment that is not deleted, of a SQLite store that exists; []
    for any other store."""
    path = sqlite_file(tracking_uri)
    rows = _experiment_rows(path) if path is not None and path.is_file() else None
    return [(eid, name) for eid, name, stage in rows or [] if stage == ACTIVE]


def refusal(experiment: str, tracking_uri: str) -> str | None:
    """The one-line reason to refuse at once, or None when this module cannot tell (a server,
    an unreadable file) or the experiment is there."""
    path = sqlite_file(tracking_uri)
    if path is None:
        return None
    if not path.is_file():
        return no_store(tracking_uri)
    rows = _experiment_rows(path)
    if rows is None or any(name == experiment for _, name, _ in rows):
        return None
    return not_found(experiment, tracking_uri,
                     [name for _, name, stage in rows if stage == ACTIVE], "not found")
