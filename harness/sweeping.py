"""The project's sweeper (`hydra/sweeper: harness`, the default in conf/config.yaml): Hydra's
basic sweeper (comma lists, `range(...)`, a preset's `hydra.sweeper.params`) that checks
every job's config before any job starts.

On the first invalid job it prints one line,

    harness-train: invalid job (task.gap=0 seed=1): task.gap: must be >= 1, got 0

and exits 2, before the sweep's parent MLflow run (or any run) exists: the parent run is
opened (`harness.callbacks.start_parent_run`) only once the checks pass.

`HarnessSweeper` is also the base of adaptive sweepers: `check_jobs(batch)` checks jobs,
`launch_batch(batch, initial_job_idx)` checks, launches and returns the JobReturns. With
`train.batch_members=auto` it launches the jobs that may share a stacked model as batched jobs
and hands back one JobReturn per original job (harness/batching.py).
"""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from harness import batching

log = logging.getLogger(__name__)

PROGRESS_DIR = ".progress"  # in the sweep folder: the finished-job counter and the plan


@dataclass
class HarnessSweeperConf:
    _target_: str = "hydra_plugins.harness_sweeper.harness_sweeper.HarnessBasicSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


def refuse(overrides: Sequence[str], message: str) -> None:
    print(f"harness-train: invalid job ({' '.join(overrides)}): {message}", file=sys.stderr)
    sys.exit(2)


