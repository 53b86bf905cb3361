"""Which gap each configuration holds: one answer per (task, configuration), by one rule, that
the headline, the findings, the largest-solved-gap table, the clipping section and the clipping
heatmaps all quote.

- Where a frontier sweep answered for the configuration (`harness.report.frontier`): its answer,
  by its rule (`RULE_FRONTIER`: a gap holds when m of n seeds solve it, the sweep's
  `frontier_rule` tag says m and n).
- Elsewhere (a grid sweep): the largest gap that every seed the configuration ran with solved
  (`RULE_EVERY_SEED`; a re-run of a (gap, seed) counts as solved only if every run of it did).

Either way the row says what stopped it at the first gap above the one held (the lowest gap
when none held): `failed`, `censored` (the verdict hinges on runs still improving at the
budget's end, or on jobs that failed: "not yet", never "cannot"), `diverged` (every seed there
that did not solve diverged) or `top` (no gap above it was run: the frontier lies beyond).

The runs of a frontier sweep that no frontier row answers for are the learning-rate choice's
probes at the rates it did not choose (`frontier.lrs`): they are part of that choice, not
configurations of their own, and get no row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import pandas as pd

from harness import names
from harness.report import frontier as frontier_
from harness.report import tables
from harness.report.columns import LABEL, RUN_ID
from harness.report.configs import NAME
from harness.report.frontier import GAP_FAILED, GAP_HELD, HELD_SEEDS, HELD_SOLVED

RULE = "rule"
RULE_FRONTIER, RULE_EVERY_SEED = "frontier", "every seed"
# What stopped a configuration above its gap held (column STOPPED).
FAILED, CENSORED, DIVERGED, TOP = "failed", "censored", "diverged", "top"
STOPPED, GAP_STOPPED = "stopped", "gap_stopped"
STOPPED_SOLVED, STOPPED_SEEDS = "stopped_solved", "stopped_seeds"  # at GAP_STOPPED
STOPPED_WHY = "stopped_why"  # censored: why; diverged: at which step
LR = frontier_.LR  # the frontier's lr; empty for the every-seed rule (the runs' lr)
SWEEP = frontier_.SWEEP  # the frontier sweep that answered ("" for the every-seed rule)
COLUMNS = (names.TASK_LABEL, LABEL, RULE, LR, GAP_HELD, HELD_SOLVED, HELD_SEEDS, STOPPED,
           GAP_STOPPED, STOPPED_SOLVED, STOPPED_SEEDS, STOPPED_WHY, SWEEP)
_COUNTS = (GAP_HELD, HELD_SOLVED, HELD_SEEDS, GAP_STOPPED, STOPPED_SOLVED, STOPPED_SEEDS)


def _diverged_why(runs: pd.DataFrame) -> str:
    """`at step 1`, `at steps 1-40` over the diverged runs that logged their step; "" if none."""
    if names.DIVERGED_STEP not in runs.columns:
        return ""
    steps = sorted({int(s) for s in pd.to_numeric(runs[names.DIVERGED_STEP],
                                                  errors="coerce").dropna()})
    if not steps:
        return ""
    return f"at step {steps[0]:,}" if len(steps) == 1 else f"at steps {steps[0]:,}-{steps[-1]:,}"


def _kind(unsolved: pd.DataFrame) -> tuple[str, str]:
    """(what stopped it, why) from the runs at a gap that did not solve it."""
    status = unsolved[names.STATUS]
    end = (unsolved[names.END_STATE].astype("string").fillna("") if names.END_STATE
           in unsolved.columns else pd.Series("", index=unsolved.index))
    diverged = status == names.DIVERGED
    undecided = ~status.isin(tables.RESULT_STATUSES) | ((status == names.UNSOLVED)
                                                 & (end == names.IMPROVING))
    if len(unsolved) and diverged.all():
        return DIVERGED, _diverged_why(unsolved)
    if (~diverged & ~undecided).any() or diverged.any():
        return FAILED, ""
    reasons = {frontier_.IMPROVING_TEXT if s == names.UNSOLVED else frontier_.JOB_FAILED_TEXT
               for s in status}
    return CENSORED, " / ".join(sorted(reasons)) or "not every seed ran at it"


def every_seed(group: pd.DataFrame) -> dict[str, object]:
    """The every-seed answer of one configuration's runs on one task (COLUMNS' counts)."""
    keyed = group.dropna(subset=[names.GAP, names.SEED])
    seeds = set(keyed[names.SEED].astype(int))
    solved = (keyed[names.STATUS] == names.SOLVED).groupby(
        [keyed[names.GAP].astype(int), keyed[names.SEED].astype(int)]).all()
    per_gap = solved.groupby(level=0).agg(["sum", "count"])
    held = [int(g) for g, row in per_gap.iterrows() if row["sum"] == row["count"] == len(seeds)]
    gap = max(held) if held else None
    above = [int(g) for g in per_gap.index if gap is None or g > gap]
    out: dict[str, object] = {GAP_HELD: gap, HELD_SOLVED: len(seeds) if held else None,
                              HELD_SEEDS: len(seeds) if held else None}
    if not above:
        return out | {STOPPED: TOP, STOPPED_WHY: ""}
    nxt = min(above)
    at = keyed[keyed[names.GAP].astype(int) == nxt]
    stopped, why = _kind(at[at[names.STATUS] != names.SOLVED])
    return out | {STOPPED: stopped, GAP_STOPPED: nxt, STOPPED_WHY: why,
                  STOPPED_SOLVED: int(per_gap.loc[nxt, "sum"]),
                  STOPPED_SEEDS: int(per_gap.loc[nxt, "count"])}


def _frontier_row(row: dict[str, object], fronts: frontier_.Frontiers,
                  runs: pd.DataFrame) -> dict[str, object]:
    """A frontier table row as an answer: `beyond the ladder` is `top`; a failed level whose
    every failed probe diverged is `diverged`."""
    out: dict[str, object] = {GAP_HELD: row[GAP_HELD], HELD_SOLVED: row[HELD_SOLVED],
                              HELD_SEEDS: row[HELD_SEEDS], LR: row[LR]}
    above = row[frontier_.ABOVE]
    if above == frontier_.ABOVE_BEYOND:
        return out | {STOPPED: TOP, STOPPED_WHY: ""}
    gap = int(row[GAP_FAILED])  # type: ignore[call-overload]
    levels = fronts.levels
    at = levels[(levels[names.TASK_LABEL] == row[names.TASK_LABEL])
                & (levels[LABEL] == row[LABEL]) & (levels[frontier_.GAP] == gap)]
    out |= {GAP_STOPPED: gap, STOPPED_SOLVED: int((at[frontier_.OUTCOME] == frontier_.SOLVED)
                                                  .sum()),
            STOPPED_SEEDS: len(at)}
    if above == frontier_.ABOVE_CENSORED:
        return out | {STOPPED: CENSORED, STOPPED_WHY: row[frontier_.CENSORED_WHY]}
    probes = fronts.probe_runs
    ids = probes[(probes[names.TASK_LABEL] == row[names.TASK_LABEL])
                 & (probes[LABEL] == row[LABEL]) & (probes[frontier_.GAP] == gap)
                 & (probes[frontier_.OUTCOME] == frontier_.FAILED)][RUN_ID]
    failed = runs[runs[RUN_ID].isin(set(ids))]
    if len(failed) and (failed[names.STATUS] == names.DIVERGED).all():
        return out | {STOPPED: DIVERGED, STOPPED_WHY: _diverged_why(failed)}
    return out | {STOPPED: FAILED, STOPPED_WHY: ""}


def held_table(runs: pd.DataFrame, fronts: frontier_.Frontiers) -> pd.DataFrame:
    """One answer per (task, configuration) (COLUMNS), in task and label order: the frontier
    rows, then every other configuration of the runs by the every-seed rule, but for the
    learning-rate choice's probes (module docstring)."""
    rows = []
    answered = set()
    for row in fronts.table.to_dict("records"):
        answered.add((str(row[names.TASK_LABEL]), str(row[LABEL])))
        rows.append({names.TASK_LABEL: str(row[names.TASK_LABEL]), LABEL: str(row[LABEL]),
                     RULE: RULE_FRONTIER, SWEEP: str(row[SWEEP]),
                     **_frontier_row(row, fronts, runs)})
    frontier_sweeps = set(fronts.table[frontier_.SWEEP_RUN_ID].astype(str))
    sweep_ids = (runs[names.SWEEP_ID].astype("string").fillna("") if names.SWEEP_ID
                 in runs.columns else pd.Series("", index=runs.index))
    keyed = runs.dropna(subset=[names.TASK_LABEL])
    for (task, label), group in keyed.groupby([names.TASK_LABEL, LABEL], sort=True):
        if (str(task), str(label)) in answered:
            continue
        if frontier_sweeps and sweep_ids.loc[group.index].isin(frontier_sweeps).all():
            continue  # the lr choice's probes at a rate it did not choose
        rows.append({names.TASK_LABEL: str(task), LABEL: str(label), RULE: RULE_EVERY_SEED,
                     LR: None, SWEEP: "", **every_seed(group)})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    for column in _COUNTS:
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    table[LR] = pd.to_numeric(table[LR], errors="coerce").astype(float)
    table[STOPPED_WHY] = table[STOPPED_WHY].fillna("").astype(str)
    return table.sort_values([names.TASK_LABEL, LABEL], kind="mergesort").reset_index(drop=True)


