"""The report's frontier section: each configuration's largest gap held, from frontier sweeps.

A frontier sweep (`hydra/sweeper=frontier`, docs/frontier.md) logs on its parent run the
table `names.FRONTIER_ARTIFACT` (one row per configuration: the largest gap held by m of n
seeds, k of n, the first gap not held, the censored gaps, every probed level's per-seed
outcomes, runs used and the full grid's runs), `names.FRONTIER_PROBES_ARTIFACT` (one row per
probe, with its run id) and the tag `names.FRONTIER_RULE` (the decision rule in words).

`load_frontiers` reads them from every parent run of the experiment. When several frontier
sweeps answered for the same (task, configuration, lr), the newest parent run's row is kept;
the `sweep` column says which sweep each row came from. A row's task and configuration label
are the report's own (`task_label`, `label` of the runs its probes point at), so the frontier
and the other sections name a configuration alike; without usable run ids the frontier's own
`task` and `configuration` are used.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness import names
from harness.report import tables
from harness.report.load import (
    LABEL,
    RUN_ID,
    RUN_NAME,
    Sweep,
    artifact_csvs,
)

# in the report folder: the merged table below (not frontier.csv: that is the sweep artifact,
# names.FRONTIER_ARTIFACT, whose columns differ)
FRONTIER_CSV = "frontier_table.csv"
FORMER_CSV = "frontier.csv"  # FRONTIER_CSV's name until 2026-12: a rebuild removes it
FRONTIER_PNG = "frontier.png"

# The artifact's columns (names.FRONTIER_COLUMNS), read by name.
_CONFIGURATION, _TASK, LR = "configuration", "task", "lr"
GAP_HELD, HELD_SOLVED, HELD_SEEDS = "gap_held", "held_solved", "held_seeds"
GAP_FAILED, _CENSORED_GAPS, _PROBES = "gap_failed", "censored_gaps", "probes"
_RUNS, _GRID_RUNS = "runs", "grid_runs"
# The fit of P(solved) on ln gap (harness.frontier.solve_curve); absent from older tables.
_P50_GAP, _P50_LOW, _P50_HIGH = "p50_gap", "p50_low", "p50_high"
OPTIONAL = (_P50_GAP, _P50_LOW, _P50_HIGH)
REQUIRED = tuple(c for c in names.FRONTIER_COLUMNS if c not in OPTIONAL)
# The probes artifact's columns (names.FRONTIER_PROBE_COLUMNS) this module reads.
_P_GAP, _P_SEED, _P_STATUS, _P_END_STATE, _P_OUTCOME, _P_RUN_ID = (
    "gap", "seed", "status", "end_state", "outcome", "run_id")
for _column in (_CONFIGURATION, _TASK, LR, GAP_HELD, HELD_SOLVED, HELD_SEEDS, GAP_FAILED,
                _CENSORED_GAPS, _PROBES, _RUNS, _GRID_RUNS, *OPTIONAL):
    if _column not in names.FRONTIER_COLUMNS:
        raise ImportError(f"{names.FRONTIER_ARTIFACT} has no column {_column!r}")
for _column in (_CONFIGURATION, LR, _P_GAP, _P_SEED, _P_STATUS, _P_END_STATE, _P_OUTCOME,
                _P_RUN_ID):
    if _column not in names.FRONTIER_PROBE_COLUMNS:
        raise ImportError(f"{names.FRONTIER_PROBES_ARTIFACT} has no column {_column!r}")

# A probe's outcome (harness.frontier: SOLVED, FAILED, UNDECIDED), by its letter in `probes`.
SOLVED, FAILED, UNDECIDED = "solved", "failed", "undecided"
LETTERS = {"S": SOLVED, "F": FAILED, "U": UNDECIDED}
# What stopped the search above gap_held (the report's column `above`).
ABOVE_FAILED, ABOVE_CENSORED, ABOVE_BEYOND = "failed", "censored", "beyond the ladder"
# Why an undecided probe is undecided (docs/frontier.md, "Censoring").
IMPROVING_TEXT = "still improving at the budget's end"
JOB_FAILED_TEXT = "job failed"

# Columns of the report's FRONTIER_CSV, one row per (task, configuration, lr).
OVERRIDES = "overrides"  # the frontier's `configuration`: the non-gap overrides
ABOVE = "above"  # ABOVE_FAILED / ABOVE_CENSORED / ABOVE_BEYOND
CENSORED_WHY = "censored_why"  # why gap_failed is censored ("" unless it is)
SWEEP = "sweep"  # the run name of the parent run the row came from
SWEEP_RUN_ID = "sweep_run_id"
COLUMNS = (names.TASK_LABEL, LABEL, OVERRIDES, LR, GAP_HELD, HELD_SOLVED, HELD_SEEDS,
           GAP_FAILED, ABOVE, CENSORED_WHY, _CENSORED_GAPS, _PROBES, _RUNS, _GRID_RUNS,
           _P50_GAP, _P50_LOW, _P50_HIGH, SWEEP, SWEEP_RUN_ID)
# One row per probed (row, gap, seed) at the row's lr, from `probes`: what the figure draws.
SEED = "seed"
OUTCOME = "outcome"
GAP = "gap"
LEVEL_COLUMNS = (names.TASK_LABEL, LABEL, GAP, SEED, OUTCOME)
# One row per probe run of a row at the row's lr, from the probes artifact: which run it was.
PROBE_RUN_COLUMNS = (*LEVEL_COLUMNS, RUN_ID)


@dataclass(frozen=True)
class Frontiers:
    """The experiment's frontiers: `table` (COLUMNS), `levels` (LEVEL_COLUMNS) and the decision
    rule of each sweep the rows came from, as (sweep run name, rule text), oldest first.
    `probe_runs` (PROBE_RUN_COLUMNS) names the run of each probe of a row whose sweep logged
    its probes artifact; rows of sweeps without it have none."""

    table: pd.DataFrame
    levels: pd.DataFrame
    rules: tuple[tuple[str, str], ...]
    n_sweeps: int  # frontier sweeps (parent runs with a readable frontier.csv) found
    probe_runs: pd.DataFrame

    @property
    def empty(self) -> bool:
        return self.table.empty


def no_frontiers() -> Frontiers:
    """An experiment without a frontier sweep: empty tables."""
    return Frontiers(pd.DataFrame(columns=list(COLUMNS)),
                     pd.DataFrame(columns=list(LEVEL_COLUMNS)), (), 0,
                     pd.DataFrame(columns=list(PROBE_RUN_COLUMNS)))


def missing(value: object) -> bool:
    """None, pandas' NA or NaN: how an empty cell can arrive (Int64 columns give NA in the
    process that built them and None after crossing to a figure worker)."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def as_number(value: object) -> float | None:
    """A cell read back from a CSV as a float; None when it is empty or not a number."""
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return None if pd.isna(number) else float(number)


