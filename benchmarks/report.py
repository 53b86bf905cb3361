"""Benchmark of the report: build a synthetic store of N runs shaped like a real sweep, then
time `build_report` on it.

`python -m benchmarks report [--runs N]` (or `python -m benchmarks.report`) builds, once, an
SQLite store of N runs (default 10,000: 20 configurations × 2 tasks × 5 gaps × 50 seeds;
1,000 is 5 seeds; every run with ~1,100 metric points over up to 2,000 steps, a
`grad_profile.csv` artifact, the params and tags of a real job, and a sweep parent run),
caches it under the temp folder, times the report and prints the time, its split into
reads, frames, drawing and writing, and the machine's 2048² matmul rate measured just before;
`--out` writes them as CSV. The goal: under 60 s for 10,000 runs on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import Sitting, results_argument
from harness import names
from harness.cells import GATE_BLOCKS
from harness.tracking import internals

EXPERIMENT = "report-bench"
GOAL_S = 60.0
DEFAULT_RUNS = 10_000
MODELS = (("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh"))
CLIPS = (("none", 1.0), ("norm", 0.5), ("norm", 1.0), ("norm", 5.0), ("value", 1.0))
TASKS = ("copy", "delayed_recall")
GAPS = (10, 20, 40, 80, 160)
RUNS_PER_SEED = len(MODELS) * len(CLIPS) * len(TASKS) * len(GAPS)  # 200
STEPS = 2000
LOG_EVERY, EVAL_EVERY = 10, 100
# Largest gap each model solves (before clipping's help) in the synthetic sweep.
_CAPACITY = {("rnn", "tanh"): 20, ("rnn", "relu"): 10, ("lstm", "tanh"): 80, ("gru", "tanh"): 160}
# Parameters of each cell at hidden 64 and one input (what a real run logs as parameter_count).
_PARAMETERS = {"rnn": 4_353, "lstm": 17_217, "gru": 12_993}
_SCHEMA_VERSION = 3  # bump when the synthetic runs change, so a stale cache is not reused
Cell = tuple[int, str, tuple[str, str], tuple[str, float], int]  # seed, task, model, clip, gap


def _grid(n_runs: int) -> list[Cell]:
    seeds = math.ceil(n_runs / RUNS_PER_SEED)
    grid = [(seed, task, model, clip, gap) for seed in range(seeds) for task in TASKS
            for model in MODELS for clip in CLIPS for gap in GAPS]
    return grid[:n_runs]


def _params(task: str, model: tuple[str, str], clip: tuple[str, float], gap: int,
            seed: int) -> dict[str, str]:
    """The flattened config of a real job (same keys as harness-train logs)."""
    params = {
        names.TASK: task, names.GAP: gap, names.MODEL: model[0], names.ACTIVATION: model[1],
        names.HIDDEN_SIZE: 64, "model.num_layers": 1, names.INIT: "default",
        "model.forget_bias": 1.0, names.CLIP_MODE: clip[0], names.CLIP_THRESHOLD: clip[1],
        names.OPTIMIZER: "adam", names.LR: 0.003, "optim.momentum": 0.9,
        "optim.weight_decay": 0.0, names.SEED: seed, "experiment_name": EXPERIMENT,
        "force": False, "train.steps": STEPS, "train.batch_size": 32,
        "train.log_every": LOG_EVERY, "train.eval_every": EVAL_EVERY,
        "train.eval_batch_size": 256, "train.solve_threshold": 0.99,
        "train.profile_every": 0, "train.profile_batch_size": 32, "train.threads": 1,
        "train.max_grad_norm": 1e6, "train.checkpoint_every": 1000,
        "train.checkpoint_dir": "/tmp/checkpoints", "tracking.uri": "sqlite:///bench.db",
        "report.out_dir": "/tmp/reports", "report.on_multirun_end": True,
        "task.vocab": 8, "task.filler": "blank", "task.n_symbols": 8,
    }
    return {k: str(v) for k, v in params.items()}


def _outcome(task: str, model: tuple[str, str], clip: tuple[str, float], gap: int,
             seed: int) -> tuple[str, int]:
    """(status, steps run) of a synthetic run: solved up to the model's capacity."""
    if model == ("rnn", "relu") and clip[0] == "none" and gap == GAPS[-1] and seed == 0:
        return names.DIVERGED, 400
    capacity = _CAPACITY[model] * (2 if clip[0] != "none" and model[0] == "rnn" else 1)
    capacity = capacity // 2 if task == "copy" else capacity
    if gap <= capacity and not (gap == capacity and seed % 3 == 2):
        return names.SOLVED, min(STEPS, 200 + 10 * gap + 50 * seed)
    return names.UNSOLVED, STEPS


Point = tuple[str, float, int]  # (metric key, value, step)


