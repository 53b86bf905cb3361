"""The batched model against K separate runs: time per member-step, factor, share of sgemm.

    python -m benchmarks.batched                # RNN, LSTM, GRU x K 1,2,4,8 x gaps 20, 80
    python -m benchmarks.batched --quick        # K 4 only, 3 rounds of 2 steps
    python -m benchmarks.batched --profile      # what the steps are made of (torch.profiler)
    python -m benchmarks.batched --build-time   # the C++ ops' first build and cached load
    python -m benchmarks.batched --driver       # the same through the harness's driver

A training step is what a run does per step: sample each member's batch (delayed recall with
noise filler, `tasks.make_task("delayed_recall", gap=g, filler="noise")`, from the member's own
training stream `harness.loop.data_generators(seed)`), forward, the task's loss, backward,
Adam step. `separate` is K fused `harness.models.RecurrentModel`s (torch's nn.RNN/LSTM/GRU),
seeds 0..K-1, trained one after another, as K separate jobs train them; each contender trains
the same K members as one stacked `harness.batched.BatchedModel`:

- `cpp`: `BatchedModel(members, backend="cpp")`, the C++ recurrence (harness/batched_kernels.py);
- `eager`: `BatchedModel(members, backend="eager")`, autograd ops per time step (what runs
  where the C++ ops cannot be built);
- `cpp_mixed` (RNN only, `--variants`): `cpp` with the members' activations tanh, relu,
  leaky_relu, hard_tanh in turn (its factor is against the tanh separate runs);
- `cpp_start` (`--variants`): `cpp` with per-member starts 0, 1, ..., K-1 at the same length
  (the cost of holding a left-padded member).

1 torch thread, denormals flushed (as every harness job: `harness.train.configure_torch`);
contenders interleaved in rounds (each round times `steps` steps of each), process CPU time
(with 1 thread, the work of the steps whatever else the machine runs; the median wall time is
in the results too), medians over the rounds. **Factor** = separate time per member-step /
contender time per member-step (> 1: the batched model is faster), with the range of the
per-round ratios. **Share of sgemm** counts the matmul FLOPs of a member's step (forward + 2x
backward: recurrence with its input projection, readout; `benchmarks.common.step_flops`)
against the 2048² fp32 sgemm rate (1 thread) measured before the row, the best so far in the
sitting taken as the peak (on a shared machine a single measurement can be low, so the share is
a lower bound when the machine was busy). Rows go to benchmarks/results/batched.csv.

`--driver` times what a job does instead of the bare step: K runs through the harness's own
driver, `harness.loop.drive` (run records, evaluation and diagnostics at the default cadence,
divergence checks, metric windows, an in-memory tracker), as K separate `FusedStepper` runs
one after another against one `harness.batched.BatchedStepper` job of the K members (stacked
Adam, per-member clipping and norms); `steps` steps each (no early stop), process CPU time,
1 thread, once with evaluations and diagnostics every 100 steps and once without (`eval`
column: 100 or none). Rows go to benchmarks/results/batched-driver.csv.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

import tasks
from benchmarks.common import (
    ROOT,
    Sitting,
    load_average,
    results_argument,
    sgemm_gflops,
    step_flops,
)
from harness import names
from harness.batched import BatchedModel, BatchedStepper, build_member
from harness.batched_kernels import kernels
from harness.clipping import Clipper
from harness.loop import FusedStepper, MemoryTracker, RunRecord, data_generators, drive
from harness.models import RecurrentModel
from harness.optimizers import make_optimizer
from harness.resources import configure_torch
from harness.schema import ClipConfig, OptimConfig, TrainConfig

CELLS = ("rnn", "lstm", "gru")
KS = (1, 2, 4, 8)
GAPS = (20, 80)
VARIANTS = ("cpp", "eager", "cpp_mixed", "cpp_start")
MIXED = ("tanh", "relu", "leaky_relu", "hard_tanh")

Step = Callable[[], None]


def make_task(gap: int) -> tasks.Task:
    return tasks.make_task("delayed_recall", gap=gap, filler="noise")


def separate_step(task: tasks.Task, models: list[RecurrentModel], batch: int) -> Step:
    """One training step of each of K separate runs, one after another."""
    runs = [(m, torch.optim.Adam(m.parameters(), lr=1e-3), data_generators(seed)[0])
            for seed, m in enumerate(models)]

    def step() -> None:
        for model, optimizer, generator in runs:
            data = task.sample(batch, generator)
            loss = task.loss(model(data.inputs), data)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return step


def batched_step(task: tasks.Task, model: BatchedModel, batch: int,
                 start: torch.Tensor | None = None) -> Step:
    """One training step of the K members as one stacked model (loss summed over members, so
    each member's gradient is its own loss's; Adam is elementwise, so each member's update
    is its separate run's)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generators = [data_generators(seed)[0] for seed in range(model.members)]

    def step() -> None:
        data = [task.sample(batch, g) for g in generators]
        outputs = model(torch.stack([d.inputs for d in data]), start)
        loss = sum(task.loss(outputs[k], d) for k, d in enumerate(data))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()
    return step


@dataclass
class Contenders:
    """K separate fused runs and the same K members batched, one `Step` each."""

    separate_models: list[RecurrentModel]
    batched_models: dict[str, BatchedModel]
    steps: dict[str, Step]


def contenders(cell: str, k: int, task: tasks.Task, hidden: int, batch: int,
               variants: tuple[str, ...]) -> Contenders:
    def members(activations: tuple[str, ...] = ("tanh",)) -> list[RecurrentModel]:
        return [build_member(seed, cell, task, hidden,
                             activation=activations[seed % len(activations)])
                for seed in range(k)]

    separate = copy.deepcopy(members())
    models: dict[str, BatchedModel] = {}
    steps: dict[str, Step] = {"separate": separate_step(task, separate, batch)}
    for variant in variants:
        if variant == "cpp_mixed" and cell != "rnn":
            continue
        backend = "eager" if variant == "eager" else "cpp"
        model = BatchedModel(members(MIXED if variant == "cpp_mixed" else ("tanh",)), backend)
        start = torch.arange(k) if variant == "cpp_start" else None
        models[variant] = model
        steps[variant] = batched_step(task, model, batch, start)
    return Contenders(separate, models, steps)


def time_rounds(steps: dict[str, Step], per_round: int,
                rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(CPU, wall) seconds per step of each contender in each round, interleaved."""
    for step in steps.values():  # warm-up: first-call costs, the allocator
        step()
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    wall: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            for _ in range(per_round):
                step()
            cpu[name].append((time.process_time() - start_cpu) / per_round)
            wall[name].append((time.perf_counter() - start_wall) / per_round)
    return cpu, wall


def measure(cell: str, k: int, gap: int, hidden: int, batch: int, variants: tuple[str, ...],
            per_round: int, rounds: int, peak: float) -> dict[str, object]:
    """One row: per member-step ms of separate and every contender, factors, sgemm shares."""
    sgemm = sgemm_gflops(repeats=3)
    peak = max(peak, sgemm)
    task = make_task(gap)
    cpu, wall = time_rounds(contenders(cell, k, task, hidden, batch, variants).steps,
                            per_round, rounds)
    member_flops = step_flops(cell, task.input_size, task.output_size, task.seq_len, hidden,
                              batch)
    median = {name: statistics.median(s) / k for name, s in cpu.items()}  # per member-step
    row: dict[str, object] = {
        names.MODEL: cell, names.HIDDEN_SIZE: hidden, "batch_size": batch, names.GAP: gap,
        "k": k, "steps": per_round, "rounds": rounds, "sgemm_gflops": round(sgemm, 1),
        "sgemm_peak": round(peak, 1), "load": load_average()}
    for name in cpu:
        row[f"ms_{name}"] = round(1e3 * median[name], 3)
        row[f"wall_ms_{name}"] = round(1e3 * statistics.median(wall[name]) / k, 3)
        row[f"sgemm_share_{name}"] = round(member_flops / median[name] / 1e9 / peak, 3)
        if name != "separate":
            ratios = [a / b for a, b in zip(cpu["separate"], cpu[name], strict=True)]
            row[f"factor_{name}"] = round(median["separate"] / median[name], 3)
            row[f"factor_{name}_min"] = round(min(ratios), 3)
            row[f"factor_{name}_max"] = round(max(ratios), 3)
    print(format_row(row, [name for name in cpu if name != "separate"]), flush=True)
    return row


def format_row(row: dict[str, object], contenders_: list[str]) -> str:
    cells = [f"{row[names.MODEL]:4} K={row['k']} gap={row[names.GAP]:3} | sgemm "
             f"{row['sgemm_gflops']:5.1f} (peak {row['sgemm_peak']:5.1f}) load {row['load']:4.1f}"
             f" | separate {row['ms_separate']:6.2f} ms/member-step "
             f"({row['sgemm_share_separate']:.0%} of sgemm)"]
    for name in contenders_:
        cells.append(f"{name} {row[f'ms_{name}']:6.2f} ms: factor {row[f'factor_{name}']:.2f} "
                     f"({row[f'factor_{name}_min']:.2f}-{row[f'factor_{name}_max']:.2f}), "
                     f"{row[f'sgemm_share_{name}']:.0%} of sgemm")
    return " | ".join(cells)


def table(hidden: int, batch: int, per_round: int, rounds: int,
          cells: tuple[str, ...] = CELLS, gaps: tuple[int, ...] = GAPS,
          ks: tuple[int, ...] = KS, variants: tuple[str, ...] = ("cpp", "eager"),
          sitting: Sitting | None = None) -> list[dict[str, object]]:
    """The batched-cell table: every cell x gap x K."""
    if kernels() is None:
        print("the C++ ops could not be built here: the cpp contenders are left out", flush=True)
        variants = tuple(v for v in variants if v == "eager")
    peak = sitting.sgemm_gflops if sitting is not None else 0.0
    rows = []
    for cell in cells:
        for gap in gaps:
            for k in ks:
                row = measure(cell, k, gap, hidden, batch, variants, per_round, rounds, peak)
                peak = float(row["sgemm_peak"])  # type: ignore[arg-type]
                rows.append(row)
                if sitting is not None:
                    sitting.add(row)
    return rows


# ---- through the harness's driver -------------------------------------------------------


def driver_seconds(cell: str, k: int, task: tasks.Task, hidden: int, cfg: TrainConfig,
                   layout: str) -> float:
    """Process CPU seconds of K runs of `cfg.steps` steps through `drive`: `separate` (K
    FusedStepper runs one after another) or `batched` (one BatchedStepper of K members)."""
    models = [build_member(seed, cell, task, hidden) for seed in range(k)]
    records = [RunRecord(task, cfg, MemoryTracker(), seed, f"m{seed}") for seed in range(k)]
    start = time.process_time()
    if layout == "separate":
        for model, record in zip(models, records, strict=True):
            stepper = FusedStepper(model, make_optimizer(model, OptimConfig()),
                                   Clipper.of(ClipConfig()), task)
            drive(stepper, [record], cfg)
    else:
        drive(BatchedStepper(models, [task] * k, [OptimConfig()] * k, [ClipConfig()] * k),
              records, cfg)
    return time.process_time() - start


def driver_table(hidden: int, batch: int, steps: int, rounds: int, cells: tuple[str, ...],
                 gaps: tuple[int, ...], ks: tuple[int, ...],
                 sitting: Sitting | None = None) -> list[dict[str, object]]:
    """Factor of the batched job over K separate runs through `drive`, with and without
    evaluations and diagnostics (every 100 steps)."""
    rows = []
    for cell in cells:
        for gap in gaps:
            task = make_task(gap)
            warm = TrainConfig(steps=2, batch_size=batch, solve_threshold=1.0 + 1e-9)
            for layout in ("separate", "batched"):  # first calls: the C++ ops' load, allocator
                driver_seconds(cell, 2, task, hidden, warm, layout)
            for k in ks:
                for eval_every in (100, 0):
                    # solve_threshold above 1: no run stops early, every layout runs `steps`.
                    cfg = TrainConfig(steps=steps, batch_size=batch, solve_threshold=1.0 + 1e-9,
                                      eval_every=eval_every or steps + 1,
                                      profile_every=0 if eval_every else -1)
                    sgemm, load = sgemm_gflops(repeats=3), load_average()
                    seconds: dict[str, list[float]] = {"separate": [], "batched": []}
                    for _ in range(rounds):
                        for layout in seconds:
                            seconds[layout].append(driver_seconds(cell, k, task, hidden, cfg,
                                                                  layout))
                    median = {n: statistics.median(v) for n, v in seconds.items()}
                    row: dict[str, object] = {
                        names.MODEL: cell, names.GAP: gap, names.HIDDEN_SIZE: hidden,
                        "batch_size": batch, "k": k, "steps": steps, "rounds": rounds,
                        "eval": eval_every or "none", "sgemm_gflops": round(sgemm, 1),
                        "load": load,
                        "ms_separate": round(1e3 * median["separate"] / (k * steps), 3),
                        "ms_batched": round(1e3 * median["batched"] / (k * steps), 3),
                        "factor": round(median["separate"] / median["batched"], 3)}
                    print(f"{cell:4} K={k} gap={gap:3} eval {str(row['eval']):>4} | sgemm "
                          f"{row['sgemm_gflops']:5.1f} load {load:4.1f} | through drive: "
                          f"separate {row['ms_separate']:6.2f}, batched {row['ms_batched']:6.2f}"
                          f" ms/member-step: factor {row['factor']:.2f}", flush=True)
                    rows.append(row)
                    if sitting is not None:
                        sitting.add(row)
    return rows


# ---- what the steps are made of ----------------------------------------------------------


def op_profile(cell: str, gap: int, hidden: int, batch: int, k: int,
               steps: int = 3) -> dict[str, object]:
    """torch.profiler on training steps of K separate runs and of the same K batched (`cpp`):
    the aten operators run per training step of all K members, their self CPU time, and the
    most expensive one. torch's CPU nn.RNN and nn.GRU run several small ops per time step;
    the batched model's recurrence is two C++ ops per layer."""
    run = contenders(cell, k, make_task(gap), hidden, batch,
                     ("cpp",) if kernels() is not None else ("eager",))
    batched = next(name for name in run.steps if name != "separate")
    row: dict[str, object] = {names.MODEL: cell, names.GAP: gap, names.HIDDEN_SIZE: hidden,
                              "batch_size": batch, "k": k, "batched": batched}
    for layout, step in (("separate", run.steps["separate"]), ("batched", run.steps[batched])):
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
    print(f"{cell:>4} gap {gap} K={k}, aten ops per training step of all K: separate "
          f"{row['ops_per_step_separate']} ({row['op_ms_per_step_separate']} ms, top "
          f"{row['top_op_separate']} {row['top_op_share_separate']:.0%}), batched ({batched}) "
          f"{row['ops_per_step_batched']} ({row['op_ms_per_step_batched']} ms, top "
          f"{row['top_op_batched']} {row['top_op_share_batched']:.0%})", flush=True)
    return row


def profile_fused(cell: str, gap: int, hidden: int, batch: int, steps: int,
                  peak: float) -> None:
    """torch.profiler on the bare fused single-model training step: where its time goes."""
    task = make_task(gap)
    run = separate_step(task, [build_member(0, cell, task, hidden)], batch)
    for _ in range(3):
        run()
    start = time.process_time()
    for _ in range(steps):
        run()
    per_step = (time.process_time() - start) / steps
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    flops = step_flops(cell, task.input_size, task.output_size, task.seq_len, hidden, batch)
    print(f"\n{cell} gap {gap} H={hidden} B={batch}: {1e3 * per_step:.2f} ms/step unprofiled, "
          f"{flops / per_step / 1e9:.1f} GFLOP/s = {flops / per_step / 1e9 / peak:.0%} of "
          f"sgemm ({peak:.0f}); {sum(e.count for e in events) / steps:.0f} ops/step; "
          "self CPU time by op:")
    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
        print(f"  {event.key:42} {event.self_cpu_time_total / total:6.1%} "
              f"{event.count / steps:7.1f} calls/step "
              f"{event.self_cpu_time_total / steps / 1e3:7.3f} ms/step")


def build_times() -> list[dict[str, object]]:
    """The C++ ops' first use in a fresh process: built into an empty cache folder, then
    loaded from that cache."""
    code = ("import time; t = time.perf_counter(); "
            "from harness.batched_kernels import kernels; ops = kernels(); "
            "print(f'{time.perf_counter() - t:.1f}', ops is not None)")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "TORCH_EXTENSIONS_DIR": folder}
        for label in ("fresh build", "cached load"):
            seconds, built = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                                            capture_output=True, text=True,
                                            check=True).stdout.split()[-2:]
            print(f"C++ ops, {label}: {seconds} s (available: {built}); load average "
                  f"{load_average()}", flush=True)
            rows.append({"what": label, "seconds": float(seconds), "available": built,
                         "load": load_average()})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batched",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--ks", nargs="+", type=int, default=list(KS))
    parser.add_argument("--gaps", nargs="+", type=int, default=list(GAPS))
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--variants", nargs="+", default=["cpp", "eager"], choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per contender per round (default 3; --driver: steps per "
                             "run, default 200)")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (--driver: 2)")
    parser.add_argument("--quick", action="store_true", help="K 4 only, 3 rounds of 2 steps")
    parser.add_argument("--profile", action="store_true",
                        help="instead: the bare fused step's top ops, and the aten op counts "
                             "of K = 4 separate vs batched steps")
    parser.add_argument("--build-time", action="store_true",
                        help="instead: the C++ ops' fresh build and cached load")
    parser.add_argument("--driver", action="store_true",
                        help="instead: K runs through the harness's driver (drive), separate "
                             "vs one batched job, with and without evaluations")
    results_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.ks, args.steps, args.rounds = [4], 2, 3
    if args.steps is None:
        args.steps = 200 if args.driver else 3
    if args.rounds is None:
        args.rounds = 2 if args.driver else 5
    configure_torch(1)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.driver:
        sitting = Sitting.start("batched-driver", 1)
        driver_table(args.hidden, args.batch, args.steps, args.rounds, tuple(args.cells),
                     tuple(args.gaps), tuple(args.ks), sitting)
    elif args.build_time:
        sitting = Sitting.start("batched-build", 1)
        for row in build_times():
            sitting.add(row)
    elif args.profile:
        sitting = Sitting.start("batched-ops", 1)
        for cell in args.cells:
            for gap in args.gaps:
                profile_fused(cell, gap, args.hidden, args.batch, 30, sitting.sgemm_gflops)
        for cell in args.cells:
            for gap in args.gaps:
                sitting.add(op_profile(cell, gap, args.hidden, args.batch, 4))
    else:
        sitting = Sitting.start("batched", 1)
        started = time.perf_counter()
        table(args.hidden, args.batch, args.steps, args.rounds, tuple(args.cells),
              tuple(args.gaps), tuple(args.ks), tuple(args.variants), sitting)
        print(f"sgemm at the end: {sgemm_gflops():.1f} GFLOP/s; load average {load_average()}; "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    sitting.write(args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
