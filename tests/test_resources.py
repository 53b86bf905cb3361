"""The memory estimate: its formula, and its parameter count against the built model of every
registered cell."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from harness import resources
from harness.cells import CELLS
from harness.models import build_model
from harness.resources import step_bytes
from harness.schema import Activation, ModelConfig


class Sizes(NamedTuple):
    """What `build_model` reads of a task."""

    input_size: int
    output_size: int
    seq_len: int


def test_step_bytes_formula() -> None:
    # an LSTM of 4 units on 3 inputs and 5 outputs: parameters 4 * 4 * (3 + 4 + 2) + 5 * (4 + 1)
    # = 169; it keeps 4 * (4 + 1) numbers per sequence and step. Activations 2 * 10 * 20 * 4 B,
    # twice for backprop; data 2 * 10 * (3 + 5) * 4 B; parameters 4 B each, 4 copies when training
    shape = resources.shape_of(ModelConfig(name="lstm", hidden_size=4), 3, 5)
    assert (shape.parameters, shape.kept) == (169, 20)
    assert step_bytes(2, 10, shape) == 2 * 10 * 20 * 4 * 2 + 2 * 10 * 8 * 4 + 169 * 16
    assert step_bytes(2, 10, shape, backprop=False) == 2 * 10 * 20 * 4 + 2 * 10 * 8 * 4 + 169 * 4
    deep = resources.shape_of(ModelConfig(name="rnn", hidden_size=4, num_layers=2,
                                          bidirectional=True), 3, 5)
    assert deep.kept == 4 * 2 * 2 * 2
    assert step_bytes(2, 10, deep) == \
        2 * 10 * 4 * 2 * 2 * 2 * 4 * 2 + 2 * 10 * 8 * 4 + deep.parameters * 16


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize(("layers", "bidirectional"), [(1, False), (2, True)])
def test_parameter_count_is_the_models(cell: str, layers: int, bidirectional: bool) -> None:
    """The memory check's count, from the cell's spec alone, is the built model's, for every
    registered cell (and modReLU's bias for a vanilla one)."""
    activations = ("tanh", "modrelu") if CELLS[cell].vanilla else CELLS[cell].activations[:1]
    for activation in activations:
        config = ModelConfig(name=cell, activation=Activation(activation), hidden_size=6,
                             num_layers=layers, bidirectional=bidirectional)
        model = build_model(config, Sizes(7, 5, 10))
        expected = sum(p.numel() for p in model.parameters())
        assert resources.shape_of(config, 7, 5).parameters == expected
