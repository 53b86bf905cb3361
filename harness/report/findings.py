"""Findings: short sentences computed from the runs, each with the numbers behind it and the
rule it rests on.

Nothing here is written by hand about a particular sweep: every sentence is a template filled
from the runs frame of `load.load_sweep` and the answers of `harness.report.held` (which gap
each configuration holds: the frontier's m-of-n rule where a frontier sweep ran, else the
every-seed rule), so a finding never gives another answer than the headline, and every
sentence about a gap held names the rule it was decided by. Configurations are named by their
plain names (`harness.report.configs`). A task is summarized in its own criterion
(`harness.report.criteria`): final accuracy for classification, normalized MSE for a
regression task such as adding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from harness import names
from harness.report import configs, criteria, held
from harness.report import frontier as frontier_
from harness.report.criteria import Measure
from harness.report.load import CLIP_SETTING, LABEL, NO_CLIP_SETTING, NO_STATUS

GAP_HELD = "gap_held"  # kinds of finding, the `kind` column of findings.csv
BEST_WORST = "best_worst"
CLIPPING = "clipping"
MODEL = "model"
DIVERGENCE = "divergence"
NOTHING_SOLVED = "nothing_solved"
NOT_RESULTS = "not_results"
FINDING_COLUMNS = ("kind", names.TASK_LABEL, "text")
NONE_TEXT = "none"


@dataclass(frozen=True)
class Finding:
    kind: str
    task: str  # "" when the finding is about the whole experiment
    text: str


@dataclass(frozen=True)
class Result:
    """How one group of runs (a configuration on a task) did: its solved gaps by the every-seed
    rule, and its mean `Measure` value (`harness.report.compare` compares two of them)."""

    name: str
    seeds: tuple[int, ...]
    solved_at: dict[int, tuple[int, int]]  # gap -> (seeds solved, seeds run)
    largest: int | None  # the largest gap every seed solved
    mean_value: float | None  # of the measure, over the runs that logged it
    n_values: int
    value_at: dict[int, float]  # gap -> mean of the measure
    diverged: int
    n_runs: int


def gap_text(value: int | None) -> str:
    return NONE_TEXT if value is None else str(value)


def result(runs: pd.DataFrame, name: str, measure: Measure = criteria.FINAL_ACCURACY) -> Result:
    """The solved gaps and mean `measure` of `runs` (one task), pooled under `name`."""
    keyed = runs.dropna(subset=[names.GAP, names.SEED])
    seeds = tuple(sorted(int(s) for s in keyed[names.SEED].unique()))
    solved = (keyed[names.STATUS] == names.SOLVED).groupby(
        [keyed[names.GAP], keyed[names.SEED]]).all()
    solved_at = {}
    for gap, at_gap in solved.groupby(level=0, sort=True):
        solved_at[int(gap)] = (int(at_gap.sum()), len(at_gap))
    everywhere = [g for g, (k, n) in solved_at.items() if k == n == len(seeds)]
    scored = keyed.dropna(subset=[measure.column])
    by_gap = scored.groupby(names.GAP)[measure.column].mean()
    return Result(
        name=name, seeds=seeds, solved_at=solved_at,
        largest=max(everywhere) if everywhere else None,
        mean_value=float(scored[measure.column].mean()) if len(scored) else None,
        n_values=len(scored),
        value_at={int(g): float(v) for g, v in by_gap.items()},
        diverged=int((keyed[names.STATUS] == names.DIVERGED).sum()),
        n_runs=len(keyed),
    )


def shared_means(a: Result, b: Result) -> tuple[int, float, float] | None:
    """Over the gaps both results have: how many, and each one's mean of the measure."""
    shared = sorted(set(a.value_at) & set(b.value_at))
    if not shared:
        return None
    return (len(shared), sum(a.value_at[g] for g in shared) / len(shared),
            sum(b.value_at[g] for g in shared) / len(shared))


