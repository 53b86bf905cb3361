"""Where the MLflow UI shows an experiment's runs and one run: the one spelling of those links,
for the sweep's closing lines, `harness-train`'s last lines and the report.

MLflow 3's UI opens a bare experiment link (`#/experiments/<id>`) on its GenAI overview in a
fresh browser; `#/experiments/<id>/runs` always shows the runs table. A store served by
`make ui` (`mlflow ui` on the SQLite file) is at UI_URL; a tracking server is its own UI.
"""

from __future__ import annotations

from harness.tracking.store import is_server

UI_HOST, UI_PORT = "127.0.0.1", 5000  # `make ui` serves the project's store here
UI_URL = f"http://{UI_HOST}:{UI_PORT}"


def ui_url(tracking_uri: str) -> str:
    """The UI that shows the store at `tracking_uri`: the server itself, or `make ui`'s."""
    if is_server(tracking_uri):
        return tracking_uri.rstrip("/")
    return UI_URL


def experiment_url(tracking_uri: str, experiment_id: str) -> str:
    """The experiment's runs table."""
    return f"{ui_url(tracking_uri)}/#/experiments/{experiment_id}/runs"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """One run's page."""
    return f"{ui_url(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_lines(tracking_uri: str, experiment_id: str | None) -> list[str]:
    """The closing lines of a run or sweep that point at its experiment's runs in the UI: the
    runs URL, and for a SQLite store the command that serves it there (`make ui` for the
    project's own store)."""
    lines = []
    if experiment_id is not None:
        lines.append(f"MLflow runs: {experiment_url(tracking_uri, experiment_id)}")
    if not is_server(tracking_uri):
        lines.append(f"Start the UI on this store: mlflow ui --backend-store-uri {tracking_uri} "
                     f"--host {UI_HOST} --port {UI_PORT}")
    return lines
