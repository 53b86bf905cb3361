"""Read one sweep out of an MLflow store into plain pandas tables for the report.

Loaders: `load_sweep` turns the bulk `mlflow.search_runs` frame into one typed row per run
(columns named by the MLflow keys in `harness.names`), every run's final (last logged) metric
values, every run's params and the sweep parent runs; `load_grad_profiles` and
`load_eval_by_gap` collect per-run CSV artifacts into one long frame; `load_metric_histories`
fetches the step-by-step history of chosen metrics of chosen runs.

Speed (a report of 1,000 runs must build in under a minute): runs, params, tags and final
metrics come from one paged `search_runs` (SQLite: four SQL queries on its tables);
histories come one query per metric key for all runs at once (SQLite: SQL on its metrics
table; another SQL store: its bulk history query; HTTP: the server's `get-history-bulk`
endpoint, 100 runs a request); artifacts in a local artifact store are read straight from
disk, in parallel, without a client round trip per run. Every reach past MLflow's public API
is in `harness.tracking.internals`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from harness import names
from harness.report import preflight
from harness.report.axes import LABEL_KEYS, label_axes, label_part, swept_axes
from harness.report.columns import (
    ARTIFACT_URI,
    CLIP_SETTING,
    EXPERIMENT_ID,
    FINAL_NORMALIZED_LOSS,
    KEY,
    LABEL,
    MODEL_VARIANT,
    NO_CLIP_SETTING,
    RUN_ID,
    RUN_NAME,
    START_TIME,
    STEP,
    VALUE,
)
from harness.tracking import internals
from harness.tracking.store import sqlite_path

_DEFAULT_INIT = "default"


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
_ARTIFACT_THREADS = 8
# MLflow's SQL store saves +-inf as +-float max: such a value is not a usable norm.
_FLOAT_MAX = float(np.finfo(float).max)

_STR_PARAMS = (names.TASK, names.MODEL, names.ACTIVATION, names.INIT, names.CLIP_MODE)
_INT_PARAMS = (names.GAP, names.SEED, names.HIDDEN_SIZE)
_FLOAT_PARAMS = (names.CLIP_THRESHOLD,)
_TAGS = (names.STATUS, names.STATUS_REASON, names.END_STATE, names.SUCCESS_CRITERION,
         names.SWEEP_ID)  # end_state and success_criterion: missing in older stores
_METRICS = (
    names.FINAL_EVAL_ACCURACY,
    names.BEST_EVAL_ACCURACY,
    names.FINAL_EVAL_LOSS,
    names.CHANCE_ACCURACY,
    names.CHANCE_LOSS,
    names.STEPS_TO_SOLVE,
    names.STEPS_RUN,
    names.WALL_TIME_S,
    names.GRAD_NORM_PRE_CLIP_MAX,
    names.CLIP_RATE_TOTAL,
    names.DIVERGED_STEP,
    names.PARAMETER_COUNT,
)
# One row per run: identity, grouping keys, outcome, cost. Order is the runs.csv column order.
RUN_COLUMNS: tuple[str, ...] = (
    RUN_ID, RUN_NAME, names.TASK_LABEL, names.TASK, names.GAP, names.MODEL, names.ACTIVATION,
    names.INIT, names.HIDDEN_SIZE, names.CLIP_MODE,
    names.CLIP_THRESHOLD, names.SEED, LABEL, MODEL_VARIANT, CLIP_SETTING, *_TAGS, *_METRICS,
    FINAL_NORMALIZED_LOSS,
)
# Kept on the runs frame for links and artifact reads, but not written to runs.csv: they say
# where the store is, not what the run did.
LOCATION_COLUMNS: tuple[str, ...] = (EXPERIMENT_ID, ARTIFACT_URI)
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
        raise ReportError(preflight.no_store(tracking_uri))


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


def _not_found(experiment: str, tracking_uri: str, client: MlflowClient, why: str) -> ReportError:
    known = [e.name for e in client.search_experiments()]
    return ReportError(preflight.not_found(experiment, tracking_uri, known, why))


def _column(frame: pd.DataFrame, key: str) -> pd.Series:
    """A column of the search_runs frame, or all-missing if no run logged that key."""
    if key in frame.columns:
        return frame[key]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


@dataclass(frozen=True)
class Sweep:
    """One experiment: typed runs (`RUN_COLUMNS` + `LOCATION_COLUMNS`), every run's final metric
    values and params, and the sweep parent runs that launched them.

    `finals` has a `run_id` column and one float column per metric key any run logged (the
    last logged value, as `search_runs` reports it; NaN where a run did not log the key), in
    the row order of `runs`. `params` likewise holds every param as a string (None where a run
    lacks it), columns named by the param key. `sweeps` has one row per parent run
    (`SWEEP_COLUMNS`), oldest first.
    """

    runs: pd.DataFrame
    finals: pd.DataFrame
    params: pd.DataFrame
    sweeps: pd.DataFrame
    # swept params added to the label (`axes.label_axes`): `-lr=0.001` in every label
    label_axes: tuple[str, ...] = ()
    # swept params pooled over on purpose (`harness-report --pool`): left out of the label
    pooled: tuple[str, ...] = ()


SWEEP_COLUMNS = (RUN_ID, RUN_NAME, START_TIME, names.SWEEP_OVERRIDES, names.SWEEP_SPACE,
                 names.SWEEP_TUNING, names.FRONTIER_RULE, ARTIFACT_URI)


def _search(experiment: str, tracking_uri: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The experiment's job runs and its sweep parent runs, from one query of the store
    (`internals.sqlite_search_runs` for a SQLite store, else `mlflow.search_runs`)."""
    check_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise _not_found(experiment, tracking_uri, client, "not found")
    path = sqlite_path(tracking_uri)
    raw = None if path is None else internals.sqlite_search_runs(path, found.experiment_id)
    if raw is None:
        with _tracking_uri(tracking_uri):
            raw = mlflow.search_runs(experiment_names=[experiment], output_format="pandas")
    assert isinstance(raw, pd.DataFrame)
    # A multirun's parent run holds the sweep, not a result: it is not a row of the report.
    is_sweep = _column(raw, f"tags.{names.RUN_KIND}").fillna("") == names.SWEEP_KIND
    runs, parents = raw[~is_sweep], raw[is_sweep]
    runs = latest_of_each_config(runs)
    if runs.empty:
        raise _not_found(experiment, tracking_uri, client, "has no runs")
    return runs, parents


