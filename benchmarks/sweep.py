"""Runs per hour of a demo-shaped sweep as real multiruns: whole-sweep batching against one run
per job.

    python -m benchmarks.sweep                     # 48 runs per layout (minutes each)
    python -m benchmarks.sweep --batch-max 4 8 12  # the batched layouts to try

The sweep: delayed recall with noise filler, `model=rnn,rnn_relu,lstm,gru`, gaps 10, 20, 40,
80, seeds 0, 1, 2 (48 runs), hidden 64, batch 32, at most 1,000 steps, evaluation (and
diagnostics) every 100 steps, each run to its budget or until it solves. Each layout is
`python -m harness.train -m ...` in a subprocess, as a user runs it, into its own SQLite store
in a temporary folder, without the closing report:

- `off`: `train.batch_members=off`, one run per job, 2 jobs x 1 thread
  (`hydra.launcher.n_jobs=2 train.threads=1`): the best layout on 2 cores before batching;
- `auto/<n>`: `train.batch_members=auto train.batch_max=<n>`, the sweep's jobs that differ only
  in seed, activation or gap (within 1.25x in length) trained as batched jobs of at most n
  members (harness/batching.py), 2 jobs x 1 thread.

Layouts run one after another in one sitting (with `--rounds 2` the second round runs them in
reverse order). Each prints its wall time, runs/hour and the ratio to `off` of its round, with
the sgemm rate (1 thread) and load average measured just before it; and whether its runs ended
with the same statuses as `off`'s (a batched member equals its separate run to float rounding,
so they should; every disagreement is printed). Rows go to benchmarks/results/sweep.csv.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import tasks
from benchmarks.common import (
    Sitting,
    load_average,
    multirun,
    results_argument,
    runs_of,
    sgemm_gflops,
    step_flops,
)

MODELS = "rnn,rnn_relu,lstm,gru"
GAPS = "10,20,40,80"
BATCH = 32


def sweep_overrides(models: str, gaps: str, seeds: int, steps: int, hidden: int,
                    jobs: int) -> list[str]:
    return ["task=delayed_recall_noise", f"model={models}", f"task.gap={gaps}",
            "seed=" + ",".join(str(s) for s in range(seeds)), f"model.hidden_size={hidden}",
            f"train.batch_size={BATCH}", f"train.steps={steps}", "train.eval_every=100",
            f"hydra.launcher.n_jobs={jobs}", "train.threads=1"]


def layout_overrides(layout: str) -> list[str]:
    """`off`, or `auto/<batch_max>`."""
    if layout == "off":
        return ["train.batch_members=off"]
    mode, _, batch_max = layout.partition("/")
    if mode != "auto" or not batch_max.isdigit():
        raise ValueError(f"layout {layout!r}: `off` or `auto/<batch_max>`")
    return ["train.batch_members=auto", f"train.batch_max={batch_max}"]


Statuses = dict[str, tuple[str, str, str, str]]  # config hash -> status, model, gap, seed


def run_flops(cell: str, gap: int, hidden: int, batch: int) -> float:
    """Matmul FLOPs of one training step of one run of the sweep's task at `gap`."""
    task = tasks.make_task("delayed_recall", gap=gap, filler="noise")
    return step_flops(cell, task.input_size, task.output_size, task.seq_len, hidden, batch)


def sweep_flops(runs: list[dict[str, str]], hidden: int, batch: int) -> float:
    """Matmul FLOPs of every training step the runs took (evaluations and diagnostics not
    counted, so the share of sgemm computed from it is a lower bound of the work done)."""
    return sum(float(run["steps_run"] or 0) * run_flops(run["cell"], int(run["gap"]), hidden,
                                                         batch) for run in runs)


def run_layout(layout: str, base: list[str], folder: Path, hidden: int, batch: int,
               jobs: int) -> tuple[dict[str, object], Statuses]:
    """One real multirun of the sweep in `layout`: wall time, runs, statuses, batched jobs,
    and the training steps' FLOP/s against the sgemm rate of `jobs` cores (`jobs` x the
    1-thread 2048² sgemm measured just before)."""
    sgemm, load = sgemm_gflops(repeats=3), load_average()
    seconds = multirun([*base, *layout_overrides(layout)], folder)
    runs = runs_of(folder)
    statuses = Counter(run["status"] for run in runs)
    gflops = sweep_flops(runs, hidden, batch) / seconds / 1e9
    row: dict[str, object] = {
        "layout": layout, "runs": len(runs), "seconds": round(seconds, 1),
        "runs_per_hour": round(len(runs) * 3600 / seconds),
        "batched_jobs": len(list((folder / "sweep" / "batches").glob("*.json"))),
        "steps_run": sum(int(float(run["steps_run"] or 0)) for run in runs),
        **{f"runs_{status}": statuses.get(status, 0)
           for status in ("solved", "unsolved", "diverged", "failed")},
        "train_gflops": round(gflops, 2), "sgemm_share": round(gflops / (jobs * sgemm), 4),
        "sgemm_gflops": round(sgemm, 1), "load": load, "load_after": load_average()}
    return row, {run["config_hash"]: (run["status"], run["model"], run["gap"], run["seed"])
                 for run in runs}


