"""The frontier search (harness/frontier.py) against synthetic oracles with a known boundary."""

import math
import random

import pytest

from harness.frontier import (
    CENSORED,
    FAILED,
    HELD,
    NOT_HELD,
    OPEN,
    SOLVED,
    UNDECIDED,
    Result,
    Rule,
    Search,
    ladder,
    run_search,
    solve_curve,
    target_quantile,
    top_gaps,
    verdict,
)

GAPS = ladder(5, 640, 2.0)


def test_ladder():
    assert GAPS == [5, 10, 20, 40, 80, 160, 320, 640]
    assert ladder(5, 40, 2 ** 0.5) == [5, 7, 10, 14, 20, 28, 40]
    assert ladder(1, 4, 1.1) == [1, 2, 3, 4]  # rounding never repeats a rung
    with pytest.raises(ValueError):
        ladder(10, 5, 2.0)


def test_quantile_of_m_of_n():
    assert target_quantile(2, 3) == pytest.approx(0.5)
    assert target_quantile(1, 3) == pytest.approx(1 - 0.5 ** (1 / 3))  # 0.206
    assert target_quantile(3, 3) == pytest.approx(0.5 ** (1 / 3))


@pytest.mark.parametrize("outcomes, expected", [
    ([None, None, None], (OPEN, [0, 1])),
    ([SOLVED, SOLVED, None], (HELD, [])),
    ([FAILED, FAILED, None], (NOT_HELD, [])),
    ([SOLVED, FAILED, None], (OPEN, [2])),  # a third seed only where two disagree
    ([SOLVED, FAILED, SOLVED], (HELD, [])),
    ([SOLVED, UNDECIDED, FAILED], (CENSORED, [])),  # hinges on a run still improving
    ([UNDECIDED, FAILED, FAILED], (NOT_HELD, [])),
    ([SOLVED, None, SOLVED], (OPEN, [1])),  # seeds run in order
])
def test_verdict_two_of_three(outcomes, expected):
    assert verdict(outcomes, Rule(2, 3)) == expected


def test_verdict_full_asks_for_every_seed():
    assert verdict([SOLVED, SOLVED, None], Rule(2, 3), full=True) == (OPEN, [2])
    assert verdict([SOLVED, SOLVED, FAILED], Rule(2, 3), full=True) == (HELD, [])


def deterministic(boundary):
    """Every seed solves every gap up to `boundary` and nothing above it."""
    return lambda p: Result(SOLVED if p.gap <= boundary else FAILED)


def probe_bound(rule, levels):
    """What the search promises for a monotone oracle: ceil(L/stride)+1 bracketing levels and
    ceil(log2 stride) bisection levels, each at most n seeds, plus check and confirmation."""
    bracket = math.ceil(levels / rule.stride) + 1 + math.ceil(math.log2(rule.stride))
    return (bracket + int(rule.check_above)) * rule.n


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("boundary", [0, *GAPS])
def test_deterministic_boundary_is_found(boundary, stride):
    rule = Rule(2, 3, stride=stride)
    search = Search(["cfg"], GAPS, rule)
    (front,) = run_search(search, deterministic(boundary))
    assert front.done
    assert front.gap_held == (boundary or None)
    above = [g for g in GAPS if g > boundary]
    assert front.gap_failed == (above[0] if above else None)
    if front.gap_held:
        assert (front.held_solved, front.held_seeds) == (3, 3)  # confirmed with every seed
    assert not front.anomalies and not front.censored_gaps
    assert len(front.probes) <= probe_bound(rule, len(GAPS))
    assert len(front.probes) < search.grid_runs()


def test_deterministic_costs_under_half_the_grid():
    # Stride 2, 2-of-3, confirmation: 2 seeds per agreeing level, 3 at the two boundary levels.
    search = Search(["cfg"], GAPS, Rule(2, 3, stride=2))
    (front,) = run_search(search, deterministic(40))
    assert (front.gap_held, front.gap_failed) == (40, 80)
    assert len(front.probes) == 10  # levels 5, 20, 80, 40 (bisect) x 2 + 2 confirmations
    assert search.grid_runs() == 24


