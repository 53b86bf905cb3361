"""The canary for an MLflow upgrade: every function of harness.tracking.internals (the one
adapter for MLflow's private surfaces) against the installed MLflow, through its public API.

A fresh SQLite store is logged with MlflowClient (NaN, +-inf, a step logged twice, a deleted
run, a second experiment); the adapter's SQL reads must give what `mlflow.search_runs` and
`MlflowClient.get_metric_history` give, the SQL store's bulk query likewise, and runs written
by `write_runs_sqlite` must read back through MlflowClient exactly as twins logged through
MlflowClient itself. The REST path (`bulk_history_rest`) runs against a real `mlflow server`
in tests/test_report_server.py.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from harness.report.load import _tracking_uri
from harness.tracking import internals

EXPERIMENT, OTHER = "internals", "internals-other"
KEYS = ("loss", "odd", "acc")


@dataclass(frozen=True)
class Logged:
    uri: str
    path: Path
    experiment_id: str
    run_ids: tuple[str, ...]  # active runs of EXPERIMENT
    deleted: str
    other: str  # the run of OTHER


def _points(i: int) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp, step) of run i: regular, special and repeated values."""
    points = [("loss", 2.0 - step / 10 + i, 100 + step, step) for step in range(0, 50, 5)]
    points += [("odd", math.nan, 1, 0), ("odd", math.inf, 2, 1), ("odd", -math.inf, 3, 2),
               ("odd", 0.5 * i, 4, 3), ("odd", 7.0, 5, 3)]  # step 3 logged twice
    if i % 2 == 0:
        points.append(("acc", 0.1 * i, 9, 9))  # only some runs log it
    return points


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Logged:
    root = tmp_path_factory.mktemp("internals")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    ids = {}
    for name in (EXPERIMENT, OTHER):
        ids[name] = client.create_experiment(name, artifact_location=(root / name).as_uri())
    run_ids = []
    for i in range(5):
        run_id = client.create_run(ids[EXPERIMENT], run_name=f"run-{i}").info.run_id
        client.log_batch(
            run_id, metrics=[Metric(k, v, ts, s) for k, v, ts, s in _points(i)],
            params=[Param("seed", str(i)), Param("model", "lstm" if i % 2 else "rnn")],
            tags=[RunTag("status", "solved" if i < 3 else "unsolved")])
        if i != 4:  # one run stays RUNNING, without an end time
            client.set_terminated(run_id, "FAILED" if i == 3 else "FINISHED")
        run_ids.append(run_id)
    bare = client.create_run(ids[EXPERIMENT], run_name="bare").info.run_id  # logs nothing
    deleted = client.create_run(ids[EXPERIMENT], run_name="deleted").info.run_id
    client.log_metric(deleted, "loss", 1.0)
    client.delete_run(deleted)
    other = client.create_run(ids[OTHER], run_name="elsewhere").info.run_id
    client.log_batch(other, metrics=[Metric("loss", 3.0, 0, 0)], params=[Param("seed", "9")])
    return Logged(uri, root / "mlflow.db", ids[EXPERIMENT], (*run_ids, bare), deleted, other)


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("run_id").reset_index(drop=True)[sorted(frame.columns)]


def test_sqlite_search_runs_is_mlflow_search_runs(logged: Logged) -> None:
    fast = internals.sqlite_search_runs(logged.path, logged.experiment_id)
    assert fast is not None
    with _tracking_uri(logged.uri):
        slow = mlflow.search_runs(experiment_ids=[logged.experiment_id], output_format="pandas")
    assert isinstance(slow, pd.DataFrame)
    assert sorted(fast["run_id"]) == sorted(logged.run_ids)  # not the deleted, not OTHER's
    pd.testing.assert_frame_equal(_canonical(fast), _canonical(slow))


