"""Gradient-by-lag profile: ‖∂L/∂h_t‖ for every time step t of the last recurrent layer.

The profile runs the model's exact unrolled twin (same weights as the fused module) in
float64 on a fixed evaluation batch. float64 because at default init the norm shrinks by a
constant factor per step (about ×0.57 for a tanh RNN) and in float32 it reaches exactly 0
within a few dozen to a few hundred steps; in float64 it stays measurable down to ~1e-300.

L is each sequence's own loss at its scored positions (`Task.scored_loss` on the batch times
the batch size), so a sequence's gradient does not shrink with the batch size. For copy this
leaves out the blank positions of the published loss: their local error would otherwise
dominate ∂L/∂h_t at every t and hide how the recall error reaches back to the symbols.
∂L/∂h_t is the total derivative: through the readout at t and through every later time step.
The profile row for time step t holds the mean over the batch of ‖∂L_i/∂h_t^i‖₂ and its
standard deviation.

Lag is the distance from the last scored position: lag = t_last_scored − t. For delayed
recall and adding the loss sits at that last position; for copy the scored positions are the
last n_recall steps, and lag counts back from the final one, so the symbols to copy sit at
lags gap + n_recall .. gap + 2·n_recall − 1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from harness.models import RecurrentModel
from tasks import Batch, Task


@dataclass(frozen=True)
class GradProfile:
    """‖∂L/∂h_t‖ of the last layer at one training step: one entry per time step t."""

    step: int
    lag: Tensor  # [L] long
    grad_norm: Tensor  # [L] float64, mean over the batch
    grad_norm_std: Tensor  # [L] float64

    def rows(self) -> list[tuple[int, int, int, float, float]]:
        """(step, t, lag, grad_norm, grad_norm_std) per time step, for the CSV artifact."""
        return [(self.step, t, int(lag), float(mean), float(std))
                for t, (lag, mean, std) in enumerate(zip(self.lag, self.grad_norm,
                                                         self.grad_norm_std, strict=True))]


def batch_as(batch: Batch, dtype: torch.dtype) -> Batch:
    """The batch with its float tensors cast (class-id targets stay int64)."""
    targets = batch.targets.to(dtype) if batch.targets.is_floating_point() else batch.targets
    return replace(batch, inputs=batch.inputs.to(dtype), targets=targets)


def hidden_grad_norms(model: RecurrentModel, task: Task, batch: Batch,
                      layer: int = -1) -> Tensor:
    """‖∂L_i/∂h_t^i‖ for every sequence i and time step t of one layer: [B, L], float64."""
    twin = copy.deepcopy(model).to(torch.float64)
    batch = batch_as(batch, torch.float64)
    outputs, hidden = twin.unrolled(batch.inputs)
    loss = task.scored_loss(outputs, batch) * batch.inputs.shape[0]
    grads = torch.autograd.grad(loss, hidden[layer])
    return torch.stack([g.norm(dim=1) for g in grads], dim=1)


def gradient_profile(model: RecurrentModel, task: Task, batch: Batch, step: int) -> GradProfile:
    """Measure the last layer's gradient-by-lag profile on `batch` at training step `step`."""
    norms = hidden_grad_norms(model, task, batch)
    scored = batch.mask.any(dim=0).nonzero().flatten()
    last_scored = int(scored.max())
    lag = last_scored - torch.arange(norms.shape[1])
    return GradProfile(step=step, lag=lag, grad_norm=norms.mean(dim=0),
                       grad_norm_std=norms.std(dim=0, correction=0))
