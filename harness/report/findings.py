"""Findings: short sentences computed from the runs, each with the numbers behind it.

Nothing here is written by hand about a particular sweep: every sentence is a template
filled from the runs frame of `load.load_sweep`. "Solved at a gap" means what the largest
solved gap table means: every seed the configuration ran with ended `solved` at that gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from harness import names
from harness.report.load import CLIP_SETTING, LABEL, MODEL_VARIANT, NO_CLIP_SETTING, NO_STATUS

SOLVED_GAP = "solved_gap"  # kinds of finding, the `kind` column of findings.csv
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
    """How one group of runs (a configuration, or a model at one clip setting) did on a task."""

    name: str
    seeds: tuple[int, ...]
    solved_at: dict[int, tuple[int, int]]  # gap -> (seeds solved, seeds run)
    largest: int | None  # the largest gap every seed solved
    mean_accuracy: float | None  # over the runs with a final accuracy
    n_accuracy: int
    accuracy_at: dict[int, float]  # gap -> mean final accuracy
    diverged: int
    n_runs: int

    @property
    def rank(self) -> tuple[int, float]:
        return (-1 if self.largest is None else self.largest,
                -1.0 if self.mean_accuracy is None else self.mean_accuracy)


def gap_text(value: int | None) -> str:
    return NONE_TEXT if value is None else str(value)


def acc_text(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def result(runs: pd.DataFrame, name: str) -> Result:
    """The solved gaps and accuracy of `runs` (one task), pooled under `name`."""
    keyed = runs.dropna(subset=[names.GAP, names.SEED])
    seeds = tuple(sorted(int(s) for s in keyed[names.SEED].unique()))
    solved = (keyed[names.STATUS] == names.SOLVED).groupby(
        [keyed[names.GAP], keyed[names.SEED]]).all()
    solved_at = {}
    for gap, at_gap in solved.groupby(level=0, sort=True):
        solved_at[int(gap)] = (int(at_gap.sum()), len(at_gap))
    everywhere = [g for g, (k, n) in solved_at.items() if k == n == len(seeds)]
    accuracy = keyed.dropna(subset=[names.FINAL_EVAL_ACCURACY])
    by_gap = accuracy.groupby(names.GAP)[names.FINAL_EVAL_ACCURACY].mean()
    return Result(
        name=name, seeds=seeds, solved_at=solved_at,
        largest=max(everywhere) if everywhere else None,
        mean_accuracy=(float(accuracy[names.FINAL_EVAL_ACCURACY].mean())
                       if len(accuracy) else None),
        n_accuracy=len(accuracy),
        accuracy_at={int(g): float(v) for g, v in by_gap.items()},
        diverged=int((keyed[names.STATUS] == names.DIVERGED).sum()),
        n_runs=len(keyed),
    )


def shared_means(a: Result, b: Result) -> tuple[int, float, float] | None:
    """Over the gaps both results have: how many, and each one's mean final accuracy."""
    shared = sorted(set(a.accuracy_at) & set(b.accuracy_at))
    if not shared:
        return None
    return (len(shared), sum(a.accuracy_at[g] for g in shared) / len(shared),
            sum(b.accuracy_at[g] for g in shared) / len(shared))


def _solved_sentence(task: str, r: Result) -> str:
    n = len(r.seeds)
    if r.largest is not None:
        text = f"{r.name} solved {task} in every seed ({n}/{n}) up to gap {r.largest}"
        below = [(g, k, m) for g, (k, m) in r.solved_at.items()
                 if g < r.largest and not k == m == n]
        # a seed that failed, versus a seed that never ran there (a frontier search adds
        # seeds only while a gap is undecided): only the first is evidence against the gap
        failed = [g for g, k, m in below if k < m]
        unrun = [g for g, k, m in below if k == m]
        if failed:
            text += f", but not in every seed at gap {', '.join(map(str, failed))}"
        if unrun:
            text += (f"; not every seed ran at gap {', '.join(map(str, unrun))} (each one "
                     "that ran solved it)")
        above = [(g, k, m) for g, (k, m) in r.solved_at.items() if g > r.largest and k > 0]
        if above:
            text += "; beyond it: " + ", ".join(f"{k}/{m} seeds at gap {g}" for g, k, m in above)
        return text + "."
    partial = [(g, k, m) for g, (k, m) in r.solved_at.items() if k > 0]
    if partial:
        listed = ", ".join(f"{k}/{m} seeds at gap {g}" for g, k, m in partial)
        return f"{r.name} solved {task} at no gap in every seed; it solved {listed}."
    best = max(r.accuracy_at.items(), key=lambda item: (item[1], -item[0]), default=None)
    text = f"{r.name} solved {task} at no gap (0 of {r.n_runs} runs)"
    if best is not None:
        text += f"; its best mean final accuracy was {acc_text(best[1])} at gap {best[0]}"
    return text + "."


