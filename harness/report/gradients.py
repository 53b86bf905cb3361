"""Data of the report's Gradients section: one frame per figure (also its CSV) and the table.

Every frame is sorted on its key columns so a rebuild writes the same bytes. Runs or metrics
that are absent (old runs, diverged runs, models without gates) simply contribute no rows;
the figures draw a panel that says so when a frame ends up empty.

"Final" values are the run's last logged value, as `mlflow.search_runs` reports it
(`load.Sweep.finals`). Histories are fetched only for the runs a figure draws: per
(task, label), the runs at the largest gap where some run logged the metric.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness import names
from harness.cells import GATE_BLOCKS
from harness.report.load import (
    KEY,
    LABEL,
    P_GRAD_NORM,
    P_LAG,
    P_LAYER,
    P_STEP,
    RUN_ID,
    RUN_NAME,
    STEP,
    VALUE,
)
from harness.report.tables import N_SEEDS, format_cell

LAYER, LAG = P_LAYER, P_LAG  # same names as in grad_profile.csv
BLOCK = "block"
N_RUNS = "n_runs"
LOG10_GRAD_NORM = "log10_grad_norm"
MODEL_ACTIVATION = "model_activation"
PANEL = [names.TASK_LABEL, LABEL]
DECAY_METRICS = (names.GRAD_DECAY_RATE, names.GRAD_HALF_LIFE, names.GRAD_REACH)
SR_MEAN = f"{names.SPECTRAL_RADIUS}_mean"
SR_STD = f"{names.SPECTRAL_RADIUS}_std"
CLIP_RATE_MEAN = f"{names.CLIP_RATE_TOTAL}_mean"
CLIP_RATE_STD = f"{names.CLIP_RATE_TOTAL}_std"
NO_CLIP = "none"  # clip.mode of a run that never clips
NORM_CLIP = "norm"  # clip.mode whose threshold bounds the global gradient norm

HEATMAP_COLUMNS = [names.TASK_LABEL, LABEL, names.GAP, LAYER, STEP, LAG, LOG10_GRAD_NORM, N_RUNS]
DECAY_COLUMNS = [names.TASK_LABEL, LABEL, names.GAP] + [
    f"{m}_{stat}" for m in DECAY_METRICS for stat in ("mean", "std", "n")
]
GRAD_NORM_COLUMNS = [names.TASK_LABEL, LABEL, names.GAP, names.SEED, RUN_NAME, names.CLIP_MODE,
                     names.CLIP_THRESHOLD, STEP, names.GRAD_NORM_PRE_CLIP]
CLIP_RATE_COLUMNS = [names.TASK_LABEL, names.CLIP_MODE, names.GAP, MODEL_ACTIVATION, LABEL,
                     names.CLIP_THRESHOLD, CLIP_RATE_MEAN, CLIP_RATE_STD, N_SEEDS]
SPECTRAL_COLUMNS = [names.TASK_LABEL, LABEL, names.GAP, LAYER, BLOCK, STEP, SR_MEAN, SR_STD, N_RUNS]

# MLflow's SQL store saves +-inf as +-float max; treat those as the non-finite values they were.
_FLOAT_MAX = float(np.finfo(float).max)


def finite(values: pd.Series) -> pd.Series:
    """Mask of values that are finite floats and not MLflow's stand-in for infinity."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    return np.isfinite(numbers) & (numbers.abs() < _FLOAT_MAX)


def _sorted(frame: pd.DataFrame, columns: Sequence[str], by: Sequence[str]) -> pd.DataFrame:
    frame = frame.reindex(columns=list(columns))
    return frame.sort_values(list(by), kind="mergesort").reset_index(drop=True)


# --- each run's profile by lag, and its mean over runs -----------------------------------

INIT, MIDDLE, FINAL = "init", "middle", "final"  # a run's profiled steps: first, middle, last
PANEL_MODEL = "panel_model"
PHASE = "phase"
POOLED_COLUMNS = [names.TASK_LABEL, PANEL_MODEL, names.GAP, LABEL, PHASE, P_LAYER, P_LAG,
                  P_GRAD_NORM, N_RUNS]
