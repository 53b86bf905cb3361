"""The headline: each task's configurations, one row each, and at most three computed
sentences, opening the page and summary.md.

Per task, one row per configuration (`harness.report.held`: the frontier's answer where a
frontier sweep ran, else the every-seed rule): its plain name (`harness.report.configs`), its
learning rate and hidden size where they vary among the rows, its parameter count, the gap
held with k/n seeds and what stopped it above that gap. Under the rows: (1) the rule the gaps
were decided by; (2) what limited the runs that did not solve, from their `end_state` tag
(still at the memoryless loss, still improving when the budget ran out, plateaued, diverged);
(3) the task's success criterion when the runs carry it. A task trained on mixed gaps without
a frontier sweep (`harness.report.variable_gap`) opens with how far each configuration held
instead of rows. Runs from stores that predate the `end_state` tag count as `unknown`, never
as a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from harness import names
from harness.report import configs, held, tables
from harness.report.load import LABEL

UNKNOWN = "unknown"
MAX_SENTENCES = 3
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
# The columns of a task's rows; lr, units and parameters only where the page has them.
NAME, LR, UNITS, PARAMETERS = "configuration", "lr", "units", "parameters"
GAP_HELD, STOPPED, RULE = "gap held (seeds)", "what stopped it", "rule"


@dataclass(frozen=True)
class Outcome:
    """How the runs of one configuration ended on one task."""

    label: str
    n_runs: int  # result runs
    limits: dict[str, int]  # end state -> unsolved result runs


@dataclass(frozen=True)
class Lead:
    """One task's headline: its rows (`header`, `rows`; none for a task without answers) with
    each row's configuration label (`labels`, as the other sections name it), and at most
    MAX_SENTENCES sentences."""

    task: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    labels: tuple[str, ...]
    sentences: tuple[str, ...]

    def markdown(self) -> str:
        parts = [f"**{self.task}**"]
        if self.rows:
            parts.append(tables.markdown_table(self.header, self.rows))
        if self.sentences:
            parts.append(" ".join(self.sentences))
        return "\n\n".join(parts)


def _end_state(status: object, tag: object) -> str:
    text = None if tag is None or tag is pd.NA or tag != tag else str(tag)
    if text in names.END_STATES and text != names.SOLVED:
        return text
    return names.DIVERGED if status == names.DIVERGED else UNKNOWN


def outcomes(runs: pd.DataFrame, task: str) -> list[Outcome]:
    """One `Outcome` per configuration label of `task`, in label order."""
    data = runs[(runs[names.TASK_LABEL] == task) & runs[names.STATUS].isin(tables.RESULT_STATUSES)]
    data = data.dropna(subset=[names.GAP, names.SEED])
    end_tags = (data[names.END_STATE] if names.END_STATE in data.columns
                else pd.Series(pd.NA, index=data.index))
    result = []
    for label, group in data.groupby(LABEL, sort=True):
        unsolved = group[group[names.STATUS] != names.SOLVED]
        limits: dict[str, int] = {}
        for status, tag in zip(unsolved[names.STATUS], end_tags.loc[unsolved.index],
                               strict=True):
            state = _end_state(status, tag)
            limits[state] = limits.get(state, 0) + 1
        result.append(Outcome(label=str(label), n_runs=len(group), limits=limits))
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


def _steps(runs: pd.DataFrame) -> str:
    steps = pd.to_numeric(runs[names.STEPS_RUN], errors="coerce").dropna()
    return f" within {int(steps.max()):,} steps" if len(steps) else ""


def _limits_sentence(found: list[Outcome], budget: str, name_of: Mapping[str, str]) -> str:
    unsolved = sum(sum(o.limits.values()) for o in found)
    if not unsolved:
        return ""
    states = []
    for state in LIMIT_ORDER:
        pairs = [((o.limits[state], sum(o.limits.values())), name_of.get(o.label, o.label))
                 for o in found if o.limits.get(state)]
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


def _rule_sentence(rows: pd.DataFrame, rules: Mapping[str, str]) -> str:
    """`Gap held: <rule> (frontier sweep <name>).`; with several rules, each after its mark
    in the rows' rule column."""
    found: dict[str, tuple[str, set[str]]] = {}
    for row in rows.to_dict("records"):
        mark = held.rule_mark(row, rules)
        text, sweeps = found.setdefault(mark, (held.rule_text(row, rules), set()))
        if row[held.SWEEP]:
            sweeps.add(str(row[held.SWEEP]))
    parts = []
    for mark, (text, sweeps) in found.items():
        source = (f" (frontier sweep{'s' if len(sweeps) > 1 else ''} {join(sorted(sweeps))})"
                  if sweeps else "")
        parts.append((f"{mark}: " if len(found) > 1 else "") + text + source)
    return f"Gap held: {'; '.join(parts)}." if parts else ""


