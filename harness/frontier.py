"""The gap frontier: the largest gap a configuration solves, searched adaptively over seeds.

This module is the search itself, pure and deterministic: it knows nothing of Hydra, MLflow
or training. The sweeper (hydra_plugins/frontier_sweeper) asks it which probes to run,
launches them, and tells it the outcomes; resuming an interrupted search is the same as
starting it again with the outcomes already in the store, because `Search.plan` replays the
search from scratch over whatever outcomes are known.

The rule (`frontier.*` in the config):

- **Ladder.** Gaps `gap_min`, `gap_min*ratio`, ... up to `gap_max`, rounded to integers,
  duplicates dropped (`ladder`). The same seeds 0..n-1 are used at every gap (common random
  numbers: two levels are compared on the same initializations and data streams).
- **A level holds** when at least `m` of `n` seeds solve it. Seeds are run sequentially, in
  order, and only while the verdict is open: first min(m, n-m+1) seeds, then as many more as
  could still decide it. With m=2, n=3 a third seed runs only where the first two disagree.
- **Undecided runs.** A run that ended unsolved but still improving (end state `improving`,
  harness/outcome.py) or whose job failed is *undecided*: neither a success nor a failure.
  When a level's verdict hinges on undecided runs once all n seeds ran, the ones that can go
  on (`Result.can_continue`: still improving below the budget cap, with their checkpoints)
  are continued (`plan` asks for them again), and the level is decided by how they end. A
  level still hinging on undecided runs after that is *censored*: the budget, not the model,
  decided it. It stops the upward search like a failure, but is reported as censored, never
  as failed.
- **Bracket, then bisect.** From the lowest rung, go up `stride` rungs at a time while the
  level holds; then bisect (in ladder index, i.e. in log gap) between the last level held and
  the first not held.
- **Confirm.** With `confirm`, the largest level held and the first not held get all n
  seeds, so the reported k/n at the boundary always has n seeds behind it.
- **Learning rates.** With `lrs`, every rate runs the first `m` seeds at the lowest rung; the
  best (most seeds solved, then fewest mean steps to solve, then lowest mean final loss) is
  carried up the ladder. With `every_level`, every rate runs at every probed level instead,
  each with its own seeds, and a level holds when it holds at some rate (the best of them,
  ranked as above, is the level's rate). Without `lrs`, the configuration's own `optim.lr`.
- **Quantile.** A level holds with probability P(Binomial(n, p) >= m) when each seed
  solves it with probability p. The reported gap is where that probability crosses 1/2:
  per-seed success rate `target_quantile(m, n)` (0.5 for 2 of 3, 0.21 for 1 of 3).
- **Holes.** With `check_above`, the rung `stride` above the first level not held is probed
  too; if it holds, the search goes on upward from it and the hole is reported.
- **Anomalies.** Every outcome is kept. The search flags a configuration as non-monotone when
  a level failed below a level that held, or a seed solved a gap it failed at a smaller one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

SOLVED, FAILED, UNDECIDED = "solved", "failed", "undecided"  # a probe's outcome
HELD, NOT_HELD, CENSORED, OPEN = "held", "not held", "censored", "open"  # a level's verdict


def ladder(gap_min: int, gap_max: int, ratio: float) -> list[int]:
    """Log-spaced integer gaps from gap_min up to (at most) gap_max."""
    if gap_min < 1 or gap_max < gap_min or ratio <= 1:
        raise ValueError(f"bad ladder: gap_min={gap_min}, gap_max={gap_max}, ratio={ratio}")
    gaps, value = [], float(gap_min)
    while round(value) <= gap_max:
        if not gaps or round(value) > gaps[-1]:
            gaps.append(round(value))
        value *= ratio
    return gaps


def target_quantile(m: int, n: int) -> float:
    """The per-seed success rate p at which an m-of-n level holds with probability 1/2."""
    def held(p: float) -> float:
        return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(m, n + 1))
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if held(mid) < 0.5 else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Rule:
    m: int = 2
    n: int = 3
    stride: int = 2
    confirm: bool = True
    check_above: bool = False  # probe one bracket step above the first level not held

    def __post_init__(self) -> None:
        if not 1 <= self.m <= self.n:
            raise ValueError(f"need 1 <= m <= n, got m={self.m}, n={self.n}")
        if self.stride < 1:
            raise ValueError(f"need stride >= 1, got {self.stride}")

    def describe(self) -> str:
        return (f"a gap holds when >= {self.m} of {self.n} seeds solve it (seeds added only "
                f"while undecided); bracket up {self.stride} rung(s) at a time, then bisect; "
                f"targets per-seed success rate {target_quantile(self.m, self.n):.2f}"
                + ("; boundary levels confirmed with all seeds" if self.confirm else "")
                + ("; the rung a stride above the first failure is checked, and the search "
                   "goes on above it if it holds" if self.check_above else ""))


@dataclass(frozen=True)
class Probe:
    """One run the search needs: configuration `key`, learning rate, gap, seed."""

    key: str
    lr: float | None
    gap: int
    seed: int


@dataclass(frozen=True)
class Result:
    """A probe's outcome: SOLVED, FAILED or UNDECIDED, with what ranks learning rates, and
    whether an undecided run can be continued to a larger budget (`can_continue`)."""

    outcome: str
    steps_to_solve: float | None = None
    final_loss: float | None = None
    can_continue: bool = False


def verdict(outcomes: Sequence[str | None], rule: Rule, full: bool = False
            ) -> tuple[str, list[int]]:
    """A level's verdict from its per-seed outcomes (None: not run yet), and the seeds to run
    next if it is OPEN. Seeds run in order; `full` asks for all n of them."""
    known = []
    for outcome in outcomes[:rule.n]:
        if outcome is None:
            break
        known.append(outcome)
    ran, left = len(known), rule.n - len(known)
    s, f = known.count(SOLVED), known.count(FAILED)
    u = ran - s - f
    if not full or left == 0:
        if s >= rule.m:
            return HELD, []
        if s + u + left < rule.m:
            return NOT_HELD, []
        if left == 0:
            return CENSORED, []
    if full:
        return OPEN, list(range(ran, rule.n))
    need = max(1, min(rule.m - s, rule.n - rule.m + 1 - f))
    return OPEN, list(range(ran, min(rule.n, ran + need)))


@dataclass
class Frontier:
    """The answer for one configuration (a row of names.FRONTIER_ARTIFACT)."""

    key: str
    lr: float | None
    done: bool
    gap_held: int | None = None  # the largest gap held (None: not even the lowest rung)
    held_solved: int | None = None  # seeds that solved gap_held ...
    held_seeds: int | None = None  # ... of this many run
    gap_failed: int | None = None  # the first gap above gap_held not held (None: top held)
    failed_censored: bool = False  # gap_failed is censored (undecided runs), not failed
    censored_gaps: list[int] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)  # every probe the search used
    # per probed level, the rate its verdict is read at (`Search.every_level`: the best there;
    # else the configuration's one rate)
    level_lrs: dict[int, float | None] = field(default_factory=dict)


class Search:
    """The search over every configuration. `plan()` gives the probes still needed (mixed
    across configurations, so a batch keeps every worker busy): new ones, and known undecided
    ones to continue; `tell()` records outcomes (a continued probe's replace its earlier)."""

    def __init__(self, keys: Iterable[str], gaps: Sequence[int], rule: Rule,
                 lrs: Sequence[float] | None = None, every_level: bool = False):
        self.keys = list(keys)
        self.gaps = list(gaps)
        self.rule = rule
        self.lrs = list(lrs) if lrs else [None]
        self.every_level = every_level and len(self.lrs) > 1
        self.results: dict[Probe, Result] = {}

    def tell(self, probe: Probe, result: Result) -> None:
        self.results[probe] = result

    def plan(self) -> list[Probe]:
        """Every probe some configuration needs now, in configuration order."""
        wanted = []
        for key in self.keys:
            wanted += self.frontier(key)[1]
        return wanted

    @property
    def done(self) -> bool:
        return not self.plan()

    def frontiers(self) -> list[Frontier]:
        return [self.frontier(key)[0] for key in self.keys]

    def grid_runs(self) -> int:
        """Runs of the full grid of the same ladder, seeds and learning rates."""
        return len(self.keys) * len(self.gaps) * self.rule.n * len(self.lrs)

    # --- one configuration, replayed from its known outcomes ---

    def outcomes(self, key: str, lr: float | None, gap: int) -> list[str | None]:
        found = [self.results.get(Probe(key, lr, gap, seed)) for seed in range(self.rule.n)]
        return [r.outcome if r else None for r in found]

    def level(self, key: str, lr: float | None, gap: int, full: bool = False
              ) -> tuple[str, list[Probe]]:
        """A level's verdict at `lr` (with `every_level`: at its best rate) and the probes it
        still needs (`full`: all n seeds where it holds, at the rate it holds at; where it
        does not, at every rate): new seeds while it is OPEN, and where it is CENSORED the
        undecided runs that can be continued."""
        rates = self.lrs if self.every_level else [lr]
        found = {rate: verdict(self.outcomes(key, rate, gap), self.rule) for rate in rates}
        held = [rate for rate, (state, _) in found.items() if state == HELD]
        if held:
            best = self.best_lr(key, gap, held) if full else held[0]
            seeds = verdict(self.outcomes(key, best, gap), self.rule, full)[1] if full else []
            return HELD, [Probe(key, best, gap, seed) for seed in seeds]
        missing = [Probe(key, rate, gap, seed) for rate, (state, seeds) in found.items()
                   if state == OPEN for seed in seeds]
        if full and not missing:
            missing = [Probe(key, rate, gap, seed) for rate in rates
                       for seed in verdict(self.outcomes(key, rate, gap), self.rule, True)[1]]
        if missing:
            return OPEN, missing
        if all(state == NOT_HELD for state, _ in found.values()):
            return NOT_HELD, []
        go_on = [probe for rate, (state, _) in found.items() if state == CENSORED
                 for probe in (Probe(key, rate, gap, seed) for seed in range(self.rule.n))
                 if probe in self.results and self.results[probe].can_continue]
        return CENSORED, go_on

    def frontier(self, key: str) -> tuple[Frontier, list[Probe]]:
        lr, missing = (None, []) if self.every_level else self.choose_lr(key)
        if missing:
            return Frontier(key, None, False), missing

        def level(index: int, full: bool = False) -> tuple[str, list[Probe]]:
            return self.level(key, lr, self.gaps[index], full)

        lo, hi, index, last = None, None, 0, len(self.gaps) - 1
        while True:  # bracket upward
            state, missing = level(index)
            if missing:
                return Frontier(key, lr, False), missing
            if state != HELD:
                hi = index
                above = min(index + self.rule.stride, last)
                if not self.rule.check_above or index == last:
                    break
                state, missing = level(above)
                if missing:
                    return Frontier(key, lr, False), missing
                if state != HELD:
                    break
                hi, index = None, above  # a hole in the ladder: go on above it
            lo = index
            if index == last:
                break
            index = min(index + self.rule.stride, last)
        while lo is not None and hi is not None and hi - lo > 1:  # bisect in log gap
            mid = (lo + hi) // 2
            state, missing = level(mid)
            if missing:
                return Frontier(key, lr, False), missing
            lo, hi = (mid, hi) if state == HELD else (lo, mid)
        if self.rule.confirm:
            for index in (lo, hi):
                if index is not None:
                    state, missing = level(index, full=True)
                    if missing:
                        return Frontier(key, lr, False), missing
        used = sorted((p for p in self.results if p.key == key),
                      key=lambda p: (self.lrs.index(p.lr), p.gap, p.seed))
        probed = sorted({p.gap for p in used if p.lr == lr or self.every_level})
        level_lrs = {gap: self.level_lr(key, lr, gap) for gap in probed}
        held_lr = level_lrs[self.gaps[lo]] if lo is not None else \
            level_lrs.get(self.gaps[0], lr)
        out = Frontier(key, held_lr, True, probes=used, level_lrs=level_lrs)
        if lo is not None:
            outcomes = self.outcomes(key, held_lr, self.gaps[lo])
            out.gap_held = self.gaps[lo]
            out.held_solved = outcomes.count(SOLVED)
            out.held_seeds = sum(o is not None for o in outcomes)
        if hi is not None:
            out.gap_failed = self.gaps[hi]
            out.failed_censored = level(hi)[0] == CENSORED
        out.censored_gaps = [g for g in probed if self.level(key, lr, g)[0] == CENSORED]
        out.anomalies = self.anomalies(key, lr)
        return out, []

    def level_lr(self, key: str, lr: float | None, gap: int) -> float | None:
        """The rate a level's verdict is read at: `lr`, or with `every_level` the best rate
        among those it holds at (all rates where it holds at none)."""
        if not self.every_level:
            return lr
        held = [rate for rate in self.lrs
                if verdict(self.outcomes(key, rate, gap), self.rule)[0] == HELD]
        return self.best_lr(key, gap, held or self.lrs)

    def rank(self, key: str, lr: float | None, gap: int, seeds: Iterable[int]) -> tuple:
        """How a rate did at a level's seeds: most solved, then the fewest mean steps to
        solve, then the lowest mean final loss (lower ranks first)."""
        found = [r for r in (self.results.get(Probe(key, lr, gap, s)) for s in seeds) if r]
        solved = [r for r in found if r.outcome == SOLVED]
        steps = [r.steps_to_solve for r in solved if r.steps_to_solve is not None]
        losses = [r.final_loss for r in found if r.final_loss is not None]
        return (-len(solved), sum(steps) / len(steps) if steps else float("inf"),
                sum(losses) / len(losses) if losses else float("inf"))

    def best_lr(self, key: str, gap: int, rates: Sequence[float | None]) -> float | None:
        """The best of `rates` at a level, over the seeds they all ran (`rank`)."""
        ran = [{p.seed for p in self.results if (p.key, p.lr, p.gap) == (key, rate, gap)}
               for rate in rates]
        common = set.intersection(*ran) if ran else set()
        return min(rates, key=lambda rate: self.rank(key, rate, gap, common))

    def choose_lr(self, key: str) -> tuple[float | None, list[Probe]]:
        """The learning rate carried up the ladder (module docstring), or the probes needed
        at the lowest rung to choose it."""
        if self.lrs == [None]:
            return None, []
        gap, seeds = self.gaps[0], range(self.rule.m)
        missing = [Probe(key, lr, gap, s) for lr in self.lrs for s in seeds
                   if Probe(key, lr, gap, s) not in self.results]
        if missing:
            return None, missing
        return min(self.lrs, key=lambda lr: self.rank(key, lr, gap, seeds)), []

    def anomalies(self, key: str, lr: float | None) -> list[str]:
        """Evidence against a monotone boundary in this configuration's outcomes (with
        `every_level`, levels by their verdict over the rates, seeds per rate)."""
        notes = []
        states = {g: self.level(key, lr, g)[0] for g in self.gaps}
        held = [g for g, s in states.items() if s == HELD]
        for g, s in states.items():
            if s == NOT_HELD and held and g < max(held):
                notes.append(f"gap {g} not held below gap {max(held)} held")
        for rate in self.lrs if self.every_level else [lr]:
            at = f" at lr {rate:g}" if self.every_level and rate is not None else ""
            for seed in range(self.rule.n):
                per_gap = {g: self.results.get(Probe(key, rate, g, seed)) for g in self.gaps}
                failed = [g for g, r in per_gap.items() if r and r.outcome == FAILED]
                solved = [g for g, r in per_gap.items() if r and r.outcome == SOLVED]
                if failed and solved and min(failed) < max(solved):
                    notes.append(f"seed {seed}{at} failed gap {min(failed)} but solved gap "
                                 f"{max(solved)}")
        return notes


# --- variable gaps: a probe at level g trains on gaps drawn from the task's smallest up to g --

TOP_SHARE = 0.1  # a variable-gap probe is judged on its longest tenth of the gap range


def top_gaps(rows: Iterable[tuple[int, int, float, float]], gap: int, floor: int
             ) -> tuple[float, float] | None:
    """(accuracy, loss) over the final evaluation's sequences whose gap is among the top
    TOP_SHARE of [floor, gap] (at least the level itself), weighted by sequences; `rows`:
    (gap, sequences, eval loss, eval accuracy) as eval_by_gap.csv holds them. None when no
    sequence has such a gap."""
    count = max(1, math.ceil(TOP_SHARE * (gap - floor + 1)))
    top = [(n, loss, accuracy) for g, n, loss, accuracy in rows if g > gap - count and n > 0]
    total = sum(n for n, _, _ in top)
    if not total:
        return None
    return (sum(n * accuracy for n, _, accuracy in top) / total,
            sum(n * loss for n, loss, _ in top) / total)


def run_search(search: Search, call: Callable[[Probe], Result], max_rounds: int = 1000
               ) -> list[Frontier]:
    """Drive a search to its end with `call(probe) -> Result` (tests, benchmarks)."""
    for _ in range(max_rounds):
        batch = search.plan()
        if not batch:
            return search.frontiers()
        for probe in batch:
            search.tell(probe, call(probe))
    raise RuntimeError(f"the search did not finish in {max_rounds} rounds")


# --- P(solved) against log gap -------------------------------------------------------------


@dataclass(frozen=True)
class SolveCurve:
    """A logistic fit of P(solved) = 1 / (1 + exp(-(a + b ln gap))) over probed outcomes.

    `gap50` is the gap where the fitted probability is 0.5 (None when the fit does not fall
    with the gap: b >= 0); `low`/`high` the 2.5th/97.5th percentiles of gap50 over bootstrap
    resamples of the outcomes (None with fewer than half of the resamples falling); `boots`
    how many resamples gave a falling fit, of `resamples`."""

    a: float
    b: float
    gap50: float | None
    low: float | None
    high: float | None
    points: int
    boots: int
    resamples: int
    lowest: int  # the probed gaps' range
    highest: int
    solved: int  # outcomes that solved, of `points`

    def describe(self) -> str:
        """One clause for a report, e.g. `P(solved) = 0.5 at gap 22 (95% bootstrap 15-31)`."""
        fit = f"logistic in ln gap over {self.points} outcomes"
        if self.solved in (0, self.points):
            return (f"{'every' if self.solved else 'no'} outcome solved from gap {self.lowest} "
                    f"to {self.highest}: no P(solved) = 0.5 gap to fit")
        if self.gap50 is None:
            return f"P(solved) does not fall with the gap ({fit})"
        if self.gap50 > self.highest:
            return f"P(solved) = 0.5 above the largest probed gap, {self.highest} ({fit})"
        if self.gap50 < self.lowest:
            return f"P(solved) = 0.5 below the smallest probed gap, {self.lowest} ({fit})"
        band = (f"95% bootstrap {self.low:.3g}-{self.high:.3g}" if self.low is not None
                and self.high is not None else "bootstrap interval undefined: "
                f"{self.boots} of {self.resamples} resamples fell with the gap")
        return f"P(solved) = 0.5 at gap {self.gap50:.3g} ({band}; {fit})"


RIDGE = 0.1  # the L2 penalty that keeps the fit finite when solved and failed gaps separate


def _logistic(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(a, b) maximizing the penalized log likelihood, by Newton's method (a 2x2 system)."""
    import numpy as np

    xs, ys = np.asarray(x, float), np.asarray(y, float)
    centre = xs.mean()
    xc = xs - centre
    a = b = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(a + b * xc)))
        w = p * (1 - p)
        grad = np.array([np.sum(ys - p) - RIDGE * a, np.sum((ys - p) * xc) - RIDGE * b])
        hess = np.array([[w.sum() + RIDGE, (w * xc).sum()],
                         [(w * xc).sum(), (w * xc * xc).sum() + RIDGE]])
        step = np.linalg.solve(hess, grad)
        a, b = a + step[0], b + step[1]
        if abs(step).max() < 1e-9:
            break
    return float(a - b * centre), float(b)


