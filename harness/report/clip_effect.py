"""What clipping did, measured: per task and model run with clipping, one row per
(configuration, threshold), no clipping included where it ran, with the share of training steps
where clipping fired (`clip_rate_total`), the largest gradient norm before clipping of each
run (`grad_norm_pre_clip_max`), the runs that diverged, and the gap held (`harness.report.held`,
by the rule it was decided by) against the same model without clipping.

Each clipped row also gets one sentence, which says whether clipping acted at all: a threshold
that never fired (clip rate 0 in every run, the largest pre-clip norm below it) cannot have
changed anything, whatever the gaps held say.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from harness import names
from harness.report import configs, held, tables
from harness.report import frontier as frontier_
from harness.report.columns import CLIP_SETTING, LABEL, NO_CLIP_SETTING

CLIPPING_CSV = "clipping.csv"
# Columns of CLIPPING_CSV, one row per (task, configuration) of a model run at several settings.
RUNS = "runs"  # result runs
RATE_MEAN, RATE_MIN, RATE_MAX, RATE_N = (f"{names.CLIP_RATE_TOTAL}_{s}"
                                         for s in ("mean", "min", "max", "n"))
# over the runs that did not diverge: a run that diverges stops before its diverging step's
# norm enters its maximum (harness/loop.py), so its maximum says nothing of the explosion
NORM_MIN, NORM_MAX, NORM_N = (f"{names.GRAD_NORM_PRE_CLIP_MAX}_{s}" for s in ("min", "max", "n"))
DIVERGED, DIVERGED_STEP_MIN = "diverged", f"{names.DIVERGED_STEP}_min"
HELD_WITHOUT = "gap_held_without_clipping"
COLUMNS = (names.TASK_LABEL, LABEL, configs.NAME, configs.BARE_NAME, CLIP_SETTING,
           names.CLIP_MODE, names.CLIP_THRESHOLD, RUNS, RATE_MEAN, RATE_MIN, RATE_MAX, RATE_N,
           NORM_MIN, NORM_MAX, NORM_N, DIVERGED, DIVERGED_STEP_MIN,
           held.GAP_HELD, held.HELD_SOLVED, held.HELD_SEEDS, held.RULE, HELD_WITHOUT)
# MLflow's SQL store saves +-inf as +-float max: such a norm is not a measurement.
_FLOAT_MAX = float(np.finfo(float).max)


def _stats(runs: pd.DataFrame) -> dict[str, object]:
    """The clip rate, pre-clip norm and divergence columns of one configuration's runs."""
    results = runs[runs[names.STATUS].isin(tables.RESULT_STATUSES)]
    rate = pd.to_numeric(results[names.CLIP_RATE_TOTAL], errors="coerce").dropna()
    diverged = results[results[names.STATUS] == names.DIVERGED]
    norm = pd.to_numeric(results.loc[results[names.STATUS] != names.DIVERGED,
                                     names.GRAD_NORM_PRE_CLIP_MAX], errors="coerce").dropna()
    finite = norm[np.isfinite(norm) & (norm.abs() < _FLOAT_MAX)]
    steps = pd.to_numeric(diverged[names.DIVERGED_STEP], errors="coerce").dropna()
    return {RUNS: len(results),
            RATE_MEAN: rate.mean() if len(rate) else None,
            RATE_MIN: rate.min() if len(rate) else None,
            RATE_MAX: rate.max() if len(rate) else None, RATE_N: len(rate),
            NORM_MIN: finite.min() if len(finite) else None,
            NORM_MAX: finite.max() if len(finite) else None, NORM_N: len(finite),
            DIVERGED: len(diverged),
            DIVERGED_STEP_MIN: int(steps.min()) if len(steps) else None}


def clipping_table(runs: pd.DataFrame, answers: pd.DataFrame,
                   rules: Mapping[str, str]) -> pd.DataFrame:
    """COLUMNS: for each task and model (`configs.BARE_NAME`: the configuration without its
    clipping) that ran with clipping, every one of its configurations, no clipping first, then
    by mode and threshold; empty when nothing clipped. `answers` are `configs.named` rows of
    `held.held_table`."""
    first = runs.drop_duplicates([names.TASK_LABEL, LABEL]).set_index(
        [names.TASK_LABEL, LABEL])
    keys = list(zip(answers[names.TASK_LABEL], answers[LABEL], strict=True))
    known = [key in first.index for key in keys]
    mine = answers[known].copy()
    for column in (CLIP_SETTING, names.CLIP_MODE, names.CLIP_THRESHOLD):
        mine[column] = [first.loc[key, column] for key, ok in zip(keys, known, strict=True)
                        if ok]
    order = {s: i for i, s in enumerate(tables.clip_settings(runs))}
    rows = []
    for (task, _), group in mine.groupby([names.TASK_LABEL, configs.BARE_NAME], sort=True):
        if (group[CLIP_SETTING] == NO_CLIP_SETTING).all():
            continue
        base = group[group[CLIP_SETTING] == NO_CLIP_SETTING].to_dict("records")
        without = frontier_.held_text(base[0]) if len(base) == 1 else ""
        group = group.assign(_order=group[CLIP_SETTING].map(order)).sort_values(
            ["_order", configs.NAME], kind="mergesort")
        for row in group.to_dict("records"):
            at = runs[(runs[names.TASK_LABEL] == task) & (runs[LABEL] == row[LABEL])]
            clipped = row[CLIP_SETTING] != NO_CLIP_SETTING
            rows.append({**{c: row[c] for c in (names.TASK_LABEL, LABEL, configs.NAME,
                                                configs.BARE_NAME, CLIP_SETTING,
                                                names.CLIP_MODE, held.GAP_HELD,
                                                held.HELD_SOLVED, held.HELD_SEEDS)},
                         names.CLIP_THRESHOLD: row[names.CLIP_THRESHOLD] if clipped else None,
                         **_stats(at), held.RULE: held.rule_mark(row, rules),
                         HELD_WITHOUT: without if clipped else ""})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    for column in (held.GAP_HELD, held.HELD_SOLVED, held.HELD_SEEDS, DIVERGED_STEP_MIN):
        table[column] = table[column].astype("Int64")
    return table


