"""A batched model's member as its separate run would be configured: `Spec` and the task,
optimizer and clipping it defaults to (tests/test_batched.py, tests/test_device.py)."""

from __future__ import annotations

from typing import NamedTuple

import tasks
from harness.batched import build_member
from harness.models import RecurrentModel
from harness.schema import ClipConfig, ClipMode, OptimConfig, OptimName

TASK = tasks.make_task("delayed_recall", gap=10, filler="noise")
OPTIM = OptimConfig(OptimName.adam, 3e-3)
# Norm clipping at a threshold that fires on part of the steps (a third for the tanh RNN at
# seed 0), so a wrong per-member rescaling shows in the weights.
CLIP = ClipConfig(ClipMode.norm, 0.5)


class Spec(NamedTuple):
    """One member, as its separate run's config would set it."""

    seed: int
    cell: str = "rnn"
    activation: str = "tanh"
    optim: OptimConfig = OPTIM
    clip: ClipConfig = CLIP
    task: tasks.Task = TASK
    init: str = "default"
    forget_bias: float = 1.0

    def model(self) -> RecurrentModel:
        return build_member(self.seed, self.cell, self.task, 16, activation=self.activation,
                            init=self.init, forget_bias=self.forget_bias)