def _gap50(a: float, b: float) -> float | None:
    return math.exp(min(-a / b, 700.0)) if b < -1e-9 else None


def solve_curve(outcomes: Iterable[tuple[int, bool]], resamples: int = 500, seed: int = 0
                ) -> SolveCurve | None:
    """Fit P(solved) against ln(gap) over (gap, solved) outcomes (undecided ones left out by
    the caller); None with fewer than 3 outcomes or no two distinct gaps."""
    import numpy as np

    points = [(int(g), bool(s)) for g, s in outcomes]
    if len(points) < 3 or len({g for g, _ in points}) < 2:
        return None
    x = [math.log(g) for g, _ in points]
    y = [float(s) for _, s in points]
    a, b = _logistic(x, y)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(resamples):
        pick = rng.integers(0, len(points), len(points))
        xb, yb = [x[i] for i in pick], [y[i] for i in pick]
        if len(set(xb)) < 2:
            continue
        g = _gap50(*_logistic(xb, yb))
        if g is not None:
            boots.append(g)
    low = high = None
    if len(boots) >= resamples / 2:
        low, high = (float(v) for v in np.percentile(boots, [2.5, 97.5]))
    gaps = [g for g, _ in points]
    return SolveCurve(a, b, _gap50(a, b), low, high, len(points), len(boots), resamples,
                      min(gaps), max(gaps), sum(s for _, s in points))
