"""The training loop learns, stops when solved, and stops cleanly on divergence."""

from __future__ import annotations

import math

import torch

import tasks
from harness import names
from harness.clipping import Clipper
from harness.loop import MemoryTracker, data_generators, train_loop
from harness.models import RecurrentModel
from harness.optimizers import make_optimizer
from harness.schema import OptimConfig, OptimName, TrainConfig


def run(task: tasks.Task, cell: str = "lstm", lr: float = 1e-2, clip: str = "none",
        threshold: float = 1.0, **train: int | float) -> tuple:
    torch.manual_seed(0)
    model = RecurrentModel(cell, task.input_size, task.output_size, 16)
    optimizer = make_optimizer(model, OptimConfig(OptimName.adam, lr))
    tracker = MemoryTracker()
    cfg = TrainConfig(**{"steps": 300, "eval_every": 25, "log_every": 5, "batch_size": 16,
                         "eval_batch_size": 128, "profile_batch_size": 4, **train})
    result = train_loop(task, model, optimizer, Clipper(clip, threshold), cfg, tracker, seed=0)
    return result, tracker


def test_learns_a_short_delay_and_stops_when_solved() -> None:
    task = tasks.make_task("delayed_recall", gap=2)
    result, tracker = run(task)
    assert result.status == names.SOLVED
    assert result.steps_to_solve == result.steps_run < 300
    assert result.steps_to_solve % 25 == 0
    accuracy = tracker.history[names.EVAL_ACCURACY]
    assert accuracy[0][0] == 0 and accuracy[-1] == (result.steps_run, result.final_eval_accuracy)
    assert result.final_eval_accuracy >= 0.99 > accuracy[0][1]
    # profiles at step 0 and at every evaluation
    assert [p.step for p in result.profiles] == [s for s, _ in accuracy]


def test_budget_run_logs_every_window_and_ends_with_eval_and_profile() -> None:
    task = tasks.make_task("copy", gap=30)
    result, tracker = run(task, steps=37, eval_every=10, lr=1e-4)
    assert result.status == names.UNSOLVED and result.steps_run == 37
    assert [s for s, _ in tracker.history[names.TRAIN_LOSS]] == [5, 10, 15, 20, 25, 30, 35, 37]
    assert [s for s, _ in tracker.history[names.EVAL_LOSS]] == [0, 10, 20, 30, 37]
    assert result.profiles[-1].step == 37
    normalized = dict(tracker.history[names.EVAL_NORMALIZED_LOSS])
    loss = dict(tracker.history[names.EVAL_LOSS])
    assert math.isclose(normalized[37], loss[37] / task.chance.loss)


def test_clip_rate_and_pre_clip_norm_are_recorded() -> None:
    task = tasks.make_task("adding", gap=20)
    result, tracker = run(task, cell="rnn", steps=20, clip="norm", threshold=1e-6)
    rates = [v for _, v in tracker.history[names.CLIP_RATE]]
    assert rates and all(rate == 1.0 for rate in rates)  # a tiny threshold clips every step
    assert result.clip_rate_total == 1.0
    assert result.grad_norm_pre_clip_max > 1e-6


def test_applied_gradient_above_the_bound_diverges_unless_clipped() -> None:
    task = tasks.make_task("adding", gap=20)
    unclipped, tracker = run(task, cell="rnn", steps=20, max_grad_norm=1e-6)
    assert unclipped.status == names.DIVERGED and unclipped.diverged_step == 0
    assert "train.max_grad_norm" in unclipped.reason
    assert unclipped.summary_metrics()[names.DIVERGED_STEP] == 0
    clipped, tracker = run(task, cell="rnn", steps=20, max_grad_norm=1e-6, clip="norm",
                           threshold=1e-7)
    assert clipped.status != names.DIVERGED and clipped.steps_run == 20
    post = [v for _, v in tracker.history[names.GRAD_NORM_POST_CLIP]]
    pre = [v for _, v in tracker.history[names.GRAD_NORM_PRE_CLIP]]
    assert all(p <= 1e-7 * (1 + 1e-4) for p in post) and all(p > 1e-7 for p in pre)
    assert clipped.grad_norm_post_clip_max <= 1e-7 * (1 + 1e-4)


def test_diagnostics_are_logged_at_every_profile_step() -> None:
    task = tasks.make_task("delayed_recall", gap=6)
    result, tracker = run(task, cell="lstm", steps=40, eval_every=20, profile_every=10,
                          lr=1e-4)
    expected = [0, 10, 20, 30, 40]
    for key in (names.GRAD_DECAY_RATE, names.GRAD_REACH, names.FORGET_GATE_MEAN,
                names.block_key(names.SPECTRAL_RADIUS, 0, "f")):
        assert [s for s, _ in tracker.history[key]] == expected, key
    assert sorted({p.step for p in result.profiles}) == expected


def test_non_finite_loss_marks_the_run_diverged_and_keeps_its_log() -> None:
    task = tasks.make_task("adding", gap=20)
    torch.manual_seed(0)
    model = RecurrentModel("rnn", task.input_size, task.output_size, 8, activation="relu")
    with torch.no_grad():
        model.rnn.weight_hh_l0.mul_(4.0)  # finite at first, explodes once SGD takes big steps
    tracker = MemoryTracker()
    cfg = TrainConfig(steps=50, eval_every=1000, log_every=1, batch_size=4, eval_batch_size=8,
                      profile_batch_size=2)
    result = train_loop(task, model, make_optimizer(model, OptimConfig(OptimName.sgd, 10.0)),
                        Clipper("none", 1.0), cfg, tracker, seed=0)
    assert result.status == names.DIVERGED
    assert "non-finite" in result.reason and 0 < result.steps_run < 50
    assert len(tracker.history[names.TRAIN_LOSS]) == result.steps_run
    assert all(math.isfinite(v) for _, v in tracker.history[names.TRAIN_LOSS])


def test_train_and_eval_streams_differ_and_repeat() -> None:
    task = tasks.make_task("delayed_recall", gap=5)
    train_a, eval_a = data_generators(7)
    train_b, _ = data_generators(7)
    first = task.sample(64, train_a)
    assert torch.equal(first.inputs, task.sample(64, train_b).inputs)
    assert not torch.equal(first.inputs, task.sample(64, eval_a).inputs)
