"""Batched seeds: each member of a stacked model is the separate run with its seed."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import pytest
import torch
from helpers.batched import CLIP, TASK, Spec

import tasks
from harness import loop, names
from harness.batched import BatchedModel, BatchedStepper, build_member, clip_members
from harness.cells import CELLS as REGISTRY
from harness.clipping import Clipper
from harness.loop import (
    Checkpointing,
    MemoryTracker,
    RunRecord,
    RunResult,
    drive,
    resume,
    train_loop,
)
from harness.models import RecurrentModel
from harness.optimizers import make_optimizer
from harness.schema import ClipConfig, ClipMode, OptimConfig, OptimName, TrainConfig

# Every cell that can be batched (the registry's), with its first activation; the vanilla RNN
# with two more.
CELLS = [(name, spec.activations[0]) for name, spec in REGISTRY.items() if spec.batched] + \
    [("rnn", "relu"), ("rnn", "hard_tanh")]
SEEDS = [0, 1, 2]
# Full budget (threshold above 1), evaluation and diagnostics at 0, 10, 20, 30; every step logged.
CFG = TrainConfig(steps=30, batch_size=16, log_every=1, eval_every=10, eval_batch_size=64,
                  profile_batch_size=8, solve_threshold=1.5)
NO_CLIP = ClipConfig(ClipMode.none, 1.0)
# float32: the bmm cell and the fused kernels round differently (other summation order and
# vectorization), by about one ulp per op. Measured over 40 to 50 such steps, the members differ
# from the separate runs by at most ~2.3e-7 relative in the losses and gradient norms (two
# ulps) and ~1e-6 absolute in the weights. 1e-5 is ~100 ulps: room for that rounding, yet far
# below the differences that a real mismatch makes (another seed, no clipping, a member's
# gradient mixed with another's: 1e-2 and more, checked below).
RTOL, ATOL = 1e-5, 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def separate_run(cell: str, activation: str, seed: int, cfg: TrainConfig = CFG,
                 checkpointing: Checkpointing | None = None, clip: ClipConfig = CLIP,
                 spec: Spec | None = None) -> tuple[RecurrentModel, MemoryTracker, RunResult]:
    """The harness's own loop on the fused model: what a separate run with `seed` does."""
    spec = spec or Spec(seed, cell, activation, clip=clip)
    model = spec.model()
    tracker = MemoryTracker()
    result = train_loop(spec.task, model, make_optimizer(model, spec.optim),
                        Clipper.of(spec.clip), cfg, tracker, seed=spec.seed,
                        checkpointing=checkpointing)
    return model, tracker, result


class Ran(NamedTuple):
    """A batched member after the run: its final model, tracker and result."""

    model: RecurrentModel
    tracker: MemoryTracker
    result: RunResult


def batched_specs(specs: list[Spec], cfg: TrainConfig = CFG,
                  saves: dict[int, list[dict]] | None = None, every: int = 0,
                  states: dict[int, dict] | None = None) -> list[Ran]:
    """`drive` over a BatchedStepper of these members, each with its own in-memory tracker;
    checkpoints every `every` steps go to `saves[seed]`; `states`: resume from these."""
    records, models, optimizer_states = [], [], []
    for spec in specs:
        checkpointing = None
        if every:
            assert saves is not None
            checkpointing = Checkpointing(every, saves.setdefault(spec.seed, []).append)
        record = RunRecord(spec.task, cfg, MemoryTracker(), spec.seed,
                           checkpointing=checkpointing)
        model = spec.model()
        state = (states or {}).get(spec.seed)
        resume(record, model, state)
        records.append(record)
        models.append(model)
        optimizer_states.append(state["optimizer"] if state else None)
    stepper = BatchedStepper(models, [s.task for s in specs], [s.optim for s in specs],
                             [s.clip for s in specs], optimizer_states)
    results = drive(stepper, records, cfg)
    return [Ran(record.final_model, record.tracker, result)  # type: ignore[arg-type]
            for record, result in zip(records, results, strict=True)]


def batched_run(cell: str, activation: str, seeds: list[int], cfg: TrainConfig = CFG,
                saves: dict[int, list[dict]] | None = None, every: int = 0,
                states: dict[int, dict] | None = None, clip: ClipConfig = CLIP) -> list[Ran]:
    """Members that differ only in their seed."""
    return batched_specs([Spec(seed, cell, activation, clip=clip) for seed in seeds], cfg,
                         saves, every, states)


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
        assert_same_weights(member, model)
        # The comparison can fail: the neighbouring member (another seed) is far away.
        other = runs[(k + 1) % len(SEEDS)].model
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
        assert_same_weights(member, model)
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
        assert_same_weights(again, member)
        assert min(s for s, _ in tracker.history[names.TRAIN_LOSS]) == 11  # only the new part
    alone, _, _ = separate_run("gru", "tanh", SEEDS[1], cfg, Checkpointing(
        10, lambda state: None, saves[SEEDS[1]][1]))  # resumed from step 20 by train_loop
    assert_same_weights(alone, whole[1].model)


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
        assert_same_weights(together[k].model, alone[0].model)


