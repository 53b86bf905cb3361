"""Where an MLflow store lives: shared by the writer (tracking) and the reader (report)."""

from __future__ import annotations

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
