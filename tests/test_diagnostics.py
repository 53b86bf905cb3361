"""The diagnostics are exact: the gradient-by-lag profile equals autograd on an independent
reference, known answers are recovered, and the summaries measure what they claim."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import tasks
from harness import names
from harness.cells import CELLS as REGISTRY
from harness.cells import GATE_BLOCKS
from harness.diagnostics import (
    batch_as,
    decay_fit,
    diagnose,
    gate_metrics,
    grad_reach,
    hidden_grad_norms,
    layer_grads,
    spectral_metrics,
)
from harness.models import RecurrentModel

CELLS = {"rnn": nn.RNNCell, "orth_rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
# activations nn.RNNCell lacks, written out independently of harness.models
FORMULAS = {
    "leaky_relu": lambda z, _: torch.where(z > 0, z, 0.01 * z),
    "hard_tanh": lambda z, _: z.clamp(-1.0, 1.0),
    "modrelu": lambda z, b: z.sign() * (z.abs() + b).clamp(min=0),
}


def reference_cell(model: RecurrentModel, layer: int,
                   reverse: bool) -> Callable[[torch.Tensor, Any], Any]:
    """One layer and direction of `model` as torch's own cell (or the textbook formula for
    activations torch has no cell for), with weights copied from the model, in float64."""
    # copies that require grad, so that every h_t is a node of the reference's graph
    w_ih, w_hh, b_ih, b_hh = (w.detach().double().requires_grad_()
                              for w in model.layer_weights(layer, reverse))
    if model.activation in FORMULAS:
        index = layer * (2 if model.bidirectional else 1) + int(reverse)
        bias = (model.modrelu_bias[index].detach().double()
                if model.activation == "modrelu" else None)
        formula = FORMULAS[model.activation]

        def cell(x: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
            h = x.new_zeros(x.shape[0], model.hidden_size) if h is None else h
            return formula(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, bias)

        return cell
    extra = {"nonlinearity": model.activation} if model.cell in ("rnn", "orth_rnn") else {}
    torch_cell = CELLS[model.cell](w_ih.shape[1], model.hidden_size, **extra).double()
    with torch.no_grad():
        for name, weight in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
                                (w_ih, w_hh, b_ih, b_hh), strict=True):
            getattr(torch_cell, name).copy_(weight)
    return torch_cell


def reference_grad_norms(model: RecurrentModel, task: tasks.Task, batch: tasks.Batch,
                         layer: int) -> torch.Tensor:
    """‖∂L/∂h_t‖ from torch's own cells (weights copied from the fused module) and autograd.

    For a bidirectional layer h_t = [h→_t ; h←_t]: the backward cell reads the sequence from
    its end, and the norm is that of both directions' gradients together.
    """
    batch = batch_as(batch, torch.float64)
    layer_input = batch.inputs
    length = layer_input.shape[1]
    states_by_layer = []
    for k in range(model.num_layers):
        directions = []
        for reverse in ((False, True) if model.bidirectional else (False,)):
            cell = reference_cell(model, k, reverse)
            state = None
            states: list[Any] = [None] * length
            for t in (reversed(range(length)) if reverse else range(length)):
                state = cell(layer_input[:, t], state)
                states[t] = state[0] if model.cell == "lstm" else state
            directions.append(states)
        states_by_layer.append(directions)
        layer_input = torch.cat([torch.stack(d, dim=1) for d in directions], dim=2)
    readout = nn.Linear(layer_input.shape[2], model.readout.out_features).double()
    readout.load_state_dict(model.readout.state_dict())
    loss = task.scored_loss(readout(layer_input), batch) * batch.inputs.shape[0]
    directions = states_by_layer[layer]
    grads = torch.autograd.grad(loss, [h for states in directions for h in states])
    per_t = [torch.cat(grads[t::length], dim=1) for t in range(length)]
    return torch.stack([g.norm(dim=1) for g in per_t], dim=1)


VARIANTS = [("rnn", "tanh", False), ("rnn", "relu", False), ("lstm", "tanh", False),
            ("gru", "tanh", False), ("orth_rnn", "tanh", False), ("orth_rnn", "modrelu", False),
            ("rnn", "leaky_relu", False), ("rnn", "hard_tanh", False),
            ("rnn", "tanh", True), ("lstm", "tanh", True), ("gru", "tanh", True),
            ("orth_rnn", "tanh", True), ("rnn", "modrelu", True)]


@pytest.mark.parametrize(("cell", "activation", "bidirectional"), VARIANTS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("task_name", ["copy", "adding", "delayed_recall"])
def test_profile_equals_autograd_reference(cell: str, activation: str, bidirectional: bool,
                                           num_layers: int, task_name: str) -> None:
    task = tasks.make_task(task_name, gap=6)
    torch.manual_seed(3)
    model = RecurrentModel(cell, task.input_size, task.output_size, 5, num_layers, activation,
                           bidirectional=bidirectional)
    batch = task.sample(4, torch.Generator().manual_seed(0))
    for layer in range(num_layers):
        ours = hidden_grad_norms(model, task, batch, layer)
        reference = reference_grad_norms(model, task, batch, layer)
        assert ours.dtype == torch.float64 and ours.shape == (4, task.seq_len)
        # ReLU units that are off pass exactly zero gradient; elsewhere compare relatively.
        assert (reference > 0).sum() >= task.seq_len
        assert torch.all(ours[reference == 0] == 0)
        alive = reference > 0
        assert ((ours[alive] - reference[alive]).abs() / reference[alive]).max() <= 1e-5


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_bidirectional_last_layer_fit_region_is_the_forward_direction(cell: str) -> None:
    """Before the first scored position the last layer's backward state reaches no scored
    output, so its gradient there is exactly zero and the profile is the forward one's."""
    task = tasks.make_task("copy", gap=8)
    torch.manual_seed(4)
    model = RecurrentModel(cell, task.input_size, task.output_size, 6, num_layers=2,
                           bidirectional=True)
    batch = task.sample(3, torch.Generator().manual_seed(1))
    twin = copy.deepcopy(model).double()
    unrolled = twin.unrolled(batch_as(batch, torch.float64).inputs)
    loss = task.scored_loss(unrolled.outputs, batch_as(batch, torch.float64)) * 3
    forward, backward = unrolled.states(1)
    grads = torch.autograd.grad(loss, forward + backward)
    first_scored = int(batch.mask.any(dim=0).nonzero().min())
    length = task.seq_len
    assert all(float(g.abs().max()) == 0 for g in grads[length:length + first_scored])
    assert all(float(g.abs().max()) > 0 for g in grads[length + first_scored:])
    diagnosis = diagnose(model, task, batch, step=0)
    forward_norm = torch.stack([g.norm(dim=1) for g in grads[:length]], dim=1).mean(dim=0)
    torch.testing.assert_close(diagnosis.profiles[-1].grad_norm[:first_scored],
                               forward_norm[:first_scored])


