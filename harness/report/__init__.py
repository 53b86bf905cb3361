"""Turn one sweep's MLflow experiment into a static report folder (CSV, markdown, PNG, HTML).

`build_report` is the whole public API; `harness.report.cli` wraps it for the shell.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from pathlib import Path

import jinja2
import pandas as pd

from harness import names
from harness.report import figures, grad_figures, gradients, tables
from harness.report.load import (
    ReportError,
    load_grad_profiles,
    load_metric_histories,
    load_sweep,
)

__all__ = ["ReportError", "build_report"]

RUNS_CSV = "runs.csv"
LARGEST_SOLVED_GAP_CSV = "largest_solved_gap.csv"
ACCURACY_CSV = "accuracy_by_gap.csv"
SUMMARY_MD = "summary.md"
ACCURACY_PNG = "accuracy_vs_gap.png"
GRAD_PROFILE_PNG = "grad_profile.png"
GRAD_PROFILE_CSV = "grad_profile_by_lag.csv"  # not grad_profile.csv: that is the run artifact
GRAD_HEATMAP_PNG = "grad_heatmap.png"
GRAD_HEATMAP_CSV = "grad_heatmap.csv"
GRAD_DECAY_PNG = "grad_decay_vs_gap.png"
GRAD_DECAY_CSV = "grad_decay_vs_gap.csv"
GRAD_NORM_PNG = "grad_norm_over_training.png"
GRAD_NORM_CSV = "grad_norm_over_training.csv"
CLIP_RATE_CSV = "clip_rate_by_threshold.csv"
SPECTRAL_PNG = "spectral_radius.png"
SPECTRAL_CSV = "spectral_radius.csv"
INDEX_HTML = "index.html"
_TEMPLATES = Path(__file__).parent / "templates"


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _render_html(context: dict[str, object]) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        # Run names, reasons and labels come from configs: never let them become markup.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template(INDEX_HTML).render(**context)


def _folder_name(experiment: str) -> str:
    """The experiment name as one safe path component: a '/' must not nest or escape out_root."""
    name = experiment.replace("/", "_").replace("\\", "_")
    return f"_{name}" if name in ("", ".", "..") else name


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class GradFigure:
    """One figure of the Gradients section, as the page and summary.md describe it."""

    png: str
    csvs: tuple[str, ...]
    title: str
    sentence: str  # what the figure shows, in one sentence
    note: str  # what it could not draw for lack of data; "" if nothing is missing
    uri: str = ""  # the PNG as a data: URI, once drawn


def _gradient_figures(heatmap: pd.DataFrame, decay: pd.DataFrame, norms: pd.DataFrame,
                      clip_rates: pd.DataFrame, spectral: pd.DataFrame) -> list[GradFigure]:
    """The four figures of the Gradients section, with notes on what their data lacks."""
    clip_note = "" if not clip_rates.empty else "no run clipped: the bottom row is empty"
    norm_note = f"No run logged a {names.GRAD_NORM_PRE_CLIP} history" if norms.empty else ""
    return [
        GradFigure(
            png=GRAD_HEATMAP_PNG, csvs=(GRAD_HEATMAP_CSV,),
            title="Gradient norm by training step and lag",
            sentence="log10 of the norm of the loss gradient with respect to the last "
            "layer's hidden state at each lag (rows) and training step (columns), mean over "
            "seeds at each configuration's largest gap; blank cells had no finite nonzero "
            "value (underflow).",
            note="No run logged a gradient profile" if heatmap.empty else "",
        ),
        GradFigure(
            png=GRAD_DECAY_PNG, csvs=(GRAD_DECAY_CSV,),
            title="Gradient decay rate and reach vs gap",
            sentence="Each run's final decay rate (slope of ln‖∂L/∂h_t‖ per time step of "
            "lag; negative means vanishing) and reach (how many steps back the gradient is "
            f"still ≥ {gradients.REACH_TEXT} of its peak) against the gap, mean over seeds "
            "with a 95% bootstrap CI.",
            note=(f"No run logged {names.GRAD_DECAY_RATE} or {names.GRAD_REACH}"
                  if decay.empty else ""),
        ),
        GradFigure(
            png=GRAD_NORM_PNG, csvs=(GRAD_NORM_CSV, CLIP_RATE_CSV),
            title="Gradient norm over training and clipping",
            sentence="Top: the global gradient norm before clipping (window mean) over "
            "training, one line per seed at each configuration's largest gap, with the "
            "norm-clipping threshold dashed; bottom: the final share of training steps where "
            "clipping fired against the clipping threshold, at the largest clipped gap.",
            note=_sentence_case("; ".join(n for n in (norm_note, clip_note) if n)),
        ),
        GradFigure(
            png=SPECTRAL_PNG, csvs=(SPECTRAL_CSV,),
            title="Spectral radius of W_hh over training",
            sentence="The spectral radius (largest |eigenvalue|) of each gate block of the "
            "last layer's recurrent matrix W_hh over training, mean over seeds at each "
            "configuration's largest gap; the dotted line marks radius 1.",
            note="No run logged a spectral radius" if spectral.empty else "",
        ),
    ]


def build_report(experiment: str, tracking_uri: str, out_root: Path = Path("reports")) -> Path:
    """Write the report of `experiment` to `out_root/<experiment>/`; return its index.html.

    Path separators in the experiment name become '_' in the folder name.

    Files: runs.csv, largest_solved_gap.csv, accuracy_by_gap.csv, summary.md,
    accuracy_vs_gap.png, grad_profile.png (+ grad_profile_by_lag.csv), and the Gradients
    section's grad_heatmap, grad_decay_vs_gap, grad_norm_over_training (+
    clip_rate_by_threshold.csv) and spectral_radius PNGs and CSVs, index.html. Raises
    `ReportError` (a ValueError) if the store does not exist, or the experiment is missing or
    has no runs.
    """
    sweep = load_sweep(experiment, tracking_uri)
    runs, finals = sweep.runs, sweep.finals
    profiles = load_grad_profiles(runs["run_id"].tolist(), tracking_uri)
    # Histories only of the runs the figures draw (see load_metric_histories for why).
    norm_plan = gradients.grad_norm_plan(runs, finals)
    spectral_plan = gradients.spectral_plan(runs, finals)
    plan = {rid: [*norm_plan.get(rid, []), *spectral_plan.get(rid, [])]
            for rid in sorted({*norm_plan, *spectral_plan})}
    histories = load_metric_histories(plan, tracking_uri)

    out = Path(out_root) / _folder_name(experiment)
    out.mkdir(parents=True, exist_ok=True)

    counts = tables.status_counts(runs)
    solved = tables.largest_solved_gap(runs)
    accuracy = tables.accuracy_by_gap(runs)
    tables.write_csv(runs, out / RUNS_CSV)
    tables.write_csv(solved, out / LARGEST_SOLVED_GAP_CSV)
    tables.write_csv(accuracy, out / ACCURACY_CSV)

    heatmap = gradients.heatmap_table(runs, profiles)
    decay_points = gradients.decay_points(runs, finals)
    decay = gradients.decay_table(decay_points)
    norms = gradients.grad_norm_table(runs, histories)
    clip_points = gradients.clip_points(runs)
    clip_rates = gradients.clip_rate_table(clip_points)
    spectral = gradients.spectral_table(runs, finals, histories)
    tables.write_csv(heatmap, out / GRAD_HEATMAP_CSV)
    tables.write_csv(decay, out / GRAD_DECAY_CSV)
    tables.write_csv(norms, out / GRAD_NORM_CSV)
    tables.write_csv(clip_rates, out / CLIP_RATE_CSV)
    tables.write_csv(spectral, out / SPECTRAL_CSV)
    grad_section = _gradient_figures(heatmap, decay, norms, clip_rates, spectral)

    summary = tables.summary_markdown(experiment, tracking_uri, counts, solved, accuracy)
    summary += "\n" + gradients.gradients_markdown(
        decay, [(f.png, f.sentence, f.note) for f in grad_section]
    )
    (out / SUMMARY_MD).write_text(summary, encoding="utf-8", newline="\n")

    colors = figures.label_colors(runs["label"])
    markers = figures.label_markers(runs["label"])
    figures.accuracy_vs_gap(runs, colors, markers, experiment, out / ACCURACY_PNG)
    pooled = figures.grad_profile(runs, profiles, colors, markers, experiment,
                                  out / GRAD_PROFILE_PNG)
    tables.write_csv(pooled, out / GRAD_PROFILE_CSV)
    grad_figures.grad_heatmap(heatmap, experiment, out / GRAD_HEATMAP_PNG)
    grad_figures.grad_decay_vs_gap(decay_points, colors, markers, experiment,
                                   out / GRAD_DECAY_PNG)
    grad_figures.grad_norm_over_training(norms, clip_points, colors, markers, experiment,
                                         out / GRAD_NORM_PNG)
    grad_figures.spectral_radius(spectral, runs, colors, markers, experiment, out / SPECTRAL_PNG)

    acc_header, acc_rows = tables.accuracy_display(accuracy)
    run_header, run_rows = tables.run_display(runs)
    html = _render_html(
        {
            "experiment": experiment,
            "tracking_uri": tracking_uri,
            "n_runs": len(runs),
            "n_profiled": int(profiles["run_id"].nunique()),
            "counts": tables.display_rows(counts),
            "status_key": names.STATUS,
            "reason_key": names.STATUS_REASON,
            "solved_status": names.SOLVED,
            "none_marker": tables.NONE,
            "solved_header": list(solved.columns),
            "solved_rows": tables.display_rows(solved),
            "accuracy_header": acc_header,
            "accuracy_rows": acc_rows,
            "run_header": run_header,
            "run_rows": run_rows,
            "accuracy_png": _data_uri(out / ACCURACY_PNG),
            "grad_profile_png": _data_uri(out / GRAD_PROFILE_PNG),
            "grad_figures": [replace(f, uri=_data_uri(out / f.png)) for f in grad_section],
            "decay_sentence": gradients.DECAY_SENTENCE,
            "decay_header": gradients.DECAY_HEADER,
            "decay_rows": gradients.decay_display(decay),
            "files": [RUNS_CSV, LARGEST_SOLVED_GAP_CSV, ACCURACY_CSV, SUMMARY_MD,
                      ACCURACY_PNG, GRAD_PROFILE_PNG, GRAD_PROFILE_CSV, GRAD_HEATMAP_PNG,
                      GRAD_HEATMAP_CSV, GRAD_DECAY_PNG, GRAD_DECAY_CSV, GRAD_NORM_PNG,
                      GRAD_NORM_CSV, CLIP_RATE_CSV, SPECTRAL_PNG, SPECTRAL_CSV],
        }
    )
    index = out / INDEX_HTML
    index.write_text(html, encoding="utf-8", newline="\n")
    return index
