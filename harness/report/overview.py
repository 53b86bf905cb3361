"""The report's overview: what was swept, how runs ended, what it cost, how to reproduce it.

Everything comes from the store: the axes are the params whose values differ between runs,
the commands are rebuilt from each sweep parent run's `sweep_overrides` param.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from harness import names
from harness.report.axes import AXIS, LABEL_KEYS, VALUES, swept_axes
from harness.report.load import LABEL, NO_STATUS, RUN_ID, RUN_NAME, Sweep
from harness.report.tables import RUNS, display_rows, markdown_table

TRAIN_COMMAND = "harness-train -m"


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


def overview(sweep: Sweep) -> Overview:
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
    """The Overview section's body in summary.md (the page's: templates/sections/overview.html)."""
    parts = [f"- runs: {view.n_runs}", f"- compute: {compute_text(view)}", "",
             "### Runs by status", "", markdown_table([names.STATUS, RUNS], display_rows(counts)),
             ""]
    if NO_STATUS in set(counts[names.STATUS]):
        parts += [f"`{NO_STATUS}`: the run has no `{names.STATUS}` tag (still running, or killed "
                  "before it could tag itself).", ""]
    parts += ["### What was swept", ""]
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
    return "\n".join(parts)