def stepper_of(specs: list[Spec], hidden: int = 8) -> BatchedStepper:
    models = [build_member(s.seed, s.cell, s.task, hidden, activation=s.activation)
              for s in specs]
    return BatchedStepper(models, [s.task for s in specs], [s.optim for s in specs],
                          [s.clip for s in specs])


def test_the_stepper_restacks_members_with_their_optimizer_state() -> None:
    """keep() carries each kept member's weights and Adam moments; states() slices them."""
    stepper = stepper_of([Spec(s, optim=OptimConfig(OptimName.adam, 1e-2)) for s in SEEDS])
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    for _ in range(3):
        stepper.backward([TASK.sample(4, g) for g in gens])
        stepper.update()
    kept = stepper.keep([2, 0])
    before, after = stepper.states(), kept.states()
    for old, new in ((2, 0), (0, 1)):
        for key, value in before[old][0].items():
            assert torch.equal(after[new][0][key], value), key
        for index, entry in before[old][1]["state"].items():
            for key, value in entry.items():
                assert torch.equal(after[new][1]["state"][index][key], value), key
    assert float(before[2][1]["state"][0]["step"]) == 3


@pytest.mark.parametrize("optim", [OptimConfig(OptimName.adam, 3e-3, weight_decay=1e-2),
                                   OptimConfig(OptimName.sgd, 0.3, momentum=0.9),
                                   OptimConfig(OptimName.sgd, 0.3),
                                   OptimConfig(OptimName.rmsprop, 1e-3, momentum=0.5),
                                   OptimConfig(OptimName.rmsprop, 1e-3)])
def test_the_stacked_optimizer_is_torchs_per_member_at_its_own_rate(
        optim: OptimConfig) -> None:
    """Each member of a StackedOptimizer steps as torch's optimizer of its separate run, at
    its own learning rate, and its state is that optimizer's state_dict (so a member's
    checkpoint resumes alone)."""
    lrs = [optim.lr, optim.lr * 3, optim.lr / 7]
    specs = [Spec(s, "gru", optim=dataclasses.replace(optim, lr=lr), clip=NO_CLIP)
             for s, lr in zip(SEEDS, lrs, strict=True)]
    stepper = stepper_of(specs)
    alone = [build_member(s.seed, "gru", TASK, 8) for s in specs]
    optimizers = [make_optimizer(m, s.optim) for m, s in zip(alone, specs, strict=True)]
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    for _ in range(5):
        batches = [TASK.sample(4, g) for g in gens]
        stepper.backward(batches)
        stepper.update()
        for model, optimizer, batch in zip(alone, optimizers, batches, strict=True):
            optimizer.zero_grad()
            TASK.loss(model(batch.inputs), batch).backward()
            optimizer.step()
    for k, (model, optimizer) in enumerate(zip(alone, optimizers, strict=True)):
        assert_same_weights(stepper.model(k), model)
        theirs = optimizer.state_dict()
        ours = stepper.states()[k][1]
        assert ours["param_groups"] == theirs["param_groups"]
        for index, entry in theirs["state"].items():
            assert set(ours["state"][index]) == set(entry)
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    # RMSprop divides by sqrt(square_avg): a near-zero gradient element's
                    # rounding (1e-7 of the largest) grows there, so compare on that scale
                    scale = float(value.abs().max()) if value.dim() else 1.0
                    torch.testing.assert_close(ours["state"][index][key], value, rtol=RTOL,
                                               atol=1e-4 * scale, msg=key)
                else:
                    assert ours["state"][index][key] == value, key
    # the rates matter: member 1 moved further than it would at member 0's rate
    assert not torch.allclose(stepper.model(1).rnn.weight_hh_l0, alone[0].rnn.weight_hh_l0)


