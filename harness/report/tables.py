"""The report's tables: status counts, largest solved gap, accuracy by gap, and their text forms.

Every table is a pandas frame first (written as CSV), then turned into display strings shared
by the markdown summary and the HTML page, so both show the same numbers the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from harness import names
from harness.report.load import (
    CLIP_SETTING,
    FINAL_NORMALIZED_LOSS,
    LABEL,
    NO_CLIP_SETTING,
    RUN_NAME,
)

RUNS_CSV = "runs.csv"  # every run, every column of `load.RUN_COLUMNS`
NONE = "none"  # shown where a configuration solved no gap at all, so it cannot read as gap 0
LARGEST_SOLVED_GAP = "largest_solved_gap"
LARGEST_SOLVED_GAP_PER_SEED = "largest_solved_gap_per_seed"
SEEDS = "seeds"
N_SEEDS = "n_seeds"
ACCURACY_MEAN = f"{names.FINAL_EVAL_ACCURACY}_mean"
ACCURACY_STD = f"{names.FINAL_EVAL_ACCURACY}_std"
RUNS = "runs"
MEAN, STD, CI_LOW, CI_HIGH, N = "mean", "std", "ci95_low", "ci95_high", "n"
CI_LEVEL = 0.95

# Columns of the run table on the HTML page; runs.csv keeps all of load.RUN_COLUMNS.
RUN_TABLE_COLUMNS: tuple[str, ...] = (
    RUN_NAME,
    names.STATUS,
    names.STATUS_REASON,
    names.FINAL_EVAL_ACCURACY,
    names.BEST_EVAL_ACCURACY,
    FINAL_NORMALIZED_LOSS,
    names.STEPS_TO_SOLVE,
    names.STEPS_RUN,
    names.GRAD_NORM_PRE_CLIP_MAX,
    names.PARAMETER_COUNT,
    names.WALL_TIME_S,
)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """CSV with fixed line endings and no index, so rebuilds compare byte for byte."""
    frame.to_csv(path, index=False, lineterminator="\n")


def status_counts(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs per status: the three known statuses always (even at 0), then any others seen."""
    counts = runs[names.STATUS].value_counts()
    extra = sorted(s for s in counts.index if s not in names.STATUSES)
    order = [*names.STATUSES, *extra]
    return pd.DataFrame(
        {names.STATUS: order, RUNS: [int(counts.get(s, 0)) for s in order]}
    )


def _seed_solved_at(runs: pd.DataFrame) -> pd.DataFrame:
    """Whether each (task, label, seed, gap) was solved; a re-run counts only if all runs were."""
    keyed = runs.dropna(subset=[names.TASK_LABEL, names.GAP, names.SEED])
    solved = keyed[names.STATUS] == names.SOLVED
    return (
        solved.groupby([keyed[names.TASK_LABEL], keyed[LABEL], keyed[names.SEED], keyed[names.GAP]])
        .all()
        .rename(names.SOLVED)
        .reset_index()
    )


def _gap_list(values: Sequence[int | None]) -> str:
    return "[" + ", ".join(NONE if v is None else str(v) for v in values) + "]"


