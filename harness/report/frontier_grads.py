"""The frontier's gradients: each configuration's ‖∂L/∂h_t‖ profile at its frontier gap and at
the first gap it did not hold, and what clipping changed.

For each row of the frontier table (`harness.report.frontier`) whose sweep logged its probes
artifact (which names every probe's run), the probe runs at the largest gap held and at the
first gap not held are taken, at the row's lr. A run's profile is its last layer at its last
profiled step (`gradients.run_profiles`, the "final" curve of grad_profile.png); a level's curve
is the mean over its runs (`gradients.pool_runs`). The table reads that curve at lag = gap (the
distance from the loss the task asks the model to bridge) and at lag 0 (the loss itself),
gives their ratio and the runs' spread at lag = gap, and the mean of the runs' final
`grad_decay_rate`. Only measured values are used: a level whose runs logged no profile has
empty cells, and the section says so in one line.

What clipping changed: per task and model variant (model, activation, init), when exactly one
frontier row of the variant is unclipped, every clipped row of the variant is compared with it:
the gap held, and at the distance of each one's gap held the gradient's share of its lag-0
value and the final decay rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness import names
from harness.report import frontier, gradients
from harness.report.load import (
    CLIP_SETTING,
    LABEL,
    MODEL_VARIANT,
    NO_CLIP_SETTING,
    P_GRAD_NORM,
    P_LAG,
    P_LAYER,
    P_STEP,
    RUN_ID,
)

FRONTIER_GRAD_PNG = "frontier_gradients.png"
FRONTIER_GRAD_CSV = "frontier_gradients.csv"  # the table: one row per (configuration, level)
FRONTIER_GRAD_CURVES_CSV = "frontier_gradients_by_lag.csv"  # the figure's curves

# The two levels of a frontier row whose runs are compared.
LEVEL = "level"
HELD, NOT_HELD = "held", "first not held"
TASK, GAP = names.TASK_LABEL, frontier.GAP
LEVEL_RUN_COLUMNS = (TASK, LABEL, LEVEL, GAP, frontier.SEED, frontier.OUTCOME, RUN_ID)
# Columns of the table (FRONTIER_GRAD_CSV).
N_PROBES, N_SOLVED, N_PROFILED = "n_runs", "n_solved", "n_profiled"
STEP_MIN, STEP_MAX = "profile_step_min", "profile_step_max"  # the runs' last profiled steps
AT_GAP = "grad_norm_at_gap"  # the level's mean curve at lag = gap
AT_GAP_MIN, AT_GAP_MAX = "grad_norm_at_gap_min", "grad_norm_at_gap_max"  # over its runs
AT_LOSS = "grad_norm_at_lag0"  # the mean curve at lag 0
RATIO = "ratio_gap_to_lag0"  # AT_GAP / AT_LOSS
DECAY_MEAN, DECAY_N = f"{names.GRAD_DECAY_RATE}_mean", f"{names.GRAD_DECAY_RATE}_n"
TABLE_COLUMNS = (TASK, LABEL, LEVEL, GAP, N_PROBES, N_SOLVED, N_PROFILED, STEP_MIN, STEP_MAX,
                 AT_GAP, AT_GAP_MIN, AT_GAP_MAX, AT_LOSS, RATIO, DECAY_MEAN, DECAY_N)
N_RUNS = gradients.N_RUNS
CURVE_COLUMNS = (TASK, LABEL, LEVEL, GAP, P_LAYER, P_LAG, P_GRAD_NORM, N_RUNS)


@dataclass(frozen=True)
class FrontierGradients:
    """`table` (TABLE_COLUMNS), `curves` (CURVE_COLUMNS: what the figure draws), one-line
    notes on what is missing, and the sentences on what clipping changed."""

    table: pd.DataFrame
    curves: pd.DataFrame
    notes: tuple[str, ...]
    clipping: tuple[str, ...]


def level_runs(fronts: frontier.Frontiers) -> pd.DataFrame:
    """The probe runs of every frontier row at its gap held and its first gap not held."""
    rows = []
    probes = fronts.probe_runs
    for row in fronts.table.to_dict("records"):
        mine = probes[(probes[TASK] == row[TASK]) & (probes[LABEL] == row[LABEL])]
        for level, column in ((HELD, frontier.GAP_HELD), (NOT_HELD, frontier.GAP_FAILED)):
            gap = frontier.as_int(row[column])
            if gap is None:
                continue
            at = mine[mine[GAP] == gap]
            rows += [(row[TASK], row[LABEL], level, gap, p[frontier.SEED], p[frontier.OUTCOME],
                      p[RUN_ID]) for p in at.to_dict("records")]
    return pd.DataFrame(rows, columns=list(LEVEL_RUN_COLUMNS))


def _final_profiles(levels: pd.DataFrame, runs: pd.DataFrame,
                    profiles: pd.DataFrame) -> pd.DataFrame:
    """Each level run's final profile (one row per lag), keyed by the frontier row and level."""
    mine = runs[runs[RUN_ID].isin(set(levels[RUN_ID]))]
    per_run = gradients.run_profiles(mine, profiles)
    per_run = per_run[per_run[gradients.PHASE] == gradients.FINAL]
    return levels.merge(per_run[[RUN_ID, P_LAYER, P_LAG, P_GRAD_NORM, P_STEP]], on=RUN_ID,
                        how="inner")


