"""Hydra entry point: one job = one task × model × clipping × seed, logged as one MLflow run.

    harness-train task=copy task.gap=100 model=lstm clip=norm clip.threshold=1.0 seed=0
    harness-train -m experiment=demo
    harness-train -m model=rnn,gru batched_seeds=[0,1,2,3]   # 4 seeds per job, 4 runs each

`train(cfg)` is the plain function behind the `@hydra.main` wrapper; tests call it directly.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    ConfigCompositionException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

import tasks
from harness import locks, names
from harness.batched import BatchedStepper, unbatchable
from harness.batching import read_batch
from harness.callbacks import interrupt as launcher_interrupt
from harness.clipping import Clipper
from harness.loop import (
    Checkpointing,
    FusedStepper,
    RunRecord,
    RunResult,
    drive,
    resolve_device,
    resume,
)
from harness.models import RecurrentModel
from harness.optimizers import make_optimizer
from harness.schema import (
    PROJECT_ROOT,
    Config,
    ConfigError,
    check_resources,
    cpu_count,
    register,
    validate,
)
from harness.store import disk_full
from harness.tracking import (
    FAILED_JOBS_FILE,
    FULL_DISK_JOBS_FILE,
    INVALID_JOBS_FILE,
    KILLED_JOBS_FILE,
    MlflowTracker,
    RunStopped,
    StoreError,
    close_orphans_of_config,
    config_hash,
    ensure_store,
    finished_run,
    flatten,
    mlflow_run,
    run_lock_path,
    sweep_run_id,
)

log = logging.getLogger(__name__)
register()


def launcher_setting(key: str, default: Any = None) -> Any:
    """A key of the sweep's `hydra.launcher` config (`default` outside a multirun or if the
    launcher has no such key)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return default
    return OmegaConf.select(HydraConfig.get(), f"launcher.{key}", default=default)


def concurrent_jobs() -> int:
    """How many jobs share this machine's cores: the joblib launcher's n_jobs in a sweep."""
    n_jobs = launcher_setting("n_jobs", default=1)
    return cpu_count() if n_jobs is None or n_jobs < 1 else int(n_jobs)


