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
import logging
import sys
import threading
import time
from collections.abc import Iterable, Sequence
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
from harness.callbacks import start_parent_run
from harness.lifecycle.progress import Progress, eta, job_summary, prints_from_jobs, progress_line
from harness.tracking.store import StoreError, disk_full

log = logging.getLogger(__name__)


@dataclass
class HarnessSweeperConf:
    _target_: str = "hydra_plugins.harness_sweeper.harness_sweeper.HarnessBasicSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None
    # Explicit override sets, each crossed with `params` (`HarnessSweeper.configuration_sets`)
    configurations: list[str] | None = None


def refuse(overrides: Sequence[str], message: str) -> None:
    print(f"harness-train: invalid job ({' '.join(overrides)}): {message}", file=sys.stderr)
    sys.exit(2)


def refuse_configurations(message: str) -> None:
    """One line, exit 2: `hydra.sweeper.configurations` that no sweep can take."""
    print(f"harness-train: invalid config: hydra.sweeper.configurations: {message}",
          file=sys.stderr)
    sys.exit(2)


class HarnessSweeper(BasicSweeper):
    """BasicSweeper that checks every job before launching any, opens the sweep's parent run
    after the checks, and prints one line per finished job."""

    opens_parent_run = True  # harness.callbacks.lazy_start: the checks come first

    def __init__(self, max_batch_size: int | None = None,
                 params: dict[str, str] | None = None,
                 configurations: Sequence[str] | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.sets = [str(c) for c in configurations or []]
        self.checked: dict[tuple[str, ...], Any] = {}  # overrides -> the job's identity
        self.batch_files = 0
        self.finished_jobs = 0
        self.total_jobs: int | None = None  # None: unknown in advance (adaptive sweeps)
        self.started_at_wall = time.time()
        self.batches = 0
        self.name_axes: list[str] | None = None  # the keys its run names show (`declare_axes`)
        self.bookkeeping = threading.RLock()  # `launch_batch`'s state, between its launches

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

        axes = self.name_axes or []
        try:
            cfg, choices = self.job_config(overrides)
            job = member_jobs(cfg, choices, axes) if cfg.get("batched_seeds") else \
                job_of(cfg, choices, axes)
        except ConfigError as err:
            refuse(overrides, str(err))
        except Exception as err:  # composition errors, a task's own ValueError
            refuse(overrides, f"{type(err).__name__}: {' '.join(str(err).split())}")
        self.checked[tuple(overrides)] = job
        return job

    def declare_axes(self, keys: Iterable[str]) -> None:
        """The keys that vary within this sweep, which every run name shows (`...-lr3e-3-
        gap20-s0`): left in the sweep folder for its jobs (`identity.sweep_axes`), before any
        starts, and the names of the jobs checked so far made to show them."""
        from harness.lifecycle.identity import run_name
        from harness.tracking.sweep import write_name_axes

        assert self.config is not None
        self.name_axes = sorted(set(keys))
        write_name_axes(Path(self.config.hydra.sweep.dir), self.name_axes)
        for job in self.checked.values():
            for member in job if isinstance(job, list) else [job]:
                member.name = run_name(member.spec, member.params, self.name_axes)

    def checked_runs(self) -> list[Any]:
        """Every run of the jobs checked so far (a batched_seeds job's members, each)."""
        return [member for job in self.checked.values()
                for member in (job if isinstance(job, list) else [job])]

    def start_parent_run(self) -> None:
        """The sweep's parent MLflow run (once): after the checks, before the first launch."""
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

    def fixed_by_sweeper(self, key: str) -> bool:
        """Whether `key` may not vary by configuration (the frontier sweeper sets its own)."""
        return key == "batched_seeds"

    def configuration_sets(self, swept: Sequence[str] = ()) -> list[list[str]]:
        """`hydra.sweeper.configurations`: explicit override sets, each crossed with the swept
        axes, for designs that are not a full product (a model's own hidden size and clipping,
        clipping thresholds for the vanilla RNNs only). A set holds single values only, and
        no key both a set and the axes (`swept`: their keys) give. None: one empty set.
        (The basic sweeper passes no `swept`: a set's own value replaces the preset's axis of
        that key, and the command line wins over both.)"""
        if not self.sets:
            return [[]]
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        out = []
        for text in self.sets:
            overrides = parser.parse_overrides(text.split())
            if not overrides:
                refuse_configurations(f"an empty configuration ({text!r})")
            for override in overrides:
                key = override.get_key_element()
                if override.is_sweep_override():
                    refuse_configurations(f"{override.input_line} is a sweep; each "
                                          "configuration is a set of single values")
                if self.fixed_by_sweeper(key):
                    refuse_configurations(f"{key} cannot vary by configuration ({text!r})")
                if key.lstrip("+~") in swept:
                    refuse_configurations(f"{key}: both swept and set by a configuration "
                                          f"({text!r})")
            out.append([o.input_line for o in overrides])
        return out

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        axes = parser.parse_overrides(self._parse_config())
        every_job = []
        for chosen in self.configuration_sets():
            # A configuration's own value replaces the preset's axis of that key (a decisive
            # preset's sets may give each model its own gap where the full preset swept the
            # gaps); the command line, last, still wins over both.
            own = {o.partition("=")[0].lstrip("+~") for o in chosen}
            kept = [o.input_line for o in axes if o.get_key_element().lstrip("+~") not in own]
            every_job += [job for batch in self.split_arguments(
                parser.parse_overrides([*kept, *chosen, *arguments]), None) for job in batch]
        size = self.max_batch_size or len(every_job) or 1
        self.overrides = [every_job[i:i + size] for i in range(0, len(every_job), size)]
        self.total_jobs = len(every_job)
        self.check_jobs(every_job)  # all of them, before any starts
        from harness.lifecycle.identity import varying_keys

        self.declare_axes(varying_keys(self.checked_runs()))

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
            summary = job_summary(result, self.checked.get(tuple(result.overrides or ())))
            print(f"{progress_line(n, plan)} {summary}{eta(n, plan)}", flush=True)

    def launch_batch(self, batch: Sequence[Sequence[str]],
                     initial_job_idx: int) -> Sequence[JobReturn]:
        """Check the batch's jobs, open the parent run if not yet, launch (as batched jobs
        where `train.batch_members=auto` groups them), print progress; one JobReturn per
        job of `batch`, in its order."""
        assert self.launcher is not None and self.config is not None
        with self.bookkeeping:  # the frontier launches from several threads at once
            self.check_jobs(batch)
            if self.name_axes is None:  # Optuna's trials: its search space and the first batch
                from harness.lifecycle.identity import varying_keys

                space = OmegaConf.select(self.config, "hydra.sweeper.params") or {}
                self.declare_axes([*map(str, space), *varying_keys(self.checked_runs())])
            self.start_parent_run()
            self.batches += 1
            progress = Progress(Path(self.config.hydra.sweep.dir))
            if self.batches == 1:
                progress.reset()
            progress.plan(self.plan(len(batch)))
            groups = self.group(batch)
            launched = [list(batch[g[0]]) if len(g) == 1 else
                        [*batch[g[0]], batching.batch_override(self.write_batch_file(batch, g))]
                        for g in groups]
        results = self.launcher.launch(launched, initial_job_idx=initial_job_idx)
        with self.bookkeeping:
            results = expand(results, groups, batch, self.checked)
            self.report_progress(results)
        return results

    def group(self, batch: Sequence[Sequence[str]]) -> list[list[int]]:
        """`harness.batching.plan` over the batch's jobs (each its own with batching off)."""
        candidates = []
        for overrides in batch:
            job = self.checked[tuple(overrides)]
            key = None
            if not isinstance(job, list) and job.spec.train.batch_members.value == "auto":
                from harness.batched import unbatchable  # torch: only where batching is on
                from harness.resources import resolve_device

                model = job.spec.model
                # On a GPU a single run trains through torch's fused module, which a member
                # of a stacked model does not compute bit for bit: no batches there.
                cpu = resolve_device(job.spec.train.device.value).type == "cpu"
                if cpu and unbatchable(model.name, model.activation.value,
                                       model.bidirectional) is None:
                    key = batching.group_key(job.params)
                # a continuation (frontier.continue_to) trains from another step, to another
                # budget: it shares a batch with continuations to that budget only
                if key is not None and job.spec.frontier.continue_to:
                    key = (*key, ("frontier.continue_to", str(job.spec.frontier.continue_to)))
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
