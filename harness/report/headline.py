"""The headline: at most three computed sentences per task that open the page and summary.md.

Per task: (1) each configuration's largest gap solved by every seed, and by at least one, with
k of n; (2) what limited the runs that did not solve, from their `end_state` tag (still at the
memoryless loss, still improving when the budget ran out, plateaued, diverged); (3) the
task's success criterion when the runs carry it. Configurations for which the same thing holds
share one clause, so the sentences stay short however many configurations were swept.

Runs from stores that predate the `end_state` tag count as `unknown`, never as a guess.

With a frontier (a frontier sweep's table, `harness.report.frontier`), sentence (1) of its task
says each configuration's frontier instead: the largest gap held with k/n seeds, and the first
gap not held (failed, or censored and why) or that the ladder's top held. Runs trained on mixed
gaps (`harness.report.variable_gap`) likewise open with how far each configuration held.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from harness import names
from harness.report import frontier as frontier_
from harness.report.load import LABEL

UNKNOWN = "unknown"
MAX_SENTENCES = 3
# The runs that are results (a failed or killed job, or one without a status, is not one).
RESULT_STATUSES = (names.SOLVED, names.UNSOLVED, names.DIVERGED)
LIMIT_ORDER = (names.CHANCE, names.IMPROVING, names.PLATEAU, names.DIVERGED, UNKNOWN)
# after "<count> "; "were" becomes "was" for a count of 1
LIMIT_TEXT = {
    names.CHANCE: "were still at the memoryless loss (chance)",
    names.IMPROVING: "were still improving at the end of the budget (improving)",
    names.PLATEAU: "were below the memoryless loss but no longer improving (plateau)",
    names.DIVERGED: "diverged",
    UNKNOWN: "had no end_state tag (the store predates it: end state unknown)",
}
CENSORED_TEXT = "budget-limited, not evidence of failure"


@dataclass(frozen=True)
class Outcome:
    """How one configuration did on one task."""

    label: str
    n_seeds: int
    all_gap: int | None  # the largest gap every seed solved
    any_gap: int | None  # the largest gap at least one seed solved
    any_k: int  # seeds that solved any_gap
    n_runs: int  # result runs
    limits: dict[str, int]  # end state -> unsolved result runs


def _end_state(status: object, tag: object) -> str:
    text = None if tag is None or tag is pd.NA or tag != tag else str(tag)
    if text in names.END_STATES and text != names.SOLVED:
        return text
    return names.DIVERGED if status == names.DIVERGED else UNKNOWN


def outcomes(runs: pd.DataFrame, task: str) -> list[Outcome]:
    """One `Outcome` per configuration label of `task`, in label order."""
    data = runs[(runs[names.TASK_LABEL] == task) & runs[names.STATUS].isin(RESULT_STATUSES)]
    data = data.dropna(subset=[names.GAP, names.SEED])
    end_tags = (data[names.END_STATE] if names.END_STATE in data.columns
                else pd.Series(pd.NA, index=data.index))
    result = []
    for label, group in data.groupby(LABEL, sort=True):
        seeds = set(group[names.SEED].astype(int))
        # a (seed, gap) re-run counts as solved only if every run of it was
        solved = (group[names.STATUS] == names.SOLVED).groupby(
            [group[names.GAP].astype(int), group[names.SEED].astype(int)]).all()
        per_gap = solved.groupby(level=0).agg(["sum", "count"])
        all_gaps = [int(g) for g, row in per_gap.iterrows()
                    if row["sum"] == len(seeds) and row["count"] == len(seeds)]
        any_gaps = [int(g) for g, row in per_gap.iterrows() if row["sum"] > 0]
        any_gap = max(any_gaps) if any_gaps else None
        unsolved = group[group[names.STATUS] != names.SOLVED]
        limits: dict[str, int] = {}
        for status, tag in zip(unsolved[names.STATUS], end_tags.loc[unsolved.index],
                               strict=True):
            state = _end_state(status, tag)
            limits[state] = limits.get(state, 0) + 1
        result.append(Outcome(
            label=str(label), n_seeds=len(seeds),
            all_gap=max(all_gaps) if all_gaps else None, any_gap=any_gap,
            any_k=int(per_gap.loc[any_gap, "sum"]) if any_gap is not None else 0,
            n_runs=len(group), limits=limits))
    return result


def join(items: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _grouped(pairs: Sequence[tuple[object, str]]) -> list[tuple[object, list[str]]]:
    """(key, label) pairs -> [(key, labels)] in first-seen order of the keys."""
    keys: dict[object, list[str]] = {}
    for key, label in pairs:
        keys.setdefault(key, []).append(label)
    return list(keys.items())


def _each(labels: Sequence[str]) -> str:
    return " each" if len(labels) > 1 else ""


def _seeds(n: int) -> str:
    return "seed" if n == 1 else "seeds"


def _steps(runs: pd.DataFrame) -> str:
    steps = pd.to_numeric(runs[names.STEPS_RUN], errors="coerce").dropna()
    return f" within {int(steps.max()):,} steps" if len(steps) else ""


def _solved_sentence(task: str, found: list[Outcome], budget: str) -> str:
    if all(o.any_gap is None for o in found):
        n = sum(o.n_runs for o in found)
        return (f"Nothing learned {task}{budget}: no configuration solved any gap "
                f"(0 of {n} runs).")
    clauses = []
    every = sorted(((o.all_gap, o.n_seeds), o.label) for o in found if o.all_gap is not None)
    every.sort(key=lambda item: -int(item[0][0]))
    if every:
        parts = [f"{gap:,} for {join(labels)} ({n} of {n} {_seeds(n)}{_each(labels)})"
                 for (gap, n), labels in _grouped(every)]
        clauses.append(f"{task}: the largest gap solved by every seed was " + "; ".join(parts))
    else:
        clauses.append(f"{task}: no configuration solved a gap with every seed")
    more = [((o.any_gap, o.any_k, o.n_seeds), o.label) for o in found
            if o.any_gap is not None and (o.all_gap is None or o.any_gap > o.all_gap)]
    more.sort(key=lambda item: -int(item[0][0]))
    if more:
        parts = [f"{gap:,} for {join(labels)} ({k} of {n} {_seeds(n)}{_each(labels)})"
                 for (gap, k, n), labels in _grouped(more)]
        clauses.append("at least one seed solved " + "; ".join(parts))
    nothing = [(o.n_runs, o.label) for o in found if o.any_gap is None]
    if nothing:
        parts = [f"{join(labels)} (0 of {n} runs{_each(labels)})"
                 for n, labels in _grouped(nothing)]
        clauses.append("no gap at all: " + "; ".join(parts))
    return "; ".join(clauses) + "."


def _limits_sentence(found: list[Outcome], budget: str) -> str:
    unsolved = sum(sum(o.limits.values()) for o in found)
    if not unsolved:
        return ""
    states = []
    for state in LIMIT_ORDER:
        pairs = [((o.limits[state], sum(o.limits.values())), o.label) for o in found
                 if o.limits.get(state)]
        if not pairs:
            continue
        count = sum(k for (k, _), _ in pairs)
        who = ", ".join(f"{join(labels)} {k} of {n}{_each(labels)}"
                        for (k, n), labels in _grouped(pairs))
        verb = LIMIT_TEXT[state].replace("were ", "was ", 1) if count == 1 else LIMIT_TEXT[state]
        text = f"{count} {verb}: {who}"
        if state == names.IMPROVING:
            text += f" ({CENSORED_TEXT})"
        states.append(text)
    runs = "run" if unsolved == 1 else "runs"
    return f"Of the {unsolved} {runs} that did not solve{budget}, " + "; ".join(states) + "."


def _criterion_sentence(runs: pd.DataFrame) -> str:
    if names.SUCCESS_CRITERION not in runs.columns:
        return ""
    rules = sorted({str(v) for v in runs[names.SUCCESS_CRITERION].dropna()})
    return f"Solved means: {'; '.join(rules)}." if rules else ""


def _count(value: object) -> int | None:
    """A frontier table's integer cell; None where it is empty."""
    if value is None or value is pd.NA or value != value:
        return None
    return int(value)  # type: ignore[call-overload]


