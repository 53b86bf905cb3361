"""Batched runs: K runs of one cell and size trained in one process as one stacked model.

The K *members* share the cell, hidden size, layers, optimizer kind and the training settings,
and may differ in their seed, learning rate, clipping (none / norm / value and threshold), the
vanilla RNN's activation (tanh, relu, leaky_relu, hard_tanh), init, forget bias and gap. Member
k is initialized exactly as its separate run (`torch.manual_seed(seed)`, then the model of its
config) and draws its data from that run's own generators (`loop.data_generators`). Their
weights are stacked on a leading dimension K ([K, G·H, D] for W_ih, ...), and one time step of
all members is one batched matmul plus the cell's elementwise work on [K, B, ·] tensors: in
C++ with a hand-written backward through time (harness/batched_kernels.py, measured 1.3-4x
faster than K separate fused runs on the CPU, docs/batched_cells.md), or as autograd ops per
time step where the C++ ops cannot be built or the tensors are not on the CPU.

Why not the fused modules: `torch.func.vmap` has no batching rule for `aten::rnn_tanh`,
`aten::lstm` or `aten::gru` ("Batching rule not implemented"), and vmapping the unrolled
twin's step costs more than writing the batched step by hand (measured; docs/benchmark.md).

Independence of the members:
- the loss is the *sum* of the members' losses, so member k's gradient is exactly the
  gradient of its own loss (no cross-member terms, no 1/K factor);
- Adam, SGD (momentum) and RMSprop are elementwise, so each member's optimizer state and
  update are its own, at its own learning rate (harness/optimizers.StackedOptimizer); all
  members take their step together, so the step count is shared;
- clipping is per member (`clip_members`): the global norm a separate run clips is the norm
  over *its* parameters, i.e. over one slice k of every stacked tensor;
- a non-finite value stays in its member's slices (every op is per member), so one member
  diverging does not touch the others;
- members with different gaps have sequences of different lengths: a shorter one is
  left-padded to the batch's longest, and its hidden state holds its initial value (zero)
  through the padding, so from its first real step on it computes exactly its separate run
  (`BatchedModel.forward`'s `start`).

The cell equations are torch's (gate order i, f, g, o for the LSTM and r, z, n for the GRU),
as in `RecurrentModel.unrolled`; tests check the batched outputs and gradients against the
fused modules in float64 and whole training runs against the harness's own driver.

`BatchedStepper` is the driver's stepper for K members (harness/loop.drive); harness/train.py
builds it for `batched_seeds` and for the members of a batched job (harness/batching.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.batched_kernels import ACTIVATION_CODES, BACKENDS, CELL_CODES, SequenceLayer, kernels
from harness.cells import CELLS
from harness.cells.ops import Context, expand_state, linear
from harness.clipping import MODES, TOLERANCE, ClipResult, guard, untrusted
from harness.loop import StepAudit, clone_state
from harness.models import ACTIVATIONS, RecurrentModel
from harness.optimizers import StackedOptimizer
from harness.schema import ClipConfig, OptimConfig
from tasks import Batch, Task


def unbatchable(cell: str, activation: str, bidirectional: bool) -> str | None:
    """Why a model cannot be trained as a batched member (None: it can)."""
    if cell not in CELLS:
        return f"model {cell!r} is not a registered cell"
    if not CELLS[cell].batched:
        batched = ", ".join(name for name, spec in CELLS.items() if spec.batched)
        return f"model {cell!r} is not batched (only {batched})"
    if CELLS[cell].vanilla and activation not in ACTIVATIONS:
        return f"activation {activation!r} has learned parameters; not batched"
    if bidirectional:
        return "bidirectional models are not batched"
    return None


def build_member(seed: int, cell: str, task: Task, hidden_size: int, num_layers: int = 1,
                 activation: str = "tanh", init: str = "default",
                 forget_bias: float = 1.0) -> RecurrentModel:
    """The model a separate run with this seed starts from (as `harness.train` builds it)."""
    torch.manual_seed(seed)
    return RecurrentModel(cell, task.input_size, task.output_size, hidden_size, num_layers,
                          activation, init, forget_bias)


def stacked_key(name: str) -> str:
    return name.replace(".", "__")


class BatchedModel(nn.Module):
    """K recurrent models of one cell and shape with stacked weights:
    [K, B, L, D] (and per-member start [K]) -> [K, B, L, O].

    Members share cell, hidden size, layers, readout shape, the cell's options, learned
    initial states and `clip.mode=backprop`'s threshold; a vanilla RNN's members may each
    have their own activation among `ACTIVATIONS`. `backend`: `cpp` (the C++ recurrence,
    harness/batched_kernels.py, for the cells it computes), `eager` (the cell's own step with
    a leading member axis), `auto` (`cpp` where it builds, the tensors are on the CPU and the
    cell has a kernel, else `eager`)."""

    def __init__(self, members: Sequence[RecurrentModel], backend: str = "auto") -> None:
        super().__init__()
        if not members:
            raise ValueError("batched: at least one member is needed")
        if backend not in BACKENDS:
            raise ValueError(f"batched: unknown backend {backend!r}; choose {BACKENDS}")
        first = members[0]
        def shape_of(m: RecurrentModel) -> tuple[Any, ...]:
            return (m.cell, m.hidden_size, m.num_layers, m.readout.weight.shape,
                    m.spec.structure(m.options), m.learn_init_state, m.clip)

        shape = shape_of(first)
        for member in members:
            if shape_of(member) != shape:
                raise ValueError(f"batched: members differ in shape {shape}")
            reason = unbatchable(member.cell, member.activation, member.bidirectional)
            if reason is not None:
                raise ValueError(f"batched: {reason}")
        self.spec, self.cell = first.spec, first.cell
        self.activations = tuple(m.activation for m in members)
        # The common activation (as BatchedModel.activation), None for a mixed batch.
        self.activation = first.activation if len(set(self.activations)) == 1 else None
        self.hidden_size, self.num_layers = first.hidden_size, first.num_layers
        self.options = self.spec.structure(first.options)
        self.learn_init_state, self.clip = first.learn_init_state, first.clip
        self.members = len(members)
        self.input_size = first.weights(0)["weight_ih"].shape[1]
        self.output_size = first.readout.out_features
        self.paths = [first.weight_names(layer) for layer in range(self.num_layers)]
        self.register_buffer("activation_codes", torch.tensor(
            [ACTIVATION_CODES.get(a, -1) for a in self.activations], dtype=torch.long),
            persistent=False)
        self._held: dict[tuple[tuple[int, ...], str], Tensor] = {}  # `_active`'s masks
        self.ops = kernels() if backend in ("auto", "cpp") else None
        kernel = self.spec.kernel is not None and not self.learn_init_state and self.clip is None
        if backend == "cpp" and (self.ops is None or not kernel):
            raise RuntimeError("batched: backend 'cpp' requested but the C++ cell could "
                               "not be built (see the log)" if self.ops is None else
                               f"batched: backend 'cpp' has no kernel for {self.cell} with "
                               "these options")
        if not kernel:
            self.ops = None
        self.backend = "cpp" if self.ops is not None else "eager"
        with torch.no_grad():
            # As BatchedModel: ParameterDict keys may not contain "."; a list of pairs keeps
            # the member's parameter order, so optimizer state index i is the same parameter
            # here and in a separate run.
            self.stacked = nn.ParameterDict([
                (stacked_key(key), nn.Parameter(torch.stack([dict(m.named_parameters())[key]
                                                             for m in members])))
                for key, _ in first.named_parameters()])
            for key, _ in first.named_buffers():
                self.register_buffer(stacked_key(key), torch.stack(
                    [dict(m.named_buffers())[key] for m in members]))

    def recurrent_parameters(self) -> list[Tensor]:
        """The stacked W_hh parameters of every layer, where W_hh is a plain matrix
        parameter (`RecurrentModel.recurrent_parameters`)."""
        if not self.spec.matrix_init or self.spec.orthogonal:
            return []
        return [self.stacked[stacked_key(paths["weight_hh"])] for paths in self.paths
                if "weight_hh" in paths]

    def layer_weights(self, layer: int, broadcast: bool = True) -> dict[str, Tensor]:
        """Layer `layer`'s stacked weights, the member axis first: matrices [K, out, in];
        vectors [K, 1, n] as the cell's step reads them (`broadcast`, over the batch), or the
        parameters themselves, [K, n]."""
        weights = {}
        for key, path in self.paths[layer].items():
            name = stacked_key(path)
            value = self.stacked[name] if name in self.stacked else getattr(self, name)
            weights[key] = value.unsqueeze(1) if broadcast and value.dim() == 2 else value
        return weights

    def forward(self, inputs: Tensor, start: Sequence[int] | Tensor | None = None) -> Tensor:
        """inputs [K, B, L, D] -> outputs [K, B, L, O]. `start[k]`: member k's first real
        step (its inputs left-padded); its outputs before it are the readout of the held
        initial state and belong to no separate run (slice `[:, start[k]:]`)."""
        k, batch, length, _ = inputs.shape
        if start is not None:
            start = starts(start)
            if len(start) != k or any(not 0 <= s < length for s in start):
                raise ValueError(f"batched: start must be [K] in [0, L); got "
                                 f"{list(start)} for K={k}, L={length}")
            if not any(start):
                start = None
        # Time-major inside each member: a time step of a member is one contiguous block.
        layer_input = inputs.transpose(1, 2).reshape(k, length * batch, -1)
        width = self.spec.width * self.hidden_size
        for layer in range(self.num_layers):
            if self.ops is not None and inputs.device.type == "cpu":  # the ops are CPU code
                # The parameters themselves: through views, b_ih + b_hh's one gradient would
                # reach both biases as views of one tensor, which autograd then hands to both
                # as their .grad (one storage: clipping in place would scale it twice).
                hidden = self._layer_cpp(layer_input, self.layer_weights(layer, False), start,
                                         length)
            else:
                hidden = self._layer_eager(layer_input, self.layer_weights(layer), start, length)
            layer_input = hidden.reshape(k, length * batch, width)
        weight, bias = self.stacked["readout__weight"], self.stacked["readout__bias"]
        outputs = torch.baddbmm(bias.unsqueeze(1), layer_input, weight.transpose(1, 2))
        return outputs.view(k, length, batch, -1).transpose(1, 2)

    def _layer_cpp(self, layer_input: Tensor, weights: dict[str, Tensor],
                   start: tuple[int, ...] | None, length: int) -> Tensor:
        """One layer through the C++ ops: [K, L·B, D] -> h [K, L, B, H]."""
        k = layer_input.shape[0]
        # The GRU keeps b_hh apart (it sits inside r * (W_hn h + b_hn)); the other cells
        # only ever use b_ih + b_hh.
        gru = self.cell == "gru"
        b_ih, b_hh = weights["bias_ih"], weights["bias_hh"]
        bias = b_ih if gru else b_ih + b_hh
        starts_ = torch.tensor(start if start is not None else [0] * k, dtype=torch.long)
        return SequenceLayer.apply(layer_input, weights["weight_ih"], weights["weight_hh"],
                                   bias, b_hh if gru else bias, CELL_CODES[self.spec.kernel],
                                   starts_, self.activation_codes, length, self.ops)

    def _layer_eager(self, layer_input: Tensor, weights: dict[str, Tensor],
                     start: tuple[int, ...] | None, length: int) -> Tensor:
        """One layer as the cell's step per time step, member axis first:
        [K, L·B, D] -> h [K, L, B, width · H]."""
        k = layer_input.shape[0]
        projected = linear(layer_input, weights["weight_ih"], weights.get("bias_ih"))
        steps = projected.view(k, length, -1, projected.shape[-1]).unbind(dim=1)
        context = Context(self.hidden_size, self._activate() if self.spec.vanilla else None,
                          self.clip, self.options)
        state = self._initial_state(weights, steps[0])
        weights = self.spec.prepared(weights, self.hidden_size)
        # Steps where some member is still held: active[t] is [K, 1, 1].
        held = max(start) if start is not None else 0
        active = self._active(start, layer_input.device) if start is not None else None
        states = []
        for t, x_t in enumerate(steps):
            new, _ = self.spec.step(weights, x_t, state, context)
            if active is not None and t < held:
                new = tuple(torch.where(active[t], n, s) for n, s in zip(new, state, strict=True))
            state = new
            states.append(state[0])
        return torch.stack(states, dim=1)

    def _initial_state(self, weights: dict[str, Tensor], like: Tensor) -> tuple[Tensor, ...]:
        """Each member's state before its first step ([K, B, width · H] each): learned or
        zero."""
        shape = (*like.shape[:-1], self.spec.width * self.hidden_size)
        return tuple(expand_state(weights[f"{state}0"], like) if f"{state}0" in weights
                     else like.new_zeros(shape) for state in self.spec.state)

    def _active(self, start: tuple[int, ...], device: torch.device) -> Tensor:
        """[max(start), K, 1, 1] bool: whether member k has begun at step t. Made once per
        `start` and device: from host numbers, a copy to a GPU would wait for its queue."""
        key = (start, str(device))
        if key not in self._held:
            held, k = max(start), len(start)
            self._held[key] = (torch.arange(held).view(-1, 1) >= torch.tensor(start).view(1, -1)
                               ).view(held, k, 1, 1).to(device)
        return self._held[key]

    def _activate(self) -> Callable[[Tensor], Tensor]:
        """The vanilla RNN's activation: the common one, or a per-member selection."""
        if self.activation is not None:
            return ACTIVATIONS[self.activation]
        kinds = sorted(set(self.activations))
        codes = self.activation_codes.view(-1, 1, 1)  # a buffer: on the model's device
        masks = {kind: codes == ACTIVATION_CODES[kind] for kind in kinds}

        def mixed(pre: Tensor) -> Tensor:
            out = ACTIVATIONS[kinds[0]](pre)
            for kind in kinds[1:]:
                out = torch.where(masks[kind], ACTIVATIONS[kind](pre), out)
            return out

        return mixed

    @torch.no_grad()
    def member(self, k: int) -> RecurrentModel:
        """A `RecurrentModel` holding a copy of member k's current weights."""
        model = RecurrentModel(self.cell, self.input_size, self.output_size, self.hidden_size,
                               self.num_layers, self.activations[k], options=self.options,
                               learn_init_state=self.learn_init_state, clip=self.clip)
        model.to(self.stacked["readout__weight"].dtype)
        for key, value in model.named_parameters():
            value.copy_(self.stacked[stacked_key(key)][k])
        for key, value in model.named_buffers():
            value.copy_(getattr(self, stacked_key(key))[k])
        return model