def as_int(value: object) -> int | None:
    """A cell as a whole number (a gap, a count), rounded; None when empty or not finite."""
    number = as_number(value)
    return None if number is None or not math.isfinite(number) else int(round(number))


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _gap_list(value: object) -> list[int]:
    """`censored_gaps` as ints: "20 40" -> [20, 40]; a lone "20" reads back as 20 or 20.0."""
    text = _text(value)
    gaps = (as_int(part) for part in text.split())
    return [g for g in gaps if g is not None]


def parse_probes(text: object) -> list[tuple[int, int, str]]:
    """`5:SS 10:SSF` -> [(gap, seed, outcome)]: seeds in order from 0, S/F/U as outcomes."""
    out = []
    for token in _text(text).split():
        gap_text, _, letters = token.partition(":")
        gap = as_int(gap_text)
        if gap is None:
            continue
        out += [(gap, seed, LETTERS[letter]) for seed, letter in enumerate(letters)
                if letter in LETTERS]
    return out


def _same_lr(values: pd.Series, lr: float | None) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    if lr is None:
        return numbers.isna()
    return pd.Series(np.isclose(numbers.to_numpy(), lr, rtol=1e-9, atol=0.0), index=values.index)


def most_common(values: pd.Series) -> str | None:
    """The most frequent value as text (the first in sort order on a tie); None if none."""
    counts = Counter(str(v) for v in values.dropna())
    if not counts:
        return None
    top = max(counts.values())
    return sorted(v for v, n in counts.items() if n == top)[0]


