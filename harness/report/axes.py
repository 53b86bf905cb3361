"""What was swept, and which swept axes join the configuration label.

`swept_axes` lists every param whose values differ between the runs (leaving out where or how
fast a run executed, and what follows from the task or model chosen); `label_axes` says which
of them the report adds to the configuration label (`lstm-tanh-noclip-lr=0.001`) so that no
table pools over a swept axis; `label_part` spells one such part. `load` reads the runs with
them, `overview` lists them.
"""

from __future__ import annotations

import math

import pandas as pd

from harness import names
from harness.report.columns import RUN_ID

AXIS, VALUES, N_VALUES = "axis", "values", "n_values"  # the columns of `swept_axes`

# Keys the configuration label is built from (harness.names.config_label) plus the axes every
# figure has anyway: an axis outside these is pooled over by the tables and findings.
LABEL_KEYS = (names.TASK, names.GAP, names.SEED, names.MODEL, names.ACTIVATION, names.INIT,
              names.CLIP_MODE, names.CLIP_THRESHOLD, names.CHRONO, names.NUM_LAYERS,
              names.BIDIRECTIONAL,
              *(key for key, _ in names.TASK_VARIANTS.values()))  # they make the task label


# An axis with more values than this (a tuning sweep's continuous learning rate) is not put
# into the label: every run would be its own configuration. It stays listed as pooled.
MAX_LABEL_AXIS_VALUES = 16


def _sort_key(value: str) -> tuple[int, float, str]:
    """Numbers in numeric order before text in text order."""
    try:
        number = float(value)
    except ValueError:
        return (1, 0.0, value)
    return (0, number if math.isfinite(number) else math.inf, value)


# A `task.*` or `model.*` param that never varies within one task (model) comes with the
# choice of task (model), like copy's `task.n_symbols`: it is not an axis of its own.
_CHOICES = {"task.": names.TASK, "model.": names.MODEL}


def _follows_choice(params: pd.DataFrame, key: str) -> bool:
    for prefix, choice in _CHOICES.items():
        if key.startswith(prefix) and key != choice and choice in params.columns:
            values = params[[choice, key]].astype(str)  # None -> "None": unset is a value
            if (values.groupby(choice)[key].nunique() <= 1).all():
                return True
    return False


def swept_axes(params: pd.DataFrame) -> pd.DataFrame:
    """Every semantic param with more than one value across the runs, and its values.

    Left out: where or how fast a run executed (`names.NON_SEMANTIC_PREFIXES`), the options
    chosen for the config groups (`names.CHOICE_PARAMS`: their groups' keys say what they set),
    and task or model params that are constant within each task or model (they follow from
    that choice).
    """
    rows = []
    for key in sorted(c for c in params.columns if c != RUN_ID):
        if (key.startswith(names.NON_SEMANTIC_PREFIXES) or key == "experiment_name"
                or key in names.CHOICE_PARAMS
                or (key not in LABEL_KEYS and _follows_choice(params, key))):
            continue
        values = sorted({str(v) for v in params[key] if v is not None}, key=_sort_key)
        if params[key].isna().any():
            values.append("(unset)")
        if len(values) > 1:
            rows.append({AXIS: key, VALUES: ", ".join(values), N_VALUES: len(values)})
    return pd.DataFrame(rows, columns=[AXIS, VALUES, N_VALUES])


def label_axes(params: pd.DataFrame, task: pd.Series, label: pd.Series) -> list[str]:
    """The swept axes that `names.config_label` leaves out and that the report's label adds
    (`-lr=0.001`, `-hidden_size=128`), so that no table pools over a swept axis.

    `params` (one row per run, as `Sweep.params`) and the runs' task label and config label
    (same row order). An axis is added when it has more than one value within some (task,
    label) group, i.e. the tables would pool over it, and has at most MAX_LABEL_AXIS_VALUES
    values; one that only varies between tasks or configurations (a per-task learning rate)
    splits nothing and is left out. In key order.
    """
    axes = swept_axes(params)
    keys = pd.DataFrame({"_task": task.astype(str).to_numpy(),
                         "_label": label.astype(str).to_numpy()})
    out = []
    for axis, n in zip(axes[AXIS], axes[N_VALUES], strict=True):
        if axis in LABEL_KEYS or n > MAX_LABEL_AXIS_VALUES:
            continue
        values = keys.assign(_v=params[axis].astype(str).to_numpy())
        if (values.groupby(["_task", "_label"])["_v"].nunique() > 1).any():
            out.append(str(axis))
    return out


def label_part(key: str, value: object) -> str:
    """One axis as a label part: the key's last component and the value, `lr=0.001`."""
    if value is None or value is pd.NA or value != value:
        text = "unset"
    else:
        try:
            text = f"{float(str(value)):g}"
        except ValueError:
            text = str(value)
    return f"{key.rsplit('.', 1)[-1]}={text}"
