"""The diagnostics are exact: the gradient-by-lag profile equals autograd on an independent
reference, known answers are recovered, and the summaries measure what they claim."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import tasks
from harness import names
from harness.diagnostics import (
    batch_as,
    decay_fit,
    diagnose,
    gate_metrics,
    grad_reach,
    hidden_grad_norms,
    spectral_metrics,
)
from harness.models import RecurrentModel

CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def reference_grad_norms(model: RecurrentModel, task: tasks.Task, batch: tasks.Batch,
                         layer: int) -> torch.Tensor:
    """‖∂L/∂h_t‖ from torch's own cells (weights copied from the fused module) and autograd."""
    batch = batch_as(batch, torch.float64)
    extra = {"nonlinearity": model.activation} if model.cell == "rnn" else {}
    layer_input = batch.inputs
    states_by_layer = []
    for k in range(model.num_layers):
        w_ih, w_hh, b_ih, b_hh = (w.detach().double() for w in model.layer_weights(k))
        cell = CELLS[model.cell](w_ih.shape[1], model.hidden_size, **extra).double()
        with torch.no_grad():
            cell.weight_ih.copy_(w_ih)
            cell.weight_hh.copy_(w_hh)
            cell.bias_ih.copy_(b_ih)
            cell.bias_hh.copy_(b_hh)
        state = None
        states = []
        for t in range(layer_input.shape[1]):
            state = cell(layer_input[:, t], state)
            states.append(state[0] if model.cell == "lstm" else state)
        states_by_layer.append(states)
        layer_input = torch.stack(states, dim=1)
    readout = nn.Linear(model.hidden_size, model.readout.out_features).double()
    readout.load_state_dict(model.readout.state_dict())
    loss = task.scored_loss(readout(layer_input), batch) * batch.inputs.shape[0]
    grads = torch.autograd.grad(loss, states_by_layer[layer])
    return torch.stack([g.norm(dim=1) for g in grads], dim=1)


@pytest.mark.parametrize(("cell", "activation"),
                         [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("task_name", ["copy", "adding", "delayed_recall"])
def test_profile_equals_autograd_reference(cell: str, activation: str, num_layers: int,
                                           task_name: str) -> None:
    task = tasks.make_task(task_name, gap=6)
    torch.manual_seed(3)
    model = RecurrentModel(cell, task.input_size, task.output_size, 5, num_layers, activation)
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
