"""Asynchronous rounds: the frontier's probes launched as workers free, not round by round.

A synchronous round waits for its slowest probe while the other workers idle (the demo's
fourth round ran one 42 s GRU probe at gap 80 after the other nine had ended in under 8 s).
Here every configuration's next probes are launched as soon as its outcomes allow and a
worker is free:

- **Units.** The probes the search wants and no worker is running are grouped into launch
  units (one job each: one probe, or several trained as one stacked model, `group`), and the
  costliest start first (the longest jobs first: the sweep's tail is its shortest jobs).
- **Rounds.** A configuration's round (every probe it wants now) is queued whole, and the
  configuration is asked again only once its round has ended.
- **Workers.** At most `workers` units run at once, each launched from its own thread through
  the sweeper's launcher (joblib, submitit, SLURM), which blocks until the unit's job ends.
- **Answers.** A configuration's probes depend only on its own outcomes (`Search.frontier`),
  and a configuration is asked for its next probes only once none of its probes runs or waits:
  its rounds are those of synchronous rounds (every outcome of one is told before the next is
  asked for), so the answers are too; only how rounds of different configurations interleave
  changes. (Asked earlier, with one rate's seeds of a level told before another's, it could
  ask for seeds that a synchronous round would have found unneeded.)
- **Utilization.** The training seconds the units report over `workers` x the wall time from
  the first launch to the last end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from harness.frontier import Probe, Result, Search


@dataclass(frozen=True)
class Unit:
    """One launched job: its probes (several: members of one stacked model), what it is
    expected to cost (members x sequence length x steps), to start the costliest first, and
    the budget its probes' runs are continued to (0: they are new)."""

    probes: tuple[Probe, ...]
    cost: float
    continue_to: int = 0


@dataclass
class Usage:
    """How busy the workers were: training seconds the units reported, the wall time from the
    first launch to the last end, the units launched."""

    workers: int
    trained_s: float = 0.0
    wall_s: float = 0.0
    units: int = 0

    @property
    def utilization(self) -> float:
        """Training seconds / (workers x wall), 0 before anything ran."""
        return self.trained_s / (self.workers * self.wall_s) if self.wall_s > 0 else 0.0


# What the sweeper supplies: which wanted probes still need a launch (the others it told the
# search from the store), the launch units of those, and a unit's launch (blocking: its
# probes' results and the training seconds they took).
Ready = Callable[[list[Probe]], list[Probe]]
Group = Callable[[list[Probe]], list[Unit]]
Launch = Callable[[Unit], tuple[dict[Probe, Result], float]]


def run_async(search: Search, workers: int, ready: Ready, group: Group, launch: Launch,
              on_done: Callable[[Unit], None] = lambda unit: None,
              abort: Callable[[], None] = lambda: None) -> Usage:
    """Drive `search` to its end with at most `workers` units in flight (module docstring).
    `on_done(unit)` runs in this thread after each unit's results are told; on an exception
    here (Ctrl-C, SIGTERM) `abort()` stops the units in flight before it is raised again."""
    usage = Usage(workers)
    flying: dict[Future, Unit] = {}
    queued: list[Unit] = []  # units of a round not launched yet, the costliest first
    started: float | None = None
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="frontier")
    try:
        while True:
            busy = {p.key for unit in [*flying.values(), *queued] for p in unit.probes}
            waiting = wanted(search, busy, ready)
            if waiting:
                queued = sorted([*queued, *group(waiting)], key=lambda u: -u.cost)
            while queued and len(flying) < workers:
                unit = queued.pop(0)
                started = time.perf_counter() if started is None else started
                flying[pool.submit(launch, unit)] = unit
                usage.units += 1
            if not flying:
                break
            done, _ = wait(list(flying), return_when=FIRST_COMPLETED)
            for future in done:
                unit = flying.pop(future)
                results, seconds = future.result()
                usage.trained_s += seconds
                for probe, result in results.items():
                    search.tell(probe, result)
                on_done(unit)
    except BaseException:
        abort()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    if started is not None:
        usage.wall_s = time.perf_counter() - started
    return usage


def wanted(search: Search, busy: set[str], ready: Ready) -> list[Probe]:
    """The probes the search wants of the configurations none of whose probes runs or waits
    (`busy`: those that have one), less those the store already holds (`ready` tells the
    search those, which may change what it wants: asked until stable)."""
    while True:
        asked = [p for p in search.plan() if p.key not in busy]
        left = ready(asked)
        if len(left) == len(asked):
            return left
