"""`make ui`: print where the MLflow UI shows each experiment's runs, then serve the UI.

    python -m harness.report.ui sqlite:///<path>/mlflow.db

MLflow 3's UI opens a bare experiment link (`#/experiments/<id>`) on its GenAI overview in a
fresh browser, whatever the experiment's tags say; `links.experiment_url` is the link that
shows the runs table, and these lines give it for every experiment of the store. The store is
read with `sqlite3` (`preflight.experiments`), so the lines appear before MLflow has loaded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.report import preflight
from harness.tracking.links import UI_HOST, UI_PORT, experiment_url, ui_url


def serve_args(tracking_uri: str) -> list[str]:
    """`mlflow ui` on the store, where `links.ui_url` points for a store that is not a server."""
    return ["mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", UI_HOST,
            "--port", str(UI_PORT)]


def ui_command(tracking_uri: str) -> str:
    """The command that serves the store's UI; "" for a tracking server (its own UI)."""
    if ui_url(tracking_uri) == tracking_uri.rstrip("/"):
        return ""
    return " ".join(serve_args(tracking_uri))


def runs_lines(tracking_uri: str) -> list[str]:
    """One line per experiment of the store: its name and its runs table in the UI."""
    found = preflight.experiments(tracking_uri)
    if not found:
        return [f"no experiment in {tracking_uri} yet: the UI is at {ui_url(tracking_uri)}"]
    return ["each experiment's runs in the MLflow UI (a bare experiment link opens MLflow's "
            "GenAI overview instead):",
            *(f"  {name}: {experiment_url(tracking_uri, eid)}" for eid, name in found)]


def main(argv: Sequence[str] | None = None) -> None:
    """Print `runs_lines` of the store, then become `mlflow ui` on it."""
    (tracking_uri,) = sys.argv[1:] if argv is None else argv
    print("\n".join(runs_lines(tracking_uri)), flush=True)
    args = serve_args(tracking_uri)
    os.execv(Path(sys.executable).parent / args[0], args)


if __name__ == "__main__":
    main()
