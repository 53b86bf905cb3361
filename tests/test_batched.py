"""Batched seeds: each member of a stacked model is the separate run with its seed."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import tasks
from harness import names
from harness.batched import (
    BatchedModel,
    BatchedTrainer,
    Member,
    build_member,
    clip_members,
    train_members,
)
from harness.clipping import Clipper
from harness.loop import (
    Checkpointing,
    MemoryTracker,
    RunRecord,
    RunResult,
    make_optimizer,
    train_loop,
)
from harness.models import RecurrentModel
from harness.schema import TrainConfig

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("rnn", "hard_tanh"), ("lstm", "tanh"), ("gru", "tanh")]
SEEDS = [0, 1, 2]
TASK = tasks.make_task("delayed_recall", gap=10, filler="noise")
# Full budget (threshold above 1), evaluation and diagnostics at 0, 10, 20, 30; every step logged.
CFG = TrainConfig(steps=30, batch_size=16, log_every=1, eval_every=10, eval_batch_size=64,
                  profile_batch_size=8, solve_threshold=1.5)
OPTIM = {"optim": "adam", "lr": 3e-3}
# Norm clipping at a threshold that fires on part of the steps (a third for the tanh RNN at
# seed 0), so a wrong per-member rescaling shows in the weights.
CLIP = {"clip_mode": "norm", "clip_threshold": 0.5}
NO_CLIP = {"clip_mode": "none", "clip_threshold": 1.0}
# float32: the bmm cell and the fused kernels round differently (other summation order and
# vectorization), by about one ulp per op. Measured over 40 to 50 such steps, the members differ
# from the separate runs by at most ~2.3e-7 relative in the losses and gradient norms (two
# ulps) and ~1e-6 absolute in the weights. 1e-5 is ~100 ulps: room for that rounding, yet far
# below the differences that a real mismatch makes (another seed, no clipping, a member's
# gradient mixed with another's: 1e-2 and more, checked below).
RTOL, ATOL = 1e-5, 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def separate_run(cell: str, activation: str, seed: int, cfg: TrainConfig = CFG,
                 checkpointing: Checkpointing | None = None, clip: dict | None = None,
                 ) -> tuple[RecurrentModel, MemoryTracker, RunResult]:
    """The harness's own loop on the fused model: what a separate run with `seed` does."""
    model = build_member(seed, cell, TASK, 16, activation=activation)
    tracker = MemoryTracker()
    result = train_loop(TASK, model, make_optimizer(model, OPTIM["optim"], OPTIM["lr"]),
                        Clipper(**{k.removeprefix("clip_"): v for k, v in (clip or CLIP).items()}),
                        cfg, tracker,
                        seed=seed, checkpointing=checkpointing)
    return model, tracker, result


def batched_run(cell: str, activation: str, seeds: list[int], cfg: TrainConfig = CFG,
                saves: dict[int, list[dict]] | None = None, every: int = 0,
                states: dict[int, dict] | None = None,
                clip: dict | None = None) -> list[tuple[Member, MemoryTracker,
                                                                     RunResult]]:
    """`train_members` on these seeds, each member with its own in-memory tracker;
    checkpoints every `every` steps go to `saves[seed]`; `states`: resume from these."""
    members, trackers = [], []
    for seed in seeds:
        tracker = MemoryTracker()
        record = RunRecord(TASK, cfg, tracker, seed)
        model = build_member(seed, cell, TASK, 16, activation=activation)
        state = (states or {}).get(seed)
        if state is not None:
            model.load_state_dict(state["model"])
            record.restore(state)
        checkpointing = None
        if every:
            assert saves is not None
            checkpointing = Checkpointing(every, saves.setdefault(seed, []).append)
        members.append(Member(model, record, state["optimizer"] if state else None,
                              checkpointing))
        trackers.append(tracker)
    results = train_members(TASK, cfg, members, **OPTIM, **(clip or CLIP))
    return list(zip(members, trackers, results, strict=True))


def values(tracker: MemoryTracker, key: str) -> torch.Tensor:
    return torch.tensor([v for _, v in tracker.history[key]], dtype=torch.float64)


def assert_same_run(ours: MemoryTracker, theirs: MemoryTracker, ours_result: RunResult,
                    theirs_result: RunResult) -> None:
    """Every metric at the same steps, equal to float32 rounding; the same ending."""
    assert set(ours.history) == set(theirs.history)
    for key, points in theirs.history.items():
        assert [s for s, _ in ours.history[key]] == [s for s, _ in points], key
        if key in (names.EVAL_ACCURACY, names.BEST_EVAL_ACCURACY):
            # One sequence of 64 may flip on a near-tie of the argmax: allow one.
            torch.testing.assert_close(values(ours, key), values(theirs, key), rtol=0,
                                       atol=1 / 64 + 1e-6, msg=key)
        elif key in (names.GRAD_DECAY_RATE, names.GRAD_REACH):
            torch.testing.assert_close(values(ours, key), values(theirs, key), rtol=1e-4,
                                       atol=1e-6, msg=key)
    for key in (names.TRAIN_LOSS, names.GRAD_NORM_PRE_CLIP, names.GRAD_NORM_POST_CLIP,
                names.EVAL_LOSS, names.CLIP_RATE):
        if key in theirs.history:
            torch.testing.assert_close(values(ours, key), values(theirs, key), rtol=RTOL,
                                       atol=0, msg=key)
    for field in ("status", "steps_run", "steps_to_solve", "diverged_step"):
        assert getattr(ours_result, field) == getattr(theirs_result, field), field
    assert ours_result.clip_rate_total == pytest.approx(theirs_result.clip_rate_total)
    assert len(ours_result.profiles) == len(theirs_result.profiles)