def test_profile_lag_counts_back_from_the_scored_position() -> None:
    task = tasks.make_task("delayed_recall", gap=7)
    model = RecurrentModel("rnn", task.input_size, task.output_size, 4)
    batch = task.sample(3, torch.Generator().manual_seed(1))
    profile = diagnose(model, task, batch, step=5).profiles[-1]
    assert profile.lag.tolist() == list(range(task.seq_len - 1, -1, -1))
    rows = profile.rows()
    assert len(rows) == task.seq_len and rows[0][:4] == (5, 0, 0, task.seq_len - 1)
    assert len(rows[0]) == len(names.PROFILE_COLUMNS)
    norms = hidden_grad_norms(model, task, batch)
    torch.testing.assert_close(profile.grad_norm, norms.mean(dim=0))


def test_tanh_rnn_gradient_vanishes_with_lag_in_float64() -> None:
    """Bengio et al. 1994: at default init, ‖∂L/∂h_t‖ of a tanh RNN shrinks geometrically.

    Measured, not assumed: the norm 150 steps back is orders of magnitude below the one at
    the loss, and still nonzero because the pass runs in float64.
    """
    task = tasks.make_task("delayed_recall", gap=150)
    torch.manual_seed(0)
    model = RecurrentModel("rnn", task.input_size, task.output_size, 64)
    batch = task.sample(8, torch.Generator().manual_seed(0))
    diagnosis = diagnose(model, task, batch, step=0)
    profile = diagnosis.profiles[-1]
    at_loss, far = float(profile.grad_norm[-1]), float(profile.grad_norm[0])
    assert 0 < far < 1e-10 * at_loss
    assert diagnosis.metrics[names.GRAD_DECAY_RATE] < 0
    assert diagnosis.metrics[names.GRAD_REACH] < task.seq_len - 1


def linear_rnn(a: float, task: tasks.Task, hidden: int = 6) -> RecurrentModel:
    """A ReLU RNN kept in its linear regime: W_hh = a·I, W_ih > 0, zero biases, one-hot inputs
    >= 0, so every pre-activation is positive and h_t = a·h_{t-1} + W_ih x_t exactly."""
    torch.manual_seed(0)
    model = RecurrentModel("rnn", task.input_size, task.output_size, hidden, activation="relu",
                           init="identity")
    with torch.no_grad():
        model.rnn.weight_hh_l0.mul_(a)
        model.rnn.weight_ih_l0.abs_().add_(0.01)
    return model


