"""The unrolled twin equals the fused modules; initializations do what they say."""

from __future__ import annotations

import pytest
import torch

from harness.models import RecurrentModel

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]


@pytest.mark.parametrize(("cell", "activation"), CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_unrolled_equals_fused(cell: str, activation: str, num_layers: int) -> None:
    torch.manual_seed(0)
    model = RecurrentModel(cell, 5, 3, 7, num_layers, activation).double()
    inputs = torch.randn(4, 13, 5, dtype=torch.float64)
    fused = model(inputs)
    result = model.unrolled(inputs)
    unrolled, hidden = result.outputs, result.hidden
    assert fused.shape == (4, 13, 3)
    torch.testing.assert_close(unrolled, fused, rtol=1e-12, atol=1e-12)
    assert len(result.gates) == num_layers
    assert all(len(g) == (0 if cell == "rnn" else 13) for g in result.gates)
    assert len(hidden) == num_layers and all(len(layer) == 13 for layer in hidden)
    # the last layer's states are what the readout sees
    fused_hidden, _ = model.rnn(inputs)
    torch.testing.assert_close(torch.stack(hidden[-1], dim=1), fused_hidden)


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


def test_identity_init_is_irnn() -> None:
    model = RecurrentModel("rnn", 3, 2, 6, activation="relu", init="identity")
    torch.testing.assert_close(model.rnn.weight_hh_l0, torch.eye(6))
    assert model.rnn.bias_hh_l0.abs().sum() == 0 and model.rnn.bias_ih_l0.abs().sum() == 0


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_orthogonal_init_per_gate_block(cell: str) -> None:
    hidden = 6
    model = RecurrentModel(cell, 3, 2, hidden, init="orthogonal")
    for block in model.rnn.weight_hh_l0.split(hidden, dim=0):
        torch.testing.assert_close(block @ block.T, torch.eye(hidden), atol=1e-5, rtol=1e-5)


def test_lstm_forget_bias() -> None:
    hidden = 5
    model = RecurrentModel("lstm", 3, 2, hidden, num_layers=2, forget_bias=2.5)
    for layer in range(2):
        _, _, b_ih, b_hh = model.layer_weights(layer)
        total = (b_ih + b_hh)[hidden:2 * hidden]
        torch.testing.assert_close(total, torch.full((hidden,), 2.5))


@pytest.mark.parametrize(("cell", "activation", "init"),
                         [("lstm", "relu", "default"), ("gru", "tanh", "identity"),
                          ("conv", "tanh", "default"), ("rnn", "tanh", "xavier")])
def test_bad_model_arguments_raise(cell: str, activation: str, init: str) -> None:
    with pytest.raises(ValueError, match="model\\."):
        RecurrentModel(cell, 3, 2, 4, activation=activation, init=init)