def latest_of_each_config(runs: pd.DataFrame) -> pd.DataFrame:
    """A config is its hash: where `force=true` ran one again, its latest run (by start time)
    supersedes the earlier ones, so a seed counts once. Runs without the tag all stay."""
    hashes = _column(runs, f"tags.{names.CONFIG_HASH}")
    if runs.empty or not hashes.notna().any():
        return runs
    order = runs.assign(_hash=hashes).sort_values("start_time", kind="mergesort")
    keep = order["_hash"].isna() | ~order.duplicated("_hash", keep="last")
    return runs.loc[order.index[keep.to_numpy()]].sort_index()


def _text(value: object) -> str | None:
    return None if value is None or value is pd.NA or value != value else str(value)


def model_variant(model: object, activation: object, init: object) -> str:
    """`lstm-tanh`, `rnn-relu`, or `rnn-relu-identity` (init named when not the default)."""
    parts = [_text(model) or "?", _text(activation) or "?"]
    init_text = _text(init)
    if init_text is not None and init_text != _DEFAULT_INIT:
        parts.append(init_text)
    return "-".join(parts)


def clip_setting(mode: object, threshold: object) -> str:
    """`none`, or the mode and its threshold: `norm 1`, `value 0.5`."""
    mode_text = _text(mode) or NO_CLIP_SETTING
    if mode_text == NO_CLIP_SETTING:
        return NO_CLIP_SETTING
    value = pd.to_numeric(threshold, errors="coerce")
    return f"{mode_text} {float(value):g}" if value == value else mode_text