def test_batches_mix_configurations():
    search = Search(["a", "b", "c"], GAPS, Rule(2, 3))
    assert {p.key for p in search.plan()} == {"a", "b", "c"}


def noisy(g50, slope, seed_stream):
    """Each seed solves gap g with probability 1 / (1 + (g / g50)^slope), drawn once per
    (seed, gap, stream) so that the oracle is a fixed function like a store of runs."""
    def call(p):
        rate = 1 / (1 + (p.gap / g50) ** slope)
        draw = random.Random(f"{seed_stream}-{p.key}-{p.seed}-{p.gap}").random()
        return Result(SOLVED if draw < rate else FAILED)
    return call


def test_noisy_boundary_brackets_the_median_gap():
    # Per-seed success 50% at gap 80, falling by a factor 2^3 = 8 in odds per rung.
    g50, slope, trials = 80, 3.0, 300
    rule = Rule(2, 3, stride=2)
    held, bracketed, probes = [], 0, []
    for stream in range(trials):
        search = Search(["cfg"], GAPS, rule)
        (front,) = run_search(search, noisy(g50, slope, stream))
        held.append(front.gap_held or 0)
        probes.append(len(front.probes))
        lo, hi = front.gap_held or 0, front.gap_failed or math.inf
        bracketed += lo <= 2 * g50 and hi >= g50 / 2  # within a rung of the 50% gap
    held.sort()
    assert held[trials // 2] in (40, 80)  # 2-of-3 targets the median: at or a rung below
    assert bracketed / trials >= 0.9
    assert max(probes) <= probe_bound(rule, len(GAPS))


def test_hole_in_the_ladder_is_reported_not_hidden():
    # Non-monotone: gap 20 fails for every seed, 40 and 80 hold, 160 and above fail.
    def call(p):
        return Result(SOLVED if p.gap <= 80 and p.gap != 20 else FAILED)
    (plain,) = run_search(Search(["cfg"], GAPS, Rule(2, 3, stride=2)), call)
    assert (plain.gap_held, plain.gap_failed) == (10, 20)  # stops at the first hole
    (checked,) = run_search(Search(["cfg"], GAPS, Rule(2, 3, stride=2, check_above=True)), call)
    assert (checked.gap_held, checked.gap_failed) == (80, 160)
    assert any("gap 20 not held" in note for note in checked.anomalies)


def test_seed_inversion_is_an_anomaly():
    # Seed 1 fails gap 5 but solves 20: noted, whatever the levels' verdicts.
    def call(p):
        if p.seed == 1 and p.gap == 5:
            return Result(FAILED)
        return Result(SOLVED if p.gap <= 40 else FAILED)
    (front,) = run_search(Search(["cfg"], GAPS, Rule(2, 3)), call)
    assert front.gap_held == 40
    assert any(note.startswith("seed 1 failed gap 5") for note in front.anomalies)


def test_still_improving_runs_censor_a_level_instead_of_failing_it():
    def call(p):
        if p.gap <= 20:
            return Result(SOLVED)
        return Result(UNDECIDED if p.gap == 40 and p.seed > 0 else FAILED)
    (front,) = run_search(Search(["cfg"], GAPS, Rule(2, 3, stride=1)), call)
    assert front.gap_held == 20 and front.gap_failed == 40
    assert front.failed_censored and front.censored_gaps == [40]


def test_a_censored_level_continues_its_improving_runs_and_is_decided_by_them():
    """Gap 40: seed 0 solves, seeds 1 and 2 are still improving at the budget. The search
    asks for those two again (continuations), once each; seed 1 then solves, so 40 holds.
    Gap 80: every seed still improving even at the cap: censored there, never failed."""
    asked: list = []

    def call(p):
        asked.append(p)
        again = asked.count(p) > 1  # a continuation of a run that ran before
        if p.gap <= 20 or (p.gap == 40 and (p.seed == 0 or (p.seed == 1 and again))):
            return Result(SOLVED)
        if p.gap in (40, 80):
            return Result(UNDECIDED, can_continue=not again)
        return Result(FAILED)
    search = Search(["cfg"], GAPS, Rule(2, 3, stride=1))
    (front,) = run_search(search, call)
    assert (front.gap_held, front.held_solved, front.held_seeds) == (40, 2, 3)
    assert front.gap_failed == 80 and front.failed_censored and front.censored_gaps == [80]
    continued = [p for p in set(asked) if asked.count(p) > 1]
    assert sorted((p.gap, p.seed) for p in continued) == [(40, 1), (40, 2), (80, 0), (80, 1),
                                                          (80, 2)]
    assert all(asked.count(p) == 2 for p in continued)  # each continued once: then capped


def test_every_level_tries_every_rate_and_reports_which_won():
    """Rate 1e-2 holds up to 20 and fast; 1e-3 holds up to 80, slowly. At every level both
    run; a level holds at the rate that holds it, the faster where both do."""
    def call(p):
        if p.lr == 1e-2:
            return Result(SOLVED if p.gap <= 20 else FAILED, steps_to_solve=100)
        return Result(SOLVED if p.gap <= 80 else FAILED, steps_to_solve=700)
    search = Search(["cfg"], GAPS, Rule(2, 3), lrs=[1e-3, 1e-2], every_level=True)
    (front,) = run_search(search, call)
    assert (front.gap_held, front.gap_failed, front.lr) == (80, 160, 1e-3)
    assert front.level_lrs[5] == front.level_lrs[20] == 1e-2
    assert front.level_lrs[80] == 1e-3
    assert {(p.gap, p.lr) for p in front.probes} >= {(g, lr) for g in (5, 20, 80, 160)
                                                     for lr in (1e-3, 1e-2)}
    (lowest,) = run_search(Search(["cfg"], GAPS, Rule(2, 3), lrs=[1e-3, 1e-2]), call)
    assert (lowest.gap_held, lowest.lr) == (20, 1e-2)  # chosen at gap 5, carried up: 20


def test_learning_rate_rule_carries_the_best_up_the_ladder():
    def call(p):
        if p.lr == 1e-2:  # solves only the lowest rung, slowly
            return Result(SOLVED if p.gap == 5 else FAILED, steps_to_solve=900)
        if p.lr == 1e-3:  # solves up to 160, fast
            return Result(SOLVED if p.gap <= 160 else FAILED, steps_to_solve=300)
        return Result(FAILED, final_loss=0.9)
    search = Search(["cfg"], GAPS, Rule(2, 3), lrs=[1e-4, 1e-3, 1e-2])
    (front,) = run_search(search, call)
    assert front.lr == 1e-3 and front.gap_held == 160
    assert {p.lr for p in front.probes} == {1e-4, 1e-3, 1e-2}
    assert sum(p.lr != 1e-3 for p in front.probes) == 4  # m seeds at the lowest rung each


def test_replay_resumes_without_repeating_a_probe():
    call = noisy(60, 3.0, "resume")
    whole = Search(["a", "b"], GAPS, Rule(2, 3))
    expected = run_search(whole, call)
    first = Search(["a", "b"], GAPS, Rule(2, 3))
    for probe in first.plan():  # one round, then "killed"
        first.tell(probe, call(probe))
    resumed = Search(["a", "b"], GAPS, Rule(2, 3))
    resumed.results = dict(first.results)  # what the store holds
    ran = []
    frontiers = run_search(resumed, lambda p: ran.append(p) or call(p))
    assert not set(ran) & set(first.results)
    assert [(f.gap_held, f.gap_failed) for f in frontiers] == \
        [(f.gap_held, f.gap_failed) for f in expected]


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="m <= n"):
        Rule(4, 3)
    with pytest.raises(ValueError, match="stride"):
        Rule(2, 3, stride=0)