def left_padded(tensors: Sequence[Tensor]) -> tuple[Tensor, tuple[int, ...]]:
    """K tensors [B, L_k, ...] -> one [K, B, L, ...], each left-padded with zeros to the
    longest length L, and start: where each member's own sequence begins (host numbers, from
    the shapes)."""
    length = max(t.shape[1] for t in tensors)
    start = tuple(length - t.shape[1] for t in tensors)

    def pad(tensor: Tensor, left: int) -> Tensor:
        if left == 0:
            return tensor
        dims = [0, 0] * (tensor.dim() - 2) + [left, 0]  # F.pad lists the last dimension first
        return F.pad(tensor, dims)

    return torch.stack([pad(t, left) for t, left in zip(tensors, start, strict=True)]), start


def stack_batches(batches: Sequence[Batch]) -> tuple[Batch, tuple[int, ...]]:
    """K batches -> one Batch of [K, B, L, ...] tensors, each left-padded (inputs and targets
    with zeros, mask with False) to the longest length L, and start (`left_padded`)."""
    inputs, start = left_padded([b.inputs for b in batches])
    targets, _ = left_padded([b.targets for b in batches])
    mask, _ = left_padded([b.mask for b in batches])
    return Batch(inputs, targets, mask), start


def starts(start: Sequence[int] | Tensor) -> tuple[int, ...]:
    """Members' first real steps as host numbers (a tensor is read: a sync on a GPU)."""
    return tuple(int(s) for s in (start.tolist() if isinstance(start, Tensor) else start))


