"""Every reach into MLflow's private or undocumented surfaces, in one place.

MLflow's public API (MlflowClient, `mlflow.search_runs`) is too slow for a 10,000-run report
and has no bulk history call, so the report reads and the report benchmark writes a little
past it. Each function here names the MLflow internals it depends on:

- a SQLite store's tables, read with `sqlite3` (read-only): `runs` (run_uuid, experiment_id,
  status, artifact_uri, start_time, end_time, lifecycle_stage), `params`, `tags`
  (key, value, run_uuid), `latest_metrics` and `metrics` (key, value, is_nan, step,
  timestamp, run_uuid): `sqlite_search_runs`, `sqlite_metric_histories`;
- the same tables written (the benchmark's synthetic store; also `runs.name`, `source_type`,
  `source_name`, `entry_point_name`, `user_id`, `source_version`, `deleted_time`), with the
  SQL store's NaN/inf sanitizing and its "latest" rule: `write_runs_sqlite`;
- the store object behind a client, through the private `MlflowClient._tracking_client.store`:
  `client_store`;
- `SqlAlchemyStore.get_metric_history_bulk` (not on MlflowClient): `bulk_history_sql`;
- `RestStore.get_host_creds`, `mlflow.utils.rest_utils.http_request` and the server's
  undocumented `/ajax-api/2.0/mlflow/metrics/get-history-bulk` endpoint (its caps:
  `BULK_MAX_RUNS`, `BULK_MAX_POINTS`): `bulk_history_rest`.

Nothing else in the project may touch these. tests/test_mlflow_internals.py is the canary for
an MLflow upgrade: it checks each function against the installed MLflow through its public
API (MlflowClient, `mlflow.search_runs`), so a changed table, attribute or endpoint fails
there, by name, before a report goes wrong (the REST path is checked against a real
`mlflow server` in tests/test_report_server.py).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

# Columns of `sqlite_metric_histories`'s frame and order of a history row's fields.
HISTORY_COLUMNS = ("run_id", "key", "step", "timestamp", "value")
HistoryRow = tuple[str, str, int, int, float]  # (run_id, key, step, timestamp, value)
# How many run ids go into one SQL `IN (...)` list (SQLite caps bound variables).
SQL_CHUNK = 500
# The tracking server's bulk history endpoint: at most 100 runs and 25,000 points a request.
BULK_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
BULK_MAX_RUNS = 100
BULK_MAX_POINTS = 25_000
# MLflow's SQL store saves +-inf as +-float max and NaN as 0 with is_nan set.
_FLOAT_MAX = 1.7976931348623157e308


class InternalsError(RuntimeError):
    """An MLflow internal answered in a way its caller cannot use (the message says how)."""


def _connect_ro(path: Path) -> sqlite3.Connection | None:
    """A read-only connection to the SQLite file (never creates it); None if it cannot open."""
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None


def sqlite_search_runs(path: Path, experiment_id: str) -> pd.DataFrame | None:
    """The experiment's active runs as `mlflow.search_runs` frames them (run_id,
    experiment_id, status, artifact_uri, start_time, end_time, `metrics.*` = latest values,
    `params.*`, `tags.*`), read straight from a SQLite store's tables.

    Depends on the tables `runs` (run_uuid, experiment_id, status, artifact_uri, start_time,
    end_time, lifecycle_stage), `latest_metrics` (key, value, is_nan, run_uuid), `params` and
    `tags` (key, value, run_uuid). `mlflow.search_runs` builds an entity per param, tag and
    metric of every run, which took most of the reading time of a 10,000-run report; four
    SQL queries and three pivots do the same. None when the tables are not shaped as expected
    (another MLflow schema): the caller then asks MLflow.
    """
    where = ("FROM {table} t JOIN runs r ON r.run_uuid = t.run_uuid "
             "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active'")
    con = _connect_ro(path)
    if con is None:
        return None
    try:
        key = (int(experiment_id),)
        runs = pd.read_sql_query(
            "SELECT run_uuid AS run_id, experiment_id, status, artifact_uri, start_time, "
            "end_time FROM runs WHERE experiment_id = ? AND lifecycle_stage = 'active'",
            con, params=key)
        long = {prefix: pd.read_sql_query(
            f"SELECT t.run_uuid, t.key, {value} AS value " + where.format(table=table),
            con, params=key) for prefix, table, value in (
                ("metrics.", "latest_metrics", "CASE WHEN t.is_nan THEN NULL ELSE t.value END"),
                ("params.", "params", "t.value"), ("tags.", "tags", "t.value"))}
    except (sqlite3.Error, pd.errors.DatabaseError, ValueError):
        return None
    finally:
        con.close()
    ids = runs["run_id"].astype(str)
    parts = [pd.DataFrame({
        "run_id": ids, "experiment_id": runs["experiment_id"].astype(str),
        "status": runs["status"], "artifact_uri": runs["artifact_uri"],
        "start_time": pd.to_datetime(runs["start_time"], unit="ms", utc=True),
        "end_time": pd.to_datetime(runs["end_time"], unit="ms", utc=True)})]
    for prefix, frame in long.items():
        wide = frame.pivot(index="run_uuid", columns="key", values="value").reindex(ids)
        wide = wide.astype(float if prefix == "metrics." else "str")  # as search_runs types
        wide.columns = [f"{prefix}{c}" for c in wide.columns]
        parts.append(wide.reset_index(drop=True))
    return pd.concat(parts, axis=1)


def sqlite_metric_histories(path: Path,
                            by_key: Mapping[str, Sequence[str]]) -> pd.DataFrame | None:
    """Every point of each key's runs (`by_key`: {metric key: run ids}), straight from a
    SQLite store's `metrics` table (key, value, is_nan, step, timestamp, run_uuid), in the
    columns `HISTORY_COLUMNS`, unsorted (NaN where MLflow stored a NaN).

    None when the table is not shaped as expected or nothing was asked for. The SQL store's
    own bulk query builds an ORM object per point, which was most of a 10,000-run report's
    reading time.
    """
    con = _connect_ro(path)
    if con is None:
        return None
    frames = []
    try:
        for key, run_ids in by_key.items():
            for start in range(0, len(run_ids), SQL_CHUNK):
                chunk = list(run_ids[start:start + SQL_CHUNK])
                frames.append(pd.read_sql_query(
                    "SELECT run_uuid AS run_id, key, step, timestamp, "
                    "CASE WHEN is_nan THEN NULL ELSE value END AS value FROM metrics "
                    f"WHERE key = ? AND run_uuid IN ({', '.join('?' * len(chunk))})",
                    con, params=(key, *chunk)))
    except (sqlite3.Error, pd.errors.DatabaseError):
        return None
    finally:
        con.close()
    if not frames:
        return None
    frame = pd.concat(frames, ignore_index=True)[list(HISTORY_COLUMNS)]
    return frame.astype({"run_id": str, "key": str, "step": int, "timestamp": int,
                         "value": float})


def client_store(client: object) -> object | None:
    """The store object behind an MlflowClient (private: `client._tracking_client.store`),
    to reach its bulk history query; None where MLflow no longer has it there."""
    tracking = getattr(client, "_tracking_client", None)
    return getattr(tracking, "store", None)


def has_bulk_history_sql(store: object | None) -> bool:
    """Whether `store` is MLflow's SQL store (`mlflow.store.tracking.sqlalchemy_store.
    SqlAlchemyStore`) with its `get_metric_history_bulk` query."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return isinstance(store, SqlAlchemyStore) and hasattr(store, "get_metric_history_bulk")


def is_rest_store(store: object | None) -> bool:
    """Whether `store` is MLflow's REST store (`mlflow.store.tracking.rest_store.RestStore`),
    the client side of a tracking server."""
    from mlflow.store.tracking.rest_store import RestStore

    return isinstance(store, RestStore)


def bulk_history_sql(store: object, key: str, run_ids: Sequence[str]) -> list[HistoryRow]:
    """Every point of metric `key` of `run_ids`, from the SQL store's
    `get_metric_history_bulk(run_ids, key, max_results)` (`SQL_CHUNK` runs a query, no
    LIMIT), as (run_id, key, step, timestamp, value) rows."""
    rows: list[HistoryRow] = []
    for start in range(0, len(run_ids), SQL_CHUNK):
        chunk = list(run_ids[start:start + SQL_CHUNK])
        # max_results=None: no LIMIT; the query returns every point of every run in `chunk`.
        for m in store.get_metric_history_bulk(chunk, key, None):  # type: ignore[attr-defined]
            rows.append((m.run_id, key, int(m.step), int(m.timestamp), float(m.value)))
    return rows


def bulk_history_rest(store: object, key: str, run_ids: Sequence[str],
                      max_points: int = BULK_MAX_POINTS) -> list[HistoryRow]:
    """At most `max_points` points of metric `key` of `run_ids` (at most `BULK_MAX_RUNS`),
    in one GET of the server's `BULK_ENDPOINT` with the REST store's credentials
    (`RestStore.get_host_creds`, `mlflow.utils.rest_utils.http_request`), as (run_id, key,
    step, timestamp, value) rows. `max_points` rows back means the answer may be cut short.
    Raises InternalsError when the server answers other than 200."""
    from mlflow.utils.rest_utils import http_request

    response = http_request(
        store.get_host_creds(), BULK_ENDPOINT, "GET",  # type: ignore[attr-defined]
        params={"run_id": list(run_ids), "metric_key": key, "max_results": max_points},
    )
    if response.status_code != 200:
        raise InternalsError(f"{BULK_ENDPOINT} answered {response.status_code}: "
                             f"{response.text[:200]}")
    return [(p["run_id"], key, int(p.get("step", 0)), int(p.get("timestamp", 0)),
             float(p["value"])) for p in response.json().get("metrics", [])]


@dataclass(frozen=True)
class StoredRun:
    """One finished run as `write_runs_sqlite` stores it; metrics are (key, value, step)
    points, logged with timestamp 0."""

    run_id: str
    name: str
    status: str  # MLflow's RunStatus name: FINISHED, FAILED, ...
    start_time: int  # ms since the epoch
    end_time: int
    artifact_uri: str
    tags: Mapping[str, str]
    params: Mapping[str, str]
    metrics: Sequence[tuple[str, float, int]]


def stored_value(value: float) -> tuple[float, int]:
    """(value, is_nan) as MLflow's SQL store keeps a metric (SqlAlchemyStore's sanitizing:
    NaN as 0 with is_nan, +-inf as +-float max)."""
    if math.isnan(value):
        return 0.0, 1
    if math.isinf(value):
        return (_FLOAT_MAX if value > 0 else -_FLOAT_MAX), 0
    return value, 0


def write_runs_sqlite(db: Path, experiment_id: str, runs: Iterable[StoredRun]) -> None:
    """Insert `runs` into an existing experiment of a SQLite store, in one transaction, with
    rows shaped as MLflow's SQL store writes them: `runs` (run_uuid, name, source_type,
    source_name, entry_point_name, user_id, status, start_time, end_time, source_version,
    lifecycle_stage, artifact_uri, experiment_id, deleted_time), `tags` and `params` (key,
    value, run_uuid), `metrics` (key, value, is_nan, timestamp, run_uuid, step) and
    `latest_metrics` (per key the point of largest (step, value), as MLflow picks it).

    Logging 10,000 runs of ~1,100 points each through MlflowClient takes hours on 2 cores;
    this takes minutes. Artifacts are the caller's to write.
    """
    with sqlite3.connect(db) as con:
        for run in runs:
            con.execute(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, "
                "user_id, status, start_time, end_time, source_version, lifecycle_stage, "
                "artifact_uri, experiment_id, deleted_time) "
                "VALUES (?, ?, 'UNKNOWN', '', '', 'unknown', ?, ?, ?, '', 'active', ?, ?, NULL)",
                (run.run_id, run.name, run.status, run.start_time, run.end_time,
                 run.artifact_uri, int(experiment_id)))
            con.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                            [(k, v, run.run_id) for k, v in run.tags.items()])
            con.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
                            [(k, v, run.run_id) for k, v in run.params.items()])
            rows = [(key, *stored_value(value), step) for key, value, step in run.metrics]
            con.executemany(
                "INSERT INTO metrics (key, value, is_nan, timestamp, run_uuid, step) "
                "VALUES (?, ?, ?, 0, ?, ?)",
                [(key, value, nan, run.run_id, step) for key, value, nan, step in rows])
            latest: dict[str, tuple[int, float, int]] = {}
            for key, value, nan, step in rows:  # MLflow's latest: largest (step, value)
                if key not in latest or (step, value) > latest[key][:2]:
                    latest[key] = (step, value, nan)
            con.executemany(
                "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                "VALUES (?, ?, 0, ?, ?, ?)",
                [(key, value, step, nan, run.run_id)
                 for key, (step, value, nan) in sorted(latest.items())])
