"""Gradient clipping with an audit: every call returns the pre-clip and post-clip global
norms, whether clipping fired and whether the NaN guard did, and fails loudly if clipping
did not do its job.

- `none`: nothing is changed; the norm is still measured.
- `norm`: `clip_grad_norm_` rescales the whole gradient so its global L2 norm is at most the
  threshold (Pascanu, Mikolov & Bengio 2013). Fired when the pre-clip norm exceeds it.
- `value`: `clip_grad_value_` clamps every element to [-threshold, threshold]. Fired when
  any element's magnitude exceeds it.
- `backprop`: the clamp happens inside backprop through time, in the cells (Lasagne's
  `grad_clipping`: the gradient reaching each time step's gate pre-activations is clamped to
  [-threshold, threshold]); here, as with `none`, the parameter gradients are left as they are
  and only measured (pre == post, never fired, never failed).

The NaN guard (`nan_guard`, with any mode) is Pascanu et al. 2013's (pascanur/trainingRNNs,
`RNN.py` lines 219-243, read): when the pre-clip norm is NaN, inf or above 1e10, the gradient
cannot be trusted, so the recurrent matrices' gradient becomes 0.02 times the matrices (the
step shrinks them) and every other gradient 0. It runs after the mode's clipping, as there
(there it sits inside the `rescale` clipping style; here it is a switch of its own), and the
caller names the recurrent matrices (`recurrent=`). A guarded step is not a clipping failure.

Call it after `loss.backward()` and before `optimizer.step()`: called earlier, there is no
gradient to clip (a known bug of peer code). After clipping, the gradient is measured again;
a norm above the threshold (norm mode) or an element above it (value mode), beyond float
tolerance, sets the audit's `failed` and `ClipResult.check` raises `ClippingError`: clipping
that silently does nothing would invalidate every comparison made with it. The audit stays on
the gradients' device, read by nobody during the step, so clipping adds no host sync; the
training driver reads (and checks) the audits of its steps together, at logging cadence.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

MODES = ("none", "norm", "value", "backprop")
TOLERANCE = 1e-4  # relative: clip_grad_norm_ rescales by threshold / (norm + 1e-6)
GUARD_LIMIT = 1e10  # the NaN guard fires when the pre-clip norm is not at most this
GUARD_SHRINK = 0.02  # ... and the recurrent matrices' gradient becomes this times them


class ClippingError(RuntimeError):
    """The gradient still exceeds the threshold after clipping."""


class ClipResult(NamedTuple):
    pre: Tensor  # global L2 norm before clipping
    post: Tensor  # global L2 norm after clipping and the guard: what the optimizer applies
    fired: Tensor  # bool: the mode's clipping changed the gradient
    failed: Tensor  # bool: the gradient still exceeds the threshold after clipping
    guarded: Tensor  # bool: the NaN guard replaced the gradient (never without `nan_guard`)

    def check(self) -> ClipResult:
        """Raise `ClippingError` if clipping failed (reads the audit: a host sync)."""
        if bool(self.failed.any()):
            raise ClippingError(failure(self.pre, self.post))
        return self


def failure(pre: Tensor | float, post: Tensor | float) -> str:
    """What `ClippingError` says of a step whose clipping failed."""
    return (f"clipping failed: after clipping, the gradient still exceeds the threshold "
            f"(pre-clip norm {_numbers(pre)}, post-clip norm {_numbers(post)})")


def _numbers(value: Tensor | float) -> str:
    values = value.reshape(-1).tolist() if isinstance(value, Tensor) else [value]
    return ", ".join(f"{v:.6g}" for v in values)


class Clipper:
    """Clip gradients in place by mode and threshold, then apply the NaN guard if on; return
    the audit (`ClipResult`, 0-dim tensors on the gradients' device)."""

    def __init__(self, mode: str, threshold: float, nan_guard: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"clip.mode: unknown {mode!r}; choose one of {list(MODES)}")
        if threshold <= 0:
            raise ValueError(f"clip.threshold: must be > 0, got {threshold}")
        self.mode = mode
        self.threshold = float(threshold)
        self.nan_guard = nan_guard

    @classmethod
    def of(cls, cfg: Any) -> Clipper:
        """The clipper of a `clip` config (`harness.schema.ClipConfig`)."""
        mode = cfg.mode.value if hasattr(cfg.mode, "value") else str(cfg.mode)
        return cls(mode, cfg.threshold, bool(cfg.nan_guard))

    def __call__(self, parameters: Iterable[nn.Parameter],
                 recurrent: Iterable[Tensor] = ()) -> ClipResult:
        """Clip the gradients of `parameters`; `recurrent`: which of them are the recurrent
        matrices (read by the NaN guard only, which needs at least one)."""
        params = [p for p in parameters if p.grad is not None]
        grads = [p.grad for p in params]
        if not grads:
            raise RuntimeError("clipping found no gradients: call it after loss.backward()")
        bound = self.threshold * (1 + TOLERANCE)
        if self.mode == "norm":
            pre = nn.utils.clip_grad_norm_(params, self.threshold)  # the norm before rescaling
        else:
            pre = nn.utils.get_total_norm(grads)
        never = torch.zeros((), dtype=torch.bool, device=pre.device)
        fired = failed = never
        if self.mode == "norm":
            fired = pre > self.threshold
        if self.mode == "value":
            fired = largest(grads) > self.threshold
            nn.utils.clip_grad_value_(params, self.threshold)
            failed = largest(grads) > bound
        guarded = never
        if self.nan_guard:
            guarded = untrusted(pre)
            guard(params, guarded, recurrent)
        changed = self.mode in ("norm", "value") or self.nan_guard
        post = nn.utils.get_total_norm(grads) if changed else pre
        if self.mode == "norm":
            failed = post > bound
        return ClipResult(pre, post, fired, failed & ~guarded, guarded)


def largest(grads: list[Tensor]) -> Tensor:
    """The largest gradient element in magnitude."""
    return torch.stack([g.detach().abs().max() for g in grads]).max()


def untrusted(pre: Tensor) -> Tensor:
    """Where the NaN guard fires: a pre-clip norm that is NaN, inf or above `GUARD_LIMIT`."""
    return ~(pre <= GUARD_LIMIT)  # NaN compares false


def guard(params: list[nn.Parameter], guarded: Tensor, recurrent: Iterable[Tensor]) -> None:
    """Pascanu et al. 2013's guard on the gradients of `params` (each has one): where
    `guarded`, the gradient of each recurrent matrix becomes `GUARD_SHRINK` times the matrix,
    every other gradient 0. `guarded` is a 0-dim bool, or [K] for parameters stacked over K
    members (harness/batched.py: member k's slices where guarded[k]). Decided on the device
    (`torch.where`), so no step waits for a read."""
    matrices = {id(p) for p in recurrent}
    if not matrices:
        raise ValueError("clip.nan_guard: no recurrent matrix named (recurrent=...): the guard "
                         "replaces their gradient by 0.02 times them")
    if not matrices <= {id(p) for p in params}:
        raise ValueError("clip.nan_guard: a recurrent matrix named is not among the parameters "
                         "with a gradient")
    for param in params:
        where = guarded.view(-1, *([1] * (param.dim() - 1))) if guarded.dim() else guarded
        if id(param) in matrices:
            param.grad.copy_(torch.where(where, param.detach() * GUARD_SHRINK, param.grad))
        else:
            param.grad.masked_fill_(where, 0.0)