def _censored_why(probes: pd.DataFrame | None, gap: int | None) -> str:
    """Why the probes at `gap` left it undecided: still improving, or their job failed."""
    if probes is None or gap is None:
        return ""
    at = probes[(pd.to_numeric(probes[_P_GAP], errors="coerce") == gap)
                & (probes[_P_OUTCOME].astype(str) == UNDECIDED)]
    reasons = {IMPROVING_TEXT if str(e) == names.IMPROVING else JOB_FAILED_TEXT
               for e in at[_P_END_STATE].fillna("")}
    return " / ".join(sorted(reasons))


Probe = tuple[int, int, str, str]  # (gap, seed, outcome, run id) of one probe run


def _probe_list(mine: pd.DataFrame | None) -> list[Probe]:
    if mine is None:
        return []
    out = []
    for record in mine.to_dict("records"):
        gap, seed = as_int(record[_P_GAP]), as_int(record[_P_SEED])
        if gap is not None and seed is not None and not missing(record[_P_RUN_ID]):
            out.append((gap, seed, _text(record[_P_OUTCOME]), str(record[_P_RUN_ID])))
    return out


def _rows(frontier: pd.DataFrame, probes: pd.DataFrame | None, runs: pd.DataFrame,
          parent: dict[str, object]) -> list[tuple[dict[str, object], list[Probe]]]:
    """The report's rows of one parent run's frontier.csv, each with its probe runs."""
    rows = []
    for record in frontier.to_dict("records"):
        overrides = _text(record[_CONFIGURATION])
        lr = as_number(record[LR])
        mine = None
        if probes is not None:
            mine = probes[(probes[_CONFIGURATION].astype(str) == overrides)
                          & _same_lr(probes[LR], lr)]
        # the report's task label and configuration label of the runs this row's probes made
        ids = set() if mine is None else {str(r) for r in mine[_P_RUN_ID].dropna()}
        matched = runs[runs[RUN_ID].isin(ids)]
        task = most_common(matched[names.TASK_LABEL]) or _text(record[_TASK])
        label = most_common(matched[LABEL]) or overrides
        held, failed = as_int(record[GAP_HELD]), as_int(record[GAP_FAILED])
        censored = _gap_list(record[_CENSORED_GAPS])
        if failed is None:
            above = ABOVE_BEYOND
        else:
            above = ABOVE_CENSORED if failed in censored else ABOVE_FAILED
        rows.append(({
            names.TASK_LABEL: task, LABEL: label, OVERRIDES: overrides, LR: lr,
            GAP_HELD: held, HELD_SOLVED: as_int(record[HELD_SOLVED]),
            HELD_SEEDS: as_int(record[HELD_SEEDS]), GAP_FAILED: failed, ABOVE: above,
            CENSORED_WHY: _censored_why(mine, failed) if above == ABOVE_CENSORED else "",
            _CENSORED_GAPS: " ".join(map(str, censored)), _PROBES: _text(record[_PROBES]),
            _RUNS: as_int(record[_RUNS]), _GRID_RUNS: as_int(record[_GRID_RUNS]),
            **{c: as_number(record.get(c)) for c in OPTIONAL},
            SWEEP: str(parent[RUN_NAME]), SWEEP_RUN_ID: str(parent[RUN_ID]),
        }, _probe_list(mine)))
    return rows


def _lr_key(lr: object) -> str:
    return "" if lr is None or lr != lr else f"{float(lr):.9g}"  # type: ignore[arg-type]