def test_members_that_differ_in_more_than_the_seed_are_their_separate_runs() -> None:
    """One batch of members with different learning rates, clipping (none, norm, value,
    thresholds), activations, init, forget bias and gaps: each equals its separate run. The
    shorter gaps are left-padded, their hidden state held at zero through the padding."""
    short = tasks.make_task("delayed_recall", gap=4, filler="noise")
    longer = tasks.make_task("delayed_recall", gap=7, filler="noise")
    groups = [
        [Spec(0, "rnn", "tanh", OptimConfig(OptimName.adam, 3e-3), CLIP),
         Spec(1, "rnn", "relu", OptimConfig(OptimName.adam, 1e-2), NO_CLIP, task=short),
         Spec(2, "rnn", "hard_tanh", OptimConfig(OptimName.adam, 1e-3),
              ClipConfig(ClipMode.value, 0.05), task=longer, init="orthogonal"),
         Spec(3, "rnn", "relu", OptimConfig(OptimName.adam, 3e-3), ClipConfig(ClipMode.norm, 2.0),
              task=short, init="identity")],
        [Spec(0, "lstm", optim=OptimConfig(OptimName.adam, 1e-2), task=short, forget_bias=0.0),
         Spec(1, "lstm", clip=NO_CLIP, forget_bias=3.0),
         Spec(2, "lstm", clip=ClipConfig(ClipMode.value, 0.01), task=longer)],
        [Spec(0, "gru", optim=OptimConfig(OptimName.adam, 1e-2), task=short),
         Spec(1, "gru", clip=NO_CLIP, task=longer)],
    ]
    for specs in groups:
        runs = batched_specs(specs)
        for spec, ran in zip(specs, runs, strict=True):
            model, theirs, theirs_result = separate_run(spec.cell, spec.activation, spec.seed,
                                                        spec=spec)
            assert_same_run(ran.tracker, theirs, ran.result, theirs_result)
            assert_same_weights(ran.model, model)


def test_left_padding_holds_the_state_and_changes_nothing() -> None:
    """float64: a member whose sequence is left-padded computes, from its start on, the
    outputs and gradients of its separate model on the unpadded sequence; the padding's
    outputs get no gradient."""
    members = [build_member(s, cell, TASK, 6).double() for s, cell in ((0, "lstm"), (1, "lstm"))]
    batched = BatchedModel(members)
    inputs = torch.randn(2, 3, 9, TASK.input_size, dtype=torch.float64)
    start = torch.tensor([0, 4])
    outputs = batched(inputs, start)
    weights = torch.randn_like(outputs)
    mask = (torch.arange(9).view(1, -1) >= start.view(-1, 1)).view(2, 1, 9, 1)
    (outputs * weights * mask).sum().backward()
    for k, member in enumerate(members):
        mine = member(inputs[k, :, int(start[k]):])
        torch.testing.assert_close(outputs[k, :, int(start[k]):], mine, rtol=1e-12, atol=1e-12)
        (mine * weights[k, :, int(start[k]):]).sum().backward()
        for key, param in member.named_parameters():
            torch.testing.assert_close(batched.stacked[key.replace(".", "__")].grad[k],
                                       param.grad, rtol=1e-10, atol=1e-12, msg=key)
    # without the hold, the padded member would differ: the bias moves a state fed zeros
    free = batched(inputs, None)[1, :, 4:]
    assert not torch.allclose(free, outputs[1, :, 4:])


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
    clip = ClipConfig(ClipMode(mode), 1.0)
    result = clip_members(list(batched.parameters()), [clip] * len(members))
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


