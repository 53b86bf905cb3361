"""Optimizers from config: torch's own for one run, and its stacked twin for K batched members.

`make_optimizer` builds `optim.name` (adam | sgd with `optim.momentum` | rmsprop) over one
model's parameters: torch's optimizer of that name (`eps`, `alpha`, momentum and weight decay
from the config), with two options torch's optimizers lack:

- `optim.initial_accumulator` (rmsprop): the squared-gradient average starts at this value
  instead of 0. With `optim.alpha=0.9 optim.eps=0 optim.initial_accumulator=1e-3` the update
  is the uRNN authors' RMSProp (amarshah/complex_RNN, `optimizations.py` lines 26-34: the
  average starts at 1e-3; each step r = 0.9 r + 0.1 g², p -= lr g / sqrt(r), the new r, no
  epsilon; an eps of 0 is the smallest normal float, `denominator_eps`).
- a step decay of the lr (`optim.lr_decay_every`, `optim.lr_decay_factor`): the update taken
  after s updates uses lr × factor^(s // every) (`lr_scale`). The IndRNN authors' Adam decays
  ×0.1 after every 20,100 updates (Sunnydreamrain/IndRNN_Theano_Lasagne, `adding/adding.py`
  lines 165-176: a counter grows every 100 batches and the lr drops when it passes 200).

The decayed lr is never a running value: each update computes it from the update count in the
optimizer's state (`step`, which torch's Adam and RMSprop keep and which SGD's state keeps
here too), and the param groups keep the config's lr. So whatever restores the state restores
the schedule with it: a checkpoint's `load_state_dict`, the driver's replay of its steps
(which saves and loads `optimizer.state` only), a batched member's `member_state`.

`StackedOptimizer` steps parameters stacked on a leading member dimension K ([K, ...], see
harness/batched.py) with torch's own elementwise formulas (`torch.optim.adam`, `sgd`, `rmsprop`,
single-tensor code path), member k at its own learning rate `lrs[k]`. Adam, SGD with momentum
and RMSprop are elementwise, so member k's update is exactly the update its separate run's
optimizer makes, to float rounding (the learning rate multiplies a tensor instead of a Python
scalar). Every other setting (`SHARED`) is shared: the grouping of jobs into batches keeps
them equal (harness/batching.py), and all members take their updates together, so the lr
decay, read from the shared update count, is every member's own.

Its state has torch's layout with every per-parameter tensor stacked (`fresh_state` makes
both), so `member_state(k)` is a separate run's `optimizer.state_dict()` (a batched member's
checkpoint resumes alone) and `load_member_states` stacks separate runs' states (a separate
checkpoint resumes in a batch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from harness.schema import OptimConfig

ADAM_BETAS = (0.9, 0.999)  # torch's defaults, which every run uses
# The optimizer settings members of one batch share: all but the learning rate.
SHARED = tuple(f.name for f in dataclasses.fields(OptimConfig) if f.name != "lr")


def optim_name(cfg: OptimConfig) -> str:
    """`cfg.name` as a plain string (an `OptimName` or, from a DictConfig, already one)."""
    return cfg.name.value if hasattr(cfg.name, "value") else str(cfg.name)


def lr_scale(cfg: OptimConfig, updates: int) -> float:
    """What the config's lr is multiplied by in the update taken after `updates` updates:
    lr_decay_factor ** (updates // lr_decay_every); 1 for a constant lr (lr_decay_every 0)."""
    if cfg.lr_decay_every == 0:
        return 1.0
    return cfg.lr_decay_factor ** (updates // cfg.lr_decay_every)


def fresh_state(cfg: OptimConfig, param: Tensor) -> dict[str, Any]:
    """One parameter's optimizer state before its first update, in torch's layout (`param`
    may be a stacked one): the update count on the CPU, as torch keeps it; RMSprop's
    squared-gradient average at `initial_accumulator`; SGD's count beside its momentum."""
    zeros: Callable[[], Tensor] = lambda: torch.zeros_like(  # noqa: E731
        param, memory_format=torch.preserve_format)
    step = torch.tensor(0.0)
    name = optim_name(cfg)
    if name == "adam":
        return {"step": step, "exp_avg": zeros(), "exp_avg_sq": zeros()}
    if name == "sgd":
        return {"momentum_buffer": None, "step": step}
    state = {"step": step, "square_avg": torch.full_like(
        param, cfg.initial_accumulator, memory_format=torch.preserve_format)}
    if cfg.momentum > 0:
        state["momentum_buffer"] = zeros()
    return state


class Scheduled(torch.optim.Optimizer):
    """Mixin for a torch optimizer (the class after it in the method resolution order): its
    state starts as `fresh_state`, and the update taken after s updates runs at every group's
    lr × `lr_scale(cfg, s)`, s read from the state's update count; the groups' lr is the
    config's again after the update, so `state_dict()`'s param groups are torch's."""

    def __init__(self, params: Iterable[nn.Parameter], cfg: OptimConfig,
                 **hyperparameters: Any) -> None:
        super().__init__(params, **hyperparameters)  # the torch optimizer's own arguments
        self.cfg = cfg

    def updates(self) -> int:
        """Updates taken so far: the count of any parameter's state (all update together). A
        0-dim CPU tensor: reading it does not wait for a GPU."""
        for state in self.state.values():
            if "step" in state:
                return int(state["step"])
        return 0

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None and not self.state[param]:
                    self.state[param] = fresh_state(self.cfg, param)
        scale = lr_scale(self.cfg, self.updates())
        lrs = [group["lr"] for group in self.param_groups]
        for group, lr in zip(self.param_groups, lrs, strict=True):
            group["lr"] = lr * scale
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, lrs, strict=True):
                group["lr"] = lr


class Adam(Scheduled, torch.optim.Adam):
    """torch's Adam with the lr decay."""


class RMSprop(Scheduled, torch.optim.RMSprop):
    """torch's RMSprop with the lr decay, its average started at `optim.initial_accumulator`."""


class SGD(Scheduled, torch.optim.SGD):
    """torch's SGD with the lr decay; its state counts the updates, as Adam's does."""

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = super().step(closure)
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self.state[param]["step"] += 1
        return loss


def denominator_eps(cfg: OptimConfig) -> float:
    """The eps Adam and RMSprop add to their denominator: `optim.eps`, or for 0 the smallest
    normal float32 (1.2e-38). Jobs flush denormal floats to zero (`resources.configure_torch`),
    so the uRNN authors' RMSprop (eps 0, average started at 1e-3, decay 0.9) would average a
    parameter that never gets a gradient down to exactly 0 after 764 updates, and update it by
    0 / 0 = NaN (their Theano code kept the denormal, and 0). Added to the square root of any
    average a float32 holds as a normal number, the tiny eps changes no bit of it."""
    return cfg.eps if cfg.eps > 0 else float(torch.finfo(torch.float32).tiny)


def make_optimizer(params: Iterable[nn.Parameter] | nn.Module,
                   cfg: OptimConfig) -> torch.optim.Optimizer:
    """adam | sgd | rmsprop over one model's parameters, as `cfg` (an `OptimConfig`) says."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    name = optim_name(cfg)
    if name == "adam":
        return Adam(params, cfg, lr=cfg.lr, eps=denominator_eps(cfg),
                    weight_decay=cfg.weight_decay)
    if name == "sgd":
        return SGD(params, cfg, lr=cfg.lr, momentum=cfg.momentum,
                   weight_decay=cfg.weight_decay)
    if name == "rmsprop":
        return RMSprop(params, cfg, lr=cfg.lr, alpha=cfg.alpha, eps=denominator_eps(cfg),
                       momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"optim.name: unknown {name!r}; choose adam|sgd|rmsprop")


class StackedOptimizer:
    """torch's Adam / SGD / RMSprop over stacked parameters, member k at learning rate lrs[k]."""

    def __init__(self, params: Sequence[nn.Parameter], cfgs: Sequence[OptimConfig]) -> None:
        if not cfgs:
            raise ValueError("batched: at least one member is needed")
        differ = [f"optim.{key}" for key in SHARED
                  if len({getattr(c, key) for c in cfgs}) > 1]
        if differ:
            raise ValueError(f"batched: members differ in {', '.join(differ)}; only the "
                             "learning rate may differ")
        self.cfg = cfgs[0]  # every setting but the lr, as every member has it
        self.name = optim_name(self.cfg)
        self.eps = denominator_eps(self.cfg)  # Adam's and RMSprop's, once
        if self.name not in ("adam", "sgd", "rmsprop"):
            raise ValueError(f"optim.name: unknown {self.name!r}; choose adam|sgd|rmsprop")
        self.cfgs = list(cfgs)
        self.params = list(params)
        k = len(cfgs)
        for param in self.params:
            if param.shape[0] != k:
                raise ValueError(f"batched: a parameter of shape {tuple(param.shape)} is not "
                                 f"stacked over {k} members")
        # lr as float32 [K], like the Python float torch casts to the parameter's dtype
        self.lrs = torch.tensor([c.lr for c in cfgs], dtype=torch.float64)
        self._lrs = {"cpu": self.lrs}  # on each device once: a copy per step would sync a GPU
        self.state: dict[int, dict[str, Any]] = {}

    def _lr(self, param: Tensor, scale: float) -> Tensor:
        """-lr_k * scale, shaped to broadcast over member k's slice of `param`."""
        device = str(param.device)
        if device not in self._lrs:
            self._lrs[device] = self.lrs.to(param.device)
        value = (-self._lrs[device] * scale).to(dtype=param.dtype)
        return value.view(-1, *([1] * (param.dim() - 1)))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for index, param in enumerate(self.params):
            if param.grad is None:
                continue
            grad = param.grad
            if self.cfg.weight_decay != 0:
                grad = grad.add(param, alpha=self.cfg.weight_decay)
            if index not in self.state:
                self.state[index] = fresh_state(self.cfg, param)
            state = self.state[index]
            # the shared count, on the CPU (no GPU sync), before this update adds to it
            scale = lr_scale(self.cfg, int(state["step"]))
            getattr(self, f"_{self.name}")(param, grad, state, scale)

    def _adam(self, param: Tensor, grad: Tensor, state: dict[str, Any], scale: float) -> None:
        beta1, beta2 = ADAM_BETAS
        state["step"] += 1
        step = float(state["step"])
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        denom = (state["exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(self.eps)
        # torch: param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)
        param.addcdiv_(state["exp_avg"] * self._lr(param, scale / (1 - beta1**step)), denom)

    def _sgd(self, param: Tensor, grad: Tensor, state: dict[str, Any], scale: float) -> None:
        if self.cfg.momentum != 0:
            if state["momentum_buffer"] is None:
                state["momentum_buffer"] = grad.detach().clone()
            else:
                state["momentum_buffer"].mul_(self.cfg.momentum).add_(grad)
            grad = state["momentum_buffer"]
        param.addcmul_(grad, self._lr(param, scale))
        state["step"] += 1

    def _rmsprop(self, param: Tensor, grad: Tensor, state: dict[str, Any],
                 scale: float) -> None:
        alpha = self.cfg.alpha
        state["step"] += 1
        square_avg = state["square_avg"]
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        avg = square_avg.sqrt().add_(self.eps)
        if self.cfg.momentum > 0:
            buffer = state["momentum_buffer"]
            buffer.mul_(self.cfg.momentum).addcdiv_(grad, avg)
            param.addcmul_(buffer, self._lr(param, scale))
        else:
            param.addcdiv_(grad * self._lr(param, scale), avg)

    # --- a separate run's state, in and out ---

    def member_state(self, k: int) -> dict[str, Any]:
        """Member k's state as its separate run's torch optimizer holds it (`state_dict()`):
        every stacked tensor sliced at k; the shared step count as it is."""
        state = {index: {key: value[k].clone() if isinstance(value, Tensor) and value.dim() > 0
                         else value.clone() if isinstance(value, Tensor) else value
                         for key, value in entry.items()}
                 for index, entry in self.state.items()}
        return {"state": state, "param_groups": [param_group(self.cfgs[k], len(self.params))]}

    def load_member_states(self, states: Sequence[dict[str, Any]]) -> None:
        """Stack separate runs' optimizer states (their step counts must agree): the inverse of
        `member_state`."""
        if len(states) != len(self.cfgs):
            raise ValueError(f"batched: {len(states)} optimizer states for {len(self.cfgs)} "
                             "members")
        first = states[0]
        self.state = {}
        for index, entry in first["state"].items():
            stacked: dict[str, Any] = {}
            for key, value in entry.items():
                if isinstance(value, Tensor) and value.dim() > 0:
                    stacked[key] = torch.stack([s["state"][index][key] for s in states]).to(
                        self.params[int(index)].device)
                    continue
                if any(not _same(s["state"][index][key], value) for s in states):
                    raise ValueError(f"batched: members differ in optimizer {key!r}; only runs "
                                     "at the same step are batched")
                # the step count stays on the CPU (as torch's optimizers keep it): read each
                # step, it would sync a GPU
                stacked[key] = value.cpu().clone() if isinstance(value, Tensor) else value
            self.state[int(index)] = stacked

    def keep(self, indices: Sequence[int], params: Sequence[nn.Parameter]) -> StackedOptimizer:
        """The optimizer of the members at `indices`, over `params` (their restacked weights),
        each member with its own state."""
        kept = StackedOptimizer(params, [self.cfgs[k] for k in indices])
        if self.state:
            kept.load_member_states([self.member_state(k) for k in indices])
        return kept


def param_group(cfg: OptimConfig, n_params: int) -> dict[str, Any]:
    """The param group a separate run's torch optimizer has for `cfg` (its defaults included),
    over parameters 0..n_params-1."""
    group = make_optimizer([nn.Parameter(torch.zeros(1))], cfg).state_dict()["param_groups"][0]
    return {**group, "params": list(range(n_params))}


def _same(a: Any, b: Any) -> bool:
    return bool(torch.equal(a, b)) if isinstance(a, Tensor) else a == b
