"""What the harness costs over a bare PyTorch loop, measured side by side.

    python -m benchmarks.overhead            # RNN tanh, LSTM, GRU at hidden 128, batch 64, gap 300
    python -m benchmarks.overhead --quick    # LSTM only, gap 100, hidden 64, one 100-step round
                                             # (CI: `make bench-quick`)

For each model it times, in this one process and on the same task data, model shape, batch
and optimizer (Adam), the training steps per second of:

- `bare`: a bare loop of the fused module + readout + optimizer (the ceiling);
- `harness`: the harness's training loop (`harness.loop.train_loop`) with its default
  evaluation and diagnostics cadence, logging to a real MLflow SQLite store (in a temporary
  folder);
- `no_tracking`: the same, logging to memory instead of MLflow;
- `no_diagnostics`: as `no_tracking`, without the gradient profile and dynamics.

and prints the ratios: harness / bare (goal >= 0.90), tracking overhead = 1 - harness /
no_tracking (goal <= 5%), diagnostics overhead = 1 - no_tracking / no_diagnostics (goal
<= 10%). Each timed run includes its evaluations and diagnostics at step 0, every 100 steps
and at the end: in the default 100-step runs that is two of each, twice their share in a long
run (one per 100 steps), so the overheads printed are upper bounds for long runs.
Variants are run in interleaved rounds and each figure is the median over rounds, so a
noisy neighbour affects all variants alike. Rows go to benchmarks/results/overhead.csv.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import torch

import tasks
from benchmarks.common import Sitting, results_argument, step_flops
from harness import names
from harness.clipping import Clipper
from harness.loop import MemoryTracker, Tracker, train_loop
from harness.models import RecurrentModel
from harness.optimizers import make_optimizer
from harness.resources import configure_torch
from harness.schema import OptimConfig, TrainConfig
from harness.tracking.run import mlflow_run

VARIANTS = ("bare", "harness", "no_tracking", "no_diagnostics")
MODELS = (("rnn", "tanh"), ("lstm", "tanh"), ("gru", "tanh"))


def build(cell: str, activation: str | None, task: tasks.Task, hidden: int,
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


def measure(gap: int, hidden: int, batch_size: int, steps: int, rounds: int,
            models: tuple[tuple[str, str], ...] = MODELS,
            sitting: Sitting | None = None) -> list[dict[str, object]]:
    """One row per model: median steps/s of every variant and the ratios."""
    task = tasks.make_task("delayed_recall", gap=gap)
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
            flops = step_flops(cell, task.input_size, task.output_size, task.seq_len, hidden,
                               batch_size)
            rows.append({
                names.MODEL: cell, names.ACTIVATION: activation, names.HIDDEN_SIZE: hidden,
                "batch_size": batch_size, names.GAP: gap, "steps": steps, "rounds": rounds,
                **{f"steps_per_s_{v}": round(r, 3) for v, r in rate.items()},
                "harness_over_bare": round(rate["harness"] / rate["bare"], 3),
                "tracking_overhead": round(1 - rate["harness"] / rate["no_tracking"], 3),
                "diagnostics_overhead": round(1 - rate["no_tracking"] / rate["no_diagnostics"],
                                              3),
                "gflops_bare": round(flops * rate["bare"] / 1e9, 2),
            })
            print(format_row(rows[-1], sitting.sgemm_gflops if sitting else None), flush=True)
            if sitting is not None:
                sitting.add(rows[-1])
    return rows


def format_row(row: dict[str, object], sgemm: float | None) -> str:
    share = f" of sgemm's {sgemm:.1f} ({row['gflops_bare'] / sgemm:.0%})" if sgemm else ""
    return (f"{row[names.MODEL]:>4} {row[names.ACTIVATION]:<4}  "
            + "  ".join(f"{v} {row[f'steps_per_s_{v}']:7.2f}/s" for v in VARIANTS)
            + f"  | harness/bare {row['harness_over_bare']:.3f} (goal >= 0.90)"
            + f"  tracking {row['tracking_overhead']:+.1%} (goal <= 5%)"
            + f"  diagnostics {row['diagnostics_overhead']:+.1%} (goal <= 10%)"
            + f"  | bare {row['gflops_bare']:.1f} GFLOP/s{share}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead",
                                     description=__doc__.splitlines()[0])
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
    results_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.gap, args.hidden, args.steps, args.rounds = 100, 64, 100, 1
    threads = args.threads or torch.get_num_threads()
    # As in every harness job (threads, denormals flushed); process-wide, so the bare loop
    # runs under it too.
    configure_torch(threads)
    sitting = Sitting.start("overhead-quick" if args.quick else "overhead", threads)
    print(f"gap {args.gap}, hidden {args.hidden}, batch {args.batch}, {args.steps} steps x "
          f"{args.rounds} rounds", flush=True)
    measure(args.gap, args.hidden, args.batch, args.steps, args.rounds,
            (("lstm", "tanh"),) if args.quick else MODELS, sitting)
    sitting.write(args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
