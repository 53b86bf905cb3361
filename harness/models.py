"""Recurrent models: a stack of layers of one cell (harness/cells/) with a per-time-step readout.

`RecurrentModel.unrolled` runs the cell's own step (its one definition, `Cell.step`) one time
step at a time for every layer and direction, returning every hidden state h_t as a node of
the autograd graph, so ∂L/∂h_t (through the readout and all later time steps) can be taken
exactly. `RecurrentModel.forward` trains through torch's fused `nn.RNN` / `nn.LSTM` / `nn.GRU`
(batch first) where the cell's spec says that module computes it (`Cell.fused`), the fast
path, and through the unrolled pass otherwise (a cell torch does not have, an activation
nn.RNN lacks, `clip.mode=backprop`). Tests check the fast path against the step.

Every cell can be stacked (`num_layers`) and bidirectional: layer k > 0 reads the
concatenation [h→_t ; h←_t] of both directions of layer k-1 (torch's fused layout, the deep
bidirectional RNN of the textbooks), and the readout reads that of the last layer.

Where a cell's weights live: the four matrices and biases of torch's module (`Cell.holder`,
names `rnn.weight_ih_l0` ...) where it has one, the cell's own parameters (`Cell.extra`: the
LSTM's peepholes, the uRNN's phases and reflections) and learned initial states (`h0`, `c0`)
in `cell_params` (`peephole_i_l0`, `h0_l1_reverse`, ...), fixed tensors in buffers
(`permutation_l0`). `weights(layer, reverse)` gathers one layer and direction's under the
names the step reads.

Initializations (`Inits`, from the config's `model.init*` keys): the recurrent matrix W_hh
per gate block (default, orthogonal, identity, glorot_uniform, normal, sparse), W_ih per gate
block and the readout (default, glorot_uniform, normal), zero biases, the LSTM forget bias,
chrono (Tallec & Ollivier 2018). All draw from torch's global RNG, seeded per run.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import orthogonal

from harness.cells import CELLS
from harness.cells.ops import Context, expand_state, linear

if TYPE_CHECKING:
    from harness.schema import ClipConfig, ModelConfig  # schema imports this module's names

FUSED_ACTIVATIONS = ("tanh", "relu")  # what nn.RNN's `nonlinearity` offers
LEAKY_SLOPE = 0.01  # torch's default negative slope
MODRELU_BIAS_INIT = 0.01  # modReLU bias ~ U(-0.01, 0.01), as in expRNN (Lezcano-Casado 2019)
HOLDER_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # a torch module's, per layer


def modrelu(pre: Tensor, bias: Tensor) -> Tensor:
    """modReLU (Arjovsky et al. 2016), real case: sign(z) * relu(|z| + b), b learned per unit."""
    return torch.sign(pre) * torch.relu(pre.abs() + bias)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda pre: F.leaky_relu(pre, LEAKY_SLOPE),
    "hard_tanh": F.hardtanh,  # clamp to [-1, 1]
}
ACTIVATION_NAMES = (*ACTIVATIONS, "modrelu", "identity")  # identity: a cell's own (no choice)
RECURRENT_INITS = ("default", "orthogonal", "identity", "glorot_uniform", "normal", "sparse")
INPUT_INITS = ("default", "glorot_uniform", "normal")


@dataclass(frozen=True)
class Inits:
    """How the weights start (the config's `model.init*` and `model.zero_bias` keys)."""

    recurrent: str = "default"  # W_hh, each gate block: one of RECURRENT_INITS
    std: float = 0.1  # recurrent=normal
    nonzero: int = 15  # recurrent=sparse: non-zeros per row
    radius: float = 0.95  # recurrent=sparse: spectral radius of each block
    input: str = "default"  # W_ih, each gate block: one of INPUT_INITS
    input_std: float = 0.1
    readout: str = "default"  # the readout's weight: one of INPUT_INITS
    readout_std: float = 0.1
    zero_bias: bool = False  # every affine map's bias starts at 0 (not modReLU's)

    @classmethod
    def of(cls, model: ModelConfig) -> Inits:
        return cls(model.init.value, model.init_std, model.init_nonzero, model.init_radius,
                   model.init_input.value, model.init_input_std, model.init_readout.value,
                   model.init_readout_std, model.zero_bias)


@dataclass
class Unrolled:
    """What the unrolled pass computes, every tensor a node of the autograd graph.

    For a bidirectional model `hidden` and `gates` hold the forward direction and the
    `_reverse` lists the backward one, indexed by time step t like the forward ones (the
    backward direction computes t = L-1 first). Each per-direction state is the node the
    recurrence uses, so autograd.grad with respect to it is the total derivative.
    """

    outputs: Tensor  # [B, L, output_size]
    hidden: list[list[Tensor]]  # hidden[layer][t]: h_t [B, width * H]
    gates: list[list[dict[str, Tensor]]]  # gates[layer][t]: the step's gates ({} if none)
    hidden_reverse: list[list[Tensor]] = field(default_factory=list)  # [] if unidirectional
    gates_reverse: list[list[dict[str, Tensor]]] = field(default_factory=list)

    def states(self, layer: int) -> list[list[Tensor]]:
        """One list of h_t per direction of `layer`: [forward] or [forward, backward]."""
        if not self.hidden_reverse:
            return [self.hidden[layer]]
        return [self.hidden[layer], self.hidden_reverse[layer]]


def suffix(layer: int, reverse: bool) -> str:
    """torch's per-layer suffix: `_l0`, or `_l0_reverse` for the backward direction."""
    return f"_l{layer}{'_reverse' if reverse else ''}"


class RecurrentModel(nn.Module):
    """A stack of recurrent layers of one cell with a per-time-step linear readout."""

    def __init__(self, cell: str, input_size: int, output_size: int, hidden_size: int,
                 num_layers: int = 1, activation: str | None = None,
                 init: str | Inits = "default",
                 forget_bias: float | None = None, *, bidirectional: bool = False,
                 chrono_t_max: int | None = None, options: Mapping[str, Any] | None = None,
                 learn_init_state: bool = False, clip: float | None = None) -> None:
        """`options`: the cell's own options (`Cell.options`; `forget_bias`, where given,
        is one of them); `chrono_t_max`: chrono-initialize the keep gate's biases for
        dependencies up to that many steps (the caller takes it from the task);
        `learn_init_state`: h0 (and c0) are parameters; `clip`: `clip.mode=backprop`'s
        threshold (the step clamps the gradient reaching its pre-activations)."""
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"model.name: unknown cell {cell!r}; choose one of {list(CELLS)}")
        spec = CELLS[cell]
        activation = activation or spec.activations[0]  # None: the cell's first (tanh, ...)
        if activation not in ACTIVATION_NAMES or activation not in spec.activations:
            raise ValueError(f"model.activation: {activation!r} is not available for {cell}")
        inits = init if isinstance(init, Inits) else Inits(recurrent=init)
        self.spec, self.cell, self.activation = spec, cell, activation
        given = dict(options or {})
        if forget_bias is not None:
            given["forget_bias"] = forget_bias
        self.options = spec.resolved(given)
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.bidirectional = bidirectional
        self.directions = (False, True) if bidirectional else (False,)
        self.learn_init_state, self.clip = learn_init_state, clip
        self.width = spec.width * hidden_size  # what h_t holds, per direction
        # torch's fused module computes the cell: the training fast path
        self.fused = spec.fused and (not spec.vanilla or activation in FUSED_ACTIVATIONS) and \
            clip is None
        if spec.holder is not None:
            # An activation nn.RNN lacks keeps nn.RNN as the holder of the weights (same
            # names, same init); its own tanh is then never used.
            extra = {"nonlinearity": activation if activation in FUSED_ACTIVATIONS else "tanh"} \
                if spec.holder == "RNN" else {}
            self.rnn = getattr(nn, spec.holder)(input_size, hidden_size, num_layers,
                                                batch_first=True, bidirectional=bidirectional,
                                                **extra)
        if activation == "modrelu" and spec.vanilla:
            self.modrelu_bias = nn.ParameterList(
                nn.Parameter(torch.empty(hidden_size).uniform_(-MODRELU_BIAS_INIT,
                                                               MODRELU_BIAS_INIT))
                for _ in range(num_layers * len(self.directions)))
        self.cell_params = nn.ParameterDict()
        # (layer, reverse) -> {the step's name of a weight: the model's attribute path}
        self._paths: dict[tuple[int, bool], dict[str, str]] = {}
        for layer in range(num_layers):
            inputs = input_size if layer == 0 else self.width * len(self.directions)
            own = {key: shape for key, shape in spec.shapes(inputs, hidden_size,
                                                            self.options).items()
                   if spec.holder is None or key not in HOLDER_WEIGHTS}
            if learn_init_state:
                own |= {f"{state}0": (self.width,) for state in spec.state}
            for reverse in self.directions:
                end = suffix(layer, reverse)
                paths = {key: f"rnn.{key}{end}" for key in HOLDER_WEIGHTS} \
                    if spec.holder is not None else {}
                params = {key: nn.Parameter(torch.zeros(shape)) for key, shape in own.items()}
                buffers = spec.setup(params, hidden_size, self.options) if spec.setup else {}
                for key, param in params.items():
                    self.cell_params[key + end] = param
                    paths[key] = f"cell_params.{key}{end}"
                for key, buffer in buffers.items():
                    self.register_buffer(key + end, buffer)
                    paths[key] = key + end
                self._paths[layer, reverse] = paths
        self.readout = nn.Linear(self.width * len(self.directions), output_size)
        initialize(self, inits)
        if chrono_t_max is not None:
            chrono_initialize(self, chrono_t_max)
        if spec.orthogonal:
            # W_hh = base · exp(A), A skew-symmetric: orthogonal after every optimizer step.
            for layer in range(num_layers):
                for reverse in self.directions:
                    orthogonal(self.rnn, f"weight_hh{suffix(layer, reverse)}")

    def clone(self) -> RecurrentModel:
        """A deep copy. After a forward pass, orth_rnn's nn.RNN caches its parametrized W_hh
        with that pass's graph, which deepcopy refuses: cached again without one first (the
        fused forward recomputes it each time anyway)."""
        if self.spec.orthogonal:
            with torch.no_grad():
                self.rnn._init_flat_weights()
        return copy.deepcopy(self)

    def weight_names(self, layer: int, reverse: bool = False) -> dict[str, str]:
        """Where the step's weights of one layer and direction live: {its name for the step:
        the model's attribute path (a parameter or a buffer)}."""
        return dict(self._paths[layer, reverse])

    def weights(self, layer: int, reverse: bool = False) -> dict[str, Tensor]:
        """One layer and direction's weights under the names its cell's step reads."""
        return {key: _attribute(self, path) for key, path in self._paths[layer, reverse].items()}

    def layer_weights(self, layer: int,
                      reverse: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(W_ih, W_hh, b_ih, b_hh) of one layer and direction of a cell held by a torch
        module (for orth_rnn, W_hh is the parametrization's orthogonal matrix)."""
        weights = self.weights(layer, reverse)
        return tuple(weights[key] for key in HOLDER_WEIGHTS)  # type: ignore[return-value]

    def context(self, layer: int, reverse: bool) -> Context:
        """What the step of one layer and direction needs besides weights and state."""
        activate = None
        if self.spec.vanilla:
            if self.activation == "modrelu":
                bias = self.modrelu_bias[layer * len(self.directions) + int(reverse)]
                activate = lambda pre: modrelu(pre, bias)  # noqa: E731
            else:
                activate = ACTIVATIONS[self.activation]
        return Context(self.hidden_size, activate, self.clip, self.options)

    def initial_state(self, weights: Mapping[str, Tensor], like: Tensor) -> tuple[Tensor, ...]:
        """The state before the first step, for the batch of `like` ([B, ·]): learned (`h0`,
        `c0` in `weights`) or zero."""
        shape = (*like.shape[:-1], self.width)
        return tuple(expand_state(weights[f"{state}0"], like) if f"{state}0" in weights
                     else like.new_zeros(shape) for state in self.spec.state)

    def forward(self, inputs: Tensor) -> Tensor:
        """inputs [B, L, D] -> outputs [B, L, output_size]: torch's fused module where it
        computes this cell, else the unrolled pass."""
        if not self.fused:
            return self.unrolled(inputs).outputs
        return self.readout(self.fused_hidden(inputs))

    def fused_hidden(self, inputs: Tensor) -> Tensor:
        """The last layer's h_t of every step (both directions) from torch's fused module,
        started from the model's initial states: [B, L, H * directions]."""
        if not self.learn_init_state:
            return self.rnn(inputs)[0]
        first = inputs[:, 0]
        initial = [self.initial_state(self.weights(layer, reverse), first)
                   for layer in range(self.num_layers) for reverse in self.directions]
        # torch wants each state as [layers * directions, B, H]
        states = [torch.stack(parts) for parts in zip(*initial, strict=True)]
        return self.rnn(inputs, states[0] if len(states) == 1 else tuple(states))[0]

    def unrolled(self, inputs: Tensor) -> Unrolled:
        """Step-by-step forward pass through the cell's step, with the model's weights.

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
                   reverse: bool) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
        """h_t (and the step's gates) of one layer and direction, in time order t = 0 .. L-1."""
        weights = self.weights(layer, reverse)
        # The input projection has no recurrence: one matmul for all time steps. unbind,
        # not projected[:, t]: each indexing op's backward writes a zero tensor of the whole
        # sequence's size, which makes the backward pass quadratic in the length.
        projected: Sequence[Tensor] = linear(layer_input, weights["weight_ih"],
                                             weights.get("bias_ih")).unbind(dim=1)
        if reverse:
            projected = projected[::-1]
        context = self.context(layer, reverse)
        state = self.initial_state(weights, layer_input[:, 0])
        weights = self.spec.prepared(weights, self.hidden_size)
        states: list[Tensor] = []
        gates: list[dict[str, Tensor]] = []
        for x_t in projected:
            state, gate = self.spec.step(weights, x_t, state, context)
            states.append(state[0])
            gates.append(gate)
        if reverse:
            states.reverse()
            gates.reverse()
        return states, gates

    def recurrent_parameters(self) -> list[Tensor]:
        """The W_hh parameters of every layer and direction, where W_hh is a plain matrix
        parameter (what Pascanu's NaN guard shrinks); [] for the uRNN's product and
        orth_rnn's parametrized matrix."""
        if not self.spec.matrix_init or self.spec.orthogonal:
            return []
        return [self.weights(layer, reverse)["weight_hh"]
                for layer in range(self.num_layers) for reverse in self.directions]

    def recurrent_matrices(self) -> list[tuple[int, bool, Tensor]]:
        """(layer, reverse, W_hh) of every layer and direction (gate blocks stacked)."""
        return [(layer, reverse,
                 self.spec.recurrent_matrix(self.weights(layer, reverse), self.hidden_size))
                for layer in range(self.num_layers) for reverse in self.directions]


def _attribute(module: nn.Module, path: str) -> Tensor:
    """`module.<path>` (`rnn.weight_hh_l0` goes through a parametrization, as torch reads it)."""
    owner, _, name = path.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, name)


def parameter_count(model: RecurrentModel) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def initialize(model: RecurrentModel, inits: Inits) -> None:
    """Apply `inits` to every layer and direction, then the keep gate's `forget_bias`.

    - recurrent (W_hh, each H x H gate block): default (torch's U(-1/sqrt(H), 1/sqrt(H)));
      orthogonal (Saxe et al. 2014); identity (IRNN, Le, Jaitly & Hinton 2015: W_hh = I and
      zero biases); glorot_uniform (U(±sqrt(6 / 2H))); normal (N(0, std²)); sparse (`nonzero`
      entries per row from N(0, 1) at random columns, the rest 0, the block then scaled to
      spectral radius `radius`: Pascanu et al. 2013's "smart tanh", after Sutskever et al.
      2013).
    - input (W_ih, each gate block's rows) and readout (its weight): default, glorot_uniform
      (U(±sqrt(6 / (fan_in + fan_out)))), normal (N(0, std²)).
    - zero_bias: b_ih, b_hh and the readout's bias 0.

    For orth_rnn this sets the starting point of the orthogonal parametrization, which then
    projects it to the nearest orthogonal matrix. A cell without a plain W_hh (the uRNN)
    keeps its own init (the config refuses another).
    """
    spec, hidden = model.spec, model.hidden_size
    if inits.recurrent not in RECURRENT_INITS:
        raise ValueError(f"model.init: unknown {inits.recurrent!r}; choose "
                         f"{'|'.join(RECURRENT_INITS)}")
    if inits.recurrent == "identity" and not spec.vanilla:
        raise ValueError("model.init: identity (IRNN) applies to the vanilla cells only")
    if inits.recurrent != "default" and not spec.matrix_init:
        raise ValueError(f"model.init: {model.cell} keeps its own init of its recurrence")
    for kind in (inits.input, inits.readout):
        if kind not in INPUT_INITS:
            raise ValueError(f"model.init_input: unknown {kind!r}; choose {'|'.join(INPUT_INITS)}")
    rows = len(spec.gates)
    for layer in range(model.num_layers):
        for reverse in model.directions:
            weights = model.weights(layer, reverse)
            if "weight_hh" in weights:
                for block in weights["weight_hh"].split(hidden, dim=0):
                    init_recurrent(block, inits)
            weight_ih = weights["weight_ih"]
            for block in weight_ih.split(weight_ih.shape[0] // rows, dim=0):
                init_matrix(block, inits.input, inits.input_std)
            biases = [weights[key] for key in ("bias_ih", "bias_hh") if key in weights]
            if inits.zero_bias or inits.recurrent == "identity":
                for bias in biases:
                    bias.zero_()
            if "forget_bias" in spec.options and spec.keep_gate is not None:
                # torch adds b_ih and b_hh; put the whole forget bias in one of them.
                keep = spec.block(spec.keep_gate)
                weights["bias_ih"][keep * hidden:(keep + 1) * hidden] = \
                    model.options["forget_bias"]
                weights["bias_hh"][keep * hidden:(keep + 1) * hidden] = 0.0
    init_matrix(model.readout.weight, inits.readout, inits.readout_std)
    if inits.zero_bias:
        model.readout.bias.zero_()


def init_recurrent(block: Tensor, inits: Inits) -> None:
    """One H x H block of W_hh, in place (`initialize`)."""
    kind = inits.recurrent
    if kind == "orthogonal":
        nn.init.orthogonal_(block)
    elif kind == "identity":
        block.copy_(torch.eye(block.shape[0]))
    elif kind == "sparse":
        sparse_(block, inits.nonzero, inits.radius)
    else:
        init_matrix(block, kind, inits.std)


def init_matrix(weight: Tensor, kind: str, std: float) -> None:
    """default (leave torch's), glorot_uniform or normal, in place."""
    if kind == "glorot_uniform":
        bound = math.sqrt(6.0 / (weight.shape[0] + weight.shape[1]))
        weight.uniform_(-bound, bound)
    elif kind == "normal":
        weight.normal_(0.0, std)


def sparse_(block: Tensor, nonzero: int, radius: float) -> None:
    """`nonzero` entries per row from N(0, 1) at distinct random columns, the rest 0, then the
    whole block scaled to spectral radius `radius`."""
    rows, columns = block.shape
    if not 1 <= nonzero <= columns:
        raise ValueError(f"model.init_nonzero: must be in [1, {columns}], got {nonzero}")
    if radius <= 0:
        raise ValueError(f"model.init_radius: must be > 0, got {radius}")
    values = torch.zeros(rows, columns, dtype=torch.float64)
    for row in range(rows):
        values[row, torch.randperm(columns)[:nonzero]] = torch.randn(nonzero, dtype=torch.float64)
    current = float(torch.linalg.eigvals(values).abs().max())
    if current > 0:  # a nilpotent draw (every eigenvalue 0) cannot be scaled
        values *= radius / current
    block.copy_(values)


@torch.no_grad()
def chrono_initialize(model: RecurrentModel, t_max: int) -> None:
    """Chrono initialization (Tallec & Ollivier 2018) for dependencies of up to t_max steps.

    LSTM: forget bias b_f = ln u, u ~ U(1, t_max - 1) per unit, and input bias b_i = -b_f, so
    the units' characteristic forgetting times spread over 1 .. t_max. GRU: torch keeps the
    share z of the old state (h' = (1 - z) n + z h), so its update-gate bias b_z = +ln u
    (the paper writes the GRU with z and 1 - z the other way round, hence its minus sign).
    Draws from torch's global RNG, seeded per run. The whole bias goes into b_ih.
    """
    spec = model.spec
    if spec.keep_gate is None or spec.holder is None:
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


def build_model(model: ModelConfig, task: Any, clip: ClipConfig | None = None) -> RecurrentModel:
    """The model of a `model` config for `task` (its input and output sizes; chrono's T_max
    defaults to its sequence length), with `clip.mode=backprop`'s threshold where `clip` asks
    for it. Initialized from torch's global RNG (the caller seeds it)."""
    t_max = (model.chrono_t_max or task.seq_len) if model.chrono else None
    backprop = clip is not None and str(getattr(clip.mode, "value", clip.mode)) == "backprop"
    return RecurrentModel(model.name, task.input_size, task.output_size, model.hidden_size,
                          model.num_layers, model.activation.value, Inits.of(model),
                          bidirectional=model.bidirectional, chrono_t_max=t_max,
                          options=model.cell_options(), learn_init_state=model.learn_init_state,
                          clip=clip.threshold if backprop else None)
