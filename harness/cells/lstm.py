"""The LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000) as torch
defines it, gates i, f, g, o:

    i, f, o = σ(W_i· x + b_i· + W_h· h + b_h·)      g = tanh(W_ig x + b_ig + W_hg h + b_hg)
    c' = f ⊙ c + i ⊙ g      h' = o ⊙ tanh(c')

and the peephole LSTM (`lstm_peephole`, Gers & Schmidhuber 2000), whose gates also read the
cell state, in the two forms the replayed papers' code used (`model.peephole`):

- `diagonal`, Lasagne's LSTMLayer (the IndRNN authors' baseline): i and f add p_i ⊙ c and
  p_f ⊙ c (the old cell state), o adds p_o ⊙ c' (the new one), each p a vector; initialized
  N(0, 0.1²) as Lasagne's `W_cell`;
- `output`, the uRNN authors' LSTM (amarshah/complex_RNN models.py): only o reads the new
  cell state, through a full H x H matrix V_o (o adds V_o c'), initialized Glorot-uniform
  as their code does.

The weights of both live in torch's nn.LSTM (same layout, gate order i, f, g, o), so only the
peepholes are the cell's own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from harness.cells import FORGET, Cell, Gate, register
from harness.cells.ops import Context, clip_grad, linear

if TYPE_CHECKING:
    from torch import Tensor

GATES = (Gate("i", "input gate"), Gate("f", "forget gate"), Gate("g", "cell candidate"),
         Gate("o", "output gate"))
PEEPHOLE_STD = 0.1  # Lasagne's Gate(W_cell=init.Normal(0.1))


def step(w: Mapping[str, Tensor], x: Tensor, state: tuple[Tensor, ...],
         ctx: Context) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
    h, c = state
    gates = clip_grad(x + linear(h, w["weight_hh"], w["bias_hh"]), ctx.clip)
    i, f, g, o = gates.chunk(4, dim=-1)
    peephole = ctx.options.get("peephole")
    if peephole == "diagonal":
        i = i + c * w["peephole_i"]
        f = f + c * w["peephole_f"]
    forget = f.sigmoid()
    c = forget * c + i.sigmoid() * g.tanh()
    if peephole == "diagonal":
        o = o + c * w["peephole_o"]
    elif peephole == "output":
        o = o + linear(c, w["peephole_o"])
    return (o.sigmoid() * c.tanh(), c), {"f": forget}


def peepholes(input_size: int, hidden: int,
              options: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    if options["peephole"] == "diagonal":
        return {"peephole_i": (hidden,), "peephole_f": (hidden,), "peephole_o": (hidden,)}
    return {"peephole_o": (hidden, hidden)}


def init_peepholes(params: dict[str, Tensor], hidden: int,
                   options: Mapping[str, Any]) -> dict[str, Tensor]:
    import torch

    with torch.no_grad():
        if options["peephole"] == "diagonal":
            for name in ("peephole_i", "peephole_f", "peephole_o"):
                params[name].normal_(0.0, PEEPHOLE_STD)
        else:
            bound = math.sqrt(6.0 / (2 * hidden))  # Glorot: fan in = fan out = hidden
            params["peephole_o"].uniform_(-bound, bound)
    return {}


register(Cell("lstm", "torch's LSTM (gates i, f, g, o)", GATES, step, holder="LSTM", fused=True,
              kernel="lstm", state=("h", "c"), options={"forget_bias": 1.0}, keep_gate="f",
              chrono_opposite="i", gate_metrics=(FORGET,), title="LSTM"))
register(Cell("lstm_peephole", "the LSTM whose gates also read the cell state (model.peephole)",
              GATES, step, holder="LSTM", state=("h", "c"),
              options={"forget_bias": 1.0, "peephole": "diagonal"}, extra=peepholes,
              setup=init_peepholes, keep_gate="f", chrono_opposite="i", gate_metrics=(FORGET,),
              title="peephole LSTM"))
