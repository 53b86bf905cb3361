"""The vanilla RNN, h' = act(W_ih x + b_ih + W_hh h + b_hh), and the orthogonal RNN: the same
step with W_hh kept orthogonal by torch's parametrization (W_hh = base · exp(A), A
skew-symmetric), the simplest member of the unitary/orthogonal family (uRNN, expRNN).

The activation is the config's (`model.activation`); torch's fused nn.RNN computes tanh and
ReLU, the other activations run this step (harness/models.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from harness.cells import VANILLA_ACTIVATIONS, Cell, Gate, register
from harness.cells.ops import Context, clip_grad, linear

if TYPE_CHECKING:
    from torch import Tensor


def step(w: Mapping[str, Tensor], x: Tensor, state: tuple[Tensor, ...],
         ctx: Context) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
    (h,) = state
    pre = clip_grad(x + linear(h, w["weight_hh"], w["bias_hh"]), ctx.clip)
    assert ctx.activate is not None, "a vanilla cell's step needs its activation"
    return (ctx.activate(pre),), {}


register(Cell("rnn", "h' = act(W_ih x + b_ih + W_hh h + b_hh)", (Gate("hh", "recurrent matrix"),),
              step, holder="RNN", fused=True, kernel="rnn", activations=VANILLA_ACTIVATIONS,
              vanilla=True, title="RNN"))
register(Cell("orth_rnn", "the vanilla RNN with W_hh kept orthogonal (W_hh = base · exp(A))",
              (Gate("hh", "orthogonal recurrent matrix"),), step, holder="RNN", fused=True,
              batched=False, activations=VANILLA_ACTIVATIONS, vanilla=True, orthogonal=True,
              title="orthogonal RNN"))
