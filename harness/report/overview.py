"""The report's overview: what was swept, how runs ended, what it cost, how to reproduce it.

Everything comes from the store: the axes are the params whose values differ between runs,
the commands are rebuilt from each sweep parent run's `sweep_overrides` param.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from harness import names
from harness.report.load import LABEL, RUN_ID, RUN_NAME, Sweep

# Keys the configuration label is built from (harness.names.config_label) plus the axes every
# figure has anyway: an axis outside these is pooled over by the tables and findings.
LABEL_KEYS = (names.TASK, names.GAP, names.SEED, names.MODEL, names.ACTIVATION, names.INIT,
              names.CLIP_MODE, names.CLIP_THRESHOLD, names.CHRONO, names.NUM_LAYERS,
              names.BIDIRECTIONAL,
              *(key for key, _ in names.TASK_VARIANTS.values()))  # they make the task label
# An axis with more values than this (a tuning sweep's continuous learning rate) is not put
# into the label: every run would be its own configuration. It stays listed as pooled.
MAX_LABEL_AXIS_VALUES = 16
TRAIN_COMMAND = "harness-train -m"
AXIS, VALUES, N_VALUES = "axis", "values", "n_values"


@dataclass(frozen=True)
class SweepInfo:
    """One sweep parent run: its name, command, sweep space, tuning rule and its runs."""

    name: str
    command: str
    space: str  # the preset's sweep space as `key: values` lines' text, "" if none
    tuning: str  # the `sweep_tuning` tag's text, "" if not a tuning sweep
    n_runs: int


@dataclass(frozen=True)
class Overview:
    axes: pd.DataFrame  # columns axis, values, n_values: one row per param that varies
    pooled_axes: list[str]  # axes that are not part of the configuration label
    pooled_on_purpose: list[str]  # of those, the ones named with `harness-report --pool`
    n_runs: int
    compute_s: float  # sum of wall_time_s over the runs that logged it
    n_timed: int  # runs that logged wall_time_s
    sweeps: list[SweepInfo]
    n_outside: int  # runs that belong to no sweep parent run of this experiment
    tracking_uri: str


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


def _space_text(space: object) -> str:
    if not isinstance(space, str) or space in ("", "{}"):
        return ""
    try:
        parsed = json.loads(space)
    except json.JSONDecodeError:
        return space
    if not isinstance(parsed, dict):
        return space
    return "; ".join(f"{k}={v}" for k, v in parsed.items())


def sweep_infos(sweep: Sweep) -> list[SweepInfo]:
    counts = sweep.runs[names.SWEEP_ID].value_counts()
    infos = []
    for row in sweep.sweeps.to_dict("records"):
        overrides = row[names.SWEEP_OVERRIDES]
        overrides = overrides.strip() if isinstance(overrides, str) else ""
        tuning = row[names.SWEEP_TUNING]
        infos.append(SweepInfo(
            name=str(row[RUN_NAME]),
            command=f"{TRAIN_COMMAND} {overrides}".strip(),
            space=_space_text(row[names.SWEEP_SPACE]),
            tuning=tuning.strip() if isinstance(tuning, str) else "",
            n_runs=int(counts.get(row[RUN_ID], 0)),
        ))
    return infos


def overview(sweep: Sweep, tracking_uri: str) -> Overview:
    runs = sweep.runs
    axes = swept_axes(sweep.params)
    wall = runs[names.WALL_TIME_S].astype(float)
    timed = wall[wall.notna() & (wall >= 0)]
    parents = set(sweep.sweeps[RUN_ID])
    outside = int((~runs[names.SWEEP_ID].isin(list(parents))).sum())
    return Overview(
        axes=axes,
        pooled_axes=[a for a in axes[AXIS]
                     if a not in LABEL_KEYS and a not in sweep.label_axes],
        pooled_on_purpose=list(sweep.pooled),
        n_runs=len(runs),
        compute_s=float(timed.sum()),
        n_timed=len(timed),
        sweeps=sweep_infos(sweep),
        n_outside=outside,
        tracking_uri=tracking_uri,
    )


def duration(seconds: float) -> str:
    """`2 h 03 min 05 s`, `4 min 10 s`, `12.5 s`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    return f"{minutes} min {secs:02d} s"


def compute_text(view: Overview) -> str:
    text = f"{duration(view.compute_s)} of training in total (sum of `{names.WALL_TIME_S}`"
    if view.n_timed < view.n_runs:
        text += f" over the {view.n_timed} of {view.n_runs} runs that logged it"
    return text + ")"


def pooled_text(view: Overview) -> str:
    """Why a table may mix runs: axes that vary but are not part of the configuration label
    (those pooled on purpose are said by `pool_banner`)."""
    automatic = [a for a in view.pooled_axes if a not in view.pooled_on_purpose]
    if not automatic:
        return ""
    listed = ", ".join(f"`{a}`" for a in automatic)
    return (f"{listed} also vary but are not part of the configuration {LABEL}: the tables, "
            "figures and findings pool the runs over them.")


def pool_banner(view: Overview) -> str:
    """The warning that opens a report pooled on purpose (`--pool`); "" without it."""
    axes = view.pooled_on_purpose
    if not axes:
        return ""
    listed = ", ".join(f"`{a}`" for a in axes)
    them = "it" if len(axes) == 1 else "them"
    return (f"Pooled on purpose (`--pool`) over {listed}: every table, figure, finding and "
            f"claim of this report mixes runs that differ in {them}, and no configuration "
            f"{LABEL} names {them}.")


def markdown(view: Overview, counts: pd.DataFrame) -> str:
    from harness.report.tables import RUNS, display_rows, markdown_table

    parts = ["## Overview", "", f"- store: `{view.tracking_uri}`", f"- runs: {view.n_runs}",
             f"- compute: {compute_text(view)}", "", "### Runs by status", "",
             markdown_table([names.STATUS, RUNS], display_rows(counts)), "",
             "### What was swept", ""]
    if view.axes.empty:
        parts += ["Every run has the same params: nothing was swept.", ""]
    else:
        parts += [markdown_table([AXIS, VALUES], display_rows(view.axes, [AXIS, VALUES])), ""]
    if pooled_text(view):
        parts += [pooled_text(view), ""]
    parts += ["### Reproduce", ""]
    for info in view.sweeps:
        parts.append(f"- `{info.command}` ({info.name}, {info.n_runs} runs)")
        if info.space:
            parts.append(f"  - sweep space of the preset: `{info.space}`")
        if info.tuning:
            parts.append(f"  - tuning: {info.tuning}")
    if view.n_outside:
        parts.append(f"- {view.n_outside} run(s) were started outside any sweep of this "
                     "experiment (single `harness-train` runs, or their sweep's parent run "
                     "is missing); their params are in `runs.csv` and MLflow.")
    if not view.sweeps and not view.n_outside:
        parts.append("- no sweep parent run in this experiment.")
    return "\n".join([*parts, ""])