def with_every_seed(answers: pd.DataFrame, every: pd.DataFrame,
                    rules: Mapping[str, str]) -> pd.DataFrame:
    """The largest-solved-gap table: per (task, label) of either frame, its plain name, the
    gap held with k/n seeds and the rule (`rule_mark`) from `answers` (`configs.named` rows),
    then `every` (`tables.largest_solved_gap`: the every-seed view), in task and label order.
    A label without an answer (the lr choice's probes) has empty answer cells."""
    mine = answers.assign(**{RULE: [rule_mark(r, rules) for r in answers.to_dict("records")]})
    mine = mine[[names.TASK_LABEL, LABEL, NAME, GAP_HELD, HELD_SOLVED, HELD_SEEDS, RULE]]
    # as objects, so a gap stays a whole number where a label has no every-seed row
    every = every.astype({c: object for c in every.columns})
    table = mine.merge(every, on=[names.TASK_LABEL, LABEL], how="outer", validate="one_to_one")
    return table.sort_values([names.TASK_LABEL, LABEL], kind="mergesort").reset_index(drop=True)


# --- words -------------------------------------------------------------------------------

EVERY_SEED_TEXT = "a gap holds when all the seeds the configuration ran with solved it"
TOP_TEXT = {RULE_FRONTIER: "the top of the ladder: the frontier lies beyond it",
            RULE_EVERY_SEED: "the largest gap run: what lies beyond is untested"}