def largest_solved_gap(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, label): the largest gap every seed solved, and each seed's own largest.

    "Every seed" means every seed the configuration was run with for that task: a gap where a
    seed is missing (crashed, not yet run) does not count as solved by all.
    """
    per_gap = _seed_solved_at(runs)
    rows = []
    for (task, label), group in per_gap.groupby([names.TASK_LABEL, LABEL], sort=True):
        seeds = sorted(int(s) for s in group[names.SEED].unique())
        per_seed: list[int | None] = []
        for seed in seeds:
            solved_gaps = group.loc[(group[names.SEED] == seed) & group[names.SOLVED], names.GAP]
            per_seed.append(int(solved_gaps.max()) if len(solved_gaps) else None)
        by_gap = group.groupby(names.GAP)
        all_solved = [
            int(gap)
            for gap, at_gap in by_gap
            if at_gap[names.SOLVED].all() and set(at_gap[names.SEED]) >= set(seeds)
        ]
        rows.append(
            {
                names.TASK_LABEL: task,
                LABEL: label,
                LARGEST_SOLVED_GAP: max(all_solved) if all_solved else NONE,
                SEEDS: _gap_list(seeds),
                LARGEST_SOLVED_GAP_PER_SEED: _gap_list(per_seed),
                N_SEEDS: len(seeds),
            }
        )
    columns = [names.TASK_LABEL, LABEL, LARGEST_SOLVED_GAP, SEEDS, LARGEST_SOLVED_GAP_PER_SEED,
               N_SEEDS]
    return pd.DataFrame(rows, columns=columns)


# With at most this many seeds at a point a figure draws every seed and no band (a t band
# over 2-5 values is mostly the t quantile, not the data); above it, a band clipped to range.
SEED_POINTS_MAX = 5
ACCURACY_BOUNDS = (0.0, 1.0)
NONNEGATIVE = (0.0, None)
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default), inside [0, 1].

    Unlike the normal (Wald) interval it is not empty at 0 of n or n of n: 0 of 3 gives
    [0, 0.562]. With no trials nothing is known: [0, 1].
    """
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes out of {trials} trials")
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


# The runs that are results: a failed or killed job, or one without a status, is not a trial.
RESULT_STATUSES = (names.SOLVED, names.UNSOLVED, names.DIVERGED)
N_SOLVED, N_RUNS = "n_solved", "n_runs"
# share of result runs solved at a point, with its Wilson 95% interval (`wilson_interval`)
SOLVE_RATE, SOLVE_RATE_LOW, SOLVE_RATE_HIGH = "solve_rate", "solve_rate_low", "solve_rate_high"
SOLVE_RATE_COLUMNS = (N_SOLVED, N_RUNS, SOLVE_RATE, SOLVE_RATE_LOW, SOLVE_RATE_HIGH)
WILSON_TEXT = ("solve rate = solved / result runs (solved, unsolved or diverged; failed, killed "
               "and unfinished jobs are not trials); error bars: the Wilson 95% score "
               "interval, which is never empty at 0 of n or n of n (0 of 3 gives [0, 0.56], "
               "3 of 3 [0.44, 1]), unlike the normal approximation")


def solve_rates(runs: pd.DataFrame, group: Sequence[str]) -> pd.DataFrame:
    """Per group of result runs: solved, runs, solve rate and its Wilson 95% interval.

    Columns `*group, *SOLVE_RATE_COLUMNS`, groups in sort order; a group with no result run
    has no row.
    """
    results = runs[runs[names.STATUS].isin(RESULT_STATUSES)].dropna(subset=list(group))
    if results.empty:
        return pd.DataFrame(columns=[*group, *SOLVE_RATE_COLUMNS])
    table = (results.groupby(list(group), sort=True)
             .agg(**{N_SOLVED: (names.STATUS, lambda s: int((s == names.SOLVED).sum())),
                     N_RUNS: (names.STATUS, "count")}).reset_index())
    bounds = [wilson_interval(int(k), int(n))
              for k, n in zip(table[N_SOLVED], table[N_RUNS], strict=True)]
    table[SOLVE_RATE] = table[N_SOLVED] / table[N_RUNS]
    table[SOLVE_RATE_LOW] = [low for low, _ in bounds]
    table[SOLVE_RATE_HIGH] = [high for _, high in bounds]
    return table[[*group, *SOLVE_RATE_COLUMNS]]


