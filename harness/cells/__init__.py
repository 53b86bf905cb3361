"""The recurrent cells, each defined once, in one module of this package: its step (the one
definition of its math), its gates and what they mean, its parameters and their init, which
of the config's options it reads, and which fast paths compute it.

Everything else derives from `CELLS`: the `model.name` choices and their checks
(harness/schema.py), the model, which runs the step for every layer, direction and time step
(harness/models.py), the batched model, which runs the same step with a leading member axis
(harness/batched.py), the diagnostics' per-block and gate metrics (harness/diagnostics.py),
the memory estimate (harness/resources.py) and the report's block labels. The fast paths
(torch's fused modules; the C++ recurrence of harness/batched_kernels.cpp) serve the cells
whose spec names them and are tested against the step, never the other way round.

Adding a cell is one module that calls `register` (see rnn.py, lstm.py, gru.py, urnn.py),
listed in `BUILT_IN` below, plus a `conf/model/<name>.yaml` option; the tests read the
registry, so it is tested the moment it is registered (tests/test_cells.py).

This package imports no torch at import time (the steps import it when they run), so the
config's checks and the memory estimate read it before torch is loaded.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness import names

if TYPE_CHECKING:
    from torch import Tensor

    from harness.cells.ops import Context

# A step: (this layer and direction's weights, the input projection x_t of this time step,
# the state) -> (the new state, {gate name: its activations}). The input projection is
# weights["weight_ih"] x_t + weights["bias_ih"] (where there is one), made for all steps at
# once by the caller; the state is `Cell.state`'s tensors, h first.
Step = Callable[["Mapping[str, Tensor]", "Tensor", "tuple[Tensor, ...]", "Context"],
                "tuple[tuple[Tensor, ...], dict[str, Tensor]]"]

# Cell options that only set initial values (members of a stacked model may differ in them).
INIT_OPTIONS = ("forget_bias", "r_min", "r_max")
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
    step: Step  # the cell's math, for one model ([B, ·]) and for K stacked members ([K, B, ·])
    # The torch.nn module (RNN, LSTM, GRU) that holds W_ih, W_hh, b_ih and b_hh, None where
    # the cell holds all its parameters itself (`extra`); `fused`: the module's own forward
    # computes this cell (torch's fused kernel, the training fast path).
    holder: str | None = None
    fused: bool = False
    kernel: str | None = None  # its code in harness/batched_kernels.cpp (the batched fast path)
    batched: bool = True  # may train as a member of a stacked model (harness/batched.py)
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
    # torch-side: initialize one layer and direction's `extra` parameters in place (from
    # torch's global RNG, seeded per run), given (parameters, hidden size, resolved options);
    # return its buffers (fixed tensors, e.g. the uRNN's permutation). None: nothing to do.
    setup: Callable[[dict[str, Tensor], int, Mapping[str, Any]], dict[str, Tensor]] | None = None
    # Once per sequence, before the first step: weights derived from the parameters that
    # every step reads (the uRNN's W composed from its factors), given (weights, hidden size).
    prepare: Callable[[Mapping[str, Tensor], int], dict[str, Tensor]] | None = None
    # W_hh as one matrix, rows in `gates` order, from a layer's weights (the spectral
    # metrics); None: weights["weight_hh"].
    recurrent: Callable[[Mapping[str, Tensor], int], Tensor] | None = None
    orthogonal: bool = False  # W_hh kept orthogonal by torch's parametrization (orth_rnn)
    # The cell's own check of its resolved options: (key, message) of the first one it
    # refuses (the config reports `model.<key>: <message>`), or None.
    check: Callable[[Mapping[str, Any]], tuple[str, str] | None] | None = None
    # Metrics of the recurrence that replace the spectral radius per gate block, for a cell
    # whose recurrence is not a matrix one would read that way (the LRU's eigenvalue moduli):
    # (a layer's weights, hidden size) -> {metric name: value}; the diagnostics add the
    # layer's suffix (`_l0`, `_l0_reverse`).
    dynamics: Callable[[Mapping[str, Tensor], int], dict[str, float]] | None = None
    # The gate that decides what the state keeps (LSTM forget f, GRU update z): chrono init
    # sets its bias; `chrono_opposite` is set to minus it (LSTM input gate i).
    keep_gate: str | None = None
    chrono_opposite: str | None = None
    gate_metrics: tuple[GateMetric, ...] = ()
    # Numbers per hidden unit and time step that backprop keeps (the memory estimate);
    # 0: width * (gates + 1).
    kept: int = 0
    # Its plain name in reports and headlines (`LSTM`, `uRNN`); "": the `model.name` value.
    title: str = ""

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

    def structure(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The resolved options that shape the cell's weights or its step (not INIT_OPTIONS)."""
        return {k: v for k, v in self.resolved(options).items() if k not in INIT_OPTIONS}

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

    def prepared(self, weights: dict[str, Tensor], hidden: int) -> dict[str, Tensor]:
        """A layer's weights with what `prepare` derives from them, for its steps."""
        return weights if self.prepare is None else weights | self.prepare(weights, hidden)

    def recurrent_matrix(self, weights: Mapping[str, Tensor], hidden: int) -> Tensor:
        """W_hh of one layer and direction, as the spectral metrics read it."""
        return weights["weight_hh"] if self.recurrent is None else self.recurrent(weights, hidden)


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

FORGET = GateMetric("f", names.FORGET_GATE_MEAN, names.FORGET_GATE_SATURATED)
UPDATE = GateMetric("z", names.UPDATE_GATE_MEAN, names.UPDATE_GATE_SATURATED)

BUILT_IN = ("rnn", "lstm", "gru", "urnn",  # the modules of this package that register cells
            "minimal", "lru")


def load_built_in() -> None:
    """Import the built-in cell modules (each registers its cells)."""
    for module in BUILT_IN:
        importlib.import_module(f"{__name__}.{module}")


load_built_in()