def _metrics(model: tuple[str, str], status: str, steps_run: int, gap: int,
             seed: int) -> list[Point]:
    """Every metric point one synthetic run logs, as a real job would (timestamp 0)."""
    out: list[Point] = []
    chance = 0.125
    final_acc = 0.995 if status == names.SOLVED else chance + 0.05 * math.exp(-gap / 50)
    for step in range(0, steps_run + 1, LOG_EVERY):
        frac = step / STEPS
        norm = (1 + seed) * (2.0 + math.sin(step / 37)) * (1 + 3 * (model[1] == "relu"))
        out += [(names.TRAIN_LOSS, 2.0 * (1 - 0.5 * frac), step),
                (names.GRAD_NORM_PRE_CLIP, norm, step),
                (names.GRAD_NORM_POST_CLIP, min(norm, 1.0), step),
                (names.CLIP_RATE, 0.3, step)]
    blocks = GATE_BLOCKS[model[0]]
    for step in range(0, steps_run + 1, EVAL_EVERY):
        acc = chance + (final_acc - chance) * step / max(steps_run, 1)
        rate = -0.3 / (1 + step / 500)
        out += [(names.EVAL_LOSS, 2.0 - acc, step),
                (names.EVAL_ACCURACY, acc, step),
                (names.EVAL_NORMALIZED_LOSS, (2.0 - acc) / 2.08, step),
                (names.GRAD_DECAY_RATE, rate, step),
                (names.GRAD_DECAY_R2, 0.95, step),
                (names.GRAD_HALF_LIFE, math.log(2) / -rate, step),
                (names.GRAD_REACH, min(gap + 2, 20 + step / 50), step)]
        for i, block in enumerate(blocks):
            radius = 0.8 + 0.05 * i + step / 20_000
            out += [(names.block_key(names.SPECTRAL_RADIUS, 0, block), radius, step),
                    (names.block_key(names.SINGULAR_VALUE_MAX, 0, block), radius + 0.2, step)]
    summary = {names.CHANCE_LOSS: 2.08, names.CHANCE_ACCURACY: chance,
               names.FINAL_EVAL_ACCURACY: final_acc, names.BEST_EVAL_ACCURACY: final_acc,
               names.FINAL_EVAL_LOSS: 2.0 - final_acc, names.STEPS_RUN: float(steps_run),
               names.WALL_TIME_S: 0.02 * steps_run * (1 + gap / 50),
               names.GRAD_NORM_PRE_CLIP_MAX: 12.0, names.CLIP_RATE_TOTAL: 0.3,
               names.GRAD_NORM_POST_CLIP_MAX: 1.0,
               names.PARAMETER_COUNT: float(_PARAMETERS[model[0]])}
    if status == names.SOLVED:
        summary[names.STEPS_TO_SOLVE] = float(steps_run)
    if status == names.DIVERGED:
        summary[names.DIVERGED_STEP] = float(steps_run)
    return out + [(k, v, steps_run) for k, v in summary.items()]


def _profile_csv(gap: int, steps_run: int, seed: int) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names.PROFILE_COLUMNS)
    length = gap + 2
    for step in range(0, steps_run + 1, EVAL_EVERY):
        decay = 0.5 + 0.45 * step / STEPS
        for t in range(length):
            lag = length - 1 - t
            norm = (decay ** (1 + seed % 2)) ** lag
            writer.writerow((step, 0, t, lag, f"{norm:.6g}", f"{norm / 10:.6g}", "0.5"))
    return buffer.getvalue()


@dataclass(frozen=True)
class SyntheticRun:
    """One synthetic job: its name, id and everything it logs."""

    run_id: str
    name: str
    status: str
    steps_run: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: list[Point]
    profile: str  # grad_profile.csv's text


def synthetic_runs(cells: Sequence[Cell], parent_id: str) -> list[SyntheticRun]:
    """The runs of these cells of the synthetic sweep (`_grid`), ids fixed by their names."""
    runs = []
    for seed, task, model, clip, gap in cells:
        status, steps_run = _outcome(task, model, clip, gap, seed)
        name = names.run_name(task, model[0], model[1], clip[0], clip[1], gap, seed)
        tags = {names.STATUS: status, names.STATUS_REASON: "synthetic",
                names.CONFIG_HASH: name, names.GIT_COMMIT: "0" * 40,
                names.SWEEP_ID: parent_id, names.PARENT_RUN_ID: parent_id,
                _RUN_NAME_TAG: name}
        runs.append(SyntheticRun(
            run_id=hashlib.md5(name.encode()).hexdigest(), name=name, status=status,
            steps_run=steps_run, tags=tags,
            params=_params(task, model, clip, gap, seed),
            metrics=_metrics(model, status, steps_run, gap, seed),
            profile=_profile_csv(gap, steps_run, seed)))
    return runs


_RUN_NAME_TAG = "mlflow.runName"
_START_MS = 1_700_000_000_000  # fixed start times: the store is the same on every build


