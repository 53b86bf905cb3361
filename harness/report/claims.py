"""The scorecard: published claims checked against an experiment's runs.

A paper preset (`conf/experiment/paper/<preset>.yaml`) declares the outcomes its paper
published as claims in `conf/experiment/paper/claims/<preset>.yaml`. That file is not a Hydra
config (nothing composes it, so the claims are neither params of the runs nor part of their
config hash); it names the experiments it applies to (`experiments:`, the presets'
`experiment_name`s), and `claims_for` finds it by experiment name.

A claim selects runs by task (the report's task label), gap and params (`where`: flattened
config keys such as `model.name`), and is about the first `of` seeds (lowest seed numbers) of
that selection, up to a training horizon of `steps` (the budget the published outcome refers
to; the file's `steps` unless the claim sets its own). Kinds:

- `solved`: at least `at_least` of the `of` seeds solved (status `solved`, at or before the
  horizon); `at_most` instead counts a published failure: at most that many solved.
- `within`: the metric is within a relative `tolerance` of `value` (a number, or a formula in
  `gap`: `10 * ln(8) / (gap + 20)`) in at least `at_least` of the `of` seeds.
- `interval`: the metric lies in [`low`, `high`] (either may be null) in at least `at_least`
  of the `of` seeds.
- `compare`: configuration `a` against configuration `b` (two `where`s, same task and gap):
  with `metric: solved`, a solved more (`>`) or fewer (`<`) of its seeds than b; with a metric,
  every seed of a lies below (`<`) or above (`>`) every seed of b.
- `part`: the runs of `a` and `b` with the same seed computed different training steps: their
  `metric` histories (`train_loss`) differ at some step up to the horizon, in at least
  `at_least` of the `of` seeds (a mechanism: whether clipping changed anything at all).

A metric is read from the run's history (`eval_loss`, `eval_accuracy`, ...), as its value at
the last evaluation at or before the horizon (`statistic: last`), or the lowest (`min`) or
highest (`max`) value up to it.

What decides a run (the rule the scorecard states):
- a run that is not a result (failed, killed, no status) decides nothing;
- a run that ended `solved` or `diverged` stopped for good: it decides (a diverged run counts
  as not solved and as outside every interval);
- an unsolved run decides once it trained up to the horizon, except that a solve count treats
  one still `improving` at its end (its `end_state` tag) as undecided: budget-limited, not
  evidence of failure;
- before the horizon a `min` or `max` statistic can already settle the answer: a lowest loss
  below an upper bound stays below it; one below a lower bound stays below. A short run can
  show that something happens, never that it does not.

Verdicts: `holds` (✓) when enough seeds say yes, `fails` (✗) when too many say no for the
claim to still hold, `undecided` when the undecided and missing seeds could tip it either way,
and `not run` when no run of the experiment matches. Two more say why a claim is not decided:
- `not exercised`: a comparison whose two arms ran identical steps (the same training-loss
  history, seed by seed: e.g. a clipping threshold never reached, so clipped and unclipped are
  one run twice) says nothing about what separates them; it is never scored ✗;
- `needs the full budget`: a claim marked `full_budget: true` (its horizon is beyond what the
  2-core CPU part of the preset trains) that its runs leave undecided or did not run.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness import names
from harness.report.load import RUN_ID, RUN_NAME, ReportError, Sweep, load_metric_histories
from harness.schema import PROJECT_ROOT

CLAIMS_DIR = PROJECT_ROOT / "conf" / "experiment" / "paper" / "claims"
SCORECARD_CSV = "scorecard.csv"

SOLVED_KIND, WITHIN, INTERVAL, COMPARE, PART = "solved", "within", "interval", "compare", "part"
KINDS = (SOLVED_KIND, WITHIN, INTERVAL, COMPARE, PART)
PAIRED = (COMPARE, PART)  # the kinds with two arms, a and b, paired by seed
LAST, MIN, MAX = "last", "min", "max"
STATISTICS = (LAST, MIN, MAX)
SURENESS = ("read", "recalled", "measured", "derived")
HOLDS, FAILS, UNDECIDED, NOT_RUN = "holds", "fails", "undecided", "not run"
NOT_EXERCISED, NEEDS_FULL_BUDGET = "not exercised", "needs the full budget"
VERDICTS = (HOLDS, FAILS, UNDECIDED, NOT_EXERCISED, NEEDS_FULL_BUDGET, NOT_RUN)
MARKS = {HOLDS: "✓", FAILS: "✗", UNDECIDED: "undecided", NOT_EXERCISED: "not exercised",
         NEEDS_FULL_BUDGET: "needs the full budget", NOT_RUN: "not run"}
IDENTITY_METRIC = names.TRAIN_LOSS  # arms with the same history of it ran the same steps
SOLVED_METRIC = "solved"  # compare's metric for solve counts
RELATIONS = ("<", ">")
RULE_TEXT = (
    "A claim counts the first n seeds (lowest seed numbers) of the runs it selects, up to its "
    "horizon (the training steps the published outcome refers to). A run that ended solved "
    "or diverged decides; an unsolved run decides once it trained up to the horizon, except "
    "that a solve count treats one still improving at its end as undecided (budget-limited, "
    "not evidence of failure); before the horizon only a lowest or highest value that is "
    "already past a bound decides. Failed, killed and unfinished runs decide nothing. ✓: "
    "enough seeds say yes; ✗: too many say no for the claim to hold; undecided: the "
    "undecided or missing seeds could tip it either way; not exercised: a comparison whose "
    "arms ran identical steps (the same training loss, seed by seed), never ✗; needs the "
    "full budget: a claim whose horizon the 2-core part of the preset does not reach, left "
    "undecided by its runs; not run: no run matches.")

_FILE_KEYS = {"source", "experiments", "steps", "claims"}
_COMMON_KEYS = {"id", "text", "sureness", "kind", "task", "gap", "steps", "full_budget"}
_KIND_KEYS = {
    SOLVED_KIND: {"where", "at_least", "at_most", "of"},
    WITHIN: {"where", "metric", "statistic", "value", "tolerance", "at_least", "of"},
    INTERVAL: {"where", "metric", "statistic", "low", "high", "at_least", "of"},
    COMPARE: {"a", "b", "metric", "statistic", "relation", "of"},
    PART: {"a", "b", "metric", "at_least", "of"},
}
# Columns of scorecard.csv, one row per claim.
COLUMNS = ("claim", "verdict", "mark", "sureness", "kind", "task", "gap", "selects", "steps",
           "text", "evidence", "seeds_yes", "seeds_no", "seeds_undecided", "seeds_needed",
           "seeds_counted", "runs")


@dataclass(frozen=True)
class Claim:
    """One published outcome in checkable form (module docstring)."""

    id: str
    text: str
    sureness: str
    kind: str
    task: str
    gap: int
    steps: int
    where: dict[str, object] = field(default_factory=dict)
    at_least: int | None = None
    at_most: int | None = None
    of: int = 1
    metric: str = ""
    statistic: str = LAST
    value: float | str | None = None
    tolerance: float | None = None
    low: float | None = None
    high: float | None = None
    a: dict[str, object] = field(default_factory=dict)
    b: dict[str, object] = field(default_factory=dict)
    relation: str = "<"
    full_budget: bool = False  # the horizon is beyond the preset's 2-core part

    def bounds(self) -> tuple[float | None, float | None]:
        """[low, high] of an interval or within claim (a within claim's at this gap)."""
        if self.kind == WITHIN:
            target = formula_value(self.value, self.gap)
            half = abs(target) * float(self.tolerance or 0.0)
            return target - half, target + half
        return self.low, self.high


@dataclass(frozen=True)
class ClaimsFile:
    path: Path
    source: str
    experiments: tuple[str, ...]
    claims: tuple[Claim, ...]


@dataclass(frozen=True)
class Scorecard:
    """The claims file used and one row per claim (COLUMNS)."""

    path: Path
    source: str
    table: pd.DataFrame

    def counts(self) -> dict[str, int]:
        return {v: int((self.table["verdict"] == v).sum()) for v in VERDICTS}


# --- formulas ------------------------------------------------------------------------------

_FUNCTIONS: dict[str, Callable[[float], float]] = {
    "ln": math.log, "log": math.log, "log10": math.log10, "sqrt": math.sqrt, "exp": math.exp}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}


