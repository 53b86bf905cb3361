"""The frontier's asynchronous rounds (hydra_plugins/frontier_sweeper/_schedule.py) against
synthetic oracles: the same answers as synchronous rounds, no worker idle while a probe waits,
and the utilization it reports."""

from __future__ import annotations

import random
import threading
import time

import pytest

from harness.frontier import FAILED, SOLVED, Probe, Result, Rule, Search, ladder, run_search
from hydra_plugins.frontier_sweeper._schedule import Unit, run_async

GAPS = ladder(5, 640, 2.0)


def noisy(p: Probe) -> Result:
    """Per-seed success falling with the gap, a fixed function of the probe (like a store)."""
    g50 = {"a": 20, "b": 80, "c": 320}[p.key]
    rate = 1 / (1 + (p.gap / g50) ** 3)
    draw = random.Random(f"{p.key}-{p.lr}-{p.seed}-{p.gap}").random()
    return Result(SOLVED if draw < rate else FAILED, steps_to_solve=p.gap * (1 + (p.lr or 0)))


def per_level(probes: list[Probe]) -> list[Unit]:
    """One unit per (configuration, lr, gap): its seeds trained together, as batching does."""
    levels: dict[tuple, list[Probe]] = {}
    for p in probes:
        levels.setdefault((p.key, p.lr, p.gap), []).append(p)
    return [Unit(tuple(ps), cost=len(ps) * ps[0].gap) for ps in levels.values()]


class Workers:
    """A launch that sleeps `seconds(unit)` and records when each unit ran and how many ran at
    once."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.lock = threading.Lock()
        self.flying = self.most = 0
        self.spans: list[tuple[Unit, float, float]] = []

    def __call__(self, unit: Unit) -> tuple[dict[Probe, Result], float]:
        with self.lock:
            self.flying += 1
            self.most = max(self.most, self.flying)
        start = time.perf_counter()
        time.sleep(self.seconds(unit))
        end = time.perf_counter()
        with self.lock:
            self.flying -= 1
            self.spans.append((unit, start, end))
        return {p: noisy(p) for p in unit.probes}, end - start


@pytest.mark.parametrize("lrs, every_level", [(None, False), ([1e-3, 1e-2], False),
                                              ([1e-3, 1e-2], True)])
def test_answers_are_those_of_synchronous_rounds(lrs, every_level) -> None:
    keys, rule = ["a", "b", "c"], Rule(2, 3)
    expected = run_search(Search(keys, GAPS, rule, lrs, every_level), noisy)
    search = Search(keys, GAPS, rule, lrs, every_level)
    workers = Workers(lambda unit: 0.001 * random.Random(str(unit)).random())
    usage = run_async(search, 2, lambda asked: asked, per_level, workers)
    got = search.frontiers()
    assert [(f.gap_held, f.held_solved, f.gap_failed, f.lr, f.level_lrs) for f in got] == \
        [(f.gap_held, f.held_solved, f.gap_failed, f.lr, f.level_lrs) for f in expected]
    assert [set(f.probes) for f in got] == [set(f.probes) for f in expected]
    assert workers.most <= 2 and usage.units == len(workers.spans)


def test_a_freed_worker_takes_the_next_probe_at_once() -> None:
    """Configuration `slow`'s probes take 0.4 s, `fast`'s 0.01 s. Synchronous rounds would make
    every round of `fast` wait for `slow`; here `fast`'s whole search runs on the second
    worker while `slow`'s first level trains."""
    search = Search(["slow", "fast"], GAPS, Rule(2, 3))
    oracle = {"slow": 10, "fast": 80}

    def launch(unit: Unit) -> tuple[dict[Probe, Result], float]:
        seconds = 0.4 if unit.probes[0].key == "slow" else 0.01
        time.sleep(seconds)
        return {p: Result(SOLVED if p.gap <= oracle[p.key] else FAILED)
                for p in unit.probes}, seconds

    def group(probes: list[Probe]) -> list[Unit]:
        return [Unit(u.probes, cost=0.4 if u.probes[0].key == "slow" else 0.01)
                for u in per_level(probes)]

    done_at: dict[str, float] = {}

    def on_done(unit: Unit) -> None:
        done_at.setdefault(unit.probes[0].key, time.perf_counter())  # first unit of each
        front = search.frontier(unit.probes[0].key)[0]
        if front.done:
            done_at[unit.probes[0].key + " done"] = time.perf_counter()

    usage = run_async(search, 2, lambda asked: asked, group, launch, on_done)
    assert done_at["fast done"] < done_at["slow"]  # fast finished inside slow's first unit
    slow, fast = usage_units(search, "slow"), usage_units(search, "fast")
    assert fast >= 4 and usage.units == slow + fast
    # the training seconds the units reported, over 2 workers x the wall
    assert usage.trained_s == pytest.approx(0.4 * slow + 0.01 * fast)
    assert 0 < usage.utilization <= 1
    assert usage.utilization == pytest.approx(usage.trained_s / (2 * usage.wall_s))


def usage_units(search: Search, key: str) -> int:
    """Units (levels) one configuration's search launched under `per_level`, counting a
    level's later seeds as a unit of their own."""
    return len({(p.gap, p.seed >= 2) for p in search.results if p.key == key})


def test_an_interrupted_search_stops_the_units_in_flight() -> None:
    stopped = []

    def launch(unit: Unit) -> tuple[dict[Probe, Result], float]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_async(Search(["a"], GAPS, Rule(2, 3)), 2, lambda asked: asked, per_level, launch,
                  abort=lambda: stopped.append(True))
    assert stopped == [True]