def typed_runs(raw: pd.DataFrame, extra_axes: Sequence[str] = ()) -> pd.DataFrame:
    """One typed row per run of the search frame `raw` (`RUN_COLUMNS` + `LOCATION_COLUMNS`),
    sorted on content; `extra_axes` (from `axes.label_axes`) join the configuration label."""
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
    variant_keys = sorted({key for key, _ in names.TASK_VARIANTS.values()})
    variants = pd.DataFrame({key: _column(raw, f"params.{key}") for key in variant_keys})
    # The task option the user chose, where the run logged it; else rebuilt from its params.
    chosen = _column(raw, f"params.{names.TASK_CHOICE}")
    runs[names.TASK_LABEL] = pd.Series([
        _text(choice) or (pd.NA if pd.isna(task) else names.task_label(str(task), params))
        for choice, task, params in zip(chosen, runs[names.TASK], variants.to_dict("records"),
                                        strict=True)
    ], index=runs.index, dtype="string")
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
    if extra_axes:  # swept axes the config label lacks: `lstm-tanh-noclip-lr=0.001`
        extra = [[label_part(key, v) for v in _column(raw, f"params.{key}")]
                 for key in extra_axes]
        runs[LABEL] = ["-".join([label, *parts])
                       for label, *parts in zip(runs[LABEL], *extra, strict=True)]
    runs[MODEL_VARIANT] = [model_variant(m, a, i) for m, a, i in zip(
        runs[names.MODEL], runs[names.ACTIVATION], runs[names.INIT], strict=True)]
    runs[CLIP_SETTING] = [clip_setting(c, t) for c, t in zip(
        runs[names.CLIP_MODE], runs[names.CLIP_THRESHOLD], strict=True)]
    for key in _TAGS:
        runs[key] = _column(raw, f"tags.{key}").astype("string")
    runs[names.STATUS] = runs[names.STATUS].fillna(NO_STATUS)
    for key in _METRICS:
        runs[key] = pd.to_numeric(_column(raw, f"metrics.{key}"), errors="coerce").astype(float)
    # a count, logged as a metric (a float): a whole number in runs.csv
    runs[names.PARAMETER_COUNT] = runs[names.PARAMETER_COUNT].round().astype("Int64")
    chance = runs[names.CHANCE_LOSS].where(runs[names.CHANCE_LOSS] > 0)
    runs[FINAL_NORMALIZED_LOSS] = runs[names.FINAL_EVAL_LOSS] / chance
    runs[EXPERIMENT_ID] = _column(raw, "experiment_id").astype(str)
    runs[ARTIFACT_URI] = _column(raw, "artifact_uri").fillna("").astype(str)

    runs = runs[[*RUN_COLUMNS, *LOCATION_COLUMNS]]
    # The store returns runs by start time; sort on content so a rebuild is byte-identical.
    order = [names.TASK_LABEL, LABEL, names.GAP, names.SEED, RUN_NAME, RUN_ID]
    return runs.sort_values(order, kind="mergesort", na_position="last")


def _prefixed(raw: pd.DataFrame, order: pd.Index, prefix: str,
              convert: Callable[[pd.Series], pd.Series]) -> pd.DataFrame:
    """Columns `prefix<key>` of the search frame as columns `<key>`, rows in `order`."""
    keys = sorted(c[len(prefix):] for c in raw.columns if c.startswith(prefix))
    frame = pd.DataFrame({RUN_ID: raw["run_id"].astype(str)}, index=raw.index)
    columns = {key: convert(raw[f"{prefix}{key}"]) for key in keys}
    frame = pd.concat([frame, pd.DataFrame(columns, index=raw.index)], axis=1)
    return frame.loc[order].reset_index(drop=True)


def _finals(raw: pd.DataFrame, order: pd.Index) -> pd.DataFrame:
    return _prefixed(raw, order, "metrics.",
                     lambda c: pd.to_numeric(c, errors="coerce").astype(float))


