"""The unitary evolution RNN (uRNN) of Arjovsky, Shah & Bengio 2016, as their code defines it
(amarshah/complex_RNN, models.py `complex_RNN`, read):

    h' = modReLU(W h + V x),   W = D3 R2 F⁻¹ D2 Π R1 F D1

with N complex hidden units held as real and imaginary parts, h = [Re h | Im h] (2N numbers).

- D_k = diag(exp(i θ_k)): diagonal phases, θ_k ~ U(−π, π);
- F, F⁻¹: the unitary discrete Fourier transform and its inverse (norm 1/sqrt(N));
- R_k = I − 2 u u* / ‖u‖²: a complex Householder reflection. The code applies
  x − 2 conj(v) (vᵀ x) / ‖v‖² for its parameter v, i.e. u = conj(v); v Glorot-uniform
  (their `initialize_matrix(2, 2N)`: U(±sqrt(6 / (2 + 2N))));
- Π: a fixed random permutation of the N units (a buffer, drawn at init);
- V: the input map to 2N reals, Glorot-uniform U(±sqrt(6 / (D + 2N))), no bias;
- modReLU(z) = z · max(|z| + b, 0) / (|z| + 1e-5), b ~ U(−0.01, 0.01), per complex unit;
- h0 is learned, U(±sqrt(3 / (2N))) (set `model.learn_init_state=true`, as conf/model/urnn.yaml
  does; with it false h0 is 0).

W is unitary by construction: it preserves ‖h‖ exactly (tests/test_cells.py checks 1,000
steps). The step multiplies by W composed once per sequence from its factors (`prepare`):
the same linear map, one 2N x 2N matmul per step where the factors would take about forty
small ops (on a CPU at N = 128 the matmul is the faster; the paper's O(N log N) per step pays
off at larger N). The readout U reads all 2N numbers (the model's readout; `model.init_readout=
glorot_uniform` is the authors' init). The diagnostics' "gate" is modReLU's rescale factor:
its mean, and the share of units it zeroes or passes nearly unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from harness import names
from harness.cells import Cell, Gate, GateMetric, register
from harness.cells.ops import Context, clip_grad, linear, permute

if TYPE_CHECKING:
    from torch import Tensor

MODRELU_EPS = 1e-5  # their `modulus + 1e-5`
MODULUS_MIN = 1e-15
MODRELU_BIAS_INIT = 0.01
SCALE = GateMetric("scale", names.MODRELU_SCALE_MEAN, names.MODRELU_SCALE_SATURATED)


def times_diag(h: Tensor, theta: Tensor) -> Tensor:
    """h ⊙ exp(i θ) on [re | im] halves."""
    import torch

    re, im = h.chunk(2, dim=-1)
    cos, sin = theta.cos(), theta.sin()
    return torch.cat((re * cos - im * sin, re * sin + im * cos), dim=-1)


def fourier(h: Tensor, inverse: bool) -> Tensor:
    """The unitary DFT (or its inverse) of [re | im] halves."""
    import torch

    re, im = h.chunk(2, dim=-1)
    transform = torch.fft.ifft if inverse else torch.fft.fft
    out = transform(torch.complex(re, im), norm="ortho")
    return torch.cat((out.real, out.imag), dim=-1)


def times_reflection(h: Tensor, v: Tensor) -> Tensor:
    """h − 2 conj(v) (vᵀ h) / ‖v‖², on [re | im] halves (their `times_reflection`)."""
    import torch

    re, im = h.chunk(2, dim=-1)
    v_re, v_im = v.chunk(2, dim=-1)
    s_re = (re * v_re).sum(-1, keepdim=True) - (im * v_im).sum(-1, keepdim=True)
    s_im = (re * v_im).sum(-1, keepdim=True) + (im * v_re).sum(-1, keepdim=True)
    scale = 2.0 / (v * v).sum(-1, keepdim=True)
    return torch.cat((re - scale * (s_re * v_re + s_im * v_im),
                      im - scale * (s_im * v_re - s_re * v_im)), dim=-1)


def unitary(w: Mapping[str, Tensor], h: Tensor) -> Tensor:
    """W h = D3 R2 F⁻¹ D2 Π R1 F D1 h."""
    import torch

    h = fourier(times_diag(h, w["theta1"]), inverse=False)
    h = times_reflection(h, w["reflection1"])
    re, im = h.chunk(2, dim=-1)
    index = w["permutation"]
    h = torch.cat((permute(re, index), permute(im, index)), dim=-1)
    h = fourier(times_diag(h, w["theta2"]), inverse=True)
    return times_diag(times_reflection(h, w["reflection2"]), w["theta3"])


def step(w: Mapping[str, Tensor], x: Tensor, state: tuple[Tensor, ...],
         ctx: Context) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
    import torch

    (h,) = state
    # W h through W composed once per sequence (`prepare`): the same linear map as applying
    # its eight factors in turn, one matmul per step instead of about forty small ops
    pre = clip_grad(linear(h, w["recurrence"]) + x, ctx.clip)
    re, im = pre.chunk(2, dim=-1)
    # |z|, kept off exact 0 (where sqrt's gradient is infinite: a held member's zero state
    # would make its discarded step's gradient NaN); no effect above |z| = 1e-15
    modulus = (re * re + im * im).clamp_min(MODULUS_MIN ** 2).sqrt()
    scale = torch.relu(modulus + w["modrelu_bias"]) / (modulus + MODRELU_EPS)
    return (pre * torch.cat((scale, scale), dim=-1),), {"scale": scale}


def recurrent(w: Mapping[str, Tensor], hidden: int) -> Tensor:
    """W as a real 2N x 2N matrix acting on [re | im] column vectors ([K, 2N, 2N] for K
    stacked members)."""
    import torch

    eye = torch.eye(2 * hidden, dtype=w["theta1"].dtype, device=w["theta1"].device)
    return unitary(w, eye).transpose(-1, -2)  # row j is W e_j: the transpose is W's matrix


def prepare(w: Mapping[str, Tensor], hidden: int) -> dict[str, Tensor]:
    """Once per sequence: W composed from its factors (a node of the graph, so the gradient
    reaches the phases and reflections through it)."""
    return {"recurrence": recurrent(w, hidden)}


def shapes(input_size: int, hidden: int,
           options: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {"weight_ih": (2 * hidden, input_size),
            "theta1": (hidden,), "theta2": (hidden,), "theta3": (hidden,),
            "reflection1": (2 * hidden,), "reflection2": (2 * hidden,),
            "modrelu_bias": (hidden,)}


def setup(params: dict[str, Tensor], hidden: int, options: Mapping[str, Any]) -> dict[str, Tensor]:
    """Their inits (from torch's global RNG), and the permutation buffer."""
    import torch

    with torch.no_grad():
        weight_ih = params["weight_ih"]
        bound = math.sqrt(6.0 / (weight_ih.shape[1] + weight_ih.shape[0]))
        weight_ih.uniform_(-bound, bound)
        for name in ("theta1", "theta2", "theta3"):
            params[name].uniform_(-math.pi, math.pi)
        bound = math.sqrt(6.0 / (2 + 2 * hidden))  # initialize_matrix(2, 2N)
        for name in ("reflection1", "reflection2"):
            params[name].uniform_(-bound, bound)
        params["modrelu_bias"].uniform_(-MODRELU_BIAS_INIT, MODRELU_BIAS_INIT)
        if "h0" in params:
            bound = math.sqrt(3.0 / 2 / hidden)
            params["h0"].uniform_(-bound, bound)
    return {"permutation": torch.randperm(hidden)}


register(Cell("urnn", "the unitary RNN: h' = modReLU(D3 R2 F⁻¹ D2 Π R1 F D1 h + V x), complex h",
              (Gate("w", "unitary recurrent matrix"),), step, width=2,
              activations=("modrelu",), matrix_init=False, extra=shapes, setup=setup,
              prepare=prepare, recurrent=recurrent, gate_metrics=(SCALE,),
              # kept per complex unit and step: about 8 transforms of 2 numbers, and modReLU
              kept=20, title="uRNN"))
