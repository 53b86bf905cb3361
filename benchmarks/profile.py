"""Where a harness run's wall time goes, per part of the training loop.

    python -m benchmarks.profile                                  # gap 300, hidden 128, batch 64
    python -m benchmarks.profile --gap 80 --hidden 64 --batch 32  # the demo's size

One run per model (RNN tanh, LSTM, GRU; 200 steps, evaluation and diagnostics at steps 0, 100
and 200, 1 torch thread as in a 2-job sweep on 2 cores, logging to a real MLflow SQLite store)
through the harness's own driver, `harness.loop.drive`, unchanged. The objects it is handed are
wrapped, explicitly, so that each call is timed:

- `data`, `loss`: the task's `sample` and `loss`; `forward`: the model's forward (the fused
  module and the readout); `optimizer`: the optimizer's `step` and `zero_grad`;
  `clipping`: the clipper (which measures the gradient norm);
- `backward`: the stepper's `backward` less the parts above called inside it, i.e.
  `loss.backward()`;
- `evaluation`: the run record's evaluator, and `diagnostics`: its `diagnose` (which also
  logs the diagnostics' metrics); everything called inside these two counts in them (an
  evaluation's forward is evaluation, not forward);
- `tracking`: the tracker's `log_metrics`;
- `python`: the rest of the wall time, the driver's own code between those calls.

Each part counts its own time: a wrapped call made inside another part is subtracted from it
(except inside evaluation and diagnostics). The same run is also timed without the wrappers
(`unwrapped_s`), so their own cost shows. The wrappers are also
`torch.profiler.record_function` regions, so the parts show by name in a torch.profiler trace.
Rows go to benchmarks/results/profile.csv.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

import tasks
from benchmarks.common import Sitting, results_argument
from benchmarks.overhead import MODELS, build, harness_loop
from harness import names
from harness.clipping import Clipper
from harness.loop import FusedStepper, MemoryTracker, RunRecord, Tracker, drive
from harness.resources import configure_torch
from harness.schema import TrainConfig
from harness.tracking.run import mlflow_run

PROFILE_PARTS = ("data", "forward", "loss", "backward", "clipping", "optimizer", "evaluation",
                 "diagnostics", "tracking")
OPAQUE = ("evaluation", "diagnostics")  # parts that keep the time of the calls made inside them


class PartTimer:
    """Wall-clock seconds per part of a run: each wrapped call's own time, less the wrapped
    calls made inside it, except inside an OPAQUE part, which keeps everything in it."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PROFILE_PARTS, 0.0)
        self.stack: list[list[Any]] = []  # [part, seconds of the wrapped calls inside it]

    def wrap(self, part: str, function: Callable[..., Any]) -> Callable[..., Any]:
        if part not in self.seconds:
            raise ValueError(f"unknown part {part!r}; parts: {PROFILE_PARTS}")

        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.stack and self.stack[-1][0] in OPAQUE:
                return function(*args, **kwargs)  # counted in the opaque part around it
            frame = [part, 0.0]
            self.stack.append(frame)
            start = time.perf_counter()
            try:
                with torch.profiler.record_function(part):
                    return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self.stack.pop()
                self.seconds[part] += elapsed - frame[1]
                if self.stack:
                    self.stack[-1][1] += elapsed

        return timed


class TimedTracker:
    """A tracker whose `log_metrics` is timed as `tracking`."""

    def __init__(self, tracker: Tracker, timer: PartTimer) -> None:
        self.log_metrics = timer.wrap("tracking", tracker.log_metrics)


class TimedEvaluator:
    """A run record's evaluator whose calls are timed as `evaluation`."""

    def __init__(self, evaluator: Any, timer: PartTimer) -> None:
        self.evaluate = timer.wrap("evaluation", evaluator.__call__)
        self.by_gap = timer.wrap("evaluation", evaluator.by_gap)

    def __call__(self, model: Any) -> dict[str, float]:
        return self.evaluate(model)