def params_of(raw: pd.DataFrame, order: pd.Index) -> pd.DataFrame:
    """Every param of the search frame `raw` as a string column (None where a run lacks it),
    with `run_id`, rows in `order` (`Sweep.params`)."""
    return _prefixed(raw, order, "params.", lambda c: c.astype(object).where(c.notna(), None))


def _sweeps(parents: pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame({
        RUN_ID: parents["run_id"].astype(str),
        RUN_NAME: _column(parents, f"tags.{_RUN_NAME_TAG}").fillna("").astype(str),
        START_TIME: _column(parents, "start_time"),
        names.SWEEP_OVERRIDES: _column(parents, f"params.{names.SWEEP_OVERRIDES}"),
        names.SWEEP_SPACE: _column(parents, f"params.{names.SWEEP_SPACE}"),
        names.SWEEP_TUNING: _column(parents, f"tags.{names.SWEEP_TUNING}"),
        # a frontier sweep's decision rule; its frontier.csv is read through the artifact URI
        names.FRONTIER_RULE: _column(parents, f"tags.{names.FRONTIER_RULE}"),
        ARTIFACT_URI: _column(parents, "artifact_uri").fillna("").astype(str),
    }, index=parents.index)
    frame = frame.sort_values([START_TIME, RUN_NAME, RUN_ID], kind="mergesort")
    return frame[list(SWEEP_COLUMNS)].reset_index(drop=True)


def load_sweep(experiment: str, tracking_uri: str, pool: Sequence[str] = ()) -> Sweep:
    """Typed runs, final metrics, params and sweep parents of `experiment`, from one
    `search_runs` query.

    `pool`: swept params to pool over on purpose: they are kept out of the label, so every
    table and figure mixes their values (`check_pool` says which can be). Raises `ReportError`
    (a ValueError) if the store, the experiment or its runs are missing, or `pool` names a
    param that cannot be pooled.
    """
    raw, parents = _search(experiment, tracking_uri)
    runs = typed_runs(raw)
    params = params_of(raw, runs.index)
    pooled = check_pool(pool, params)
    # Swept axes the config label lacks and that would be pooled join the label, unless the
    # user pools over them.
    extra = [a for a in label_axes(params, runs[names.TASK_LABEL], runs[LABEL])
             if a not in pooled]
    if extra:
        runs = typed_runs(raw, extra)  # new labels, so maybe a new row order
        params = params_of(raw, runs.index)
    finals = _finals(raw, runs.index)
    return Sweep(runs.reset_index(drop=True), finals, params, _sweeps(parents), tuple(extra),
                 pooled)


def check_pool(pool: Sequence[str], params: pd.DataFrame) -> tuple[str, ...]:
    """The axes of `pool` in key order, if each is a swept param outside the configuration
    label; else a ReportError naming the ones that can be pooled."""
    if not pool:
        return ()
    swept = [str(a) for a in swept_axes(params)["axis"]]
    poolable = [a for a in swept if a not in LABEL_KEYS]
    for axis in pool:
        if axis in LABEL_KEYS:
            raise ReportError(f"cannot pool over {axis}: it is part of the configuration label "
                              "or an axis of every figure (task, gap, seed)")
        if axis not in swept:
            listed = ", ".join(poolable) or "none"
            raise ReportError(f"cannot pool over {axis}: it was not swept in this experiment; "
                              f"swept params that can be pooled: {listed}")
    return tuple(sorted(set(pool)))


_HISTORY_COLUMNS = [RUN_ID, KEY, STEP, "timestamp", VALUE]  # internals.HISTORY_COLUMNS


def _history_frame(rows: list[tuple[str, str, int, int, float]] | pd.DataFrame) -> pd.DataFrame:
    frame = (rows if isinstance(rows, pd.DataFrame)
             else pd.DataFrame(rows, columns=_HISTORY_COLUMNS))
    frame = frame.sort_values([RUN_ID, KEY, STEP, "timestamp", VALUE], kind="mergesort")
    frame = frame.drop_duplicates([RUN_ID, KEY, STEP], keep="last")
    return frame[[RUN_ID, KEY, STEP, VALUE]].reset_index(drop=True)


def _by_key(wanted: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """{run_id: keys} -> {key: sorted run_ids}."""
    runs_of: dict[str, set[str]] = {}
    for run_id, keys in wanted.items():
        for key in keys:
            runs_of.setdefault(key, set()).add(run_id)
    return {key: sorted(ids) for key, ids in sorted(runs_of.items())}


def _per_run(client: MlflowClient, key: str, run_ids: Sequence[str]) -> list[tuple]:
    return [(run_id, key, int(m.step), int(m.timestamp), float(m.value))
            for run_id in run_ids for m in client.get_metric_history(run_id, key)]


def _rest_bulk(client: MlflowClient, store: object, key: str,
               run_ids: Sequence[str]) -> list[tuple]:
    """The server's bulk history endpoint (`internals.bulk_history_rest`),
    `internals.BULK_MAX_RUNS` runs a request; a chunk that hits the point cap is split in
    two."""
    size = internals.BULK_MAX_RUNS
    rows: list[tuple] = []
    pending = [list(run_ids[i:i + size]) for i in range(0, len(run_ids), size)]
    while pending:
        chunk = pending.pop()
        try:
            points = internals.bulk_history_rest(store, key, chunk, internals.BULK_MAX_POINTS)
        except internals.InternalsError as err:
            raise ReportError(str(err)) from err
        if len(points) >= internals.BULK_MAX_POINTS:  # truncated: ask again in halves
            if len(chunk) == 1:
                rows += _per_run(client, key, chunk)  # the paged per-run call has no cap
            else:
                pending += [chunk[:len(chunk) // 2], chunk[len(chunk) // 2:]]
            continue
        rows += points
    return rows


def load_metric_histories(wanted: Mapping[str, Sequence[str]], tracking_uri: str) -> pd.DataFrame:
    """Step-by-step values of `wanted[run_id]` metric keys: columns run_id, key, step, value.

    One query per metric key for all runs: a SQLite store answers with SQL on its metrics
    table (`internals.sqlite_metric_histories`), another SQL store with its bulk history
    query, a tracking server with its `get-history-bulk` endpoint (100 runs a request); other
    stores get one request per (run, key). Where a step was logged twice, the later write
    wins. Sorted by run_id, key, step.
    """
    by_key = _by_key(wanted)
    path = sqlite_path(tracking_uri)
    fast = None if path is None or not by_key else internals.sqlite_metric_histories(path, by_key)
    if fast is not None:
        return _history_frame(fast.set_axis(_HISTORY_COLUMNS, axis=1))
    client = MlflowClient(tracking_uri=tracking_uri)
    # MlflowClient has no bulk history call, but the store behind it may; any surprise in
    # reaching it falls back to one request per run.
    store = internals.client_store(client)
    rows: list[tuple] = []
    for key, run_ids in by_key.items():
        if internals.has_bulk_history_sql(store):
            rows += internals.bulk_history_sql(store, key, run_ids)
        elif internals.is_rest_store(store) and tracking_uri.startswith(("http://", "https://")):
            rows += _rest_bulk(client, store, key, run_ids)
        else:
            rows += _per_run(client, key, run_ids)
    return _history_frame(rows)


def local_artifact_dir(artifact_uri: str) -> Path | None:
    """The folder behind a run's artifact URI when it is on this machine, else None."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme == "" and artifact_uri:
        return Path(artifact_uri)
    return None


def _read_artifact_csv(run_id: str, artifact_uri: str, artifact: str, tracking_uri: str,
                       tmp: Path) -> pd.DataFrame | None:
    """One run's CSV artifact, or None when it is absent, empty or unreadable."""
    local = local_artifact_dir(artifact_uri)
    if local is not None:
        path = local / artifact
        if not path.is_file():
            return None
    else:
        client = MlflowClient(tracking_uri=tracking_uri)
        # Listing first avoids treating "artifact absent" as an exception path.
        if artifact not in {a.path for a in client.list_artifacts(run_id)}:
            return None
        path = Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact, dst_path=str(tmp / run_id),
            tracking_uri=tracking_uri))
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        return None


def artifact_csvs(runs: pd.DataFrame, artifact: str,
                   tracking_uri: str) -> list[tuple[str, pd.DataFrame]]:
    """(run_id, frame) of every run in `runs` that has a readable `artifact`, in row order."""
    ids = runs[RUN_ID].astype(str).tolist()
    uris = (runs[ARTIFACT_URI] if ARTIFACT_URI in runs.columns
            else pd.Series([""] * len(runs))).astype(str).tolist()
    with tempfile.TemporaryDirectory(prefix="harness-report-") as tmp:
        with ThreadPoolExecutor(max_workers=_ARTIFACT_THREADS) as pool:
            frames = list(pool.map(
                lambda pair: _read_artifact_csv(pair[0], pair[1], artifact, tracking_uri,
                                                Path(tmp)),
                zip(ids, uris, strict=True)))
    return [(rid, f) for rid, f in zip(ids, frames, strict=True) if f is not None]


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column as numbers (unparseable cells NaN); a no-op copy when they already are."""
    if all(pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns):
        return frame.copy()
    return frame.apply(pd.to_numeric, errors="coerce")


def _stacked(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """Per-run artifact tables as one frame; typed and empty when no run had one."""
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object if c == RUN_ID else float)
                             for c in columns})
    return pd.concat(frames, ignore_index=True)[columns]


def _profile_tables(runs: pd.DataFrame, tracking_uri: str) -> list[tuple[str, pd.DataFrame]]:
    """(run_id, numeric profile in PROFILE_COLUMNS) of every run of `runs` with a usable
    `grad_profile.csv`, in row order (`load_grad_profiles` says which are skipped)."""
    out = []
    for run_id, profile in artifact_csvs(runs, names.GRAD_PROFILE_ARTIFACT, tracking_uri):
        if not set(_REQUIRED_PROFILE_COLUMNS) <= set(profile.columns) or profile.empty:
            continue
        for column in names.PROFILE_COLUMNS:
            if column not in profile.columns:
                profile[column] = _OPTIONAL_PROFILE_COLUMNS.get(column, float("nan"))
        out.append((run_id, _numeric(profile[list(names.PROFILE_COLUMNS)])))
    return out


def _stack_profiles(pairs: Sequence[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """Profiles as one frame, `run_id` first as a categorical (sorted categories): a
    10,000-run sweep's drawn profiles are millions of rows, and a string column that long
    was most of the time of every operation on them."""
    columns = [RUN_ID, *names.PROFILE_COLUMNS]
    if not pairs:
        return _stacked([], columns)
    numeric = pd.concat([frame for _, frame in pairs], ignore_index=True)
    categories = sorted({rid for rid, _ in pairs})
    code = {rid: i for i, rid in enumerate(categories)}
    codes = np.repeat([code[rid] for rid, _ in pairs], [len(frame) for _, frame in pairs])
    numeric.insert(0, RUN_ID, pd.Categorical.from_codes(codes, categories=categories))
    return numeric[columns]


def load_grad_profiles(runs: pd.DataFrame, tracking_uri: str) -> pd.DataFrame:
    """All `grad_profile.csv` artifacts of `runs`, stacked, with a `run_id` column (a
    categorical of the run ids), in the row order of `runs`.

    Runs without the artifact, or with an empty or malformed one, are skipped: a diverged run
    may have stopped before profiling, and that must not cost the whole report. Profiles from
    before per-layer profiling (no `layer` column) count as layer 0; other missing optional
    columns are left empty.
    """
    return _stack_profiles(_profile_tables(runs, tracking_uri))


def _usable(profile: pd.DataFrame) -> bool:
    """Whether one run's profile has a finite, nonzero gradient norm in its last layer (what
    the gradient heatmap counts as a usable profile)."""
    norm = profile[P_GRAD_NORM].to_numpy(dtype=float)
    last = profile[P_LAYER].to_numpy(dtype=float) == profile[P_LAYER].max()
    return bool((last & np.isfinite(norm) & (norm > 0) & (np.abs(norm) < _FLOAT_MAX)).any())


def load_drawn_profiles(runs: pd.DataFrame, tracking_uri: str,
                        also: Iterable[str] = ()) -> pd.DataFrame:
    """The `grad_profile.csv` artifacts the report draws, as `load_grad_profiles` stacks them:
    per (task, label), the runs at its largest gap whose runs have a usable profile
    (`_usable`), found gap by gap from the top down (every gap read on the way is kept), and
    the runs `also` names (frontier probes).

    The gradient figures use a configuration's largest profiled gap only, so reading every
    run's profile (10,000 CSVs for a 10,000-run sweep) was most of a large report's reading
    time; this reads each configuration's top gap, and lower ones only where it lacks one.
    """
    keyed = runs.dropna(subset=[names.TASK_LABEL, names.GAP])
    gaps = {key: sorted({int(g) for g in group[names.GAP]}, reverse=True)
            for key, group in keyed.groupby([names.TASK_LABEL, LABEL], sort=True)}
    ids_at = {key: set(map(str, ids)) for key, ids in keyed.groupby(
        [names.TASK_LABEL, LABEL, names.GAP], sort=True)[RUN_ID]}
    pairs: list[tuple[str, pd.DataFrame]] = []
    read: set[str] = set()
    usable: set[str] = set()
    wanted = set(map(str, also))
    while True:
        if wanted:
            found = _profile_tables(runs[runs[RUN_ID].isin(wanted)], tracking_uri)
            pairs += found
            usable |= {rid for rid, profile in found if _usable(profile)}
            read |= wanted
        wanted = set()
        for key, pending in gaps.items():
            while pending:  # down from the top gap until one has a usable profile
                at = ids_at[(*key, pending[0])]
                if not at <= read:
                    wanted |= at
                    break
                if at & usable:
                    pending.clear()
                    break
                pending.pop(0)
        if not wanted:
            break
    order = {rid: i for i, rid in enumerate(runs[RUN_ID].astype(str))}
    return _stack_profiles(sorted(pairs, key=lambda pair: order[pair[0]]))


def artifact_runs(runs: pd.DataFrame, artifact: str, tracking_uri: str) -> set[str]:
    """The runs of `runs` that have `artifact`, without reading it (a local store: the file
    exists; another: the run's artifact listing names it)."""
    def has(pair: tuple[str, str]) -> bool:
        run_id, uri = pair
        local = local_artifact_dir(uri)
        if local is not None:
            return (local / artifact).is_file()
        client = MlflowClient(tracking_uri=tracking_uri)
        return artifact in {a.path for a in client.list_artifacts(run_id)}

    pairs = list(zip(runs[RUN_ID].astype(str), runs[ARTIFACT_URI].astype(str), strict=True))
    with ThreadPoolExecutor(max_workers=_ARTIFACT_THREADS) as pool:
        flags = list(pool.map(has, pairs))
    return {rid for (rid, _), flag in zip(pairs, flags, strict=True) if flag}


def load_eval_by_gap(runs: pd.DataFrame, tracking_uri: str) -> pd.DataFrame:
    """All `eval_by_gap.csv` artifacts (variable-gap tasks), stacked, with a `run_id` column.

    Columns `run_id, *names.EVAL_BY_GAP_COLUMNS`; runs without a usable artifact add nothing.
    """
    columns = [RUN_ID, *names.EVAL_BY_GAP_COLUMNS]
    frames = []
    for run_id, table in artifact_csvs(runs, names.EVAL_BY_GAP_ARTIFACT, tracking_uri):
        if not set(names.EVAL_BY_GAP_COLUMNS) <= set(table.columns) or table.empty:
            continue
        table = _numeric(table[list(names.EVAL_BY_GAP_COLUMNS)])
        table.insert(0, RUN_ID, run_id)
        frames.append(table)
    return _stacked(frames, columns)
