"""The minimal GRU and LSTM of Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs All
We Needed?" (arXiv 2410.01201, section 3): gated cells whose gates read the input only, so
that the recurrence is linear in the state and a parallel scan can train it. Their sequential
mode (the paper's reference form, which this step is; recalled from the paper, and checked
against lucidrains/minGRU-pytorch and the Edifice library's MinLSTM documentation, read):

    minGRU:   z = σ(Linear_z(x))      h̃ = Linear_h(x)      h' = (1 − z) ⊙ h + z ⊙ h̃
    minLSTM:  f = σ(Linear_f(x))      i = σ(Linear_i(x))      h̃ = Linear_h(x)
              f' = f / (f + i)        i' = i / (f + i)        h' = f' ⊙ h + i' ⊙ h̃

Linear(x) = W x + b, the input projection the caller makes for all steps at once (rows in
`gates` order: z, h for minGRU; f, i, h for minLSTM), initialized as torch's nn.Linear:
W and b ~ U(±1/sqrt(fan_in)). z is the paper's update gate: the share of the candidate that
is written (torch's GRU names the share kept z; here it is 1 − z). minLSTM's normalization
makes f' + i' = 1, its "length independence scaling": h stays a convex combination of
candidates, whatever the length.

Where this differs from the paper and its public ports:
- h̃ = Linear_h(x) with no activation, as the paper's sequential minGRU and minLSTM. Its
  log-space version (for the parallel scan's numerical stability) passes h̃ through
  g(x) = x + 0.5 for x >= 0, σ(x) below, so that h stays positive; lucidrains/minGRU-pytorch
  (minGRU.py, minLSTM.py, read) implements only that version, without biases and with g in
  its sequential branch too. The harness trains by backprop through the steps (no scan), so
  the positivity g buys is not needed; the plain form is the paper's definition.
- No parallel scan: the harness's model runs a cell one step at a time (harness/models.py);
  training through a scan would need a whole-sequence hook in the model.
- The paper stacks these layers in blocks with normalization, an MLP and residual
  connections; here, as for every cell, a layer's h is what the readout and the layer above
  read.

There is no recurrent matrix: every gate reads the input only, so W_hh is zero by definition
(`recurrent` gives that zero matrix, in `gates` row blocks), and no spectral metric is
logged (`dynamics` reports none). What the state keeps is the gates' business: the
diagnostics report minGRU's z and minLSTM's f' (mean and saturated share; i' = 1 − f', so its
mean is one minus f's and its saturated share the same).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from harness import names
from harness.cells import Cell, Gate, GateMetric, Step, register
from harness.cells.ops import Context, clip_grad

if TYPE_CHECKING:
    from torch import Tensor

Shapes = Callable[[int, int, Mapping[str, Any]], dict[str, tuple[int, ...]]]
MINGRU_GATES = (Gate("z", "update gate (share of the candidate written)"),
                Gate("h", "candidate"))
MINLSTM_GATES = (Gate("f", "forget gate"), Gate("i", "input gate"), Gate("h", "candidate"))


def mingru_step(w: Mapping[str, Tensor], x: Tensor, state: tuple[Tensor, ...],
                ctx: Context) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
    (h,) = state
    z_pre, candidate = clip_grad(x, ctx.clip).chunk(2, dim=-1)
    z = z_pre.sigmoid()
    return (h.lerp(candidate, z),), {"z": z}  # lerp: h + z (h̃ − h) = (1 − z) h + z h̃


def minlstm_step(w: Mapping[str, Tensor], x: Tensor, state: tuple[Tensor, ...],
                 ctx: Context) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
    (h,) = state
    f_pre, i_pre, candidate = clip_grad(x, ctx.clip).chunk(3, dim=-1)
    f, i = f_pre.sigmoid(), i_pre.sigmoid()
    total = f + i
    return ((f * h + i * candidate) / total,), {"f": f / total}  # f' h + i' h̃, and f'


def linear_shapes(blocks: int) -> Shapes:
    """The cell's own parameters: the input projection of `blocks` H-row blocks, with bias."""
    def shapes(input_size: int, hidden: int,
               options: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        return {"weight_ih": (blocks * hidden, input_size), "bias_ih": (blocks * hidden,)}
    return shapes


def linear_init(params: dict[str, Tensor], hidden: int,
                options: Mapping[str, Any]) -> dict[str, Tensor]:
    """nn.Linear's init, W and b ~ U(±1/sqrt(fan_in)) (the paper's `Linear`)."""
    import torch

    bound = 1 / math.sqrt(params["weight_ih"].shape[1])
    with torch.no_grad():
        params["weight_ih"].uniform_(-bound, bound)
        params["bias_ih"].uniform_(-bound, bound)
    return {}


def zero_recurrence(w: Mapping[str, Tensor], hidden: int) -> Tensor:
    """W_hh of gates that read no state: zero, [G·H, H] (G: the gate blocks)."""
    weight = w["weight_ih"]
    return weight.new_zeros(weight.shape[0], hidden)


def no_dynamics(w: Mapping[str, Tensor], hidden: int) -> dict[str, float]:
    """No recurrence matrix to read: the gate metrics say what the state keeps."""
    return {}


def minimal(name: str, title: str, summary: str, gates: tuple[Gate, ...], step: Step,
            keep: GateMetric, kept: int = 0) -> Cell:
    """A minimal cell: its gates and candidate are linear maps of x alone (no W_hh)."""
    return Cell(name, summary, gates, step, activations=("identity",), matrix_init=False,
                extra=linear_shapes(len(gates)), setup=linear_init, recurrent=zero_recurrence,
                dynamics=no_dynamics, gate_metrics=(keep,), kept=kept, title=title)


register(minimal("mingru", "minGRU", "minGRU (Feng et al. 2024): z = σ(W_z x + b_z), "
                           "h' = (1 − z) h + z (W_h x + b_h)", MINGRU_GATES, mingru_step,
                 GateMetric("z", names.MINGRU_UPDATE_GATE_MEAN,
                            names.MINGRU_UPDATE_GATE_SATURATED)))
register(minimal("minlstm", "minLSTM", "minLSTM (Feng et al. 2024): f' = f / (f + i), "
                            "h' = f' h + (1 − f') (W_h x + b_h), gates of x only",
                 MINLSTM_GATES, minlstm_step,
                 GateMetric("f", names.MINLSTM_FORGET_GATE_MEAN,
                            names.MINLSTM_FORGET_GATE_SATURATED),
                 kept=7))  # per unit and step: f, i, f + i, f h, i h̃, h, h̃