def test_each_member_is_clipped_by_its_own_mode_and_threshold() -> None:
    members = [build_member(s, "rnn", TASK, 8) for s in range(4)]
    batched = BatchedModel(members)
    for key, param in batched.stacked.items():
        param.grad = torch.randn_like(param) * 10
        for k, member in enumerate(members):
            dict(member.named_parameters())[key.replace("__", ".")].grad = param.grad[k].clone()
    clips = [ClipConfig(ClipMode.none, 1.0), ClipConfig(ClipMode.norm, 1.0),
             ClipConfig(ClipMode.norm, 30.0), ClipConfig(ClipMode.value, 0.5)]
    result = clip_members(list(batched.parameters()), clips)
    for k, (member, clip) in enumerate(zip(members, clips, strict=True)):
        alone = Clipper.of(clip)(list(member.parameters()))
        assert float(result.post[k]) == pytest.approx(float(alone.post), rel=1e-6)
        assert bool(result.fired[k]) == bool(alone.fired)
        for key, param in member.named_parameters():
            torch.testing.assert_close(batched.stacked[key.replace(".", "__")].grad[k],
                                       param.grad, rtol=1e-6, atol=0)
    assert result.fired.tolist() == [False, True, True, True]


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
                     [ClipConfig("global", 1.0)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only the learning rate"):
        stepper_of([Spec(0), Spec(1, optim=OptimConfig(OptimName.sgd, 1e-3))])


def member_after(cell: str, backend: str, seeds: list[int], lrs: list[float],
                 steps: int = 8) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Member seed 0's losses and weights after `steps` steps in a batch of `seeds` (one
    sequence length), with norm clipping that fires."""
    models, generators = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(RecurrentModel(cell, TASK.input_size, TASK.output_size, 16,
                                     activation=REGISTRY[cell].activations[0]))
        generators.append(loop.data_generators(seed)[0])
    stepper = BatchedStepper(models, [TASK] * len(seeds),
                             [OptimConfig(OptimName.adam, lr) for lr in lrs],
                             [ClipConfig(ClipMode.norm, 0.05)] * len(seeds), backend=backend)
    losses = []
    for _ in range(steps):
        audit = stepper.backward([TASK.sample(8, g) for g in generators])
        stepper.update()
        losses.append(audit.loss.clone())
    k = seeds.index(0)
    return (torch.stack(losses)[:, k],
            {key: value[k].detach().clone() for key, value in stepper.net.stacked.items()})


BIT_PATHS = [(name, "eager") for name, spec in REGISTRY.items() if spec.batched] + \
    [(name, "cpp") for name, spec in REGISTRY.items() if spec.kernel is not None]


@pytest.mark.parametrize(("cell", "backend"), BIT_PATHS)
def test_a_member_is_bit_identical_whatever_it_is_batched_with(cell: str, backend: str) -> None:
    """A run's result does not depend on its batch: member seed 0 alone (K = 1), among 2 and
    among 8 members, first or last, beside other learning rates, ends with the same losses
    and weights, bit for bit (one sequence length: harness/batching.py batches only that)."""
    alone_losses, alone = member_after(cell, backend, [0], [1e-2])
    for seeds, lrs in (([0, 1], [1e-2, 3e-3]), ([3, 2, 1, 0], [1e-3, 1e-2, 3e-3, 1e-2]),
                       (list(range(8)), [1e-2] * 8)):
        losses, weights = member_after(cell, backend, seeds, lrs)
        assert torch.equal(losses, alone_losses), (seeds, lrs)
        for key, value in weights.items():
            assert torch.equal(value, alone[key]), (seeds, key)


def test_a_guarded_member_is_its_guarded_separate_run() -> None:
    """Pascanu's NaN guard per member: member 1's gradient made untrustworthy (inf) at every
    step becomes 0.02 W_hh for its W_hh and 0 elsewhere, as `Clipper` does for a separate
    run; member 0 (no guard, finite) is untouched; the audit says who was guarded."""
    from harness.clipping import GUARD_SHRINK

    models = [build_member(seed, "rnn", TASK, 8) for seed in (0, 1)]
    clips = [ClipConfig(ClipMode.norm, 1.0), ClipConfig(ClipMode.norm, 1.0, nan_guard=True)]
    stepper = BatchedStepper(models, [TASK] * 2, [OptimConfig()] * 2, clips)
    batch = TASK.sample(4, torch.Generator().manual_seed(0))
    inputs = torch.stack([batch.inputs, batch.inputs])
    losses = member_losses_of(stepper, inputs, batch)
    stepper.optimizer.zero_grad()
    (losses[0] + losses[1] * float("inf")).backward()
    audit = stepper.clipper(stepper.params, stepper.recurrent)
    assert audit.guarded.tolist() == [False, True] and not bool(audit.failed.any())
    w_hh = stepper.net.stacked["rnn__weight_hh_l0"]
    torch.testing.assert_close(w_hh.grad[1], GUARD_SHRINK * w_hh.detach()[1])
    assert all(float(p.grad[1].abs().max()) == 0 for p in stepper.params if p is not w_hh)
    assert all(bool(p.grad[0].isfinite().all()) for p in stepper.params)


def member_losses_of(stepper: BatchedStepper, inputs: torch.Tensor,
                     batch: tasks.Batch) -> torch.Tensor:
    outputs = stepper.net(inputs)
    return torch.stack([TASK.loss(outputs[k], batch) for k in range(outputs.shape[0])])


@pytest.mark.parametrize("cell", [name for name, spec in REGISTRY.items() if spec.batched])
def test_clipping_that_never_fires_changes_no_bit(cell: str) -> None:
    """A threshold the gradient never reaches: the clipped member is its unclipped twin, bit
    for bit (a comparison of the two is not exercised, and the scorecard says so)."""
    def after(clip: ClipConfig) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = RecurrentModel(cell, TASK.input_size, TASK.output_size, 16)
        stepper = BatchedStepper([model], [TASK], [OptimConfig()], [clip])
        generator = loop.data_generators(0)[0]
        for _ in range(5):
            stepper.backward([TASK.sample(8, generator)])
            stepper.update()
        return {k: v.detach().clone() for k, v in stepper.net.stacked.items()}

    plain = after(ClipConfig(ClipMode.none, 1.0))
    for clip in (ClipConfig(ClipMode.norm, 1e9), ClipConfig(ClipMode.value, 1e9),
                 ClipConfig(ClipMode.norm, 1e9, nan_guard=REGISTRY[cell].matrix_init)):
        assert all(torch.equal(value, plain[key]) for key, value in after(clip).items()), clip
