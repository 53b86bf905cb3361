"""Batched seeds: K runs of one configuration trained in one process as one stacked model.

The K *members* share the task, cell, sizes, optimizer and clipping, and differ only in their
seed: member k is initialized exactly as a separate run with `seed = seeds[k]` would be
(`torch.manual_seed(seed)`, then `RecurrentModel(...)`) and draws its training and evaluation
data from that run's own generators (`loop.data_generators`). Their weights are stacked on a
leading dimension K ([K, G·H, D] for W_ih, ...), and one time step of all members is one
batched matmul (`torch.baddbmm`) plus the cell's elementwise ops on [K, B, ·] tensors.

Why not the fused modules: `torch.func.vmap` has no batching rule for `aten::rnn_tanh`,
`aten::lstm` or `aten::gru` ("Batching rule not implemented"), and vmapping the unrolled
twin's step costs more than writing the batched step by hand (measured; README, Benchmark).

Independence of the members:
- the loss is the *sum* of the members' losses, so member k's gradient is exactly the
  gradient of its own loss (no cross-member terms, no 1/K factor);
- Adam, SGD (momentum) and RMSprop are elementwise, so each member's optimizer state and
  update are its own; all members take their step together, so the step count is shared;
- clipping is per member (`clip_members`): the global norm a separate run clips is the norm
  over *its* parameters, i.e. over one slice k of every stacked tensor;
- a non-finite value stays in its member's slices (every op is per member), so one member
  diverging does not touch the others.

The cell equations are torch's (gate order i, f, g, o for the LSTM and r, z, n for the GRU),
as in `RecurrentModel.unrolled`; tests check the batched outputs and gradients against the
fused modules in float64 and whole training runs against the harness's own loop.

`harness-train batched_seeds=[0,1,2,3]` trains through `train_members` (harness/train.py opens
one MLflow run per member); `harness-bench --batched` measures `BatchedTrainer` against K
separate runs (README, Benchmark, with the factors per cell).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from harness.clipping import MODES, TOLERANCE, ClippingError, ClipResult
from harness.loop import Checkpointing, RunRecord, RunResult, make_optimizer
from harness.models import ACTIVATIONS, RecurrentModel
from harness.schema import TrainConfig
from tasks import Batch, Task

BATCHED_CELLS = ("rnn", "lstm", "gru")  # the cells BatchedModel computes


def unbatchable(cell: str, activation: str, bidirectional: bool) -> str | None:
    """Why a model cannot be trained as a batched member (None: it can)."""
    if cell not in BATCHED_CELLS:
        return f"model {cell!r} is not batched (only {', '.join(BATCHED_CELLS)})"
    if activation not in ACTIVATIONS:
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
    """K recurrent models of one shape with stacked weights: [K, B, L, D] -> [K, B, L, O]."""

    def __init__(self, members: Sequence[RecurrentModel]) -> None:
        super().__init__()
        if not members:
            raise ValueError("batched: at least one member is needed")
        first = members[0]
        shape = (first.cell, first.activation, first.hidden_size, first.num_layers,
                 first.readout.weight.shape)
        for member in members:
            if (member.cell, member.activation, member.hidden_size, member.num_layers,
                    member.readout.weight.shape) != shape:
                raise ValueError(f"batched: members differ in shape {shape}")
        self.cell, self.activation = first.cell, first.activation
        self.hidden_size, self.num_layers = first.hidden_size, first.num_layers
        self.members = len(members)
        self.input_size = first.rnn.input_size
        self.output_size = first.readout.out_features
        with torch.no_grad():
            # ParameterDict keys may not contain ".": rnn.weight_hh_l0 -> rnn__weight_hh_l0.
            # A list of pairs keeps the member's parameter order (a dict would be sorted), so
            # optimizer state index i is the same parameter here and in a separate run.
            self.stacked = nn.ParameterDict([
                (stacked_key(key), nn.Parameter(torch.stack([dict(m.named_parameters())[key]
                                                             for m in members])))
                for key, _ in first.named_parameters()])

    def forward(self, inputs: Tensor) -> Tensor:
        """inputs [K, B, L, D] -> outputs [K, B, L, output_size]: every member on its batch."""
        k, batch, length, _ = inputs.shape
        hidden = self.hidden_size
        layer_input = inputs
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = (self.stacked[f"rnn__{name}_l{layer}"]
                                      for name in ("weight_ih", "weight_hh", "bias_ih",
                                                   "bias_hh"))
            # The input projection has no recurrence: one batched matmul for all time steps.
            # The GRU keeps b_hh apart (it sits inside r * (W_hn h + b_hn)); the other cells
            # only ever use b_ih + b_hh.
            bias = b_ih if self.cell == "gru" else b_ih + b_hh
            projected = torch.baddbmm(bias.unsqueeze(1), layer_input.flatten(1, 2),
                                      w_ih.transpose(1, 2))
            w_hh_t = w_hh.transpose(1, 2)
            h = inputs.new_zeros(k, batch, hidden)
            c = inputs.new_zeros(k, batch, hidden)
            states = []
            for x_t in projected.view(k, batch, length, -1).unbind(dim=2):
                h, c = self._step(x_t, h, c, w_hh_t, b_hh)
                states.append(h)
            layer_input = torch.stack(states, dim=2)
        weight, bias = self.stacked["readout__weight"], self.stacked["readout__bias"]
        outputs = torch.baddbmm(bias.unsqueeze(1), layer_input.flatten(1, 2),
                                weight.transpose(1, 2))
        return outputs.view(k, batch, length, -1)

    def _step(self, x_t: Tensor, h: Tensor, c: Tensor, w_hh_t: Tensor,
              b_hh: Tensor) -> tuple[Tensor, Tensor]:
        """One time step of every member: x_t [K, B, G·H] (input projection + bias)."""
        if self.cell == "rnn":
            return ACTIVATIONS[self.activation](torch.baddbmm(x_t, h, w_hh_t)), c
        if self.cell == "lstm":
            i, f, g, o = torch.baddbmm(x_t, h, w_hh_t).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        x_r, x_z, x_n = x_t.chunk(3, dim=-1)
        h_r, h_z, h_n = torch.baddbmm(b_hh.unsqueeze(1), h, w_hh_t).chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h, c

    @torch.no_grad()
    def member(self, k: int) -> RecurrentModel:
        """A fused `RecurrentModel` holding a copy of member k's current weights."""
        model = RecurrentModel(self.cell, self.input_size, self.output_size, self.hidden_size,
                               self.num_layers, self.activation)
        model.to(self.stacked["readout__weight"].dtype)
        for key, value in model.named_parameters():
            value.copy_(self.stacked[stacked_key(key)][k])
        return model


