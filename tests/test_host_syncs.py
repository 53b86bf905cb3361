"""Between its boundaries the training driver reads nothing back from the device.

A boundary is a step that logs, evaluates, runs the diagnostics or saves a checkpoint, and
the last step. On a GPU, every read of a device value waits for the GPU's queue; one read per
step would make every step wait for the last. The driver reads the steps' audits at the next
boundary instead (`harness.loop.Pending`) and decides them in order there, so a run that
diverges between boundaries still ends at the step it diverged, with that step's weights.

No GPU is needed to check this: `HostReads` (tests/helpers/host_reads.py) records the calls
that read a device value on a GPU, here on the CPU. The CUDA path's own check is in
tests/test_device.py.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from helpers.batched import Spec
from helpers.host_reads import host_reads
from torch import nn

import tasks
from harness import names
from harness.batched import BatchedStepper
from harness.clipping import Clipper, ClippingError
from harness.loop import FusedStepper, MemoryTracker, RunRecord, StepAudit, drive
from harness.models import RecurrentModel
from harness.optimizers import make_optimizer
from harness.schema import ClipConfig, ClipMode, OptimConfig, OptimName, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CFG = TrainConfig(steps=40, eval_every=20, log_every=10, profile_every=20, batch_size=8,
                  eval_batch_size=32, profile_batch_size=4)
BOUNDARIES = {0, 10, 20, 30, 40}


def fused_run(task: tasks.Task, cell: str, clip: Clipper, cfg: TrainConfig = CFG,
              stepper: type[FusedStepper] = FusedStepper) -> tuple[RunRecord, RecurrentModel]:
    torch.manual_seed(0)
    model = RecurrentModel(cell, task.input_size, task.output_size, 16)
    record = RunRecord(task, cfg, MemoryTracker(), seed=0)
    optimizer = make_optimizer(model, OptimConfig(OptimName.adam, 1e-2))
    drive(stepper(model, optimizer, clip, task), [record], cfg)
    return record, model


@pytest.mark.parametrize(("task", "cell", "clip"), [
    ("delayed_recall", "lstm", Clipper("norm", 0.5)),  # cross-entropy on masked positions
    ("adding", "gru", Clipper("value", 0.05)),  # squared error on masked positions
    ("copy", "rnn", Clipper("none", 1.0)),
])
def test_a_fused_run_reads_the_device_only_at_its_boundaries(
        monkeypatch: pytest.MonkeyPatch, task: str, cell: str, clip: Clipper) -> None:
    with host_reads(monkeypatch) as reads:
        record, _ = fused_run(tasks.make_task(task, gap=8), cell, clip)
    assert record.result.steps_run == CFG.steps
    assert reads.at() <= BOUNDARIES, sorted(set(reads.events))
    assert {10, 30} <= reads.at()  # the audits' one read at each logging step


def test_a_batched_job_reads_the_device_only_at_its_boundaries(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Members that differ in gap (left padding), activation, clipping mode and lr, through
    the per-time-step path a GPU takes (`eager`; the C++ recurrence is CPU code)."""
    specs = [Spec(0, clip=ClipConfig(ClipMode.norm, 0.5)),
             Spec(1, activation="relu", clip=ClipConfig(ClipMode.value, 0.01),
                  task=tasks.make_task("delayed_recall", gap=4, filler="noise"),
                  optim=OptimConfig(OptimName.adam, 1e-3)),
             Spec(2, clip=ClipConfig(ClipMode.none, 1.0))]
    records = [RunRecord(s.task, CFG, MemoryTracker(), s.seed) for s in specs]
    with host_reads(monkeypatch) as reads:
        stepper = BatchedStepper([s.model() for s in specs], [s.task for s in specs],
                                 [s.optim for s in specs], [s.clip for s in specs],
                                 backend="eager")
        drive(stepper, records, CFG)
    assert [r.result.steps_run for r in records] == [CFG.steps] * 3
    assert reads.at() <= BOUNDARIES, sorted(set(reads.events))
    assert {10, 30} <= reads.at()


class ReadingStepper(FusedStepper):
    """A stepper that reads its loss in every step, as the driver once did."""

    def backward(self, batches: list[tasks.Batch]) -> StepAudit:
        audit = super().backward(batches)
        math.isfinite(float(audit.loss))
        return audit


