"""Benchmark: what the harness costs over a bare PyTorch loop, measured side by side.

    harness-bench                 # RNN tanh, LSTM, GRU at hidden 128, batch 64, gap 300
    harness-bench --quick         # a short version (CI runs it so a regression is visible)
    harness-bench --sweep         # runs/hour of a fixed sweep: 1 job x 2 threads vs 2 x 1
    harness-bench --scaling       # time per step and peak memory vs gap (50 .. 1000)

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
import csv
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import tasks
from harness import names
from harness.clipping import Clipper
from harness.loop import MemoryTracker, Tracker, make_optimizer, train_loop
from harness.models import RecurrentModel
from harness.schema import TrainConfig
from harness.tracking import mlflow_run
from harness.train import configure_torch

VARIANTS = ("bare", "harness", "no_tracking", "no_diagnostics")
MODELS = (("rnn", "tanh"), ("lstm", "tanh"), ("gru", "tanh"))


def build(cell: str, activation: str, task: tasks.Task, hidden: int,
          seed: int = 0) -> tuple[RecurrentModel, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = RecurrentModel(cell, task.input_size, task.output_size, hidden, activation=activation)
    return model, make_optimizer(model, "adam", 1e-3)


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
    gates = len(names.GATE_BLOCKS[cell])
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


SWEEP = ["task=delayed_recall_noise", "task.gap=40,80", "model=rnn,lstm,gru", "seed=0,1",
         "train.steps=1000", "model.hidden_size=64"]  # 12 runs, mostly unsolved: full budget
LAYOUTS = ((1, 2), (2, 1))  # (parallel jobs, torch threads per job) on 2 cores


def sweep_throughput(layouts: tuple[tuple[int, int], ...] = LAYOUTS) -> list[dict[str, object]]:
    """Runs per hour of one fixed 12-run sweep, as real multiruns, per jobs x threads layout."""
    rows = []
    for jobs, threads in layouts:
        with tempfile.TemporaryDirectory() as folder:
            command = [sys.executable, "-m", "harness.train", "-m", *SWEEP,
                       f"hydra.launcher.n_jobs={jobs}", f"train.threads={threads}",
                       "experiment_name=bench-sweep", f"tracking.uri=sqlite:///{folder}/m.db",
                       f"train.checkpoint_dir={folder}/ckpt", "report.on_multirun_end=false",
                       f"hydra.sweep.dir={folder}/sweep"]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd=folder)
            seconds = time.perf_counter() - start
        rows.append({"jobs": jobs, "threads_per_job": threads, "runs": 12,
                     "seconds": round(seconds, 1), "runs_per_hour": round(12 * 3600 / seconds)})
        print(f"sweep of 12 runs, {jobs} job(s) x {threads} thread(s): {seconds:.1f} s, "
              f"{rows[-1]['runs_per_hour']} runs/hour", flush=True)
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
                        help="instead: runs/hour of a fixed 12-run sweep, 1x2 vs 2x1 "
                             "jobs x threads (about 3 minutes)")
    parser.add_argument("--scaling", action="store_true",
                        help="instead: LSTM time per step and peak memory for gaps "
                             "50..1000, with linear fits (about 1 minute)")
    parser.add_argument("--report", action="store_true",
                        help="instead: time the report of a synthetic 1,000-run store "
                             "(python -m harness.report.bench; goal < 60 s)")
    parser.add_argument("--out", type=Path, default=Path("bench.csv"))
    args = parser.parse_args(argv)
    if args.report:
        from harness.report import bench as report_bench

        return report_bench.main(["--out", str(args.out)])
    # As in every harness job; process-wide, so the bare loop runs under it too.
    configure_torch(args.threads or torch.get_num_threads())
    if args.quick:
        args.gap, args.hidden, args.steps, args.rounds = 100, 64, 100, 1
    models = (("lstm", "tanh"),) if args.quick else MODELS
    if not (args.sweep or args.scaling):
        print(f"harness-bench: gap {args.gap}, hidden {args.hidden}, batch {args.batch}, "
              f"{args.steps} steps x {args.rounds} rounds, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads", flush=True)
    if args.sweep:
        rows = sweep_throughput()
    elif args.scaling:
        rows = gap_scaling("lstm", args.hidden, args.batch, steps=5)
    else:
        rows = measure(args.gap, args.hidden, args.batch, args.steps, args.rounds, models)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"table written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