def _at(frame: pd.DataFrame, lag: int) -> pd.Series:
    return frame.loc[frame[P_LAG].round() == lag, P_GRAD_NORM].astype(float)


def _table(levels: pd.DataFrame, per_run: pd.DataFrame, pooled: pd.DataFrame,
           decay: pd.DataFrame) -> pd.DataFrame:
    out = []
    key = [TASK, LABEL, LEVEL, GAP]
    for (task, label, level, gap), at_level in levels.groupby(key, sort=False):
        mine = per_run[(per_run[TASK] == task) & (per_run[LABEL] == label)
                       & (per_run[LEVEL] == level)]
        curve = pooled[(pooled[TASK] == task) & (pooled[LABEL] == label)
                       & (pooled[LEVEL] == level)]
        at_gap, at_loss = _at(curve, int(gap)), _at(curve, 0)
        per_run_at_gap = _at(mine, int(gap))
        rates = decay[decay[RUN_ID].isin(set(at_level[RUN_ID]))][names.GRAD_DECAY_RATE].dropna()
        mean_at_gap = float(at_gap.iloc[0]) if len(at_gap) else np.nan
        mean_at_loss = float(at_loss.iloc[0]) if len(at_loss) else np.nan
        out.append({
            TASK: task, LABEL: label, LEVEL: level, GAP: int(gap), N_PROBES: len(at_level),
            N_SOLVED: int((at_level[frontier.OUTCOME] == frontier.SOLVED).sum()),
            N_PROFILED: int(mine[RUN_ID].nunique()),
            STEP_MIN: mine[P_STEP].min() if len(mine) else np.nan,
            STEP_MAX: mine[P_STEP].max() if len(mine) else np.nan,
            AT_GAP: mean_at_gap,
            AT_GAP_MIN: per_run_at_gap.min() if len(per_run_at_gap) else np.nan,
            AT_GAP_MAX: per_run_at_gap.max() if len(per_run_at_gap) else np.nan,
            AT_LOSS: mean_at_loss,
            RATIO: mean_at_gap / mean_at_loss if mean_at_loss > 0 else np.nan,
            DECAY_MEAN: float(rates.mean()) if len(rates) else np.nan, DECAY_N: len(rates),
        })
    table = pd.DataFrame(out, columns=list(TABLE_COLUMNS))
    for column in (STEP_MIN, STEP_MAX):
        table[column] = table[column].astype("Int64")
    return table


