"""Accuracy vs gap: final accuracy per configuration, faceted by activation and clipping,
normalized loss, and accuracy by gap within variable-gap runs."""

from __future__ import annotations

from harness import names
from harness.report import figures, gap_figures, tables
from harness.report.inputs import Inputs
from harness.report.registry import Block, Figure, Heading, Plot, Section, Table, not_drawn

ACCURACY_CSV = "accuracy_by_gap.csv"
ACCURACY_FACETS_CSV = "accuracy_by_activation_clip.csv"
NORMALIZED_LOSS_CSV = "normalized_loss_vs_gap.csv"
EVAL_BY_GAP_CSV = "accuracy_by_gap_variable.csv"
U = figures.UNCERTAINTY_TEXT

ACCURACY = Figure(
    id="accuracy_vs_gap", section="accuracy", title="Final accuracy vs gap",
    caption=f"Final eval accuracy against the gap, one panel per task: {U} ([0, 1]); the "
    "dashed line is chance accuracy.",
    csvs=(ACCURACY_CSV,),
    data=lambda r: Plot(args=(r.runs, r.accuracy, *r.style), csvs=((ACCURACY_CSV, r.accuracy),)),
    draw=figures.accuracy_vs_gap)

FACETS = Figure(
    id="accuracy_by_activation_clip", section="accuracy",
    title="Accuracy vs gap by activation and clipping",
    caption="Final eval accuracy against the gap, one row of panels per task and clip "
    "setting, one column per activation; lines are configurations in their model's colour; "
    f"{U} ([0, 1]); chance dashed.",
    csvs=(ACCURACY_FACETS_CSV,),
    data=lambda r: Plot(args=(r.runs, *r.style), returns=ACCURACY_FACETS_CSV),
    draw=gap_figures.accuracy_facets, weight=9)

NORMALIZED_LOSS = Figure(
    id="normalized_loss_vs_gap", section="accuracy", title="Normalized loss vs gap",
    caption="Final eval loss divided by the chance loss (the loss of the best memoryless "
    f"predictor; dashed at 1) against the gap, log scale; {U} (≥ 0; its lower edge floored "
    "for the log axis).",
    csvs=(NORMALIZED_LOSS_CSV,),
    data=lambda r: Plot(args=(r.runs, *r.style), returns=NORMALIZED_LOSS_CSV),
    draw=gap_figures.normalized_loss_vs_gap, weight=4)


def _by_gap(r: Inputs) -> Plot:
    if r.by_gap.empty:
        return not_drawn()  # no variable-gap runs: nothing to say
    return Plot(args=(r.by_gap, r.reads.by_gap_raw, r.runs, *r.style),
                csvs=((EVAL_BY_GAP_CSV, r.by_gap),))


EVAL_BY_GAP = Figure(
    id="accuracy_by_gap_variable", section="accuracy",
    title="Accuracy by gap within variable-gap runs",
    caption=f"From each run's {names.EVAL_BY_GAP_ARTIFACT}: accuracy at the final evaluation "
    f"for the sequences of each gap; {gap_figures.RUNS_UNCERTAINTY_TEXT} ([0, 1]).",
    csvs=(EVAL_BY_GAP_CSV,), data=_by_gap, draw=gap_figures.eval_by_gap)


def blocks(r: Inputs) -> list[Block]:
    header, rows = tables.accuracy_display(r.accuracy)
    return [ACCURACY, FACETS, NORMALIZED_LOSS, EVAL_BY_GAP,
            Heading("Final accuracy by gap"), Table(header, rows)]


SECTION = Section(id="accuracy", heading="Accuracy vs gap", toc="Accuracy vs gap",
                  figures=(ACCURACY, FACETS, NORMALIZED_LOSS, EVAL_BY_GAP), blocks=blocks)