def _held_cell(row: dict[str, object]) -> str:
    """`80 (2/3)`: the gap held and its seeds, under the header `gap held (seeds)`."""
    gap = held.count(row[held.GAP_HELD])
    return tables.NONE if gap is None else \
        f"{gap:,} ({row[held.HELD_SOLVED]}/{row[held.HELD_SEEDS]})"


def rows_of(ordered: pd.DataFrame, rules: Mapping[str, str]) -> tuple[
        tuple[str, ...], list[tuple[str, ...]]]:
    """One task's answers (`configs.named` rows of `held.held_table`), in their order, as the
    headline's header and rows: lr and units only where they vary among the rows, parameters
    where any run logged its count, the rule (`held.rule_mark`) where the rows' rules
    differ."""
    Cell = Callable[[dict[str, object]], str]
    columns: list[tuple[str, Cell]] = [(NAME, lambda r: str(r[configs.SHORT_NAME]))]
    if ordered[held.LR].nunique() > 1:
        columns.append((LR, lambda r: configs.lr_text(r[held.LR])))
    if ordered[names.HIDDEN_SIZE].nunique() > 1:
        columns.append((UNITS, lambda r: "" if held.count(r[names.HIDDEN_SIZE]) is None
                        else str(held.count(r[names.HIDDEN_SIZE]))))
    if ordered[names.PARAMETER_COUNT].notna().any():
        columns.append((PARAMETERS, lambda r: configs.size_text(r[names.PARAMETER_COUNT])))
    columns += [(GAP_HELD, _held_cell), (STOPPED, held.stopped_text)]
    marks = [held.rule_mark(r, rules) for r in ordered.to_dict("records")]
    if len(set(marks)) > 1:
        columns.append((RULE, lambda r: held.rule_mark(r, rules)))
    records = ordered.to_dict("records")
    return (tuple(name for name, _ in columns),
            [tuple(text(r) for _, text in columns) for r in records])


def headline(runs: pd.DataFrame, answers: pd.DataFrame, rules: Mapping[str, str],
             name_of: Mapping[tuple[str, str], str],
             variable: Mapping[str, str] | None = None) -> list[Lead]:
    """Every task's `Lead`, in task order.

    `answers`: `configs.named` rows of `held.held_table`; `rules`: each frontier sweep's
    `frontier_rule` tag by its run name; `name_of`: each (task, label)'s plain name (the
    limits sentence names configurations by it); `variable` ({task: sentence},
    `harness.report.variable_gap.sentence`): a task with mixed-gap runs and no frontier row
    opens with that sentence instead of rows.
    """
    variable = variable or {}
    frontier_tasks = set(answers.loc[answers[held.RULE] == held.RULE_FRONTIER,
                                     names.TASK_LABEL].astype(str))
    result = []
    for task in sorted({*map(str, runs[names.TASK_LABEL].dropna().unique()),
                        *map(str, answers[names.TASK_LABEL])}):
        at_task = runs[runs[names.TASK_LABEL] == task]
        mine = held.ranked(answers[answers[names.TASK_LABEL] == task])
        header: tuple[str, ...] = ()
        rows: list[tuple[str, ...]] = []
        first = ""
        if task in variable and task not in frontier_tasks:
            first = variable[task]
        elif not mine.empty:
            header, rows = rows_of(mine, rules)
            first = _rule_sentence(mine, rules)
        found = outcomes(runs, task)
        unsolved = at_task[at_task[names.STATUS].isin(tables.RESULT_STATUSES)
                           & (at_task[names.STATUS] != names.SOLVED)]
        labels = {label: name for (t, label), name in name_of.items() if t == task}
        sentences = [first or f"{task}: no finished run to report on.",
                     _limits_sentence(found, _steps(unsolved), labels) if found else "",
                     _criterion_sentence(at_task) if found else ""]
        result.append(Lead(task, header, tuple(rows),
                           tuple(map(str, mine[LABEL])) if rows else (),
                           tuple(s for s in sentences if s)[:MAX_SENTENCES]))
    return result


def markdown(leads: Sequence[Lead]) -> str:
    """The headline as markdown: per task its name in bold, its rows and its sentences."""
    if not leads:
        return ""
    return "\n\n".join(lead.markdown() for lead in leads) + "\n"
