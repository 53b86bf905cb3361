"""The tensor operations the cells' steps share, written once for both layouts a step sees:

- one model: x [B, n], a weight matrix [out, in], a vector [n];
- K stacked members (harness/batched.py): x [K, B, n], a weight matrix [K, out, in], a vector
  [K, 1, n] (the member axis first, broadcast over the batch).

torch is imported inside the functions: this package is read by the config's checks before
torch is imported (harness/schema.py), and a module-level import would pull it in there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class Context:
    """What a step needs besides its weights and state.

    `activate`: a vanilla cell's activation (for stacked members of mixed activations, a
    per-member selection). `clip`: `clip.mode=backprop`'s threshold, or None. `options`: the
    cell's own options, resolved (harness/cells.Cell.options)."""

    hidden: int
    activate: Callable[[Tensor], Tensor] | None = None
    clip: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x W^T + b, one model's or K members' (one batched matmul)."""
    import torch

    if weight.dim() == 2:
        return torch.nn.functional.linear(x, weight, bias)
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias, x, weight.transpose(1, 2))


def clip_grad(pre: Tensor, clip: float | None) -> Tensor:
    """`pre` itself; during backprop the gradient reaching it is clamped to ±clip (Lasagne's
    `grad_clipping`, theano.gradient.grad_clip: the total gradient into this node, per
    element, before it flows on to the weights and the earlier time steps)."""
    if clip is not None and pre.requires_grad:
        pre.register_hook(lambda grad: grad.clamp(-clip, clip))
    return pre


def permute(x: Tensor, index: Tensor) -> Tensor:
    """x's last axis reordered by `index`: [n] for one model, [K, 1, n] for K members."""
    import torch

    if index.dim() == 1:
        return x[..., index]
    return torch.gather(x, -1, index.expand(*x.shape[:-1], index.shape[-1]))


def expand_state(initial: Tensor, like: Tensor) -> Tensor:
    """A learned initial state ([n], or [K, 1, n] for K members) for every sequence of the
    batch that `like` ([B, ·] or [K, B, ·]) holds."""
    return initial.expand(*like.shape[:-1], initial.shape[-1])