def stack_batches(batches: Sequence[Batch]) -> Batch:
    """K batches of one shape -> one Batch of [K, B, L, ...] tensors."""
    return Batch(*(torch.stack(parts) for parts in
                   zip(*((b.inputs, b.targets, b.mask) for b in batches), strict=True)))


def member_batch(batch: Batch, k: int, size: int | None = None) -> Batch:
    """Member k's batch (its first `size` sequences) from a stacked [K, B, ...] batch."""
    return Batch(*(t[k, :size] for t in (batch.inputs, batch.targets, batch.mask)))


def member_losses(task: Task, outputs: Tensor, batch: Batch) -> Tensor:
    """Every member's published loss on its own batch: [K]."""
    return torch.stack([task.loss(outputs[k], member_batch(batch, k))
                        for k in range(outputs.shape[0])])


def member_norms(grads: Sequence[Tensor]) -> Tensor:
    """Global L2 norm of each member's gradient: [K] (the norm over slice k of every tensor)."""
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads]), dim=0)


def clip_members(parameters: Sequence[nn.Parameter], mode: str, threshold: float) -> ClipResult:
    """`Clipper`'s semantics for each member on its own: pre, post, fired are [K] tensors.

    `norm` rescales member k by threshold / (pre_k + 1e-6) when that is below 1 (the formula
    of `clip_grad_norm_`); `value` clamps elementwise, which is per member already.
    """
    if mode not in MODES:
        raise ValueError(f"clip.mode: unknown {mode!r}; choose one of {list(MODES)}")
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        raise RuntimeError("clipping found no gradients: call it after loss.backward()")
    pre = member_norms(grads)
    if mode == "none":
        return ClipResult(pre, pre, torch.zeros_like(pre, dtype=torch.bool))
    if mode == "norm":
        scale = (threshold / (pre + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
        post = member_norms(grads)
        if bool((post > threshold * (1 + TOLERANCE)).any()):
            raise ClippingError(f"norm clipping failed: post-clip norms {post.tolist()} > "
                                f"threshold {threshold:g}")
        return ClipResult(pre, post, pre > threshold)
    largest = torch.stack([g.abs().flatten(1).amax(dim=1) for g in grads]).amax(dim=0)
    for g in grads:
        g.clamp_(-threshold, threshold)
    return ClipResult(pre, member_norms(grads), largest > threshold)


def member_optimizer_state(state: dict[str, Any], k: int) -> dict[str, Any]:
    """Member k's optimizer state, as its separate run's optimizer would hold it: every
    per-parameter tensor sliced at k; scalars (Adam's step count, shared) as they are."""
    return {"state": {index: {key: value[k].clone()
                              if isinstance(value, Tensor) and value.dim() > 0 else value
                              for key, value in entry.items()}
                      for index, entry in state["state"].items()},
            "param_groups": [dict(group) for group in state["param_groups"]]}


def stacked_optimizer_state(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The members' optimizer states as one for the stacked parameters (inverse of
    `member_optimizer_state`); their step counts must agree."""
    first = states[0]
    stacked: dict[int, dict[str, Any]] = {}
    for index, entry in first["state"].items():
        stacked[index] = {}
        for key, value in entry.items():
            if isinstance(value, Tensor) and value.dim() > 0:
                stacked[index][key] = torch.stack([s["state"][index][key] for s in states])
                continue
            if any(not _same(s["state"][index][key], value) for s in states):
                raise ValueError(f"batched: members differ in optimizer {key!r}; only runs at "
                                 "the same step are batched")
            stacked[index][key] = value
    return {"state": stacked, "param_groups": [dict(g) for g in first["param_groups"]]}


def _same(a: Any, b: Any) -> bool:
    return bool(torch.equal(a, b)) if isinstance(a, Tensor) else a == b


class BatchedTrainer:
    """K members as one stacked model and one optimizer: the batched training step.

    `models` hold the members' current weights and `optimizer_states` (None: fresh) their
    optimizers' states in a separate run's format, so a member can come from, or go to, a
    separate run's checkpoint.
    """

    def __init__(self, models: Sequence[RecurrentModel], optim: str = "adam", lr: float = 1e-3,
                 momentum: float = 0.0, weight_decay: float = 0.0, clip_mode: str = "none",
                 clip_threshold: float = 1.0,
                 optimizer_states: Sequence[dict[str, Any]] | None = None) -> None:
        self.settings = {"optim": optim, "lr": lr, "momentum": momentum,
                         "weight_decay": weight_decay, "clip_mode": clip_mode,
                         "clip_threshold": clip_threshold}
        self.model = BatchedModel(models)
        self.optimizer = make_optimizer(self.model, optim, lr, momentum, weight_decay)
        if optimizer_states is not None:
            self.optimizer.load_state_dict(stacked_optimizer_state(optimizer_states))
        self.clip_mode, self.clip_threshold = clip_mode, clip_threshold
        self.params = list(self.model.parameters())

    def backward(self, task: Task, batches: Sequence[Batch]) -> tuple[Tensor, ClipResult]:
        """Forward, backward and per-member clipping on member k's batch k; no update yet.
        Returns the members' losses [K] and the clipping audit ([K] tensors)."""
        batch = stack_batches(batches)
        losses = member_losses(task, self.model(batch.inputs), batch)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        return losses.detach(), clip_members(self.params, self.clip_mode, self.clip_threshold)

    def update(self) -> None:
        self.optimizer.step()

    def states(self) -> list[tuple[dict[str, Tensor], dict[str, Any]]]:
        """Every member's (model state, optimizer state) in a separate run's format."""
        optimizer = self.optimizer.state_dict()
        return [(self.model.member(k).state_dict(), member_optimizer_state(optimizer, k))
                for k in range(self.model.members)]

    def keep(self, indices: Sequence[int]) -> BatchedTrainer:
        """A trainer of the members at `indices` only, each with its weights and optimizer
        state (the others stopped: they cost no more compute)."""
        optimizer = self.optimizer.state_dict()
        return BatchedTrainer([self.model.member(k) for k in indices], **self.settings,
                              optimizer_states=[member_optimizer_state(optimizer, k)
                                                for k in indices]
                              if optimizer["state"] else None)


@dataclass
class Member:
    """One seed's run inside a batched job: its model (at the start: initialized as a
    separate run with this seed, or loaded from its checkpoint; at the end: its final
    weights), optimizer state (None: fresh), record and checkpointing. `seconds` is its
    share of the job's time."""

    model: RecurrentModel
    record: RunRecord
    optimizer_state: dict[str, Any] | None = None
    checkpointing: Checkpointing | None = None
    seconds: float = 0.0


def train_members(task: Task, cfg: TrainConfig, members: Sequence[Member], optim: str = "adam",
                  lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0,
                  clip_mode: str = "none", clip_threshold: float = 1.0,
                  checkpointed: Callable[[], None] = lambda: None) -> list[RunResult]:
    """`train_loop` for K members at once: each member is evaluated, diagnosed, stopped
    (solved, diverged), logged and checkpointed by its own `RunRecord`, exactly as its
    separate run; a member that stops leaves the batch.

    All members start at one step (fresh, or resumed from checkpoints of that step).
    Checkpoints are written for every running member at once, then `checkpointed()` runs
    (the caller raises there to stop after a stop signal). A member's wall time is its share
    of the job's: each iteration's time divided among the members it trained.
    """
    step = members[0].record.step
    if any(m.record.step != step for m in members):
        raise ValueError("batched: members must start at the same step")
    active = list(members)
    results: dict[int, RunResult] = {}
    trainer = BatchedTrainer([m.model for m in active], optim, lr, momentum, weight_decay,
                             clip_mode, clip_threshold,
                             None if active[0].optimizer_state is None
                             else [m.optimizer_state for m in active])

    def finish(k: int, model: RecurrentModel) -> None:
        member = active[k]  # its share of this iteration so far, too
        seconds = member.seconds + (time.perf_counter() - tick) / len(active)
        results[id(member)] = member.record.finish(model, step, seconds)
        member.model = model

    while active:
        tick = time.perf_counter()
        for k, member in enumerate(active):
            if member.record.due(step) or step == cfg.steps:
                model = trainer.model.member(k)
                if member.record.begin_step(model, step) or step == cfg.steps:
                    finish(k, model)
        if step == cfg.steps:
            share(active, time.perf_counter() - tick)
            break
        trainer = drop_stopped(trainer, active)
        if not active:
            break
        losses, clip = trainer.backward(task, [task.sample(cfg.batch_size, m.record.train_gen)
                                               for m in active])
        rows = list(zip(losses.tolist(), clip.pre.tolist(), clip.post.tolist(),
                        clip.fired.tolist(), strict=True))
        for k, (member, (loss, pre, post, _)) in enumerate(zip(active, rows, strict=True)):
            if member.record.diverges(step, loss, pre, post):
                finish(k, trainer.model.member(k))  # its weights before the update, as alone
        trainer.update()
        step += 1
        for member, (loss, pre, post, fired) in zip(active, rows, strict=True):
            if not member.record.stopped:
                member.record.end_step(step, loss, pre, post, bool(fired))
        share(active, time.perf_counter() - tick)
        trainer = drop_stopped(trainer, active)
        saving = [m.checkpointing for m in active if m.checkpointing is not None]
        if saving and step < cfg.steps and (step % saving[0].every == 0
                                            or saving[0].stop_requested()):
            tick = time.perf_counter()
            for member, (model_state, optimizer_state) in zip(active, trainer.states(),
                                                              strict=True):
                assert member.checkpointing is not None
                member.checkpointing.save(member.record.snapshot(model_state, optimizer_state,
                                                                 member.seconds))
            share(active, time.perf_counter() - tick)
            checkpointed()
    return [results[id(m)] for m in members]


def share(members: Sequence[Member], seconds: float) -> None:
    for member in members:
        member.seconds += seconds / len(members)


def drop_stopped(trainer: BatchedTrainer, active: list[Member]) -> BatchedTrainer:
    """Remove the stopped members from `active` (in place) and from the trainer."""
    keep = [k for k, member in enumerate(active) if not member.record.stopped]
    if len(keep) == len(active):
        return trainer
    active[:] = [active[k] for k in keep]
    return trainer.keep(keep) if keep else trainer
