"""The recurrent cells, each defined once: its gates and what they mean, its parameters, which
of the config's options it reads, and which fast paths compute it.

This package imports no torch, so the config's checks (harness/schema.py), the memory
estimate (harness/resources.py) and the report read it cheaply. Everything else derives from
`CELLS`: the `model.name` choices and their checks, the model and its initializations
(harness/models.py), the batched model (harness/batched.py), the diagnostics' per-block and
gate metrics (harness/diagnostics.py), the memory estimate and the report's block labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness import names

# Every activation a vanilla cell may take (harness/models.ACTIVATIONS, plus modReLU, which
# has a learned bias); the schema's `Activation` enum lists the same names.
VANILLA_ACTIVATIONS = ("tanh", "relu", "leaky_relu", "hard_tanh", "modrelu")


@dataclass(frozen=True)
class Gate:
    """One row block of the recurrent matrix W_hh, in the weights' order."""

    name: str  # as in metric keys: spectral_radius_l0_<name>
    meaning: str  # as the report labels it


@dataclass(frozen=True)
class GateMetric:
    """A gate whose activations the diagnostics summarize: its mean and its saturated share
    (below 0.05 or above 0.95), over the batch, units and time steps of the last layer."""

    gate: str  # the key under which the cell's step returns the gate's activations
    mean: str  # metric key of the mean
    saturated: str  # metric key of the saturated share