def timed_run(task: tasks.Task, model: Any, optimizer: torch.optim.Optimizer,
              cfg: TrainConfig, tracker: Tracker, timer: PartTimer) -> None:
    """One run through `drive`, every object it is handed wrapped by `timer`."""
    task.sample = timer.wrap("data", task.sample)  # type: ignore[method-assign]
    task.loss = timer.wrap("loss", task.loss)  # type: ignore[method-assign]
    model.forward = timer.wrap("forward", model.forward)
    optimizer.step = timer.wrap("optimizer", optimizer.step)  # type: ignore[method-assign]
    optimizer.zero_grad = timer.wrap(  # type: ignore[method-assign]
        "optimizer", optimizer.zero_grad)
    record = RunRecord(task, cfg, TimedTracker(tracker, timer), seed=0,  # type: ignore[arg-type]
                       name="profile")
    record.evaluate = TimedEvaluator(record.evaluate, timer)  # type: ignore[assignment]
    record.diagnose = timer.wrap("diagnostics", record.diagnose)  # type: ignore[method-assign]
    stepper = FusedStepper(model, optimizer, timer.wrap("clipping", Clipper("none", 1.0)),
                           task)  # type: ignore[arg-type]
    stepper.backward = timer.wrap("backward", stepper.backward)  # type: ignore[method-assign]
    drive(stepper, [record], cfg)


def profile_run(cell: str, activation: str, gap: int, hidden: int, batch_size: int,
                steps: int, mlflow: bool = True) -> dict[str, object]:
    """Where the wall time of one harness run goes (logging to an MLflow store, or to memory
    with `mlflow=False`); the shares of the parts, which add up to 1."""
    cfg = TrainConfig(steps=steps, batch_size=batch_size, solve_threshold=1.0 + 1e-9)

    def make_task() -> tasks.Task:
        return tasks.make_task("delayed_recall", gap=gap, filler="noise")

    with tempfile.TemporaryDirectory() as folder:
        @contextlib.contextmanager
        def tracking() -> Iterator[Tracker]:
            if not mlflow:
                yield MemoryTracker()
                return
            with mlflow_run(f"sqlite:///{folder}/mlflow.db", "bench", f"profile-{cell}",
                            {"model.name": cell}, {}) as tracker:
                yield tracker

        task = make_task()
        model, optimizer = build(cell, activation, task, hidden)
        with tracking() as tracker:
            start = time.perf_counter()
            harness_loop(task, model, optimizer, cfg, tracker)
            unwrapped = time.perf_counter() - start
        task = make_task()
        model, optimizer = build(cell, activation, task, hidden)
        timer = PartTimer()
        with tracking() as tracker:
            start = time.perf_counter()
            timed_run(task, model, optimizer, cfg, tracker, timer)
            wall = time.perf_counter() - start
    parts = {**timer.seconds, "python": wall - sum(timer.seconds.values())}
    row: dict[str, object] = {names.MODEL: cell, names.ACTIVATION: activation, names.GAP: gap,
                              names.HIDDEN_SIZE: hidden, "batch_size": batch_size,
                              "steps": steps, "wall_s": round(wall, 2),
                              "unwrapped_s": round(unwrapped, 2)}
    row.update({f"share_{part}": round(seconds / wall, 4) for part, seconds in parts.items()})
    print(f"{cell:>4} gap {gap} hidden {hidden} batch {batch_size}, {steps} steps: {wall:.2f} s "
          f"({unwrapped:.2f} s unwrapped); "
          + ", ".join(f"{part} {seconds / wall:.1%}" for part, seconds in parts.items()),
          flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--gap", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    results_argument(parser)
    args = parser.parse_args(argv)
    configure_torch(1)  # as each job of a 2-job sweep on 2 cores
    sitting = Sitting.start("profile", 1)
    for cell, activation in MODELS:
        sitting.add(profile_run(cell, activation, args.gap, args.hidden, args.batch,
                                args.steps))
    sitting.write(args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
