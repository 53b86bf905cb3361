"""The optimizers' options torch lacks: RMSprop's initial accumulator (the uRNN authors'
RMSProp) and the step decay of the lr, for one run (`make_optimizer`) and for stacked members
(`StackedOptimizer`), through checkpoints and member states; and the config refusing them."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from helpers.cli import harness_train
from omegaconf import DictConfig
from torch import Tensor, nn

from harness.loop import clone_state
from harness.optimizers import StackedOptimizer, lr_scale, make_optimizer
from harness.schema import ConfigError, OptimConfig, OptimName, validate

# The uRNN authors' RMSProp (amarshah/complex_RNN optimizations.py): decay 0.9, the average
# started at 1e-3, no epsilon
AUTHORS = OptimConfig(OptimName.rmsprop, lr=1e-3, alpha=0.9, eps=0.0, initial_accumulator=1e-3)
LRS = (1e-3, 3e-3, 5e-4)  # the stacked members' rates
SHAPE = (5, 4)
EVERY = 3  # lr decay period in the decay tests
DECAYING = {name: OptimConfig(name, lr=0.05, momentum=0.5 if name != OptimName.adam else 0.0,
                              lr_decay_every=EVERY, lr_decay_factor=0.1)
            for name in OptimName}


def gradients(steps: int, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> list[Tensor]:
    """A fixed sequence of float64 gradients, one per step, spanning several magnitudes."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=torch.float64)
            * 10 ** torch.randint(-3, 2, shape, generator=gen) for _ in range(steps)]


def param(seed: int = 1, shape: tuple[int, ...] = SHAPE) -> nn.Parameter:
    gen = torch.Generator().manual_seed(seed)
    return nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float64))


def authors_rmsprop(p: Tensor, grads: list[Tensor], lr: float) -> Tensor:
    """The authors' loop, as they wrote it: r = 1e-3 at the start; r = 0.9 r + 0.1 g²;
    p = p - lr g / sqrt(r)."""
    r = 1e-3 * torch.ones_like(p)
    for g in grads:
        r = 0.9 * r + 0.1 * g**2
        p = p - lr * g / torch.sqrt(r)
    return p


def run(optimizer: torch.optim.Optimizer | StackedOptimizer, p: nn.Parameter,
        grads: list[Tensor]) -> None:
    for g in grads:
        p.grad = g.clone()
        optimizer.step()


def stacked(members: list[Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack([m.detach().clone() for m in members]))


def test_the_first_rmsprop_update_is_the_closed_form() -> None:
    """p1 = p0 - lr g / sqrt(alpha a0 + (1 - alpha) g²) with eps 0: the accumulator's start
    a0 counts (torch's RMSprop starts at 0, a first step about sqrt(10) times larger)."""
    p = param()
    p0 = p.detach().clone()
    (g,) = gradients(1)
    run(make_optimizer([p], AUTHORS), p, [g])
    expected = p0 - AUTHORS.lr * g / torch.sqrt(0.9 * 1e-3 + 0.1 * g**2)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-13, atol=0)


def test_rmsprop_is_the_authors_loop_for_one_run() -> None:
    p = param()
    grads = gradients(8)
    expected = authors_rmsprop(p.detach().clone(), grads, AUTHORS.lr)
    run(make_optimizer([p], AUTHORS), p, grads)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=0)


def test_rmsprop_is_the_authors_loop_for_each_stacked_member() -> None:
    members = [param(seed) for seed in range(len(LRS))]
    cfgs = [dataclasses.replace(AUTHORS, lr=lr) for lr in LRS]
    grads = gradients(8, (len(LRS), *SHAPE))
    p = stacked(members)
    run(StackedOptimizer([p], cfgs), p, grads)
    for k, (member, lr) in enumerate(zip(members, LRS, strict=True)):
        expected = authors_rmsprop(member.detach().clone(), [g[k] for g in grads], lr)
        torch.testing.assert_close(p.detach()[k], expected, rtol=1e-12, atol=0)