# --- the fit of P(solved) against log gap ----------------------------------------------------


def test_solve_curve_recovers_a_known_logistic_boundary() -> None:
    """Outcomes drawn from P(solved) = 1 / (1 + (gap / 30)^4): the fit's gap50 is near 30 and
    its bootstrap interval holds 30."""
    rng = random.Random(1)
    points = [(g, rng.random() < 1 / (1 + (g / 30) ** 4))
              for g in (5, 10, 20, 40, 80, 160) for _ in range(40)]
    curve = solve_curve(points, resamples=300)
    assert curve is not None and curve.gap50 is not None
    assert 24 < curve.gap50 < 37, curve
    assert curve.low is not None and curve.high is not None
    assert curve.low < 30 < curve.high and curve.high / curve.low < 1.6, curve
    assert -5.5 < curve.b < -2.8  # the slope in ln gap: -4
    assert curve.describe().startswith(f"P(solved) = 0.5 at gap {curve.gap50:.3g} (95% bootstrap")


def test_solve_curve_on_separated_and_degenerate_outcomes() -> None:
    separated = solve_curve([(5, True), (5, True), (10, False), (10, False)])
    assert separated is not None and separated.gap50 == pytest.approx((5 * 10) ** 0.5, rel=1e-6)
    every = solve_curve([(5, True), (10, True), (20, True)])
    assert every is not None and every.describe().startswith("every outcome solved from gap 5")
    rising = solve_curve([(5, False), (5, False), (40, True), (40, True)])
    assert rising is not None and rising.gap50 is None
    assert rising.describe().startswith("P(solved) does not fall with the gap")
    assert solve_curve([(5, True), (10, False)]) is None  # too few outcomes
    assert solve_curve([(5, True), (5, False), (5, True)]) is None  # one gap


