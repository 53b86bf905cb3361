"""The Linear Recurrent Unit (LRU) of Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De
2023, "Resurrecting Recurrent Neural Networks for Long Sequences" (arXiv 2303.06349): a
diagonal complex linear recurrence on N = `hidden_size` complex units,

    x' = Λ x + γ ⊙ (B u),   Λ = diag(λ),   λ_j = exp(−exp(ν_j) + i exp(θ_j)),

held as [Re x | Im x] (2N numbers), with the exponential parameterization of modulus
|λ_j| = exp(−exp(ν_j)) < 1 and phase arg λ_j = exp(θ_j), and the normalization γ_j, a
parameter of its own (γ_j = exp(γ_log_j)). As the paper's pseudo-code `init_lru_parameters`
(its appendix; read in NicolasZucchet/minimal-LRU, lru/model.py, which follows it):

- ring init: u1, u2 ~ U[0, 1), |λ|² = u1 (r_max² − r_min²) + r_min² (so λ is uniform on the
  ring r_min <= |λ| <= r_max of the complex plane), ν = ln(−½ ln |λ|²), and the phase
  θ = ln(max_phase · u2), max_phase = 2π (the pseudo-code's 6.28);
- γ_log = ln sqrt(1 − |λ|²) at init, then trained (the pseudo-code returns it among the
  parameters);
- B = B_re + i B_im, both N(0, 1/(2 D)) for D inputs: `weight_ih` = [B_re; B_im] (2N x D),
  no bias, so the caller's input projection is [Re B u | Im B u].

`model.r_min`, `model.r_max` (defaults 0.9 and 0.999, the ring the paper's experiments start
from, recalled; the pseudo-code's function defaults are 0 and 1) must satisfy
0 <= r_min < r_max <= 1 (`check`).

The output. The paper's layer reads y = Re(C x) + D ⊙ u and its block follows it with a
GELU, a GLU (W1 y ⊙ σ(W2 y)), a residual connection and a normalization (Zucchet's
`SequenceLayer`). Here the model's readout reads [Re x | Im x], and a real linear map of those
is exactly Re(C x) + b (C = W_re − i W_im): the readout is C, plus a bias. The harness leaves
out D ⊙ u (a skip from the present input, which cannot recall anything), the GELU/GLU block,
the residual and the normalization, and the encoder in front: a one-layer model here is one
LRU and a linear decoder, a linear map of the input sequence before the softmax; a stacked
model stacks LRUs with no nonlinearity between them. Supplying them needs an output hook in
the model (what the readout and the layer above read, apart from the state the gradient
profile differentiates). The readout starts at the harness's default (U(±1/sqrt(2N))), not
the pseudo-code's C ~ N(0, 1/N); the paper's smaller learning rate for ν, θ, γ is not applied
(one rate for every parameter).

The diagnostics: the gradient-by-lag profile is taken with respect to the state x (2N
numbers). In place of the spectral radius, |λ| (min, median, max over the N units) at every
profile step (`dynamics`); `recurrent` is Λ as the real 2N x 2N matrix acting on [Re x | Im x]
(its spectral radius and largest singular value are both max |λ|).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from harness import names
from harness.cells import Cell, Gate, register
from harness.cells.ops import Context, clip_grad

if TYPE_CHECKING:
    from torch import Tensor

MAX_PHASE = 2 * math.pi
R_MIN, R_MAX = 0.9, 0.999


def eigenvalues(w: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(Re λ, Im λ) of every unit, from ν and θ."""
    modulus = (-w["nu_log"].detach().exp()).exp()
    phase = w["theta_log"].exp()
    return modulus * phase.cos(), modulus * phase.sin()