def frontier_gradients(fronts: frontier.Frontiers, runs: pd.DataFrame, finals: pd.DataFrame,
                       profiles: pd.DataFrame) -> FrontierGradients:
    """The section's table, curves, notes and clipping sentences (module docstring)."""
    levels = level_runs(fronts)
    per_run = _final_profiles(levels, runs, profiles)
    if per_run.empty:
        pooled = pd.DataFrame(columns=list(CURVE_COLUMNS))
    else:
        pooled = gradients.pool_runs(per_run, [TASK, LABEL, LEVEL, GAP, P_LAG])
    # in the frontier table's order (task, label), the gap held before the first not held
    table = _table(levels, per_run, pooled, gradients.decay_points(runs, finals))
    # the log axis cannot draw zeros (underflow); the table keeps them
    curves = pooled[pooled[P_GRAD_NORM].astype(float) > 0].reindex(columns=list(CURVE_COLUMNS))
    curves = curves.sort_values([TASK, LABEL, GAP, P_LAG], kind="mergesort")
    return FrontierGradients(table, curves.reset_index(drop=True), _notes(fronts, table),
                             tuple(_clipping(fronts, table, runs)))


# --- words ---------------------------------------------------------------------------------


def _g(value: object) -> str:
    """A measured norm or ratio in 3 significant digits; `-` where there is none."""
    return "-" if frontier.missing(value) else f"{float(value):.3g}"  # type: ignore[arg-type]


def _notes(fronts: frontier.Frontiers, table: pd.DataFrame) -> tuple[str, ...]:
    """One line per kind of gap in the data: rows whose runs are unknown, levels unprofiled."""
    notes = []
    known = set(zip(fronts.probe_runs[TASK], fronts.probe_runs[LABEL], strict=True))
    unknown = [f"{r[LABEL]} ({r[frontier.SWEEP]})" for r in fronts.table.to_dict("records")
               if (r[TASK], r[LABEL]) not in known]
    if unknown:
        notes.append(f"No probe runs are known for {', '.join(unknown)}: the sweep logged no "
                     f"{names.FRONTIER_PROBES_ARTIFACT}.")
    bare = table[table[N_PROFILED] == 0]
    if len(table) and len(bare) == len(table):
        notes.append(f"No probe run at these gaps logged a gradient profile after step 0 "
                     f"({names.GRAD_PROFILE_ARTIFACT}): there is no profile to show.")
    elif len(bare):
        where = "; ".join(f"{r[LABEL]} at gap {r[GAP]} ({r[LEVEL]})"
                          for r in bare.to_dict("records"))
        notes.append(f"No gradient profile after step 0 ({names.GRAD_PROFILE_ARTIFACT}) was "
                     f"logged by the runs of {where}.")
    return tuple(notes)


def _held_level(table: pd.DataFrame, task: str, label: str) -> dict[str, object] | None:
    at = table[(table[TASK] == task) & (table[LABEL] == label) & (table[LEVEL] == HELD)]
    return at.to_dict("records")[0] if len(at) else None


def _gradient_words(level: dict[str, object] | None) -> tuple[str, str]:
    """(share of the lag-0 gradient at lag = gap held, final decay rate) in words."""
    if level is None:
        return "no gap held", "no gap held"
    if not level[N_PROFILED]:
        return f"no profile at gap {level[GAP]}", f"not logged at gap {level[GAP]}"
    rate = (f"{float(level[DECAY_MEAN]):.3g} (gap {level[GAP]})"  # type: ignore[arg-type]
            if level[DECAY_N] else f"not logged at gap {level[GAP]}")
    return f"{_g(level[RATIO])} (lag {level[GAP]})", rate


def _change(base: dict[str, object], clipped: dict[str, object]) -> str:
    b, a = (frontier.as_int(r[frontier.GAP_HELD]) or -1 for r in (base, clipped))
    if a == b and a < 0:
        return "left it holding no gap"
    if a == b:
        seeds = [f"{r[frontier.HELD_SOLVED]}/{r[frontier.HELD_SEEDS]}" for r in (clipped, base)]
        return f"left the gap held at {a:,} ({seeds[0]} seeds with, {seeds[1]} without)"
    verb = "raised" if a > b else "lowered"
    return f"{verb} the gap held from {frontier.held_text(base)} to {frontier.held_text(clipped)}"


