"""The fixed cost of a run: the wall time of a one-step run (`train.steps=1`: the step, the
evaluations and diagnostics at steps 0 and 1, and all the run's bookkeeping), measured three ways.

    python -m benchmarks.fixed_cost                               # 8 runs each, 1 thread
    python -m benchmarks.fixed_cost --baseline /tmp/base --runs 6  # and an older checkout

- `in_process`: `harness.train.train(cfg)` on `--runs` one-step configs (seeds 1, 2, ...) in
  one Python process, after a first run that pays what a process pays once (imports, the
  store's creation, torch's first optimizer); the median seconds per run. What each run of a
  long sweep costs on top of its training.
- `sweep`: the seconds each more job adds to a one-step sweep run in one process
  (`harness-train -m seed=... hydra.launcher.n_jobs=1`): (wall of `--runs` jobs - wall of 2
  jobs) / (`--runs` - 2); on top of `in_process`, Hydra's composing of each job (twice: the
  sweeper's check and the launch), the progress line, the job's own log file.
- `cli`: `harness-train train.steps=1` as a user types it, into a store that already exists:
  the median wall seconds, imports included.

The default config (delayed recall, gap 20, LSTM with 64 units, evaluation batch 256, profile
batch 32), 1 torch thread, a SQLite store in a temporary folder. Each checkout's code (this one,
and `--baseline`'s) is measured in its own fresh interpreters, interleaved, in one sitting. The
goal: 0.1 s per run (`in_process` and `sweep`). Rows go to benchmarks/results/fixed_cost.csv.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.checkouts import Code, baseline_arguments, codes
from benchmarks.common import Sitting, load_average, results_argument

GOAL_S = 0.1
ONE_STEP = ["train.steps=1", "train.threads=1", "experiment_name=fixed_cost"]

# Run in a fresh interpreter with a checkout's code: argv = folder, runs. Prints the seconds
# of each run after the first, as JSON.
IN_PROCESS = r"""
import json, sys, time
from pathlib import Path
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from harness.schema import PROJECT_ROOT, register
from harness.train import train

register()
folder, runs = Path(sys.argv[1]), int(sys.argv[2])
overrides = json.loads(sys.argv[3])


def config(seed):
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"seed={seed}"])
    with open_dict(cfg):
        cfg.tracking.uri = f"sqlite:///{folder}/mlflow.db"
        cfg.train.checkpoint_dir = str(folder / "checkpoints")
    return cfg


configs = [config(seed) for seed in range(runs + 1)]
train(configs[0])
seconds = []
for cfg in configs[1:]:
    start = time.perf_counter()
    train(cfg)
    seconds.append(time.perf_counter() - start)
print(json.dumps(seconds))
"""


def store_args(folder: Path) -> list[str]:
    return [f"tracking.uri=sqlite:///{folder}/mlflow.db",
            f"train.checkpoint_dir={folder}/checkpoints", f"hydra.run.dir={folder}/run",
            f"hydra.sweep.dir={folder}/sweep", "report.on_multirun_end=false"]


def checked(code: Code, args: list[str], folder: Path) -> float:
    """Wall seconds of `python ARGS` with `code`; a failure is raised with its output."""
    elapsed, done = code.timed(args, folder)
    if done.returncode != 0:
        raise RuntimeError(f"{code.label}: python {' '.join(args)[:300]} exited "
                           f"{done.returncode}\n{done.stderr[-3000:]}")
    return elapsed


def in_process(code: Code, folder: Path, runs: int) -> list[float]:
    _, done = code.timed(["-c", IN_PROCESS, str(folder), str(runs), json.dumps(ONE_STEP)],
                         folder)
    if done.returncode != 0:
        raise RuntimeError(f"{code.label}: in-process runs failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def sweep(code: Code, folder: Path, jobs: int, first_seed: int) -> float:
    """Wall seconds of a one-step sweep of `jobs` jobs (seeds from `first_seed`) in one
    process."""
    seeds = ",".join(str(s) for s in range(first_seed, first_seed + jobs))
    return checked(code, ["-m", "harness.train", "-m", *ONE_STEP, f"seed={seeds}",
                          "hydra.launcher.n_jobs=1", *store_args(folder)], folder)


def cli(code: Code, folder: Path, seed: int) -> float:
    return checked(code, ["-m", "harness.train", *ONE_STEP, f"seed={seed}",
                          *store_args(folder)], folder)


def measure(checkouts: list[Code], runs: int) -> list[dict[str, object]]:
    """The three figures per checkout (module docstring), each checkout in its own store,
    the checkouts interleaved measure by measure."""
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-fixed-cost-") as tmp:
        folders = {code: Path(tmp) / str(number) for number, code in enumerate(checkouts)}
        for code, folder in folders.items():
            rows.append(row(code, "in_process", in_process(code, folder / "in_process", runs),
                            runs))
        for code, folder in folders.items():
            cli(code, folder, 0)  # creates the store: what follows finds it
            small, large = sweep(code, folder, 2, 1000), sweep(code, folder, runs, 2000)
            rows.append(row(code, "sweep", [(large - small) / (runs - 2)], runs))
        for code, folder in folders.items():
            rows.append(row(code, "cli", [cli(code, folder, 3000 + n) for n in range(3)], 3))
    return rows


def row(code: Code, measure_: str, seconds: list[float], runs: int) -> dict[str, object]:
    median = statistics.median(seconds)
    return {"code": code.label, "measure": measure_, "runs": runs,
            "seconds_per_run": round(median, 4), "seconds_min": round(min(seconds), 4),
            "seconds_max": round(max(seconds), 4), "goal_s": GOAL_S,
            "met": median <= GOAL_S if measure_ != "cli" else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fixed_cost",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="runs (and sweep jobs), >= 3")
    baseline_arguments(parser)
    results_argument(parser)
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error("--runs must be at least 3")
    sitting = Sitting.start("fixed_cost", 1)
    for result in measure(codes(args), args.runs):
        sitting.add(result)
        print(f"{result['code']:>24}  {result['measure']:<10} "
              f"{result['seconds_per_run']:7.3f} s per run (min {result['seconds_min']:.3f}, "
              f"max {result['seconds_max']:.3f})"
              + (f"  goal {GOAL_S:g} s: {'met' if result['met'] else 'missed'}"
                 if result["met"] != "" else ""), flush=True)
    print(f"load average {load_average()}", flush=True)
    sitting.write(args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