RUN_PROFILE_COLUMNS = [RUN_ID, names.TASK_LABEL, PANEL_MODEL, names.GAP, LABEL, PHASE, P_LAG,
                       P_GRAD_NORM, P_LAYER, P_STEP]
_PHASE_ORDER = sorted((INIT, MIDDLE, FINAL))  # the order a groupby on the names gives


def run_profiles(runs: pd.DataFrame, profiles: pd.DataFrame) -> pd.DataFrame:
    """Each run's own ‖∂L/∂h_t‖ by lag at init, mid-training and at the end, last layer.

    One row per (run, phase, lag), columns `RUN_PROFILE_COLUMNS`: the run's mean over its
    positions at that lag, and the step it was profiled at. Only each run's last layer (the
    one next to the readout) is used. "final" is each run's own last profiled step, since runs
    stop at different steps; a run profiled only at step 0 has no final curve. "middle" is the
    run's profiled step nearest half its last one (not step 0 nor the last). Non-finite values
    (diverged runs) are dropped. Rows are ordered by task, panel model, gap, label, phase, lag
    and run id. The work is done on integer run codes (`run_codes`): a large
    sweep's profiles are millions of rows.
    """
    if profiles.empty:
        return pd.DataFrame(columns=RUN_PROFILE_COLUMNS)
    codes, ids = run_codes(profiles)
    meta = run_meta(runs, ids, [names.TASK_LABEL, names.GAP, names.MODEL, names.ACTIVATION,
                                LABEL])
    meta[PANEL_MODEL] = (meta[names.MODEL].astype(str) + "-"
                         + meta[names.ACTIVATION].astype(str))
    group = [names.TASK_LABEL, PANEL_MODEL, names.GAP, LABEL]
    known = (meta["present"] & meta[group].notna().all(axis=1)).to_numpy()
    step = profiles[P_STEP].to_numpy(dtype=float)
    rows = (last_layer_rows(profiles, codes) & known[codes]
            & np.isfinite(profiles[P_GRAD_NORM].to_numpy(dtype=float))
            & ~np.isnan(profiles[P_LAG].to_numpy(dtype=float)) & ~np.isnan(step))
    if not rows.any():
        return pd.DataFrame(columns=RUN_PROFILE_COLUMNS)
    run, step = codes[rows], step[rows]
    last = pd.Series(step).groupby(run).transform("max").to_numpy()
    # the middle step: each run's profiled step nearest half its last (ties: the earlier)
    steps = pd.DataFrame({"_run": run, P_STEP: step, "last": last}).drop_duplicates(
        ["_run", P_STEP])
    inner = steps[(steps[P_STEP] > 0) & (steps[P_STEP] < steps["last"])]
    inner = inner.assign(distance=(inner[P_STEP] - inner["last"] / 2).abs())
    middle = inner.sort_values(["_run", "distance", P_STEP]).drop_duplicates("_run")
    middle_step = np.full(len(ids), np.nan)
    middle_step[middle["_run"].to_numpy()] = middle[P_STEP].to_numpy()
    data = pd.DataFrame({"_run": run, P_LAG: profiles[P_LAG].to_numpy()[rows],
                         P_GRAD_NORM: profiles[P_GRAD_NORM].to_numpy()[rows],
                         P_LAYER: profiles[P_LAYER].to_numpy()[rows],
                         P_STEP: profiles[P_STEP].to_numpy()[rows]})
    phases = [(INIT, step == 0), (MIDDLE, step == middle_step[run]),
              (FINAL, (step == last) & (last > 0))]
    parts = [data[mask].assign(_phase=_PHASE_ORDER.index(phase)) for phase, mask in phases]
    both = pd.concat(parts, ignore_index=True)
    # average within a run first, so a run scoring many positions per lag is not overweighted
    per_run = both.groupby(["_run", "_phase", P_LAG], sort=True).agg(
        **{P_GRAD_NORM: (P_GRAD_NORM, "mean"), P_LAYER: (P_LAYER, "max"),
           P_STEP: (P_STEP, "max")}).reset_index()
    # order: the run's configuration (task, panel model, gap, label), phase, lag, run id
    configs = meta[group].reset_index(drop=True)
    config_rank = np.full(len(ids), -1)
    ranked = configs[known].sort_values(group, kind="mergesort").drop_duplicates()
    position = pd.MultiIndex.from_frame(ranked).get_indexer(pd.MultiIndex.from_frame(configs))
    config_rank[known] = position[known]
    order = np.lexsort((per_run["_run"].to_numpy(), per_run[P_LAG].to_numpy(),
                        per_run["_phase"].to_numpy(), config_rank[per_run["_run"].to_numpy()]))
    per_run = per_run.iloc[order].reset_index(drop=True)
    keys = configs.iloc[per_run["_run"].to_numpy()].reset_index(drop=True)
    out = pd.concat([keys, per_run], axis=1)
    out[RUN_ID] = np.asarray(ids)[per_run["_run"].to_numpy()]
    out[PHASE] = np.asarray(_PHASE_ORDER)[per_run["_phase"].to_numpy()]
    return out[RUN_PROFILE_COLUMNS]


