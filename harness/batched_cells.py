"""A faster batched recurrent step (issue #13 item 3), with per-member activations and starts.

`BatchedCellsModel` computes what `harness.batched.BatchedModel` computes (K members of one
cell and size, weights stacked on a leading K dimension, same `stacked` ParameterDict keys
and parameter order, same `member(k)`), faster, and adds two things for heterogeneous
members (issue #13 item 2):

- per-member activation of the vanilla RNN (any of `harness.models.ACTIVATIONS`; members of
  one batch may differ);
- per-member start: `forward(inputs, start)` with inputs left-padded to the longest member's
  length L. Member k is held at its initial state (zeros: h, and the LSTM's c) for
  t < start[k] and from start[k] on evolves as its separate run from that run's t = 0, so
  `outputs[k, :, start[k]:]` equals the separate run on `inputs[k, :, start[k]:]`. The
  padded inputs are not read (a step on zero input is not a no-op: the biases), and the
  held steps carry no gradient to the weights.

Backends (measured in benchmarks/batched_cells.py; docs/batched_cells.md has the figures):

- `cpp`: the recurrence of a whole layer as two C++ ops (harness/batched_cells.cpp, built
  on first use with torch's extension builder and cached): forward over the sequence, and a
  hand-written backward through time. Per time step one bmm for all members and one fused
  loop over the gates; dW_hh is one bmm over all steps at the end. The input projection
  (all time steps at once), the readout and their gradients stay in autograd.
- `eager`: the same computation as autograd ops per time step (one sigmoid over the GRU's
  r, z; the LSTM as `BatchedModel`'s cell: a fused gate layout, one sigmoid over i, f, o
  reordered to sit together, one tanh over g and `addcmul`, measured 4-12% slower). Used
  when the C++ ops cannot be built (no compiler, no ninja), with one log line.
- `auto` (default): `cpp` if it builds, else `eager`.

The stacked layout is torch's (gate order i, f, g, o and r, z, n), so parameters,
`member(k)` and the optimizer state are laid out exactly as `BatchedModel`'s, and
`harness.batched.member_optimizer_state` / `stacked_optimizer_state` (re-exported here) map
them to and from separate runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from harness.batched import (
    BATCHED_CELLS,
    member_optimizer_state,
    stacked_key,
    stacked_optimizer_state,
)
from harness.models import ACTIVATIONS, LEAKY_SLOPE, RecurrentModel

__all__ = ["BACKENDS", "BatchedCellsModel", "kernels", "member_optimizer_state",
           "stacked_optimizer_state", "starts"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "cpp", "eager")
CELL_CODES = {"rnn": 0, "lstm": 1, "gru": 2}  # as in batched_cells.cpp
ACTIVATION_CODES = {"tanh": 0, "relu": 1, "leaky_relu": 2, "hard_tanh": 3}
SOURCE = Path(__file__).with_name("batched_cells.cpp")
CFLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno",
          "-fno-trapping-math", "-fopenmp-simd"]


def _cpu_tag() -> str:
    """A short tag of this CPU's instruction sets: the build uses -march=native, so a cache
    shared by machines of other CPUs (a cluster's home folder) keeps one build per kind."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


STALE_LOCK_S = 600.0  # a build takes seconds; an older lock is a killed build's


def clear_stale_lock(folder: str, now: float | None = None) -> bool:
    """Remove the build lock a killed build left in `folder` (torch waits on it forever),
    if it is older than STALE_LOCK_S; True if one was removed."""
    lock = Path(folder) / "lock"
    try:
        age = (time.time() if now is None else now) - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age < STALE_LOCK_S:
        return False
    lock.unlink(missing_ok=True)
    log.warning("batched_cells: removed a stale build lock (%.0f s old): %s", age, lock)
    return True


@cache
def kernels() -> Any | None:
    """The C++ ops (`torch.ops.batched_cells`), built on first use and cached by torch in
    $TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions); None, with one log line,
    where they cannot be built."""
    compiler = os.environ.get("CXX", "c++")
    missing = [tool for tool in (compiler, "ninja") if shutil.which(tool) is None]
    if missing:
        log.warning("batched_cells: no %s found; using the eager batched cell (slower)",
                    " and no ".join(missing))
        return None
    from torch.utils import cpp_extension

    name = f"harness_batched_cells_{_cpu_tag()}"
    start = time.perf_counter()
    try:
        clear_stale_lock(cpp_extension._get_build_directory(name, False))
        cpp_extension.load(name=name, sources=[str(SOURCE)],
                           extra_cflags=CFLAGS, extra_ldflags=["-lmvec"],
                           is_python_module=False, verbose=False)
    except Exception as error:  # any build failure: the eager cell
        lines = str(error).strip().splitlines()
        reason = next((line for line in lines if "error" in line.lower()),
                      lines[-1] if lines else type(error).__name__)
        log.warning("batched_cells: building the C++ cell failed (%s); using the eager "
                    "batched cell (slower)", reason.strip())
        return None
    log.debug("batched_cells: C++ cell loaded in %.1f s", time.perf_counter() - start)
    return torch.ops.batched_cells


def starts(lengths: Sequence[int]) -> Tensor:
    """Per-member start for sequences of these lengths left-padded to the longest:
    start[k] = max(lengths) - lengths[k]."""
    longest = max(lengths)
    return torch.tensor([longest - n for n in lengths], dtype=torch.long)


class _Layer(torch.autograd.Function):
    """One layer over the whole sequence through the C++ ops: x [K, L·B, D] (time-major),
    w_ih [K, G·H, D], w_hh [K, G·H, H], bias [K, G·H] (b_ih + b_hh; the GRU's b_ih),
    b_hh [K, G·H] (GRU only) -> h [K, L, B, H]."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w_ih: Tensor, w_hh: Tensor, bias: Tensor, b_hh: Tensor,
                cell: int, start: Tensor, act: Tensor, length: int, ops: Any) -> Tensor:
        xh, gates, cbuf, hn = ops.sequence_forward(cell, x, w_ih, w_hh, bias, b_hh, start, act,
                                                   LEAKY_SLOPE, length)
        ctx.save_for_backward(x, w_ih, w_hh, start, act)
        ctx.buffers, ctx.cell, ctx.ops = [xh, gates, cbuf, hn], cell, ops
        hidden = w_hh.shape[2]
        return xh[:, 1:].view(x.shape[0], length, x.shape[1] // length, -1)[..., -hidden:]

    @staticmethod
    def backward(ctx: Any, grad_h: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.buffers is None:
            raise RuntimeError("batched_cells: the C++ layer's backward runs once per forward "
                               "(it overwrites its saved gates); retain_graph is not supported")
        x, w_ih, w_hh, start, act = ctx.saved_tensors
        xh, gates, cbuf, hn = ctx.buffers
        ctx.buffers = None
        dx, dw_ih, dw_hh, dbias, db_hh = ctx.ops.sequence_backward(
            ctx.cell, grad_h, x, w_ih, w_hh, xh, gates, cbuf, hn, start, act, LEAKY_SLOPE,
            ctx.needs_input_grad[0])
        return (dx if ctx.needs_input_grad[0] else None, dw_ih, dw_hh, dbias,
                db_hh if ctx.cell == CELL_CODES["gru"] else None,
                None, None, None, None, None)


class BatchedCellsModel(nn.Module):
    """K recurrent models of one cell and shape with stacked weights:
    [K, B, L, D] (and per-member start [K]) -> [K, B, L, O]."""

    def __init__(self, members: Sequence[RecurrentModel], backend: str = "auto") -> None:
        super().__init__()
        if not members:
            raise ValueError("batched: at least one member is needed")
        if backend not in BACKENDS:
            raise ValueError(f"batched_cells: unknown backend {backend!r}; choose {BACKENDS}")
        first = members[0]
        shape = (first.cell, first.hidden_size, first.num_layers, first.readout.weight.shape)
        for member in members:
            if (member.cell, member.hidden_size, member.num_layers,
                    member.readout.weight.shape) != shape:
                raise ValueError(f"batched: members differ in shape {shape}")
            if member.cell not in BATCHED_CELLS or member.activation not in ACTIVATIONS:
                raise ValueError(f"batched: {member.cell} with activation "
                                 f"{member.activation!r} is not batched")
            if member.bidirectional:
                raise ValueError("batched: bidirectional models are not batched")
        self.cell = first.cell
        self.activations = tuple(m.activation for m in members)
        # The common activation (as BatchedModel.activation), None for a mixed batch.
        self.activation = first.activation if len(set(self.activations)) == 1 else None
        self.hidden_size, self.num_layers = first.hidden_size, first.num_layers
        self.members = len(members)
        self.input_size = first.rnn.input_size
        self.output_size = first.readout.out_features
        self.register_buffer("activation_codes", torch.tensor(
            [ACTIVATION_CODES[a] for a in self.activations], dtype=torch.long),
            persistent=False)
        self.ops = kernels() if backend in ("auto", "cpp") else None
        if backend == "cpp" and self.ops is None:
            raise RuntimeError("batched_cells: backend 'cpp' requested but the C++ cell could "
                               "not be built (see the log)")
        self.backend = "cpp" if self.ops is not None else "eager"
        with torch.no_grad():
            # As BatchedModel: ParameterDict keys may not contain "."; a list of pairs keeps
            # the member's parameter order, so optimizer state index i is the same parameter
            # here and in a separate run.
            self.stacked = nn.ParameterDict([
                (stacked_key(key), nn.Parameter(torch.stack([dict(m.named_parameters())[key]
                                                             for m in members])))
                for key, _ in first.named_parameters()])

    def forward(self, inputs: Tensor, start: Tensor | Sequence[int] | None = None) -> Tensor:
        """inputs [K, B, L, D] -> outputs [K, B, L, O]. `start[k]`: member k's first real
        step (its inputs left-padded); its outputs before it are the readout of the held
        zero state and belong to no separate run (slice `[:, start[k]:]`)."""
        k, batch, length, _ = inputs.shape
        if start is not None:
            start = torch.as_tensor(start, dtype=torch.long)
            if start.shape != (k,) or bool((start < 0).any()) or bool((start >= length).any()):
                raise ValueError(f"batched_cells: start must be [K] in [0, L); got "
                                 f"{start.tolist()} for K={k}, L={length}")
            if not bool(start.any()):
                start = None
        # Time-major inside each member: a time step of a member is one contiguous block.
        layer_input = inputs.transpose(1, 2).reshape(k, length * batch, -1)
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = (self.stacked[f"rnn__{name}_l{layer}"]
                                      for name in ("weight_ih", "weight_hh", "bias_ih",
                                                   "bias_hh"))
            if self.ops is not None and inputs.device.type == "cpu":  # the ops are CPU code
                hidden = self._layer_cpp(layer_input, w_ih, w_hh, b_ih, b_hh, start, length)
            else:
                hidden = self._layer_eager(layer_input, w_ih, w_hh, b_ih, b_hh, start, length)
            layer_input = hidden.reshape(k, length * batch, self.hidden_size)
        weight, bias = self.stacked["readout__weight"], self.stacked["readout__bias"]
        outputs = torch.baddbmm(bias.unsqueeze(1), layer_input, weight.transpose(1, 2))
        return outputs.view(k, length, batch, -1).transpose(1, 2)

    def _layer_cpp(self, layer_input: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                   b_hh: Tensor, start: Tensor | None, length: int) -> Tensor:
        """One layer through the C++ ops: [K, L·B, D] -> h [K, L, B, H]."""
        k = layer_input.shape[0]
        # The GRU keeps b_hh apart (it sits inside r * (W_hn h + b_hn)); the other cells
        # only ever use b_ih + b_hh.
        gru = self.cell == "gru"
        bias = b_ih if gru else b_ih + b_hh
        starts_ = start if start is not None else torch.zeros(k, dtype=torch.long)
        return _Layer.apply(layer_input, w_ih, w_hh, bias, b_hh if gru else bias,
                            CELL_CODES[self.cell], starts_, self.activation_codes, length,
                            self.ops)

    def _layer_eager(self, layer_input: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                     b_hh: Tensor, start: Tensor | None, length: int) -> Tensor:
        """One layer as autograd ops per time step: [K, L·B, D] -> h [K, L, B, H]."""
        k, hidden = layer_input.shape[0], self.hidden_size
        bias = b_ih if self.cell == "gru" else b_ih + b_hh
        projected = torch.baddbmm(bias.unsqueeze(1), layer_input, w_ih.transpose(1, 2))
        steps = projected.view(k, length, -1, projected.shape[-1]).unbind(dim=1)
        batch = steps[0].shape[1]
        w_hh_t = w_hh.transpose(1, 2)
        b_hh_ = b_hh.unsqueeze(1)
        activate = self._activate()
        h = layer_input.new_zeros(k, batch, hidden)
        c = h
        # Steps where some member is still held: active[t] is [K, 1, 1].
        held = int(start.max()) if start is not None else 0
        active = (torch.arange(held).view(-1, 1) >= start.view(1, -1)).view(held, k, 1, 1) \
            if start is not None else None
        states = []
        for t, x_t in enumerate(steps):
            if self.cell == "rnn":
                h_new, c_new = activate(torch.baddbmm(x_t, h, w_hh_t)), c
            elif self.cell == "lstm":
                i, f, g, o = torch.baddbmm(x_t, h, w_hh_t).chunk(4, dim=-1)
                c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h_new = torch.sigmoid(o) * torch.tanh(c_new)
            else:
                h_proj = torch.baddbmm(b_hh_, h, w_hh_t)
                r, z = torch.sigmoid(x_t[..., :2 * hidden] + h_proj[..., :2 * hidden]).chunk(
                    2, dim=-1)
                n = torch.tanh(torch.addcmul(x_t[..., 2 * hidden:], r, h_proj[..., 2 * hidden:]))
                h_new, c_new = torch.lerp(n, h, z), c  # (1 - z) n + z h
            if active is not None and t < held:
                h_new = torch.where(active[t], h_new, h)
                c_new = torch.where(active[t], c_new, c) if self.cell == "lstm" else c_new
            h, c = h_new, c_new
            states.append(h)
        return torch.stack(states, dim=1)

    def _activate(self) -> Callable[[Tensor], Tensor]:
        """The vanilla RNN's activation: the common one, or a per-member selection."""
        if self.activation is not None:
            return ACTIVATIONS[self.activation]
        names = sorted(set(self.activations))
        masks = {name: torch.tensor([a == name for a in self.activations]).view(-1, 1, 1)
                 for name in names}

        def mixed(pre: Tensor) -> Tensor:
            out = ACTIVATIONS[names[0]](pre)
            for name in names[1:]:
                out = torch.where(masks[name], ACTIVATIONS[name](pre), out)
            return out

        return mixed

    @torch.no_grad()
    def member(self, k: int) -> RecurrentModel:
        """A fused `RecurrentModel` holding a copy of member k's current weights."""
        model = RecurrentModel(self.cell, self.input_size, self.output_size, self.hidden_size,
                               self.num_layers, self.activations[k])
        model.to(self.stacked["readout__weight"].dtype)
        for key, value in model.named_parameters():
            value.copy_(self.stacked[stacked_key(key)][k])
        return model