def formula_value(formula: object, gap: int) -> float:
    """A claim's `value`: a number, or arithmetic in `gap` with ln/log/log10/sqrt/exp."""
    if isinstance(formula, int | float) and not isinstance(formula, bool):
        return float(formula)

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id == "gap":
            return float(gap)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in _FUNCTIONS and len(node.args) == 1 and not node.keywords):
            return _FUNCTIONS[node.func.id](walk(node.args[0]))
        raise ValueError(f"not allowed in a claim's value: {ast.dump(node)[:60]}")

    try:
        return walk(ast.parse(str(formula), mode="eval"))
    except SyntaxError as err:
        raise ValueError(f"claim value {formula!r} is not a formula: {err.msg}") from err


# --- reading claims files ------------------------------------------------------------------


def _number(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number or null, got {value!r}")
    return float(value)


def _count(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a whole number >= 0, got {value!r}")
    return value


def _selector(value: object, what: str) -> dict[str, object]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must map param keys to values, got {value!r}")
    return {str(k): v for k, v in value.items()}


def _claim(raw: object, steps: object, index: int) -> Claim:
    if not isinstance(raw, Mapping):
        raise ValueError(f"claim {index} is not a mapping")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ValueError(f"claim {index}: kind must be one of {KINDS}, got {kind!r}")
    unknown = set(raw) - _COMMON_KEYS - _KIND_KEYS[kind]
    if unknown:
        raise ValueError(f"claim {raw.get('id', index)!r}: unknown keys {sorted(unknown)} for "
                         f"kind {kind!r} (allowed: {sorted(_COMMON_KEYS | _KIND_KEYS[kind])})")
    for key in ("id", "text", "sureness", "task", "gap"):
        if raw.get(key) is None:
            raise ValueError(f"claim {raw.get('id', index)!r} lacks {key!r}")
    ident = str(raw["id"])
    if raw["sureness"] not in SURENESS:
        raise ValueError(f"claim {ident!r}: sureness must be one of {SURENESS}")
    horizon = _count(raw.get("steps", steps), f"claim {ident!r}: steps")
    if horizon is None:  # 0 is a horizon: the value at step 0, at init
        raise ValueError(f"claim {ident!r}: no steps (the horizon), in the claim or the file")
    full_budget = raw.get("full_budget", False)
    if not isinstance(full_budget, bool):
        raise ValueError(f"claim {ident!r}: full_budget must be true or false")
    statistic = raw.get("statistic", LAST)
    if statistic not in STATISTICS:
        raise ValueError(f"claim {ident!r}: statistic must be one of {STATISTICS}")
    claim = Claim(
        id=ident, text=str(raw["text"]), sureness=str(raw["sureness"]), kind=str(kind),
        task=str(raw["task"]), gap=int(_count(raw["gap"], f"claim {ident!r}: gap") or 0),
        steps=horizon, where=_selector(raw.get("where"), f"claim {ident!r}: where"),
        at_least=_count(raw.get("at_least"), f"claim {ident!r}: at_least"),
        at_most=_count(raw.get("at_most"), f"claim {ident!r}: at_most"),
        of=_count(raw.get("of", 1), f"claim {ident!r}: of") or 0,
        metric=str(raw.get("metric", "")), statistic=str(statistic), value=raw.get("value"),
        tolerance=_number(raw.get("tolerance"), f"claim {ident!r}: tolerance"),
        low=_number(raw.get("low"), f"claim {ident!r}: low"),
        high=_number(raw.get("high"), f"claim {ident!r}: high"),
        a=_selector(raw.get("a"), f"claim {ident!r}: a"),
        b=_selector(raw.get("b"), f"claim {ident!r}: b"),
        relation=str(raw.get("relation", "<")), full_budget=full_budget)
    _check(claim)
    return claim


def _check(claim: Claim) -> None:
    """The kind's own rules: what each kind needs to be decidable."""
    where = f"claim {claim.id!r}"
    if claim.of < 1:
        raise ValueError(f"{where}: of must be at least 1")
    if claim.kind == SOLVED_KIND:
        if (claim.at_least is None) == (claim.at_most is None):
            raise ValueError(f"{where}: give exactly one of at_least and at_most")
        if (claim.at_least if claim.at_least is not None else claim.at_most or 0) > claim.of:
            raise ValueError(f"{where}: the count exceeds of = {claim.of}")
        return
    if not claim.metric:
        raise ValueError(f"{where}: needs a metric")
    if claim.kind in PAIRED and (not claim.a or not claim.b):
        raise ValueError(f"{where}: {claim.kind} needs both a and b")
    if claim.kind == COMPARE:
        if claim.relation not in RELATIONS:
            raise ValueError(f"{where}: relation must be one of {RELATIONS}")
        return
    if claim.at_least is None or not 1 <= claim.at_least <= claim.of:
        raise ValueError(f"{where}: at_least must be between 1 and of = {claim.of}")
    if claim.metric == SOLVED_METRIC:
        raise ValueError(f"{where}: use kind solved to count solves")
    if claim.kind == WITHIN:
        if claim.tolerance is None or claim.tolerance < 0 or claim.value is None:
            raise ValueError(f"{where}: within needs a value and a tolerance >= 0")
        formula_value(claim.value, claim.gap)
    elif claim.kind == INTERVAL and claim.low is None and claim.high is None:
        raise ValueError(f"{where}: interval needs low, high or both")


def read_claims(path: Path) -> ClaimsFile:
    """Parse and check one claims file; a mistake raises ReportError naming the file."""
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        if not isinstance(raw, dict):
            raise ValueError("the file is not a mapping")
        unknown = set(raw) - _FILE_KEYS
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)} (allowed: {sorted(_FILE_KEYS)})")
        experiments = raw.get("experiments") or []
        if not isinstance(experiments, list) or not experiments:
            raise ValueError("experiments must list the experiment names it applies to")
        claims = raw.get("claims") or []
        if not isinstance(claims, list) or not claims:
            raise ValueError("no claims")
        parsed = tuple(_claim(c, raw.get("steps"), i) for i, c in enumerate(claims))
        ids = [c.id for c in parsed]
        if len(set(ids)) != len(ids):
            raise ValueError(f"claim ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    except (OSError, OmegaConfBaseException, ValueError) as err:
        raise ReportError(f"claims file {path}: {err}") from err
    return ClaimsFile(path, str(raw.get("source", "")), tuple(map(str, experiments)), parsed)


def claims_for(experiment: str, folder: Path = CLAIMS_DIR) -> ClaimsFile | None:
    """The claims file in `folder` whose `experiments` list `experiment`, or None."""
    if not folder.is_dir():
        return None
    found = [c for c in map(read_claims, sorted(folder.glob("*.yaml")))
             if experiment in c.experiments]
    if len(found) > 1:
        raise ReportError(f"experiment {experiment!r} is claimed by several files: "
                          + ", ".join(str(c.path) for c in found))
    return found[0] if found else None


# --- selecting runs ------------------------------------------------------------------------


def _matches(column: pd.Series, wanted: object) -> pd.Series:
    """Which params (strings, None where unset) equal `wanted` (numbers compared as numbers)."""
    if wanted is None:
        return column.isna()
    if isinstance(wanted, bool):
        return column.astype(str).str.lower() == str(wanted).lower()
    if isinstance(wanted, int | float):
        numbers = pd.to_numeric(column, errors="coerce").astype(float)
        return (numbers - float(wanted)).abs() <= 1e-9 * max(abs(float(wanted)), 1e-12)
    return column.astype(str) == str(wanted)


def select(sweep: Sweep, task: str, gap: int, where: Mapping[str, object]) -> pd.DataFrame:
    """The runs of `task` at `gap` whose params equal every `where` value."""
    runs = sweep.runs
    keep = (runs[names.TASK_LABEL] == task) & (runs[names.GAP] == gap)
    params = sweep.params.set_index(RUN_ID).reindex(runs[RUN_ID])
    for key, wanted in where.items():
        column = (params[key] if key in params.columns
                  else pd.Series([None] * len(params), index=params.index, dtype=object))
        keep &= _matches(column, wanted).to_numpy()
    return runs[keep.fillna(False).astype(bool)]


def _first_seeds(runs: pd.DataFrame, n: int) -> tuple[list[int], int]:
    """The n lowest seeds that ran, and how many seeds ran in all."""
    seeds = sorted(int(s) for s in runs[names.SEED].dropna().unique())
    return seeds[:n], len(seeds)


# --- deciding runs -------------------------------------------------------------------------

YES, NO, OPEN = "yes", "no", "undecided"
RESULTS = (names.SOLVED, names.UNSOLVED, names.DIVERGED)


@dataclass(frozen=True)
class RunCall:
    """What one run says about a claim: yes, no or undecided, with its value and why."""

    seed: int
    call: str
    value: float | None
    note: str


def _steps(value: object) -> int | None:
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return None if pd.isna(number) else int(round(float(number)))


def _steps_text(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def solve_call(run: Mapping[str, object], horizon: int) -> tuple[str, str]:
    """(call, note) of one run for "solved within `horizon` steps"."""
    status = str(run[names.STATUS])
    ran = _steps(run[names.STEPS_RUN])
    if status not in RESULTS:
        return OPEN, f"{status}: not a result"
    if status == names.SOLVED:
        at = _steps(run[names.STEPS_TO_SOLVE])
        if at is not None and at > horizon:
            return NO, f"solved at step {at:,}, after the horizon"
        return YES, f"solved at step {_steps_text(at)}"
    if status == names.DIVERGED:
        return NO, f"diverged at step {_steps_text(_steps(run.get(names.DIVERGED_STEP)))}"
    state = run.get(names.END_STATE)
    state = str(state) if isinstance(state, str) else "end state unknown"
    if ran is None or ran < horizon:
        return OPEN, f"unsolved after {_steps_text(ran)} of {horizon:,} steps ({state})"
    if state == names.IMPROVING:
        return OPEN, f"unsolved, still improving at step {ran:,}"
    return NO, f"unsolved after {ran:,} steps ({state})"


def _statistic(points: pd.DataFrame, statistic: str) -> float | None:
    values = points["value"].astype(float)
    finite = points[values.map(math.isfinite)]
    if finite.empty:
        return None
    if statistic == LAST:
        return float(finite.sort_values("step")["value"].iloc[-1])
    return float(finite["value"].min() if statistic == MIN else finite["value"].max())


def value_call(run: Mapping[str, object], points: pd.DataFrame, claim: Claim,
               low: float | None, high: float | None,
               early: bool = True) -> tuple[str, float | None, str]:
    """(call, value, note) of one run for "the metric's statistic lies in [low, high]".

    `early`: whether a running minimum (maximum) past a bound decides before the horizon (not
    for a comparison, whose values must be final).
    """
    status = str(run[names.STATUS])
    ran = _steps(run[names.STEPS_RUN])
    if status not in RESULTS:
        return OPEN, None, f"{status}: not a result"
    if status == names.DIVERGED:
        return NO, None, "diverged"
    upto = points[points["step"] <= claim.steps]
    value = _statistic(upto, claim.statistic)
    if value is None:
        return OPEN, None, f"no {claim.metric} logged up to step {claim.steps:,}"
    inside = (low is None or value >= low) and (high is None or value <= high)
    call = YES if inside else NO
    if status == names.SOLVED or (ran is not None and ran >= claim.steps):
        return call, value, "" if status != names.SOLVED else "stopped solved"
    # Before the horizon only a running minimum (maximum) past a bound is final: it can
    # only fall (rise) further.
    short = f"after {_steps_text(ran)} of {claim.steps:,} steps"
    if not early:
        return OPEN, value, short
    if claim.statistic == MIN:
        if low is not None and value < low:
            return NO, value, f"already below {low:.4g} {short}"
        if low is None and inside:
            return YES, value, f"reached {short}"
    if claim.statistic == MAX:
        if high is not None and value > high:
            return NO, value, f"already above {high:.4g} {short}"
        if high is None and inside:
            return YES, value, f"reached {short}"
    return OPEN, value, short


def _combine(calls: Sequence[str]) -> str:
    """A seed run more than once: yes only if every run says yes, no if any says no."""
    if any(c == NO for c in calls):
        return NO
    return YES if all(c == YES for c in calls) else OPEN


# --- evaluating claims ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Side:
    """The calls of the first `of` seeds of one selection."""

    calls: list[RunCall]
    seeds: list[int]
    n_seeds: int  # seeds that ran in all
    names: list[str]  # the runs used

    def per_seed(self) -> dict[int, str]:
        grouped: dict[int, list[str]] = {}
        for c in self.calls:
            grouped.setdefault(c.seed, []).append(c.call)
        return {s: _combine(v) for s, v in grouped.items()}


def _side(sweep: Sweep, claim: Claim, where: Mapping[str, object],
          histories: pd.DataFrame) -> _Side:
    runs = select(sweep, claim.task, claim.gap, where)
    seeds, n_seeds = _first_seeds(runs, claim.of)
    used = runs[runs[names.SEED].isin(seeds)]
    low, high = claim.bounds()
    calls = []
    for run in used.to_dict("records"):
        seed = int(run[names.SEED])  # type: ignore[call-overload]
        if claim.kind == SOLVED_KIND or claim.metric == SOLVED_METRIC:
            call, note = solve_call(run, claim.steps)
            calls.append(RunCall(seed, call, None, note))
        else:
            points = histories[(histories[RUN_ID] == run[RUN_ID])
                               & (histories["key"] == claim.metric)]
            call, value, note = value_call(run, points, claim, low, high,
                                           early=claim.kind != COMPARE)
            calls.append(RunCall(seed, call, value, note))
    return _Side(calls, seeds, n_seeds, sorted(str(n) for n in used[RUN_NAME]))


def _seed_text(side: _Side, metric: str) -> str:
    """`s0 0.0946 (after 2,000 of 20,000 steps); s1 solved at step 1,250`."""
    parts = []
    for c in sorted(side.calls, key=lambda c: (c.seed, c.note)):
        text = f"s{c.seed}"
        if c.value is not None:
            text += f" {c.value:.4g}"
        if c.note:
            text += f" {c.note}" if c.value is None else f" ({c.note})"
        parts.append(text)
    prefix = f"{metric}: " if metric and metric != SOLVED_METRIC else ""
    return prefix + "; ".join(parts)


def _quantified(claim: Claim, side: _Side) -> tuple[str, dict[str, int], str]:
    """Verdict, counts and evidence of a solved/within/interval claim."""
    per_seed = side.per_seed()
    yes = sum(c == YES for c in per_seed.values())
    no = sum(c == NO for c in per_seed.values())
    missing = claim.of - len(per_seed)
    open_ = claim.of - yes - no
    if claim.kind == SOLVED_KIND and claim.at_most is not None:
        # "at most k solved" is "at least of - k not solved"
        need, good, bad = claim.of - claim.at_most, no, yes
    else:
        need, good, bad = claim.at_least or 0, yes, no
    if good >= need:
        verdict = HOLDS
    elif bad > claim.of - need:
        verdict = FAILS
    else:
        verdict = UNDECIDED
    counted = f"seeds {', '.join(map(str, side.seeds))}" if side.seeds else "no seed"
    if side.n_seeds > len(side.seeds):
        counted += f" (the first {claim.of} of {side.n_seeds})"
    word = {SOLVED_KIND: "solved", PART: "parted"}.get(claim.kind, "in range")
    evidence = f"{yes} of {claim.of} {word}"
    if claim.kind not in (SOLVED_KIND, PART):
        low, high = claim.bounds()
        evidence += f" [{_bound(low)}, {_bound(high)}]"
    if open_ > missing:  # e.g. a value inside the bounds before the horizon: not yet a yes
        evidence += f", {open_ - missing} not decided yet"
    evidence += f" ({counted}"
    evidence += f"; {missing} seed(s) not run)" if missing > 0 else ")"
    evidence += ": " + _seed_text(side, claim.metric)
    counts = {"yes": yes, "no": no, "open": open_, "need": need}
    return verdict, counts, evidence


def _bound(value: float | None) -> str:
    return "-inf" if value is None else f"{value:.4g}"


def _compare(claim: Claim, a: _Side, b: _Side) -> tuple[str, dict[str, int], str]:
    """Verdict, counts (of a's seeds) and evidence of a compare claim."""
    sides = (a, b)
    more = claim.relation == ">"
    if claim.metric == SOLVED_METRIC:
        ranges = []
        for side in sides:
            per_seed = side.per_seed()
            yes = sum(c == YES for c in per_seed.values())
            ranges.append((yes, yes + claim.of - sum(c != OPEN for c in per_seed.values())))
        (a_lo, a_hi), (b_lo, b_hi) = ranges
        if (a_lo > b_hi) if more else (a_hi < b_lo):
            verdict = HOLDS
        elif (a_hi <= b_lo) if more else (a_lo >= b_hi):
            verdict = FAILS
        else:
            verdict = UNDECIDED
        evidence = (f"a solved {a_lo}" + (f" to {a_hi}" if a_hi > a_lo else "")
                    + f" of {claim.of}, b {b_lo}" + (f" to {b_hi}" if b_hi > b_lo else "")
                    + f" of {claim.of}")
    else:
        values = [[c.value for c in side.calls if c.call != OPEN and c.value is not None]
                  for side in sides]
        complete = all(len(side.per_seed()) == claim.of
                       and all(c.call != OPEN and c.value is not None for c in side.calls)
                       for side in sides)
        verdict = UNDECIDED
        if complete:
            (va, vb) = values
            if (min(va) > max(vb)) if more else (max(va) < min(vb)):
                verdict = HOLDS
            elif (max(va) <= min(vb)) if more else (min(va) >= max(vb)):
                verdict = FAILS
        diverged = any(c.value is None and c.call == NO for s in sides for c in s.calls)
        evidence = ("every seed of a must lie " + ("above" if more else "below")
                    + " every seed of b" + ("" if complete else
                                            "; not every seed decided yet")
                    + ("; a diverged run has no value to compare" if diverged else ""))
    evidence += f". a ({len(a.seeds)} seeds): {_seed_text(a, claim.metric) or 'no run'}"
    evidence += f". b ({len(b.seeds)} seeds): {_seed_text(b, claim.metric) or 'no run'}"
    per_a = a.per_seed()
    counts = {"yes": sum(c == YES for c in per_a.values()),
              "no": sum(c == NO for c in per_a.values()),
              "open": claim.of - sum(c != OPEN for c in per_a.values()), "need": claim.of}
    return verdict, counts, evidence


def _pairs(sweep: Sweep, claim: Claim) -> list[tuple[int, dict, dict]]:
    """(seed, run of a, run of b) for the first `of` seeds that ran in both arms."""
    a, b = (select(sweep, claim.task, claim.gap, w) for w in (claim.a, claim.b))
    seeds = sorted(set(a[names.SEED].dropna().astype(int))
                   & set(b[names.SEED].dropna().astype(int)))
    return [(seed, a[a[names.SEED] == seed].iloc[0].to_dict(),
             b[b[names.SEED] == seed].iloc[0].to_dict()) for seed in seeds[:claim.of]]


def _history(histories: pd.DataFrame, run: Mapping[str, object], metric: str,
             horizon: int) -> list[tuple[int, float]]:
    points = histories[(histories[RUN_ID] == run[RUN_ID]) & (histories["key"] == metric)
                       & (histories["step"] <= horizon)]
    return [(int(step), float(value))
            for step, value in points.sort_values("step")[["step", "value"]].itertuples(
                index=False)]


def _identical(sweep: Sweep, claim: Claim, histories: pd.DataFrame) -> bool:
    """Whether the two arms ran the same steps: for every seed both ran (at least one), the
    same training-loss history, point for point, up to the horizon."""
    pairs = _pairs(sweep, claim)
    return bool(pairs) and all(
        (mine := _history(histories, a, IDENTITY_METRIC, claim.steps))
        and mine == _history(histories, b, IDENTITY_METRIC, claim.steps)
        for _, a, b in pairs)


def _part(sweep: Sweep, claim: Claim,
          histories: pd.DataFrame) -> tuple[str, dict[str, int], str, list[str]]:
    """Verdict, counts, evidence and runs of a part claim: per seed, yes where the arms'
    `metric` histories differ up to the horizon; no where they are the same and both ran to
    it (or stopped solved or diverged); undecided otherwise."""
    calls, used = [], []
    for seed, a, b in _pairs(sweep, claim):
        used += [str(a[RUN_NAME]), str(b[RUN_NAME])]
        first, second = (_history(histories, run, claim.metric, claim.steps) for run in (a, b))
        done = all(str(run[names.STATUS]) in (names.SOLVED, names.DIVERGED)
                   or (_steps(run[names.STEPS_RUN]) or 0) >= claim.steps for run in (a, b))
        if not all(str(run[names.STATUS]) in RESULTS for run in (a, b)):
            calls.append(RunCall(seed, OPEN, None, "not a result"))
            continue
        differ = next((step for (step, x), (other, y) in zip(first, second, strict=False)
                       if step != other or x != y), None)
        if differ is not None:
            calls.append(RunCall(seed, YES, None, f"parted at step {differ:,}"))
        elif len(first) != len(second):
            calls.append(RunCall(seed, YES, None, "one arm stopped earlier"))
        elif done:
            calls.append(RunCall(seed, NO, None, f"the same {claim.metric} at all "
                                 f"{len(first)} points up to step {claim.steps:,}"))
        else:
            calls.append(RunCall(seed, OPEN, None, "the same so far, before the horizon"))
    side = _Side(calls, [c.seed for c in calls], len(calls), used)
    verdict, counts, evidence = _quantified(claim, side)
    return verdict, counts, evidence, used


def _selects(claim: Claim) -> str:
    def text(where: Mapping[str, object]) -> str:
        return ", ".join(f"{k}={v}" for k, v in where.items()) or "every run"
    if claim.kind in PAIRED:
        return f"a: {text(claim.a)} | b: {text(claim.b)}"
    return text(claim.where)


def _history_plan(sweep: Sweep, claims: Sequence[Claim]) -> dict[str, list[str]]:
    """{run_id: metric keys} the value claims read from the runs' histories."""
    plan: dict[str, set[str]] = {}
    for claim in claims:
        keys = set() if claim.kind == SOLVED_KIND or claim.metric == SOLVED_METRIC \
            else {claim.metric}
        if claim.kind in PAIRED:
            keys.add(IDENTITY_METRIC)  # whether the arms ran the same steps
        for where in ((claim.a, claim.b) if claim.kind in PAIRED else (claim.where,)):
            for rid in select(sweep, claim.task, claim.gap, where)[RUN_ID]:
                plan.setdefault(str(rid), set()).update(keys)
    return {rid: sorted(keys) for rid, keys in sorted(plan.items())}


def evaluate(claims_file: ClaimsFile, sweep: Sweep, histories: pd.DataFrame) -> Scorecard:
    """Every claim of `claims_file` against the runs of `sweep` (`histories`: the long frame
    of `load_metric_histories` holding at least `history_plan`'s metrics)."""
    rows = []
    for claim in claims_file.claims:
        if claim.kind == PART:
            verdict, counts, evidence, used = _part(sweep, claim, histories)
            ran, counted = bool(used), len(used) // 2
        elif claim.kind == COMPARE:
            a, b = (_side(sweep, claim, w, histories) for w in (claim.a, claim.b))
            ran = bool(a.calls) and bool(b.calls)
            verdict, counts, evidence = _compare(claim, a, b)
            used = [*a.names, *b.names]
            counted = len(a.seeds)
            if ran and _identical(sweep, claim, histories):
                verdict = NOT_EXERCISED
                evidence = ("a and b ran identical steps (the same training loss at every "
                            "logged step, seed by seed): nothing separated them. " + evidence)
        else:
            side = _side(sweep, claim, claim.where, histories)
            ran = bool(side.calls)
            verdict, counts, evidence = _quantified(claim, side)
            used = side.names
            counted = len(side.seeds)
        if not ran:
            verdict, evidence = NOT_RUN, "no run of this experiment matches"
        if claim.full_budget and verdict in (UNDECIDED, NOT_RUN):
            verdict = NEEDS_FULL_BUDGET
            evidence = f"its horizon, {claim.steps:,} steps, is the full preset's. {evidence}"
        rows.append({
            "claim": claim.id, "verdict": verdict, "mark": MARKS[verdict],
            "sureness": claim.sureness, "kind": claim.kind, "task": claim.task,
            "gap": claim.gap, "selects": _selects(claim), "steps": claim.steps,
            "text": claim.text, "evidence": evidence, "seeds_yes": counts["yes"],
            "seeds_no": counts["no"], "seeds_undecided": counts["open"],
            "seeds_needed": counts["need"], "seeds_counted": counted, "runs": " ".join(used)})
    return Scorecard(claims_file.path, claims_file.source,
                     pd.DataFrame(rows, columns=list(COLUMNS)))


def scorecard(experiment: str, sweep: Sweep, tracking_uri: str,
              claims_path: Path | None = None) -> Scorecard | None:
    """The experiment's scorecard: from `claims_path`, else the claims file that names the
    experiment; None when there is none."""
    found = read_claims(claims_path) if claims_path is not None else claims_for(experiment)
    if found is None:
        return None
    histories = load_metric_histories(_history_plan(sweep, found.claims), tracking_uri)
    return evaluate(found, sweep, histories)


# --- words ---------------------------------------------------------------------------------

DISPLAY_HEADER = ("", "claim (sureness)", "task · gap", "selects", "horizon", "verdict",
                  "the numbers behind it")


def display_rows(card: Scorecard) -> list[list[str]]:
    return [[str(r["mark"]) if r["verdict"] in (HOLDS, FAILS) else "",
             f"{r['text']} ({r['sureness']})", f"{r['task']} · {r['gap']}", str(r["selects"]),
             f"{int(r['steps']):,} steps", str(r["verdict"]), str(r["evidence"])]
            for r in card.table.to_dict("records")]


def summary_text(card: Scorecard) -> str:
    """`Published claims: 2 ✓, 1 ✗, 3 undecided, 1 not run (of 7).`"""
    counts = card.counts()
    parts = [f"{counts[v]} {MARKS[v]}" for v in VERDICTS if counts[v]]
    return f"Published claims: {', '.join(parts)} (of {len(card.table)})."


def source_text(card: Scorecard) -> str:
    where = card.path.relative_to(PROJECT_ROOT) if card.path.is_relative_to(PROJECT_ROOT) \
        else card.path
    return f"Claims from `{where}`" + (f" ({card.source})" if card.source else "") + "."