def pool_runs(per_run: pd.DataFrame, group: list[str]) -> pd.DataFrame:
    """The mean over runs of `run_profiles` rows per `group` (which ends with the lag), with
    the runs counted in `N_RUNS`; layers and lags as ints."""
    pooled = per_run.groupby(group, sort=True).agg(
        **{P_GRAD_NORM: (P_GRAD_NORM, "mean"), N_RUNS: (RUN_ID, "count"),
           P_LAYER: (P_LAYER, "max")}
    ).reset_index()
    pooled[P_LAYER] = pooled[P_LAYER].round().astype(int)
    pooled[P_LAG] = pooled[P_LAG].round().astype(int)
    return pooled


# --- gradient-norm heatmap --------------------------------------------------------------------


def run_codes(profiles: pd.DataFrame) -> tuple[np.ndarray, pd.Index]:
    """Each profile row's run as an integer code, and the run ids (sorted) the codes index.

    Profiles of a large sweep are millions of rows: grouping them on these codes instead of
    the run id strings is what keeps the gradient figures' data quick to compute.
    """
    column = profiles[RUN_ID]
    if isinstance(column.dtype, pd.CategoricalDtype):
        ids = pd.Index(column.cat.categories.astype(str))
        if ids.is_monotonic_increasing:
            return column.cat.codes.to_numpy(dtype=np.int64), ids
    codes, uniques = pd.factorize(column.astype(str), sort=True)
    return codes.astype(np.int64), pd.Index(uniques.astype(str))


def run_meta(runs: pd.DataFrame, ids: pd.Index, columns: Sequence[str]) -> pd.DataFrame:
    """`columns` of the run behind each code (row i: run ids[i]); all-missing for a profile
    whose run is not in `runs`, which `present` marks."""
    meta = runs.drop_duplicates(RUN_ID).set_index(RUN_ID)[list(columns)].reindex(ids)
    return meta.assign(present=ids.isin(runs[RUN_ID].astype(str)))


def last_layer_rows(profiles: pd.DataFrame, codes: np.ndarray) -> np.ndarray:
    """Mask of the rows of each run's last (deepest) layer: the one next to the readout."""
    layer = profiles[P_LAYER].to_numpy(dtype=float)
    deepest = pd.Series(layer).groupby(codes).transform("max").to_numpy()
    return layer == deepest


