"""Benchmark: what the harness costs over a bare PyTorch loop, measured side by side.

    harness-bench                 # RNN tanh, LSTM, GRU at hidden 128, batch 64, gap 300
    harness-bench --quick         # a short version (CI runs it so a regression is visible)
    harness-bench --sweep         # runs/hour of a fixed sweep: 1 job x 2 threads vs 2 x 1,
                                  # seeds as separate jobs vs batched_seeds
    harness-bench --scaling       # time per step and peak memory vs gap (50 .. 1000)
    harness-bench --batched       # K seeds as one batched model vs K separate runs
    harness-bench --profile       # where a harness run's time goes, per part

For each model it times, in this one process and on the same task data, model shape, batch
and optimizer (Adam), the training steps per second of:

- `bare`: a bare loop of the fused module + readout + optimizer (the ceiling);
- `harness`: the harness's training loop with its default evaluation and diagnostics
  cadence, logging to a real MLflow SQLite store (in a temporary folder);
- `no_tracking`: the same, logging to memory instead of MLflow;
- `no_diagnostics`: as `no_tracking`, without the gradient profile and dynamics.

and prints the ratios: harness / bare (goal >= 0.90), tracking overhead = 1 - harness /
no_tracking (goal <= 5%), diagnostics overhead = 1 - no_tracking / no_diagnostics (goal
<= 10%). Each timed run includes its evaluations and diagnostics at step 0, every 100 steps
and at the end: in the default 100-step runs that is two of each, twice their share in a long
run (one per 100 steps), so the overheads printed are upper bounds for long runs.
Variants are run in interleaved rounds and each figure is the median over rounds, so a
noisy neighbour affects all variants alike. The table is also written as CSV.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import functools
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch

import tasks
from harness import loop, names
from harness.batched import BatchedStepper, build_member
from harness.cells import GATE_BLOCKS
from harness.clipping import Clipper
from harness.diagnostics import diagnose
from harness.loop import (
    Evaluator,
    MemoryTracker,
    Tracker,
    data_generators,
    train_loop,
)
from harness.models import RecurrentModel
from harness.optimizers import make_optimizer
from harness.resources import configure_torch
from harness.schema import ClipConfig, OptimConfig, TrainConfig
from harness.tracking.run import mlflow_run
from tasks import Batch

VARIANTS = ("bare", "harness", "no_tracking", "no_diagnostics")
MODELS = (("rnn", "tanh"), ("lstm", "tanh"), ("gru", "tanh"))


def build(cell: str, activation: str, task: tasks.Task, hidden: int,
          seed: int = 0) -> tuple[RecurrentModel, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = RecurrentModel(cell, task.input_size, task.output_size, hidden, activation=activation)
    return model, make_optimizer(model, OptimConfig(lr=1e-3))


def bare_loop(task: tasks.Task, model: RecurrentModel, optimizer: torch.optim.Optimizer,
              steps: int, batch_size: int, seed: int = 0) -> None:
    """The ceiling: sample, forward, loss, backward, step; nothing else."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = task.sample(batch_size, generator)
        loss = task.loss(model(batch.inputs), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def harness_loop(task: tasks.Task, model: RecurrentModel, optimizer: torch.optim.Optimizer,
                 cfg: TrainConfig, tracker: Tracker) -> None:
    train_loop(task, model, optimizer, Clipper("none", 1.0), cfg, tracker, seed=0, name="bench")


def time_variant(variant: str, cell: str, activation: str, task: tasks.Task, hidden: int,
                 steps: int, batch_size: int, store: str) -> float:
    """Seconds for `steps` training steps of one variant (model built outside the timing)."""
    model, optimizer = build(cell, activation, task, hidden)
    # solve_threshold above 1: every variant runs its full budget, whatever it learns.
    cfg = TrainConfig(steps=steps, batch_size=batch_size, solve_threshold=1.0 + 1e-9,
                      profile_every=-1 if variant == "no_diagnostics" else 0)
    run: Callable[[], None]
    if variant == "bare":
        def run() -> None:
            bare_loop(task, model, optimizer, steps, batch_size)
    elif variant == "harness":
        def run() -> None:
            with mlflow_run(store, "bench", f"bench-{cell}", {"model.name": cell}, {}) as tracker:
                harness_loop(task, model, optimizer, cfg, tracker)
    else:
        def run() -> None:
            harness_loop(task, model, optimizer, cfg, MemoryTracker())
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def step_flops(cell: str, task: tasks.Task, hidden: int, batch_size: int) -> float:
    """Floating-point operations of one training step, counting the matmuls only.

    Per time step the recurrence multiplies [B, D + H] by [D + H, G·H] (G gate blocks: 1, 4,
    3), and the readout [B, H] by [H, O]; backward costs twice the forward (gradients with
    respect to inputs and weights).
    """
    gates = len(GATE_BLOCKS[cell])
    per_step = 2 * batch_size * ((task.input_size + hidden) * gates * hidden
                                 + hidden * task.output_size)
    return 3.0 * per_step * task.seq_len


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """The machine's single-precision matmul rate: a large square matmul, best of repeats."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def measure(gap: int, hidden: int, batch_size: int, steps: int, rounds: int,
            models: tuple[tuple[str, str], ...] = MODELS) -> list[dict[str, object]]:
    """One row per model: median steps/s of every variant and the ratios."""
    task = tasks.make_task("delayed_recall", gap=gap)
    peak = matmul_gflops()
    print(f"large fp32 matmul (2048²): {peak:.1f} GFLOP/s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        store = f"sqlite:///{folder}/mlflow.db"
        for cell, activation in models:
            seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for variant in VARIANTS:  # warm-up: imports, store creation, first-call costs
                time_variant(variant, cell, activation, task, hidden, 2, batch_size, store)
            for _ in range(rounds):
                for variant in VARIANTS:
                    seconds[variant].append(time_variant(variant, cell, activation, task, hidden,
                                                         steps, batch_size, store))
            rate = {v: steps / statistics.median(s) for v, s in seconds.items()}
            rows.append({
                names.MODEL: cell, names.ACTIVATION: activation, names.HIDDEN_SIZE: hidden,
                "batch_size": batch_size, names.GAP: gap, "steps": steps, "rounds": rounds,
                **{f"steps_per_s_{v}": round(r, 3) for v, r in rate.items()},
                "harness_over_bare": round(rate["harness"] / rate["bare"], 3),
                "tracking_overhead": round(1 - rate["harness"] / rate["no_tracking"], 3),
                "diagnostics_overhead": round(1 - rate["no_tracking"] / rate["no_diagnostics"],
                                              3),
                "gflops_bare": round(step_flops(cell, task, hidden, batch_size)
                                     * rate["bare"] / 1e9, 2),
                "gflops_matmul": round(peak, 1),
            })
            print(format_row(rows[-1]), flush=True)
    return rows


SWEEP = ["task=delayed_recall_noise", "task.gap=40,80", "train.steps=1000",
         "model.hidden_size=64"]  # mostly unsolved at 1,000 steps: every run uses its budget


@dataclass(frozen=True)
class SweepCase:
    """A fixed sweep: `models` x gaps 40, 80 x `seeds`, timed per (parallel jobs, torch
    threads per job, seeds batched) layout on 2 cores."""

    models: str
    seeds: int
    layouts: tuple[tuple[int, int, bool], ...]

    @property
    def runs(self) -> int:
        return len(self.models.split(",")) * 2 * self.seeds

    def seed_override(self, batched: bool) -> str:
        seeds = ",".join(str(s) for s in range(self.seeds))
        return f"batched_seeds=[{seeds}]" if batched else f"seed={seeds}"


SWEEP_CASES = (
    # every cell, 2 seeds: 12 jobs, or 6 jobs of 2 members
    SweepCase("rnn,lstm,gru", 2, ((1, 2, False), (2, 1, False), (1, 2, True), (2, 1, True))),
    # the cells batching speeds up (README, Benchmark), 4 seeds: 16 jobs, or 4 of 4 members
    SweepCase("rnn,gru", 4, ((2, 1, False), (2, 1, True))),
)


def sweep_throughput(cases: tuple[SweepCase, ...] = SWEEP_CASES) -> list[dict[str, object]]:
    """Runs per hour of fixed sweeps, as real multiruns, per jobs x threads layout, with each
    seed its own job or all seeds of a config in one batched job."""
    rows = []
    for case in cases:
        for jobs, threads, batched in case.layouts:
            with tempfile.TemporaryDirectory() as folder:
                command = [sys.executable, "-m", "harness.train", "-m", *SWEEP,
                           f"model={case.models}", case.seed_override(batched),
                           f"hydra.launcher.n_jobs={jobs}", f"train.threads={threads}",
                           "experiment_name=bench-sweep",
                           f"tracking.uri=sqlite:///{folder}/m.db",
                           f"train.checkpoint_dir={folder}/ckpt",
                           "report.on_multirun_end=false", f"hydra.sweep.dir={folder}/sweep"]
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, cwd=folder)
                seconds = time.perf_counter() - start
            rows.append({"models": case.models, "seeds": case.seeds, "jobs": jobs,
                         "threads_per_job": threads, "batched_seeds": batched,
                         "runs": case.runs, "seconds": round(seconds, 1),
                         "runs_per_hour": round(case.runs * 3600 / seconds)})
            print(f"sweep of {case.runs} runs ({case.models} x 2 gaps x {case.seeds} seeds), "
                  f"{jobs} job(s) x {threads} thread(s), "
                  f"{'seeds batched per job' if batched else 'one seed per job'}: "
                  f"{seconds:.1f} s, {rows[-1]['runs_per_hour']} runs/hour", flush=True)
    return rows


SCALING_GAPS = (50, 100, 200, 500, 1000)


def peak_rss_mb(cell: str, gap: int, hidden: int, batch_size: int, steps: int) -> float:
    """Peak resident memory (MB) of a fresh process that trains `steps` bare steps."""
    code = ("import resource, tasks, torch; from harness.bench import build, bare_loop; "
            f"t = tasks.make_task('delayed_recall', gap={gap}); "
            f"m, o = build('{cell}', 'tanh', t, {hidden}); "
            f"bare_loop(t, m, o, {steps}, {batch_size}); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True)
    return int(done.stdout.split()[-1]) / 1024  # ru_maxrss is in KiB on Linux


def gap_scaling(cell: str, hidden: int, batch_size: int, steps: int,
                gaps: tuple[int, ...] = SCALING_GAPS) -> list[dict[str, object]]:
    """Seconds per bare training step and peak memory against the gap, with linear fits."""
    rows = []
    for gap in gaps:
        task = tasks.make_task("delayed_recall", gap=gap)
        time_variant("bare", cell, "tanh", task, hidden, 1, batch_size, "")  # warm-up
        seconds = time_variant("bare", cell, "tanh", task, hidden, steps, batch_size, "")
        rows.append({names.MODEL: cell, names.GAP: gap, "seq_len": task.seq_len,
                     "seconds_per_step": round(seconds / steps, 5),
                     "peak_rss_mb": round(peak_rss_mb(cell, gap, hidden, batch_size, 2), 1)})
    for key in ("seconds_per_step", "peak_rss_mb"):
        slope, intercept, r2 = linear_fit([float(r[names.GAP]) for r in rows],
                                          [float(r[key]) for r in rows])
        print(f"{cell}: {key} = {intercept:.4g} + {slope:.4g} * gap   (R² {r2:.4f})")
        for row in rows:
            row[f"{key}_fit_r2"] = round(r2, 4)
    for row in rows:
        print(f"{cell} gap {row[names.GAP]:>5}: {row['seconds_per_step']:.4f} s/step, "
              f"peak {row['peak_rss_mb']:.0f} MB", flush=True)
    return rows


BATCHED_KS = (1, 2, 4, 8)
BATCHED_GAPS = (20, 80)
DEMO_STEPS, DEMO_POINTS = 2000, 21  # the demo's budget: evaluation + diagnostics every 100 steps


def separate_step(task: tasks.Task, model: RecurrentModel, optimizer: torch.optim.Optimizer,
                  generator: torch.Generator, batch_size: int) -> None:
    """One training step as the harness loop takes it: loss, backward, measured norm, step."""
    batch = task.sample(batch_size, generator)
    loss = task.loss(model(batch.inputs), batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip = Clipper("none", 1.0)(model.parameters())
    float(loss.detach()), float(clip.pre)
    optimizer.step()


Separate = list[tuple[RecurrentModel, torch.optim.Optimizer, torch.Generator]]


def separate_steps(task: tasks.Task, separate: Separate, batch_size: int) -> None:
    """One training step of each of K separate runs, one after another."""
    for model, optimizer, generator in separate:
        separate_step(task, model, optimizer, generator, batch_size)


class BatchedSteps:
    """The batched job's training step as the driver takes it, on K seeds' data."""

    def __init__(self, task: tasks.Task, members: list[RecurrentModel], batch_size: int) -> None:
        self.task, self.batch_size = task, batch_size
        k = len(members)
        self.stepper = BatchedStepper(members, [task] * k, [OptimConfig(lr=1e-3)] * k,
                                      [ClipConfig()] * k)
        self.generators = [data_generators(seed)[0] for seed in range(len(members))]

    def train_step(self) -> None:
        audit = self.stepper.backward([self.task.sample(self.batch_size, g)
                                       for g in self.generators])
        audit.rows()  # the driver reads them: one synchronization
        self.stepper.update()


def batched_setup(cell: str, activation: str, task: tasks.Task, hidden: int, batch_size: int,
                  k: int) -> tuple[Separate, BatchedSteps]:
    """K separate runs (seeds 0..K-1: model, optimizer, training data), and the same batched."""
    members = [build_member(seed, cell, task, hidden, activation=activation) for seed in range(k)]
    separate = [(m, make_optimizer(m, OptimConfig(lr=1e-3)), data_generators(seed)[0])
                for seed, m in enumerate(copy.deepcopy(members))]
    return separate, BatchedSteps(task, members, batch_size)


def time_steps(step: Callable[[], None], steps: int, threads: int) -> tuple[float, float]:
    """(wall, CPU) seconds per call of `step` with `threads` torch threads.

    With one thread every op runs in this thread, so the process's CPU time is the work of
    the steps alone, whatever else the machine runs meanwhile; the wall time also counts the
    time other processes held the core.
    """
    torch.set_num_threads(threads)
    step()  # warm-up (first-call costs, allocator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def time_points(task: tasks.Task, separate: Separate,
                run: BatchedSteps) -> tuple[float, float]:
    """CPU seconds of one evaluation + diagnostics point (1 thread): K separate runs, and the
    batched job's (each member's fused twin, as the driver evaluates and diagnoses)."""
    torch.set_num_threads(1)
    cfg = TrainConfig()

    def point(models: list[RecurrentModel] | Callable[[], list[RecurrentModel]]) -> float:
        start = time.process_time()
        for seed, model in enumerate(models() if callable(models) else models):
            _, evaluation = data_generators(seed)
            batch = task.sample(cfg.eval_batch_size, evaluation, split="eval")
            Evaluator(task, batch)(model)
            diagnose(model, task, Batch(*(t[: cfg.profile_batch_size] for t in
                                          (batch.inputs, batch.targets, batch.mask))), 0)
        return time.process_time() - start

    model = run.stepper.net
    return (point([m for m, _, _ in separate]),
            point(lambda: [model.member(k) for k in range(model.members)]))


def batched_throughput(hidden: int, batch_size: int, steps: int, rounds: int,
                       models: tuple[tuple[str, str], ...] = MODELS,
                       gaps: tuple[int, ...] = BATCHED_GAPS,
                       ks: tuple[int, ...] = BATCHED_KS) -> list[dict[str, object]]:
    """Time per training step of K seeds: K separate fused runs vs one batched model.

    Per cell, gap and K, in interleaved rounds: `separate` (K fused runs one after another,
    1 thread), `batched_1t` (the K members as one stacked model, 1 thread), `batched_2t` (the
    same, 2 threads). The 1-thread figures are CPU time (median over rounds; wall time is
    printed beside it), so a busy machine slows them little; the 2-thread one can only be
    wall time. Throughput against the best current layout, 2 jobs x 1 thread running
    separate runs: batched with 1 thread in the same 2-job layout gains separate /
    batched_1t; one batched job with 2 threads gains separate / (2 batched_2t) (wall times).
    The run factors add one evaluation + diagnostics point per 100 steps (the demo's
    cadence, CPU time): the batched job evaluates and diagnoses its members one by one (each
    member's fused twin), as separate runs do.
    """
    rows = []
    for cell, activation in models:
        for gap in gaps:
            task = tasks.make_task("delayed_recall", gap=gap, filler="noise")
            for k in ks:
                separate, run = batched_setup(cell, activation, task, hidden, batch_size, k)
                sequential = functools.partial(separate_steps, task, separate, batch_size)
                wall: dict[str, list[float]] = {"separate": [], "batched_1t": [],
                                                "batched_2t": []}
                cpu: dict[str, list[float]] = {"separate": [], "batched_1t": []}
                for _ in range(rounds):
                    for variant, step, threads in (("separate", sequential, 1),
                                                   ("batched_1t", run.train_step, 1),
                                                   ("batched_2t", run.train_step, 2)):
                        seconds = time_steps(step, steps, threads)
                        wall[variant].append(seconds[0])
                        if threads == 1:
                            cpu[variant].append(seconds[1])
                point_separate, point_batched = time_points(task, separate, run)
                median = {v: statistics.median(s) for v, s in cpu.items()}
                median_wall = {v: statistics.median(s) for v, s in wall.items()}
                ratios = [a / b for a, b in zip(cpu["separate"], cpu["batched_1t"], strict=True)]
                ratios_wall = [a / b for a, b in zip(wall["separate"], wall["batched_1t"],
                                                     strict=True)]
                run_separate = DEMO_STEPS * median["separate"] + DEMO_POINTS * point_separate
                run_batched = DEMO_STEPS * median["batched_1t"] + DEMO_POINTS * point_batched
                rows.append({
                    names.MODEL: cell, names.ACTIVATION: activation, names.GAP: gap,
                    names.HIDDEN_SIZE: hidden, "batch_size": batch_size, "k": k,
                    "steps": steps, "rounds": rounds,
                    **{f"cpu_ms_per_step_{v}": round(1000 * m, 3) for v, m in median.items()},
                    **{f"wall_ms_per_step_{v}": round(1000 * m, 3)
                       for v, m in median_wall.items()},
                    "step_factor_1t": round(median["separate"] / median["batched_1t"], 3),
                    "step_factor_1t_min": round(min(ratios), 3),
                    "step_factor_1t_max": round(max(ratios), 3),
                    "step_factor_1t_wall": round(statistics.median(ratios_wall), 3),
                    "step_factor_1t_wall_min": round(min(ratios_wall), 3),
                    "step_factor_1t_wall_max": round(max(ratios_wall), 3),
                    "step_factor_2t_vs_2x1": round(median_wall["separate"]
                                                   / (2 * median_wall["batched_2t"]), 3),
                    "cpu_ms_per_point_separate": round(1000 * point_separate, 1),
                    "cpu_ms_per_point_batched": round(1000 * point_batched, 1),
                    "run_factor_1t": round(run_separate / run_batched, 3),
                    "runs_per_hour_2x1_separate": round(2 * k * 3600 / run_separate),
                    "runs_per_hour_2x1_batched": round(2 * k * 3600 / run_batched),
                })
                print(format_batched(rows[-1]), flush=True)
    return rows


def format_batched(row: dict[str, object]) -> str:
    return (f"{row[names.MODEL]:>4} gap {row[names.GAP]:>3} K={row['k']}: CPU ms/step separate "
            f"{row['cpu_ms_per_step_separate']:7.2f} batched "
            f"{row['cpu_ms_per_step_batched_1t']:7.2f}"
            f" | step factor 1t {row['step_factor_1t']:.2f} (rounds "
            f"{row['step_factor_1t_min']:.2f}..{row['step_factor_1t_max']:.2f}; wall "
            f"{row['step_factor_1t_wall']:.2f}, {row['step_factor_1t_wall_min']:.2f}.."
            f"{row['step_factor_1t_wall_max']:.2f}) | batched 2 threads: wall ms/step "
            f"{row['wall_ms_per_step_batched_2t']:.2f}, vs 2x1 {row['step_factor_2t_vs_2x1']:.2f}"
            f" | eval+diag point ms {row['cpu_ms_per_point_separate']:.0f} vs "
            f"{row['cpu_ms_per_point_batched']:.0f} | run factor {row['run_factor_1t']:.2f}: "
            f"runs/hour (2x1) {row['runs_per_hour_2x1_separate']} -> "
            f"{row['runs_per_hour_2x1_batched']}")


PROFILE_PARTS = ("data", "forward", "loss", "backward", "clipping", "optimizer", "evaluation",
                 "diagnostics", "tracking")


class PartTimer:
    """Wall-clock seconds per part of a run; a part called inside another counts in the outer.

    Each wrapped call is also a `torch.profiler.record_function` region of the part's name,
    so the same labels show in a torch.profiler trace.
    """

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PROFILE_PARTS, 0.0)
        self.depth = 0

    def wrap(self, part: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.depth += 1
            start = time.perf_counter()
            try:
                with torch.profiler.record_function(part):
                    return function(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self.seconds[part] += time.perf_counter() - start

        return timed


class TimedTracker:
    def __init__(self, tracker: Tracker, timer: PartTimer) -> None:
        self.log_metrics = timer.wrap("tracking", tracker.log_metrics)


def profile_run(cell: str, activation: str, gap: int, hidden: int, batch_size: int,
                steps: int, mlflow: bool = True) -> dict[str, object]:
    """Where the wall time of one harness run goes (1 thread; logging to an MLflow store, or
    to memory with `mlflow=False`).

    The harness's own loop runs unchanged; its parts are timed from outside: the task's
    sampling and loss, the model's forward (the fused module and the readout), the backward
    pass (`Tensor.backward`), the clipper (which measures the gradient norm), the optimizer's
    step and zero_grad, the evaluator, the diagnostics and the tracker. `python` is the rest
    of the wall time: the loop's own Python between those calls. The same run is also timed
    without the wrappers, so their own cost shows (`unwrapped_s`).
    """
    task = tasks.make_task("delayed_recall", gap=gap, filler="noise")
    cfg = TrainConfig(steps=steps, batch_size=batch_size, solve_threshold=1.0 + 1e-9)
    with tempfile.TemporaryDirectory() as folder:
        store = f"sqlite:///{folder}/mlflow.db"

        def tracking() -> contextlib.AbstractContextManager[Tracker]:
            if not mlflow:
                return contextlib.nullcontext(MemoryTracker())
            return mlflow_run(store, "bench", f"profile-{cell}", {"model.name": cell}, {})

        model, optimizer = build(cell, activation, task, hidden)
        with tracking() as tracker:
            start = time.perf_counter()
            harness_loop(task, model, optimizer, cfg, tracker)
            unwrapped = time.perf_counter() - start
        model, optimizer = build(cell, activation, task, hidden)
        timer = PartTimer()
        task.sample = timer.wrap("data", task.sample)  # type: ignore[method-assign]
        task.loss = timer.wrap("loss", task.loss)  # type: ignore[method-assign]
        model.forward = timer.wrap("forward", model.forward)  # type: ignore[method-assign]
        optimizer.step = timer.wrap("optimizer", optimizer.step)  # type: ignore[method-assign]
        optimizer.zero_grad = timer.wrap(  # type: ignore[method-assign]
            "optimizer", optimizer.zero_grad)

        class TimedEvaluator(loop.Evaluator):
            __call__ = timer.wrap("evaluation", loop.Evaluator.__call__)

        with mock.patch.object(loop, "Evaluator", TimedEvaluator), \
                mock.patch.object(loop, "diagnose", timer.wrap("diagnostics", loop.diagnose)), \
                mock.patch.object(torch.Tensor, "backward",
                                  timer.wrap("backward", torch.Tensor.backward)), \
                tracking() as tracker:
            start = time.perf_counter()
            train_loop(task, model, optimizer, timer.wrap("clipping", Clipper("none", 1.0)),
                       cfg, TimedTracker(tracker, timer), seed=0, name="profile")
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


def op_profile(cell: str, activation: str, gap: int, hidden: int, batch_size: int, k: int,
               steps: int = 3) -> dict[str, object]:
    """torch.profiler on training steps of K separate runs and of the same K batched.

    Counts the operators run per training step of all K members and their CPU time, and
    names the most expensive one: the fused modules run a few large operators (one
    `aten::lstm` for the whole sequence), the batched cell many small ones per time step.
    """
    task = tasks.make_task("delayed_recall", gap=gap, filler="noise")
    separate, run = batched_setup(cell, activation, task, hidden, batch_size, k)
    row: dict[str, object] = {names.MODEL: cell, names.ACTIVATION: activation, names.GAP: gap,
                              names.HIDDEN_SIZE: hidden, "batch_size": batch_size, "k": k}
    layouts: dict[str, Callable[[], None]] = {
        "separate": functools.partial(separate_steps, task, separate, batch_size),
        "batched": run.train_step}
    for layout, step in layouts.items():
        step()  # warm-up
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        ops = [e for e in prof.key_averages() if e.key.startswith("aten::")]
        top = max(ops, key=lambda e: e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in ops)
        row[f"ops_per_step_{layout}"] = round(sum(e.count for e in ops) / steps)
        row[f"op_ms_per_step_{layout}"] = round(total / steps / 1000, 2)
        row[f"top_op_{layout}"] = top.key
        row[f"top_op_share_{layout}"] = round(top.self_cpu_time_total / total, 3)
    print(f"{cell:>4} gap {gap} K={k}, ops per training step of all K: separate "
          f"{row['ops_per_step_separate']} ({row['op_ms_per_step_separate']} ms, top "
          f"{row['top_op_separate']} {row['top_op_share_separate']:.0%}), batched "
          f"{row['ops_per_step_batched']} ({row['op_ms_per_step_batched']} ms, top "
          f"{row['top_op_batched']} {row['top_op_share_batched']:.0%})", flush=True)
    return row


def linear_fit(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """Least-squares slope, intercept and R² of y against x."""
    n = len(x)
    mean_x, mean_y = sum(x) / n, sum(y) / n
    sxx = sum((a - mean_x) ** 2 for a in x)
    sxy = sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y, strict=True))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    total = sum((b - mean_y) ** 2 for b in y)
    residual = sum((b - intercept - slope * a) ** 2 for a, b in zip(x, y, strict=True))
    return slope, intercept, 1 - residual / total if total else 1.0


def format_row(row: dict[str, object]) -> str:
    return (f"{row[names.MODEL]:>4} {row[names.ACTIVATION]:<4}  "
            + "  ".join(f"{v} {row[f'steps_per_s_{v}']:7.2f}/s" for v in VARIANTS)
            + f"  | harness/bare {row['harness_over_bare']:.3f} (goal >= 0.90)"
            + f"  tracking {row['tracking_overhead']:+.1%} (goal <= 5%)"
            + f"  diagnostics {row['diagnostics_overhead']:+.1%} (goal <= 10%)"
            + f"  | bare {row['gflops_bare']:.1f} GFLOP/s of matmul's {row['gflops_matmul']:.1f}")


def frontier_cost(trials: int = 300, slope: float = 3.0) -> list[dict[str, object]]:
    """Runs the frontier search spends against the full grid of the same ladder and seeds, and
    how often both give the same answer, on noisy synthetic oracles (no training: the search's
    cost is counted in runs; a run's wall time is the other benchmarks' business). Each seed
    solves gap g with probability 1 / (1 + (g / g50)^slope), drawn once per (seed, gap)."""
    import random

    from harness.frontier import (
        FAILED,
        HELD,
        SOLVED,
        Probe,
        Result,
        Rule,
        Search,
        ladder,
        run_search,
        verdict,
    )

    gaps, rows = ladder(5, 640, 2.0), []
    for stride in (1, 2, 3):
        for g50 in (7, 28, 112, 450):
            rule, runs, agree = Rule(2, 3, stride=stride), 0, 0
            for stream in range(trials):
                def call(p, stream=stream, g50=g50):
                    rate = 1 / (1 + (p.gap / g50) ** slope)
                    draw = random.Random(f"{stream}-{p.seed}-{p.gap}").random()
                    return Result(SOLVED if draw < rate else FAILED)
                search = Search(["cfg"], gaps, rule)
                (front,) = run_search(search, call)
                runs += len(front.probes)
                # The grid's answer: every level run with all seeds, the largest level held.
                grid = [g for g in gaps if verdict(
                    [call(Probe("cfg", None, g, s)).outcome for s in range(3)],
                    rule)[0] == HELD]
                agree += (max(grid) if grid else None) == front.gap_held
            row = {"stride": stride, "g50": g50, "frontier_runs": runs / trials,
                   "grid_runs": search.grid_runs(),
                   "share_of_grid": runs / trials / search.grid_runs(),
                   "same_answer": agree / trials}
            print(f"frontier vs grid: stride {stride}, 50% gap {g50:>3}: "
                  f"{row['frontier_runs']:.1f} of {row['grid_runs']} runs "
                  f"({100 * row['share_of_grid']:.0f}%), same answer as the grid in "
                  f"{100 * row['same_answer']:.0f}% of {trials} oracles", flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--gap", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100,
                        help="steps per timed run; evaluation and diagnostics run at step 0 "
                             "and every 100 steps, so 100 steps doubles their share")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's)")
    parser.add_argument("--quick", action="store_true",
                        help="gap 100, hidden 64, 100 steps, 1 round, LSTM only")
    parser.add_argument("--sweep", action="store_true",
                        help="instead: runs/hour of fixed sweeps, 1x2 vs 2x1 jobs x "
                             "threads, seeds as separate jobs or batched (about 6 minutes)")
    parser.add_argument("--scaling", action="store_true",
                        help="instead: LSTM time per step and peak memory for gaps "
                             "50..1000, with linear fits (about 1 minute)")
    parser.add_argument("--report", action="store_true",
                        help="instead: time the report of a synthetic 1,000-run store "
                             "(python -m harness.report.bench; goal < 60 s)")
    parser.add_argument("--batched", action="store_true",
                        help="instead: K seeds as one batched model vs K separate runs, "
                             "K in 1,2,4,8, demo size (hidden 64, batch 32, gaps 20, 80; "
                             "--rounds + 1 rounds; 41 s idle, 11 min on a busy 2-core machine)")
    parser.add_argument("--profile", action="store_true",
                        help="instead: where one harness run's time goes, per model and "
                             "part (1 thread, --gap/--hidden/--batch, 200 steps), and "
                             "torch.profiler operator counts of separate vs batched steps")
    parser.add_argument("--frontier", action="store_true",
                        help="instead: runs of the frontier search vs the full grid on noisy "
                             "synthetic oracles, and how often they agree (seconds)")
    parser.add_argument("--out", type=Path, default=Path("bench.csv"))
    args = parser.parse_args(argv)
    if args.frontier or args.report or args.sweep or args.scaling or args.profile or args.batched:
        # the machine's figure beside every mode's (the default mode prints its own)
        print(f"machine: 2048² fp32 matmul {matmul_gflops():.1f} GFLOP/s with "
              f"{torch.get_num_threads()} torch threads", flush=True)
    if args.frontier:
        return write_rows(frontier_cost(), args.out)
    if args.report:
        from harness.report import bench as report_bench

        return report_bench.main(["--out", str(args.out)])
    # As in every harness job; process-wide, so the bare loop runs under it too.
    configure_torch(args.threads or torch.get_num_threads())
    if args.quick:
        args.gap, args.hidden, args.steps, args.rounds = 100, 64, 100, 1
    models = (("lstm", "tanh"),) if args.quick else MODELS
    if not (args.sweep or args.scaling or args.batched or args.profile):
        print(f"harness-bench: gap {args.gap}, hidden {args.hidden}, batch {args.batch}, "
              f"{args.steps} steps x {args.rounds} rounds, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads", flush=True)
    if args.sweep:
        rows = sweep_throughput()
    elif args.scaling:
        rows = gap_scaling("lstm", args.hidden, args.batch, steps=5)
    elif args.profile:
        torch.set_num_threads(1)  # as each job of a 2-job sweep on 2 cores
        rows = [profile_run(cell, activation, args.gap, args.hidden, args.batch, 200)
                for cell, activation in models]
        for cell, activation in models:  # operator counts behind the batched factors
            op_profile(cell, activation, 20, 64, 32, 4)
    elif args.batched:
        rows = batched_throughput(hidden=64, batch_size=32, steps=10, rounds=args.rounds + 1)
    else:
        rows = measure(args.gap, args.hidden, args.batch, args.steps, args.rounds, models)
    return write_rows(rows, args.out)


def write_rows(rows: list[dict[str, object]], out: Path) -> int:
    """The benchmark's table as CSV; exit status 0."""
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"table written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