# --- variable gaps: a probe at level g trains on gaps [floor, g], judged on the top tenth ---


def by_gap(level: int, floor: int, reach: int, beyond: float = 0.5, per_gap: int = 10
           ) -> list[tuple[int, int, float, float]]:
    """eval_by_gap.csv of a model that is exact up to gap `reach` and at `beyond` above it."""
    return [(g, per_gap, 0.0 if g <= reach else 1.0, 1.0 if g <= reach else beyond)
            for g in range(floor, level + 1)]


def test_top_gaps_reads_the_longest_tenth_of_the_range():
    rows = by_gap(100, 1, reach=100)
    rows[-1] = (100, 10, 1.0, 0.0)  # the level itself failed, every other gap exact
    accuracy, loss = top_gaps(rows, 100, 1)
    assert accuracy == pytest.approx(0.9) and loss == pytest.approx(0.1)  # gaps 91..100
    assert top_gaps(by_gap(5, 1, 5), 5, 1) == (1.0, 0.0)  # at least the level itself
    assert top_gaps([(3, 10, 0.0, 1.0)], 8, 1) is None  # no sequence among the top gaps


def test_variable_gaps_judge_the_longest_gaps_not_the_mean():
    # Exact up to 600, 90% beyond: 99.4% over all of [1, 640], 93.75% over its top tenth.
    rows = by_gap(640, 1, reach=600, beyond=0.9)
    overall = sum(n * a for _, n, _, a in rows) / sum(n for _, n, _, _ in rows)
    assert overall >= 0.99
    assert top_gaps(rows, 640, 1)[0] < 0.99


@pytest.mark.parametrize("reach", [3, 12, 70, 700])
def test_variable_gap_oracle_holds_up_to_its_reach(reach):
    """Each seed's model is exact up to gap `reach` (the seed's own reach varies a little) and
    at chance above it; a probe solves its level when its top tenth is >= 99% accurate. The
    frontier is the largest rung within the median seed's reach."""
    reaches = {0: reach, 1: reach * 2, 2: reach // 2}  # the median seed's is `reach`

    def call(p):
        accuracy, _ = top_gaps(by_gap(p.gap, 1, reaches[p.seed]), p.gap, 1)
        return Result(SOLVED if accuracy >= 0.99 else FAILED)

    (front,) = run_search(Search(["cfg"], GAPS, Rule(2, 3)), call)
    within = [g for g in GAPS if g <= reach]
    assert front.gap_held == (within[-1] if within else None)
    above = [g for g in GAPS if g > reach]
    assert front.gap_failed == (above[0] if above else None)