def load_frontiers(sweep: Sweep, tracking_uri: str) -> Frontiers:
    """Every frontier of the experiment's sweep parent runs (module docstring); empty when no
    parent run has a readable frontier.csv with the expected columns."""
    parents = sweep.sweeps
    if parents.empty:
        return no_frontiers()
    found = [(rid, frame) for rid, frame in
             artifact_csvs(parents, names.FRONTIER_ARTIFACT, tracking_uri)
             if set(REQUIRED) <= set(frame.columns)]
    if not found:
        return no_frontiers()
    with_table = parents[parents[RUN_ID].isin({rid for rid, _ in found})]
    probes = {rid: frame for rid, frame in
              artifact_csvs(with_table, names.FRONTIER_PROBES_ARTIFACT, tracking_uri)
              if set(names.FRONTIER_PROBE_COLUMNS) <= set(frame.columns)}
    by_id = {str(p[RUN_ID]): p for p in with_table.to_dict("records")}
    # `sweeps` is oldest first (start time, name, id): a later row replaces an earlier one.
    order = {rid: i for i, rid in enumerate(parents[RUN_ID].astype(str))}
    newest: dict[tuple[str, str, str], tuple[dict[str, object], list[Probe]]] = {}
    for rid, frame in sorted(found, key=lambda pair: order[pair[0]]):
        for row, row_probes in _rows(frame, probes.get(rid), sweep.runs, by_id[rid]):
            key = (str(row[names.TASK_LABEL]), str(row[OVERRIDES]), _lr_key(row[LR]))
            newest[key] = (row, row_probes)
    table = pd.DataFrame([row for row, _ in newest.values()], columns=list(COLUMNS))
    # the same label twice on a task (e.g. two lrs the label does not name): say the lr
    twice = table.duplicated([names.TASK_LABEL, LABEL], keep=False)
    table.loc[twice, LABEL] = [f"{lab} (lr {lr:g})" if lr == lr and lr is not None else lab
                               for lab, lr in zip(table.loc[twice, LABEL],
                                                  table.loc[twice, LR], strict=True)]
    probe_runs = pd.DataFrame(
        [(task, label, *probe) for task, label, (_, row_probes) in
         zip(table[names.TASK_LABEL], table[LABEL], newest.values(), strict=True)
         for probe in row_probes], columns=list(PROBE_RUN_COLUMNS))
    probe_runs = probe_runs.sort_values(list(PROBE_RUN_COLUMNS), kind="mergesort")
    table = table.sort_values([names.TASK_LABEL, LABEL, OVERRIDES], kind="mergesort")
    table = table.reset_index(drop=True)
    for column in (GAP_HELD, HELD_SOLVED, HELD_SEEDS, GAP_FAILED, _RUNS, _GRID_RUNS):
        table[column] = table[column].astype("Int64")
    levels = pd.DataFrame(
        [(row[names.TASK_LABEL], row[LABEL], gap, seed, outcome)
         for row in table.to_dict("records") for gap, seed, outcome in parse_probes(row[_PROBES])],
        columns=list(LEVEL_COLUMNS))
    used = [rid for rid in parents[RUN_ID].astype(str) if rid in set(table[SWEEP_RUN_ID])]
    rules = tuple((str(by_id[rid][RUN_NAME]), _text(by_id[rid][names.FRONTIER_RULE]))
                  for rid in used)
    return Frontiers(table, levels, rules, len(found), probe_runs.reset_index(drop=True))


# --- words ---------------------------------------------------------------------------------


def seeds_text(row: dict[str, object]) -> str:
    """`2/3 seeds`: the seeds that solved the gap held, of those that ran there."""
    n = row[HELD_SEEDS]
    return f"{row[HELD_SOLVED]}/{n} seed{'' if not missing(n) and n == 1 else 's'}"


def held_text(row: dict[str, object]) -> str:
    """`80 (3/3 seeds)`, or `none` when not even the lowest rung held (the frontier table's
    columns, and those of every answer of `harness.report.held`)."""
    held = row[GAP_HELD]
    if missing(held):
        return tables.NONE
    return f"{int(held):,} ({seeds_text(row)})"  # type: ignore[call-overload]


