"""What happens to a job's runs: skipped when their config already finished in the experiment,
resumed from a checkpoint, held under their config's liveness lock (RUNNING runs of dead
processes closed), opened and closed as MLflow runs, and trained by the driver
(harness/loop.py): one run with the fused model, or several as members of one batched model.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from harness import names
from harness.batched import BatchedStepper, unbatchable
from harness.clipping import Clipper
from harness.lifecycle.identity import (
    Job,
    MemberOutcome,
    batch_file_jobs,
    hydra_choices,
    in_sweep,
    member_jobs,
)
from harness.lifecycle.progress import RUNNING_ELSEWHERE, ran
from harness.lifecycle.signals import StopRequest
from harness.loop import (
    Checkpointing,
    FusedStepper,
    RunRecord,
    RunResult,
    Stepper,
    drive,
    resume,
)
from harness.models import RecurrentModel, build_model
from harness.optimizers import make_optimizer
from harness.resources import Placement, placement_of
from harness.schema import Config, ConfigError
from harness.tracking import liveness
from harness.tracking.liveness import close_dead, dead_runs_of_config
from harness.tracking.run import (
    MlflowTracker,
    RunStopped,
    budget_reached,
    config_runs,
    csv_text,
    finished_of,
    logged_nothing,
    mlflow_run,
)
from harness.tracking.store import TrackingUnreachable, ensure_store
from harness.tracking.sweep import sweep_run_id
from tasks import Task

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)


def saver(tracker: MlflowTracker, path: Path) -> Callable[[dict[str, Any]], None]:
    """Write the metrics so far, then the loop's state (atomically, so a kill mid-write
    leaves the previous checkpoint). When the tracking server stays unreachable the state is
    saved all the same, with the points the store lacks (`unflushed`, written first when the
    run resumes): the training done so far survives the outage."""

    def write(state: dict[str, Any]) -> None:
        write_checkpoint(path, {**state, "run_id": tracker.run_id,
                                "unflushed": tracker.unflushed()})

    def save(state: dict[str, Any]) -> None:
        try:
            tracker.flush()
        except TrackingUnreachable:
            write(state)
            raise
        write(state)

    return save


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save a checkpoint atomically: a kill mid-write leaves the previous one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def stop_after_save(stop: StopRequest) -> Callable[[int], None]:
    """The driver's `checkpointed`: once every running run saved its checkpoint at `step`, a
    stop signal that arrived stops them (RunStopped; the same command resumes them)."""

    def checkpointed(step: int) -> None:
        if stop.requested():
            raise RunStopped(f"stopped by {stop.signal} at step {step}, after saving a "
                             "checkpoint")

    return checkpointed


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


def sweep_parent() -> str | None:
    """In a multirun, the parent run its callback opened (found in the sweep's folder)."""
    if not in_sweep():
        return None
    return sweep_run_id(Path(HydraConfig.get().sweep.dir))


def preflight(spec: Config) -> None:
    """The job's store made ready before it trains. A single run refuses a server that does
    not answer at once (a wrong URL shows in seconds, StoreError); a job of a sweep, whose
    server answered when the sweep began, waits for it within `tracking.wait_s` (an outage:
    TrackingUnreachable)."""
    ensure_store(spec.tracking.uri, spec.tracking.wait_s if in_sweep() else None)


def running_elsewhere(job: Job) -> RunResult:
    log.warning("%s: skipped, another live process is running this config (%s)", job.name,
                job.lock)
    return RunResult(status=RUNNING_ELSEWHERE, reason=f"{job.lock} is held")


def runs_of(job: Job) -> list[Run]:
    """Every run of the job's config in its experiment: the one search a job makes, read
    under the config's lock (what it skips, resumes, takes over and closes)."""
    spec = job.spec
    return config_runs(spec.tracking.uri, spec.experiment_name, job.hash_,
                       spec.tracking.wait_s)


def finished_result(job: Job, runs: list[Run]) -> RunResult | None:
    """The result of this config's finished run among `runs` (None: none, or force)."""
    done = None if job.spec.force else finished_of(runs)
    if done is None:
        return None
    status = done.data.tags[names.STATUS]
    log.info("%s: skipped, this config already finished as run %s (%s); force=true reruns",
             job.name, done.info.run_id, status)
    metrics = done.data.metrics
    return RunResult(status=status, reason=f"already finished as run {done.info.run_id}",
                     steps_run=int(metrics.get(names.STEPS_RUN, 0)),
                     final_eval_accuracy=metrics.get(names.FINAL_EVAL_ACCURACY, math.nan),
                     final_eval_loss=metrics.get(names.FINAL_EVAL_LOSS, math.nan),
                     wall_time_s=metrics.get(names.WALL_TIME_S, 0.0))


@dataclass
class Start:
    """Where a job's run starts: from a checkpoint (`state`, the loop's state of a run killed
    part-way, or of a finished run still improving at its budget, continued in the same MLflow
    run), in a run of its config that logged nothing (`reuse`: its process was killed before
    its first write), or afresh (neither); and the step budget it trains to (`budget`; None:
    `train.steps`)."""

    state: dict[str, Any] | None = None
    reuse: str | None = None
    budget: int | None = None

    @property
    def closing(self) -> bool:
        """It starts from a saved closing (`Closing`): the run trained to its end, and only
        its closing writes are left."""
        return bool(self.state and self.state.get("closing"))


def budget_of(job: Job, start: Start) -> int:
    """The steps the job's run trains to: `train.steps`, or the larger budget it is being
    continued to (`continuation_of`)."""
    return start.budget or job.spec.train.steps


def continuation_of(job: Job, runs: list[Run]) -> Start | None:
    """With `frontier.continue_to`: the config's finished run, unsolved and still improving
    at a budget below it, continued from the checkpoint it kept at that budget (`ended`), in
    the same MLflow run, up to `continue_to` steps. None when there is nothing to continue:
    no such run, its budget already reached, or no checkpoint (a run from before
    continuations, or one rerun with force=true)."""
    target = job.spec.frontier.continue_to
    done = finished_of(runs) if target and not job.spec.force else None
    if done is None or done.data.tags.get(names.END_STATE) != names.IMPROVING:
        return None
    if budget_reached(done) >= target:
        return None
    if not job.checkpoint.exists():
        log.warning("%s: run %s is still improving at %d steps but kept no checkpoint: it "
                    "cannot be continued", job.name, done.info.run_id, budget_reached(done))
        return None
    state = torch.load(job.checkpoint, weights_only=False, map_location="cpu")
    log.info("%s: continuing run %s from step %d to %d steps", job.name, state["run_id"],
             state["step"], target)
    return Start(state=state, budget=target)



def start_of(job: Job, runs: list[Run]) -> Start:
    """Where the job's run starts (`Start`), from its checkpoint and its config's `runs`; the
    RUNNING runs of this config that no process holds, other than the one it continues or
    takes over, are marked killed."""
    spec = job.spec
    start = Start()
    if job.checkpoint.exists() and not spec.force:
        # A run of this config was killed part-way: continue it, in the same MLflow run, to
        # the budget it was training to (a continuation's is larger than train.steps).
        # on the CPU: the run may resume on another device than it was saved on
        start.state = torch.load(job.checkpoint, weights_only=False, map_location="cpu")
        start.budget = start.state.get("budget")
        log.info("%s: resuming run %s from step %d", job.name, start.state["run_id"],
                 start.state["step"])
    dead = dead_runs_of_config(runs, spec.train.checkpoint_dir)
    stubs = [run for run in runs if logged_nothing(run)
             and (run.info.status == "KILLED" or run in dead)]
    if start.state is None and stubs:
        start.reuse = max(stubs, key=lambda run: run.info.start_time).info.run_id
        log.info("%s: run %s of this config was killed before it logged anything: this run "
                 "takes it over", job.name, start.reuse)
    keep = (start.state["run_id"] if start.state else None, start.reuse)
    for orphan in close_dead(spec.tracking.uri, [r for r in dead if r.info.run_id not in keep]):
        log.info("%s: run %s of this config had no live process: marked killed", job.name,
                 orphan)
    return start


def job_run(job: Job, place: Placement, start: Start,
            tags: dict[str, str] | None = None) -> AbstractContextManager[MlflowTracker]:
    """The job's MLflow run: opened (or reopened from the checkpoint's run, or taken over from
    a run that logged nothing), closed FINISHED, or FAILED/KILLED by an exception; tagged
    with where it trains."""
    state = start.state
    return mlflow_run(job.spec.tracking.uri, job.spec.experiment_name, job.name, job.params,
                      {names.CONFIG_HASH: job.hash_, names.TORCH_THREADS: str(place.threads),
                       names.DEVICE: str(place.device), **(tags or {})},
                      parent_run_id=sweep_parent(),
                      resume_run_id=state["run_id"] if state else None,
                      reuse_run_id=start.reuse,
                      unflushed=state.get("unflushed", ()) if state else (),
                      wait_s=job.spec.tracking.wait_s)


def start_run(job: Job, tracker: MlflowTracker, place: Placement,
              state: dict[str, Any] | None) -> Task:
    """Inside the job's run: build its task; a fresh run logs its config and chance level."""
    spec = job.spec
    threads, device = place.threads, place.device
    job.name = tracker.run_name  # its name in the store (`free_name`): the progress lines'
    task = spec.task.build()
    log.info("%s: %d steps, sequence length %d, chance accuracy %.3f, loss %.4f, "
             "%d torch thread(s), %s", job.name, spec.train.steps, task.seq_len,
             task.chance.accuracy, task.chance.loss, threads, device)
    if state is None:
        tracker.log_text(OmegaConf.to_yaml(job.resolved), names.CONFIG_ARTIFACT)
        tracker.log_metrics({names.CHANCE_LOSS: task.chance.loss,
                             names.CHANCE_ACCURACY: task.chance.accuracy}, 0)
    return task


def job_model(job: Job, task: Task, device: torch.device) -> RecurrentModel:
    """The run's model, initialized on the CPU from its seed (the same weights on every
    device), then moved to `device`."""
    torch.manual_seed(job.spec.seed)  # model initialization; data uses its own generators
    return build_model(job.spec.model, task, job.spec.clip).to(device)


def job_stepper(job: Job, model: RecurrentModel, task: Task, device: torch.device,
                state: dict[str, Any] | None) -> Stepper:
    """What takes a run's steps. On the CPU a run that could be a batched member is one,
    alone (K = 1): a member computes bit for bit what it computes in any batch of its
    sequence length (harness/batching.py), so a result never depends on whether the sweep
    batched it, and the C++ kernel at K = 1 is as fast as torch's fused module or faster
    (docs/benchmark.md). Elsewhere (a GPU, or a run the stacked model cannot take) torch's
    fused module or the cell's unrolled step (`FusedStepper`)."""
    spec = job.spec
    member = unbatchable(spec.model.name, spec.model.activation.value,
                         spec.model.bidirectional) is None
    if device.type == "cpu" and member:
        return BatchedStepper([model], [task], [spec.optim], [spec.clip],
                              [state["optimizer"] if state else None])
    optimizer = make_optimizer(model, spec.optim)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    return FusedStepper(model, optimizer, Clipper.of(spec.clip), task)


class Closing:
    """The closing writes of a job's run whose training ended: the summary metrics (stamped
    once, `begin`), the gradient profiles, the evaluation per gap and the status tags
    (`send`), then its FINISHED status (as its `job_run` ends).

    If the tracking server stops answering before the run is FINISHED, `guard` saves the
    closing beside the job's checkpoint (`Job.closing`): the result, the points the store
    lacks with their first timestamps, and the state to keep at the budget. The rerun resends
    them (MLflow ignores a point it already has) and closes the run, training nothing again:
    a rerun that trained again from the last checkpoint logged the steps after it twice."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.tracker: MlflowTracker | None = None
        self.result: RunResult | None = None
        self.at_budget: dict[str, Any] | None = None
        self.budget = 0

    def begin(self, tracker: MlflowTracker, result: RunResult,
              at_budget: dict[str, Any] | None, budget: int) -> None:
        """The run's training ended with `result`: its summary metrics join the buffer."""
        self.tracker, self.result, self.at_budget, self.budget = \
            tracker, result, at_budget, budget
        tracker.buffer(result.summary_metrics(), result.steps_run)

    def resume(self, tracker: MlflowTracker, state: dict[str, Any]) -> None:
        """Continue a closing the checkpoint `state` saved (its points are the tracker's
        buffer: `job_run` restored them)."""
        self.tracker, self.result = tracker, state["result"]
        self.at_budget, self.budget = state["at_budget"], state["budget"]

    def send(self) -> None:
        """Write the artifacts, then the buffered points with the status tags in one call; a
        run continued past `train.steps` (an immutable param) is tagged with the budget it
        was trained to."""
        tracker, result, job = self.tracker, self.result, self.job
        assert tracker is not None and result is not None
        tracker.log_profiles(result.profiles)
        if result.eval_by_gap:
            tracker.log_text(csv_text(names.EVAL_BY_GAP_COLUMNS, result.eval_by_gap),
                             names.EVAL_BY_GAP_ARTIFACT)
        extended = ({names.STEPS_BUDGET: str(self.budget)}
                    if self.budget > job.spec.train.steps else {})
        tracker.flush({names.STATUS: result.status, names.STATUS_REASON: result.reason,
                       names.END_STATE: result.end_state,
                       names.SUCCESS_CRITERION: result.success_criterion, **extended})

    def end(self) -> RunResult:
        """After its run is FINISHED: the checkpoint `ended` leaves; the result."""
        assert self.tracker is not None and self.result is not None
        ended(self.job, self.result, self.at_budget, self.tracker.run_id)
        return self.result

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Around the job's run (entered before its `job_run`, so left after it): an outage
        after `begin` and before the run is FINISHED saves the closing (`Job.closing`)."""
        try:
            yield
        except TrackingUnreachable:
            tracker, result = self.tracker, self.result
            if tracker is not None and result is not None and not tracker.terminated:
                write_checkpoint(self.job.closing, {
                    "closing": True, "run_id": tracker.run_id, "step": result.steps_run,
                    "unflushed": tracker.unflushed(), "result": result,
                    "at_budget": self.at_budget, "budget": self.budget})
                log.info("%s: its run's closing is saved; the same command finishes it",
                         self.job.name)
            raise


def start_or_done(job: Job) -> Start | RunResult:
    """Under the config's lock: where the job's run starts (`Start`), or the result of its
    config's run that already finished (skipped). A closing an outage saved comes first."""
    if job.closing.exists() and not job.spec.force:
        state = torch.load(job.closing, weights_only=False, map_location="cpu")
        log.info("%s: closing run %s, trained to step %d when the tracking server stopped "
                 "answering", job.name, state["run_id"], state["step"])
        return Start(state=state, budget=state["budget"])
    runs = runs_of(job)
    start = continuation_of(job, runs)
    if start is not None:
        return start
    done = finished_result(job, runs)
    if done is not None:
        return done
    return start_of(job, runs)


def reclose(job: Job, place: Placement, start: Start) -> RunResult:
    """Finish the closing an outage interrupted (`Closing`)."""
    assert start.state is not None
    closing = Closing(job)
    with closing.guard(), job_run(job, place, start) as tracker:
        closing.resume(tracker, start.state)
        closing.send()
    return closing.end()


def ended(job: Job, result: RunResult, at_budget: dict[str, Any] | None, run_id: str) -> None:
    """After run `run_id` closed: its checkpoint goes (nothing left to resume), unless the run
    is still improving at the end of its budget: then its state there (`at_budget`,
    `RunRecord.at_budget`) is kept, from which a larger budget continues it
    (`continuation_of`); every point it logged is in the store."""
    if result.end_state == names.IMPROVING and at_budget is not None:
        write_checkpoint(job.checkpoint, {**at_budget, "unflushed": [], "run_id": run_id})
    else:
        job.checkpoint.unlink(missing_ok=True)
    job.closing.unlink(missing_ok=True)
    log.info("%s: %s after %d steps (%s), %.1f s", job.name, result.status, result.steps_run,
             result.reason or "step budget used", result.wall_time_s)


def run_config(job: Job, place: Placement, stop: StopRequest) -> RunResult:
    """The body of `train`, under the config's lock: skip, resume or start the run."""
    start = start_or_done(job)
    if isinstance(start, RunResult):
        return start
    if start.closing:
        return reclose(job, place, start)
    state = start.state
    spec = job.spec
    train = replace(spec.train, steps=budget_of(job, start))
    closing = Closing(job)
    # Everything that can fail (out of memory building a model, a bug) happens inside the
    # run, which then ends `failed` with the traceback as an artifact.
    with closing.guard(), job_run(job, place, start) as tracker:
        task = start_run(job, tracker, place, state)
        model = job_model(job, task, place.device)
        record = RunRecord(task, train, tracker, spec.seed, job.name,
                           checkpointing_of(job, tracker, stop), place.device)
        resume(record, model, state)
        stepper = job_stepper(job, model, task, place.device, state)
        (result,) = drive(stepper, [record], train, stop_after_save(stop))
        closing.begin(tracker, result, record.at_budget, train.steps)
        closing.send()
    return closing.end()


def train_jobs(jobs: list[Job], tag: dict[str, str]) -> list[RunResult]:
    """Runs trained in this process as members of one stacked model, each logged as its own
    MLflow run with the tag `tag`. Each member holds its config's lock and is skipped,
    resumed or started as `train` does: members resuming from checkpoints of different steps
    train in one batch per step."""
    spec = jobs[0].spec
    place = placement_of(spec)
    preflight(spec)
    results: dict[int, RunResult] = {}
    with ExitStack() as held, \
            StopRequest(spec.train.checkpoint_requeue).installed() as stop:
        waiting: list[tuple[int, Job, Start]] = []
        for index, job in enumerate(jobs):
            try:
                held.enter_context(liveness.hold(job.lock))
            except liveness.Busy:
                results[index] = running_elsewhere(job)
                continue
            start = start_or_done(job)
            if isinstance(start, RunResult):
                results[index] = start
                continue
            if start.closing:
                results[index] = reclose(job, place, start)
                continue
            waiting.append((index, job, start))
        for _, group in groupby(sorted(waiting, key=start_step), key=start_step):
            members = list(group)
            outcomes = train_batch([(job, start) for _, job, start in members], place, stop,
                                   tag)
            for (index, _, _), result in zip(members, outcomes, strict=True):
                results[index] = result
    for index, job in enumerate(jobs):
        ran(job.name, results[index])
    return [results[index] for index in range(len(jobs))]


def start_step(member: tuple[int, Job, Start]) -> tuple[int, int]:
    """What members trained together share: the step they start at and their budget."""
    _, job, start = member
    return (start.state["step"] if start.state else 0, budget_of(job, start))


def train_batch(members: list[tuple[Job, Start]], place: Placement,
                stop: StopRequest, tags: dict[str, str]) -> list[RunResult]:
    """Members starting at one step: their K runs open together, train as one batch, and
    close each with its own result (an exception ends all K failed, or killed)."""
    train = replace(members[0][0].spec.train, steps=budget_of(*members[0]))
    closings = [Closing(job) for job, _ in members]
    with ExitStack() as runs:
        models, records, states = [], [], []
        for (job, start), closing in zip(members, closings, strict=True):
            state = start.state
            runs.enter_context(closing.guard())
            tracker = runs.enter_context(job_run(job, place, start, tags))
            task = start_run(job, tracker, place, state)
            model = job_model(job, task, place.device)
            record = RunRecord(task, train, tracker, job.spec.seed, job.name,
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
        results = drive(stepper, records, train, stop_after_save(stop))
        for closing, record, result in zip(closings, records, results, strict=True):
            closing.begin(record.tracker, result, record.at_budget,  # type: ignore[arg-type]
                          train.steps)
        for closing in closings:
            closing.send()
    return [closing.end() for closing in closings]


def train_batched(cfg: DictConfig) -> list[RunResult]:
    """`batched_seeds=[0,1,2,3]`: these seeds of one config trained in this process as one
    stacked model (harness/batched.py), each logged as its own MLflow run, the run the
    separate job with that seed would log (same params, config hash and metrics to float32
    rounding; tag `batched_seeds` says which batch trained it; its wall time is its share of
    the batch's)."""
    jobs = member_jobs(cfg, hydra_choices())
    return train_jobs(jobs, {names.BATCHED_SEEDS: ",".join(str(j.spec.seed) for j in jobs)})


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