def _frontier_clause(key: tuple, labels: list[str]) -> str:
    held, k, n, failed, above, why = key
    if above == frontier_.ABOVE_BEYOND:
        rest = "the top of the ladder: the frontier lies beyond it"
    elif above == frontier_.ABOVE_CENSORED:
        rest = f"gap {failed:,} censored" + (f": {why}" if why else "")
    else:
        rest = f"gap {failed:,} failed"
    if held is None:
        return f"{join(labels)} held no gap ({rest}, the lowest gap{_each(labels)})"
    return f"{join(labels)} held gap {held:,} ({k}/{n} seeds{_each(labels)}; {rest})"


def frontier_sentence(task: str, table: pd.DataFrame) -> str:
    """`On <task>, A held gap 80 (3/3 seeds; gap 160 failed); B and C held gap 10 (...).`:
    configurations with the same frontier share a clause, largest gap held first."""
    pairs: list[tuple[tuple, str]] = []
    for row in table[table[names.TASK_LABEL] == task].to_dict("records"):
        key = tuple(_count(row[c]) for c in ("gap_held", "held_solved", "held_seeds",
                                             "gap_failed"))
        key += (str(row[frontier_.ABOVE]), str(row[frontier_.CENSORED_WHY]))
        pairs.append((key, str(row[LABEL])))
    pairs.sort(key=lambda p: (p[0][0] is None, -(p[0][0] or 0), p[1]))
    clauses = [_frontier_clause(key, labels)  # type: ignore[arg-type]
               for key, labels in _grouped(pairs)]
    return f"On {task}, " + "; ".join(clauses) + "."


