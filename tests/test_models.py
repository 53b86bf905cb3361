"""The unrolled twin equals the fused modules; initializations and constraints do what they say."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from harness import cells
from harness.batched import unbatchable
from harness.models import RecurrentModel
from harness.schema import PROJECT_ROOT

# Every cell torch's fused module computes, with each activation it runs fused.
CELLS = [(name, activation) for name, spec in cells.CELLS.items() if spec.fused
         for activation in spec.activations if not spec.vanilla or activation in ("tanh", "relu")]
# activations torch's nn.RNN does not have: the model trains through its unrolled pass
UNFUSED = ["leaky_relu", "hard_tanh", "modrelu"]


@pytest.mark.parametrize(("cell", "activation"), CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("learn_init_state", [False, True])
def test_unrolled_equals_fused(cell: str, activation: str, num_layers: int,
                               bidirectional: bool, learn_init_state: bool) -> None:
    """torch's fused module (the fast path) computes the cell's own step, learned initial
    states included."""
    torch.manual_seed(0)
    model = RecurrentModel(cell, 5, 3, 7, num_layers, activation, bidirectional=bidirectional,
                           learn_init_state=learn_init_state).double()
    assert model.fused
    with torch.no_grad():
        for param in model.cell_params.values():  # learned h0 (c0): not the zeros they start at
            param.normal_()
    inputs = torch.randn(4, 13, 5, dtype=torch.float64)
    fused = model(inputs)
    result = model.unrolled(inputs)
    unrolled, hidden = result.outputs, result.hidden
    assert fused.shape == (4, 13, 3)
    torch.testing.assert_close(unrolled, fused, rtol=1e-12, atol=1e-12)
    directions = 2 if bidirectional else 1
    assert len(result.gates) == num_layers
    assert len(result.hidden_reverse) == len(result.gates_reverse) == num_layers * (directions - 1)
    gate_keys = {metric.gate for metric in cells.CELLS[cell].gate_metrics}
    for gates in result.gates + result.gates_reverse:
        assert len(gates) == 13 and all(set(step) == gate_keys for step in gates)
    assert len(hidden) == num_layers and all(len(layer) == 13 for layer in hidden)
    # the last layer's states (both directions, forward first) are what the readout sees
    fused_hidden = model.fused_hidden(inputs)
    ours = torch.cat([torch.stack(s, dim=1) for s in result.states(num_layers - 1)], dim=2)
    torch.testing.assert_close(ours, fused_hidden)


def test_unrolled_in_float32_matches_too() -> None:
    torch.manual_seed(1)
    model = RecurrentModel("lstm", 3, 2, 16)
    inputs = torch.randn(8, 50, 3)
    torch.testing.assert_close(model.unrolled(inputs).outputs, model(inputs), rtol=1e-5, atol=1e-5)


def test_batch_first_layout_is_respected() -> None:
    """A [B, L, D] batch must not be read as [L, B, D]: sequence i's output depends on it only."""
    torch.manual_seed(2)
    model = RecurrentModel("lstm", 3, 2, 8)
    inputs = torch.randn(4, 9, 3)
    alone = model(inputs[1:2])
    torch.testing.assert_close(model(inputs)[1:2], alone)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_only_a_bidirectional_model_sees_the_future(bidirectional: bool) -> None:
    torch.manual_seed(3)
    model = RecurrentModel("gru", 3, 2, 6, num_layers=2, bidirectional=bidirectional)
    inputs = torch.randn(2, 10, 3)
    changed = inputs.clone()
    changed[:, -1] += 1.0
    first_step_moved = (model(inputs)[:, 0] - model(changed)[:, 0]).abs().max()
    assert (first_step_moved > 1e-6) == bidirectional


