"""Optimizers from config: torch's own for one run, and its stacked twin for K batched members.

`make_optimizer` builds `optim.name` (adam | sgd with `optim.momentum` | rmsprop) over one
model's parameters, as a run has always trained.

`StackedOptimizer` steps parameters stacked on a leading member dimension K ([K, ...], see
harness/batched.py) with torch's own elementwise formulas (`torch.optim.adam`, `sgd`, `rmsprop`,
single-tensor code path, default hyperparameters), member k at its own learning rate `lrs[k]`.
Adam, SGD with momentum and RMSprop are elementwise, so member k's update is exactly the update
its separate run's optimizer makes, to float rounding (the learning rate multiplies a tensor
instead of a Python scalar). The other settings (name, momentum, weight decay) are shared: the
grouping of jobs into batches keeps them equal (harness/batching.py).

Its state has torch's layout with every per-parameter tensor stacked, so `member_state(k)` is
a separate run's `optimizer.state_dict()` (a batched member's checkpoint resumes alone) and
`load_member_states` stacks separate runs' states (a separate checkpoint resumes in a batch).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from harness.schema import OptimConfig

ADAM_BETAS = (0.9, 0.999)  # torch's defaults, which every run uses
EPS = 1e-8
RMSPROP_ALPHA = 0.99


def make_optimizer(params: Iterable[nn.Parameter] | nn.Module,
                   cfg: OptimConfig) -> torch.optim.Optimizer:
    """adam | sgd | rmsprop over one model's parameters, as `cfg` (an `OptimConfig`) says."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    name = cfg.name.value if hasattr(cfg.name, "value") else str(cfg.name)
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
    raise ValueError(f"optim.name: unknown {name!r}; choose adam|sgd|rmsprop")


def shared_settings(cfg: OptimConfig) -> tuple[str, float, float]:
    """What every member of a batch must share: (name, momentum, weight decay)."""
    name = cfg.name.value if hasattr(cfg.name, "value") else str(cfg.name)
    return name, float(cfg.momentum), float(cfg.weight_decay)


class StackedOptimizer:
    """torch's Adam / SGD / RMSprop over stacked parameters, member k at learning rate lrs[k]."""

    def __init__(self, params: Sequence[nn.Parameter], cfgs: Sequence[OptimConfig]) -> None:
        if not cfgs:
            raise ValueError("batched: at least one member is needed")
        shared = {shared_settings(c) for c in cfgs}
        if len(shared) > 1:
            raise ValueError(f"batched: members differ in optimizer settings {sorted(shared)}; "
                             "only the learning rate may differ")
        self.name, self.momentum, self.weight_decay = shared.pop()
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

    def _lr(self, param: Tensor, scale: float = 1.0) -> Tensor:
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
            if self.weight_decay != 0:
                grad = grad.add(param, alpha=self.weight_decay)
            if index not in self.state:
                self.state[index] = self._fresh(param)
            state = self.state[index]
            getattr(self, f"_{self.name}")(param, grad, state)

    def _fresh(self, param: Tensor) -> dict[str, Any]:
        zeros = lambda: torch.zeros_like(param, memory_format=torch.preserve_format)  # noqa: E731
        if self.name == "adam":
            return {"step": torch.tensor(0.0), "exp_avg": zeros(), "exp_avg_sq": zeros()}
        if self.name == "sgd":
            return {"momentum_buffer": None}
        state = {"step": torch.tensor(0.0), "square_avg": zeros()}
        if self.momentum > 0:
            state["momentum_buffer"] = zeros()
        return state

    def _adam(self, param: Tensor, grad: Tensor, state: dict[str, Any]) -> None:
        beta1, beta2 = ADAM_BETAS
        state["step"] += 1
        step = float(state["step"])
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        denom = (state["exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(EPS)
        # torch: param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)
        param.addcdiv_(state["exp_avg"] * self._lr(param, 1 / (1 - beta1**step)), denom)

    def _sgd(self, param: Tensor, grad: Tensor, state: dict[str, Any]) -> None:
        if self.momentum != 0:
            if state["momentum_buffer"] is None:
                state["momentum_buffer"] = grad.detach().clone()
            else:
                state["momentum_buffer"].mul_(self.momentum).add_(grad)
            grad = state["momentum_buffer"]
        param.addcmul_(grad, self._lr(param))

    def _rmsprop(self, param: Tensor, grad: Tensor, state: dict[str, Any]) -> None:
        state["step"] += 1
        square_avg = state["square_avg"]
        square_avg.mul_(RMSPROP_ALPHA).addcmul_(grad, grad, value=1 - RMSPROP_ALPHA)
        avg = square_avg.sqrt().add_(EPS)
        if self.momentum > 0:
            buffer = state["momentum_buffer"]
            buffer.mul_(self.momentum).addcdiv_(grad, avg)
            param.addcmul_(buffer, self._lr(param))
        else:
            param.addcdiv_(grad * self._lr(param), avg)

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
