"""The GRU as torch defines it (gates r, z, n; Cho et al. 2014):

    r = σ(W_ir x + b_ir + W_hr h + b_hr)      z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))      h' = (1 − z) ⊙ n + z ⊙ h

z is the share of the old state that is kept, so it plays the LSTM forget gate's role.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from harness.cells import UPDATE, Cell, Gate, register
from harness.cells.ops import Context, clip_grad, linear

if TYPE_CHECKING:
    from torch import Tensor


def step(w: Mapping[str, Tensor], x: Tensor, state: tuple[Tensor, ...],
         ctx: Context) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
    (h,) = state
    x_r, x_z, x_n = x.chunk(3, dim=-1)
    h_r, h_z, h_n = linear(h, w["weight_hh"], w["bias_hh"]).chunk(3, dim=-1)
    r = clip_grad(x_r + h_r, ctx.clip).sigmoid()
    z = clip_grad(x_z + h_z, ctx.clip).sigmoid()
    n = clip_grad(x_n + r * h_n, ctx.clip).tanh()
    return (n.lerp(h, z),), {"z": z}  # lerp: n + z (h - n) = (1 - z) n + z h


register(Cell("gru", "torch's GRU (gates r, z, n): h' = (1 - z) n + z h",
              (Gate("r", "reset gate"), Gate("z", "update gate"), Gate("n", "candidate")), step,
              holder="GRU", fused=True, kernel="gru", keep_gate="z", gate_metrics=(UPDATE,),
              title="GRU"))
