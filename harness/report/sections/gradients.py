"""Gradients: at each configuration's largest gap, on the last layer: the profile by lag,
its heatmap over training, decay rate and reach, gradient norms and clipping, spectral radius.
"""

from __future__ import annotations

from harness import names
from harness.report import figures, grad_figures, gradients
from harness.report.inputs import Inputs
from harness.report.registry import Block, Figure, Heading, Plot, Section, Table, Text

GRAD_PROFILE_CSV = "grad_profile_by_lag.csv"  # not grad_profile.csv: that is the run artifact
GRAD_HEATMAP_CSV = "grad_heatmap.csv"
GRAD_DECAY_CSV = "grad_decay_vs_gap.csv"
GRAD_NORM_CSV = "grad_norm_over_training.csv"
CLIP_RATE_CSV = "clip_rate_by_threshold.csv"
SPECTRAL_CSV = "spectral_radius.csv"


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


PROFILE = Figure(
    id="grad_profile", section="gradients", title="Gradient norm vs lag",
    caption="Norm of the loss gradient with respect to the last layer's hidden state at each "
    "time step, against its distance from the scored position, at initialisation (dashed), "
    "at the profiled step nearest half the run (dotted) and at each run's last profiled step "
    "(solid); mean over seeds at the largest gap of each panel. Zero values (underflow) are "
    "not shown on the log scale.",
    csvs=(GRAD_PROFILE_CSV,),
    data=lambda r: Plot(args=(r.runs, r.profiles, *r.style), returns=GRAD_PROFILE_CSV),
    draw=figures.grad_profile, weight=6)

HEATMAP = Figure(
    id="grad_heatmap", section="gradients", title="Gradient norm by training step and lag",
    caption="log10 of the norm of the loss gradient with respect to the last layer's hidden "
    "state at each lag (rows) and training step (columns), mean over seeds at each "
    "configuration's largest gap. Each panel has its own colour range, the 2nd to 98th "
    "percentile of its cells (beyond it: the end colours), and its own colour bar, so compare "
    "colours within a panel, numbers across panels; hatched grey cells had no finite nonzero "
    "value (underflow to 0).",
    csvs=(GRAD_HEATMAP_CSV,),
    data=lambda r: Plot(args=(r.heatmap, r.experiment), csvs=((GRAD_HEATMAP_CSV, r.heatmap),),
                        note="No run logged a gradient profile" if r.heatmap.empty else ""),
    draw=grad_figures.grad_heatmap, weight=7)

DECAY = Figure(
    id="grad_decay_vs_gap", section="gradients", title="Gradient decay rate and reach vs gap",
    caption="Each run's final decay rate (slope of ln‖∂L/∂h_t‖ per time step of lag; "
    "negative means vanishing) and reach (how many steps back the gradient is still ≥ "
    f"{gradients.REACH_TEXT} of its peak) against the gap; {figures.UNCERTAINTY_TEXT} "
    "(reach ≥ 0).",
    csvs=(GRAD_DECAY_CSV,),
    data=lambda r: Plot(args=(r.decay_points, *r.style), csvs=((GRAD_DECAY_CSV, r.decay),),
                        note=(f"No run logged {names.GRAD_DECAY_RATE} or {names.GRAD_REACH}"
                              if r.decay.empty else "")),
    draw=grad_figures.grad_decay_vs_gap, weight=5)


def _norm_data(r: Inputs) -> Plot:
    clip_note = "" if not r.clip_rates.empty else "no run clipped: the bottom row is empty"
    norm_note = f"No run logged a {names.GRAD_NORM_PRE_CLIP} history" if r.norms.empty else ""
    return Plot(args=(r.norms, r.clip_points, *r.style),
                csvs=((GRAD_NORM_CSV, r.norms), (CLIP_RATE_CSV, r.clip_rates)),
                note=_sentence_case("; ".join(n for n in (norm_note, clip_note) if n)))


NORMS = Figure(
    id="grad_norm_over_training", section="gradients",
    title="Gradient norm over training and clipping",
    caption="Top: the global gradient norm before clipping (window mean) over training, one "
    "line per seed at each configuration's largest gap, with the norm-clipping threshold "
    "dashed; bottom: the final share of training steps where clipping fired against the "
    "clipping threshold, at the largest clipped gap (with ≤5 runs at a threshold every run "
    "is a dot and no error bar is drawn; with more, error bars: Student-t 95% CI clipped to "
    "[0, 1]).",
    csvs=(GRAD_NORM_CSV, CLIP_RATE_CSV), data=_norm_data,
    draw=grad_figures.grad_norm_over_training, weight=10)

SPECTRAL = Figure(
    id="spectral_radius", section="gradients", title="Spectral radius of W_hh over training",
    caption="The spectral radius (largest |eigenvalue|) of each gate block of the last "
    "layer's recurrent matrix W_hh over training, mean over seeds at each configuration's "
    "largest gap; the dotted line marks radius 1; a band of ± one std (floored at 0) only "
    "where more than 5 seeds are pooled.",
    csvs=(SPECTRAL_CSV,),
    data=lambda r: Plot(args=(r.spectral, r.runs, *r.style), csvs=((SPECTRAL_CSV, r.spectral),),
                        note="No run logged a spectral radius" if r.spectral.empty else ""),
    draw=grad_figures.spectral_radius, weight=8)

FIGURES = (PROFILE, HEATMAP, DECAY, NORMS, SPECTRAL)


def blocks(r: Inputs) -> list[Block]:
    rows = gradients.decay_display(r.decay)
    return [
        *FIGURES,
        Heading("Final gradient decay by gap"),
        Text(gradients.DECAY_SENTENCE),
        Table(gradients.DECAY_HEADER, rows) if rows else Text(
            "No run in this experiment logged a final decay rate, half-life or reach.", "none"),
    ]


SECTION = Section(id="gradients", heading="Gradients", toc="Gradients", figures=FIGURES,
                  blocks=blocks)
