"""Recurrent models: fused torch RNN/LSTM/GRU for training, and an exact unrolled twin.

`RecurrentModel.forward` runs the fast fused `nn.RNN` / `nn.LSTM` / `nn.GRU` (batch first)
and a linear readout at every time step. `RecurrentModel.unrolled` recomputes the same
function one time step at a time from the *same* weight tensors, returning every hidden
state h_t as a node of the autograd graph, so ∂L/∂h_t (through the readout and all later
time steps) can be taken exactly. Tests check that both paths give the same outputs.

The cell equations are torch's own (see the nn.RNN/LSTM/GRU docs); gate order in the
stacked weights is (i, f, g, o) for LSTM and (r, z, n) for GRU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
FUSED = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


@dataclass
class Unrolled:
    """What the unrolled pass computes, every tensor a node of the autograd graph."""

    outputs: Tensor  # [B, L, output_size]
    hidden: list[list[Tensor]]  # hidden[layer][t]: h_t [B, H]
    gates: list[list[Tensor]]  # gates[layer][t]: LSTM forget gate f_t or GRU update gate z_t
    # (empty lists for the vanilla RNN)


class RecurrentModel(nn.Module):
    """A stack of recurrent layers with a per-time-step linear readout."""

    def __init__(self, cell: str, input_size: int, output_size: int, hidden_size: int,
                 num_layers: int = 1, activation: str = "tanh", init: str = "default",
                 forget_bias: float = 1.0) -> None:
        super().__init__()
        if cell not in FUSED:
            raise ValueError(f"model.name: unknown cell {cell!r}; choose one of {list(FUSED)}")
        if activation not in ACTIVATIONS or (cell != "rnn" and activation != "tanh"):
            raise ValueError(f"model.activation: {activation!r} is not available for {cell}")
        self.cell = cell
        self.activation = activation
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        extra = {"nonlinearity": activation} if cell == "rnn" else {}
        self.rnn = FUSED[cell](input_size, hidden_size, num_layers, batch_first=True, **extra)
        self.readout = nn.Linear(hidden_size, output_size)
        initialize(self, init, forget_bias)

    def forward(self, inputs: Tensor) -> Tensor:
        """inputs [B, L, D] -> outputs [B, L, output_size], through the fused module."""
        hidden, _ = self.rnn(inputs)
        return self.readout(hidden)

    def layer_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(W_ih, W_hh, b_ih, b_hh) of one layer: the fused module's own parameters."""
        rnn = self.rnn
        return (getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}"),
                getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}"))

    def unrolled(self, inputs: Tensor) -> Unrolled:
        """Step-by-step forward pass with the fused module's weights.

        Every hidden state h_t of every layer is a node of the graph, so
        `torch.autograd.grad(loss, result.hidden[layer])` gives the total derivative ∂L/∂h_t.
        """
        batch = inputs.shape[0]
        layer_input = inputs
        hidden: list[list[Tensor]] = []
        gates: list[list[Tensor]] = []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.layer_weights(layer)
            # The input projection has no recurrence: one matmul for all time steps. unbind,
            # not projected[:, t]: each indexing op's backward writes a zero tensor of the whole
            # sequence's size, which makes the backward pass quadratic in the length.
            projected = torch.nn.functional.linear(layer_input, w_ih, b_ih).unbind(dim=1)
            h = inputs.new_zeros(batch, self.hidden_size)
            c = inputs.new_zeros(batch, self.hidden_size)
            states: list[Tensor] = []
            layer_gates: list[Tensor] = []
            for x_t in projected:
                h, c, gate = self._step(x_t, h, c, w_hh, b_hh)
                states.append(h)
                if gate is not None:
                    layer_gates.append(gate)
            hidden.append(states)
            gates.append(layer_gates)
            layer_input = torch.stack(states, dim=1)
        return Unrolled(self.readout(layer_input), hidden, gates)

    def _step(self, x_proj: Tensor, h: Tensor, c: Tensor, w_hh: Tensor,
              b_hh: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """One time step: (h_t, c_t, the gate that decides what is kept, or None)."""
        h_proj = torch.nn.functional.linear(h, w_hh, b_hh)
        if self.cell == "rnn":
            return ACTIVATIONS[self.activation](x_proj + h_proj), c, None
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

    def recurrent_matrices(self) -> list[Tensor]:
        """W_hh of every layer (all gate blocks stacked), for spectral diagnostics."""
        return [self.layer_weights(layer)[1] for layer in range(self.num_layers)]


@torch.no_grad()
def initialize(model: RecurrentModel, init: str, forget_bias: float) -> None:
    """Apply the named initialization to the recurrent weights, then the LSTM forget bias.

    - default: PyTorch's U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias.
    - orthogonal: each H x H gate block of W_hh orthogonal (Saxe et al. 2014).
    - identity: IRNN (Le, Jaitly & Hinton 2015): W_hh = I and zero biases, for ReLU RNNs.
    """
    hidden = model.hidden_size
    for layer in range(model.num_layers):
        _, w_hh, b_ih, b_hh = model.layer_weights(layer)
        if init == "orthogonal":
            for block in w_hh.split(hidden, dim=0):
                nn.init.orthogonal_(block)
        elif init == "identity":
            if model.cell != "rnn":
                raise ValueError("model.init: identity (IRNN) applies to model=rnn only")
            w_hh.copy_(torch.eye(hidden))
            b_ih.zero_()
            b_hh.zero_()
        elif init != "default":
            raise ValueError(f"model.init: unknown {init!r}; choose default|orthogonal|identity")
        if model.cell == "lstm":
            # torch adds b_ih and b_hh; put the whole forget bias in one of them.
            b_ih[hidden:2 * hidden] = forget_bias
            b_hh[hidden:2 * hidden] = 0.0
