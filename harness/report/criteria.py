"""How a task judges its runs, so that every summary of a task speaks in its own criterion: a
classification task by its final eval accuracy, a regression task (adding: solved when eval
MSE / memoryless MSE <= 0.06) by that normalized MSE, never by an accuracy it does not use.

A task's measure is read from its runs' `success_criterion` tags (what decided them; the
spellings of `variable_gap.criterion`), else from the task's own rule (`tasks.TASKS[...].
success`: a store without the tag), else accuracy (a task this code does not know).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness import names
from harness.report import variable_gap
from harness.report.columns import FINAL_NORMALIZED_LOSS
from harness.report.frontier import most_common
from tasks import TASKS

ACCURACY, LOSS_RATIO = variable_gap.ACCURACY, variable_gap.LOSS_RATIO


@dataclass(frozen=True)
class Measure:
    """What a task's runs are summarized by: `column` of the runs frame, its name in words,
    whether higher is better, and what it means (said once per summary)."""

    column: str
    name: str
    higher_is_better: bool
    meaning: str = ""

    def text(self, value: float | None) -> str:
        return "–" if value is None or value != value else f"{value:.3f}"


FINAL_ACCURACY = Measure(names.FINAL_EVAL_ACCURACY, "final accuracy", True)
NORMALIZED_LOSS = Measure(FINAL_NORMALIZED_LOSS, "normalized loss", False,
                          "final eval loss / the memoryless predictor's loss; 1 is chance")
NORMALIZED_MSE = Measure(FINAL_NORMALIZED_LOSS, "normalized MSE", False,
                         "final eval MSE / the memoryless predictor's MSE; 1 is chance")


def measure_name(runs: pd.DataFrame) -> str:
    """ACCURACY or LOSS_RATIO: how the runs of one task were judged (module docstring)."""
    if names.SUCCESS_CRITERION in runs.columns:
        parsed = [variable_gap.criterion(t) for t in runs[names.SUCCESS_CRITERION].dropna()]
        found = most_common(pd.Series([p[0] for p in parsed if p is not None], dtype=object))
        if found is not None:
            return found
    task = most_common(runs[names.TASK]) if names.TASK in runs.columns else None
    return TASKS[task].success.measure if task in TASKS else ACCURACY


def measure(runs: pd.DataFrame) -> Measure:
    """The `Measure` of one task's runs: accuracy, or normalized MSE for a regression task
    (normalized loss for any other task judged by its loss)."""
    if measure_name(runs) == ACCURACY:
        return FINAL_ACCURACY
    task = most_common(runs[names.TASK]) if names.TASK in runs.columns else None
    return NORMALIZED_MSE if task in TASKS and TASKS[task].regression else NORMALIZED_LOSS