class HarnessSweeper(BasicSweeper):
    """BasicSweeper that checks every job before launching any, opens the sweep's parent run
    after the checks, and prints one line per finished job."""

    opens_parent_run = True  # harness.callbacks.lazy_start: the checks come first

    def __init__(self, max_batch_size: int | None = None,
                 params: dict[str, str] | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.checked: dict[tuple[str, ...], Any] = {}  # overrides -> the job's identity
        self.batch_files = 0
        self.finished_jobs = 0
        self.total_jobs: int | None = None  # None: unknown in advance (adaptive sweeps)
        self.started_at_wall = time.time()
        self.batches = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.config_loader = hydra_context.config_loader

    def job_config(self, overrides: Sequence[str]) -> tuple[DictConfig, dict[str, str]]:
        """The job's config as its task function will see it (no `hydra` node), and the
        options it was composed from (`harness.lifecycle.identity.choices_of`)."""
        from harness.lifecycle.identity import choices_of

        assert self.config is not None
        cfg = self.config_loader.load_sweep_config(self.config, list(overrides))
        cfg = copy.deepcopy(cfg)
        choices = choices_of(cfg.hydra)
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
        return cfg, choices

    def check_jobs(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose and validate each job as harness.train will; on the first invalid one print
        one line and exit 2."""
        for overrides in batch:
            if tuple(overrides) not in self.checked:
                self.checked_job(overrides)

    def checked_job(self, overrides: Sequence[str]) -> Any:
        """The job's identity as harness.train computes it (`job_of`; `member_jobs` with
        batched_seeds), or one line naming the field, the value and the overrides, and exit 2."""
        from harness.lifecycle.identity import job_of, member_jobs
        from harness.schema import ConfigError

        try:
            cfg, choices = self.job_config(overrides)
            job = member_jobs(cfg, choices) if cfg.get("batched_seeds") else \
                job_of(cfg, choices)
        except ConfigError as err:
            refuse(overrides, str(err))
        except Exception as err:  # composition errors, a task's own ValueError
            refuse(overrides, f"{type(err).__name__}: {' '.join(str(err).split())}")
        self.checked[tuple(overrides)] = job
        return job

    def start_parent_run(self) -> None:
        """The sweep's parent MLflow run (once): after the checks, before the first launch."""
        from harness.callbacks import start_parent_run
        from harness.tracking.store import StoreError, disk_full

        try:
            start_parent_run()
        except StoreError as err:
            print(f"harness-train: {err}", file=sys.stderr)
            sys.exit(2)
        except Exception as err:
            assert self.config is not None
            full = disk_full(err, self.config.tracking.uri, self.config.train.checkpoint_dir)
            if full is None:
                raise
            print(f"harness-train: disk full: {full}: the sweep's parent run could not be "
                  "created; free space there, then run the same command", file=sys.stderr)
            sys.exit(1)

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.hydra_context is not None
        params_conf = self._parse_config()
        params_conf.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        self.overrides = self.split_arguments(parser.parse_overrides(params_conf),
                                              self.max_batch_size)
        every_job = [job for batch in self.overrides for job in batch]
        self.total_jobs = len(every_job)
        self.check_jobs(every_job)  # all of them, before any starts

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        returns = []
        initial_job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            results = self.launch_batch(batch, initial_job_idx)
            for result in results:
                _ = result.return_value  # re-raises a job's exception, as BasicSweeper does
            initial_job_idx += len(batch)
            returns.append(results)
        return returns

    def report_progress(self, results: Sequence[JobReturn]) -> None:
        """One line per finished job. Jobs whose output shares this terminal (joblib, basic
        launcher) print their own line as they end (`job_finished`); for the others (submitit,
        SLURM: the job's output goes to its log file) the lines come here, per batch."""
        self.finished_jobs += len(results)
        assert self.config is not None
        if prints_from_jobs(self.config):
            return
        plan = self.plan(len(results))
        plan["batch_first"] = self.finished_jobs - len(results) + 1
        for n, result in enumerate(results, start=plan["batch_first"]):
            print(f"{progress_line(n, plan)} {job_summary(result)}{eta(n, plan)}", flush=True)

    def launch_batch(self, batch: Sequence[Sequence[str]],
                     initial_job_idx: int) -> Sequence[JobReturn]:
        """Check the batch's jobs, open the parent run if not yet, launch (as batched jobs
        where `train.batch_members=auto` groups them), print progress; one JobReturn per
        job of `batch`, in its order."""
        assert self.launcher is not None and self.config is not None
        self.check_jobs(batch)
        self.start_parent_run()
        self.batches += 1
        Progress(Path(self.config.hydra.sweep.dir)).plan(self.plan(len(batch)))
        groups = self.group(batch)
        launched = [list(batch[g[0]]) if len(g) == 1 else
                    [*batch[g[0]], batching.batch_override(self.write_batch_file(batch, g))]
                    for g in groups]
        results = self.launcher.launch(launched, initial_job_idx=initial_job_idx)
        results = expand(results, groups, batch, self.checked)
        self.report_progress(results)
        return results

    def group(self, batch: Sequence[Sequence[str]]) -> list[list[int]]:
        """`harness.batching.plan` over the batch's jobs (each its own with batching off)."""
        from harness.batched import unbatchable

        candidates = []
        for overrides in batch:
            job = self.checked[tuple(overrides)]
            key = None
            if not isinstance(job, list) and job.spec.train.batch_members.value == "auto":
                model = job.spec.model
                if unbatchable(model.name, model.activation.value,
                               model.bidirectional) is None:
                    key = batching.group_key(job.params)
            candidates.append(batching.Candidate(
                tuple(overrides), key, 0 if isinstance(job, list) else job.seq_len,
                1 if isinstance(job, list) else job.spec.train.batch_max))
        return batching.plan(candidates)

    def write_batch_file(self, batch: Sequence[Sequence[str]], group: list[int]) -> Path:
        assert self.config is not None
        self.batch_files += 1
        return batching.write_batch(Path(self.config.hydra.sweep.dir), self.batch_files,
                                    [batch[i] for i in group])

    def plan(self, batch_size: int | None = None) -> dict[str, Any]:
        """What a progress line needs to know about the sweep."""
        return {"total": self.total_jobs, "started_at": self.started_at_wall,
                "batch": self.batches, "batch_size": batch_size,
                "batch_first": self.finished_jobs + 1}


def expand(results: Sequence[JobReturn], groups: list[list[int]],
           batch: Sequence[Sequence[str]], jobs: dict[tuple[str, ...], Any]) -> list[JobReturn]:
    """One JobReturn per job of `batch` from the launched jobs' (`groups[i]`: the jobs the
    i-th launched job trained): a batched job's member gets its own objective (final eval
    loss), its own overrides, config and choices; a failed batched job fails each member."""
    out: list[JobReturn | None] = [None] * len(batch)
    for group, result in zip(groups, results, strict=True):
        if len(group) == 1:
            out[group[0]] = result
            continue
        outcomes = result._return_value if result.status == JobStatus.COMPLETED else None
        for position, index in enumerate(group):
            job = jobs[tuple(batch[index])]
            member = JobReturn(overrides=list(batch[index]), cfg=job.cfg,
                               hydra_cfg=OmegaConf.create(
                                   {"hydra": {"runtime": {"choices": job.choices}}}),
                               working_dir=result.working_dir, task_name=result.task_name,
                               status=result.status)
            member._return_value = (outcomes[position].loss if outcomes is not None
                                    else result._return_value)
            out[index] = member
    assert all(r is not None for r in out)
    return out  # type: ignore[return-value]


class BatchLauncher(Launcher):
    """A launcher for another sweeper (optuna) whose every batch goes through a HarnessSweeper's
    `launch_batch`: checked, the parent run opened, launched by its launcher, reported."""

    def __init__(self, sweeper: HarnessSweeper) -> None:
        self.sweeper = sweeper

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        raise AssertionError("BatchLauncher is built around a HarnessSweeper already set up")

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        return self.sweeper.launch_batch(job_overrides, initial_job_idx)


class Progress:
    """Finished jobs counted across processes: a counter file in the sweep folder, updated
    under an OS lock by each job as it ends, and the sweeper's plan (total, current batch)."""

    def __init__(self, sweep_dir: Path) -> None:
        self.dir = sweep_dir / PROGRESS_DIR

    def plan(self, plan: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "plan.json").write_text(json.dumps(plan))
        if plan["batch"] == 1:
            (self.dir / "count").write_text("0")

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
    `[23] (batch 3: 5 of 12)` for an adaptive sweep, whose total is not known in advance."""
    total = plan.get("total")
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


def prints_from_jobs(config: DictConfig) -> bool:
    """Whether the jobs' output shares the launching terminal (joblib, the basic launcher)."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    return target.endswith(("JoblibLauncher", "BasicLauncher"))


def job_finished(config: DictConfig, result: JobReturn) -> None:
    """In the job's process, as it ends: its progress line, when its output is the terminal."""
    if not prints_from_jobs(config):
        return
    progress = Progress(Path(config.hydra.sweep.dir))
    if progress.in_sweep():
        for summary in job_summaries(result):  # the store is read before the lock is taken
            progress.finished(summary)


def quiet_job_console(config: DictConfig) -> None:
    """In the job's process, as it starts: its console log lines at WARNING where they share
    the terminal with other jobs (its log file keeps every INFO line); `hydra.verbose=true`
    keeps them."""
    if not prints_from_jobs(config) or OmegaConf.select(config, "hydra.verbose"):
        return
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # not FileHandler, a subclass
            handler.setLevel(logging.WARNING)


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def job_summaries(result: JobReturn) -> list[str]:
    """One summary per run the job trained: a batched job's members (its return value lists
    their names and config hashes), else the job's own."""
    if result.status == JobStatus.COMPLETED and result.cfg is not None and \
            result.cfg.get("batch_file"):
        return [run_summary(result.cfg, member.name, member.hash_)
                for member in result._return_value]
    return [job_summary(result)]


def job_summary(result: JobReturn) -> str:
    """The job's run name and how it ended, from its config and the store (or its error)."""
    overrides = " ".join(result.overrides or [])
    if result.status == JobStatus.FAILED:
        return f"({overrides}) failed: {result._return_value!r}"[:300]
    cfg = result.cfg
    if cfg.get("batched_seeds"):
        return f"({overrides}) ended: its seeds' runs are in the store"
    try:
        from harness.lifecycle.identity import choices_of, job_of

        job = job_of(cfg, choices_of(result.hydra_cfg.hydra if result.hydra_cfg else None))
    except Exception:  # a config that no longer composes as it did (should not happen)
        return f"({overrides}) ended"
    return run_summary(cfg, job.name, job.hash_)


def run_summary(cfg: DictConfig, name: str, hash_: str) -> str:
    """`<run name> solved at step 300  4.1 s`, from the store."""
    run = latest_run(cfg.tracking.uri, cfg.experiment_name, hash_)
    if run is None:
        return f"{name} no result (see the sweep's invalid/failed/killed jobs)"
    from harness import names

    status = run.data.tags.get(names.STATUS, run.info.status.lower())
    steps = run.data.metrics.get(names.STEPS_RUN)
    wall = run.data.metrics.get(names.WALL_TIME_S)
    text = f"{name} {status}" + (f" at step {steps:.0f}" if steps is not None else "")
    if wall is not None:
        text += f"  {wall:.1f} s"
    return text


def latest_run(uri: str, experiment: str, hash_: str) -> Any:
    """The newest run of this config in the experiment (None: none)."""
    from mlflow.tracking import MlflowClient

    from harness import names

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id],
                              filter_string=f"tags.{names.CONFIG_HASH} = '{hash_}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None