def torch_threads(requested: int) -> int:
    """Threads for this job: as asked; else SLURM's cpus per task (inside a SLURM job); else
    the submitit launcher's cpus_per_task; else cores / the joblib launcher's parallel jobs."""
    if requested > 0:
        return requested
    if "SLURM_CPUS_PER_TASK" in os.environ:
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    cpus_per_task = launcher_setting("cpus_per_task")
    if cpus_per_task is not None:
        return int(cpus_per_task)
    return max(1, cpu_count() // concurrent_jobs())


# kill and scancel send SIGTERM (SLURM also at a time limit); submitit asks SLURM for SIGUSR2
# `signal_delay_s` before the time limit.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class StopRequest:
    """SIGTERM or SIGUSR2 while a job runs. While the loop checkpoints (`deferred`), the run
    finishes its current step, saves a checkpoint and stops (RunStopped); otherwise it stops
    at once (RunStopped from the handler), resuming later from its last checkpoint."""

    def __init__(self, requeue: bool = False) -> None:
        """`requeue`: after SIGUSR2 inside a SLURM job launched by submitit (its warning before
        the time limit), hand the signal on to submitit once the run has stopped with its
        checkpoint: submitit requeues the job, which resumes into the same MLflow run."""
        self.signal: str | None = None
        self.deferred = False
        self.requeue = requeue

    def requested(self) -> bool:
        return self.signal is not None

    def handle(self, signum: int, frame: Any) -> None:
        self.signal = signal.Signals(signum).name
        if not self.deferred:
            raise RunStopped(f"stopped by {self.signal}")
        log.warning("%s received: stopping after this step with a checkpoint", self.signal)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle the stop signals for the block (main thread only: Python's rule)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.handle)
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            # Pass it on to the launching process's handler when the job runs inside it (an
            # in-process sweep, joblib n_jobs=1), so the sweep stops too. Not to others: a
            # default handler would kill a joblib worker that has closed its run, and
            # submitit's SIGUSR2 handler would end the job as failed.
            if self.signal is not None and \
                    previous[signal.Signals[self.signal]] is launcher_interrupt:
                os.kill(os.getpid(), signal.Signals[self.signal])
            if self.signal == signal.SIGUSR2.name and self.requeue and \
                    submitit_requeues(previous[signal.SIGUSR2]):
                log.warning("SIGUSR2 (the SLURM time limit is near): checkpoint saved; submitit "
                            "requeues the job, which resumes this run")
                previous[signal.SIGUSR2](signal.SIGUSR2, None)  # requeues, then exits


def submitit_requeues(handler: Any) -> bool:
    """Whether `handler` is submitit's checkpoint-and-requeue handler inside a SLURM job (its
    local executor installs the same handler, but has no queue to go back to)."""
    return getattr(handler, "__name__", "") == "checkpoint_and_try_requeue" and \
        "SLURM_JOB_ID" in os.environ


def saver(tracker: MlflowTracker, path: Path) -> Callable[[dict[str, Any]], None]:
    """Write the metrics so far, then the loop's state (atomically, so a kill mid-write
    leaves the previous checkpoint)."""

    def save(state: dict[str, Any]) -> None:
        tracker.flush()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save({**state, "run_id": tracker.run_id}, partial)
        os.replace(partial, path)

    return save


def stop_after_save(stop: StopRequest) -> Callable[[int], None]:
    """The driver's `checkpointed`: once every running run saved its checkpoint at `step`, a
    stop signal that arrived stops them (RunStopped; the same command resumes them)."""

    def checkpointed(step: int) -> None:
        if stop.requested():
            raise RunStopped(f"stopped by {stop.signal} at step {step}, after saving a "
                             "checkpoint")

    return checkpointed


def sweep_parent() -> str | None:
    """In a multirun, the parent run its callback opened (found in the sweep's folder)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return sweep_run_id(Path(HydraConfig.get().sweep.dir))


def configure_torch(threads: int) -> None:
    """Threads for this job, and denormal floats flushed to zero.

    Vanishing gradients are exactly the values that fall into the denormal range, where x86
    arithmetic is ~100x slower: flushing them made the fused RNN and GRU about 3.7x faster per
    step at gap 300 (measured when it was added; README, Benchmark); only values below
    1.2e-38 (float32) change.
    """
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def run_name(spec: Config, params: dict[str, str]) -> str:
    """`adding_mean-lstm-tanh-noclip-gap100-s0`: the task option's name, as in the report."""
    model = spec.model
    task = params.get(names.TASK_LABEL) or names.task_label(spec.task.name.value, params)
    return names.run_name(task, model.name.value, model.activation.value,
                          spec.clip.mode.value, spec.clip.threshold, spec.task.gap, spec.seed,
                          init=model.init.value, chrono=model.chrono,
                          num_layers=model.num_layers, bidirectional=model.bidirectional)


def choices_of(hydra_cfg: Any) -> dict[str, str]:
    """The options a job's config was composed from (`hydra.runtime.choices`) for the groups
    that define a run (`names.CHOICE_PARAMS`: `task=adding_mean`, `model=irnn`, ...); {} outside
    Hydra. `hydra_cfg` is the `hydra` node of a job's config, or HydraConfig.get()."""
    if hydra_cfg is None:
        return {}
    found = OmegaConf.select(hydra_cfg, "runtime.choices", default=None) or {}
    return {group: str(found[group]) for group in names.CHOICE_PARAMS
            if found.get(group) is not None}


def hydra_choices() -> dict[str, str]:
    """This job's choices (`choices_of`), inside a Hydra run or job; {} outside Hydra."""
    return choices_of(HydraConfig.get()) if HydraConfig.initialized() else {}


def build_model(spec: Config, task: tasks.Task) -> RecurrentModel:
    """The model of `spec` for `task`; chrono's T_max defaults to the task's sequence length."""
    model = spec.model
    t_max = (model.chrono_t_max or task.seq_len) if model.chrono else None
    return RecurrentModel(model.name.value, task.input_size, task.output_size,
                          model.hidden_size, model.num_layers, model.activation.value,
                          model.init.value, model.forget_bias,
                          bidirectional=model.bidirectional, chrono_t_max=t_max)


def csv_text(columns: tuple[str, ...], rows: list[tuple]) -> str:
    """A CSV file's text: a header line, then one line per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


# Config keys of the sweep or the job, not of its run (popped before params and hash).
SWEEP_KEYS = ("frontier", "batch_file", "train.batch_members", "train.batch_max")


@dataclass
class Job:
    """One run's identity: its validated config, MLflow params, name and config hash."""

    spec: Config
    resolved: Any  # the config as plain containers (the config artifact)
    params: dict[str, str]
    name: str
    hash_: str
    seq_len: int  # its task's sequence length
    cfg: DictConfig  # the composed config it was validated from
    choices: dict[str, str]  # the options it was composed from (`choices_of`)

    @property
    def lock(self) -> Path:
        return run_lock_path(self.spec.train.checkpoint_dir, self.spec.experiment_name,
                             self.hash_)

    @property
    def checkpoint(self) -> Path:
        return Path(self.spec.train.checkpoint_dir) / self.spec.experiment_name / \
            f"{self.hash_}.pt"


def job_of(cfg: DictConfig, choices: dict[str, str] | None = None) -> Job:
    """Validate `cfg` (ConfigError before any run exists: ranges, unknown keys, chrono on a
    too-short sequence, a step too big for this machine's memory) and name its run.

    `choices`: the options it was composed from (`choices_of`), logged as params beside the
    flattened config (`model=irnn` beside `model.name=rnn`), outside the config hash."""
    spec = validate(cfg)
    task = spec.task.build()  # validate() ran the task's own checks
    check_resources(spec, task.seq_len, task.input_size, task.output_size)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    # how the sweep searches and batches, not what the run computes: not logged, not hashed
    for key in SWEEP_KEYS:
        group, _, name = key.rpartition(".")
        (resolved[group] if group else resolved).pop(name, None)  # type: ignore[index,union-attr]
    params = {**flatten(resolved), **(choices or {})}  # type: ignore[arg-type]
    return Job(spec, resolved, params, run_name(spec, params), config_hash(params),
               task.seq_len, cfg, dict(choices or {}))


def train(cfg: DictConfig) -> RunResult:
    """Validate the config, build task and model, train, and log everything to MLflow.

    While it runs, the job holds its config's lock (`<checkpoint_dir>/<experiment>/<hash>.lock`,
    harness/locks.py): a config another live process is running is skipped, and RUNNING runs
    of this config that no process holds are marked killed.
    """
    job = job_of(cfg, hydra_choices())
    place = placement_of(job.spec)
    ensure_store(job.spec.tracking.uri)
    try:
        with locks.hold(job.lock), \
                StopRequest(job.spec.train.checkpoint_requeue).installed() as stop:
            return run_config(job, place, stop)
    except locks.Busy:
        return running_elsewhere(job)


RUNNING_ELSEWHERE = "running elsewhere"  # not a run status: the job created no run


def running_elsewhere(job: Job) -> RunResult:
    log.warning("%s: skipped, another live process is running this config (%s)", job.name,
                job.lock)
    return RunResult(status=RUNNING_ELSEWHERE, reason=f"{job.lock} is held")


def finished_result(job: Job) -> RunResult | None:
    """The result of this config's finished run in the experiment (None: none, or force)."""
    spec = job.spec
    done = None if spec.force else finished_run(spec.tracking.uri, spec.experiment_name,
                                                job.hash_)
    if done is None:
        return None
    status = done.data.tags[names.STATUS]
    log.info("%s: skipped, this config already finished as run %s (%s); force=true reruns",
             job.name, done.info.run_id, status)
    metrics = done.data.metrics
    return RunResult(status=status, reason=f"already finished as run {done.info.run_id}",
                     steps_run=int(metrics.get(names.STEPS_RUN, 0)),
                     final_eval_accuracy=metrics.get(names.FINAL_EVAL_ACCURACY, math.nan),
                     final_eval_loss=metrics.get(names.FINAL_EVAL_LOSS, math.nan))


def resume_state(job: Job) -> dict[str, Any] | None:
    """The checkpoint of a run of this config killed part-way (None: start afresh); RUNNING
    runs of this config that no process holds, other than that one, are marked killed."""
    spec = job.spec
    state = None
    if job.checkpoint.exists() and not spec.force:
        # A run of this config was killed part-way: continue it, in the same MLflow run.
        # on the CPU: the run may resume on another device than it was saved on
        state = torch.load(job.checkpoint, weights_only=False, map_location="cpu")
        log.info("%s: resuming run %s from step %d", job.name, state["run_id"], state["step"])
    for orphan in close_orphans_of_config(spec.tracking.uri, spec.experiment_name, job.hash_,
                                          spec.train.checkpoint_dir,
                                          keep=state["run_id"] if state else None):
        log.info("%s: run %s of this config had no live process: marked killed", job.name,
                 orphan)
    return state


def job_run(job: Job, state: dict[str, Any] | None,
            tags: dict[str, str] | None = None) -> AbstractContextManager[MlflowTracker]:
    """The job's MLflow run: opened (or reopened from the checkpoint's run), closed FINISHED,
    or FAILED/KILLED by an exception."""
    return mlflow_run(job.spec.tracking.uri, job.spec.experiment_name, job.name, job.params,
                      {names.CONFIG_HASH: job.hash_, **(tags or {})},
                      parent_run_id=sweep_parent(),
                      resume_run_id=state["run_id"] if state else None)


def start_run(job: Job, tracker: MlflowTracker, place: Placement,
              state: dict[str, Any] | None) -> tasks.Task:
    """Inside the job's run: build its task; a fresh run logs its config and chance level."""
    spec = job.spec
    threads, device = place.threads, place.device
    tracker.set_tags({names.TORCH_THREADS: str(threads), names.DEVICE: str(device)})
    task = spec.task.build()
    log.info("%s: %d steps, sequence length %d, chance accuracy %.3f, loss %.4f, "
             "%d torch thread(s), %s", job.name, spec.train.steps, task.seq_len,
             task.chance.accuracy, task.chance.loss, threads, device)
    if state is None:
        tracker.log_text(OmegaConf.to_yaml(job.resolved), names.CONFIG_ARTIFACT)
        tracker.log_metrics({names.CHANCE_LOSS: task.chance.loss,
                             names.CHANCE_ACCURACY: task.chance.accuracy}, 0)
    return task


def job_model(job: Job, task: tasks.Task, device: torch.device) -> RecurrentModel:
    """The run's model, initialized on the CPU from its seed (the same weights on every
    device), then moved to `device`."""
    torch.manual_seed(job.spec.seed)  # model initialization; data uses its own generators
    return build_model(job.spec, task).to(device)


@dataclass(frozen=True)
class Placement:
    """Where a job's runs train on this machine: torch threads and device."""

    threads: int
    device: torch.device


def placement_of(spec: Config) -> Placement:
    """`train.threads` and `train.device` resolved here, and torch set up for them;
    ConfigError for cuda where torch sees no GPU (before the store is even opened)."""
    try:
        device = resolve_device(spec.train.device.value)
    except ValueError as err:
        raise ConfigError(f"train.device: {err}") from None
    threads = torch_threads(spec.train.threads)
    configure_torch(threads)
    return Placement(threads, device)


def checkpointing_of(job: Job, tracker: MlflowTracker,
                     stop: StopRequest) -> Checkpointing | None:
    """Checkpoints every `train.checkpoint_every` steps (None: never). From here a stop signal
    waits for the step's checkpoint (`stop_after_save`)."""
    every = job.spec.train.checkpoint_every
    if every <= 0:
        return None
    tracker.auto_flush = False
    stop.deferred = True
    return Checkpointing(every, saver(tracker, job.checkpoint), stop_requested=stop.requested)


def close_run(tracker: MlflowTracker, result: RunResult) -> None:
    """Log how the run ended: summary metrics, gradient profiles, evaluation per gap, status."""
    tracker.log_metrics(result.summary_metrics(), result.steps_run)
    tracker.log_profiles(result.profiles)
    if result.eval_by_gap:
        tracker.log_text(csv_text(names.EVAL_BY_GAP_COLUMNS, result.eval_by_gap),
                         names.EVAL_BY_GAP_ARTIFACT)
    tracker.set_tags({names.STATUS: result.status, names.STATUS_REASON: result.reason,
                      names.END_STATE: result.end_state,
                      names.SUCCESS_CRITERION: result.success_criterion})


def ended(job: Job, result: RunResult) -> None:
    """After the run closed: its checkpoint goes (nothing left to resume)."""
    job.checkpoint.unlink(missing_ok=True)
    log.info("%s: %s after %d steps (%s), %.1f s", job.name, result.status, result.steps_run,
             result.reason or "step budget used", result.wall_time_s)


def run_config(job: Job, place: Placement, stop: StopRequest) -> RunResult:
    """The body of `train`, under the config's lock: skip, resume or start the run."""
    done = finished_result(job)
    if done is not None:
        return done
    state = resume_state(job)
    spec = job.spec
    # Everything that can fail (out of memory building a model, a bug) happens inside the
    # run, which then ends `failed` with the traceback as an artifact.
    with job_run(job, state) as tracker:
        task = start_run(job, tracker, place, state)
        model = job_model(job, task, place.device)
        record = RunRecord(task, spec.train, tracker, spec.seed, job.name,
                           checkpointing_of(job, tracker, stop), place.device)
        resume(record, model, state)
        optimizer = make_optimizer(model, spec.optim)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
        stepper = FusedStepper(model, optimizer, Clipper.of(spec.clip), task)
        (result,) = drive(stepper, [record], spec.train, stop_after_save(stop))
        close_run(tracker, result)
    ended(job, result)
    return result


def member_jobs(cfg: DictConfig, choices: dict[str, str] | None = None) -> list[Job]:
    """One job per seed of `batched_seeds`: the config of the separate run with that seed
    (`seed` set, `batched_seeds` null), so its params and config hash are that run's."""
    spec = validate(cfg)
    if not spec.batched_seeds:
        raise ConfigError("batched_seeds: null; list the seeds to batch, e.g. [0,1,2,3]")
    model = spec.model
    reason = unbatchable(model.name.value, model.activation.value, model.bidirectional)
    if reason is not None:
        raise ConfigError(f"batched_seeds: {reason}; train these seeds as separate jobs "
                          "(seed=...)")
    jobs = []
    for seed in spec.batched_seeds:
        member = cfg.copy()
        member.seed, member.batched_seeds = seed, None
        jobs.append(job_of(member, choices))
    return jobs


def train_batched(cfg: DictConfig) -> list[RunResult]:
    """`batched_seeds=[0,1,2,3]`: these seeds of one config trained in this process as one
    stacked model (harness/batched.py), each logged as its own MLflow run, the run the
    separate job with that seed would log (same params, config hash and metrics to float32
    rounding; tag `batched_seeds` says which batch trained it; its wall time is its share of
    the batch's)."""
    jobs = member_jobs(cfg, hydra_choices())
    return train_jobs(jobs, {names.BATCHED_SEEDS: ",".join(str(j.spec.seed) for j in jobs)})


@dataclass(frozen=True)
class MemberOutcome:
    """What a batched job returns per member (harness.sweeping.expand): its run's identity
    and its objective."""

    name: str
    hash_: str
    loss: float


def batch_file_jobs(cfg: DictConfig) -> list[Job]:
    """The members of a batched job (`batch_file`, harness/batching.py): each composed from
    its own overrides, as its separate job would be."""
    from hydra import compose

    jobs = []
    config_name = HydraConfig.get().job.config_name if HydraConfig.initialized() else "config"
    for overrides in read_batch(cfg.batch_file):
        member = compose(config_name=config_name, overrides=overrides,
                         return_hydra_config=True)
        choices = choices_of(member.hydra)
        with open_dict(member):
            del member["hydra"]
        jobs.append(job_of(member, choices))
    return jobs


def train_batch_file(cfg: DictConfig) -> list[MemberOutcome]:
    """A sweep's batched job (`train.batch_members=auto`): its members trained as one
    stacked model, each logged as the run its separate job would log (tag `batch` names the
    runs trained with it)."""
    if not Path(cfg.batch_file).is_file():
        raise ConfigError(f"batch_file: no such file {cfg.batch_file}")
    jobs = batch_file_jobs(cfg)
    results = train_jobs(jobs, {names.BATCH: ",".join(job.name for job in jobs)})
    return [MemberOutcome(job.name, job.hash_, result.final_eval_loss)
            for job, result in zip(jobs, results, strict=True)]


def train_jobs(jobs: list[Job], tag: dict[str, str]) -> list[RunResult]:
    """Runs trained in this process as members of one stacked model, each logged as its own
    MLflow run with the tag `tag`. Each member holds its config's lock and is skipped,
    resumed or started as `train` does: members resuming from checkpoints of different steps
    train in one batch per step."""
    spec = jobs[0].spec
    place = placement_of(spec)
    ensure_store(spec.tracking.uri)
    results: dict[int, RunResult] = {}
    with ExitStack() as held, \
            StopRequest(spec.train.checkpoint_requeue).installed() as stop:
        waiting: list[tuple[int, Job, dict[str, Any] | None]] = []
        for index, job in enumerate(jobs):
            try:
                held.enter_context(locks.hold(job.lock))
            except locks.Busy:
                results[index] = running_elsewhere(job)
                continue
            done = finished_result(job)
            if done is not None:
                results[index] = done
                continue
            waiting.append((index, job, resume_state(job)))
        for _, group in groupby(sorted(waiting, key=start_step), key=start_step):
            members = list(group)
            outcomes = train_batch([(job, state) for _, job, state in members], place, stop,
                                   tag)
            for (index, _, _), result in zip(members, outcomes, strict=True):
                results[index] = result
    return [results[index] for index in range(len(jobs))]


def start_step(member: tuple[int, Job, dict[str, Any] | None]) -> int:
    state = member[2]
    return state["step"] if state else 0


def train_batch(members: list[tuple[Job, dict[str, Any] | None]], place: Placement,
                stop: StopRequest, tags: dict[str, str]) -> list[RunResult]:
    """Members starting at one step: their K runs open together, train as one batch, and
    close each with its own result (an exception ends all K failed, or killed)."""
    with ExitStack() as runs:
        models, records, states = [], [], []
        for job, state in members:
            tracker = runs.enter_context(job_run(job, state, tags))
            task = start_run(job, tracker, place, state)
            model = job_model(job, task, place.device)
            record = RunRecord(task, job.spec.train, tracker, job.spec.seed, job.name,
                               checkpointing_of(job, tracker, stop), place.device)
            resume(record, model, state)
            models.append(model)
            records.append(record)
            states.append(state["optimizer"] if state else None)
        specs = [job.spec for job, _ in members]
        log.info("batched: %d members in one batch from step %d", len(records),
                 records[0].step)
        stepper = BatchedStepper(models, [r.task for r in records], [s.optim for s in specs],
                                 [s.clip for s in specs], states)
        results = drive(stepper, records, specs[0].train, stop_after_save(stop))
        for record, result in zip(records, results, strict=True):
            close_run(record.tracker, result)  # type: ignore[arg-type]
    for (job, _), result in zip(members, results, strict=True):
        ended(job, result)
    return results


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> float:
    """Console script `harness-train`; returns the final eval loss (the objective an Optuna
    sweep minimizes; with `batched_seeds`, the members' mean; NaN when the job created no
    result).

    In a multirun a failing job does not stop the others: its error is logged, written to
    the sweep folder's `failed_jobs.txt` (which the sweep's summary and exit status report),
    and the job returns NaN; a job stopped by SIGTERM/SIGUSR2 likewise goes to
    `killed_jobs.txt`. A single run exits non-zero: 2, with one line, for an invalid config
    or an unusable store; 143 (128 + SIGTERM) when a stop signal ended it.
    """
    in_sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        if cfg.get("batch_file"):
            return train_batch_file(cfg)  # type: ignore[return-value]  # a batched job's
        results = train_batched(cfg) if cfg.get("batched_seeds") else [train(cfg)]
    except Exception as err:
        stopped = isinstance(err, RunStopped)
        invalid = isinstance(err, (ConfigError, StoreError))
        full = None if stopped or invalid else \
            disk_full(err, cfg.tracking.uri, cfg.train.checkpoint_dir)
        if full is not None:
            message = (f"disk full: {full}: {type(err).__name__}: "
                       f"{' '.join(str(err).split())[:200]}")
            if in_sweep:
                log.error("job stopped, %s; free space, then the same command resumes it",
                          message)
                record_job(Path(HydraConfig.get().sweep.dir), err, FULL_DISK_JOBS_FILE,
                           message)
                return math.nan
            print(f"harness-train: {message}; free space there, then the same command "
                  "resumes the run", file=sys.stderr)
            sys.exit(1)
        if in_sweep:
            if stopped:
                log.warning("job killed: %s; the same command resumes it", err)
            elif invalid:
                log.error("job invalid: %s", err)
            else:
                log.error("job failed: %s: %s", type(err).__name__, err, exc_info=True)
            record_job(Path(HydraConfig.get().sweep.dir), err,
                       KILLED_JOBS_FILE if stopped else
                       INVALID_JOBS_FILE if invalid else FAILED_JOBS_FILE)
            return math.nan
        if stopped:
            print(f"harness-train: {err}; the same command resumes the run", file=sys.stderr)
            sys.exit(128 + signal.SIGTERM)
        if isinstance(err, ConfigError):
            print(f"harness-train: invalid config: {err}", file=sys.stderr)
            sys.exit(2)
        if isinstance(err, StoreError):
            print(f"harness-train: {err}", file=sys.stderr)
            sys.exit(2)
        raise
    if not in_sweep:
        print(f"MLflow store: {cfg.tracking.uri}\n"
              f"Open the UI:  mlflow ui --backend-store-uri {cfg.tracking.uri}")
    losses = [r.final_eval_loss for r in results if not math.isnan(r.final_eval_loss)]
    return sum(losses) / len(losses) if losses else math.nan


def record_job(sweep_dir: Path, err: Exception, file_name: str,
               message: str | None = None) -> None:
    """Append one line for a failed (or killed) job to the sweep folder's file_name (where
    the sweep folder's own disk is full, the job's log line is all there is)."""
    hydra_cfg = HydraConfig.get()
    # the job's own overrides, space-joined (override_dirname joins them with commas, which
    # a value such as batched_seeds=[0,1] also contains)
    what = message or f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    line = f"job {hydra_cfg.job.num} ({' '.join(hydra_cfg.overrides.task)}): {what}\n"
    try:
        with (sweep_dir / file_name).open("a") as handle:
            handle.write(line)
    except OSError as failed:
        log.error("could not record the job in %s: %s", sweep_dir / file_name, failed)


def cli() -> None:
    """Console script `harness-train`: Hydra's main, with a config that does not compose (an
    unknown key such as `frontier.foo=1`, a value not among an enum's choices, a missing
    option) refused in one line naming the key, exit 2, before any run exists. Hydra prints
    such errors over several lines and exits 1; with HYDRA_FULL_ERROR they reach us as
    exceptions instead. A user who set HYDRA_FULL_ERROR gets Hydra's full trace."""
    if "HYDRA_FULL_ERROR" in os.environ:
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (ConfigCompositionException, OverrideParseException, OmegaConfBaseException) as err:
        print(f"harness-train: invalid config: {composition_error(err)}", file=sys.stderr)
        sys.exit(2)


def composition_error(err: BaseException) -> str:
    """One line for a Hydra composition error: `frontier.foo: no such key in frontier; valid
    keys: gap_min, ...`, `model.activation: Invalid value 'sigmoid', expected one of [...]`,
    `model=transformer: no such option; available options in 'model': gru, lstm, ...`, or
    Hydra's own text on one line."""
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options:
        group, _, option = err.missing_cfg_file.rpartition("/")
        options = [o for o in err.options if not o.startswith("base_")]  # schemas, not options
        return (f"{group}={option}: no such option; available options in '{group}': "
                f"{', '.join(options)}")
    cause: BaseException | None = err
    while cause is not None:
        key = getattr(cause, "full_key", None)
        if isinstance(cause, OmegaConfBaseException) and key:
            schema = getattr(cause, "object_type", None)
            if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and \
                    dataclasses.is_dataclass(schema):
                group = key.rpartition(".")[0] or "the top level"
                valid = ", ".join(f.name for f in dataclasses.fields(schema))
                return f"{key}: no such key in {group}; valid keys: {valid}"
            return f"{key}: {str(getattr(cause, 'msg', cause)).strip().splitlines()[0]}"
        cause = cause.__cause__
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip())


if __name__ == "__main__":
    cli()