def test_sqlite_reads_are_none_without_mlflow_tables(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    assert internals.sqlite_search_runs(missing, "1") is None
    assert internals.sqlite_metric_histories(missing, {"loss": ["r"]}) is None
    assert not missing.exists()  # read-only: never created
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE runs (x INTEGER)")
    assert internals.sqlite_search_runs(other, "1") is None
    assert internals.sqlite_metric_histories(other, {"loss": ["r"]}) is None


def _history(client: MlflowClient, run_ids: list[str], key: str) -> list[tuple]:
    """What the public API says: (run_id, key, step, timestamp, value), NaN as the string."""
    return sorted((run_id, key, m.step, m.timestamp, repr(m.value))
                  for run_id in run_ids for m in client.get_metric_history(run_id, key))


def _rows(rows: list[tuple]) -> list[tuple]:
    return sorted((r, k, int(s), int(t), repr(float(v))) for r, k, s, t, v in rows)


def test_sqlite_metric_histories_are_get_metric_history(logged: Logged,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internals, "SQL_CHUNK", 2)  # several IN (...) lists per key
    client = MlflowClient(tracking_uri=logged.uri)
    wanted = {key: sorted([*logged.run_ids, logged.other]) for key in KEYS}
    frame = internals.sqlite_metric_histories(logged.path, wanted)
    assert frame is not None
    assert tuple(frame.columns) == internals.HISTORY_COLUMNS
    got = _rows(list(frame.itertuples(index=False, name=None)))
    expected = [row for key, ids in wanted.items() for row in _history(client, ids, key)]
    assert got == sorted(expected)
    assert len(got) == 5 * 10 + 5 * 5 + 3 + 1  # loss, odd, acc (runs 0, 2, 4), OTHER's loss
    assert {v for *_, v in got} >= {"nan", repr(1.7976931348623157e308)}


def test_client_store_of_a_sqlite_uri_has_the_bulk_history_query(logged: Logged,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    monkeypatch.setattr(internals, "SQL_CHUNK", 2)
    client = MlflowClient(tracking_uri=logged.uri)
    store = internals.client_store(client)
    assert internals.has_bulk_history_sql(store)
    assert not internals.is_rest_store(store)
    ids = sorted(logged.run_ids)
    for key in KEYS:
        assert _rows(internals.bulk_history_sql(store, key, ids)) == _history(client, ids, key)
    assert internals.bulk_history_sql(store, "loss", []) == []


def test_client_store_of_a_server_uri_is_a_rest_store() -> None:
    uri = "http://127.0.0.1:9"  # never contacted
    store = internals.client_store(MlflowClient(tracking_uri=uri))
    assert internals.is_rest_store(store)
    assert not internals.has_bulk_history_sql(store)
    assert store.get_host_creds().host == uri  # type: ignore[union-attr]
    assert internals.client_store(object()) is None


def test_written_runs_read_back_as_runs_logged_through_mlflow(tmp_path: Path) -> None:
    """Each run written into the tables has a twin logged through MlflowClient with the same
    params, tags and points (timestamp 0): MLflow must see no difference between them."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("written", artifact_location=(tmp_path / "a").as_uri())
    written, twins = [], []
    for i in range(3):
        points = [(k, v, s) for k, v, _, s in _points(i)]
        params = {"seed": str(i), "model": "gru"}
        tags = {"status": "solved", "mlflow.runName": f"written-{i}"}
        status = "FAILED" if i == 1 else "FINISHED"
        written.append(internals.StoredRun(
            run_id=f"{i:032x}", name=f"written-{i}", status=status,
            start_time=1_700_000_000_000 + i, end_time=1_700_000_000_500 + i,
            artifact_uri=f"{(tmp_path / 'a').as_uri()}/{i:032x}/artifacts", tags=tags,
            params=params, metrics=points))
        twin = client.create_run(exp_id, run_name=f"twin-{i}").info.run_id
        client.log_batch(twin, metrics=[Metric(k, v, 0, s) for k, v, s in points],
                         params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(twin, status)
        twins.append(twin)
    internals.write_runs_sqlite(tmp_path / "mlflow.db", exp_id, written)
    found = {r.info.run_id: r for r in client.search_runs([exp_id])}
    assert len(found) == 6
    for record, twin_id in zip(written, twins, strict=True):
        got, twin = client.get_run(record.run_id), found[twin_id]
        assert got.info.run_id in found
        assert (got.info.run_name, got.info.status, got.info.start_time, got.info.end_time,
                got.info.artifact_uri, got.info.lifecycle_stage, got.info.experiment_id) == (
            record.name, record.status, record.start_time, record.end_time,
            record.artifact_uri, "active", exp_id)
        assert got.data.params == twin.data.params == dict(record.params)
        assert got.data.tags.items() >= dict(record.tags).items()
        assert {k: repr(v) for k, v in got.data.metrics.items()} == {
            k: repr(v) for k, v in twin.data.metrics.items()}  # MLflow's "latest" rule
        for key in KEYS:
            assert (_history(client, [record.run_id], key)
                    == [(record.run_id, *rest) for _, *rest in _history(client, [twin_id], key)])
    assert found[twins[0]].data.metrics["odd"] == 7.0  # step 3 twice: the larger value
