"""The variable-gap frontier: how far each run held, from its final evaluation binned by gap.

A run of a task with variable gaps (`task.gap_min` set: every sequence draws its gap from
[gap_min, gap]) logs `names.EVAL_BY_GAP_ARTIFACT`: its final evaluation, one row per gap bin
(gap, sequences, eval_loss, eval_accuracy). One run thus gives a whole curve, but it answers
a question of its own (docs/frontier.md, "Two protocols"): trained on a mix of gaps, up to
which gap does it hold? Shorter gaps give a gradient signal early, like a curriculum, so this
is not the fixed-gap frontier, and the report says which one it shows.

Per run: the largest gap bin up to which **every** bin meets the run's success criterion (its
`success_criterion` tag: `eval accuracy >= 0.99`, or `eval loss / chance loss <= 0.06` with the
run's `chance_loss` metric; the chance loss of a bin is the run's, since on these tasks it
does not depend on the gap: copy's loss is averaged over the same L positions at every gap).
A run without a readable criterion or, for a loss criterion, a chance loss is left out and
counted. Per configuration (task, label, trained gap range), over seeds: the largest gap held
by every seed and the largest held by at least one, with k of n.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness import names
from harness.report import tables
from harness.report.load import LABEL, RUN_ID

VARIABLE_GAP_CSV = "variable_gap_frontier.csv"
ACCURACY, LOSS_RATIO = "accuracy", "loss_ratio"
_CRITERIA = {ACCURACY: re.compile(r"^\s*eval accuracy\s*>=\s*([0-9.eE+-]+)\s*$"),
             LOSS_RATIO: re.compile(r"^\s*eval loss\s*/\s*chance loss\s*<=\s*([0-9.eE+-]+)\s*$")}
# Columns of VARIABLE_GAP_CSV, one row per (task, label, trained range).
TRAINED = "trained_gaps"  # `1..60`
CRITERION = "criterion"
HELD_PER_SEED = "held_per_seed"  # in the order of `seeds`; `none` where no bin held
HELD_ALL, HELD_ANY, N_ANY = "held_by_every_seed", "held_by_one_seed", "seeds_held_any"
BINS, MIN_SEQUENCES = "bins", "min_sequences_per_bin"
COLUMNS = (names.TASK_LABEL, LABEL, TRAINED, CRITERION, tables.SEEDS, HELD_PER_SEED, HELD_ALL,
           HELD_ANY, N_ANY, tables.N_SEEDS, BINS, MIN_SEQUENCES)


def criterion(text: object) -> tuple[str, float] | None:
    """(measure, threshold) of a `success_criterion` tag, or None when it is not one."""
    if not isinstance(text, str):
        return None
    for measure, pattern in _CRITERIA.items():
        found = pattern.match(text)
        if found:
            try:
                return measure, float(found.group(1))
            except ValueError:
                return None
    return None


def held_gap(bins: pd.DataFrame, measure: str, threshold: float,
             chance_loss: float | None) -> int | None:
    """The largest gap up to which every bin of `bins` (EVAL_BY_GAP_COLUMNS) meets the rule;
    None when the smallest bin already fails (or there is no bin)."""
    ordered = bins.sort_values("gap")
    if measure == ACCURACY:
        met = ordered["eval_accuracy"].astype(float) >= threshold
    else:
        if chance_loss is None or not chance_loss > 0:
            return None
        met = ordered["eval_loss"].astype(float) / chance_loss <= threshold
    held = None
    for gap, ok in zip(ordered["gap"], met, strict=True):
        if not ok:
            break
        held = int(gap)
    return held


@dataclass(frozen=True)
class VariableGaps:
    """The per-configuration table (COLUMNS) and how many runs with bins were left out."""

    table: pd.DataFrame
    n_runs: int  # runs whose bins were used
    n_skipped: int  # runs with bins but no readable criterion or chance loss

    @property
    def empty(self) -> bool:
        return self.table.empty


def _gap_text(value: int | None) -> str:
    return tables.NONE if value is None else str(value)


def variable_gap_frontier(runs: pd.DataFrame, params: pd.DataFrame,
                          by_gap: pd.DataFrame) -> VariableGaps:
    """Each configuration's variable-gap frontier over seeds (module docstring).

    `params` is `Sweep.params` (for `task.gap_min`), `by_gap` is `load_eval_by_gap(runs)`.
    """
    if by_gap.empty:
        return VariableGaps(pd.DataFrame(columns=list(COLUMNS)), 0, 0)
    gap_min = (params.set_index(RUN_ID)[names.GAP_MIN] if names.GAP_MIN in params.columns
               else pd.Series(dtype=object))
    per_run = []
    skipped = 0
    criteria = (runs[names.SUCCESS_CRITERION] if names.SUCCESS_CRITERION in runs.columns
                else pd.Series(None, index=runs.index))
    for run, rule in zip(runs.to_dict("records"), criteria, strict=True):
        bins = by_gap[by_gap[RUN_ID] == run[RUN_ID]].dropna(subset=["gap"])
        if bins.empty or pd.isna(run[names.SEED]):
            continue
        parsed = criterion(rule)
        chance = run.get(names.CHANCE_LOSS)
        chance = float(chance) if chance is not None and chance == chance else None
        if parsed is None or (parsed[0] == LOSS_RATIO and not (chance or 0) > 0):
            skipped += 1
            continue
        low = pd.to_numeric(pd.Series([gap_min.get(run[RUN_ID])]), errors="coerce").iloc[0]
        low = int(bins["gap"].min()) if pd.isna(low) else int(low)
        high = max(int(bins["gap"].max()), int(run[names.GAP]) if not pd.isna(run[names.GAP])
                   else 0)
        per_run.append({
            names.TASK_LABEL: run[names.TASK_LABEL], LABEL: run[LABEL],
            TRAINED: f"{low}..{high}", CRITERION: str(rule), names.SEED: int(run[names.SEED]),
            "held": held_gap(bins, *parsed, chance), BINS: len(bins),
            MIN_SEQUENCES: int(bins["sequences"].min()) if bins["sequences"].notna().any()
            else None})
    rows = []
    frame = pd.DataFrame(per_run)
    if not frame.empty:
        keys = [names.TASK_LABEL, LABEL, TRAINED]
        for (task, label, trained), group in frame.groupby(keys, sort=True):
            # a seed run more than once holds only as far as its worst run
            by_seed = group.groupby(names.SEED)["held"].apply(
                lambda held: None if held.isna().any() else int(held.min()))
            seeds = sorted(by_seed.index)
            held = [None if pd.isna(by_seed[s]) else int(by_seed[s]) for s in seeds]
            all_gap = None if any(h is None for h in held) else min(held)
            any_gap = max((h for h in held if h is not None), default=None)
            rows.append({
                names.TASK_LABEL: task, LABEL: label, TRAINED: trained,
                CRITERION: "; ".join(sorted(set(group[CRITERION]))),
                tables.SEEDS: "[" + ", ".join(map(str, seeds)) + "]",
                HELD_PER_SEED: "[" + ", ".join(map(_gap_text, held)) + "]",
                HELD_ALL: _gap_text(all_gap), HELD_ANY: _gap_text(any_gap),
                N_ANY: (0 if any_gap is None
                        else sum(h is not None and h >= any_gap for h in held)),
                tables.N_SEEDS: len(seeds), BINS: int(group[BINS].max()),
                MIN_SEQUENCES: (int(np.nanmin(group[MIN_SEQUENCES].astype(float)))
                                if group[MIN_SEQUENCES].notna().any() else None)})
    return VariableGaps(pd.DataFrame(rows, columns=list(COLUMNS)), len(frame), skipped)


# --- words ---------------------------------------------------------------------------------

MEANING = (
    "One run per seed trained on a mix of gaps; its final evaluation is binned by each "
    "sequence's gap (eval_by_gap.csv). A run *held up to gap X* when every bin up to X met "
    "its success criterion (for a loss criterion against the run's chance loss, which on "
    "these tasks is the same at every gap). This answers \"trained on the mix, up to where "
    "does it hold?\", not \"can it learn gap X from scratch\": shorter gaps in the mix act "
    "like a curriculum.")
DISPLAY_HEADER = ("task", "configuration", "trained on gaps (mixed)", "held up to gap, every "
                  "seed", "held up to gap, at least one seed (k/n)", "per seed", "criterion",
                  "bins (fewest sequences in one)")


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def display_rows(found: VariableGaps) -> list[list[str]]:
    out = []
    for r in found.table.to_dict("records"):
        any_text = (tables.NONE if r[HELD_ANY] == tables.NONE
                    else f"{r[HELD_ANY]} ({r[N_ANY]}/{r[tables.N_SEEDS]})")
        seqs = "" if r[MIN_SEQUENCES] is None or r[MIN_SEQUENCES] != r[MIN_SEQUENCES] \
            else f" ({int(r[MIN_SEQUENCES])})"
        out.append([str(r[names.TASK_LABEL]), str(r[LABEL]), str(r[TRAINED]),
                    f"{r[HELD_ALL]} ({r[tables.N_SEEDS]}/{r[tables.N_SEEDS]})"
                    if r[HELD_ALL] != tables.NONE else tables.NONE,
                    any_text, f"{r[HELD_PER_SEED]} for seeds {r[tables.SEEDS]}",
                    str(r[CRITERION]), f"{r[BINS]}{seqs}"])
    return out


def _clause(key: tuple[str, str, int, int], labels: list[str]) -> str:
    every, anyone, k, n = key
    each = " each" if len(labels) > 1 else ""
    who = _join(labels)
    if anyone == tables.NONE:
        return f"{who} held no gap (0/{n} seeds{each})"
    if every == tables.NONE:
        return f"{who} held up to gap {anyone} in {k}/{n} seeds{each}, not in every seed"
    text = f"{who} held up to gap {every} in every seed ({n}/{n}{each}"
    if anyone != every:
        text += f"; up to {anyone} in {k}/{n}"
    return text + ")"


def sentence(task: str, found: VariableGaps) -> str:
    """`On copy, trained on gaps 1..60 mixed, A held up to gap 40 in every seed (3/3; up to 60
    in 1/3); B held no gap (0/3 seeds).` One clause per group of configurations with the same
    numbers, largest gap first; one sentence part per trained range."""
    rows = found.table[found.table[names.TASK_LABEL] == task]
    parts = []
    for trained, group in rows.groupby(TRAINED, sort=False):
        pairs: dict[tuple[str, str, int, int], list[str]] = {}
        for r in group.to_dict("records"):
            key = (str(r[HELD_ALL]), str(r[HELD_ANY]), int(r[N_ANY]), int(r[tables.N_SEEDS]))
            pairs.setdefault(key, []).append(str(r[LABEL]))

        def rank(item: tuple[tuple[str, str, int, int], list[str]]) -> tuple[int, int, str]:
            (every, anyone, _, _), labels = item
            def number(text: str) -> int:
                return -1 if text == tables.NONE else int(text)
            return (-number(every), -number(anyone), labels[0])

        clauses = [_clause(key, labels) for key, labels in sorted(pairs.items(), key=rank)]
        parts.append(f"trained on gaps {trained} mixed, " + "; ".join(clauses))
    return f"On {task}, " + "; and ".join(parts) + "."


def note(found: VariableGaps) -> str:
    if not found.n_skipped:
        return ""
    return (f"{found.n_skipped} run(s) logged {names.EVAL_BY_GAP_ARTIFACT} without a readable "
            f"{names.SUCCESS_CRITERION} tag (or, for a loss criterion, a {names.CHANCE_LOSS}): "
            "left out.")


