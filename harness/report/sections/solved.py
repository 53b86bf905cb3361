"""Largest solved gap: the table, solve rates with their Wilson interval, steps to solve."""

from __future__ import annotations

from markupsafe import Markup

from harness import names
from harness.report import figures, gap_figures, tables
from harness.report.inputs import Inputs
from harness.report.registry import Block, Figure, Plot, Section, Table, Text

STEPS_TO_SOLVE_CSV = "steps_to_solve_vs_gap.csv"
SOLVE_RATE_CSV = "solve_rate_vs_gap.csv"

SOLVE_RATE = Figure(
    id="solve_rate_vs_gap", section="solved", title="Solve rate vs gap",
    caption="The share of runs solved at each gap, one line per configuration "
    f"(configurations at one gap drawn side by side); {tables.WILSON_TEXT}.",
    csvs=(SOLVE_RATE_CSV,),
    data=lambda r: Plot(args=(r.runs, *r.style), returns=SOLVE_RATE_CSV),
    draw=gap_figures.solve_rate_vs_gap, weight=2)

STEPS_TO_SOLVE = Figure(
    id="steps_to_solve_vs_gap", section="solved", title="Steps to solve vs gap",
    caption="Training steps until eval accuracy first reached the solve threshold, over the "
    "solved runs only (the CSV gives how many of how many runs solved each point, and the "
    f"solve rate with its Wilson 95% interval); {figures.UNCERTAINTY_TEXT} (≥ 0).",
    csvs=(STEPS_TO_SOLVE_CSV,),
    data=lambda r: Plot(args=(r.runs, *r.style), returns=STEPS_TO_SOLVE_CSV,
                        note="" if (r.runs[names.STATUS] == names.SOLVED).any()
                        else "No run solved"),
    draw=gap_figures.steps_to_solve_vs_gap, weight=3)


def blocks(r: Inputs) -> list[Block]:
    return [
        Text(Markup("The largest gap at which every seed of a configuration ended "
                    '<code>{}</code>; <span class="none">{}</span> if there is no such gap. '
                    "Per-seed values follow the order of the seed list.").format(
                        names.SOLVED, tables.NONE)),
        Table(list(r.solved.columns), tables.display_rows(r.solved), tables.NONE),
        SOLVE_RATE, STEPS_TO_SOLVE,
    ]


SECTION = Section(id="solved", heading="Largest solved gap", toc="Largest solved gap",
                  figures=(SOLVE_RATE, STEPS_TO_SOLVE), blocks=blocks)
