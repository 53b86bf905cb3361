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

Configs and the registry. A task is one module: its config dataclass (a `TaskConfig`
subclass: the knobs, their defaults and their checks, written once) and its `Task` subclass,
which names the config in `config_class` and is registered under its `name` in `TASKS` when
the class is defined. `CopyConfig(gap=50).build()` (or `CopyTask(CopyConfig(gap=50))`)
checks the config and builds the task; the harness's Hydra schemas for the `task` group and
the allowed values of `task.name` (`TaskName`) are derived from `TASKS`.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Self

# torch (1.6 s to import) is imported inside the functions that generate or score data, so a
# config is validated and its task built (sizes, chance levels) without it: a bad input is
# refused before torch loads (harness/train.py).
if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Batch:
    """One batch of sequences; see the module docstring for shapes and dtypes."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    gaps: torch.Tensor | None = None
    # int64 [n]: the scored positions (mask True) as flat indices over B·L, row-major; made
    # on the host by `to`, so that no code on a device reads the mask (`positions`).
    scored: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Self:
        """The same batch on `device`, with its scored positions. Generation always happens
        on the CPU; to a GPU the copy is asynchronous, from pinned memory: the host goes on
        to the next step without waiting for the GPU's queue (a blocking copy would
        synchronize with it)."""
        import torch
        device = torch.device(device)
        pinned = device.type == "cuda"

        def move(tensor: torch.Tensor) -> torch.Tensor:
            if pinned and tensor.device.type == "cpu":
                return tensor.pin_memory().to(device, non_blocking=True)
            return tensor.to(device)

        gaps = None if self.gaps is None else move(self.gaps)
        return type(self)(move(self.inputs), move(self.targets), move(self.mask), gaps,
                          move(self.positions()))

    def positions(self) -> torch.Tensor:
        """The scored positions as flat indices over B·L (`scored`, else read from the mask:
        on a GPU, a host sync)."""
        if self.scored is not None:
            return self.scored
        return self.mask.flatten().nonzero().squeeze(1)

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

# Every task by name, filled as each task class is defined (`Task.__init_subclass__`).
TASKS: dict[str, type[Task]] = {}
# The names in TASKS as an enum: the type of `TaskConfig.name`, so that Hydra refuses any other
# `task.name` while composing, listing these. Rebuilt whenever a task registers: read it as
# `tasks.base.TaskName` at the time of use, not through a binding imported earlier.
TaskName = StrEnum("TaskName", [], module=__name__)


class ParameterError(ValueError):
    """A task parameter of the wrong type or out of range.

    `key` names the parameter and `message` says what is allowed (`must be >= 1, got 0`);
    str() adds the task: `gap of task 'copy' must be >= 1, got 0`. The harness reports it
    under the config's key: `task.gap: must be >= 1, got 0`.
    """

    def __init__(self, task: str, key: str, message: str) -> None:
        super().__init__(f"{key} of task {task!r} {message}")
        self.task, self.key, self.message = task, key, message

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:  # raised in a job process
        return type(self), (self.task, self.key, self.message)


@dataclass
class TaskConfig:
    """A task's parameters: the one place where its knobs, their defaults and checks are written.

    Every task has `gap` (the largest gap) and the variable-gap bounds `gap_min` and `gap_max`
    (module docstring); a subclass adds its knobs as fields with their defaults, and their
    range checks in `check_values`. Types are those of the annotations: `check` refuses a
    config built in Python with a value Hydra would refuse while composing (a float or a bool
    for an int, a string no enum member has). `name` is no parameter: it is set from the task
    that the config's class belongs to (Hydra reads it from the config as `task.name`).
    """

    name: TaskName = field(init=False, repr=False)
    gap: int = 10
    gap_min: int | None = None
    gap_max: int | None = None
    min_gap: ClassVar[int] = 1  # the smallest gap (and gap_min) of the task's layout
    task: ClassVar[type[Task]]  # the task built from this config, set when that task registers

    def __post_init__(self) -> None:
        task = getattr(type(self), "task", None)
        if task is None:
            raise TypeError(f"{type(self).__name__} belongs to no task: a Task subclass names it "
                            "in its config_class")
        self.name = TaskName(task.name)

    def check(self) -> None:
        """Raise ParameterError for the first parameter of a wrong type or out of range."""
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):
            if item.init:
                self._check_type(item.name, hints[item.name])
        expected = self.task.name
        self.require(self.name == expected, "name",
                     f"must be {expected!r}, the task of {type(self).__name__} (another task is "
                     f"another config: task=<option>), got {str(self.name)!r}")
        self.check_values()

    def check_values(self) -> None:
        """The range checks, on values of the right types; a subclass adds its knobs'."""
        self.require(self.gap >= self.min_gap, "gap",
                     f"must be >= {self.min_gap}, got {self.gap}")
        if self.gap_min is not None:
            self.require(self.min_gap <= self.gap_min <= self.gap, "gap_min",
                         f"must be in [{self.min_gap}, task.gap={self.gap}], got {self.gap_min}")
        self.require(self.gap_max is None or self.gap_max == self.gap, "gap_max",
                     f"must be null or equal task.gap ({self.gap}, the largest gap), "
                     f"got {self.gap_max}")

    def require(self, ok: bool, key: str, message: str) -> None:
        """Raise ParameterError(`key`, `message`) unless `ok`."""
        if not ok:
            raise ParameterError(self.task.name, key, message)

    def _check_type(self, key: str, hint: Any) -> None:
        value = getattr(self, key)
        kinds = typing.get_args(hint) if typing.get_origin(hint) in (
            typing.Union, types.UnionType) else (hint,)
        optional = type(None) in kinds
        if value is None and optional:
            return
        (kind,) = [k for k in kinds if k is not type(None)]
        self.require(is_value_of(value, kind), key, f"must be {describe(kind)}"
                     f"{' or None' if optional else ''}, got {value!r}")

    def params(self) -> dict[str, Any]:
        """The parameters (every field but `name`) as plain values, enum members as their
        values: the keywords of `make_task`, and the task's attributes."""
        return {item.name: plain(getattr(self, item.name))
                for item in dataclasses.fields(self) if item.init}

    def build(self) -> Task:
        """The task of this config; ParameterError names a parameter of a wrong type or value."""
        return self.task(self)