def disagreements(reference: Statuses, other: Statuses) -> list[str]:
    """Runs (by config hash) whose status differs between two layouts, or that one lacks."""
    lines = []
    for hash_ in sorted(set(reference) | set(other)):
        a, b = reference.get(hash_), other.get(hash_)
        if a is None or b is None or a[0] != b[0]:
            _, model, gap, seed = a or b  # type: ignore[misc]
            lines.append(f"model={model} gap={gap} seed={seed}: "
                         f"{a[0] if a else 'missing'} vs {b[0] if b else 'missing'}")
    return lines


def sweep_throughput(layouts: list[str], base: list[str], hidden: int, batch: int, jobs: int,
                     rounds: int = 1,
                     sitting: Sitting | None = None) -> list[dict[str, object]]:
    """Every layout's multirun, in interleaved rounds; runs/hour against `off` of the same
    round, and the runs whose status differs from `off`'s."""
    rows = []
    for round_ in range(1, rounds + 1):
        order = layouts if round_ % 2 else layouts[::-1]
        measured: dict[str, tuple[dict[str, object], Statuses]] = {}
        for layout in order:
            with tempfile.TemporaryDirectory(prefix="bench-sweep-") as folder:
                row, statuses = run_layout(layout, base, Path(folder), hidden, batch, jobs)
            row["round"] = round_
            row["sweep"] = " ".join(base)  # what was swept, with its step budget
            measured[layout] = row, statuses
            print(f"round {round_} {layout:>7}: {row['runs']} runs in {row['seconds']} s = "
                  f"{row['runs_per_hour']} runs/hour ({row['batched_jobs']} batched jobs; "
                  f"{row['runs_solved']} solved, {row['runs_unsolved']} unsolved, "
                  f"{row['runs_diverged']} diverged, {row['runs_failed']} failed; "
                  f"{row['steps_run']} steps; training {row['train_gflops']} GFLOP/s = "
                  f"{row['sgemm_share']:.1%} of {jobs} x sgemm) | sgemm {row['sgemm_gflops']} "
                  f"GFLOP/s (1 thread), load {row['load']} -> {row['load_after']}",
                  flush=True)
        if "off" in measured:
            off_row, off_statuses = measured["off"]
            for layout in order:
                row, statuses = measured[layout]
                row["ratio_to_off"] = round(float(row["runs_per_hour"])  # type: ignore[arg-type]
                                            / float(off_row["runs_per_hour"]), 3)  # type: ignore[arg-type]
                lines = disagreements(off_statuses, statuses)
                row["status_disagreements"] = len(lines)
                if layout == "off":
                    continue
                print(f"round {round_} {layout:>7} vs off: {row['ratio_to_off']:.2f}x runs/hour"
                      f" (goal >= 3); statuses: " + (f"all {len(statuses)} the same"
                                                     if not lines else f"{len(lines)} differ"),
                      flush=True)
                for line in lines:
                    print(f"    {line}", flush=True)
        for layout in order:
            rows.append(measured[layout][0])
            if sitting is not None:
                sitting.add(rows[-1])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--gaps", default=GAPS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=2, help="parallel jobs (1 thread each)")
    parser.add_argument("--batch-max", nargs="+", type=int, default=[4, 8],
                        help="train.batch_max of each batched layout")
    parser.add_argument("--rounds", type=int, default=1)
    results_argument(parser)
    args = parser.parse_args(argv)
    base = sweep_overrides(args.models, args.gaps, args.seeds, args.steps, args.hidden,
                           args.jobs)
    sitting = Sitting.start("sweep", 1)
    print("sweep: " + " ".join(base), flush=True)
    started = time.perf_counter()
    sweep_throughput(["off", *(f"auto/{n}" for n in args.batch_max)], base, args.hidden, BATCH,
                     args.jobs, args.rounds, sitting)
    print(f"{time.perf_counter() - started:.0f} s in all; load average {load_average()}",
          flush=True)
    sitting.write(args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