def heatmap_table(runs: pd.DataFrame, profiles: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of log10‖∂L/∂h_t‖ per (task, label, step, lag), last layer, top gap.

    Zero and non-finite norms are dropped before the log; a run's rows at the same (step,
    lag) are averaged first, so no run counts twice. The gap is each configuration's largest
    gap with a usable profile. Every (step, lag) cell those runs profiled has a row; where no
    run had a finite nonzero norm the value is empty and `n_runs` is 0.
    """
    if profiles.empty:
        return pd.DataFrame(columns=HEATMAP_COLUMNS)
    codes, ids = run_codes(profiles)
    meta = run_meta(runs, ids, [names.TASK_LABEL, LABEL, names.GAP])
    known = (meta["present"] & meta[names.TASK_LABEL].notna()
             & meta[names.GAP].notna()).to_numpy()
    step = profiles[P_STEP].to_numpy(dtype=float)
    lag = profiles[P_LAG].to_numpy(dtype=float)
    rows = (last_layer_rows(profiles, codes) & known[codes] & ~np.isnan(step)
            & ~np.isnan(lag))
    norm = profiles[P_GRAD_NORM]
    good = (finite(norm) & (norm > 0)).to_numpy()
    usable_runs = np.zeros(len(ids), dtype=bool)
    usable_runs[codes[rows & good]] = True
    if not usable_runs.any():
        return pd.DataFrame(columns=HEATMAP_COLUMNS)
    # each configuration's largest gap where one of its runs has a usable row
    top = meta[usable_runs].groupby(PANEL)[names.GAP].max().rename("_top_gap")
    at_top = meta.join(top, on=PANEL)
    at_top = (at_top[names.GAP] == at_top["_top_gap"]).fillna(False).to_numpy(dtype=bool)
    rows &= at_top[codes]
    logs = np.log10(norm.where(finite(norm) & (norm > 0)).to_numpy(dtype=float)[rows])
    data = pd.DataFrame({"_run": codes[rows], P_STEP: profiles[P_STEP].to_numpy()[rows],
                         LAG: profiles[P_LAG].to_numpy()[rows], LOG10_GRAD_NORM: logs,
                         LAYER: profiles[P_LAYER].to_numpy()[rows]})
    per_run = data.groupby(["_run", P_STEP, LAG], sort=True).agg(
        **{LOG10_GRAD_NORM: (LOG10_GRAD_NORM, "mean"), LAYER: (LAYER, "max")}).reset_index()
    # one gap per configuration here, so a configuration's code keys its cells; runs enter a
    # cell's mean in run id order, as when grouped on the ids themselves
    panel_of, panels = pd.factorize(pd.MultiIndex.from_frame(meta[PANEL]))
    per_run["_panel"] = panel_of[per_run["_run"].to_numpy()]
    pooled = per_run.groupby(["_panel", P_STEP, LAG], sort=True).agg(
        **{LOG10_GRAD_NORM: (LOG10_GRAD_NORM, "mean"), N_RUNS: (LOG10_GRAD_NORM, "count"),
           LAYER: (LAYER, "max")}
    ).reset_index()
    gap_of = meta[at_top].assign(_panel=panel_of[at_top]).groupby("_panel")[names.GAP].first()
    for level, column in enumerate(PANEL):
        pooled[column] = np.asarray(panels.get_level_values(level))[pooled["_panel"]]
    pooled[names.GAP] = pd.array(gap_of.reindex(pooled["_panel"]).to_numpy(), dtype="Int64")
    for column in (LAYER, P_STEP, LAG):
        pooled[column] = pooled[column].round().astype(int)
    return _sorted(pooled.rename(columns={P_STEP: STEP}), HEATMAP_COLUMNS, [*PANEL, STEP, LAG])


# --- final decay rate, half-life and reach -----------------------------------------------------


def _final(finals: pd.DataFrame, key: str) -> pd.Series:
    if key not in finals.columns:
        return pd.Series(np.nan, index=finals.index, dtype=float)
    values = finals[key].astype(float)
    return values.where(finite(values))


def decay_points(runs: pd.DataFrame, finals: pd.DataFrame) -> pd.DataFrame:
    """One row per run with its final decay rate, half-life and reach (NaN where absent).

    The half-life is logged only while the rate is negative, so its last logged value can be
    older than the last rate; it is blanked when the final rate is not negative.
    """
    points = runs[[RUN_ID, names.TASK_LABEL, LABEL, names.GAP, names.SEED]].copy()
    indexed = finals.set_index(RUN_ID)
    for key in DECAY_METRICS:
        points[key] = _final(indexed, key).reindex(points[RUN_ID]).to_numpy()
    stale = points[names.GRAD_DECAY_RATE] >= 0
    points.loc[stale, names.GRAD_HALF_LIFE] = np.nan
    points = points.dropna(subset=[names.TASK_LABEL, names.GAP])
    return points[points[list(DECAY_METRICS)].notna().any(axis=1)].reset_index(drop=True)


def decay_table(points: pd.DataFrame) -> pd.DataFrame:
    """Per (task, label, gap): mean, sample std and count of each final decay metric."""
    group = [names.TASK_LABEL, LABEL, names.GAP]
    if points.empty:
        return pd.DataFrame(columns=DECAY_COLUMNS)
    parts = []
    for key in DECAY_METRICS:
        stats = points.groupby(group, sort=True)[key].agg(["mean", "std", "count"])
        stats.columns = [f"{key}_mean", f"{key}_std", f"{key}_n"]
        parts.append(stats)
    table = pd.concat(parts, axis=1).reset_index()
    for key in DECAY_METRICS:
        table[f"{key}_n"] = table[f"{key}_n"].astype(int)
    return _sorted(table, DECAY_COLUMNS, group)


def _mean_std(mean: object, std: object, digits: int) -> str:
    cell = format_cell(mean, digits)
    if not (isinstance(std, float) and math.isnan(std)):
        cell += f" ± {format_cell(std, digits)}"
    return cell


DECAY_HEADER = [names.TASK_LABEL, LABEL, names.GAP, "n",
                f"{names.GRAD_DECAY_RATE} (1/step, mean ± std)",
                f"{names.GRAD_HALF_LIFE} (steps, mean ± std)",
                f"{names.GRAD_REACH} (steps, mean ± std)"]
_DIGITS = {names.GRAD_DECAY_RATE: 4, names.GRAD_HALF_LIFE: 1, names.GRAD_REACH: 1}


def decay_display(table: pd.DataFrame) -> list[list[str]]:
    """Rows of the decay table as strings; `n` counts runs with a decay rate, and a cell with
    a different count says so."""
    rows = []
    for row in table.to_dict("records"):
        n = int(row[f"{names.GRAD_DECAY_RATE}_n"])
        cells = [format_cell(row[names.TASK_LABEL]), format_cell(row[LABEL]),
                 format_cell(row[names.GAP]), str(n)]
        for key in DECAY_METRICS:
            count = int(row[f"{key}_n"])
            cell = _mean_std(row[f"{key}_mean"], row[f"{key}_std"], _DIGITS[key])
            cells.append(cell if count == n else f"{cell} (n={count})")
        rows.append(cells)
    return rows


# --- which histories to fetch --------------------------------------------------------------------


def _present(finals: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    columns = [k for k in keys if k in finals.columns]
    if not columns:
        return pd.Series(False, index=finals.index)
    return finals[columns].notna().any(axis=1)


def _top_gap_runs(runs: pd.DataFrame, finals: pd.DataFrame,
                  keys: Sequence[str]) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (task, label): all its runs at the largest gap where some run logged any of `keys`.

    All runs at that gap are returned, not only those with a final value: a run whose last
    value was NaN (stored as NaN, reported as missing) may still have a useful history.
    """
    keyed = runs.assign(_present=_present(finals, keys).to_numpy())
    keyed = keyed.dropna(subset=[names.TASK_LABEL, names.GAP])
    chosen = {}
    for (task, label), config in keyed.groupby(PANEL, sort=True):
        with_data = config[config["_present"]]
        if with_data.empty:
            continue
        gap = with_data[names.GAP].max()
        chosen[(str(task), str(label))] = config[config[names.GAP] == gap].drop(
            columns="_present"
        )
    return chosen