def assert_same_weights(ours: RecurrentModel, theirs: RecurrentModel) -> None:
    for (key, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL, msg=key)


@pytest.mark.parametrize(("cell", "activation"), CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_batched_forward_and_gradients_equal_the_fused_members(cell: str, activation: str,
                                                               num_layers: int) -> None:
    """float64: the same function and the same per-member gradients, to rounding."""
    members = [build_member(s, cell, TASK, 7, num_layers, activation).double() for s in SEEDS]
    batched = BatchedModel(members)
    inputs = torch.randn(len(SEEDS), 4, 13, TASK.input_size, dtype=torch.float64)
    weights = torch.randn(len(SEEDS), 4, 13, TASK.output_size, dtype=torch.float64)
    (batched(inputs) * weights).sum().backward()
    for k, member in enumerate(members):
        outputs = member(inputs[k])
        torch.testing.assert_close(batched(inputs)[k], outputs, rtol=1e-12, atol=1e-12)
        (outputs * weights[k]).sum().backward()
        for key, param in member.named_parameters():
            stacked = batched.stacked[key.replace(".", "__")]
            torch.testing.assert_close(stacked.grad[k], param.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(batched.member(k)(inputs[k]), outputs, rtol=0, atol=0)


@pytest.mark.parametrize(("cell", "activation"), CELLS)
def test_each_member_is_the_separate_run_with_its_seed(cell: str, activation: str) -> None:
    """Same init, same data: the same metrics at the same steps, the same final weights."""
    runs = batched_run(cell, activation, SEEDS)
    for k, (seed, (member, tracker, result)) in enumerate(zip(SEEDS, runs, strict=True)):
        model, theirs, theirs_result = separate_run(cell, activation, seed)
        assert_same_run(tracker, theirs, result, theirs_result)
        assert_same_weights(member.model, model)
        # The comparison can fail: the neighbouring member (another seed) is far away.
        other = runs[(k + 1) % len(SEEDS)][0].model
        with torch.no_grad():
            apart = max(float((a - b).abs().max()) for a, b in zip(other.parameters(),
                                                                   model.parameters(),
                                                                   strict=True))
        assert apart > 100 * ATOL


def test_members_that_stop_early_leave_the_batch_and_end_as_alone() -> None:
    """Members solved or diverged at different steps end exactly as their separate runs,
    and the members still running are not disturbed by the batch shrinking."""
    # Without clipping, measured for these seeds: the applied-norm bound stops seed 3 at step 1
    # and seed 6 at step 32; seed 0 solves (threshold 0.25) at step 30; seed 1 runs the budget.
    cfg = dataclasses.replace(CFG, steps=60, solve_threshold=0.25, max_grad_norm=0.8)
    seeds = [0, 1, 3, 6]
    runs = batched_run("rnn", "tanh", seeds, cfg, clip=NO_CLIP)
    statuses = set()
    for seed, (member, tracker, result) in zip(seeds, runs, strict=True):
        model, theirs, theirs_result = separate_run("rnn", "tanh", seed, cfg, clip=NO_CLIP)
        assert_same_run(tracker, theirs, result, theirs_result)
        assert_same_weights(member.model, model)
        statuses.add((result.status, result.steps_run))
    # the case is what it claims: members ended at different steps, in different ways
    assert len({steps for _, steps in statuses}) >= 3
    assert {status for status, _ in statuses} >= {names.SOLVED, names.DIVERGED}


def test_a_member_resumes_from_its_checkpoint_in_a_batch_or_alone() -> None:
    """A batched member's checkpoint has a separate run's format: resumed in a batch or by
    the plain loop, it ends where the uninterrupted run ends."""
    saves: dict[int, list[dict]] = {}
    cfg = CFG
    whole = batched_run("gru", "tanh", SEEDS, cfg, saves=saves, every=10)
    assert [s["step"] for s in saves[SEEDS[0]]] == [10, 20]
    states = {seed: saves[seed][0] for seed in SEEDS}  # as if killed after step 10's save
    resumed = batched_run("gru", "tanh", SEEDS, cfg, states=states)
    for (member, _, result), (again, tracker, result_again) in zip(whole, resumed, strict=True):
        assert result_again.steps_run == result.steps_run == cfg.steps
        assert_same_weights(again.model, member.model)
        assert min(s for s, _ in tracker.history[names.TRAIN_LOSS]) == 11  # only the new part
    alone, _, _ = separate_run("gru", "tanh", SEEDS[1], cfg, Checkpointing(
        10, lambda state: None, saves[SEEDS[1]][1]))  # resumed from step 20 by train_loop
    assert_same_weights(alone, whole[1][0].model)


def test_a_member_is_the_same_whatever_k() -> None:
    """A member's forward pass is bit-identical whatever K; its whole run is not, exactly.

    The forward of member k in a batch of 3 is the forward of a batch of 1 bit for bit (each
    bmm slice is its own matmul). Over a run, the per-member gradient norm (a reduction over
    a [K, N] tensor) and Adam's vectorized elementwise kernels round an element differently
    depending on where it sits in the stacked tensor, so members 1 and 2 drift by an ulp from
    the K=1 runs; stated here so that a change in that is noticed.
    """
    members = [build_member(s, "lstm", TASK, 16) for s in SEEDS]
    batched = BatchedModel(members)
    inputs = torch.randn(len(SEEDS), 8, TASK.seq_len, TASK.input_size)
    outputs = batched(inputs)
    for k, member in enumerate(members):
        assert torch.equal(BatchedModel([member])(inputs[k:k + 1])[0], outputs[k])
    cfg = TrainConfig(steps=20, batch_size=16, eval_every=10, eval_batch_size=64,
                      profile_every=-1, solve_threshold=1.5)
    together = batched_run("lstm", "tanh", SEEDS, cfg)
    for k, seed in enumerate(SEEDS):
        alone = batched_run("lstm", "tanh", [seed], cfg)
        assert_same_weights(together[k][0].model, alone[0][0].model)


def test_the_trainer_restacks_members_with_their_optimizer_state() -> None:
    """keep() carries each kept member's weights and Adam moments; states() slices them."""
    trainer = BatchedTrainer([build_member(s, "rnn", TASK, 8) for s in SEEDS], lr=1e-2)
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    for _ in range(3):
        trainer.backward(TASK, [TASK.sample(4, g) for g in gens])
        trainer.update()
    kept = trainer.keep([2, 0])
    before, after = trainer.states(), kept.states()
    for old, new in ((2, 0), (0, 1)):
        for key, value in before[old][0].items():
            assert torch.equal(after[new][0][key], value), key
        for index, entry in before[old][1]["state"].items():
            for key, value in entry.items():
                assert torch.equal(after[new][1]["state"][index][key], value), key
    assert float(before[2][1]["state"][0]["step"]) == 3


@pytest.mark.parametrize("mode", ["none", "norm", "value"])
def test_clipping_is_per_member(mode: str) -> None:
    """Member k is clipped as a separate run's Clipper clips its own gradient, alone."""
    members = [build_member(s, "gru", TASK, 8) for s in SEEDS]
    batched = BatchedModel(members)
    scales = torch.tensor([100.0, 1.0, 0.01])  # one member far above the threshold, one below
    for key, param in batched.stacked.items():
        param.grad = torch.randn_like(param) * scales.view(-1, *([1] * (param.dim() - 1)))
        for k, member in enumerate(members):
            dict(member.named_parameters())[key.replace("__", ".")].grad = param.grad[k].clone()
    result = clip_members(list(batched.parameters()), mode, 1.0)
    for k, member in enumerate(members):
        alone = Clipper(mode, 1.0)(list(member.parameters()))
        assert float(result.pre[k]) == pytest.approx(float(alone.pre), rel=1e-6)
        assert float(result.post[k]) == pytest.approx(float(alone.post), rel=1e-6)
        assert bool(result.fired[k]) == bool(alone.fired)
        for key, param in member.named_parameters():
            torch.testing.assert_close(batched.stacked[key.replace(".", "__")].grad[k],
                                       param.grad, rtol=1e-6, atol=0)
    if mode != "none":
        assert result.fired.tolist() == [True, True, False]


def test_a_diverging_member_leaves_the_others_alone() -> None:
    members = [build_member(s, "rnn", TASK, 8) for s in SEEDS]
    clean = BatchedModel(members)
    broken = BatchedModel(members)
    with torch.no_grad():
        broken.stacked["rnn__weight_hh_l0"][1] = float("nan")
    inputs = torch.randn(len(SEEDS), 4, TASK.seq_len, TASK.input_size)
    for model in (clean, broken):
        model(inputs).pow(2).sum().backward()
    assert torch.isnan(broken(inputs)[1]).all()
    for k in (0, 2):
        assert torch.equal(broken(inputs)[k], clean(inputs)[k])
        for key, param in broken.stacked.items():
            assert torch.equal(param.grad[k], clean.stacked[key].grad[k]), key


def test_members_must_share_a_shape() -> None:
    with pytest.raises(ValueError, match="differ"):
        BatchedModel([build_member(0, "lstm", TASK, 8), build_member(1, "lstm", TASK, 16)])
    with pytest.raises(ValueError, match="at least one"):
        BatchedModel([])
    with pytest.raises(ValueError, match="clip.mode"):
        clip_members(list(BatchedModel([build_member(0, "rnn", TASK, 4)]).parameters()),
                     "global", 1.0)