def join(items: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# --- the answers, one rule each --------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """What every finding of one task reads: its runs, its measure, its answers (`held`),
    each answer's rule in words and each (task, label)'s plain name."""

    name: str
    runs: pd.DataFrame
    measure: Measure
    answers: pd.DataFrame
    rules: Mapping[str, str]
    name_of: Mapping[tuple[str, str], str]

    def rule(self, rows: pd.DataFrame) -> str:
        """`rule: <the rule>` of `rows`, each rule once."""
        texts = sorted({held.rule_text(r, self.rules) for r in rows.to_dict("records")})
        return "rule: " + "; ".join(texts) if texts else ""

    def label_name(self, label: object) -> str:
        return self.name_of.get((self.name, str(label)), str(label))

    def mean(self, label: object) -> tuple[float | None, int]:
        """The measure's mean over the configuration's runs that logged it, and how many."""
        values = self.runs.loc[self.runs[LABEL] == label, self.measure.column].dropna()
        return (float(values.mean()) if len(values) else None), len(values)

    def mean_text(self, label: object, runs: bool = True) -> str:
        value, n = self.mean(label)
        if not n:
            return f"no run logged a {self.measure.name}"
        return (f"mean {self.measure.name} {self.measure.text(value)}"
                + (f" over {n} run{'s' if n != 1 else ''}" if runs else ""))

    @property
    def meaning(self) -> str:
        """`; normalized MSE: final eval MSE / ...` where the measure needs saying."""
        m = self.measure
        return f"; {m.name}: {m.meaning}" if m.meaning else ""


def _below(t: Task, row: dict[str, object]) -> str:
    """Under the every-seed rule: the gaps below the one held that not every seed solved."""
    top = held.count(row[held.GAP_HELD])
    if row[held.RULE] != held.RULE_EVERY_SEED or top is None:
        return ""
    runs = t.runs[(t.runs[LABEL] == row[LABEL])].dropna(subset=[names.GAP, names.SEED])
    solved = (runs[names.STATUS] == names.SOLVED).groupby(
        [runs[names.GAP].astype(int), runs[names.SEED].astype(int)]).all()
    gaps = [int(g) for g, ok in solved.groupby(level=0).all().items()
            if g < top and not ok]
    return f"; below it, not every seed solved gap {', '.join(map(str, gaps))}" if gaps else ""


def held_sentences(t: Task) -> list[str]:
    """One sentence per answer, configurations with the same answer sharing it, largest gap
    held first: `GRU held gap 80 on adding (2/3 seeds); above it: gap 160 failed (0/3 seeds
    solved). Rule: a gap holds when >= 2 of 3 seeds solve it.`"""
    groups: dict[tuple[int | None, str, str, str], list[str]] = {}
    for row in held.ranked(t.answers).to_dict("records"):
        key = (held.count(row[held.GAP_HELD]), frontier_.seeds_text(row),
               held.stopped_text(row) + _below(t, row), held.rule_text(row, t.rules))
        groups.setdefault(key, []).append(str(row[configs.NAME]))
    out = []
    for (gap, seeds, stopped, rule), group in groups.items():
        each = " each" if len(group) > 1 else ""
        if gap is None:
            text = f"{join(group)} held no gap on {t.name}: {stopped}"
        else:
            text = (f"{join(group)} held gap {gap:,} on {t.name} ({seeds}{each}); "
                    f"above it: {stopped}")
        out.append(f"{text}. Rule: {rule}.")
    return out


def _best_worst(t: Task) -> Finding | None:
    rows = t.answers
    if len(rows) < 2:
        return None
    sign = 1.0 if t.measure.higher_is_better else -1.0

    def rank(row: dict[str, object]) -> tuple[int, int, float]:
        value, _ = t.mean(row[LABEL])
        return (held.gap_rank(row), held.count(row[held.HELD_SOLVED]) or 0,
                float("-inf") if value is None else sign * value)

    ordered = sorted(rows.to_dict("records"), key=lambda r: (rank(r), str(r[configs.NAME])),
                     reverse=True)
    best, worst = ordered[0], ordered[-1]

    def said(row: dict[str, object]) -> str:
        return f"gap held {frontier_.held_text(row)}, {t.mean_text(row[LABEL])}"

    if rank(best) == rank(worst):
        return Finding(BEST_WORST, t.name, f"On {t.name}, all {len(rows)} configurations tied "
                                           f"({said(best)} each; {t.rule(rows)}{t.meaning}).")
    return Finding(BEST_WORST, t.name, f"On {t.name}, the best configuration was "
                                       f"{best[configs.NAME]} ({said(best)}) and the worst "
                                       f"{worst[configs.NAME]} ({said(worst)}); "
                                       f"{t.rule(rows)}{t.meaning}.")


def _with_setting(t: Task) -> pd.DataFrame:
    """The answers with their configuration's clip setting (none known: left out)."""
    settings = t.runs.drop_duplicates(LABEL).set_index(LABEL)[CLIP_SETTING]
    rows = t.answers.assign(**{CLIP_SETTING: t.answers[LABEL].map(settings)})
    return rows.dropna(subset=[CLIP_SETTING])


def _gap_and_seeds(row: dict[str, object]) -> str:
    """`80 (3/3 seeds` or `none (`, to be closed by the caller."""
    gap = held.count(row[held.GAP_HELD])
    return f"none ({held.stopped_text(row)}" if gap is None else \
        f"{gap:,} ({frontier_.seeds_text(row)}"


def _models(t: Task, n_settings: int) -> list[Finding]:
    out = []
    rows = _with_setting(t)
    for setting, at in rows.groupby(CLIP_SETTING, sort=True):
        if len(at) < 2:
            continue
        listed = ", ".join(f"{r[configs.BARE_NAME]} {_gap_and_seeds(r)}; "
                           f"{t.mean_text(r[LABEL], runs=False)})"
                           for r in held.ranked(at).to_dict("records"))
        where = f" with clipping {setting}" if n_settings > 1 or setting != NO_CLIP_SETTING \
            else ""
        out.append(Finding(MODEL, t.name, f"On {t.name}{where}, the gap held by model: "
                                          f"{listed}; {t.rule(at)}."))
    return out


def _clipping(t: Task) -> list[Finding]:
    """Each clipped configuration against the same one without clipping."""
    out = []
    rows = _with_setting(t)
    for bare, at in rows.groupby(configs.BARE_NAME, sort=True):
        base = at[at[CLIP_SETTING] == NO_CLIP_SETTING].to_dict("records")
        if len(base) != 1:
            continue
        without = base[0]
        for clipped in at[at[CLIP_SETTING] != NO_CLIP_SETTING].to_dict("records"):
            a, b = held.gap_rank(without), held.gap_rank(clipped)
            change = (f"from {frontier_.held_text(without)} to {frontier_.held_text(clipped)}"
                      if a != b else f"at {frontier_.held_text(clipped)}")
            verb = "raised" if b > a else "lowered" if b < a else "left"
            text = (f"On {t.name}, clipping ({clipped[CLIP_SETTING]}) {verb} the gap {bare} "
                    f"held {change}")
            ra = result(t.runs[t.runs[LABEL] == without[LABEL]], "", t.measure)
            rb = result(t.runs[t.runs[LABEL] == clipped[LABEL]], "", t.measure)
            means = shared_means(ra, rb)
            if means:
                n, m0, m1 = means
                text += (f" (mean {t.measure.name} over the {n} shared gap(s): "
                         f"{t.measure.text(m0)} without, {t.measure.text(m1)} with clipping)")
            if ra.diverged or rb.diverged:
                text += (f"; diverged runs: {ra.diverged} of {ra.n_runs} without, "
                         f"{rb.diverged} of {rb.n_runs} with clipping")
            both = pd.DataFrame([without, clipped])
            out.append(Finding(CLIPPING, t.name, f"{text}; {t.rule(both)}."))
    return out


def _divergence(runs: pd.DataFrame, name_of: Mapping[tuple[str, str], str]) -> list[Finding]:
    diverged = runs[runs[names.STATUS] == names.DIVERGED]
    if diverged.empty:
        return [Finding(DIVERGENCE, "", f"No run diverged (0 of {len(runs)}).")]
    out = [Finding(DIVERGENCE, "", f"{len(diverged)} of {len(runs)} runs diverged.")]
    for (task, label), group in diverged.groupby([names.TASK_LABEL, LABEL], sort=True):
        total = int(((runs[names.TASK_LABEL] == task) & (runs[LABEL] == label)).sum())
        where = []
        for row in group.sort_values([names.GAP, names.SEED]).to_dict("records"):
            text = f"gap {row[names.GAP]} seed {row[names.SEED]}"
            step = row.get(names.DIVERGED_STEP)
            if step is not None and step == step:
                text += f" at step {int(step)}"
            where.append(text)
        name = name_of.get((str(task), str(label)), str(label))
        out.append(Finding(DIVERGENCE, str(task), f"{name} diverged on {task} in "
                                                  f"{len(group)} of {total} runs: "
                                                  f"{'; '.join(where)}."))
    return out


def _nothing_solved(t: Task) -> Finding | None:
    runs = t.runs
    if (runs[names.STATUS] == names.SOLVED).any():
        return None
    m = t.measure
    scored = runs.dropna(subset=[m.column])
    if scored.empty:
        return Finding(NOTHING_SOLVED, t.name, f"No run solved {t.name}, and none logged a "
                                               f"final {m.name}.")
    top = scored.sort_values([m.column, names.GAP, LABEL],
                             ascending=[not m.higher_is_better, True, True],
                             kind="mergesort").iloc[0]
    text = (f"No run solved {t.name} ({len(runs)} runs): the best {m.name} was "
            f"{m.text(float(top[m.column]))} ({t.label_name(top[LABEL])}, gap "
            f"{top[names.GAP]}, seed {top[names.SEED]})")
    if m is criteria.FINAL_ACCURACY:
        chance = scored[names.CHANCE_ACCURACY].dropna()
        if len(chance):
            text += f", against a chance accuracy of {m.text(float(chance.mean()))}"
    else:
        text += f", against 1.000 for the memoryless predictor{t.meaning}"
    return Finding(NOTHING_SOLVED, t.name, text + ".")


def _not_results(runs: pd.DataFrame) -> Finding | None:
    counts = runs[names.STATUS].value_counts()
    parts = [f"{int(counts[s])} {s}" for s in (names.FAILED, names.KILLED, NO_STATUS)
             if counts.get(s, 0)]
    if not parts:
        return None
    return Finding(NOT_RESULTS, "", f"Not results: {', '.join(parts)} run(s); at their gap and "
                                    "seed they count as not solved, and they add no "
                                    "accuracy or loss.")


def findings(runs: pd.DataFrame, answers: pd.DataFrame, rules: Mapping[str, str],
             name_of: Mapping[tuple[str, str], str]) -> list[Finding]:
    """Every finding of one experiment, task by task, then across tasks. `answers`: the
    `configs.named` rows of `held.held_table`; `rules`: each frontier sweep's `frontier_rule`
    tag by its run name; `name_of`: each (task, label)'s plain name."""
    out: list[Finding] = []
    keyed = runs.dropna(subset=[names.TASK_LABEL])
    n_settings = keyed[CLIP_SETTING].nunique()
    tasks = sorted(keyed[names.TASK_LABEL].unique())
    for task in tasks:
        at_task = keyed[keyed[names.TASK_LABEL] == task]
        mine = answers[answers[names.TASK_LABEL] == task]
        t = Task(str(task), at_task, criteria.measure(at_task), mine, rules, name_of)
        nothing = _nothing_solved(t)
        if nothing is not None:
            out.append(nothing)
        out += [Finding(GAP_HELD, t.name, text) for text in held_sentences(t)]
        best_worst = _best_worst(t)
        if best_worst is not None:
            out.append(best_worst)
        out += _models(t, n_settings)
        out += _clipping(t)
    if len(tasks) > 1 and not (keyed[names.STATUS] == names.SOLVED).any():
        out.append(Finding(NOTHING_SOLVED, "", f"No run solved any of the {len(tasks)} tasks."))
    out += _divergence(keyed, name_of)
    extra = _not_results(keyed)
    if extra is not None:
        out.append(extra)
    return out


def frame(items: Sequence[Finding]) -> pd.DataFrame:
    return pd.DataFrame([(f.kind, f.task, f.text) for f in items], columns=list(FINDING_COLUMNS))