@pytest.mark.parametrize("a", [0.8, 0.95, 1.05])
def test_known_answer_linear_rnn_decays_as_a_to_the_lag(a: float) -> None:
    """‖∂L/∂h_t‖ = a^lag · ‖∂L/∂h_T‖ when the loss sits at T: the rate recovers ln a."""
    task = tasks.make_task("delayed_recall", gap=40, filler="noise")
    batch = task.sample(8, torch.Generator().manual_seed(2))
    diagnosis = diagnose(linear_rnn(a, task), task, batch, step=0)
    profile = diagnosis.profiles[-1]
    a = float(torch.tensor(a, dtype=torch.float32))  # the weight as stored
    ratio = profile.grad_norm[:-1] / profile.grad_norm[1:]  # one step further back, per step
    torch.testing.assert_close(ratio, torch.full_like(ratio, a), rtol=1e-9, atol=0)
    assert diagnosis.metrics[names.GRAD_DECAY_RATE] == pytest.approx(math.log(a), rel=1e-9)
    assert diagnosis.metrics[names.GRAD_DECAY_R2] == pytest.approx(1.0, abs=1e-9)
    if a < 1:
        assert diagnosis.metrics[names.GRAD_HALF_LIFE] == pytest.approx(math.log(2) / -math.log(a))
    else:
        assert names.GRAD_HALF_LIFE not in diagnosis.metrics


def test_decay_fit_and_reach_on_known_profiles() -> None:
    lag = torch.arange(50)
    norm = 3.0 * torch.exp(-0.5 * lag.double())
    rate, r2 = decay_fit(lag, norm)
    assert rate == pytest.approx(-0.5) and r2 == pytest.approx(1.0)
    # reach: the largest lag with norm >= 1e-6 of the peak: 3e^{-0.5 lag} >= 3e-6
    assert grad_reach(lag, norm) == math.floor(math.log(1e6) / 0.5)
    # exact zeros (dead units) and a single point are not fitted
    assert math.isnan(decay_fit(lag, torch.zeros(50, dtype=torch.float64))[0])
    assert math.isnan(decay_fit(torch.arange(1), torch.ones(1))[0])


def test_spectral_metrics_equal_eigvals_on_known_matrices() -> None:
    task = tasks.make_task("adding", gap=5)
    model = RecurrentModel("rnn", task.input_size, 1, 8, activation="relu", init="identity")
    metrics = spectral_metrics(model)
    assert metrics[names.block_key(names.SPECTRAL_RADIUS, 0, "hh")] == pytest.approx(1.0)
    assert metrics[names.block_key(names.SINGULAR_VALUE_MAX, 0, "hh")] == pytest.approx(1.0)
    lstm = RecurrentModel("lstm", task.input_size, 1, 8, num_layers=2)
    scales = {"i": 0.5, "f": 0.9, "g": 1.3, "o": 2.0}
    with torch.no_grad():
        for layer in range(2):
            w_hh = lstm.layer_weights(layer)[1]
            for block, scale in zip("ifgo", scales.values(), strict=True):
                q = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))[0]
                w_hh["ifgo".index(block) * 8:("ifgo".index(block) + 1) * 8] = scale * q
    metrics = spectral_metrics(lstm)
    for layer in range(2):
        w_hh = lstm.layer_weights(layer)[1].double()
        for k, (block, scale) in enumerate(scales.items()):
            eig = torch.linalg.eigvals(w_hh[k * 8:(k + 1) * 8].detach()).abs().max()
            key = names.block_key(names.SPECTRAL_RADIUS, layer, block)
            assert metrics[key] == pytest.approx(float(eig)) == pytest.approx(scale, rel=1e-5)
            key = names.block_key(names.SINGULAR_VALUE_MAX, layer, block)
            assert metrics[key] == pytest.approx(scale, rel=1e-5)


def test_gate_metrics_see_a_saturated_forget_gate() -> None:
    task = tasks.make_task("delayed_recall", gap=10)
    batch = task.sample(4, torch.Generator().manual_seed(0))
    open_gate = RecurrentModel("lstm", task.input_size, task.output_size, 8, forget_bias=20.0)
    metrics = diagnose(open_gate, task, batch, step=0).metrics
    assert metrics[names.FORGET_GATE_MEAN] > 0.99 and metrics[names.FORGET_GATE_SATURATED] == 1
    gru = RecurrentModel("gru", task.input_size, task.output_size, 8)
    metrics = diagnose(gru, task, batch, step=0).metrics
    assert 0 < metrics[names.UPDATE_GATE_MEAN] < 1 and names.FORGET_GATE_MEAN not in metrics
    assert gate_metrics("rnn", []) == {}


