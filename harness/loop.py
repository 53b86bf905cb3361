"""The training driver: sample, forward, loss, backward, clip, step; evaluate; stop early.

One driver (`drive`) trains any number of runs over a `Stepper`, the object that takes their
training steps: `FusedStepper` for one run (torch's fused module), `harness.batched.
BatchedStepper` for K runs stacked in one model. Each run keeps its own `RunRecord` (its data
streams, evaluations, diagnostics, metric windows, divergence checks, checkpoints, result), so
a run is decided, logged and checkpointed by the same code however it is stepped.

It talks to the task and the model through their interfaces and reports metrics to a
`Tracker` (anything with `log_metrics(metrics, step)`), so it never touches MLflow and a
test can run it with an in-memory tracker.

Step s means "after s optimizer updates". Evaluation runs at step 0, every `eval_every`
steps and at the end, on a fixed held-out batch from the evaluation stream; the run stops
as `solved` once the evaluation meets the task's success criterion (`Task.success`; its
threshold replaced by `train.solve_threshold` when set). At the end, the eval-loss history
classifies how the run ended (`end_state`, harness/outcome.py). The diagnostics (gradient profile,
spectral radius, gates) run at step 0, every `profile_every` steps and at the end
(`profile_every` 0: at every evaluation; -1: never, for timing the harness without them).

A run stops as `diverged`, keeping what was logged so far, when the loss or the gradient
norm becomes non-finite, or when the gradient the optimizer would apply (after clipping)
has a norm above `max_grad_norm`. The bound is on the applied gradient, not the pre-clip
one: taming a huge pre-clip norm is exactly what clipping is for.

A run that reaches the end of its budget unsolved keeps its state there, after that step's
evaluation (`RunRecord.at_budget`): a run still improving is continued from it to a larger
budget (harness/lifecycle/runs.py), stepping on exactly as a run given that budget from the
start would, without evaluating its last step again.

Between boundaries (the steps that log, evaluate, run the diagnostics or checkpoint, and the
last) the driver reads nothing back from the device: on a GPU a read waits for its queue to
drain. The steps' audits are read together at the boundary and decided there in order, as
step by step (`Pending`).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from harness import names
from harness.clipping import Clipper, ClippingError, failure
from harness.diagnostics import GradProfile, diagnose
from harness.models import RecurrentModel
from harness.outcome import end_state
from harness.schema import EVAL_SEED_OFFSET, TrainConfig
from tasks import Batch, Task

log = logging.getLogger(__name__)


class Tracker(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


@dataclass
class MemoryTracker:
    """Keeps every logged metric in memory: `history[name] = [(step, value), ...]`."""

    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.history.setdefault(key, []).append((step, value))


@dataclass
class RunResult:
    status: str = names.UNSOLVED
    reason: str = ""
    steps_run: int = 0
    steps_to_solve: int | None = None
    final_eval_loss: float = math.nan
    final_eval_accuracy: float = math.nan
    best_eval_accuracy: float = 0.0
    grad_norm_pre_clip_max: float = 0.0
    grad_norm_post_clip_max: float = 0.0
    clip_rate_total: float = 0.0
    diverged_step: int | None = None
    wall_time_s: float = 0.0
    profiles: list[GradProfile] = field(default_factory=list)
    # variable-gap tasks: the final evaluation per gap, rows as names.EVAL_BY_GAP_COLUMNS
    eval_by_gap: list[tuple[int, int, float, float]] = field(default_factory=list)
    # every evaluation: (step, eval loss / chance loss); the end state is read from it
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    end_state: str = ""  # one of names.END_STATES, set when the run finishes
    success_criterion: str = ""  # the task's rule for solved, e.g. `eval accuracy >= 0.99`
    parameter_count: int = 0  # the model's, set when the run finishes

    def summary_metrics(self) -> dict[str, float]:
        """The single-point metrics logged at the end of a run."""
        metrics = {
            names.FINAL_EVAL_LOSS: self.final_eval_loss,
            names.FINAL_EVAL_ACCURACY: self.final_eval_accuracy,
            names.BEST_EVAL_ACCURACY: self.best_eval_accuracy,
            names.STEPS_RUN: float(self.steps_run),
            names.WALL_TIME_S: self.wall_time_s,
            names.GRAD_NORM_PRE_CLIP_MAX: self.grad_norm_pre_clip_max,
            names.GRAD_NORM_POST_CLIP_MAX: self.grad_norm_post_clip_max,
            names.CLIP_RATE_TOTAL: self.clip_rate_total,
            names.PARAMETER_COUNT: float(self.parameter_count),
        }
        if self.steps_to_solve is not None:
            metrics[names.STEPS_TO_SOLVE] = float(self.steps_to_solve)
        if self.diverged_step is not None:
            metrics[names.DIVERGED_STEP] = float(self.diverged_step)
        return metrics


@dataclass
class Checkpointing:
    """Save the loop's whole state every `every` steps; resume from `state` if given.

    The state holds the model, the optimizer, the training data generator's RNG state, the
    step, the metric window and the result so far, so a resumed run continues the same data
    stream and ends bit for bit where an uninterrupted one would (on CPU, same threads).
    `stop_requested` (a stop signal arrived) also saves, at the end of the current step.
    """

    every: int
    save: Callable[[dict[str, Any]], None]
    state: dict[str, Any] | None = None
    stop_requested: Callable[[], bool] = lambda: False


def data_generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """Training and evaluation streams from disjoint seeds (seed and seed + offset)."""
    train = torch.Generator().manual_seed(seed)
    evaluation = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
    return train, evaluation


# How many evaluation sets a process keeps (`evaluation_set`): a sweep's worker runs config
# after config of a few tasks and seeds; at gap 640 one set of the copy task is 7 MB.
EVALUATION_SETS_KEPT = 8
_evaluation_sets: OrderedDict[tuple[Any, ...], Batch] = OrderedDict()


def evaluation_set(task: Task, size: int, seed: int) -> Batch:
    """A run's held-out batch: the first `size` sequences of its evaluation stream (seed +
    offset, `data_generators`), on the CPU. Built once per task config, size and seed in a
    process (the runs of a sweep that differ in model, learning rate or clipping share it)
    and never changed by its users; the last EVALUATION_SETS_KEPT are kept."""
    key = (task.name, tuple(sorted(task.config.params().items())), size, seed)
    if key in _evaluation_sets:
        _evaluation_sets.move_to_end(key)
        return _evaluation_sets[key]
    _, evaluation = data_generators(seed)
    batch = _evaluation_sets[key] = task.sample(size, evaluation, split="eval")
    while len(_evaluation_sets) > EVALUATION_SETS_KEPT:
        _evaluation_sets.popitem(last=False)
    return batch


class Evaluator:
    """Loss and accuracy on a fixed held-out batch, normalized by the task's chance loss."""

    def __init__(self, task: Task, batch: Batch) -> None:
        self.task = task
        self.batch = batch

    @torch.no_grad()
    def outputs(self, model: RecurrentModel) -> torch.Tensor:
        was_training = model.training
        model.eval()
        outputs = model(self.batch.inputs)
        model.train(was_training)
        return outputs

    def __call__(self, model: RecurrentModel) -> dict[str, float]:
        outputs = self.outputs(model)
        loss = float(self.task.loss(outputs, self.batch))
        return {
            names.EVAL_LOSS: loss,
            names.EVAL_ACCURACY: float(self.task.accuracy(outputs, self.batch)),
            names.EVAL_NORMALIZED_LOSS: loss / self.task.chance.loss,
        }

    def by_gap(self, model: RecurrentModel) -> list[tuple[int, int, float, float]]:
        """Per sequence gap of the batch: (gap, sequences, loss, accuracy), gaps ascending."""
        outputs = self.outputs(model)
        assert self.batch.gaps is not None, "the task's batches carry no per-sequence gaps"
        rows = []
        for gap in self.batch.gaps.unique().tolist():  # unique() sorts
            index = self.batch.gaps == gap
            part = self.batch.rows(index)
            rows.append((gap, int(index.sum()), float(self.task.loss(outputs[index], part)),
                         float(self.task.accuracy(outputs[index], part))))
        return rows


