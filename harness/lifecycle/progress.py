"""A sweep's progress lines: one per run as its job ends,

    [23/64] delayed_recall-gru-tanh-noclip-gap40-s1 solved at step 300  6.0 s · 41 left, about 4 min

counted across processes (`Progress`, a counter under an OS lock in the sweep folder). Where the
jobs share the launching terminal (joblib, the basic launcher) each job prints its own lines as
it ends (`job_finished`), from what its own process ran (`ran`); for the other launchers the
sweeper prints them per batch, reading the store (`job_summary`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from harness import names
from harness.lifecycle.identity import choices_of, hydra_choices, in_sweep, job_of

if TYPE_CHECKING:
    from harness.lifecycle.identity import Job
    from harness.loop import RunResult

PROGRESS_DIR = ".progress"  # in the sweep folder: the finished-job counter and the plan

RUNNING_ELSEWHERE = "running elsewhere"  # not a run status: the job created no run

# The lines of the runs this process ended in its current job (`ran`), printed and emptied
# as the job ends (`job_finished`): the job knows how its runs ended without asking the store.
ENDED: list[str] = []


class Progress:
    """Finished jobs counted across processes: a counter file in the sweep folder, updated
    under an OS lock by each job as it ends, and the sweeper's plan (total, current batch)."""

    def __init__(self, sweep_dir: Path) -> None:
        self.dir = sweep_dir / PROGRESS_DIR

    def reset(self) -> None:
        """A new sweep's count starts at 0 (a folder may hold an earlier sweep's)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "count").write_text("0")

    def plan(self, plan: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "plan.json").write_text(json.dumps(plan))

    def in_sweep(self) -> bool:
        return (self.dir / "plan.json").exists()

    def finished(self, summary: str) -> None:
        """Count one more finished job and print its line, under the lock, so that the lines
        of jobs ending at once reach the terminal in their numbers' order (only `in_sweep`)."""
        with open(self.dir / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            count_file = self.dir / "count"
            n = int(count_file.read_text() or 0) + 1 if count_file.exists() else 1
            count_file.write_text(str(n))
            plan = json.loads((self.dir / "plan.json").read_text())
            print(f"{progress_line(n, plan)} {summary}{eta(n, plan)}", flush=True)


def progress_line(n: int, plan: dict[str, Any]) -> str:
    """`[23/64] ...` and, after the summary, ` · 41 left, about 4 min` (known total), or
    `[23] (batch 3: 5 of 12)` for an adaptive sweep, whose total is not known in advance, or
    `[23]` for one that launches as workers free (the frontier: no batch)."""
    total = plan.get("total")
    if total is None and plan.get("batch") is None:
        return f"[{n}]"
    if total is None:
        size = plan.get("batch_size")
        within = n - int(plan.get("batch_first", 1)) + 1
        return f"[{n}] (batch {plan.get('batch')}: {within} of {size})"
    return f"[{n}/{total}]"


def eta(n: int, plan: dict[str, Any]) -> str:
    total = plan.get("total")
    if total is None:
        return ""
    left = int(total) - n
    if left <= 0:
        return " · done"
    per_job = (time.time() - float(plan["started_at"])) / max(n, 1)
    return f" · {left} left, about {format_duration(per_job * left)}"


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def prints_from_jobs(config: DictConfig) -> bool:
    """Whether the jobs' output shares the launching terminal (joblib, the basic launcher)."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    return target.endswith(("JoblibLauncher", "BasicLauncher"))


def run_line(name: str, status: str, steps: float | None, wall: float | None) -> str:
    """`<run name> solved at step 300  4.1 s`."""
    text = f"{name} {status}" + (f" at step {steps:.0f}" if steps is not None else "")
    return text + (f"  {wall:.1f} s" if wall is not None else "")


def ran(name: str, result: RunResult) -> None:
    """A run of this process's job ended as `result` (its line for `job_finished`)."""
    if not in_sweep():
        return
    if result.status == RUNNING_ELSEWHERE:
        ENDED.append(run_line(name, RUNNING_ELSEWHERE, None, None))
    else:
        ENDED.append(run_line(name, result.status, result.steps_run, result.wall_time_s))


def did_not_finish(cfg: DictConfig, message: str) -> None:
    """This process's job, of config `cfg`, ended without a result (`message`: why, one line;
    the sweep's closing lines list it with the others of its kind). Named by its run where
    its config names one, else by its overrides."""
    if not in_sweep():
        return
    who = f"({' '.join(HydraConfig.get().overrides.task)})"
    if not (cfg.get("batched_seeds") or cfg.get("batch_file")):  # one run: its name
        try:
            who = job_of(cfg, hydra_choices()).name
        except Exception:  # an invalid config names no run
            pass
    ENDED.append(f"{who} did not finish: {message}"[:300])


def job_finished(config: DictConfig, result: JobReturn) -> None:
    """In the job's process, as it ends: its runs' progress lines, when its output is the
    terminal, from what the job recorded (`ran`, `did_not_finish`); the store is read only
    for a job that recorded nothing (it raised past harness.train.main)."""
    ended = ENDED[:]
    ENDED.clear()
    if not prints_from_jobs(config):
        return
    progress = Progress(Path(config.hydra.sweep.dir))
    if progress.in_sweep():
        for summary in ended or job_summaries(result):  # read before the lock is taken
            progress.finished(summary)


def job_started(config: DictConfig) -> None:
    """In the job's process, as it starts: its console log lines at WARNING where they share
    the terminal with other jobs (its log file keeps every INFO line); `hydra.verbose=true`
    keeps them."""
    ENDED.clear()  # what an earlier job of this process left unprinted is not this job's
    if not prints_from_jobs(config) or OmegaConf.select(config, "hydra.verbose"):
        return
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # not FileHandler, a subclass
            handler.setLevel(logging.WARNING)


def job_summaries(result: JobReturn) -> list[str]:
    """One summary per run the job trained, from the store: a batched job's members (its
    return value lists their names and config hashes), else the job's own."""
    if result.status == JobStatus.COMPLETED and result.cfg is not None and \
            result.cfg.get("batch_file"):
        return [run_summary(result.cfg, member.name, member.hash_)
                for member in result._return_value]
    return [job_summary(result)]


def job_summary(result: JobReturn, job: Job | list[Job] | None = None) -> str:
    """The job's run name and how it ended, from its identity (`job`, as the sweeper checked
    it; else composed again from the job's config) and the store (or its error)."""
    overrides = " ".join(result.overrides or [])
    if result.status == JobStatus.FAILED:
        return f"({overrides}) failed: {result._return_value!r}"[:300]
    cfg = result.cfg
    if cfg.get("batched_seeds"):
        return f"({overrides}) ended: its seeds' runs are in the store"
    if job is None:
        try:
            job = job_of(cfg, choices_of(result.hydra_cfg.hydra if result.hydra_cfg else None))
        except Exception:  # a config that no longer composes as it did (should not happen)
            return f"({overrides}) ended"
    assert not isinstance(job, list)  # batched_seeds: above
    return run_summary(cfg, job.name, job.hash_)


def run_summary(cfg: DictConfig, name: str, hash_: str) -> str:
    """`<run name> solved at step 300  4.1 s`, from the store's newest run of the config."""
    from harness.tracking.run import config_runs

    runs = config_runs(cfg.tracking.uri, cfg.experiment_name, hash_)
    if not runs:
        return f"{name} no result (see the sweep's invalid/failed/killed jobs)"
    run = max(runs, key=lambda run: run.info.start_time)
    return run_line(name, run.data.tags.get(names.STATUS, run.info.status.lower()),
                    run.data.metrics.get(names.STEPS_RUN), run.data.metrics.get(names.WALL_TIME_S))
