"""The recurrent cells, each defined once: what its gate blocks are and mean, which torch module
holds its weights, and which of the config's options apply to it.

Everything else derives from `CELLS`: the `model.name` choices and their checks
(harness/schema.py), the model and its initializations (harness/models.py), what the batched
model computes (harness/batched.py), the diagnostics' per-block metrics and the gate that
decides what is kept (harness/diagnostics.py), the memory estimate (harness/resources.py), and
the report's block labels (this module imports no torch, so the report reads it
cheaply). Adding a cell means one entry here, plus its step in
`RecurrentModel._step` (and in the batched kernels, if it is to be batched).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import names


@dataclass(frozen=True)
class Gate:
    """One H x H row block of W_hh, in torch's order."""

    name: str  # as in metric keys: spectral_radius_l0_<name>
    meaning: str  # as the report labels it


@dataclass(frozen=True)
class Cell:
    name: str  # the `model.name` value
    gates: tuple[Gate, ...]  # W_hh's row blocks in torch's order
    fused: str  # the torch.nn module that holds the weights (and runs them fused)
    vanilla: bool  # h' = act(W_ih x + W_hh h + b): activations and identity init apply
    batched: bool  # harness/batched.py's BatchedModel computes it
    # The gate that decides what the state keeps (LSTM forget f, GRU update z): chrono init
    # sets its bias, the diagnostics log its mean and saturation under these metric keys.
    keep_gate: str | None = None
    keep_metrics: tuple[str, str] | None = None  # (mean, saturated share)
    # chrono sets this gate's bias to minus the keep gate's (LSTM input gate i)
    chrono_opposite: str | None = None
    forget_bias: bool = False  # model.forget_bias sets the keep gate's bias (LSTM)

    @property
    def blocks(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.gates)

    def block(self, name: str) -> int:
        """The index of gate block `name` in W_hh's rows."""
        return self.blocks.index(name)

    def meaning(self, block: str) -> str | None:
        return next((g.meaning for g in self.gates if g.name == block), None)


_VANILLA = (Gate("hh", "recurrent matrix"),)

CELLS: dict[str, Cell] = {cell.name: cell for cell in (
    Cell("rnn", _VANILLA, "RNN", vanilla=True, batched=True),
    # W_hh constrained orthogonal by torch's parametrization (the uRNN/expRNN family)
    Cell("orth_rnn", (Gate("hh", "orthogonal recurrent matrix"),), "RNN", vanilla=True,
         batched=False),
    Cell("lstm", (Gate("i", "input gate"), Gate("f", "forget gate"),
                  Gate("g", "cell candidate"), Gate("o", "output gate")),
         "LSTM", vanilla=False, batched=True, keep_gate="f",
         keep_metrics=(names.FORGET_GATE_MEAN, names.FORGET_GATE_SATURATED),
         chrono_opposite="i", forget_bias=True),
    # torch's GRU keeps the share z of the old state: h' = (1 - z) n + z h
    Cell("gru", (Gate("r", "reset gate"), Gate("z", "update gate"), Gate("n", "candidate")),
         "GRU", vanilla=False, batched=True, keep_gate="z",
         keep_metrics=(names.UPDATE_GATE_MEAN, names.UPDATE_GATE_SATURATED)),
)}
VANILLA = tuple(name for name, cell in CELLS.items() if cell.vanilla)
BATCHED = tuple(name for name, cell in CELLS.items() if cell.batched)
GATE_BLOCKS = {name: cell.blocks for name, cell in CELLS.items()}
