"""Diagnostics of why a model forgets, measured at profile steps (step 0 and every evaluation).

1. Gradient-by-lag profile: ‖∂L/∂h_t‖ for every time step t of every recurrent layer, with
   the batch spread, and ‖h_t‖; summarized on the last layer as a decay rate (slope of
   ln‖∂L/∂h_t‖ against lag, with R² and half-life) and a reach (Pascanu et al. 2013).
2. Recurrent dynamics: spectral radius and largest singular value of every gate block of
   W_hh (the cell's `recurrent_matrix`: for the uRNN, its unitary W as a real matrix); the
   mean and saturated share of each gate the cell's spec names (`Cell.gate_metrics`: the
   LSTM forget gate, the GRU update gate, the uRNN's modReLU scale).

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

The decay fit uses the time steps before the first scored position, where the gradient
arrives only through the recurrence, and only the finite, nonzero norms (dead ReLU units give
exact zeros). grad_reach is the largest lag whose norm is at least 1e-6 of the largest norm
of the profile.

Bidirectional layers: h_t is the layer's output [h→_t ; h←_t] (forward and backward
direction concatenated), and ‖∂L/∂h_t‖ the norm of the concatenated total derivatives, one
profile row per layer and t as for a one-way layer. In the last layer the backward state h←_t
only reaches the readout at positions <= t, so before the first scored position its gradient
is exactly zero: the decay fit there measures the forward direction alone (tested). Lower
layers mix both directions (h←_t of layer k feeds h→ of layer k+1 at t, which carries it
forward to the loss).

Lag is the distance from the last scored position: lag = t_last_scored − t. For delayed
recall and adding the loss sits at that last position; for copy the scored positions are the
last n_recall steps, and lag counts back from the final one, so the symbols to copy sit at
lags gap + n_recall .. gap + 2·n_recall − 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from harness import names
from harness.cells import CELLS
from harness.models import RecurrentModel, Unrolled, suffix
from tasks import Batch, Task

SATURATED_LOW, SATURATED_HIGH = 0.05, 0.95


@dataclass(frozen=True)
class GradProfile:
    """‖∂L/∂h_t‖ and ‖h_t‖ of one layer at one training step: one entry per time step t."""

    step: int
    layer: int
    lag: Tensor  # [L] long
    grad_norm: Tensor  # [L] float64, mean over the batch
    grad_norm_std: Tensor  # [L] float64
    hidden_norm: Tensor  # [L] float64, mean ‖h_t‖ over the batch

    def rows(self) -> list[tuple[int, int, int, int, float, float, float]]:
        """One row per time step, in the order of `names.PROFILE_COLUMNS`."""
        columns = zip(self.lag.tolist(), self.grad_norm.tolist(), self.grad_norm_std.tolist(),
                      self.hidden_norm.tolist(), strict=True)
        return [(self.step, self.layer, t, lag, mean, std, hidden)
                for t, (lag, mean, std, hidden) in enumerate(columns)]


@dataclass(frozen=True)
class Diagnosis:
    """Everything measured at one profile step: per-layer profiles and scalar metrics."""

    profiles: list[GradProfile]
    metrics: dict[str, float]


def batch_as(batch: Batch, dtype: torch.dtype) -> Batch:
    """The batch with its float tensors cast (class-id targets stay int64)."""
    targets = batch.targets.to(dtype) if batch.targets.is_floating_point() else batch.targets
    return replace(batch, inputs=batch.inputs.to(dtype), targets=targets)


def layer_grads(model: RecurrentModel, task: Task,
                batch: Batch) -> tuple[Unrolled, list[list[Tensor]]]:
    """The float64 unrolled pass and ∂L/∂h_t for every layer and time step: grads[layer][t].

    For a bidirectional layer h_t is the concatenation [h→_t ; h←_t] of both directions
    (what the layer above and the readout read), and its gradient is the concatenation of
    the total derivatives with respect to each direction's state.
    """
    twin = model.clone().to(torch.float64)
    batch = batch_as(batch, torch.float64)
    unrolled = twin.unrolled(batch.inputs)
    loss = task.scored_loss(unrolled.outputs, batch) * batch.inputs.shape[0]
    per_direction = [states for layer in range(model.num_layers)
                     for states in unrolled.states(layer)]
    flat = torch.autograd.grad(loss, [h for states in per_direction for h in states])
    length = batch.inputs.shape[1]
    directions = len(per_direction) // model.num_layers
    grads = []
    for layer in range(model.num_layers):
        parts = [flat[(layer * directions + d) * length:(layer * directions + d + 1) * length]
                 for d in range(directions)]
        grads.append([torch.cat(pair, dim=1) for pair in zip(*parts, strict=True)])
    return unrolled, grads


def layer_states(unrolled: Unrolled, layer: int) -> list[Tensor]:
    """h_t of one layer for every t: both directions concatenated when bidirectional."""
    return [torch.cat(pair, dim=1) for pair in zip(*unrolled.states(layer), strict=True)]


def hidden_grad_norms(model: RecurrentModel, task: Task, batch: Batch,
                      layer: int = -1) -> Tensor:
    """‖∂L_i/∂h_t^i‖ for every sequence i and time step t of one layer: [B, L], float64."""
    _, grads = layer_grads(model, task, batch)
    return torch.stack([g.norm(dim=1) for g in grads[layer]], dim=1)


def diagnose(model: RecurrentModel, task: Task, batch: Batch, step: int) -> Diagnosis:
    """Measure profiles of every layer, their summary and the recurrent dynamics at `step`."""
    unrolled, grads = layer_grads(model, task, batch)
    scored = batch.mask.any(dim=0).nonzero().flatten()
    lag = int(scored.max()) - torch.arange(batch.inputs.shape[1])
    profiles = []
    for layer, layer_grad in enumerate(grads):
        norms = torch.stack([g.norm(dim=1) for g in layer_grad], dim=1)
        hidden = torch.stack([h.detach().norm(dim=1) for h in layer_states(unrolled, layer)],
                             dim=1)
        profiles.append(GradProfile(step, layer, lag, norms.mean(dim=0).cpu(),
                                    norms.std(dim=0, correction=0).cpu(),
                                    hidden.mean(dim=0).cpu()))
    last = profiles[-1]
    before_answer = last.lag > int(scored.max() - scored.min())
    metrics = decay_metrics(last.lag[before_answer], last.grad_norm[before_answer])
    metrics[names.GRAD_REACH] = float(grad_reach(last.lag, last.grad_norm))
    metrics.update(dynamics_metrics(model))
    reverse_gates = unrolled.gates_reverse[-1] if unrolled.gates_reverse else []
    metrics.update(gate_metrics(model.cell, unrolled.gates[-1] + reverse_gates))
    return Diagnosis(profiles, metrics)


def decay_fit(lag: Tensor, norm: Tensor) -> tuple[float, float]:
    """Least-squares slope of ln(norm) against lag, and its R², over finite nonzero norms.

    (nan, nan) when fewer than two such points remain.
    """
    keep = torch.isfinite(norm) & (norm > 0)
    x = lag[keep].to(torch.float64)
    y = norm[keep].to(torch.float64).log()
    if x.numel() < 2 or float(x.max() - x.min()) == 0:
        return math.nan, math.nan
    x_c, y_c = x - x.mean(), y - y.mean()
    slope = float((x_c * y_c).sum() / (x_c * x_c).sum())
    total = float((y_c * y_c).sum())
    residual = float(((y_c - slope * x_c) ** 2).sum())
    r2 = 1.0 - residual / total if total > 0 else 1.0
    return slope, r2


def decay_metrics(lag: Tensor, norm: Tensor) -> dict[str, float]:
    """grad_decay_rate, grad_decay_r2 and (for a decaying profile) grad_half_life."""
    rate, r2 = decay_fit(lag, norm)
    if math.isnan(rate):
        return {}
    metrics = {names.GRAD_DECAY_RATE: rate, names.GRAD_DECAY_R2: r2}
    if rate < 0:
        metrics[names.GRAD_HALF_LIFE] = math.log(2) / -rate
    return metrics


def grad_reach(lag: Tensor, norm: Tensor) -> int:
    """Largest lag whose norm is >= REACH_FRACTION of the profile's largest norm."""
    finite = torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm))
    peak = float(finite.max())
    if peak <= 0:
        return 0
    return int(lag[finite >= names.REACH_FRACTION * peak].max())