def prepare(w: Mapping[str, Tensor], hidden: int) -> dict[str, Tensor]:
    """Once per sequence, from the parameters (nodes of the graph): the step's three
    multipliers on 2N numbers, [a | a], [−b | b] and [γ | γ] for λ = a + i b."""
    import torch

    a, b = eigenvalues(w)
    gamma = w["gamma_log"].exp()
    return {"lambda_real": torch.cat((a, a), dim=-1), "lambda_imag": torch.cat((-b, b), dim=-1),
            "gamma": torch.cat((gamma, gamma), dim=-1)}


def step(w: Mapping[str, Tensor], x: Tensor, state: tuple[Tensor, ...],
         ctx: Context) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
    (h,) = state
    # λ x on [re | im]: [a re − b im | a im + b re] = [a | a] h + [−b | b] [im | re], where
    # [im | re] is h with its halves swapped (rolled by N); then γ ⊙ B u
    swapped = h.roll(ctx.hidden, dims=-1)
    new = h * w["lambda_real"] + swapped * w["lambda_imag"] + x * w["gamma"]
    return (clip_grad(new, ctx.clip),), {}


def recurrent(w: Mapping[str, Tensor], hidden: int) -> Tensor:
    """Λ as the real 2N x 2N matrix on [Re x | Im x]: [[diag a, −diag b], [diag b, diag a]]."""
    import torch

    a, b = (part.diag() for part in eigenvalues(w))
    return torch.cat((torch.cat((a, -b), dim=1), torch.cat((b, a), dim=1)), dim=0)


def dynamics(w: Mapping[str, Tensor], hidden: int) -> dict[str, float]:
    """|λ| over the units: min, median (torch's: the lower middle for even N) and max."""
    modulus = (-w["nu_log"].detach().exp()).exp()
    return {names.LAMBDA_MODULUS_MIN: float(modulus.min()),
            names.LAMBDA_MODULUS_MEDIAN: float(modulus.median()),
            names.LAMBDA_MODULUS_MAX: float(modulus.max())}


def check(options: Mapping[str, Any]) -> tuple[str, str] | None:
    """0 <= r_min < r_max <= 1: a ring inside the unit disk."""
    r_min, r_max = options["r_min"], options["r_max"]
    if r_min < 0:
        return "r_min", f"must be >= 0, got {r_min}"
    if r_max > 1:
        return "r_max", f"must be <= 1 (|λ| > 1 explodes), got {r_max}"
    if r_min >= r_max:
        return "r_min", f"must be < model.r_max={r_max}, got {r_min}"
    return None


def shapes(input_size: int, hidden: int,
           options: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {"weight_ih": (2 * hidden, input_size), "nu_log": (hidden,), "theta_log": (hidden,),
            "gamma_log": (hidden,)}


def setup(params: dict[str, Tensor], hidden: int, options: Mapping[str, Any]) -> dict[str, Tensor]:
    """The pseudo-code's init (from torch's global RNG)."""
    import torch

    r_min, r_max = options["r_min"], options["r_max"]
    with torch.no_grad():
        squared = torch.rand(hidden) * (r_max ** 2 - r_min ** 2) + r_min ** 2  # |λ|²
        params["nu_log"].copy_((-0.5 * squared.log()).log())
        params["theta_log"].copy_((MAX_PHASE * torch.rand(hidden)).log())
        params["gamma_log"].copy_(0.5 * (1 - squared).log())
        params["weight_ih"].normal_(0.0, 1 / math.sqrt(2 * params["weight_ih"].shape[1]))
    return {}


register(Cell("lru", "the LRU (Orvieto et al. 2023): x' = Λ x + γ ⊙ B u, Λ diagonal complex, "
                     "|λ| ring-initialized in [r_min, r_max]",
              (Gate("lambda", "diagonal complex recurrence Λ"),), step, width=2,
              activations=("identity",), matrix_init=False,
              options={"r_min": R_MIN, "r_max": R_MAX}, extra=shapes,
              setup=setup, prepare=prepare, recurrent=recurrent, check=check,
              dynamics=dynamics, title="LRU"))