@dataclass(frozen=True)
class Cell:
    name: str  # the `model.name` value
    summary: str  # one line: what the cell computes
    gates: tuple[Gate, ...]  # W_hh's row blocks in the weights' order
    # The torch.nn module (RNN, LSTM, GRU) that holds W_ih, W_hh, b_ih and b_hh, None where
    # the cell holds all its parameters itself (`extra`); `fused`: the module's own forward
    # computes this cell (torch's fused kernel, the training fast path).
    holder: str | None = None
    fused: bool = False
    kernel: str | None = None  # its code in harness/batched_kernels.cpp (the batched fast path)
    batched: bool = False  # may train as a member of a stacked model (harness/batched.py)
    # The recurrent state's tensors, each `width` * hidden_size wide; the first is h: what
    # the readout and the layer above read, and what ∂L/∂h_t is taken with respect to.
    state: tuple[str, ...] = ("h",)
    width: int = 1
    activations: tuple[str, ...] = ("tanh",)  # the `model.activation` values it takes
    vanilla: bool = False  # h' = act(W_ih x + W_hh h + b): identity init applies
    matrix_init: bool = True  # W_hh is a plain matrix: `model.init` may set it
    # Cell-specific `model.` keys it reads, with their defaults (null in the config: this).
    options: Mapping[str, Any] = field(default_factory=dict)
    # Parameters of one layer and direction beyond the holder's: (input size, hidden size,
    # resolved options) -> {name: shape}.
    extra: Callable[[int, int, Mapping[str, Any]], dict[str, tuple[int, ...]]] | None = None
    # The gate that decides what the state keeps (LSTM forget f, GRU update z): chrono init
    # sets its bias; `chrono_opposite` is set to minus it (LSTM input gate i).
    keep_gate: str | None = None
    chrono_opposite: str | None = None
    gate_metrics: tuple[GateMetric, ...] = ()
    # Numbers per hidden unit and time step that backprop keeps (the memory estimate);
    # 0: width * (gates + 1).
    kept: int = 0

    @property
    def blocks(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.gates)

    def block(self, name: str) -> int:
        """The index of gate block `name` in W_hh's rows."""
        return self.blocks.index(name)

    def meaning(self, block: str) -> str | None:
        return next((g.meaning for g in self.gates if g.name == block), None)

    def resolved(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The cell-specific options: the config's value, or the cell's default where null."""
        return {key: default if config.get(key) is None else config[key]
                for key, default in self.options.items()}

    def shapes(self, input_size: int, hidden: int,
               options: Mapping[str, Any] | None = None) -> dict[str, tuple[int, ...]]:
        """Parameter shapes of one layer and direction (without the initial state)."""
        shapes: dict[str, tuple[int, ...]] = {}
        if self.holder is not None:
            rows = len(self.gates) * hidden
            shapes = {"weight_ih": (rows, input_size), "weight_hh": (rows, hidden),
                      "bias_ih": (rows,), "bias_hh": (rows,)}
        if self.extra is not None:
            shapes |= self.extra(input_size, hidden, self.resolved(options or {}))
        return shapes

    def kept_per_step(self) -> int:
        return self.kept or self.width * (len(self.gates) + 1)


def parameter_count(cell: Cell, input_size: int, hidden: int, output_size: int, layers: int = 1,
                    directions: int = 1, options: Mapping[str, Any] | None = None,
                    learn_init_state: bool = False, modrelu: bool = False) -> int:
    """The model's parameters (`harness.models.RecurrentModel`, tested against it): each layer
    and direction's `cell.shapes` (layer k > 0 reads width * hidden * directions inputs), the
    learned initial state (every state tensor) where asked, modReLU's bias for a vanilla cell,
    and the readout `output_size * (width * hidden * directions + 1)`."""
    width = cell.width * hidden
    total = 0
    for layer in range(layers):
        inputs = input_size if layer == 0 else width * directions
        shapes = cell.shapes(inputs, hidden, options)
        total += directions * sum(math.prod(shape) for shape in shapes.values())
    per_direction = (width * len(cell.state) if learn_init_state else 0) + \
        (hidden if modrelu and cell.vanilla else 0)
    return total + layers * directions * per_direction + output_size * (width * directions + 1)


CELLS: dict[str, Cell] = {}


def register(cell: Cell) -> Cell:
    """Add a cell to `CELLS` (a module defining one calls this; a test may register its own)."""
    if cell.fused and cell.holder is None:
        raise ValueError(f"cell {cell.name}: fused needs the holder module that runs it")
    if cell.keep_gate is not None and cell.keep_gate not in cell.blocks:
        raise ValueError(f"cell {cell.name}: keep gate {cell.keep_gate!r} is not a gate block")
    CELLS[cell.name] = cell
    return cell


class _Derived(Mapping[str, Any]):
    """A read-only view of one field of every registered cell (a cell registered later is in
    it too)."""

    def __init__(self, of: Callable[[Cell], Any]) -> None:
        self._of = of

    def __getitem__(self, name: str) -> Any:
        return self._of(CELLS[name])

    def __iter__(self) -> Iterator[str]:
        return iter(CELLS)

    def __len__(self) -> int:
        return len(CELLS)


GATE_BLOCKS: Mapping[str, tuple[str, ...]] = _Derived(lambda cell: cell.blocks)

_VANILLA = (Gate("hh", "recurrent matrix"),)
FORGET = GateMetric("f", names.FORGET_GATE_MEAN, names.FORGET_GATE_SATURATED)
UPDATE = GateMetric("z", names.UPDATE_GATE_MEAN, names.UPDATE_GATE_SATURATED)

for _cell in (
    Cell("rnn", "h' = act(W_ih x + b_ih + W_hh h + b_hh)", _VANILLA, holder="RNN", fused=True,
         kernel="rnn", batched=True, activations=VANILLA_ACTIVATIONS, vanilla=True),
    # W_hh constrained orthogonal by torch's parametrization (the uRNN/expRNN family)
    Cell("orth_rnn", "the vanilla RNN with W_hh kept orthogonal (W = base · exp(A))",
         (Gate("hh", "orthogonal recurrent matrix"),), holder="RNN", fused=True,
         activations=VANILLA_ACTIVATIONS, vanilla=True),
    Cell("lstm", "torch's LSTM (gates i, f, g, o)",
         (Gate("i", "input gate"), Gate("f", "forget gate"), Gate("g", "cell candidate"),
          Gate("o", "output gate")), holder="LSTM", fused=True, kernel="lstm", batched=True,
         state=("h", "c"), options={"forget_bias": 1.0}, keep_gate="f", chrono_opposite="i",
         gate_metrics=(FORGET,)),
    # torch's GRU keeps the share z of the old state: h' = (1 - z) n + z h
    Cell("gru", "torch's GRU (gates r, z, n): h' = (1 - z) n + z h",
         (Gate("r", "reset gate"), Gate("z", "update gate"), Gate("n", "candidate")),
         holder="GRU", fused=True, kernel="gru", batched=True, keep_gate="z",
         gate_metrics=(UPDATE,)),
):
    register(_cell)
