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
tolerance, raises `ClippingError`: clipping that silently does nothing would invalidate every
comparison made with it.
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
        if self.mode == "none":
            pre = nn.utils.get_total_norm(grads)
            return ClipResult(pre, pre, torch.zeros((), dtype=torch.bool))
        if self.mode == "norm":
            # Returns the total norm *before* rescaling.
            pre = nn.utils.clip_grad_norm_(params, self.threshold)
            post = nn.utils.get_total_norm(grads)
            if post > self.threshold * (1 + TOLERANCE):
                raise ClippingError(f"norm clipping failed: post-clip norm {float(post):.6g} > "
                                    f"threshold {self.threshold:g} (pre-clip {float(pre):.6g})")
            return ClipResult(pre, post, pre > self.threshold)
        pre = nn.utils.get_total_norm(grads)
        largest = torch.stack([g.detach().abs().max() for g in grads]).max()
        nn.utils.clip_grad_value_(params, self.threshold)
        after = torch.stack([g.detach().abs().max() for g in grads]).max()
        if after > self.threshold * (1 + TOLERANCE):
            raise ClippingError(f"value clipping failed: an element {float(after):.6g} > "
                                f"threshold {self.threshold:g} after clipping")
        return ClipResult(pre, nn.utils.get_total_norm(grads), largest > self.threshold)

