"""Gradient clipping with an audit: every call returns the pre-clip and post-clip global
norms and whether clipping fired, and fails loudly if clipping did not do its job.

- `none`: nothing is changed; the norm is still measured.
- `norm`: `clip_grad_norm_` rescales the whole gradient so its global L2 norm is at most the
  threshold (Pascanu, Mikolov & Bengio 2013). Fired when the pre-clip norm exceeds it.
- `value`: `clip_grad_value_` clamps every element to [-threshold, threshold]. Fired when
  any element's magnitude exceeds it.

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

MODES = ("none", "norm", "value")
TOLERANCE = 1e-4  # relative: clip_grad_norm_ rescales by threshold / (norm + 1e-6)


class ClippingError(RuntimeError):
    """The gradient still exceeds the threshold after clipping."""


class ClipResult(NamedTuple):
    pre: Tensor  # global L2 norm before clipping
    post: Tensor  # global L2 norm after clipping
    fired: Tensor  # bool: clipping changed the gradient
    failed: Tensor  # bool: the gradient still exceeds the threshold after clipping

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
    """Clip gradients in place by mode and threshold; return the audit (pre, post, fired)."""

    def __init__(self, mode: str, threshold: float) -> None:
        if mode not in MODES:
            raise ValueError(f"clip.mode: unknown {mode!r}; choose one of {list(MODES)}")
        if threshold <= 0:
            raise ValueError(f"clip.threshold: must be > 0, got {threshold}")
        self.mode = mode
        self.threshold = float(threshold)

    @classmethod
    def of(cls, cfg: Any) -> Clipper:
        """The clipper of a `clip` config (`harness.schema.ClipConfig`)."""
        mode = cfg.mode.value if hasattr(cfg.mode, "value") else str(cfg.mode)
        return cls(mode, cfg.threshold)

    def __call__(self, parameters: Iterable[nn.Parameter]) -> ClipResult:
        params = [p for p in parameters if p.grad is not None]
        grads = [p.grad for p in params]
        if not grads:
            raise RuntimeError("clipping found no gradients: call it after loss.backward()")
        bound = self.threshold * (1 + TOLERANCE)
        if self.mode == "none":
            pre = nn.utils.get_total_norm(grads)
            never = torch.zeros((), dtype=torch.bool, device=pre.device)
            return ClipResult(pre, pre, never, never)
        if self.mode == "norm":
            # Returns the total norm *before* rescaling.
            pre = nn.utils.clip_grad_norm_(params, self.threshold)
            post = nn.utils.get_total_norm(grads)
            return ClipResult(pre, post, pre > self.threshold, post > bound)
        pre = nn.utils.get_total_norm(grads)
        largest = torch.stack([g.detach().abs().max() for g in grads]).max()
        nn.utils.clip_grad_value_(params, self.threshold)
        after = torch.stack([g.detach().abs().max() for g in grads]).max()
        return ClipResult(pre, nn.utils.get_total_norm(grads), largest > self.threshold,
                          after > bound)