def join(items: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _best_text(r: Result) -> str:
    best = max(r.accuracy_at.items(), key=lambda item: (item[1], -item[0]), default=None)
    return "" if best is None else f"best mean final accuracy {acc_text(best[1])} at gap {best[0]}"


def solved_sentences(task: str, ordered: Sequence[Result]) -> list[str]:
    """The solved-gap sentences of one task, one per kind of result rather than per
    configuration: configurations with the same numbers share a sentence (`a and b solved
    copy in every seed (3/3 each) up to gap 100.`); those that solved no gap in every seed
    share one sentence each kind, with every configuration's own numbers in it."""
    out: list[str] = []
    full: dict[str, list[Result]] = {}
    for r in ordered:
        if r.largest is not None:
            full.setdefault(_solved_sentence(task, r)[len(r.name):], []).append(r)
    for tail, group in full.items():
        if len(group) > 1:
            n = len(group[0].seeds)
            tail = tail.replace(f"({n}/{n})", f"({n}/{n} each)", 1)
        out.append(join([r.name for r in group]) + tail)
    partial = [r for r in ordered if r.largest is None
               and any(k > 0 for k, _ in r.solved_at.values())]
    if partial:
        items = "; ".join(
            f"{r.name} " + ", ".join(f"{k}/{m} seeds at gap {g}"
                                     for g, (k, m) in r.solved_at.items() if k > 0)
            for r in partial)
        out.append(f"Solved {task} at no gap in every seed, but in some seeds: {items}.")
    nothing = [r for r in ordered if r.largest is None and r not in partial]
    if nothing:
        if len(nothing) == 1:
            r = nothing[0]
            text = f"{r.name} solved {task} at no gap (0 of {r.n_runs} runs)"
            text += f"; its {_best_text(r)}" if _best_text(r) else ""
            out.append(text + ".")
        elif not any(_best_text(r) for r in nothing):
            by_runs: dict[int, list[str]] = {}
            for r in nothing:
                by_runs.setdefault(r.n_runs, []).append(r.name)
            counts = "; ".join(f"{join(group)} (0 of {n} runs{' each' if len(group) > 1 else ''})"
                               for n, group in by_runs.items())
            out.append(f"Solved {task} at no gap: {counts}.")
        else:
            items = [f"{r.name} (0 of {r.n_runs} runs" + (f"; {_best_text(r)})" if _best_text(r)
                                                         else ")") for r in nothing]
            out.append(f"Solved {task} at no gap: {join(items)}.")
    return out


def _results(runs: pd.DataFrame, key: str) -> dict[str, Result]:
    return {str(name): result(group, str(name))
            for name, group in runs.groupby(key, sort=True)}


def _best_worst(task: str, results: Sequence[Result]) -> Finding | None:
    if len(results) < 2:
        return None
    ordered = sorted(results, key=lambda r: (r.rank, r.name), reverse=True)
    best, worst = ordered[0], ordered[-1]

    def said(r: Result) -> str:
        return (f"largest gap solved in every seed {gap_text(r.largest)}, mean final accuracy "
                f"{acc_text(r.mean_accuracy)} over {r.n_accuracy} runs")

    if best.rank == worst.rank:
        return Finding(BEST_WORST, task, f"On {task}, all {len(results)} configurations tied "
                                         f"({said(best)} each).")
    return Finding(BEST_WORST, task, f"On {task}, the best configuration was {best.name} "
                                     f"({said(best)}) and the worst {worst.name} ({said(worst)}).")


def _clipping(task: str, runs: pd.DataFrame) -> list[Finding]:
    out = []
    for variant, at_variant in runs.groupby(MODEL_VARIANT, sort=True):
        by_setting = _results(at_variant, CLIP_SETTING)
        base = by_setting.get(NO_CLIP_SETTING)
        if base is None:
            continue
        for setting, clipped in by_setting.items():
            if setting == NO_CLIP_SETTING:
                continue
            if clipped.rank[0] > base.rank[0]:
                verb = f"raised the largest gap {variant} solved in every seed from " \
                       f"{gap_text(base.largest)} to {gap_text(clipped.largest)}"
            elif clipped.rank[0] < base.rank[0]:
                verb = f"lowered the largest gap {variant} solved in every seed from " \
                       f"{gap_text(base.largest)} to {gap_text(clipped.largest)}"
            else:
                verb = f"left the largest gap {variant} solved in every seed at " \
                       f"{gap_text(base.largest)}"
            text = f"On {task}, clipping ({setting}) {verb}"
            means = shared_means(base, clipped)
            if means:
                n, a0, a1 = means
                text += (f" (mean final accuracy over the {n} shared gap(s): "
                         f"{acc_text(a0)} without, {acc_text(a1)} with clipping)")
            if base.diverged or clipped.diverged:
                text += (f"; diverged runs: {base.diverged} of {base.n_runs} without, "
                         f"{clipped.diverged} of {clipped.n_runs} with clipping")
            out.append(Finding(CLIPPING, task, text + "."))
    return out


def _models(task: str, runs: pd.DataFrame, n_settings: int) -> list[Finding]:
    out = []
    for setting, at_setting in runs.groupby(CLIP_SETTING, sort=True):
        results = list(_results(at_setting, MODEL_VARIANT).values())
        if len(results) < 2:
            continue
        ordered = sorted(results, key=lambda r: (r.rank, r.name), reverse=True)
        listed = ", ".join(f"{r.name} {gap_text(r.largest)} (mean final accuracy "
                           f"{acc_text(r.mean_accuracy)})" for r in ordered)
        where = f" with clipping {setting}" if n_settings > 1 or setting != NO_CLIP_SETTING \
            else ""
        out.append(Finding(MODEL, task, f"On {task}{where}, the largest gap solved in every "
                                        f"seed, by model: {listed}."))
    return out


def _divergence(runs: pd.DataFrame) -> list[Finding]:
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
        out.append(Finding(DIVERGENCE, str(task), f"{label} diverged on {task} in "
                                                  f"{len(group)} of {total} runs: "
                                                  f"{'; '.join(where)}."))
    return out


def _nothing_solved(task: str, runs: pd.DataFrame) -> Finding | None:
    if (runs[names.STATUS] == names.SOLVED).any():
        return None
    scored = runs.dropna(subset=[names.FINAL_EVAL_ACCURACY])
    if scored.empty:
        return Finding(NOTHING_SOLVED, task, f"No run solved {task}, and none logged a final "
                                             "accuracy.")
    top = scored.sort_values([names.FINAL_EVAL_ACCURACY, names.GAP, LABEL],
                             ascending=[False, True, True], kind="mergesort").iloc[0]
    chance = scored[names.CHANCE_ACCURACY].dropna()
    text = (f"No run solved {task} ({len(runs)} runs): the best final accuracy was "
            f"{acc_text(float(top[names.FINAL_EVAL_ACCURACY]))} ({top[LABEL]}, gap "
            f"{top[names.GAP]}, seed {top[names.SEED]})")
    if len(chance):
        text += f", against a chance accuracy of {acc_text(float(chance.mean()))}"
    return Finding(NOTHING_SOLVED, task, text + ".")


def _not_results(runs: pd.DataFrame) -> Finding | None:
    counts = runs[names.STATUS].value_counts()
    parts = [f"{int(counts[s])} {s}" for s in (names.FAILED, names.KILLED, NO_STATUS)
             if counts.get(s, 0)]
    if not parts:
        return None
    return Finding(NOT_RESULTS, "", f"Not results: {', '.join(parts)} run(s); at their gap and "
                                    "seed they count as not solved, and they add no accuracy.")


def findings(runs: pd.DataFrame) -> list[Finding]:
    """Every finding of one experiment, task by task, then across tasks."""
    out: list[Finding] = []
    keyed = runs.dropna(subset=[names.TASK_LABEL])
    n_settings = keyed[CLIP_SETTING].nunique()
    tasks = sorted(keyed[names.TASK_LABEL].unique())
    for task in tasks:
        at_task = keyed[keyed[names.TASK_LABEL] == task]
        nothing = _nothing_solved(task, at_task)
        if nothing is not None:
            out.append(nothing)
        results = _results(at_task, LABEL)
        ordered = sorted(results.values(), key=lambda r: (r.rank, r.name), reverse=True)
        out += [Finding(SOLVED_GAP, task, text) for text in solved_sentences(task, ordered)]
        best_worst = _best_worst(task, ordered)
        if best_worst is not None:
            out.append(best_worst)
        out += _models(task, at_task, n_settings)
        out += _clipping(task, at_task)
    if len(tasks) > 1 and not (keyed[names.STATUS] == names.SOLVED).any():
        out.append(Finding(NOTHING_SOLVED, "", f"No run solved any of the {len(tasks)} tasks."))
    out += _divergence(keyed)
    extra = _not_results(keyed)
    if extra is not None:
        out.append(extra)
    return out


def frame(items: Sequence[Finding]) -> pd.DataFrame:
    return pd.DataFrame([(f.kind, f.task, f.text) for f in items], columns=list(FINDING_COLUMNS))


