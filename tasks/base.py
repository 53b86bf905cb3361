"""Shared interface and helpers of the synthetic long-term-dependency tasks.

Every task produces a `Batch` of three batch-first tensors of sequence length L:

- `inputs`  float32 [B, L, D]: one-hot tokens (classification tasks) or real-valued channels.
- `targets` [B, L]: int64 class ids for classification, float32 for regression. Positions
  that are not scored still hold a well-defined value (documented per task) so that the
  tensor is dense.
- `mask`    bool [B, L]: True at the positions that are scored by `Task.accuracy`. Whether
  `Task.loss` also stays inside the mask is part of each task's published definition (the
  copy task, for one, averages its cross-entropy over every position).

A model emits `outputs` float [B, L, output_size] (logits, or predictions for regression) at
every step; the task turns them into its published loss and its accuracy.

`Task.chance` is the analytic loss and accuracy of the best memoryless predictor, i.e. the
best predictor that may depend on the position but not on the inputs. A model that is not
better than this has not used any information from the sequence.

Generation is vectorized and runs on the CPU, drawing every random number from the
`torch.Generator` passed to `Task.sample`, never from the global RNG: the same seed gives the
same batch regardless of what else the process does with torch's global seed.
"""

import inspect
import operator
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Self

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Batch:
    """One batch of sequences; see the module docstring for shapes and dtypes."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device | str) -> Self:
        """The same batch on `device` (generation always happens on the CPU)."""
        return type(self)(self.inputs.to(device), self.targets.to(device), self.mask.to(device))


@dataclass(frozen=True)
class Chance:
    """Loss and accuracy of the best memoryless predictor, computed analytically."""

    loss: float
    accuracy: float


class Task(ABC):
    """A synthetic sequence task: generates batches and scores model outputs on them."""

    name: ClassVar[str]
    regression: ClassVar[bool]
    gap: int
    seq_len: int
    input_size: int
    output_size: int
    chance: Chance

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """A batch of `batch_size` independent sequences, drawn only from `generator`."""
        batch_size = check_int("batch_size", batch_size, 1, task=self.name)
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            # Batches are generated on the CPU so that a seed means the same data everywhere.
            raise ValueError(f"generator must be a CPU torch.Generator, got {generator.device}")
        return self._generate(batch_size, generator)

    @abstractmethod
    def _generate(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Task-specific generation; arguments are already validated."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The published training loss: a differentiable scalar."""

    @abstractmethod
    def accuracy(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Share of scored items that are right: a scalar tensor in [0, 1]."""

    def scored_loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The loss at the scored positions only (`batch.mask`), averaged over them.

        This is what the gradient diagnostics differentiate: how the error on the answer
        reaches back in time. It equals `loss` for tasks whose published loss already sits
        only at the scored positions (adding, delayed recall); for copy it leaves out the
        blank positions that the published loss also averages over.
        """
        self.check_outputs(outputs, batch)
        if self.regression:
            return masked_mse(outputs.squeeze(-1), batch.targets, batch.mask)
        return sequence_cross_entropy(outputs, batch.targets, batch.mask)

    def check_outputs(self, outputs: torch.Tensor, batch: Batch) -> None:
        """Raise ValueError unless `outputs` is [B, L, output_size] for `batch`.

        Strict on purpose: a regression output of shape [B, L] would otherwise broadcast
        against the targets and give a wrong loss without any error.
        """
        expected = (*batch.targets.shape, self.output_size)
        if tuple(outputs.shape) != expected:
            raise ValueError(
                f"outputs of task {self.name!r} must have shape {expected} "
                f"([batch, seq_len, output_size]), got {tuple(outputs.shape)}"
            )

    def __repr__(self) -> str:
        # Constructor parameters are stored under their own names by every task.
        names = inspect.signature(type(self)).parameters
        params = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{type(self).__name__}({params})"


def check_int(name: str, value: object, minimum: int, *, task: str) -> int:
    """`value` as an int if it is an integer >= `minimum`; ValueError naming `name` otherwise."""
    # bool is an int subclass, but `gap=True` is always a configuration mistake.
    if isinstance(value, bool):
        number = None
    else:
        try:
            number = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            number = None
    if number is None or number < minimum:
        raise ValueError(f"{name} of task {task!r} must be an integer >= {minimum}, got {value!r}")
    return number


def check_choice(name: str, value: object, choices: Sequence[str], *, task: str) -> str:
    """The matching entry of `choices` (a plain str); ValueError naming `name` otherwise."""
    for choice in choices:
        # Returning the choice, not `value`, turns a str-Enum member into a plain str.
        if value == choice:
            return choice
    allowed = ", ".join(repr(c) for c in choices)
    raise ValueError(f"{name} of task {task!r} must be one of {allowed}, got {value!r}")


def one_hot(tokens: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """float32 one-hot encoding of int64 `tokens` [B, L] -> [B, L, num_tokens]."""
    # Scattering into float32 directly is ~3x faster than F.one_hot, which builds int64 first.
    encoded = torch.zeros((*tokens.shape, num_tokens), dtype=torch.float32)
    return encoded.scatter_(-1, tokens.unsqueeze(-1), 1.0)


def sequence_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy (nats) of logits [B, L, C] against class ids [B, L].

    The mean runs over the positions where `mask` is True, or over every position and the
    batch when `mask` is None.
    """
    if mask is None:
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    return F.cross_entropy(logits[mask], targets[mask])


def masked_accuracy(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Share of masked positions whose argmax over logits [B, L, C] equals the target."""
    hits = logits[mask].argmax(dim=-1) == targets[mask]
    return hits.to(torch.float32).mean()


def masked_mse(
    predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean squared error of predictions [B, L] over the masked positions."""
    return F.mse_loss(predictions[mask], targets[mask])


def masked_within(
    predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, tolerance: float
) -> torch.Tensor:
    """Share of masked positions where |prediction - target| < tolerance (strictly)."""
    hits = (predictions[mask] - targets[mask]).abs() < tolerance
    return hits.to(torch.float32).mean()