class RunRecord:
    """One run's bookkeeping, whoever takes its steps: its data streams, evaluations,
    diagnostics, metric windows, divergence checks, result and checkpoint state.

    `drive` keeps one per run it trains, one or K at a time, so a batched member is decided,
    logged and checkpointed exactly as a separate run is. `name` prefixes the progress lines,
    which interleave when jobs run in parallel. `checkpointing`: where and how often its
    checkpoints go (None: never).
    """

    def __init__(self, task: Task, cfg: TrainConfig, tracker: Tracker, seed: int,
                 name: str = "run", checkpointing: Checkpointing | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.task, self.cfg, self.tracker, self.name = task, cfg, tracker, name
        self.checkpointing = checkpointing
        self.device = torch.device(device)
        self.train_gen, _ = data_generators(seed)
        eval_batch = evaluation_set(task, cfg.eval_batch_size, seed)
        self.evaluate = Evaluator(task, eval_batch.to(self.device))
        self.profile_batch = Batch(*(t[: cfg.profile_batch_size] for t in (
            eval_batch.inputs, eval_batch.targets, eval_batch.mask))).to(self.device)
        self.profile_every = cfg.profile_every or cfg.eval_every
        self.result = RunResult(success_criterion=task.success.describe(cfg.solve_threshold))
        self.window = self.empty_window()
        self.fired_total = 0
        self.step = 0
        self.begun: int | None = None  # the step whose evaluation and diagnostics have run
        self.stopped = False  # solved or diverged: no more steps
        # Its state at the end of its budget, once its evaluation there ran and before `finish`
        # (None: it stopped before): what a continuation to a larger budget resumes from.
        self.at_budget: dict[str, Any] | None = None
        self.final_model: RecurrentModel | None = None  # the model `finish` ended it with
        self.elapsed = 0.0  # seconds spent on this run before this process (a resumed run's)
        self.seconds = 0.0  # seconds spent on it in this process (its share of a batch's)

    def sample(self) -> Batch:
        """The next training batch: generated on the CPU from the run's own stream (the same
        data on every device), moved to the run's device in one transfer."""
        return self.task.sample(self.cfg.batch_size, self.train_gen).to(self.device)

    @staticmethod
    def empty_window() -> dict[str, float]:
        return {"loss": 0.0, "pre": 0.0, "post": 0.0, "fired": 0.0, "n": 0}

    def due(self, step: int) -> bool:
        """Whether step `step` begins with diagnostics or an evaluation."""
        return (self.profile_every > 0 and step % self.profile_every == 0) or \
            step % self.cfg.eval_every == 0

    def begin_step(self, model: RecurrentModel, step: int) -> bool:
        """Diagnostics and evaluation due at `step`; True when the evaluation ends the run.
        Once per step: a run continued from the end of its budget (`at_budget`) has had them."""
        if self.begun == step:
            return self.stopped
        if self.profile_every > 0 and step % self.profile_every == 0:
            self.diagnose(model, step)
        if step % self.cfg.eval_every == 0 and self.run_eval(model, step):
            self.stopped = True
        self.begun = step
        return self.stopped

    def diagnose(self, model: RecurrentModel, step: int) -> None:
        diagnosis = diagnose(model, self.task, self.profile_batch, step)
        self.result.profiles.extend(diagnosis.profiles)
        self.tracker.log_metrics(diagnosis.metrics, step)

    def diverge(self, step: int, reason: str) -> None:
        result = self.result
        result.status, result.reason = names.DIVERGED, f"{reason} at step {step}"
        result.diverged_step = step
        self.stopped = True
        log.warning("%s  diverged: %s", self.name, result.reason)

    def run_eval(self, model: RecurrentModel, step: int) -> bool:
        """Evaluate; True when the run is over (solved, or a non-finite eval loss)."""
        cfg, result = self.cfg, self.result
        metrics = self.evaluate(model)
        self.tracker.log_metrics(metrics, step)
        result.final_eval_loss = metrics[names.EVAL_LOSS]
        result.final_eval_accuracy = metrics[names.EVAL_ACCURACY]
        result.best_eval_accuracy = max(result.best_eval_accuracy, result.final_eval_accuracy)
        result.eval_history.append((step, metrics[names.EVAL_NORMALIZED_LOSS]))
        log.info("%s  step %d/%d  eval_loss %.4f  eval_accuracy %.3f  (chance %.3f)",
                 self.name, step, cfg.steps, metrics[names.EVAL_LOSS],
                 metrics[names.EVAL_ACCURACY], self.task.chance.accuracy)
        if not math.isfinite(metrics[names.EVAL_LOSS]):
            self.diverge(step, "non-finite eval loss")
            return True
        success = self.task.success
        if success.met(result.final_eval_accuracy, metrics[names.EVAL_NORMALIZED_LOSS],
                       cfg.solve_threshold):
            result.status, result.steps_to_solve = names.SOLVED, step
            result.reason = (f"{success.describe(cfg.solve_threshold)} at step {step}: "
                             f"accuracy {result.final_eval_accuracy:.3f}, loss / chance "
                             f"{metrics[names.EVAL_NORMALIZED_LOSS]:.4f}")
            return True
        return False

    def diverges(self, step: int, loss: float, pre: float, post: float,
                 guarded: bool = False) -> bool:
        """After backward and clipping, before the update: True (and the run diverged) when
        the loss or the gradient norm is non-finite or the applied norm is too large. A
        non-finite gradient the NaN guard replaced (`guarded`) is what the guard is for. The
        diverging step's norms count in the run's maxima (an inf stays inf; a NaN adds
        nothing)."""
        result = self.result
        if not math.isnan(pre):
            result.grad_norm_pre_clip_max = max(result.grad_norm_pre_clip_max, pre)
        if not math.isnan(post):
            result.grad_norm_post_clip_max = max(result.grad_norm_post_clip_max, post)
        if not (math.isfinite(loss) and (guarded or math.isfinite(pre))):
            self.diverge(step, "non-finite " + ("loss" if not math.isfinite(loss)
                                                else "gradient norm"))
            return True
        if post > self.cfg.max_grad_norm:
            self.diverge(step, f"applied gradient norm {post:.3g} > train.max_grad_norm "
                               f"{self.cfg.max_grad_norm:g}")
            return True
        return False

    def end_step(self, step: int, loss: float, pre: float, post: float, fired: bool) -> None:
        """After the update that made `step`: maxima, clip counts and the logged windows."""
        result, window = self.result, self.window
        self.step = step
        result.grad_norm_pre_clip_max = max(result.grad_norm_pre_clip_max, pre)
        result.grad_norm_post_clip_max = max(result.grad_norm_post_clip_max, post)
        self.fired_total += int(fired)
        window["loss"] += loss
        window["pre"] += pre
        window["post"] += post
        window["fired"] += float(fired)
        window["n"] += 1
        if step % self.cfg.log_every == 0 or step == self.cfg.steps:
            n = window["n"]
            self.tracker.log_metrics({names.TRAIN_LOSS: window["loss"] / n,
                                      names.GRAD_NORM_PRE_CLIP: window["pre"] / n,
                                      names.GRAD_NORM_POST_CLIP: window["post"] / n,
                                      names.CLIP_RATE: window["fired"] / n}, step)
            self.window = self.empty_window()

    def finish(self, model: RecurrentModel, step: int) -> RunResult:
        """The end of the run at `step`: the final evaluation and diagnostics if not done
        yet, the evaluation per gap, the totals."""
        result = self.result
        self.final_model = model
        if not self.stopped and step % self.cfg.eval_every != 0:
            self.run_eval(model, step)
        if self.profile_every > 0 and result.status != names.DIVERGED and \
                result.profiles[-1].step != step:
            self.diagnose(model, step)
        if self.task.variable_gap:
            result.eval_by_gap = self.evaluate.by_gap(model)
        result.steps_run = step
        result.parameter_count = sum(p.numel() for p in model.parameters())
        result.clip_rate_total = self.fired_total / step if step else 0.0
        result.wall_time_s = self.elapsed + self.seconds
        result.end_state = end_state(result.status, result.eval_history)
        return result

    def snapshot(self, model_state: dict[str, Any],
                 optimizer_state: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint of this run after `self.step` steps (Checkpointing's format), with
        the budget it trains to and the last step whose evaluation ran (`begin_step`)."""
        return {"step": self.step, "result": copy.deepcopy(self.result),
                "window": dict(self.window), "fired_total": self.fired_total,
                "model": copy.deepcopy(model_state), "optimizer": copy.deepcopy(optimizer_state),
                "train_gen": self.train_gen.get_state(),
                "elapsed": self.elapsed + self.seconds, "budget": self.cfg.steps,
                "begun": self.begun}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint (the caller loads its model and optimizer states, e.g.
        with `resume`)."""
        self.step, self.result, self.window = state["step"], state["result"], state["window"]
        self.fired_total, self.elapsed = state["fired_total"], state["elapsed"]
        self.begun = state.get("begun")  # absent from checkpoints older than continuations
        self.train_gen.set_state(state["train_gen"])
        log.info("%s  resumed from its checkpoint at step %d", self.name, self.step)


class StepAudit(NamedTuple):
    """One training step of the stepper's K runs, before the update: [K] tensors on the
    device, read by the driver only when it settles its steps (`Pending`)."""

    loss: Tensor
    pre: Tensor  # global gradient norm before clipping
    post: Tensor  # ... after clipping (what the optimizer would apply)
    fired: Tensor  # bool: clipping changed the gradient
    failed: Tensor  # bool: clipping left the gradient above its threshold (ClippingError)
    guarded: Tensor  # bool: the NaN guard replaced the gradient (clip.nan_guard)


class Stepper(Protocol):
    """What takes the training steps of K runs (K = 1: `FusedStepper`)."""

    def model(self, k: int) -> RecurrentModel:
        """Run k's model as a separate run holds it (for evaluation and diagnostics)."""
        ...

    def backward(self, batches: Sequence[Batch]) -> StepAudit:
        """Forward, loss, backward and clipping, run k on batches[k]; no update yet."""
        ...

    def update(self) -> None:
        """The optimizer step of every run."""
        ...

    def save(self) -> Any:
        """Every run's weights and optimizer state, on the device, for `load`."""
        ...

    def load(self, saved: Any) -> None:
        """Back to the state `save` returned."""
        ...

    def states(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Every run's (model state, optimizer state) in a separate run's format."""
        ...

    def keep(self, indices: Sequence[int]) -> Stepper:
        """A stepper of the runs at `indices` only (the others stopped)."""
        ...


class FusedStepper:
    """One run: its model (torch's fused module), its optimizer and its clipper."""

    def __init__(self, model: RecurrentModel, optimizer: torch.optim.Optimizer,
                 clipper: Clipper, task: Task) -> None:
        self.net, self.optimizer, self.clipper, self.task = model, optimizer, clipper, task
        self.params = [p for p in model.parameters() if p.requires_grad]
        # what the NaN guard replaces by 0.02 W (harness/clipping.py)
        self.recurrent = model.recurrent_parameters()

    def model(self, k: int) -> RecurrentModel:
        return self.net

    def backward(self, batches: Sequence[Batch]) -> StepAudit:
        (batch,) = batches
        loss = self.task.loss(self.net(batch.inputs), batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.clipper(self.params, recurrent=self.recurrent)
        return StepAudit(loss.detach().reshape(1), *(t.reshape(1) for t in clip))

    def update(self) -> None:
        self.optimizer.step()

    def save(self) -> Any:
        return ([p.detach().clone() for p in self.params],
                {p: clone_state(state) for p, state in self.optimizer.state.items()})

    def load(self, saved: Any) -> None:
        weights, states = saved
        with torch.no_grad():
            for param, value in zip(self.params, weights, strict=True):
                param.copy_(value)
        self.optimizer.state.clear()
        self.optimizer.state.update({p: clone_state(state) for p, state in states.items()})

    def states(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(self.net.state_dict(), self.optimizer.state_dict())]

    def keep(self, indices: Sequence[int]) -> FusedStepper:
        assert list(indices) == [0], "a fused stepper holds one run"
        return self


def clone_state(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of one parameter's optimizer state, its tensors cloned on their devices."""
    return {key: value.clone() if isinstance(value, Tensor) else copy.deepcopy(value)
            for key, value in state.items()}


class Pending:
    """The steps taken since the driver last read the audits: each step's audit and batches,
    and the stepper's state before the first of them.

    The driver does not read a step's audit before the next step (a read waits for a GPU's
    queue to drain: a host sync per step). It reads them all at once at the next *boundary*
    (a logging, evaluation, diagnostics or checkpoint step, the last step, or a stop signal),
    then decides each run's steps in order, as it would have step by step: the first step
    whose loss or gradient is non-finite, or whose applied gradient is too large, ends the
    run there. The updates after it were taken, but do not count: the run's result, logs and
    final model are those of that step, the model rebuilt by replaying the steps from the
    saved state (`replay`; on the CPU bit for bit, tests/test_host_syncs.py). Runs stepped
    together are independent (a batched member's non-finite values stay in its slices).
    """

    def __init__(self, stepper: Stepper, step: int) -> None:
        self.saved = stepper.save()
        self.first = step
        self.audits: list[StepAudit] = []
        self.batches: list[list[Batch]] = []

    def add(self, audit: StepAudit, batches: list[Batch]) -> None:
        self.audits.append(audit)
        self.batches.append(batches)

    def rows(self) -> list[list[tuple[float, float, float, bool, bool, bool]]]:
        """Per step, per run: (loss, pre, post, fired, failed, guarded) as Python numbers;
        the one host read of these steps."""
        fields = [torch.stack(field).double() for field in zip(*self.audits, strict=True)]
        loss, pre, post, fired, failed, guarded = torch.stack(fields).tolist()  # [steps][K]
        return [[(values[0], values[1], values[2], bool(values[3]), bool(values[4]),
                  bool(values[5])) for values in zip(*row, strict=True)]
                for row in zip(loss, pre, post, fired, failed, guarded, strict=True)]

    def replay(self, stepper: Stepper, wanted: dict[int, int],
               runs: int) -> dict[int, RecurrentModel]:
        """Run k's model as it was at step wanted[k] (before that step's update), for every
        k of `wanted`, rebuilt from the saved state and these steps' batches. The stepper is
        left as it was, unless all its `runs` are wanted: then it stays where the replay
        ended, so a fused run's own model ends at the step it diverged, as it would have."""
        now = stepper.save()
        stepper.load(self.saved)
        models: dict[int, RecurrentModel] = {}
        for offset, batches in enumerate(self.batches):
            for k, step in wanted.items():
                if step == self.first + offset:
                    models[k] = stepper.model(k).clone()
            if len(models) == len(wanted):
                break
            stepper.backward(batches)
            stepper.update()
        if len(wanted) < runs:
            stepper.load(now)
        return models


def drive(stepper: Stepper, records: Sequence[RunRecord], cfg: TrainConfig,
          checkpointed: Callable[[int], None] = lambda step: None) -> list[RunResult]:
    """Train the runs of `records` (run k stepped by `stepper` as its k-th) for at most
    `cfg.steps` steps from the step they are at; return how each ended, in order.

    Each run is evaluated, diagnosed, stopped (solved, diverged), logged and checkpointed by
    its own record; a run that stops leaves the stepper, the others go on. Between boundaries
    the loop reads nothing back from the device (`Pending`): the steps' audits are read and
    settled at the boundary, before its evaluations and checkpoints. Checkpoints are
    written for every running run at once, then `checkpointed(step)` runs (the caller raises
    there to stop after a stop signal). A run's `seconds` grow by its share of each iteration:
    the iteration's time divided among the runs it trained.
    """
    step = records[0].step
    if any(r.step != step for r in records):
        raise ValueError("runs stepped together must start at the same step")
    active = list(records)
    results: dict[int, RunResult] = {}

    def saving() -> Checkpointing | None:
        """The running runs' checkpointing (one cadence for all), None when none is saved."""
        return next((r.checkpointing for r in active if r.checkpointing is not None), None)
    def finish(k: int, model: RecurrentModel, at: int, tick: float) -> None:
        record = active[k]  # its share of this iteration so far, too (it leaves after it)
        record.seconds += (time.perf_counter() - tick) / len(active)
        results[id(record)] = record.finish(model, at)

    def saves(step: int) -> bool:
        checkpointing = saving()
        return checkpointing is not None and step < cfg.steps and (
            step % checkpointing.every == 0 or checkpointing.stop_requested())

    def boundary(step: int) -> bool:
        return (step % cfg.log_every == 0 or step == cfg.steps or saves(step)
                or any(record.due(step) for record in active))

    def settle(pending: Pending, tick: float) -> None:
        """Decide the pending steps of every run, in order (see `Pending`)."""
        diverged: dict[int, int] = {}
        for offset, row in enumerate(pending.rows()):
            at = pending.first + offset
            for k, (record, (loss, pre, post, fired, failed, guarded)) in enumerate(
                    zip(active, row, strict=True)):
                if record.stopped:
                    continue
                if failed:
                    raise ClippingError(f"{record.name}, step {at}: " + failure(pre, post))
                if record.diverges(at, loss, pre, post, guarded):
                    diverged[k] = at
                else:
                    record.end_step(at + 1, loss, pre, post, fired)
        if diverged:
            models = pending.replay(stepper, diverged, len(active))
            for k, at in diverged.items():  # its weights before the update, as alone
                finish(k, models[k], at, tick)

    pending: Pending | None = None
    while active:
        tick = time.perf_counter()
        states = None
        for k, record in enumerate(active):
            if record.due(step) or step == cfg.steps:
                model = stepper.model(k)
                if not record.begin_step(model, step) and step == cfg.steps:
                    states = states or stepper.states()
                    record.at_budget = record.snapshot(*states[k])
                if record.stopped or step == cfg.steps:
                    finish(k, model, step, tick)
        if step == cfg.steps:
            share(active, time.perf_counter() - tick)
            break
        stepper = drop_stopped(stepper, active)
        if not active:
            break
        if pending is None:
            pending = Pending(stepper, step)
        batches = [record.sample() for record in active]
        pending.add(stepper.backward(batches), batches)
        stepper.update()
        step += 1
        if not boundary(step):
            share(active, time.perf_counter() - tick)
            continue
        settle(pending, tick)
        pending = None
        share(active, time.perf_counter() - tick)
        stepper = drop_stopped(stepper, active)
        if saves(step):
            tick = time.perf_counter()
            for record, (model_state, optimizer_state) in zip(active, stepper.states(),
                                                              strict=True):
                assert record.checkpointing is not None
                record.checkpointing.save(record.snapshot(model_state, optimizer_state))
            share(active, time.perf_counter() - tick)
            checkpointed(step)
    return [results[id(r)] for r in records]


def share(records: Sequence[RunRecord], seconds: float) -> None:
    for record in records:
        record.seconds += seconds / len(records)


def drop_stopped(stepper: Stepper, active: list[RunRecord]) -> Stepper:
    """Remove the stopped runs from `active` (in place) and from the stepper."""
    keep = [k for k, record in enumerate(active) if not record.stopped]
    if len(keep) == len(active):
        return stepper
    active[:] = [active[k] for k in keep]
    return stepper.keep(keep) if keep else stepper


def resume(record: RunRecord, model: RecurrentModel, state: dict[str, Any] | None) -> None:
    """Continue `record` and `model` from a checkpoint's state (None: a fresh run); the
    optimizer's state (`state["optimizer"]`) is the caller's to load."""
    if state is not None:
        model.load_state_dict(state["model"])
        record.restore(state)


def train_loop(task: Task, model: RecurrentModel, optimizer: torch.optim.Optimizer,
               clipper: Clipper, cfg: TrainConfig, tracker: Tracker, seed: int,
               name: str = "run", checkpointing: Checkpointing | None = None) -> RunResult:
    """Train one run of `model` on `task` (`drive` over a `FusedStepper`), on the model's
    device, resuming from `checkpointing.state` when it holds one; return how it ended."""
    device = next(model.parameters()).device
    record = RunRecord(task, cfg, tracker, seed, name, checkpointing, device)
    state = checkpointing.state if checkpointing is not None else None
    resume(record, model, state)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    return drive(FusedStepper(model, optimizer, clipper, task), [record], cfg)[0]
