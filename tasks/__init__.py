"""Long-term-dependency tasks: copy, adding, delayed recall, temporal order, selective copy,
multi-query associative recall, and sequential (optionally permuted) 8x8 digits.

Each task is defined exactly in its module docstring (`tasks.copy`, `tasks.adding`,
`tasks.delayed_recall`, `tasks.temporal_order`, `tasks.selective_copy`,
`tasks.associative_recall`, `tasks.sequential_digits`); the shared interface (`Task`,
`Batch`, `Chance`) and variable gaps are in `tasks.base`. Build a task by its registry name
with `make_task("copy", gap=100)`.
"""

import inspect
from typing import Any

from tasks.adding import AddingTask
from tasks.associative_recall import AssociativeRecallTask
from tasks.base import Batch, Chance, Success, Task
from tasks.copy import CopyTask
from tasks.delayed_recall import DelayedRecallTask
from tasks.selective_copy import SelectiveCopyTask
from tasks.sequential_digits import SequentialDigitsTask
from tasks.temporal_order import TemporalOrderTask

TASKS: dict[str, type[Task]] = {
    task.name: task
    for task in (CopyTask, AddingTask, DelayedRecallTask, TemporalOrderTask, SelectiveCopyTask,
                 AssociativeRecallTask, SequentialDigitsTask)
}

__all__ = [
    "TASKS",
    "AddingTask",
    "AssociativeRecallTask",
    "Batch",
    "Chance",
    "CopyTask",
    "DelayedRecallTask",
    "SelectiveCopyTask",
    "SequentialDigitsTask",
    "Success",
    "Task",
    "TemporalOrderTask",
    "make_task",
]


def make_task(name: str, **params: Any) -> Task:
    """The task registered as `name`, built with `params` (its constructor's keywords).

    Raises ValueError for an unknown name (listing the registered names), for unknown or
    missing parameters (listing the allowed ones) and for invalid parameter values.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed names: {', '.join(TASKS)}")
    cls = TASKS[name]
    # Checked here so that a typo in a config is a ValueError naming the parameter, not a
    # TypeError from the constructor.
    signature = inspect.signature(cls)
    allowed = ", ".join(signature.parameters)
    unknown = [key for key in params if key not in signature.parameters]
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for task {name!r}; allowed: {allowed}"
        )
    missing = [
        key
        for key, parameter in signature.parameters.items()
        if parameter.default is inspect.Parameter.empty and key not in params
    ]
    if missing:
        raise ValueError(
            f"missing parameter(s) {', '.join(missing)} for task {name!r}; allowed: {allowed}"
        )
    return cls(**params)
