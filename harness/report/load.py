"""Read one sweep out of an MLflow store into plain pandas tables for the report.

Three loaders: `load_sweep` turns the bulk `mlflow.search_runs` frame into one typed row per
run (columns named by the MLflow keys in `harness.names`) plus every run's final (last logged)
metric values; `load_grad_profiles` collects the `grad_profile.csv` artifacts of those runs
into one long frame; `load_metric_histories` fetches the step-by-step history of chosen
metrics of chosen runs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from harness import names
from harness.store import sqlite_path

RUN_ID = "run_id"
RUN_NAME = "run_name"
LABEL = "label"
# Columns of the long history frame of `load_metric_histories`.
KEY, STEP, VALUE = "key", "step", "value"


def _profile_column(name: str) -> str:
    """A column of grad_profile.csv, checked against `names.PROFILE_COLUMNS` at import."""
    if name not in names.PROFILE_COLUMNS:
        raise ImportError(f"grad_profile.csv has no column {name!r}: {names.PROFILE_COLUMNS}")
    return name


P_STEP = _profile_column("step")
P_LAYER = _profile_column("layer")
P_T = _profile_column("t")
P_LAG = _profile_column("lag")
P_GRAD_NORM = _profile_column("grad_norm")
# Profiles written before per-layer profiling lack these: one layer (0), no hidden norms.
_OPTIONAL_PROFILE_COLUMNS = {P_LAYER: 0.0}
_REQUIRED_PROFILE_COLUMNS = (P_STEP, P_T, P_LAG, P_GRAD_NORM)
# Runs that never reached the end of training carry no status tag; they get this one so that
# they still show up (and are counted) instead of vanishing from the report.
NO_STATUS = "missing"

_STR_PARAMS = (names.TASK, names.MODEL, names.ACTIVATION, names.CLIP_MODE)
_INT_PARAMS = (names.GAP, names.SEED)
_FLOAT_PARAMS = (names.CLIP_THRESHOLD,)
_TAGS = (names.STATUS, names.STATUS_REASON)
_METRICS = (
    names.FINAL_EVAL_ACCURACY,
    names.FINAL_EVAL_LOSS,
    names.CHANCE_ACCURACY,
    names.CHANCE_LOSS,
    names.STEPS_TO_SOLVE,
    names.STEPS_RUN,
    names.WALL_TIME_S,
    names.GRAD_NORM_PRE_CLIP_MAX,
    names.CLIP_RATE_TOTAL,
)
# One row per run: identity, grouping keys, outcome, cost. Order is the runs.csv column order.
RUN_COLUMNS: tuple[str, ...] = (
    RUN_ID, RUN_NAME, names.TASK, names.GAP, names.MODEL, names.ACTIVATION, names.CLIP_MODE,
    names.CLIP_THRESHOLD, names.SEED, LABEL, *_TAGS, *_METRICS,
)
# The run's MLflow name lives in this system tag in the search_runs frame.
_RUN_NAME_TAG = "mlflow.runName"


class ReportError(ValueError):
    """The store or experiment cannot be reported on (missing, empty); the message says why."""


def check_store(tracking_uri: str) -> None:
    """Fail before MLflow touches a sqlite store that does not exist.

    MLflow would silently create an empty database at a mistyped path, and the user would then
    see "experiment not found" for a store that was never there.
    """
    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        raise ReportError(f"no MLflow store at {tracking_uri}: file {path} does not exist")


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """Point the global MLflow client at `uri` for the block, then put back what was there.

    `mlflow.search_runs` only reads the global tracking URI, and setting it also rewrites the
    MLFLOW_TRACKING_URI environment variable, so both are restored afterwards.
    """
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    uri_before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(uri_before)  # type: ignore[arg-type]  # None means "unset"
        if env_before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env_before


def _experiment_names(client: MlflowClient) -> list[str]:
    return sorted(e.name for e in client.search_experiments())


def _not_found(experiment: str, tracking_uri: str, client: MlflowClient, why: str) -> ReportError:
    known = _experiment_names(client)
    listing = ", ".join(repr(n) for n in known) if known else "(none)"
    return ReportError(
        f"experiment {experiment!r} {why} in {tracking_uri}; experiments in this store: {listing}"
    )


def _column(frame: pd.DataFrame, key: str) -> pd.Series:
    """A column of the search_runs frame, or all-missing if no run logged that key."""
    if key in frame.columns:
        return frame[key]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


@dataclass(frozen=True)
class Sweep:
    """One experiment: typed runs (`RUN_COLUMNS`) and every run's final metric values.

    `finals` has a `run_id` column and one float column per metric key any run logged (the
    last logged value, as `search_runs` reports it; NaN where a run did not log the key), in
    the row order of `runs`.
    """

    runs: pd.DataFrame
    finals: pd.DataFrame


def _search(experiment: str, tracking_uri: str) -> pd.DataFrame:
    check_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    if client.get_experiment_by_name(experiment) is None:
        raise _not_found(experiment, tracking_uri, client, "not found")
    with _tracking_uri(tracking_uri):
        raw = mlflow.search_runs(experiment_names=[experiment], output_format="pandas")
    assert isinstance(raw, pd.DataFrame)
    # A multirun's parent run holds the sweep, not a result: it is not a row of the report.
    raw = raw[_column(raw, f"tags.{names.RUN_KIND}").fillna("") != names.SWEEP_KIND]
    if raw.empty:
        raise _not_found(experiment, tracking_uri, client, "has no runs")
    return raw


def _typed_runs(raw: pd.DataFrame) -> pd.DataFrame:
    runs = pd.DataFrame(index=raw.index)
    runs[RUN_ID] = raw["run_id"].astype(str)
    runs[RUN_NAME] = _column(raw, f"tags.{_RUN_NAME_TAG}").fillna("").astype(str)
    for key in _STR_PARAMS:
        runs[key] = _column(raw, f"params.{key}").astype("string")
    for key in _INT_PARAMS:
        # Params are strings in MLflow; "100" and "100.0" must both become the gap 100.
        values = pd.to_numeric(_column(raw, f"params.{key}"), errors="coerce")
        runs[key] = values.round().astype("Int64")
    for key in _FLOAT_PARAMS:
        runs[key] = pd.to_numeric(_column(raw, f"params.{key}"), errors="coerce").astype(float)
    # Model variants (init, chrono, layers, direction); runs that predate a key get its default.
    variant = {key: _column(raw, f"params.{key}").fillna(default).astype(str) for key, default in
               ((names.INIT, "default"), (names.CHRONO, "False"), (names.NUM_LAYERS, "1"),
                (names.BIDIRECTIONAL, "False"))}
    runs[LABEL] = [
        names.config_label(str(m), str(a), str(c), float(t), init=i, chrono=ch == "True",
                           num_layers=int(float(n)), bidirectional=b == "True")
        for m, a, c, t, i, ch, n, b in zip(
            runs[names.MODEL].fillna("?"),
            runs[names.ACTIVATION].fillna("?"),
            runs[names.CLIP_MODE].fillna("none"),
            runs[names.CLIP_THRESHOLD],
            *variant.values(),
            strict=True,
        )
    ]
    for key in _TAGS:
        runs[key] = _column(raw, f"tags.{key}").astype("string")
    runs[names.STATUS] = runs[names.STATUS].fillna(NO_STATUS)
    for key in _METRICS:
        runs[key] = pd.to_numeric(_column(raw, f"metrics.{key}"), errors="coerce").astype(float)

    runs = runs[list(RUN_COLUMNS)]
    # The store returns runs by start time; sort on content so a rebuild is byte-identical.
    order = [names.TASK, LABEL, names.GAP, names.SEED, RUN_NAME, RUN_ID]
    return runs.sort_values(order, kind="mergesort", na_position="last")


def _finals(raw: pd.DataFrame, order: pd.Index) -> pd.DataFrame:
    prefix = "metrics."
    keys = sorted(c[len(prefix):] for c in raw.columns if c.startswith(prefix))
    finals = pd.DataFrame({RUN_ID: raw["run_id"].astype(str)}, index=raw.index)
    for key in keys:
        finals[key] = pd.to_numeric(raw[f"{prefix}{key}"], errors="coerce").astype(float)
    return finals.loc[order].reset_index(drop=True)


def load_sweep(experiment: str, tracking_uri: str) -> Sweep:
    """Typed runs and final metrics of `experiment`, from one `search_runs` query.

    Raises `ReportError` (a ValueError) if the store, the experiment or its runs are missing.
    """
    raw = _search(experiment, tracking_uri)
    runs = _typed_runs(raw)
    finals = _finals(raw, runs.index)
    return Sweep(runs.reset_index(drop=True), finals)


def load_metric_histories(wanted: Mapping[str, Sequence[str]], tracking_uri: str) -> pd.DataFrame:
    """Step-by-step values of `wanted[run_id]` metric keys: columns run_id, key, step, value.

    One request per (run, key). MLflow 3.17 has no public bulk history call that works on
    every store: `MlflowClient` offers only the per-run `get_metric_history`; the SQL store's
    `get_metric_history_bulk` (many runs, one key) is not exposed by the client and has no REST
    store counterpart, and the abstract store's `get_metric_history_bulk_interval` loops over
    `get_metric_history` per run anyway (and down-samples). So callers ask only for what the
    figures draw (the runs at each configuration's largest gap, and only keys a run logged).
    Where a step was logged twice, the later write wins. Sorted by run_id, key, step.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    rows: list[tuple[str, str, int, int, float]] = []
    for run_id in sorted(wanted):
        for key in sorted(set(wanted[run_id])):
            rows += [(run_id, key, int(m.step), int(m.timestamp), float(m.value))
                     for m in client.get_metric_history(run_id, key)]
    frame = pd.DataFrame(rows, columns=[RUN_ID, KEY, STEP, "timestamp", VALUE])
    frame = frame.sort_values([RUN_ID, KEY, STEP, "timestamp", VALUE], kind="mergesort")
    frame = frame.drop_duplicates([RUN_ID, KEY, STEP], keep="last")
    return frame[[RUN_ID, KEY, STEP, VALUE]].reset_index(drop=True)


def load_grad_profiles(run_ids: list[str], tracking_uri: str) -> pd.DataFrame:
    """All `grad_profile.csv` artifacts of `run_ids`, stacked, with a `run_id` column.

    Runs without the artifact, or with an empty or malformed one, are skipped: a diverged run
    may have stopped before profiling, and that must not cost the whole report. Profiles from
    before per-layer profiling (no `layer` column) count as layer 0; other missing optional
    columns are left empty.
    """
    columns = [RUN_ID, *names.PROFILE_COLUMNS]
    client = MlflowClient(tracking_uri=tracking_uri)
    frames: list[pd.DataFrame] = []
    with tempfile.TemporaryDirectory(prefix="harness-report-") as tmp:
        for run_id in run_ids:
            # Listing first avoids treating "artifact absent" as an exception path.
            present = {a.path for a in client.list_artifacts(run_id)}
            if names.GRAD_PROFILE_ARTIFACT not in present:
                continue
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=names.GRAD_PROFILE_ARTIFACT,
                dst_path=str(Path(tmp) / run_id),
                tracking_uri=tracking_uri,
            )
            try:
                profile = pd.read_csv(local)
            except pd.errors.EmptyDataError:
                continue
            if not set(_REQUIRED_PROFILE_COLUMNS) <= set(profile.columns) or profile.empty:
                continue
            for column in names.PROFILE_COLUMNS:
                if column not in profile.columns:
                    profile[column] = _OPTIONAL_PROFILE_COLUMNS.get(column, float("nan"))
            profile = profile[list(names.PROFILE_COLUMNS)].apply(pd.to_numeric, errors="coerce")
            profile.insert(0, RUN_ID, run_id)
            frames.append(profile)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object if c == RUN_ID else float)
                             for c in columns})
    return pd.concat(frames, ignore_index=True)[columns]