@pytest.fixture
def flushed_denormals() -> Iterator[None]:
    """Denormal floats flushed to zero, as every job runs (`resources.configure_torch`)."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


@pytest.mark.usefixtures("flushed_denormals")
def test_the_authors_rmsprop_survives_a_parameter_without_gradient() -> None:
    """With eps 0 and denormals flushed, a float32 parameter whose gradient is always 0 had
    its average decay from 1e-3 to exactly 0 at update 764, and became 0 / 0 = NaN (the uRNN
    preset's LSTMs, all seeds at step 764). It stays put now, alone and stacked, and a
    parameter with a gradient takes the authors' update, bit for bit as with eps 0."""
    still, moving = torch.zeros(3), torch.tensor([0.5, -1.0, 2.0])
    grads = [torch.stack([torch.zeros(3), torch.full((3,), 0.01)]) for _ in range(1000)]
    alone = nn.Parameter(torch.stack([still, moving]))
    run(make_optimizer([alone], AUTHORS), alone, grads)
    members = nn.Parameter(torch.stack([torch.stack([still, moving])] * 2))
    run(StackedOptimizer([members], [AUTHORS] * 2), members, [torch.stack([g] * 2)
                                                            for g in grads])
    for result in (alone.detach(), *members.detach()):
        assert torch.equal(result[0], still)
    torch.set_flush_denormal(False)
    reference = nn.Parameter(moving.clone())
    plain = torch.optim.RMSprop([reference], lr=AUTHORS.lr, alpha=AUTHORS.alpha, eps=0.0)
    plain.state[reference]["square_avg"] = torch.full((3,), AUTHORS.initial_accumulator)
    plain.state[reference]["step"] = torch.tensor(0.0)
    run(plain, reference, [g[1] for g in grads])
    assert torch.equal(alone.detach()[1], reference.detach())


def test_rmsprop_member_states_round_trip_through_separate_runs() -> None:
    """A member's state goes on as a separate run (`member_state`), and separate runs' states
    go on stacked (`load_member_states`), every one as the authors' loop."""
    members = [param(seed) for seed in range(len(LRS))]
    cfgs = [dataclasses.replace(AUTHORS, lr=lr) for lr in LRS]
    grads = gradients(9, (len(LRS), *SHAPE))
    p = stacked(members)
    optimizer = StackedOptimizer([p], cfgs)
    run(optimizer, p, grads[:3])
    alone = [nn.Parameter(p.detach()[k].clone()) for k in range(len(LRS))]
    separate = [make_optimizer([a], cfg) for a, cfg in zip(alone, cfgs, strict=True)]
    for k, (a, opt) in enumerate(zip(alone, separate, strict=True)):
        opt.load_state_dict(optimizer.member_state(k))
        run(opt, a, [g[k] for g in grads[3:6]])
    back = stacked(alone)
    restacked = StackedOptimizer([back], cfgs)
    restacked.load_member_states([opt.state_dict() for opt in separate])
    run(restacked, back, grads[6:])
    for k, (member, lr) in enumerate(zip(members, LRS, strict=True)):
        expected = authors_rmsprop(member.detach().clone(), [g[k] for g in grads], lr)
        torch.testing.assert_close(back.detach()[k], expected, rtol=1e-12, atol=0)


def test_lr_scale_steps_down_every_n_updates() -> None:
    cfg = DECAYING[OptimName.adam]
    assert [lr_scale(cfg, s) for s in (0, EVERY - 1, EVERY, 2 * EVERY - 1, 2 * EVERY)] == \
        [1.0, 1.0, 0.1, 0.1, 0.1**2]
    assert lr_scale(dataclasses.replace(cfg, lr_decay_every=0), 10**6) == 1.0


@pytest.mark.parametrize("name", list(OptimName))
def test_each_update_runs_at_the_decayed_lr(name: OptimName) -> None:
    """The update taken after s updates is torch's own optimizer's at lr × 0.1^(s // N): the
    same at N - 1 as at 0, a tenth at N, a hundredth at 2N (bit for bit)."""
    cfg = DECAYING[name]
    p, reference = param(), param()
    ours = make_optimizer([p], cfg)
    torchs = make_optimizer([reference], dataclasses.replace(cfg, lr_decay_every=0))
    for s, g in enumerate(gradients(2 * EVERY + 1)):
        torchs.param_groups[0]["lr"] = cfg.lr * 0.1 ** (s // EVERY)
        run(ours, p, [g])
        run(torchs, reference, [g])
        assert torch.equal(p, reference), f"after update {s + 1}"
    assert ours.state_dict()["param_groups"][0]["lr"] == cfg.lr  # the config's, not decayed


@pytest.mark.parametrize("name", list(OptimName))
def test_a_resumed_run_goes_on_with_the_same_lr_schedule(name: OptimName) -> None:
    """From a checkpoint between two decays (a fresh optimizer loading its `state_dict`) or
    from the driver's saved `optimizer.state` alone (its replay), the run ends bit for bit as
    the uninterrupted one."""
    cfg = DECAYING[name]
    grads = gradients(2 * EVERY + 2)
    straight = param()
    run(make_optimizer([straight], cfg), straight, grads)
    resumed = param()
    first = make_optimizer([resumed], cfg)
    run(first, resumed, grads[:EVERY + 1])
    checkpoint = copy.deepcopy(first.state_dict())
    second = make_optimizer([resumed], cfg)
    second.load_state_dict(checkpoint)
    run(second, resumed, grads[EVERY + 1:])
    assert torch.equal(resumed, straight)
    replayed = param()
    optimizer = make_optimizer([replayed], cfg)
    run(optimizer, replayed, grads[:EVERY + 1])
    # as FusedStepper.save and .load do
    saved = (replayed.detach().clone(),
             {p: clone_state(state) for p, state in optimizer.state.items()})
    run(optimizer, replayed, grads[EVERY + 1:])  # past the next decay, then back
    with torch.no_grad():
        replayed.copy_(saved[0])
    optimizer.state.clear()
    optimizer.state.update(saved[1])
    run(optimizer, replayed, grads[EVERY + 1:])
    assert torch.equal(replayed, straight)


@pytest.mark.parametrize("name", list(OptimName))
def test_stacked_members_decay_as_their_separate_runs(name: OptimName) -> None:
    cfgs = [dataclasses.replace(DECAYING[name], lr=DECAYING[name].lr * f) for f in (1, 3, 0.2)]
    members = [param(seed) for seed in range(len(cfgs))]
    grads = gradients(2 * EVERY + 1, (len(cfgs), *SHAPE))
    p = stacked(members)
    optimizer = StackedOptimizer([p], cfgs)
    run(optimizer, p, grads)
    for k, (member, cfg) in enumerate(zip(members, cfgs, strict=True)):
        alone = make_optimizer([member], cfg)
        run(alone, member, [g[k] for g in grads])
        torch.testing.assert_close(p.detach()[k], member.detach(), rtol=1e-12, atol=1e-15)
        ours, theirs = optimizer.member_state(k), alone.state_dict()
        assert ours["param_groups"] == theirs["param_groups"]
        assert set(ours["state"][0]) == set(theirs["state"][0])
        assert float(ours["state"][0]["step"]) == float(theirs["state"][0]["step"]) == 7


@pytest.mark.parametrize("key", ["alpha", "eps", "initial_accumulator", "lr_decay_every",
                                 "lr_decay_factor"])
def test_stacked_members_share_every_setting_but_the_lr(key: str) -> None:
    other = dataclasses.replace(AUTHORS, **{key: getattr(AUTHORS, key) + 1})
    with pytest.raises(ValueError, match=f"members differ in optim.{key}; only the learning"):
        StackedOptimizer([stacked([param(), param()])], [AUTHORS, other])


@pytest.mark.parametrize(("override", "field"), [
    ("optim.lr_decay_factor=0", "optim.lr_decay_factor"),
    ("optim.lr_decay_every=-1", "optim.lr_decay_every"),
    ("optim.alpha=1", "optim.alpha"),
    ("optim.eps=-1e-8", "optim.eps"),
    ("optim.initial_accumulator=-1", "optim.initial_accumulator"),
])
def test_out_of_range_optimizer_settings_name_the_field(make_cfg: Callable[..., DictConfig],
                                                        override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: "):
        validate(make_cfg("optim=rmsprop", override))


def test_rmsprop_without_eps_needs_an_accumulator(make_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match="^optim.eps: rmsprop with eps 0 divides by zero"):
        validate(make_cfg("optim=rmsprop", "optim.eps=0"))
    validate(make_cfg("optim=rmsprop", "optim.eps=0", "optim.initial_accumulator=1e-3"))


def test_cli_refuses_a_non_positive_decay_factor_in_one_line(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    db = tmp_path / "mlflow.db"
    done = harness_train("optim.lr_decay_every=100", "optim.lr_decay_factor=0",
                         f"tracking.uri=sqlite:///{db}", cwd=tmp_path, env=cli_env)
    assert done.returncode == 2
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        "harness-train: invalid config: optim.lr_decay_factor: must be > 0, got 0.0"]
    assert not db.exists()
