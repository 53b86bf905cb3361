"""How a training step's time and a process's peak memory grow with the gap.

    python -m benchmarks.scaling                  # LSTM, hidden 128, batch 64, gaps 50 .. 1000

At each gap: seconds per bare training step (benchmarks.overhead's `bare` loop: sample,
forward, loss, backward, Adam; 5 steps after a warm-up step), and the peak resident memory of
a fresh process that trains 2 bare steps at that gap; then a least-squares line through each
against the gap, with its R². Backpropagation through time keeps every step's activations, so
both should be linear in the sequence length. Rows go to benchmarks/results/scaling.csv.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import torch

import tasks
from benchmarks.common import ROOT, Sitting, results_argument
from benchmarks.overhead import time_variant
from harness import names
from harness.resources import configure_torch

SCALING_GAPS = (50, 100, 200, 500, 1000)


def peak_rss_mb(cell: str, gap: int, hidden: int, batch_size: int, steps: int) -> float:
    """Peak resident memory (MB) of a fresh process that trains `steps` bare steps."""
    code = ("import resource, tasks; from benchmarks.overhead import build, bare_loop; "
            f"t = tasks.make_task('delayed_recall', gap={gap}); "
            f"m, o = build('{cell}', 'tanh', t, {hidden}); "
            f"bare_loop(t, m, o, {steps}, {batch_size}); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, cwd=ROOT)
    return int(done.stdout.split()[-1]) / 1024  # ru_maxrss is in KiB on Linux


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


def gap_scaling(cell: str, hidden: int, batch_size: int, steps: int,
                gaps: tuple[int, ...] = SCALING_GAPS) -> list[dict[str, object]]:
    """Seconds per bare training step and peak memory against the gap, with linear fits."""
    rows = []
    for gap in gaps:
        task = tasks.make_task("delayed_recall", gap=gap)
        time_variant("bare", cell, "tanh", task, hidden, 1, batch_size, "")  # warm-up
        seconds = time_variant("bare", cell, "tanh", task, hidden, steps, batch_size, "")
        rows.append({names.MODEL: cell, names.HIDDEN_SIZE: hidden, "batch_size": batch_size,
                     names.GAP: gap, "seq_len": task.seq_len, "steps": steps,
                     "seconds_per_step": round(seconds / steps, 5),
                     "peak_rss_mb": round(peak_rss_mb(cell, gap, hidden, batch_size, 2), 1)})
    for key in ("seconds_per_step", "peak_rss_mb"):
        slope, intercept, r2 = linear_fit([float(r[names.GAP]) for r in rows],
                                          [float(r[key]) for r in rows])
        print(f"{cell}: {key} = {intercept:.4g} + {slope:.4g} * gap   (R² {r2:.4f})")
        for row in rows:
            row[f"{key}_slope"] = round(slope, 7)
            row[f"{key}_fit_r2"] = round(r2, 4)
    for row in rows:
        print(f"{cell} gap {row[names.GAP]:>5}: {row['seconds_per_step']:.4f} s/step, "
              f"peak {row['peak_rss_mb']:.0f} MB", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm", choices=("rnn", "lstm", "gru"))
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--gaps", nargs="+", type=int, default=list(SCALING_GAPS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's)")
    results_argument(parser)
    args = parser.parse_args(argv)
    threads = args.threads or torch.get_num_threads()
    configure_torch(threads)
    sitting = Sitting.start("scaling", threads)
    for row in gap_scaling(args.cell, args.hidden, args.batch, args.steps, tuple(args.gaps)):
        sitting.add(row)
    sitting.write(args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