def headline(runs: pd.DataFrame, frontier: pd.DataFrame | None = None,
             variable: Mapping[str, str] | None = None) -> list[tuple[str, list[str]]]:
    """[(task, its at most MAX_SENTENCES sentences)] for every task of `runs`, in task order.

    `frontier` (the `harness.report.frontier` table, or None): its tasks open with
    `frontier_sentence` in place of the largest-gap-solved sentence. `variable` ({task:
    sentence}, `harness.report.variable_gap.sentence`): tasks without a frontier sweep whose
    runs trained on mixed gaps open with that sentence instead.
    """
    fronts = set() if frontier is None else {str(t) for t in frontier[names.TASK_LABEL]}
    variable = variable or {}
    result = []
    for task in sorted({*map(str, runs[names.TASK_LABEL].dropna().unique()), *fronts}):
        at_task = runs[runs[names.TASK_LABEL] == task]
        found = outcomes(runs, str(task))
        first = (frontier_sentence(task, frontier) if task in fronts
                 else variable.get(task, ""))
        if not found:
            result.append((str(task), [first or f"{task}: no finished run to report on."]))
            continue
        unsolved = at_task[at_task[names.STATUS].isin(RESULT_STATUSES)
                           & (at_task[names.STATUS] != names.SOLVED)]
        budget = _steps(unsolved)
        sentences = [first or _solved_sentence(str(task), found, _steps(at_task)),
                     _limits_sentence(found, budget), _criterion_sentence(at_task)]
        result.append((str(task), [s for s in sentences if s][:MAX_SENTENCES]))
    return result


def markdown(lines: list[tuple[str, list[str]]]) -> str:
    """The headline as markdown: one paragraph per task."""
    if not lines:
        return ""
    return "\n\n".join(" ".join(sentences) for _, sentences in lines) + "\n"