def count(value: object) -> int | None:
    """A count cell of the table (a gap, seeds) as an int; None where it is empty."""
    return None if frontier_.missing(value) else int(value)  # type: ignore[call-overload]


def gap_rank(row: dict[str, object]) -> int:
    """The gap held as a number to compare: -1 where none held."""
    gap = count(row[GAP_HELD])
    return -1 if gap is None else gap


def ranked(answers: pd.DataFrame) -> pd.DataFrame:
    """Answers largest gap held first, then most seeds solving it, then by label (so that a
    model's unclipped configuration comes before its thresholds, in order)."""
    keys = answers.assign(_gap=[gap_rank(r) for r in answers.to_dict("records")],
                          _k=[count(k) or 0 for k in answers[HELD_SOLVED]])
    keys = keys.sort_values(["_gap", "_k", LABEL], ascending=[False, False, True],
                            kind="mergesort")
    return answers.loc[keys.index]


def stopped_text(row: dict[str, object]) -> str:
    """What stopped it: `gap 160 failed (0/3 seeds solved)`, `gap 20 censored: still
    improving at the budget's end (1/3 seeds solved)`, `gap 10 diverged (3/3 seeds, at step
    1)`, or the top of the ladder (of the gaps run)."""
    if row[STOPPED] == TOP:
        return TOP_TEXT[str(row[RULE])]
    gap, k, n = (count(row[c]) for c in (GAP_STOPPED, STOPPED_SOLVED, STOPPED_SEEDS))
    lowest = ", the lowest gap" if count(row[GAP_HELD]) is None else ""
    why = str(row[STOPPED_WHY])
    if row[STOPPED] == DIVERGED:
        seeds = f"{(n or 0) - (k or 0)}/{n} seeds" + (f", {why}" if why else "")
        return f"gap {gap:,} diverged ({seeds}){lowest}"
    text = f"gap {gap:,} {row[STOPPED]}" + (f": {why}" if why else "")
    return f"{text} ({k}/{n} seeds solved){lowest}"


def frontier_rule_text(tag: str) -> str:
    """The m-of-n part of a frontier sweep's `frontier_rule` tag: its first clause (`a gap
    holds when >= 2 of 3 seeds solve it (seeds added only while undecided)`)."""
    return tag.split(";")[0].strip()


# The m of n in a frontier sweep's `frontier_rule` tag (harness.frontier.Rule.describe).
_M_OF_N = re.compile(r">=\s*(\d+)\s+of\s+(\d+)\s+seeds?")


def rule_mark(row: dict[str, object], rules: Mapping[str, str]) -> str:
    """The rule of one answer in a word or two: `2 of 3 seeds`, `every seed`; a frontier
    whose tag says no m of n is named by its sweep."""
    if row[RULE] == RULE_EVERY_SEED:
        return RULE_EVERY_SEED
    found = _M_OF_N.search(rules.get(str(row[SWEEP]), ""))
    if found is None:
        return f"sweep {row[SWEEP]}"
    return f"{found.group(1)} of {found.group(2)} seed{'' if found.group(2) == '1' else 's'}"


def rule_text(row: dict[str, object], rules: Mapping[str, str]) -> str:
    """The rule one answer was decided by; `rules` maps a sweep's run name to its
    `frontier_rule` tag."""
    if row[RULE] == RULE_EVERY_SEED:
        return EVERY_SEED_TEXT
    tag = rules.get(str(row[SWEEP]), "")
    return (frontier_rule_text(tag) if tag
            else f"the frontier sweep's rule (it logged no {names.FRONTIER_RULE} tag)")
