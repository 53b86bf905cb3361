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

This module is the experiment behind `harness-bench --batched`; it is not wired into
`harness-train` (the README's Benchmark section says why, with the measured factors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from harness.clipping import MODES, TOLERANCE, ClippingError, ClipResult
from harness.diagnostics import diagnose
from harness.loop import data_generators, make_optimizer
from harness.models import ACTIVATIONS, RecurrentModel
from harness.schema import TrainConfig
from tasks import Batch, Task


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
            # ParameterDict keys may not contain ".": rnn.weight_hh_l0 -> rnn__weight_hh_l0
            self.stacked = nn.ParameterDict({
                stacked_key(key): nn.Parameter(torch.stack([dict(m.named_parameters())[key]
                                                            for m in members]))
                for key, _ in first.named_parameters()})

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


@dataclass
class BatchedHistory:
    """What a batched run measured, one column per member."""

    train_loss: list[Tensor] = field(default_factory=list)  # per step: [K]
    grad_norm_pre_clip: list[Tensor] = field(default_factory=list)  # per step: [K]
    evals: list[tuple[int, Tensor, Tensor]] = field(default_factory=list)  # (step, loss, acc)
    diagnostics: list[list[dict[str, float]]] = field(default_factory=list)  # [point][member]


class BatchedRun:
    """Train K seeds of one configuration together; evaluate and diagnose each member.

    The schedule is the harness loop's (`TrainConfig.steps`, `eval_every`, `profile_every`,
    batch sizes), without early stopping: every member runs the whole budget.
    """

    def __init__(self, task: Task, members: Sequence[RecurrentModel], seeds: Sequence[int],
                 cfg: TrainConfig, optim: str = "adam", lr: float = 1e-3, momentum: float = 0.0,
                 weight_decay: float = 0.0, clip_mode: str = "none",
                 clip_threshold: float = 1.0) -> None:
        if len(members) != len(seeds):
            raise ValueError("batched: one seed per member")
        self.task, self.cfg = task, cfg
        self.model = BatchedModel(members)
        self.optimizer = make_optimizer(self.model, optim, lr, momentum, weight_decay)
        self.clip_mode, self.clip_threshold = clip_mode, clip_threshold
        streams = [data_generators(seed) for seed in seeds]
        self.train_gens = [train for train, _ in streams]
        self.eval_batch = stack_batches([task.sample(cfg.eval_batch_size, evaluation)
                                         for _, evaluation in streams])
        self.profile_batches = [member_batch(self.eval_batch, k, cfg.profile_batch_size)
                                for k in range(len(seeds))]
        self.params = list(self.model.parameters())
        self.history = BatchedHistory()

    def train_step(self) -> None:
        batch = stack_batches([self.task.sample(self.cfg.batch_size, g)
                               for g in self.train_gens])
        losses = member_losses(self.task, self.model(batch.inputs), batch)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        clip = clip_members(self.params, self.clip_mode, self.clip_threshold)
        self.optimizer.step()
        self.history.train_loss.append(losses.detach())
        self.history.grad_norm_pre_clip.append(clip.pre)

    @torch.no_grad()
    def evaluate(self, step: int) -> None:
        outputs = self.model(self.eval_batch.inputs)
        loss = member_losses(self.task, outputs, self.eval_batch)
        accuracy = torch.stack([self.task.accuracy(outputs[k], member_batch(self.eval_batch, k))
                                for k in range(outputs.shape[0])])
        self.history.evals.append((step, loss, accuracy))

    def diagnose(self, step: int) -> None:
        """The harness's diagnostics on each member (float64 unrolled twin, one by one)."""
        self.history.diagnostics.append([
            diagnose(self.model.member(k), self.task, batch, step).metrics
            for k, batch in enumerate(self.profile_batches)])

    def run(self) -> BatchedHistory:
        cfg = self.cfg
        profile_every = cfg.profile_every or cfg.eval_every
        for step in range(cfg.steps + 1):
            if profile_every > 0 and (step % profile_every == 0 or step == cfg.steps):
                self.diagnose(step)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                self.evaluate(step)
            if step < cfg.steps:
                self.train_step()
        return self.history