def member_losses(tasks: Sequence[Task], outputs: Tensor, batches: Sequence[Batch],
                  start: Sequence[int]) -> Tensor:
    """Every member's published loss on its own batch (its outputs without the padding): [K]."""
    return torch.stack([tasks[k].loss(outputs[k, :, start[k]:], batches[k])
                        for k in range(outputs.shape[0])])


def member_norms(grads: Sequence[Tensor]) -> Tensor:
    """Global L2 norm of each member's gradient: [K] (the norm over slice k of every tensor).

    Each member's norm is a reduction along a contiguous row of its own ([K, tensors]), so
    its rounding does not depend on K or on the other members (a reduction across rows,
    [tensors, K] along dim 0, accumulates in another order at K = 1 than at K > 1)."""
    per_tensor = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads],
                             dim=1)
    return torch.linalg.vector_norm(per_tensor, dim=1)


class MemberClipper:
    """`Clipper`'s semantics for each member on its own, member k by clips[k] (mode,
    threshold, NaN guard): the audit's pre, post, fired, failed and guarded are [K] tensors.

    `norm` rescales member k by threshold / (pre_k + 1e-6) when that is below 1 (the formula
    of `clip_grad_norm_`); `value` clamps member k's elements to +-its threshold; `none` and
    `backprop` (whose clamp the cells apply inside backprop) leave it as it is. Then, for the
    members with `clip.nan_guard`, Pascanu's guard (harness/clipping.guard) where member k's
    pre-clip norm is untrusted. The modes are host facts and the constants are made once per
    device, so a step reads nothing back from the device (the audit's `failed` is checked
    with the driver's reads).
    """

    def __init__(self, clips: Sequence[ClipConfig]) -> None:
        self.modes = [c.mode.value if hasattr(c.mode, "value") else str(c.mode) for c in clips]
        for mode in self.modes:
            if mode not in MODES:
                raise ValueError(f"clip.mode: unknown {mode!r}; choose one of {list(MODES)}")
        self.thresholds = [float(c.threshold) for c in clips]
        self.guards = [bool(c.nan_guard) for c in clips]
        self.norm, self.value = "norm" in self.modes, "value" in self.modes
        self._constants: dict[tuple[str, torch.dtype], tuple[Tensor, ...]] = {}

    def constants(self, like: Tensor) -> tuple[Tensor, ...]:
        """threshold, norm mask, value mask, value bound, guard mask ([K] each) on `like`'s
        device."""
        key = (str(like.device), like.dtype)
        if key not in self._constants:
            threshold = torch.tensor(self.thresholds, dtype=like.dtype)
            norm = torch.tensor([m == "norm" for m in self.modes])
            value = torch.tensor([m == "value" for m in self.modes])
            bound = torch.where(value, threshold, torch.full_like(threshold, torch.inf))
            self._constants[key] = tuple(t.to(like.device) for t in (
                threshold, norm, value, bound, torch.tensor(self.guards)))
        return self._constants[key]

    def __call__(self, parameters: Sequence[nn.Parameter],
                 recurrent: Sequence[Tensor] = ()) -> ClipResult:
        """Clip in place; `recurrent`: the stacked recurrent matrices (the NaN guard's)."""
        params = [p for p in parameters if p.grad is not None]
        grads = [p.grad for p in params]
        if not grads:
            raise RuntimeError("clipping found no gradients: call it after loss.backward()")
        pre = member_norms(grads)
        threshold, norm, value, bound, guards = self.constants(pre)
        never = torch.zeros_like(pre, dtype=torch.bool)
        fired = failed = never
        if self.norm:
            scale = torch.where(norm, (threshold / (pre + 1e-6)).clamp(max=1.0),
                                torch.ones_like(pre))
            for g in grads:
                g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
            fired = fired | (norm & (pre > threshold))
        if self.value:
            fired = fired | (value & (member_largest(grads) > threshold))
            for g in grads:
                limit = bound.view(-1, *([1] * (g.dim() - 1)))
                torch.clamp(g, -limit, limit, out=g)
            failed = value & (member_largest(grads) > threshold * (1 + TOLERANCE))
        guarded = never
        if any(self.guards):
            guarded = untrusted(pre) & guards
            guard(params, guarded, recurrent)
        if not (self.norm or self.value or any(self.guards)):
            return ClipResult(pre, pre, fired, failed, never)
        post = member_norms(grads)
        failed = (failed | (norm & (post > threshold * (1 + TOLERANCE)))) & ~guarded
        return ClipResult(pre, post, fired, failed, guarded)


