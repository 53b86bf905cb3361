"""Largest solved gap: the table, solve rates with their Wilson interval, steps to solve;
each figure's data and drawing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

from harness import names
from harness.report import held, tables
from harness.report.configs import NAME
from harness.report.frontier import held_text, missing
from harness.report.inputs import Inputs
from harness.report.load import LABEL
from harness.report.plotting import (
    CI_TEXT,
    UNCERTAINTY_TEXT,
    add_legend,
    ci_lines,
    empty_panel,
    gap_axis,
    save_png,
    share_panel,
    task_panels,
)
from harness.report.registry import Block, Figure, Plot, Section, Table, Text

STEPS_TO_SOLVE_CSV = "steps_to_solve_vs_gap.csv"
SOLVE_RATE_CSV = "solve_rate_vs_gap.csv"


def steps_to_solve_vs_gap(runs: pd.DataFrame, colors: dict[str, str], markers: dict[str, str],
                          experiment: str, path: Path) -> pd.DataFrame:
    """Training steps until solved vs gap, solved runs only, one panel per task.

    The CSV also counts the solved runs and the result runs of each point (`n_solved`,
    `n_runs`) and gives the solve rate with its Wilson interval (`tables.solve_rates`).
    """
    group = [names.TASK_LABEL, LABEL, names.GAP]
    solved = runs[runs[names.STATUS] == names.SOLVED]
    table = tables.mean_ci(solved, group, names.STEPS_TO_SOLVE, tables.NONNEGATIVE)
    table = tables.solve_rates(runs, group).merge(table, on=group, how="left")
    table[tables.N] = table[tables.N].fillna(0).astype(int)
    tasks = sorted(runs[names.TASK_LABEL].dropna().unique())
    fig, axes = task_panels(tasks)
    seen: set[str] = set()
    for ax, task in zip(axes, tasks, strict=False):
        panel = table[(table[names.TASK_LABEL] == task) & table[tables.MEAN].notna()]
        if panel.empty:
            empty_panel(ax, "no run solved this task")
        else:
            seen.update(ci_lines(ax, panel, names.GAP, colors, markers,
                                 raw=solved[solved[names.TASK_LABEL] == task],
                                 value=names.STEPS_TO_SOLVE))
            gap_axis(ax, table.loc[table[names.TASK_LABEL] == task, names.GAP].astype(float)
                      .to_numpy())
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
        ax.set_title(f"task: {task}")
        ax.set_xlabel("gap (time steps)")
        ax.set_ylabel("steps to solve (training steps)")
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    fig.suptitle(f"{experiment}: training steps until solved vs gap (solved runs only)\n"
                 f"{CI_TEXT}")
    if seen:
        add_legend(fig, sorted(seen), colors, markers, [])
    save_png(fig, path)
    return table[[*group, *tables.SOLVE_RATE_COLUMNS, tables.MEAN, tables.STD, tables.CI_LOW,
                  tables.CI_HIGH, tables.N]]


# Configurations at one gap are drawn side by side, this far apart in log-gap units.
DODGE = 0.025


def solve_rate_vs_gap(runs: pd.DataFrame, colors: dict[str, str], markers: dict[str, str],
                      experiment: str, path: Path) -> pd.DataFrame:
    """Share of result runs solved vs gap with Wilson 95% error bars, one panel per task.

    Returns the drawn table (`tables.solve_rates` by task, label and gap). Configurations at
    one gap are dodged sideways (by DODGE in log units) so their bars do not cover each other.
    """
    group = [names.TASK_LABEL, LABEL, names.GAP]
    table = tables.solve_rates(runs, group)
    tasks = sorted(table[names.TASK_LABEL].unique())
    fig, axes = task_panels(tasks)
    seen: set[str] = set()
    for ax, task in zip(axes, tasks, strict=False):
        panel = table[table[names.TASK_LABEL] == task]
        labels = sorted(panel[LABEL].unique())
        for i, label in enumerate(labels):
            line = panel[panel[LABEL] == label].sort_values(names.GAP)
            shift = np.exp(DODGE * (i - (len(labels) - 1) / 2))
            xs = line[names.GAP].astype(float).to_numpy() * shift
            rate = line[tables.SOLVE_RATE].to_numpy(dtype=float)
            errors = np.vstack([rate - line[tables.SOLVE_RATE_LOW].to_numpy(dtype=float),
                                line[tables.SOLVE_RATE_HIGH].to_numpy(dtype=float) - rate])
            ax.errorbar(xs, rate, yerr=errors, color=colors[label], marker=markers[label],
                        ms=5, lw=1.4, capsize=3, elinewidth=1.0)
            seen.add(str(label))
        gap_axis(ax, panel[names.GAP].astype(float).to_numpy())
        share_panel(ax, task, "gap (time steps)", "solve rate (share of result runs solved)")
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    if not tasks:
        empty_panel(axes[0], "no result runs")
    fig.suptitle(f"{experiment}: solve rate vs gap\nerror bars: Wilson 95% interval "
                 "(never empty at 0 of n or n of n)")
    if seen:
        add_legend(fig, sorted(seen), colors, markers, [])
    save_png(fig, path)
    return table


# --- the section -------------------------------------------------------------------------

SOLVE_RATE = Figure(
    id="solve_rate_vs_gap", section="solved", title="Solve rate vs gap",
    caption="The share of runs solved at each gap, one line per configuration "
    f"(configurations at one gap drawn side by side); {tables.WILSON_TEXT}.",
    csvs=(SOLVE_RATE_CSV,),
    data=lambda r: Plot(args=(r.runs, *r.style), returns=SOLVE_RATE_CSV),
    draw=solve_rate_vs_gap, weight=2)

STEPS_TO_SOLVE = Figure(
    id="steps_to_solve_vs_gap", section="solved", title="Steps to solve vs gap",
    caption="Training steps until eval accuracy first reached the solve threshold, over the "
    "solved runs only (the CSV gives how many of how many runs solved each point, and the "
    f"solve rate with its Wilson 95% interval); {UNCERTAINTY_TEXT} (≥ 0).",
    csvs=(STEPS_TO_SOLVE_CSV,),
    data=lambda r: Plot(args=(r.runs, *r.style), returns=STEPS_TO_SOLVE_CSV,
                        note="" if (r.runs[names.STATUS] == names.SOLVED).any()
                        else "No run solved"),
    draw=steps_to_solve_vs_gap, weight=3)


HEADER = ("task", "configuration", "label", "gap held (seeds)", "rule",
          "every-seed view: largest gap all seeds solved", "seeds",
          "every-seed view: each seed's largest solved gap")


def _rows(table: pd.DataFrame) -> list[list[str]]:
    """The table's display strings in HEADER's order; `none` where no gap held."""
    out = []
    for row in table.to_dict("records"):
        answered = not missing(row[held.RULE])
        out.append([str(row[names.TASK_LABEL]), str(row[NAME]) if answered else "–",
                    str(row[LABEL]), held_text(row) if answered else "–",
                    str(row[held.RULE]) if answered else "–",
                    *(tables.format_cell(row[c]) for c in (
                        tables.LARGEST_SOLVED_GAP, tables.SEEDS,
                        tables.LARGEST_SOLVED_GAP_PER_SEED))])
    return out


def blocks(r: Inputs) -> list[Block]:
    return [
        Text(Markup("<strong>Gap held</strong>: the headline's answer, by the rule in the rule "
                    "column (a frontier sweep's m of n seeds where one ran, else every seed); "
                    '<span class="none">{none}</span> where not even the lowest gap held. '
                    "<strong>Every-seed view</strong>, for reference: the largest gap at which "
                    "every seed the configuration ran with ended <code>{solved}</code>, a "
                    "stricter rule than m of n, so below a frontier's gap held where a seed "
                    "failed or never ran (the search adds seeds only while a gap is "
                    "undecided); per-seed values follow the order of the seed list. A label "
                    "without a gap held is the learning-rate choice's probes at a rate it did "
                    "not choose.").format(none=tables.NONE, solved=names.SOLVED)),
        Table(list(HEADER), _rows(r.solved), tables.NONE, cls="wrap"),
        SOLVE_RATE, STEPS_TO_SOLVE,
    ]


SECTION = Section(id="solved", heading="Largest solved gap", toc="Largest solved gap",
                  figures=(SOLVE_RATE, STEPS_TO_SOLVE), blocks=blocks)