def _write_runs(db: Path, experiment_id: str, artifact_root: Path,
                runs: Sequence[SyntheticRun]) -> None:
    """Insert `runs` into the SQLite store `db` straight into MLflow's tables
    (`internals.write_runs_sqlite`), and write each run's artifact where MLflow's local
    artifact store puts it.

    Logging 10,000 runs of ~1,100 points each through MlflowClient takes hours on 2 cores;
    this takes minutes. tests/test_report_bench.py reads such a store back through the client.
    """
    stored = []
    for i, run in enumerate(runs):
        artifacts = artifact_root / run.run_id / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        (artifacts / names.GRAD_PROFILE_ARTIFACT).write_text(run.profile)
        stored.append(internals.StoredRun(
            run_id=run.run_id, name=run.name,
            status="FAILED" if run.status == names.DIVERGED else "FINISHED",
            start_time=_START_MS + 1000 * i, end_time=_START_MS + 1000 * i + 500,
            artifact_uri=artifacts.parent.as_uri() + "/artifacts",
            tags=run.tags, params=run.params, metrics=run.metrics))
    internals.write_runs_sqlite(db, experiment_id, stored)


def build_store(root: Path, n_runs: int) -> str:
    """Create the synthetic store under `root` (once; reused while complete); return its URI."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    folder = root / f"v{_SCHEMA_VERSION}-{n_runs}"
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    if (folder / "complete").is_file():
        return uri
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    client = MlflowClient(tracking_uri=uri)
    artifact_root = folder / "mlartifacts"
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=artifact_root.as_uri())
    parent = client.create_run(exp_id, run_name="sweep-bench",
                               tags={names.RUN_KIND: names.SWEEP_KIND})
    parent_id = parent.info.run_id
    client.log_batch(parent_id, params=[Param(names.SWEEP_OVERRIDES, "experiment=report_bench")])
    client.set_terminated(parent_id)
    cells = _grid(n_runs)
    for start in range(0, n_runs, _CHUNK):  # a chunk's runs at a time: bounded memory
        chunk = synthetic_runs(cells[start:start + _CHUNK], parent_id)
        _write_runs(folder / "mlflow.db", exp_id, artifact_root, chunk)
    (folder / "complete").write_text(str(n_runs))
    return uri


_CHUNK = 500


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the figure workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_report(uri: str, out_root: Path) -> tuple[float, float, dict[str, float]]:
    """Wall-clock and CPU seconds of `build_report` on the synthetic store, and its split
    into reads, frames, drawing and writing (`harness.report.build.Stopwatch`)."""
    from harness.report import build_report

    split: dict[str, float] = {}
    cpu, start = _cpu_seconds(), time.perf_counter()
    build_report(EXPERIMENT, uri, out_root, timings=split)
    return time.perf_counter() - start, _cpu_seconds() - cpu, split


SPLIT = ("reads", "frames", "drawing", "writing")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks report",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                        help=f"runs in the synthetic store (default {DEFAULT_RUNS:,})")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "harness-report-bench",
                        help="where the synthetic store is kept between runs")
    parser.add_argument("--out", type=Path, default=None, help="write the timing as CSV")
    results_argument(parser)
    parser.add_argument("--report-dir", type=Path, default=None,
                        help="keep the report here (default: a temporary folder)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    uri = build_store(args.cache, args.runs)
    built = time.perf_counter() - start
    sitting = Sitting.start("report", torch.get_num_threads())  # the machine, sgemm included
    gflops = sitting.sgemm_gflops
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="harness-report-bench-out-") as out:
        seconds, cpu, split = time_report(uri, args.report_dir or Path(out))
    load = os.getloadavg()[0]
    verdict = "meets" if seconds < GOAL_S else "MISSES"
    print(f"store: {uri} ({args.runs} runs; ready in {built:.1f} s)")
    print(f"machine: 2048² fp32 matmul {gflops:.1f} GFLOP/s; load average {load_before:.1f} "
          f"before, {load:.1f} at the end; {os.cpu_count()} cores")
    print(f"build_report: {seconds:.1f} s for {args.runs} runs "
          f"({verdict} the goal of < {GOAL_S:.0f} s); CPU {cpu:.1f} s")
    print("  " + ", ".join(f"{phase} {split[phase]:.1f} s" for phase in SPLIT))
    sitting.add({"runs": args.runs, "build_report_s": round(seconds, 2), "cpu_s": round(cpu, 2),
                 **{f"{p}_s": round(split[p], 2) for p in SPLIT}, "goal_s": GOAL_S})
    sitting.write(args.results)
    if args.out is not None:
        with args.out.open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["runs", "build_report_s", "cpu_s", *(f"{p}_s" for p in SPLIT),
                             "gflops_matmul", "load_average", "goal_s"])
            writer.writerow([args.runs, f"{seconds:.2f}", f"{cpu:.2f}",
                             *(f"{split[p]:.2f}" for p in SPLIT), f"{gflops:.1f}",
                             f"{load:.2f}", GOAL_S])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
