"""Shared interface and helpers of the long-term-dependency tasks.

Every task produces a `Batch` of batch-first tensors, of sequence length L:

- `inputs`  float32 [B, L, D]: one-hot tokens (classification tasks) or real-valued channels.
- `targets` [B, L]: int64 class ids for classification, float32 for regression. Positions
  that are not scored still hold a well-defined value (documented per task) so that the
  tensor is dense.
- `mask`    bool [B, L]: True at the positions that are scored by `Task.accuracy`. Whether
  `Task.loss` also stays inside the mask is part of each task's published definition (the
  copy task, for one, averages its cross-entropy over every position).
- `gaps`    int64 [B]: each sequence's own gap (all equal to `Task.gap` unless the task draws
  gaps per sequence); None for a batch built by hand.

Variable gaps. Every task takes `gap_min` (None: every sequence has gap `gap`) and `gap_max`
(None, or equal to `gap`). With `gap_min` set, each sequence draws its gap uniformly from
[gap_min, gap]; `gap` stays the largest gap, so it still fixes the sequence length L and
means the same on a report's x axis. A sequence with a shorter gap is left-padded (padding
documented per task) so that every scored position sits where it sits at gap `gap`: the
mask is the same for every row, and the diagnostics' lag (distance from the last scored
position) keeps its meaning. The per-sequence gap is in `Batch.gaps`. With fixed gaps no
random number is drawn for them, so a fixed-gap task generates exactly the data it did
before variable gaps existed.

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
    gaps: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Self:
        """The same batch on `device` (generation always happens on the CPU)."""
        gaps = None if self.gaps is None else self.gaps.to(device)
        return type(self)(self.inputs.to(device), self.targets.to(device), self.mask.to(device),
                          gaps)

    def rows(self, index: torch.Tensor) -> Self:
        """The sequences selected by `index` (a bool mask or int64 indices over the batch)."""
        gaps = None if self.gaps is None else self.gaps[index]
        return type(self)(self.inputs[index], self.targets[index], self.mask[index], gaps)


@dataclass(frozen=True)
class Chance:
    """Loss and accuracy of the best memoryless predictor, computed analytically."""

    loss: float
    accuracy: float


@dataclass(frozen=True)
class Success:
    """A task's rule for "solved", as the literature uses it, with its source.

    `measure` is `accuracy` (solved when the held-out accuracy is at least `threshold`) or
    `loss_ratio` (solved when the held-out loss divided by the memoryless loss is at most
    `threshold`). `train.solve_threshold` replaces the threshold, never the measure.
    """

    measure: str
    threshold: float
    source: str

    MEASURES = ("accuracy", "loss_ratio")

    def __post_init__(self) -> None:
        if self.measure not in self.MEASURES:
            raise ValueError(f"Success.measure must be one of {self.MEASURES}, got "
                             f"{self.measure!r}")

    def met(self, accuracy: float, loss_ratio: float, threshold: float | None = None) -> bool:
        """Whether an evaluation with this accuracy and loss / chance loss is solved."""
        bound = self.threshold if threshold is None else threshold
        if self.measure == "accuracy":
            return accuracy >= bound
        return loss_ratio <= bound

    def describe(self, threshold: float | None = None) -> str:
        """`eval accuracy >= 0.99`, `eval loss / chance loss <= 0.06`."""
        bound = self.threshold if threshold is None else threshold
        if self.measure == "accuracy":
            return f"eval accuracy >= {bound:g}"
        return f"eval loss / chance loss <= {bound:g}"


# Classification: every scored item right, up to 1% of them on the 256 held-out sequences
# (Hochreiter & Schmidhuber 1997 count a task solved when held-out sequences are answered
# without error; 0.99 leaves one wrong item in a hundred for the finite evaluation batch).
ACCURACY_SUCCESS = Success("accuracy", 0.99, "held-out accuracy >= 0.99 (Hochreiter & "
                           "Schmidhuber 1997: held-out sequences answered without error)")

SPLITS = ("train", "eval")


class Task(ABC):
    """A sequence task: generates batches and scores model outputs on them."""

    name: ClassVar[str]
    regression: ClassVar[bool]
    success: ClassVar[Success] = ACCURACY_SUCCESS  # what "solved" means for this task
    gap: int
    gap_min: int  # smallest per-sequence gap (= gap unless gaps are drawn per sequence)
    gap_max: int  # largest per-sequence gap (= gap, except adding's hochreiter1997 variant)
    seq_len: int
    input_size: int
    output_size: int
    chance: Chance

    @property
    def variable_gap(self) -> bool:
        """Whether sequences of one batch can have different gaps (`Batch.gaps`)."""
        return self.gap_min < self.gap_max

    def sample(self, batch_size: int, generator: torch.Generator,
               split: str = "train") -> Batch:
        """A batch of `batch_size` independent sequences, drawn only from `generator`.

        `split` is "train" or "eval". The synthetic tasks draw both from one distribution
        (the harness keeps them apart with disjoint seeds); a task built on a fixed data set
        (sequential_digits) samples its training or its test part.
        """
        batch_size = check_int("batch_size", batch_size, 1, task=self.name)
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            # Batches are generated on the CPU so that a seed means the same data everywhere.
            raise ValueError(f"generator must be a CPU torch.Generator, got {generator.device}")
        split = check_choice("split", split, SPLITS, task=self.name)
        return self._generate(batch_size, generator, split)

    @abstractmethod
    def _generate(self, batch_size: int, generator: torch.Generator, split: str) -> Batch:
        """Task-specific generation; arguments are already validated."""

    def _set_gaps(self, gap: object, gap_min: object, gap_max: object, minimum: int) -> None:
        """Check and store `gap`, `gap_min`, `gap_max` (see the module docstring)."""
        self.gap = check_int("gap", gap, minimum, task=self.name)
        if gap_max is not None and check_int("gap_max", gap_max, 1, task=self.name) != self.gap:
            raise ValueError(
                f"gap_max of task {self.name!r} must be None or equal gap ({self.gap}): gap is "
                f"the largest gap, which sets the sequence length; got {gap_max!r}"
            )
        self.gap_max = self.gap
        self.gap_min = self.gap
        if gap_min is not None:
            self.gap_min = check_int("gap_min", gap_min, minimum, task=self.name)
            if self.gap_min > self.gap:
                raise ValueError(
                    f"gap_min of task {self.name!r} must be <= gap ({self.gap}), got {gap_min!r}"
                )

    def draw_gaps(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Each sequence's gap, uniform in [gap_min, gap_max]; no draw when they are equal."""
        low = torch.full((batch_size,), self.gap_min, dtype=torch.int64)
        if not self.variable_gap:
            return low
        return randint_rows(low, low + self.gap_max - self.gap_min + 1, generator)

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


class ClassificationTask(Task):
    """A task whose targets are class ids: cross-entropy at the scored positions (override
    `loss` where the published loss covers more) and the share of scored positions whose
    argmax is the target."""

    regression = False

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.scored_loss(outputs, batch)

    def accuracy(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        self.check_outputs(outputs, batch)
        return masked_accuracy(outputs, batch.targets, batch.mask)


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


def randint_rows(low: torch.Tensor, high: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
    """One integer per row, uniform in [low_i, high_i) (int64 tensors of the same shape).

    When every row has the same range this is `torch.randint` (so fixed-gap tasks draw the
    same numbers as before per-row ranges existed). Otherwise floor(U * span) with U uniform
    in [0, 1) in float64, exact for spans far beyond any sequence length.
    """
    span = high - low
    if not bool(torch.all(span >= 1)):
        raise ValueError("randint_rows needs high > low in every row")
    first = int(span.flatten()[0])
    if bool(torch.all(span == first)):
        return low + torch.randint(first, low.shape, generator=generator, dtype=torch.int64)
    uniform = torch.rand(low.shape, generator=generator, dtype=torch.float64)
    return low + (uniform * span).to(torch.int64).clamp_max(span - 1)


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
