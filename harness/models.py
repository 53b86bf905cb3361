"""Recurrent models: fused torch RNN/LSTM/GRU for training, and an exact unrolled twin.

`RecurrentModel.forward` runs the fast fused `nn.RNN` / `nn.LSTM` / `nn.GRU` (batch first)
and a linear readout at every time step. `RecurrentModel.unrolled` recomputes the same
function one time step at a time from the *same* weight tensors, returning every hidden
state h_t as a node of the autograd graph, so ∂L/∂h_t (through the readout and all later
time steps) can be taken exactly. Tests check that both paths give the same outputs.

Cells: `rnn` (vanilla), `orth_rnn` (vanilla RNN whose W_hh is constrained orthogonal by
`torch.nn.utils.parametrizations.orthogonal`, the simplest member of the uRNN/expRNN
family), `lstm`, `gru`. Every cell can be stacked (`num_layers`) and bidirectional: layer
k > 0 reads the concatenation [h→_t ; h←_t] of both directions of layer k-1 (torch's fused
layout, the deep bidirectional RNN of the textbooks), and the readout reads that of the last
layer.

The vanilla cells take any activation of `ACTIVATIONS`. torch's fused nn.RNN only has tanh
and ReLU; with any other activation `forward` runs the unrolled pass (in the model's dtype,
float32 for training) instead, so training and diagnostics compute the same function.

The cell equations are torch's own (see the nn.RNN/LSTM/GRU docs); gate order in the
stacked weights is (i, f, g, o) for LSTM and (r, z, n) for GRU. torch's GRU computes
h_t = (1 - z_t) * n_t + z_t * h_{t-1}: z is the share of the old state that is kept, so it
plays the LSTM forget gate's role.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import orthogonal

from harness.cells import CELLS

if TYPE_CHECKING:
    from harness.schema import ModelConfig  # schema imports this module's names
    from tasks import Task

FUSED_ACTIVATIONS = ("tanh", "relu")  # what nn.RNN's `nonlinearity` offers
LEAKY_SLOPE = 0.01  # torch's default negative slope
MODRELU_BIAS_INIT = 0.01  # modReLU bias ~ U(-0.01, 0.01), as in expRNN (Lezcano-Casado 2019)


def modrelu(pre: Tensor, bias: Tensor) -> Tensor:
    """modReLU (Arjovsky et al. 2016), real case: sign(z) * relu(|z| + b), b learned per unit."""
    return torch.sign(pre) * torch.relu(pre.abs() + bias)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda pre: F.leaky_relu(pre, LEAKY_SLOPE),
    "hard_tanh": F.hardtanh,  # clamp to [-1, 1]
}
ACTIVATION_NAMES = (*ACTIVATIONS, "modrelu")
INITS = ("default", "orthogonal", "identity")


@dataclass
class Unrolled:
    """What the unrolled pass computes, every tensor a node of the autograd graph.

    For a bidirectional model `hidden` and `gates` hold the forward direction and the
    `_reverse` lists the backward one, indexed by time step t like the forward ones (the
    backward direction computes t = L-1 first). Each per-direction state is the node the
    recurrence uses, so autograd.grad with respect to it is the total derivative.
    """

    outputs: Tensor  # [B, L, output_size]
    hidden: list[list[Tensor]]  # hidden[layer][t]: h_t [B, H]
    gates: list[list[Tensor]]  # gates[layer][t]: LSTM forget gate f_t or GRU update gate z_t
    # (empty lists for the vanilla RNNs)
    hidden_reverse: list[list[Tensor]] = field(default_factory=list)  # [] if unidirectional
    gates_reverse: list[list[Tensor]] = field(default_factory=list)

    def states(self, layer: int) -> list[list[Tensor]]:
        """One list of h_t per direction of `layer`: [forward] or [forward, backward]."""
        if not self.hidden_reverse:
            return [self.hidden[layer]]
        return [self.hidden[layer], self.hidden_reverse[layer]]


class RecurrentModel(nn.Module):
    """A stack of recurrent layers with a per-time-step linear readout."""

    def __init__(self, cell: str, input_size: int, output_size: int, hidden_size: int,
                 num_layers: int = 1, activation: str = "tanh", init: str = "default",
                 forget_bias: float = 1.0, *, bidirectional: bool = False,
                 chrono_t_max: int | None = None) -> None:
        """`chrono_t_max`: chrono-initialize the gate biases for dependencies up to that many
        steps (LSTM, GRU; Tallec & Ollivier 2018); the caller takes it from the task."""
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"model.name: unknown cell {cell!r}; choose one of {list(CELLS)}")
        if activation not in ACTIVATION_NAMES or activation not in CELLS[cell].activations:
            raise ValueError(f"model.activation: {activation!r} is not available for {cell}")
        self.cell = cell
        self.activation = activation
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.directions = (False, True) if bidirectional else (False,)
        # Non-fused activations keep nn.RNN as the holder of the weights (same names, same
        # init); its own tanh is then never used.
        vanilla = CELLS[cell].vanilla
        self.fused = not vanilla or activation in FUSED_ACTIVATIONS
        extra = {"nonlinearity": activation if self.fused else "tanh"} if vanilla else {}
        fused = getattr(nn, CELLS[cell].holder)
        self.rnn = fused(input_size, hidden_size, num_layers, batch_first=True,
                         bidirectional=bidirectional, **extra)
        if activation == "modrelu":
            self.modrelu_bias = nn.ParameterList(
                nn.Parameter(torch.empty(hidden_size).uniform_(-MODRELU_BIAS_INIT,
                                                               MODRELU_BIAS_INIT))
                for _ in range(num_layers * len(self.directions)))
        self.readout = nn.Linear(hidden_size * len(self.directions), output_size)
        initialize(self, init, forget_bias)
        if chrono_t_max is not None:
            chrono_initialize(self, chrono_t_max)
        if cell == "orth_rnn":
            # W_hh = base · exp(A), A skew-symmetric: orthogonal after every optimizer step.
            for layer in range(num_layers):
                for reverse in self.directions:
                    orthogonal(self.rnn, _weight_name("weight_hh", layer, reverse))

    def clone(self) -> RecurrentModel:
        """A deep copy. After a forward pass, orth_rnn's nn.RNN caches its parametrized W_hh
        with that pass's graph, which deepcopy refuses: cached again without one first (the
        fused forward recomputes it each time anyway)."""
        if self.cell == "orth_rnn":
            with torch.no_grad():
                self.rnn._init_flat_weights()
        return copy.deepcopy(self)

    def forward(self, inputs: Tensor) -> Tensor:
        """inputs [B, L, D] -> outputs [B, L, output_size]: the fused module when torch has
        this cell, else the unrolled pass."""
        if not self.fused:
            return self.unrolled(inputs).outputs
        hidden, _ = self.rnn(inputs)
        return self.readout(hidden)

    def layer_weights(self, layer: int,
                      reverse: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(W_ih, W_hh, b_ih, b_hh) of one layer and direction: the fused module's own
        parameters (for orth_rnn, W_hh is the parametrization's orthogonal matrix)."""
        w_ih, w_hh, b_ih, b_hh = (getattr(self.rnn, _weight_name(kind, layer, reverse))
                                  for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        return w_ih, w_hh, b_ih, b_hh

    def unrolled(self, inputs: Tensor) -> Unrolled:
        """Step-by-step forward pass with the fused module's weights.

        Every hidden state h_t of every layer and direction is a node of the graph, so
        `torch.autograd.grad(loss, result.hidden[layer])` gives the total derivative ∂L/∂h_t.
        """
        layer_input = inputs
        # per direction (forward, backward): states[layer][t] and gates[layer][t]
        states: tuple[list, list] = ([], [])
        gates: tuple[list, list] = ([], [])
        for layer in range(self.num_layers):
            outputs = []
            for reverse in self.directions:
                layer_states, layer_gates = self._direction(layer_input, layer, reverse)
                states[reverse].append(layer_states)
                gates[reverse].append(layer_gates)
                outputs.append(torch.stack(layer_states, dim=1))
            layer_input = torch.cat(outputs, dim=2)
        return Unrolled(self.readout(layer_input), states[0], gates[0], states[1], gates[1])

    def _direction(self, layer_input: Tensor, layer: int,
                   reverse: bool) -> tuple[list[Tensor], list[Tensor]]:
        """h_t (and the keep gate) of one layer and direction, in time order t = 0 .. L-1."""
        w_ih, w_hh, b_ih, b_hh = self.layer_weights(layer, reverse)
        # The input projection has no recurrence: one matmul for all time steps. unbind,
        # not projected[:, t]: each indexing op's backward writes a zero tensor of the whole
        # sequence's size, which makes the backward pass quadratic in the length.
        projected: Sequence[Tensor] = F.linear(layer_input, w_ih, b_ih).unbind(dim=1)
        if reverse:
            projected = projected[::-1]
        activate = self._activation(layer, reverse)
        h = layer_input.new_zeros(layer_input.shape[0], self.hidden_size)
        c = torch.zeros_like(h)
        states: list[Tensor] = []
        gates: list[Tensor] = []
        for x_t in projected:
            h, c, gate = self._step(x_t, h, c, w_hh, b_hh, activate)
            states.append(h)
            if gate is not None:
                gates.append(gate)
        if reverse:
            states.reverse()
            gates.reverse()
        return states, gates

    def _activation(self, layer: int, reverse: bool) -> Callable[[Tensor], Tensor]:
        if self.activation != "modrelu":
            return ACTIVATIONS[self.activation]
        bias = self.modrelu_bias[layer * len(self.directions) + int(reverse)]
        return lambda pre: modrelu(pre, bias)

    def _step(self, x_proj: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor,
              activate: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        """One time step: (h_t, c_t, the gate that decides what is kept, or None)."""
        h_proj = F.linear(h, w_hh, b_hh)
        if CELLS[self.cell].vanilla:
            return activate(x_proj + h_proj), c, None
        if self.cell == "lstm":
            i, f, g, o = (x_proj + h_proj).chunk(4, dim=1)
            forget = torch.sigmoid(f)
            c = forget * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c, forget
        x_r, x_z, x_n = x_proj.chunk(3, dim=1)
        h_r, h_z, h_n = h_proj.chunk(3, dim=1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h, c, z

    def recurrent_matrices(self) -> list[tuple[int, bool, Tensor]]:
        """(layer, reverse, W_hh) of every layer and direction (gate blocks stacked)."""
        return [(layer, reverse, self.layer_weights(layer, reverse)[1])
                for layer in range(self.num_layers) for reverse in self.directions]


def _weight_name(kind: str, layer: int, reverse: bool) -> str:
    """torch's parameter name: weight_hh_l0, or weight_hh_l0_reverse for the backward one."""
    return f"{kind}_l{layer}{'_reverse' if reverse else ''}"


@torch.no_grad()
def initialize(model: RecurrentModel, init: str, forget_bias: float) -> None:
    """Apply the named initialization to the recurrent weights, then the LSTM forget bias.

    - default: PyTorch's U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias.
    - orthogonal: each H x H gate block of W_hh orthogonal (Saxe et al. 2014).
    - identity: IRNN (Le, Jaitly & Hinton 2015): W_hh = I and zero biases, for ReLU RNNs.

    Every layer and direction alike. For orth_rnn this sets the starting point of the
    orthogonal parametrization, which then projects it to the nearest orthogonal matrix.
    """
    if init not in INITS:
        raise ValueError(f"model.init: unknown {init!r}; choose {'|'.join(INITS)}")
    if init == "identity" and not CELLS[model.cell].vanilla:
        raise ValueError("model.init: identity (IRNN) applies to model=rnn or orth_rnn only")
    hidden, spec = model.hidden_size, CELLS[model.cell]
    for layer in range(model.num_layers):
        for reverse in model.directions:
            _, w_hh, b_ih, b_hh = model.layer_weights(layer, reverse)
            if init == "orthogonal":
                for block in w_hh.split(hidden, dim=0):
                    nn.init.orthogonal_(block)
            elif init == "identity":
                w_hh.copy_(torch.eye(hidden))
                b_ih.zero_()
                b_hh.zero_()
            if "forget_bias" in spec.options:
                # torch adds b_ih and b_hh; put the whole forget bias in one of them.
                keep = spec.block(spec.keep_gate)  # type: ignore[arg-type]
                b_ih[keep * hidden:(keep + 1) * hidden] = forget_bias
                b_hh[keep * hidden:(keep + 1) * hidden] = 0.0


@torch.no_grad()
def chrono_initialize(model: RecurrentModel, t_max: int) -> None:
    """Chrono initialization (Tallec & Ollivier 2018) for dependencies of up to t_max steps.

    LSTM: forget bias b_f = ln u, u ~ U(1, t_max - 1) per unit, and input bias b_i = -b_f, so
    the units' characteristic forgetting times spread over 1 .. t_max. GRU: torch keeps the
    share z of the old state (h' = (1 - z) n + z h), so its update-gate bias b_z = +ln u
    (the paper writes the GRU with z and 1 - z the other way round, hence its minus sign).
    Draws from torch's global RNG, seeded per run. The whole bias goes into b_ih.
    """
    spec = CELLS[model.cell]
    if spec.keep_gate is None:
        raise ValueError(f"model.chrono: applies to gated cells (a keep gate), not {model.cell}")
    if t_max < 3:
        raise ValueError(f"model.chrono: needs T_max >= 3 (u ~ U(1, T_max - 1)), got {t_max}")
    hidden = model.hidden_size
    # (block index of the keep gate, of the gate set to its negative or None)
    keep = spec.block(spec.keep_gate)
    opposite = None if spec.chrono_opposite is None else spec.block(spec.chrono_opposite)
    for layer in range(model.num_layers):
        for reverse in model.directions:
            _, _, b_ih, b_hh = model.layer_weights(layer, reverse)
            bias = torch.empty(hidden, dtype=b_ih.dtype).uniform_(1, t_max - 1).log()
            b_ih[keep * hidden:(keep + 1) * hidden] = bias
            b_hh[keep * hidden:(keep + 1) * hidden] = 0.0
            if opposite is not None:
                b_ih[opposite * hidden:(opposite + 1) * hidden] = -bias
                b_hh[opposite * hidden:(opposite + 1) * hidden] = 0.0


def build_model(model: ModelConfig, task: Task) -> RecurrentModel:
    """The model of a `model` config for `task`; chrono's T_max defaults to the task's sequence
    length. Initialized from torch's global RNG (the caller seeds it)."""
    t_max = (model.chrono_t_max or task.seq_len) if model.chrono else None
    return RecurrentModel(model.name, task.input_size, task.output_size,
                          model.hidden_size, model.num_layers, model.activation.value,
                          model.init.value, model.cell_options().get("forget_bias", 1.0),
                          bidirectional=model.bidirectional, chrono_t_max=t_max)