def mean_ci(frame: pd.DataFrame, group: Sequence[str], value: str,
            bounds: tuple[float | None, float | None] = (None, None)) -> pd.DataFrame:
    """Per group: mean, sample std, Student-t 95% CI of the mean, and n of `value`.

    Columns `*group, mean, std, ci95_low, ci95_high, n`; NaN values are left out; a group
    with one value has no std or CI (empty), one with none has no mean either. `bounds`
    (low, high; None for unbounded) is the range of the quantity: the CI is clipped to it,
    so an accuracy band never leaves [0, 1]. Groups keep their sort order, so a rebuild
    writes the same CSV.
    """
    keyed = frame.dropna(subset=list(group))
    grouped = keyed.groupby(list(group), sort=True, dropna=False)[value]
    table = grouped.agg(["mean", "std", "count"]).reset_index()
    table.columns = [*group, MEAN, STD, N]
    n = table[N].astype(float)
    t = pd.Series(stats.t.ppf(0.5 + CI_LEVEL / 2, np.maximum(n - 1, 1)), index=table.index)
    half = (t * table[STD] / np.sqrt(n)).where(n > 1)
    table[CI_LOW] = table[MEAN] - half
    table[CI_HIGH] = table[MEAN] + half
    low, high = bounds
    table[CI_LOW] = table[CI_LOW].clip(lower=low, upper=high)
    table[CI_HIGH] = table[CI_HIGH].clip(lower=low, upper=high)
    table[N] = table[N].astype(int)
    return table[[*group, MEAN, STD, CI_LOW, CI_HIGH, N]]


def accuracy_by_gap(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, label, gap): mean, sample std and t 95% CI of final eval accuracy over seeds.

    `n_seeds` counts the runs that logged a final accuracy; std and CI are empty for one.
    """
    table = mean_ci(runs, [names.TASK_LABEL, LABEL, names.GAP], names.FINAL_EVAL_ACCURACY,
                    ACCURACY_BOUNDS)
    return table.rename(columns={MEAN: ACCURACY_MEAN, STD: ACCURACY_STD, N: N_SEEDS})[
        [names.TASK_LABEL, LABEL, names.GAP, ACCURACY_MEAN, ACCURACY_STD, CI_LOW, CI_HIGH, N_SEEDS]]


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def format_cell(value: object, digits: int = 3) -> str:
    """One display string per value: floats rounded, integers plain, missing as a dash."""
    if _is_missing(value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def display_rows(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> list[list[str]]:
    """Rows of `frame` as display strings, in the order of `columns` (default: all)."""
    cols = list(columns) if columns is not None else list(frame.columns)
    return [[format_cell(v) for v in row] for row in frame[cols].itertuples(index=False)]


def accuracy_display(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The accuracy table with mean ± std in one cell, as header and rows of strings."""
    header = [names.TASK_LABEL, LABEL, names.GAP, f"{names.FINAL_EVAL_ACCURACY} (mean ± std)",
              N_SEEDS]
    rows = []
    for row in table[[names.TASK_LABEL, LABEL, names.GAP, ACCURACY_MEAN, ACCURACY_STD,
                      N_SEEDS]].itertuples(index=False):
        task, label, gap, mean, std, n = row
        cell = format_cell(mean)
        if not _is_missing(std):
            cell += f" ± {format_cell(std)}"
        rows.append([format_cell(task), format_cell(label), format_cell(gap), cell, str(n)])
    return header, rows


def run_display(runs: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The per-run table of the HTML page: header and rows of strings."""
    frame = runs.copy()
    # Steps and parameters are counts: no decimal part, though metrics are floats.
    for key in (names.STEPS_TO_SOLVE, names.STEPS_RUN, names.PARAMETER_COUNT):
        frame[key] = frame[key].round().astype("Int64").astype(object)
    frame[names.WALL_TIME_S] = pd.Series(
        [None if _is_missing(v) else f"{float(v):.1f}" for v in frame[names.WALL_TIME_S]],
        index=frame.index,
        dtype=object,
    )
    return list(RUN_TABLE_COLUMNS), display_rows(frame, RUN_TABLE_COLUMNS)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table; pipes in cells are escaped so they cannot split one."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def clip_settings(runs: pd.DataFrame) -> list[str]:
    """The clip settings of the experiment, `none` first, then by mode and threshold."""
    keyed = runs[[CLIP_SETTING, names.CLIP_MODE, names.CLIP_THRESHOLD]].drop_duplicates(
        CLIP_SETTING)
    keyed = keyed.assign(_none=keyed[CLIP_SETTING] != NO_CLIP_SETTING)
    keyed = keyed.sort_values(["_none", names.CLIP_MODE, names.CLIP_THRESHOLD, CLIP_SETTING],
                              na_position="last")
    return keyed[CLIP_SETTING].astype(str).tolist()