def above_text(row: dict[str, object]) -> str:
    """`160 failed`, `20 censored (still improving at the budget's end)`, `beyond the ladder`."""
    if row[ABOVE] == ABOVE_BEYOND:
        return f"{ABOVE_BEYOND} (its top gap held)"
    text = f"{int(row[GAP_FAILED]):,} {row[ABOVE]}"  # type: ignore[arg-type]
    return f"{text} ({row[CENSORED_WHY]})" if row[CENSORED_WHY] else text


DISPLAY_HEADER = ("task", "configuration", "overrides", "lr", "gap held (k/n seeds)",
                  "first gap not held", "censored gaps", "P(solved) = 0.5 at gap (95% bootstrap)",
                  "runs used (of the full grid)", "sweep")


def p50_text(row: dict[str, object]) -> str:
    """`22.1 (15.4-30.9)`, or `-` where the fit is undefined (docs/frontier.md)."""
    gap, low, high = (row.get(c) for c in OPTIONAL)
    if gap is None or gap != gap:
        return "-"
    band = "" if low is None or low != low or high is None or high != high else (
        f" ({low:.3g}-{high:.3g})")
    return f"{gap:.3g}{band}"


def display_rows(frontiers: Frontiers) -> list[list[str]]:
    """The frontier table as display strings, in the order of DISPLAY_HEADER."""
    out = []
    for row in frontiers.table.to_dict("records"):
        lr = row[LR]
        runs, grid = row[_RUNS], row[_GRID_RUNS]
        out.append([
            str(row[names.TASK_LABEL]), str(row[LABEL]), str(row[OVERRIDES]),
            "" if lr is None or lr != lr else f"{lr:g}", held_text(row), above_text(row),
            str(row[_CENSORED_GAPS]) or "-", p50_text(row),
            f"{runs} of {grid}" if not missing(runs) and not missing(grid) else "-",
            str(row[SWEEP]),
        ])
    return out


def source_text(frontiers: Frontiers) -> str:
    """Which sweep(s) the rows came from."""
    used = [name for name, _ in frontiers.rules]
    if frontiers.n_sweeps <= 1 or len(used) == 1:
        extra = (f" (the newest of {frontiers.n_sweeps} frontier sweeps answered for every "
                 "row)" if frontiers.n_sweeps > 1 else "")
        return f"From frontier sweep {used[0]}{extra}."
    return (f"Combined from {len(used)} of {frontiers.n_sweeps} frontier sweeps "
            f"({', '.join(used)}): for each task, configuration and lr the newest sweep's "
            "answer; the sweep column says which.")


def rule_text(frontiers: Frontiers) -> str:
    """The decision rule(s), from each sweep's `frontier_rule` tag."""
    rules = [(name, rule) for name, rule in frontiers.rules]
    distinct = sorted({rule for _, rule in rules})
    if not any(distinct):
        return f"The sweep run carries no {names.FRONTIER_RULE} tag: decision rule unknown."
    if len(distinct) == 1:
        return f"Decision rule: {distinct[0]}."
    return "Decision rules: " + "; ".join(
        f"{name}: {rule or 'no ' + names.FRONTIER_RULE + ' tag'}" for name, rule in rules) + "."


FIGURE_TITLE = "Gap frontier per configuration"
FIGURE_SENTENCE = (
    "One row per configuration (as the rows beside it), one panel per task, gap on a log "
    "axis: every probed gap with its seeds' outcomes at the configuration's lr (seed 0 on "
    "top; filled circle: solved; cross: failed; hollow square: undecided, i.e. censored: "
    "still improving at the budget's end, or the job failed); the bar runs up to the largest "
    "gap held.")
MEANING = (
    "A gap is *held* when enough seeds solved it under the sweep's decision rule (below); "
    "*censored* "
    "levels hinge on undecided runs (a budget limit, not evidence of failure); *beyond the "
    "ladder*: the top gap of the ladder held, so the frontier lies above it. The probes are "
    "ordinary runs: they also appear in every other section, with uneven seed counts per gap "
    "(the search adds seeds only while a level is undecided).")