def grad_norm_plan(runs: pd.DataFrame, finals: pd.DataFrame) -> dict[str, list[str]]:
    """Histories the grad-norm figure needs: grad_norm_pre_clip of the top-gap runs."""
    chosen = _top_gap_runs(runs, finals, [names.GRAD_NORM_PRE_CLIP])
    return {rid: [names.GRAD_NORM_PRE_CLIP] for config in chosen.values()
            for rid in config[RUN_ID]}


def _layer_keys(finals: pd.DataFrame, run_ids: Sequence[str], blocks: Sequence[str],
                layer: int) -> list[str]:
    keys = [names.block_key(names.SPECTRAL_RADIUS, layer, b) for b in blocks]
    rows = finals[finals[RUN_ID].isin(list(run_ids))]
    return [k for k in keys if k in rows.columns and rows[k].notna().any()]


def spectral_layers(runs: pd.DataFrame, finals: pd.DataFrame) -> dict[tuple[str, str], int]:
    """Per (task, label) with spectral radii: its last layer (layers are numbered from 0)."""
    all_keys = _spectral_keys(finals)
    layers = {}
    for panel, config in _top_gap_runs(runs, finals, all_keys).items():
        blocks = _blocks(config)
        last = -1
        for layer in itertools.count():
            if not _layer_keys(finals, config[RUN_ID].tolist(), blocks, layer):
                break
            last = layer
        if last >= 0:
            layers[panel] = last
    return layers