# --- words -------------------------------------------------------------------------------

DISPLAY_HEADER = ("task", "model", "clipping", "runs", "clip rate: mean (range over runs)",
                  "largest pre-clip norm (range over the runs that did not diverge)",
                  "diverged", "gap held (seeds)", "rule", "gap held without clipping")


def _number(value: float) -> str:
    """A gradient norm: `0.31`, `46`, `1,024`."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2g}"


def _percent(value: object) -> str:
    """`48%`; below 1% two significant digits (`0.05%`), so a clip that fired never reads 0%."""
    share = 100 * float(value)  # type: ignore[arg-type]
    return f"{share:.2g}%" if 0 < share < 1 else f"{share:.0f}%"


def rate_text(row: dict[str, object]) -> str:
    """`65% (40-90%)`, `0% in all 8 runs`; `–` without clipping or where no run logged it."""
    if row[CLIP_SETTING] == NO_CLIP_SETTING or not row[RATE_N]:
        return "–"
    if row[RATE_MAX] == 0:
        return f"0% in all {row[RATE_N]} runs"
    spread = (f" ({_percent(row[RATE_MIN]).rstrip('%')}-{_percent(row[RATE_MAX])})"
              if row[RATE_MIN] != row[RATE_MAX] else "")
    return f"{_percent(row[RATE_MEAN])}{spread}"


def norm_text(row: dict[str, object]) -> str:
    """`50-3,200`, `0.3`; `–` where no run that did not diverge logged it."""
    if not row[NORM_N]:
        return "–"
    low, high = float(row[NORM_MIN]), float(row[NORM_MAX])  # type: ignore[arg-type]
    return _number(high) if low == high else f"{_number(low)}-{_number(high)}"


def diverged_text(row: dict[str, object]) -> str:
    """`3 of 3 (from step 1)`, `0 of 8`."""
    text = f"{row[DIVERGED]} of {row[RUNS]}"
    step = held.count(row[DIVERGED_STEP_MIN])
    return f"{text} (from step {step:,})" if row[DIVERGED] and step is not None else text


def display_rows(table: pd.DataFrame) -> list[list[str]]:
    """The table as display strings, in the order of DISPLAY_HEADER."""
    return [[str(r[names.TASK_LABEL]), str(r[configs.BARE_NAME]),
             "no clipping" if r[CLIP_SETTING] == NO_CLIP_SETTING else str(r[CLIP_SETTING]),
             str(r[RUNS]), rate_text(r), norm_text(r), diverged_text(r),
             frontier_.held_text(r), str(r[held.RULE]), str(r[HELD_WITHOUT]) or "–"]
            for r in table.to_dict("records")]


def _acted(row: dict[str, object]) -> str:
    """Whether clipping fired, in the row's own numbers."""
    if not row[RATE_N]:
        return "no run logged its clip rate"
    if row[RATE_MAX] == 0:
        below = ""
        if row[NORM_N] and not row[DIVERGED]:
            high, threshold = float(row[NORM_MAX]), float(row[names.CLIP_THRESHOLD])  # type: ignore[arg-type]
            below = (f": the largest pre-clip norm, {_number(high)}, stayed below the "
                     f"threshold {threshold:g}")
        return f"clipping never fired (clip rate 0 in all {row[RATE_N]} runs{below})"
    return (f"clipping fired on {rate_text(row)} of training steps; the largest pre-clip "
            f"norms of the runs that did not diverge: {norm_text(row)}")


def sentences(table: pd.DataFrame) -> list[str]:
    """One sentence per clipped row: whether clipping acted, divergence against no clipping,
    and the gap held against no clipping."""
    out = []
    for (task, bare), group in table.groupby([names.TASK_LABEL, configs.BARE_NAME], sort=False):
        base = group[group[CLIP_SETTING] == NO_CLIP_SETTING].to_dict("records")
        without = base[0] if len(base) == 1 else None
        for row in group[group[CLIP_SETTING] != NO_CLIP_SETTING].to_dict("records"):
            text = f"{bare} on {task}, {row[CLIP_SETTING]}: {_acted(row)}"
            text += f"; {diverged_text(row)} runs diverged"
            if without is not None:
                text += f" (without clipping {diverged_text(without)})"
                a, b = held.gap_rank(without), held.gap_rank(row)
                change = ("rose" if b > a else "fell" if b < a else "stayed") + (
                    f" from {frontier_.held_text(without)} to" if a != b else " at")
                text += (f"; the gap held {change} {frontier_.held_text(row)} (rule: "
                         f"{row[held.RULE]})")
            out.append(text + ".")
    return out


NO_CLIPPING_TEXT = "No configuration clipped its gradients (clip.mode none everywhere)."
