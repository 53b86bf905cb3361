"""What every benchmark shares: the machine's matmul rate, what the machine is, the results files,
and real multiruns.

Each benchmark opens a `Sitting` (the date, the commit, the CPU, cores, torch version and
threads, and the 2048² fp32 sgemm rate measured now, in this process, with the benchmark's own
thread count), prints it, and at the end appends its rows to `benchmarks/results/<name>.csv`
with those columns in front, so figures from different machines and days can be compared:
read a time against the sgemm rate measured beside it.
"""

from __future__ import annotations

import csv
import datetime
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness import names
from harness.cells import GATE_BLOCKS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def sgemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's fp32 matmul rate with torch's current threads: a square matmul of `size`,
    the best of `repeats` (one slow measurement on a shared machine does not count)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def load_average() -> float:
    """The 1-minute load average (how busy the machine was; other jobs slow wall times)."""
    return round(os.getloadavg()[0], 2)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> int:
    """The cores this process may use (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def commit() -> str:
    """The checkout's commit, `-dirty` if tracked files other than the results changed."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        head = git("rev-parse", "--short=10", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                    ":(exclude)benchmarks/results")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("-dirty" if dirty else "")


def step_flops(cell: str, input_size: int, output_size: int, seq_len: int, hidden: int,
               batch_size: int) -> float:
    """Floating-point operations of one training step of one model, counting the matmuls only.

    Per time step the recurrence multiplies [B, D + H] by [D + H, G·H] (G gate blocks: 1, 4,
    3) and the readout [B, H] by [H, O]; backward costs twice the forward (gradients with
    respect to inputs and weights).
    """
    gates = len(GATE_BLOCKS[cell])
    per_step = 2 * batch_size * ((input_size + hidden) * gates * hidden + hidden * output_size)
    return 3.0 * per_step * seq_len


@dataclass
class Sitting:
    """One run of a benchmark on one machine: the columns every result row starts with."""

    benchmark: str
    threads: int  # torch threads the benchmark's timed work ran with
    date: str = ""
    commit: str = ""
    cpu: str = ""
    cores: int = 0
    torch: str = ""
    sgemm_gflops: float = 0.0  # 2048² fp32, measured now with `threads` threads
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @classmethod
    def start(cls, benchmark: str, threads: int) -> Sitting:
        """Measure the machine now (sgemm with `threads` threads) and print it."""
        torch.set_num_threads(threads)
        sitting = cls(benchmark, threads,
                      datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      commit(), cpu_model(), cores(), torch.__version__,
                      round(sgemm_gflops(), 1))
        print(f"{benchmark}: {sitting.date}, commit {sitting.commit}; {sitting.cpu}, "
              f"{sitting.cores} cores, torch {sitting.torch}, {threads} thread(s); "
              f"sgemm 2048² fp32 {sitting.sgemm_gflops:.1f} GFLOP/s; load average "
              f"{load_average()}", flush=True)
        return sitting

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        """Keep a result row (its own `sgemm_gflops` and `load` if it measured them)."""
        self.rows.append(row)
        return row

    def write(self, folder: Path | None = RESULTS) -> Path | None:
        """Append the rows to `<folder>/<benchmark>.csv` (None: write nothing)."""
        if folder is None or not self.rows:
            return None
        context = {k: v for k, v in asdict(self).items() if k not in ("benchmark", "rows")}
        rows = [{**context, "load": load_average(), **row} for row in self.rows]
        path = Path(folder) / f"{self.benchmark}.csv"
        append_rows(path, rows)
        print(f"{len(rows)} row(s) appended to {path}", flush=True)
        return path


def append_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Append `rows` to the CSV at `path`; when they bring new columns, the file is rewritten
    with the union of the columns (old rows leave the new ones empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old: list[dict[str, str]] = []
    columns: list[str] = []
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            old = list(reader)
    new_columns = [key for row in rows for key in row if key not in columns]
    union = columns + list(dict.fromkeys(new_columns))
    rewrite = not columns or bool(new_columns)
    with path.open("w" if rewrite else "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=union, lineterminator="\n")
        if rewrite:
            writer.writeheader()
            writer.writerows(old)
        writer.writerows(rows)


def results_argument(parser: Any) -> None:
    """`--results DIR` (default benchmarks/results) and `--no-results` on a benchmark's CLI."""
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="append the rows to <DIR>/<benchmark>.csv (default %(default)s)")
    parser.add_argument("--no-results", dest="results", action="store_const", const=None,
                        help="print only; write no results file")


# ---- real multiruns ----------------------------------------------------------------------


def multirun(overrides: Iterable[str], folder: Path, experiment: str = "bench") -> float:
    """Wall seconds of `python -m harness.train -m <overrides>` as a user runs it, into its own
    SQLite store, checkpoint and sweep folders under `folder`, without the closing report."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "harness.train", "-m", *overrides,
               f"experiment_name={experiment}", f"tracking.uri={store_uri(folder)}",
               f"train.checkpoint_dir={folder}/checkpoints", "report.on_multirun_end=false",
               f"hydra.sweep.dir={folder}/sweep"]
    # This checkout's code, whichever checkout the environment's editable install points at.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder, env=env)
    seconds = time.perf_counter() - start
    (folder / "multirun.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"multirun failed (exit {done.returncode}): {' '.join(command)}\n"
                           + (done.stdout + done.stderr)[-3000:])
    return seconds


def store_uri(folder: Path) -> str:
    return f"sqlite:///{folder}/mlflow.db"


def runs_of(folder: Path, experiment: str = "bench") -> list[dict[str, str]]:
    """Every job's run in a multirun's store (not the sweep's parent run): its config hash,
    status, end state, model option, cell, activation, gap, seed, batch tag and steps run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store_uri(folder))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    rows = []
    for run in client.search_runs([found.experiment_id], max_results=50000):
        tags, params = run.data.tags, run.data.params
        if tags.get(names.RUN_KIND) == names.SWEEP_KIND:
            continue
        rows.append({"config_hash": tags.get(names.CONFIG_HASH, ""),
                     "status": tags.get(names.STATUS, ""),
                     "end_state": tags.get(names.END_STATE, ""),
                     "model": params.get("model", ""), "cell": params.get(names.MODEL, ""),
                     "activation": params.get(names.ACTIVATION, ""),
                     "gap": params.get(names.GAP, ""), "seed": params.get(names.SEED, ""),
                     "batch": tags.get(names.BATCH, ""),
                     "steps_run": str(run.data.metrics.get(names.STEPS_RUN, ""))})
    return rows