def test_the_recorder_sees_a_read_in_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    with host_reads(monkeypatch) as reads:
        fused_run(tasks.make_task("delayed_recall", gap=8), "lstm", Clipper("none", 1.0),
                  stepper=ReadingStepper)
    assert set(range(CFG.steps)) <= reads.at()
    assert (13, "float") in reads.events


def poisoned_task(at: int | None) -> tasks.Task:
    """Delayed recall whose training batch of step `at` holds a NaN (None: never)."""
    task = tasks.make_task("delayed_recall", gap=8)
    sample, calls = task.sample, []

    def sample_poisoned(*args: object, **kwargs: object) -> tasks.Batch:
        batch = sample(*args, **kwargs)  # type: ignore[arg-type]
        if kwargs.get("split", "train") == "train":
            if len(calls) == at:
                batch.inputs[0, 0, 0] = math.nan
            calls.append(1)
        return batch

    task.sample = sample_poisoned  # type: ignore[method-assign]
    return task


def test_a_run_that_diverges_between_boundaries_ends_at_that_step() -> None:
    """The steps after the divergence were taken before the driver read it; they do not count:
    the result, the logs and the weights are those of a run that stopped at that step."""
    cfg = dataclasses.replace(CFG, steps=30)
    poisoned = 17  # the training batch of step 17 (between the boundaries 10 and 20) holds a NaN

    def run(steps: int) -> tuple[RecurrentModel, RunRecord]:
        task = poisoned_task(poisoned if steps > poisoned else None)
        record, model = fused_run(task, "lstm", Clipper("norm", 0.5),
                                  dataclasses.replace(cfg, steps=steps))
        return model, record

    model, record = run(cfg.steps)
    result = record.result
    assert result.status == names.DIVERGED and result.reason == "non-finite loss at step 17"
    assert result.steps_run == result.diverged_step == poisoned
    reference, theirs = run(poisoned)  # the same run, told to stop after 17 steps
    assert theirs.result.status == names.UNSOLVED
    for ours in (model, record.final_model):  # the run's model, as the driver ended it
        assert ours is not None
        for a, b in zip(ours.parameters(), reference.parameters(), strict=True):
            assert torch.isfinite(a).all() and torch.equal(a, b)
    losses = record.tracker.history[names.TRAIN_LOSS]  # type: ignore[attr-defined]
    assert [s for s, _ in losses] == [10]  # nothing logged past the divergence
    assert losses == theirs.tracker.history[names.TRAIN_LOSS][:1]  # type: ignore[attr-defined]


def test_batched_members_that_diverge_between_boundaries_end_at_their_steps() -> None:
    """Two members diverge at steps 13 and 17 (one window, 10-20), the third runs on: each
    diverged member ends with the weights of its own step, rebuilt by one replay, and the
    third is not disturbed."""
    cfg = dataclasses.replace(CFG, steps=30)
    poisoned = [13, 17, None]
    specs = [Spec(seed, "lstm", task=poisoned_task(at)) for seed, at in enumerate(poisoned)]
    records = [RunRecord(s.task, cfg, MemoryTracker(), s.seed) for s in specs]
    stepper = BatchedStepper([s.model() for s in specs], [s.task for s in specs],
                             [s.optim for s in specs], [s.clip for s in specs])
    drive(stepper, records, cfg)
    assert [r.result.steps_run for r in records] == [13, 17, 30]
    assert [r.result.status for r in records][:2] == [names.DIVERGED] * 2
    for spec, record, at in zip(specs, records, poisoned, strict=True):
        alone = RunRecord(spec.task if at is None else poisoned_task(None),
                          dataclasses.replace(cfg, steps=at or cfg.steps), MemoryTracker(),
                          spec.seed)
        model = spec.model()
        drive(FusedStepper(model, make_optimizer(model, spec.optim), Clipper.of(spec.clip),
                           alone.task), [alone], alone.cfg)
        assert record.final_model is not None
        for a, b in zip(record.final_model.parameters(), model.parameters(), strict=True):
            assert torch.isfinite(a).all()
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_clipping_that_fails_stops_training_with_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nn.utils, "clip_grad_norm_",
                        lambda params, max_norm: nn.utils.get_total_norm(
                            [p.grad for p in params]))
    with pytest.raises(ClippingError, match="run, step 0: clipping failed"):
        fused_run(tasks.make_task("delayed_recall", gap=8), "lstm", Clipper("norm", 1e-3))
