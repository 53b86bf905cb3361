"""Gradient clipping with an audit: every call returns the pre-clip global norm and whether
clipping fired.

- `none`: nothing is changed; the norm is still measured.
- `norm`: `clip_grad_norm_` rescales the whole gradient so its global L2 norm is at most the
  threshold (Pascanu, Mikolov & Bengio 2013). Fired when the pre-clip norm exceeds it.
- `value`: `clip_grad_value_` clamps every element to [-threshold, threshold]. Fired when
  any element's magnitude exceeds it.

Call it after `loss.backward()` and before `optimizer.step()`: called earlier, there is no
gradient to clip (a known bug of peer code).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

MODES = ("none", "norm", "value")


class Clipper:
    """Clip gradients in place by mode and threshold; return (pre-clip norm, fired)."""

    def __init__(self, mode: str, threshold: float) -> None:
        if mode not in MODES:
            raise ValueError(f"clip.mode: unknown {mode!r}; choose one of {list(MODES)}")
        if threshold <= 0:
            raise ValueError(f"clip.threshold: must be > 0, got {threshold}")
        self.mode = mode
        self.threshold = float(threshold)

    def __call__(self, parameters: Iterable[nn.Parameter]) -> tuple[Tensor, Tensor]:
        params = [p for p in parameters if p.grad is not None]
        grads = [p.grad for p in params]
        if not grads:
            raise RuntimeError("clipping found no gradients: call it after loss.backward()")
        if self.mode == "norm":
            # Returns the total norm *before* rescaling.
            pre = nn.utils.clip_grad_norm_(params, self.threshold)
            return pre, pre > self.threshold
        pre = nn.utils.get_total_norm(grads)
        if self.mode == "none":
            return pre, torch.zeros((), dtype=torch.bool)
        largest = torch.stack([g.detach().abs().max() for g in grads]).max()
        nn.utils.clip_grad_value_(params, self.threshold)
        return pre, largest > self.threshold