def _spectral_keys(finals: pd.DataFrame) -> list[str]:
    """Every spectral-radius key any model could have logged, up to the deepest layer seen."""
    return [names.block_key(names.SPECTRAL_RADIUS, layer, block)
            for layer in range(_max_layer_in(finals) + 1)
            for blocks in GATE_BLOCKS.values() for block in blocks]


def _max_layer_in(finals: pd.DataFrame) -> int:
    """The deepest layer number in `finals`' spectral-radius keys (-1 if none), by probing."""
    blocks = sorted({b for bs in GATE_BLOCKS.values() for b in bs})
    top = -1
    for layer in itertools.count():
        keys = [names.block_key(names.SPECTRAL_RADIUS, layer, b) for b in blocks]
        if not any(k in finals.columns for k in keys):
            return top
        top = layer


def _blocks(config: pd.DataFrame) -> tuple[str, ...]:
    models = config[names.MODEL].dropna().unique()
    return GATE_BLOCKS.get(str(models[0]), ()) if len(models) == 1 else ()


def spectral_plan(runs: pd.DataFrame, finals: pd.DataFrame) -> dict[str, list[str]]:
    """Histories the spectral figure needs: every gate block of the last layer, top gap."""
    layers = spectral_layers(runs, finals)
    all_keys = _spectral_keys(finals)
    plan: dict[str, list[str]] = {}
    for panel, config in _top_gap_runs(runs, finals, all_keys).items():
        if panel not in layers:
            continue
        keys = [names.block_key(names.SPECTRAL_RADIUS, layers[panel], b)
                for b in _blocks(config)]
        for rid in config[RUN_ID]:
            plan.setdefault(rid, []).extend(keys)
    return plan


# --- grad norm over training, clip rate per threshold ------------------------------------------


