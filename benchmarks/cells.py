"""The modern cells' training-step time against the LSTM and the GRU.

    python -m benchmarks.cells            # delayed recall, gaps 20 and 80, batch 32, 1 thread

Each cell's bare training step (benchmarks.overhead's `bare` loop: sample, forward, loss,
backward, Adam) on delayed recall, in two comparisons: at the parameter count of the GRU at
hidden 64 (each cell's hidden size the one whose model comes closest to it, by
harness.cells.parameter_count: the sizes of conf/experiment/modern_vs_classic.yaml), and at
the same hidden size 64. The LSTM and the GRU train through torch's fused modules, minGRU,
minLSTM and the LRU through their sequential step (harness/models.py's unrolled pass; no cell
has a parallel-scan path). Rounds are interleaved (every cell once per round, so a burst of
load on a shared machine hits all of them), and each cell's time is the median over rounds
of `steps` steps. Rows go to benchmarks/results/cells.csv, with the ratio to the GRU of the
same comparison and gap.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import tasks
from benchmarks.common import Sitting, results_argument
from benchmarks.overhead import bare_loop, build
from harness import names
from harness.cells import CELLS, parameter_count
from harness.resources import configure_torch

MODELS = ("lstm", "gru", "mingru", "minlstm", "lru")
REFERENCE, REFERENCE_HIDDEN = "gru", 64
GAPS = (20, 80)


def matched_hidden(cell: str, target: int, input_size: int, output_size: int) -> int:
    """The hidden size whose one-layer model's parameter count is nearest `target` (the count
    grows with the hidden size: bisect for the first size at or above it)."""
    def count(hidden: int) -> int:
        return parameter_count(CELLS[cell], input_size, hidden, output_size)

    low, high = 1, max(target, 1)
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if count(middle) < target else (low, middle)
    return min((low - 1, low) if low > 1 else (low,), key=lambda h: abs(count(h) - target))


def sizes(task: tasks.Task, models: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """{comparison: {cell: hidden size}}: matched to the reference's parameter count, and
    the reference's hidden size."""
    target = parameter_count(CELLS[REFERENCE], task.input_size, REFERENCE_HIDDEN,
                             task.output_size)
    return {"parameters": {cell: matched_hidden(cell, target, task.input_size,
                                                task.output_size) for cell in models},
            "hidden": dict.fromkeys(models, REFERENCE_HIDDEN)}


def measure(gap: int, batch_size: int, steps: int, rounds: int,
            models: tuple[str, ...] = MODELS) -> list[dict[str, object]]:
    """One row per (comparison, cell) at one gap: the median seconds per step over rounds."""
    task = tasks.make_task("delayed_recall", gap=gap)
    rows = []
    for comparison, hidden in sizes(task, models).items():
        built = {cell: build(cell, None, task, hidden[cell]) for cell in models}
        for model, optimizer in built.values():
            bare_loop(task, model, optimizer, 1, batch_size)  # warm-up
        seconds: dict[str, list[float]] = {cell: [] for cell in models}
        for _ in range(rounds):
            for cell, (model, optimizer) in built.items():
                start = time.perf_counter()
                bare_loop(task, model, optimizer, steps, batch_size)
                seconds[cell].append((time.perf_counter() - start) / steps)
        median = {cell: statistics.median(times) for cell, times in seconds.items()}
        for cell in models:
            rows.append({"comparison": comparison, names.MODEL: cell,
                         names.HIDDEN_SIZE: hidden[cell],
                         names.PARAMETER_COUNT: sum(p.numel() for p in built[cell][0]
                                                    .parameters()),
                         names.GAP: gap, "seq_len": task.seq_len, "batch_size": batch_size,
                         "steps": steps, "rounds": rounds,
                         "seconds_per_step": round(median[cell], 5),
                         "ratio_to_gru": round(median[cell] / median[REFERENCE], 3)
                         if REFERENCE in median else ""})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cells",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--gaps", nargs="+", type=int, default=list(GAPS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    results_argument(parser)
    args = parser.parse_args(argv)
    configure_torch(args.threads)
    sitting = Sitting.start("cells", args.threads)
    for gap in args.gaps:
        for row in measure(gap, args.batch, args.steps, args.rounds):
            sitting.add(row)
            print(f"gap {gap:>4} {row['comparison']:>10} {row[names.MODEL]:>8} "
                  f"h={row[names.HIDDEN_SIZE]:<4} {row[names.PARAMETER_COUNT]:>6} params "
                  f"{1000 * float(row['seconds_per_step']):8.2f} ms/step  "
                  f"x{row['ratio_to_gru']} the GRU", flush=True)
    sitting.write(args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