def reference_vanilla(model: RecurrentModel, inputs: torch.Tensor) -> torch.Tensor:
    """One-layer one-way vanilla RNN written out with the activation's textbook formula."""
    w_ih, w_hh, b_ih, b_hh = model.layer_weights(0)
    formulas = {
        "leaky_relu": lambda z: torch.where(z > 0, z, 0.01 * z),
        "hard_tanh": lambda z: z.clamp(-1.0, 1.0),
        "modrelu": lambda z: z.sign() * (z.abs() + model.modrelu_bias[0]).clamp(min=0),
    }
    h = inputs.new_zeros(inputs.shape[0], model.hidden_size)
    states = []
    for t in range(inputs.shape[1]):
        h = formulas[model.activation](inputs[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        states.append(h)
    return model.readout(torch.stack(states, dim=1))


@pytest.mark.parametrize("cell", ["rnn", "orth_rnn"])
@pytest.mark.parametrize("activation", UNFUSED)
def test_unfused_activation_trains_through_the_unrolled_pass(cell: str, activation: str) -> None:
    torch.manual_seed(4)
    model = RecurrentModel(cell, 4, 3, 6, activation=activation)
    assert not model.fused
    inputs = torch.randn(5, 12, 4)
    outputs = model(inputs)
    assert outputs.dtype == torch.float32
    torch.testing.assert_close(outputs, reference_vanilla(model, inputs), rtol=1e-5, atol=1e-6)
    outputs.square().sum().backward()  # every parameter, modReLU's bias too, gets a gradient
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_identity_init_is_irnn() -> None:
    model = RecurrentModel("rnn", 3, 2, 6, activation="relu", init="identity",
                           bidirectional=True)
    for reverse in (False, True):
        _, w_hh, b_ih, b_hh = model.layer_weights(0, reverse)
        torch.testing.assert_close(w_hh, torch.eye(6))
        assert b_hh.abs().sum() == 0 and b_ih.abs().sum() == 0


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_orthogonal_init_per_gate_block(cell: str) -> None:
    hidden = 6
    model = RecurrentModel(cell, 3, 2, hidden, num_layers=2, init="orthogonal",
                           bidirectional=True)
    for _, _, w_hh in model.recurrent_matrices():
        for block in w_hh.split(hidden, dim=0):
            torch.testing.assert_close(block @ block.T, torch.eye(hidden), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("activation", ["tanh", "modrelu"])
def test_orth_rnn_stays_orthogonal_after_optimizer_steps(activation: str) -> None:
    torch.manual_seed(5)
    hidden = 8
    model = RecurrentModel("orth_rnn", 3, 2, hidden, num_layers=2, activation=activation,
                           bidirectional=True)
    before = [w.detach().clone() for _, _, w in model.recurrent_matrices()]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    inputs, targets = torch.randn(4, 10, 3), torch.randn(4, 10, 2)
    for _ in range(20):
        optimizer.zero_grad()
        F.mse_loss(model(inputs), targets).backward()
        optimizer.step()
    eye = torch.eye(hidden)
    for (_, _, w_hh), start in zip(model.recurrent_matrices(), before, strict=True):
        assert (w_hh - start).abs().max() > 1e-2  # it was trained, not frozen
        torch.testing.assert_close(w_hh @ w_hh.T, eye, atol=1e-5, rtol=0)


def test_lstm_forget_bias() -> None:
    hidden = 5
    model = RecurrentModel("lstm", 3, 2, hidden, num_layers=2, forget_bias=2.5)
    for layer in range(2):
        _, _, b_ih, b_hh = model.layer_weights(layer)
        total = (b_ih + b_hh)[hidden:2 * hidden]
        torch.testing.assert_close(total, torch.full((hidden,), 2.5))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_chrono_init_draws_keep_gate_biases_from_log_uniform(cell: str) -> None:
    """b = ln u with u ~ U(1, T_max - 1) on the keep gate (LSTM f, GRU z); LSTM b_i = -b_f."""
    torch.manual_seed(6)
    hidden, t_max = 2000, 101
    model = RecurrentModel(cell, 3, 2, hidden, bidirectional=True, chrono_t_max=t_max)
    for _, reverse in ((0, False), (0, True)):
        _, _, b_ih, b_hh = model.layer_weights(0, reverse)
        total = (b_ih + b_hh).detach()
        keep = total[hidden:2 * hidden]  # f for the LSTM (i, f, g, o), z for the GRU (r, z, n)
        u = keep.exp()
        assert float(u.min()) >= 1 - 1e-5 and float(u.max()) <= t_max - 1 + 1e-3
        # U(1, 100): mean 50.5, sd 28.6; with 2000 draws the mean is within ±3 of it
        assert abs(float(u.mean()) - (1 + t_max - 1) / 2) < 3
        if cell == "lstm":
            torch.testing.assert_close(total[:hidden], -keep)
        else:  # torch's h' = (1 - z) n + z h: a large b_z keeps the state
            assert float(keep.mean()) > math.log(10)


def test_chrono_is_per_unit_and_seeded() -> None:
    def biases(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return RecurrentModel("lstm", 3, 2, 16, chrono_t_max=50).layer_weights(0)[2].detach()

    assert torch.equal(biases(0), biases(0)) and not torch.equal(biases(0), biases(1))
    assert biases(0)[16:32].unique().numel() == 16


@pytest.mark.parametrize(("cell", "activation", "init", "extra"),
                         [("lstm", "relu", "default", {}), ("gru", "tanh", "identity", {}),
                          ("conv", "tanh", "default", {}), ("rnn", "tanh", "xavier", {}),
                          ("lstm", "modrelu", "default", {}), ("rnn", "sigmoid", "default", {}),
                          ("rnn", "tanh", "default", {"chrono_t_max": 100}),
                          ("lstm", "tanh", "default", {"chrono_t_max": 2})])
def test_bad_model_arguments_raise(cell: str, activation: str, init: str, extra: dict) -> None:
    with pytest.raises(ValueError, match="model\\."):
        RecurrentModel(cell, 3, 2, 4, activation=activation, init=init, **extra)


@pytest.mark.parametrize("name", list(cells.CELLS))
def test_a_cell_is_one_spec_that_the_rest_derives_from(name: str) -> None:
    """The config's choices, the weight layout, the gates the diagnostics read and the
    batched path all follow the cell's spec (harness/cells/)."""
    spec = cells.CELLS[name]
    assert {p.stem for p in (PROJECT_ROOT / "conf" / "model").glob("*.yaml")
            if OmegaConf.load(p).get("name", name) == name}, f"no conf/model option uses {name}"
    torch.manual_seed(0)
    model = RecurrentModel(name, 3, 2, 5, activation=spec.activations[0])
    if spec.holder is not None:
        assert isinstance(model.rnn, getattr(torch.nn, spec.holder))
    rows = spec.width * 5
    assert model.recurrent_matrices()[0][2].shape == (len(spec.gates) * rows, rows)
    gates = model.unrolled(torch.randn(2, 4, 3)).gates[0]
    assert all(set(g) == {m.gate for m in spec.gate_metrics} for g in gates)
    if spec.keep_gate is not None:  # the keep gate the model reports: at t = 0 (h = 0, c = 0)
        # sigmoid of its block of W_ih x + b_ih + b_hh
        x = torch.randn(1, 1, 3)
        w_ih, w_hh, b_ih, b_hh = model.layer_weights(0)
        k = spec.block(spec.keep_gate)
        pre = (x[0, 0] @ w_ih.T + b_ih + b_hh)[k * 5:(k + 1) * 5]
        unrolled = model.unrolled(x)
        assert torch.allclose(unrolled.gates[0][0][spec.keep_gate], torch.sigmoid(pre)[None],
                              atol=1e-6)
    assert (unbatchable(name, spec.activations[0], False) is None) == spec.batched