def grad_norm_table(runs: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """grad_norm_pre_clip history of the runs in `histories`, finite positive values only."""
    data = histories[histories[KEY] == names.GRAD_NORM_PRE_CLIP]
    data = data[finite(data[VALUE]) & (data[VALUE] > 0)]
    keys = [RUN_ID, names.TASK_LABEL, LABEL, names.GAP, names.SEED, RUN_NAME, names.CLIP_MODE,
            names.CLIP_THRESHOLD]
    data = data.merge(runs[keys], on=RUN_ID, how="inner")
    data = data.rename(columns={VALUE: names.GRAD_NORM_PRE_CLIP})
    by = [names.TASK_LABEL, LABEL, names.GAP, names.SEED, RUN_NAME, STEP]
    return _sorted(data, GRAD_NORM_COLUMNS, by)


def clip_points(runs: pd.DataFrame) -> pd.DataFrame:
    """Final clip_rate_total of the clipped runs, at each (task, clip mode)'s largest gap."""
    data = runs[(runs[names.CLIP_MODE].fillna(NO_CLIP) != NO_CLIP)
                & finite(runs[names.CLIP_RATE_TOTAL])]
    data = data.dropna(subset=[names.TASK_LABEL, names.GAP, names.CLIP_THRESHOLD])
    if data.empty:
        return data.assign(**{MODEL_ACTIVATION: pd.Series(dtype=str)})
    top = data.groupby([names.TASK_LABEL, names.CLIP_MODE])[names.GAP].transform("max")
    data = data[data[names.GAP] == top]
    model_act = data[names.MODEL].astype(str) + "-" + data[names.ACTIVATION].astype(str)
    return data.assign(**{MODEL_ACTIVATION: model_act}).reset_index(drop=True)


def clip_rate_table(points: pd.DataFrame) -> pd.DataFrame:
    """Per (task, clip mode, gap, model-activation, threshold): mean, std, n of the clip rate."""
    group = [names.TASK_LABEL, names.CLIP_MODE, names.GAP, MODEL_ACTIVATION, LABEL,
             names.CLIP_THRESHOLD]
    if points.empty:
        return pd.DataFrame(columns=CLIP_RATE_COLUMNS)
    table = points.groupby(group, sort=True)[names.CLIP_RATE_TOTAL].agg(
        ["mean", "std", "count"]).reset_index()
    table.columns = [*group, CLIP_RATE_MEAN, CLIP_RATE_STD, N_SEEDS]
    return _sorted(table, CLIP_RATE_COLUMNS, group)


# --- spectral radius over training ------------------------------------------------------------


def spectral_table(runs: pd.DataFrame, finals: pd.DataFrame,
                   histories: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of each gate block's spectral radius per step, last layer."""
    layers = spectral_layers(runs, finals)
    rows = []
    keyed = histories.merge(runs[[RUN_ID, *PANEL, names.GAP, names.MODEL]], on=RUN_ID)
    keyed = keyed[finite(keyed[VALUE])]
    for (task, label), panel in keyed.groupby(PANEL, sort=True):
        layer = layers.get((str(task), str(label)))
        if layer is None:
            continue
        for block in _blocks(panel):
            key = names.block_key(names.SPECTRAL_RADIUS, layer, block)
            at_key = panel[panel[KEY] == key]
            for (gap, step), values in at_key.groupby([names.GAP, STEP], sort=True):
                rows.append({names.TASK_LABEL: task, LABEL: label, names.GAP: int(gap),
                             LAYER: layer, BLOCK: block, STEP: int(step),
                             SR_MEAN: values[VALUE].mean(), SR_STD: values[VALUE].std(),
                             N_RUNS: values[RUN_ID].nunique()})
    if not rows:
        return pd.DataFrame(columns=SPECTRAL_COLUMNS)
    # Blocks keep the order of GATE_BLOCKS (i, f, g, o), not alphabetical order.
    return pd.DataFrame(rows, columns=SPECTRAL_COLUMNS)


# --- the section's text -----------------------------------------------------------------------

REACH_TEXT = f"{names.REACH_FRACTION:.0e}".replace("e-0", "e-")  # 1e-06 -> 1e-6
DECAY_SENTENCE = (
    f"{names.GRAD_DECAY_RATE} is the least-squares slope of ln‖∂L/∂h_t‖ per time step of lag "
    "on the last layer (negative: the gradient vanishes going back in time; positive: it "
    f"explodes); {names.GRAD_HALF_LIFE} = ln 2 / −rate is the number of steps over which it "
    f"halves (blank when the final rate is not negative); {names.GRAD_REACH} is how many steps "
    f"back the gradient is still ≥ {REACH_TEXT} of its peak. Mean ± sample std "
    "over seeds of each run's last logged value; n counts the runs."
)