def dynamics_metrics(model: RecurrentModel) -> dict[str, float]:
    """The recurrence's metrics: the cell's own (`Cell.dynamics`, e.g. the LRU's eigenvalue
    moduli) for every layer and direction, else `spectral_metrics`."""
    spec = CELLS[model.cell]
    if spec.dynamics is None:
        return spectral_metrics(model)
    metrics = {}
    with torch.no_grad():
        for layer in range(model.num_layers):
            for reverse in model.directions:
                for key, value in spec.dynamics(model.weights(layer, reverse),
                                                model.hidden_size).items():
                    metrics[key + suffix(layer, reverse)] = float(value)
    return metrics


def spectral_metrics(model: RecurrentModel) -> dict[str, float]:
    """Spectral radius and largest singular value of each H x H gate block of every W_hh,
    of every layer and direction (`spectral_radius_l0_reverse_f` for the backward one)."""
    metrics = {}
    blocks = CELLS[model.cell].blocks
    with torch.no_grad():
        for layer, reverse, w_hh in model.recurrent_matrices():
            rows = w_hh.shape[0] // len(blocks)
            for block, matrix in zip(blocks, w_hh.double().split(rows, dim=0), strict=True):
                radius = torch.linalg.eigvals(matrix).abs().max()
                singular = torch.linalg.matrix_norm(matrix, ord=2)
                for metric, value in ((names.SPECTRAL_RADIUS, radius),
                                      (names.SINGULAR_VALUE_MAX, singular)):
                    metrics[names.block_key(metric, layer, block, reverse=reverse)] = float(value)
    return metrics


def gate_metrics(cell: str, gates: list[dict[str, Tensor]]) -> dict[str, float]:
    """Each of the cell's gate metrics (`Cell.gate_metrics`: the LSTM's forget gate, the
    GRU's update gate, the uRNN's modReLU scale): mean and saturated share (< 0.05 or > 0.95)
    over the batch, units and time steps."""
    metrics = {}
    for metric in CELLS[cell].gate_metrics:
        if not gates:
            continue
        values = torch.stack([g[metric.gate].detach() for g in gates])
        saturated = ((values < SATURATED_LOW) | (values > SATURATED_HIGH)).double().mean()
        metrics[metric.mean] = float(values.mean())
        metrics[metric.saturated] = float(saturated)
    return metrics