def member_largest(grads: Sequence[Tensor]) -> Tensor:
    """Each member's largest gradient element in magnitude: [K]."""
    return torch.stack([g.abs().flatten(1).amax(dim=1) for g in grads]).amax(dim=0)


def clip_members(parameters: Sequence[nn.Parameter], clips: Sequence[ClipConfig]) -> ClipResult:
    """Clip each member's gradient by its own clipping config once (`MemberClipper`)."""
    return MemberClipper(clips)(parameters)


class BatchedStepper:
    """The driver's stepper for K members (harness/loop.drive) as one stacked model: member
    k has the model `models[k]` (its current weights), task `tasks[k]`, optimizer config
    `optims[k]` and clipping `clips[k]`; `optimizer_states` (None: fresh) are the members'
    optimizers' states in a separate run's format, so a member can come from, or go to, a
    separate run's checkpoint. `backend`: `BatchedModel`'s."""

    def __init__(self, models: Sequence[RecurrentModel], tasks: Sequence[Task],
                 optims: Sequence[OptimConfig], clips: Sequence[ClipConfig],
                 optimizer_states: Sequence[dict[str, Any] | None] | None = None,
                 backend: str = "auto") -> None:
        if not len(models) == len(tasks) == len(optims) == len(clips):
            raise ValueError("batched: one model, task, optimizer and clipping per member")
        self.tasks, self.optims, self.clips = list(tasks), list(optims), list(clips)
        self.clipper = MemberClipper(self.clips)
        self.net = BatchedModel(models, backend)
        self.params = list(self.net.parameters())
        self.recurrent = self.net.recurrent_parameters()  # what the NaN guard shrinks
        self.optimizer = StackedOptimizer(self.params, self.optims)
        if optimizer_states is not None and any(s is not None for s in optimizer_states):
            if any(s is None for s in optimizer_states):
                raise ValueError("batched: members resumed and fresh cannot share a batch")
            self.optimizer.load_member_states(optimizer_states)  # type: ignore[arg-type]

    def model(self, k: int) -> RecurrentModel:
        return self.net.member(k)

    def backward(self, batches: Sequence[Batch]) -> StepAudit:
        """Forward, backward and per-member clipping, member k on batches[k]; no update."""
        # Only the inputs are stacked: each member's loss reads its own batch.
        inputs, start = left_padded([b.inputs for b in batches])
        losses = member_losses(self.tasks, self.net(inputs, start), batches, start)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        clip = self.clipper(self.params, self.recurrent)
        return StepAudit(losses.detach(), *clip)

    def update(self) -> None:
        self.optimizer.step()

    def save(self) -> Any:
        return ({key: value.detach().clone() for key, value in self.net.stacked.items()},
                {index: clone_state(state) for index, state in self.optimizer.state.items()})

    def load(self, saved: Any) -> None:
        weights = saved[0]
        self.optimizer.state = {index: clone_state(state) for index, state in saved[1].items()}
        with torch.no_grad():
            for key, value in weights.items():
                self.net.stacked[key].copy_(value)

    def states(self) -> list[tuple[dict[str, Tensor], dict[str, Any]]]:
        return [(self.net.member(k).state_dict(), self.optimizer.member_state(k))
                for k in range(self.net.members)]

    def keep(self, indices: Sequence[int]) -> BatchedStepper:
        """The members at `indices` only, each with its weights and optimizer state."""
        return BatchedStepper([self.net.member(k) for k in indices],
                              [self.tasks[k] for k in indices],
                              [self.optims[k] for k in indices],
                              [self.clips[k] for k in indices],
                              [self.optimizer.member_state(k) for k in indices]
                              if self.optimizer.state else None, self.net.backend)