def is_value_of(value: object, kind: Any) -> bool:
    """Whether `value` may be given to a field annotated `kind`: an int (not a bool) for int, a
    real number for float, a bool for bool, a member's value for an enum."""
    if isinstance(value, bool):
        return kind is bool
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:
        return isinstance(value, numbers.Real)
    if isinstance(kind, type) and issubclass(kind, Enum):
        return any(value == member.value for member in kind)
    return isinstance(value, kind)


def describe(kind: Any) -> str:
    """`an integer`, `one of 'blank', 'noise'`: what `is_value_of(..., kind)` accepts."""
    if isinstance(kind, type) and issubclass(kind, Enum):
        return "one of " + ", ".join(repr(member.value) for member in kind)
    return {int: "an integer", float: "a number", bool: "a bool", str: "a string"}.get(
        kind, f"a {getattr(kind, '__name__', kind)}")


def plain(value: Any) -> Any:
    """An enum member as its value, an integer as an int; anything else unchanged."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def register(task: type[Task]) -> None:
    """Add `task` to TASKS under its name, link its config class to it and rebuild TaskName.

    A name or config class already taken by another task is refused (TypeError); the same
    class defined again (a reloaded module) replaces its earlier definition.
    """
    global TaskName
    name, config = vars(task).get("name"), task.config_class
    if not isinstance(name, str) or not name:
        raise TypeError(f"{qualified(task)} sets config_class, so it needs a name of its own")
    if not (isinstance(config, type) and issubclass(config, TaskConfig)):
        raise TypeError(f"{qualified(task)}.config_class must be a TaskConfig subclass, "
                        f"got {config!r}")
    for owner, what in ((TASKS.get(name), f"the name {name!r}"),
                        (vars(config).get("task"), f"the config {qualified(config)}")):
        if owner is not None and qualified(owner) != qualified(task):
            raise TypeError(f"{what} belongs to {qualified(owner)}; {qualified(task)} needs "
                            "its own")
    config.task = task
    TASKS[name] = task
    TaskName = StrEnum("TaskName", [(n, n) for n in TASKS], module=__name__)


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Task(ABC):
    """A sequence task, built from its config: generates batches and scores outputs on them.

    A concrete task sets `name` and `config_class` (its `TaskConfig` subclass), and is then
    registered in TASKS. Its parameters become attributes under their own names (plain values:
    `task.filler == "noise"`), next to `config`, the config it was built from.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[TaskConfig]]
    regression: ClassVar[bool]
    success: ClassVar[Success] = ACCURACY_SUCCESS  # what "solved" means for this task
    config: TaskConfig
    gap: int
    gap_min: int  # smallest per-sequence gap (= gap unless gaps are drawn per sequence)
    gap_max: int  # largest per-sequence gap (= gap, except adding's hochreiter1997 variant)
    seq_len: int
    input_size: int
    output_size: int
    chance: Chance

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "config_class" in vars(cls):
            register(cls)

    def __init__(self, config: TaskConfig) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} is built from a "
                            f"{self.config_class.__name__}, got {type(config).__name__}")
        config.check()
        self.config = config
        for key, value in config.params().items():
            setattr(self, key, value)
        self.gap_min = self.gap if config.gap_min is None else config.gap_min
        self.gap_max = self.gap

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
        import torch
        if not is_value_of(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size of task {self.name!r} must be an integer >= 1, "
                             f"got {batch_size!r}")
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            # Batches are generated on the CPU so that a seed means the same data everywhere.
            raise ValueError(f"generator must be a CPU torch.Generator, got {generator.device}")
        if split not in SPLITS:
            raise ValueError(f"split of task {self.name!r} must be one of "
                             f"{', '.join(map(repr, SPLITS))}, got {split!r}")
        return self._generate(int(batch_size), generator, str(split))

    @abstractmethod
    def _generate(self, batch_size: int, generator: torch.Generator, split: str) -> Batch:
        """Task-specific generation; arguments are already validated."""

    def draw_gaps(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Each sequence's gap, uniform in [gap_min, gap_max]; no draw when they are equal."""
        import torch
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
            return masked_mse(outputs.squeeze(-1), batch.targets, batch.positions())
        return sequence_cross_entropy(outputs, batch.targets, batch.positions())

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
        return f"{type(self).__name__}({self.config!r})"


class ClassificationTask(Task):
    """A task whose targets are class ids: cross-entropy at the scored positions (override
    `loss` where the published loss covers more) and the share of scored positions whose
    argmax is the target."""

    regression = False

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.scored_loss(outputs, batch)

    def accuracy(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        self.check_outputs(outputs, batch)
        return masked_accuracy(outputs, batch.targets, batch.positions())


def randint_rows(low: torch.Tensor, high: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
    """One integer per row, uniform in [low_i, high_i) (int64 tensors of the same shape).

    When every row has the same range this is `torch.randint` (so fixed-gap tasks draw the
    same numbers as before per-row ranges existed). Otherwise floor(U * span) with U uniform
    in [0, 1) in float64, exact for spans far beyond any sequence length.
    """
    import torch
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
    import torch

    # Scattering into float32 directly is ~3x faster than F.one_hot, which builds int64 first.
    encoded = torch.zeros((*tokens.shape, num_tokens), dtype=torch.float32)
    return encoded.scatter_(-1, tokens.unsqueeze(-1), 1.0)


def scored(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """values [B, L, ...] at the scored positions (flat indices over B·L): [n, ...]. An
    integer gather: unlike a boolean selection, it reads nothing back to the host."""
    return values.flatten(0, 1)[positions]


def sequence_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy (nats) of logits [B, L, C] against class ids [B, L].

    The mean runs over the scored positions (`Batch.positions`), or over every position and
    the batch when `positions` is None.
    """
    import torch.nn.functional as F
    if positions is None:
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    return F.cross_entropy(scored(logits, positions), scored(targets, positions))


def masked_accuracy(
    logits: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """Share of scored positions whose argmax over logits [B, L, C] equals the target."""
    import torch
    hits = scored(logits, positions).argmax(dim=-1) == scored(targets, positions)
    return hits.to(torch.float32).mean()


def masked_mse(
    predictions: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """Mean squared error of predictions [B, L] over the scored positions."""
    import torch.nn.functional as F
    return F.mse_loss(scored(predictions, positions), scored(targets, positions))


def masked_within(
    predictions: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor, tolerance: float
) -> torch.Tensor:
    """Share of scored positions where |prediction - target| < tolerance (strictly)."""
    import torch
    hits = (scored(predictions, positions) - scored(targets, positions)).abs() < tolerance
    return hits.to(torch.float32).mean()