def test_every_layer_is_profiled() -> None:
    task = tasks.make_task("copy", gap=5)
    model = RecurrentModel("gru", task.input_size, task.output_size, 4, num_layers=3)
    batch = task.sample(2, torch.Generator().manual_seed(0))
    diagnosis = diagnose(model, task, batch, step=7)
    assert [p.layer for p in diagnosis.profiles] == [0, 1, 2]
    for profile in diagnosis.profiles:
        torch.testing.assert_close(profile.grad_norm,
                                   hidden_grad_norms(model, task, batch, profile.layer).mean(0))
        assert torch.all(profile.hidden_norm > 0)


def test_spectral_metrics_per_direction_and_orth_rnn_radius_one() -> None:
    task = tasks.make_task("adding", gap=5)
    torch.manual_seed(7)
    model = RecurrentModel("gru", task.input_size, 1, 6, num_layers=2, bidirectional=True)
    metrics = spectral_metrics(model)
    assert len(metrics) == 2 * 2 * 3 * 2  # layers x directions x blocks x (radius, sigma)
    for layer in range(2):
        for reverse in (False, True):
            w_hh = model.layer_weights(layer, reverse)[1].detach().double()
            for k, block in enumerate(GATE_BLOCKS["gru"]):
                key = names.block_key(names.SPECTRAL_RADIUS, layer, block, reverse=reverse)
                eig = torch.linalg.eigvals(w_hh[k * 6:(k + 1) * 6]).abs().max()
                assert metrics[key] == pytest.approx(float(eig))
    assert names.block_key(names.SPECTRAL_RADIUS, 1, "z", reverse=True) == \
        "spectral_radius_l1_reverse_z"
    orth = RecurrentModel("orth_rnn", task.input_size, 1, 16, activation="modrelu")
    metrics = spectral_metrics(orth)
    for metric in (names.SPECTRAL_RADIUS, names.SINGULAR_VALUE_MAX):
        assert metrics[names.block_key(metric, 0, "hh")] == pytest.approx(1.0, abs=1e-5)


def test_gate_metrics_cover_both_directions() -> None:
    """Forward forget gates open (bias +20), backward closed (-20): mean 1/2, all saturated."""
    task = tasks.make_task("delayed_recall", gap=10)
    batch = task.sample(4, torch.Generator().manual_seed(0))
    model = RecurrentModel("lstm", task.input_size, task.output_size, 8, bidirectional=True)
    with torch.no_grad():
        model.layer_weights(0, reverse=False)[2][8:16] = 20.0
        model.layer_weights(0, reverse=True)[2][8:16] = -20.0
    metrics = diagnose(model, task, batch, step=0).metrics
    assert metrics[names.FORGET_GATE_MEAN] == pytest.approx(0.5, abs=1e-6)
    assert metrics[names.FORGET_GATE_SATURATED] == 1


@pytest.mark.parametrize("cell", list(REGISTRY))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_every_cell_is_profiled_causally(cell: str, bidirectional: bool) -> None:
    """For every registered cell, stacked: every layer has a finite profile of one row per
    time step, the last layer's forward gradient is exactly 0 after the last scored position
    (the loss cannot reach back from there), and nonzero before it."""
    task = tasks.make_task("delayed_recall", gap=5)
    spec = REGISTRY[cell]
    torch.manual_seed(4)
    model = RecurrentModel(cell, task.input_size, task.output_size, 4, 2, spec.activations[0],
                           bidirectional=bidirectional)
    batch = task.sample(3, torch.Generator().manual_seed(0))
    batch = tasks.Batch(batch.inputs[:, :-2], batch.targets[:, :-2], batch.mask[:, :-2])
    batch.mask[:, -3] = True  # the last scored position: two steps before the end
    diagnosis = diagnose(model, task, batch, 0)
    assert [p.layer for p in diagnosis.profiles] == [0, 1]
    for profile in diagnosis.profiles:
        assert len(profile.grad_norm) == task.seq_len - 2
        assert bool(torch.isfinite(profile.grad_norm).all())
    _, grads = layer_grads(model, task, batch)
    forward = torch.stack([g[:, :model.width].norm(dim=1) for g in grads[-1]], dim=1)
    assert bool((forward[:, -2:] == 0).all()) and bool((forward[:, :-2] > 0).all())
