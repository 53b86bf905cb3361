"""Long-term-dependency tasks: copy, adding, delayed recall, temporal order, selective copy,
multi-query associative recall, and sequential (optionally permuted) 8x8 digits.

A task is one module of this package: its config dataclass (parameters, defaults, checks)
and its generator, defined exactly in the module docstring (`tasks.copy`, `tasks.adding`,
...). Importing the package imports every module in it, and each task registers itself in
`TASKS` under its name; the shared interface (`Task`, `TaskConfig`, `Batch`, `Chance`) and
variable gaps are in `tasks.base`. Build a task from its config (`CopyConfig(gap=100).build()`)
or by its registered name (`make_task("copy", gap=100)`).
"""

import importlib
import pkgutil
from typing import Any

from tasks.base import TASKS, Batch, Chance, ParameterError, Success, Task, TaskConfig

__all__ = [
    "TASKS",
    "Batch",
    "Chance",
    "ParameterError",
    "Success",
    "Task",
    "TaskConfig",
    "import_modules",
    "make_task",
]


def make_task(name: str, **params: Any) -> Task:
    """The task registered as `name`, built from its config with `params` (the config's
    fields; the others keep their defaults).

    Raises ValueError for an unknown name (listing the registered names) or unknown
    parameters (listing the allowed ones), and ParameterError (a ValueError) for a parameter
    of a wrong type or out of range.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed names: {', '.join(TASKS)}")
    config = TASKS[name].config_class
    allowed = list(config().params())
    unknown = [key for key in params if key not in allowed]
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for task {name!r}; "
                         f"allowed: {', '.join(allowed)}")
    return config(**params).build()


def import_modules() -> None:
    """Import every module of this package (of each folder on its `__path__`): each task
    registers itself as its class is defined, so a new module is a new task."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


import_modules()