def _clipping(fronts: frontier.Frontiers, table: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """Per task and model variant with one unclipped row: what each clip setting changed."""
    by_run = runs.set_index(RUN_ID)
    described = []
    for row in fronts.table.to_dict("records"):
        ids = fronts.probe_runs[(fronts.probe_runs[TASK] == row[TASK])
                                & (fronts.probe_runs[LABEL] == row[LABEL])][RUN_ID]
        ids = [i for i in ids if i in by_run.index]
        if not ids:
            continue
        variant = frontier.most_common(by_run.loc[ids, MODEL_VARIANT])
        setting = frontier.most_common(by_run.loc[ids, CLIP_SETTING])
        described.append((row[TASK], variant, setting, row))
    lines = []
    for task, variant in sorted({(t, v) for t, v, _, _ in described}):
        group = [(s, r) for t, v, s, r in described if (t, v) == (task, variant)]
        bases = [r for s, r in group if s == NO_CLIP_SETTING]
        if len(bases) != 1:
            continue
        base = bases[0]
        base_share, base_rate = _gradient_words(_held_level(table, task, str(base[LABEL])))
        for setting, row in sorted((p for p in group if p[0] != NO_CLIP_SETTING),
                                   key=lambda p: str(p[1][LABEL])):
            share, rate = _gradient_words(_held_level(table, task, str(row[LABEL])))
            lines.append(
                f"On {task}, clipping {setting} ({row[LABEL]} against {base[LABEL]}) "
                f"{_change(base, row)}. At the distance of the gap held, "
                f"{GRAD_TEXT} as a share of its value at lag 0: {share} with clipping, "
                f"{base_share} without; final {names.GRAD_DECAY_RATE}: {rate} with, "
                f"{base_rate} without.")
    return lines


GRAD_TEXT = "‖∂L/∂h_t‖"
TITLE = "Gradients at the frontier"
FIGURE_TITLE = "Gradient profile at the gap held and at the first gap not held"
SENTENCE = (
    f"For each configuration of the frontier, {GRAD_TEXT} of the last layer against the lag "
    "(distance from the loss) at each run's last profiled step, mean over its probe runs at the "
    "largest gap held (solid) and at the first gap not held (dashed), log scale; at lag = gap "
    "(dotted vertical line) the marker is the mean and the bar runs from the smallest to the "
    "largest run's value. The table reads the curves at lag = gap and at lag 0 (the loss) and "
    f"gives the runs' mean final {names.GRAD_DECAY_RATE} (slope of ln{GRAD_TEXT} per step of "
    "lag; negative: vanishing).")
DISPLAY_HEADER = ("task", "configuration", "level", "gap", "runs (solved)",
                  "profiled (last profiled step)", f"{GRAD_TEXT} at lag = gap, mean (min-max)",
                  f"{GRAD_TEXT} at lag 0", "ratio lag = gap / lag 0",
                  f"final {names.GRAD_DECAY_RATE} (n)")


def _steps(row: dict[str, object]) -> str:
    low, high = row[STEP_MIN], row[STEP_MAX]
    if frontier.missing(low):
        return "0"
    steps = f"{low}" if low == high else f"{low}-{high}"
    return f"{row[N_PROFILED]} (step {steps})"


def display_rows(table: pd.DataFrame) -> list[list[str]]:
    """The table as display strings, in the order of DISPLAY_HEADER."""
    out = []
    for row in table.to_dict("records"):
        spread = ("" if frontier.missing(row[AT_GAP_MIN])
                  else f" ({_g(row[AT_GAP_MIN])}-{_g(row[AT_GAP_MAX])})")
        rate = "-" if not row[DECAY_N] else f"{float(row[DECAY_MEAN]):.3g} ({row[DECAY_N]})"
        out.append([str(row[TASK]), str(row[LABEL]), str(row[LEVEL]), f"{row[GAP]:,}",
                    f"{row[N_PROBES]} ({row[N_SOLVED]} solved)", _steps(row),
                    _g(row[AT_GAP]) + spread, _g(row[AT_LOSS]), _g(row[RATIO]), rate])
    return out


def profiled(section: FrontierGradients) -> bool:
    """Whether any level's runs logged a profile: else the table says nothing but dashes (the
    notes say why) and is left off the page, though its CSV is written."""
    return bool((section.table[N_PROFILED] > 0).any())


