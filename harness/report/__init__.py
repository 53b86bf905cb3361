"""Turn one sweep's MLflow experiment into a static report folder (CSV, markdown, PNG, HTML).

`build_report` writes one experiment's report (`harness.report.compare.build_comparison` two
side by side); `harness.report.cli` wraps both for the shell.
"""

from __future__ import annotations

import base64
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import jinja2
import pandas as pd

from harness import names
from harness.report import (
    claims,
    figures,
    frontier_grads,
    gap_figures,
    grad_figures,
    gradients,
    overview,
    tables,
    variable_gap,
)
from harness.report import findings as findings_
from harness.report import frontier as frontier_
from harness.report import headline as headline_
from harness.report.load import (
    EXPERIMENT_ID,
    RUN_COLUMNS,
    RUN_ID,
    ReportError,
    Sweep,
    artifact_runs,
    load_drawn_profiles,
    load_eval_by_gap,
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
ACCURACY_FACETS_PNG = "accuracy_by_activation_clip.png"
ACCURACY_FACETS_CSV = "accuracy_by_activation_clip.csv"
NORMALIZED_LOSS_PNG = "normalized_loss_vs_gap.png"
NORMALIZED_LOSS_CSV = "normalized_loss_vs_gap.csv"
STEPS_TO_SOLVE_PNG = "steps_to_solve_vs_gap.png"
STEPS_TO_SOLVE_CSV = "steps_to_solve_vs_gap.csv"
SOLVE_RATE_PNG = "solve_rate_vs_gap.png"
SOLVE_RATE_CSV = "solve_rate_vs_gap.csv"
CLIP_HEATMAP_PNG = "clip_activation_heatmap.png"
CLIP_HEATMAP_CSV = "clip_activation_heatmap.csv"
EVAL_BY_GAP_PNG = "accuracy_by_gap_variable.png"
EVAL_BY_GAP_CSV = "accuracy_by_gap_variable.csv"
AXES_CSV = "swept_axes.csv"
FINDINGS_CSV = "findings.csv"
STATUS_CSV = "runs_by_status.csv"
FRONTIER_CSV = frontier_.FRONTIER_CSV
FRONTIER_PNG = frontier_.FRONTIER_PNG
FRONTIER_GRAD_PNG = frontier_grads.FRONTIER_GRAD_PNG
FRONTIER_GRAD_CSV = frontier_grads.FRONTIER_GRAD_CSV
FRONTIER_GRAD_CURVES_CSV = frontier_grads.FRONTIER_GRAD_CURVES_CSV
SCORECARD_CSV = claims.SCORECARD_CSV
VARIABLE_GAP_CSV = variable_gap.VARIABLE_GAP_CSV
INDEX_HTML = "index.html"
# The page's sections in order: (anchor, heading, table-of-contents entry). The scorecard is
# there only when the experiment has claims, the frontier section only when it has a frontier
# sweep; the others are numbered after them.
SECTIONS = (
    ("overview", "Overview", "Overview"),
    ("scorecard", "Scorecard of published claims", "Scorecard"),
    ("frontier", "Frontier", "Frontier"),
    ("findings", "Findings", "Findings"),
    ("accuracy", "Accuracy vs gap", "Accuracy vs gap"),
    ("solved", "Largest solved gap", "Largest solved gap"),
    ("gradients", "Gradients", "Gradients"),
    ("clipping", "Clipping × activation", "Clipping × activation"),
    ("runs", "All runs", "Runs"),
)
MAX_WORKERS = 4
_TEMPLATES = Path(__file__).parent / "templates"


def _sections(with_frontier: bool, with_scorecard: bool = False) -> list[tuple[str, str, str]]:
    """(anchor, "<n> <heading>", "<n> <toc entry>") of the page's sections, numbered."""
    left_out = {a for a, present in (("frontier", with_frontier),
                                     ("scorecard", with_scorecard)) if not present}
    kept = [s for s in SECTIONS if s[0] not in left_out]
    return [(anchor, f"{i} {heading}", f"{i} {toc}")
            for i, (anchor, heading, toc) in enumerate(kept, start=1)]


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _render_html(context: dict[str, object], template: str = INDEX_HTML) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        # Run names, reasons and labels come from configs: never let them become markup.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template(template).render(**context)


def _folder_name(experiment: str) -> str:
    """The experiment name as one safe path component: a '/' must not nest or escape out_root."""
    name = experiment.replace("/", "_").replace("\\", "_")
    return f"_{name}" if name in ("", ".", "..") else name


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report, as the page and summary.md describe it."""

    png: str
    csvs: tuple[str, ...]
    title: str
    sentence: str  # what the figure shows, in one sentence
    note: str  # what it could not draw for lack of data; "" if nothing is missing
    uri: str = ""  # the PNG as a data: URI, once drawn


def _gradient_figures(heatmap: pd.DataFrame, decay: pd.DataFrame, norms: pd.DataFrame,
                      clip_rates: pd.DataFrame, spectral: pd.DataFrame) -> list[ReportFigure]:
    """The four figures of the Gradients section, with notes on what their data lacks."""
    clip_note = "" if not clip_rates.empty else "no run clipped: the bottom row is empty"
    norm_note = f"No run logged a {names.GRAD_NORM_PRE_CLIP} history" if norms.empty else ""
    return [
        ReportFigure(
            png=GRAD_HEATMAP_PNG, csvs=(GRAD_HEATMAP_CSV,),
            title="Gradient norm by training step and lag",
            sentence="log10 of the norm of the loss gradient with respect to the last "
            "layer's hidden state at each lag (rows) and training step (columns), mean over "
            "seeds at each configuration's largest gap. Each panel has its own colour range, "
            "the 2nd to 98th percentile of its cells (beyond it: the end colours), and its "
            "own colour bar, so compare colours within a panel, numbers across panels; "
            "hatched grey cells had no finite nonzero value (underflow to 0).",
            note="No run logged a gradient profile" if heatmap.empty else "",
        ),
        ReportFigure(
            png=GRAD_DECAY_PNG, csvs=(GRAD_DECAY_CSV,),
            title="Gradient decay rate and reach vs gap",
            sentence="Each run's final decay rate (slope of ln‖∂L/∂h_t‖ per time step of "
            "lag; negative means vanishing) and reach (how many steps back the gradient is "
            f"still ≥ {gradients.REACH_TEXT} of its peak) against the gap; "
            f"{figures.UNCERTAINTY_TEXT} (reach ≥ 0).",
            note=(f"No run logged {names.GRAD_DECAY_RATE} or {names.GRAD_REACH}"
                  if decay.empty else ""),
        ),
        ReportFigure(
            png=GRAD_NORM_PNG, csvs=(GRAD_NORM_CSV, CLIP_RATE_CSV),
            title="Gradient norm over training and clipping",
            sentence="Top: the global gradient norm before clipping (window mean) over "
            "training, one line per seed at each configuration's largest gap, with the "
            "norm-clipping threshold dashed; bottom: the final share of training steps where "
            "clipping fired against the clipping threshold, at the largest clipped gap "
            "(error bars: Student-t 95% CI clipped to [0, 1]).",
            note=_sentence_case("; ".join(n for n in (norm_note, clip_note) if n)),
        ),
        ReportFigure(
            png=SPECTRAL_PNG, csvs=(SPECTRAL_CSV,),
            title="Spectral radius of W_hh over training",
            sentence="The spectral radius (largest |eigenvalue|) of each gate block of the "
            "last layer's recurrent matrix W_hh over training, mean over seeds at each "
            "configuration's largest gap; the dotted line marks radius 1.",
            note="No run logged a spectral radius" if spectral.empty else "",
        ),
    ]


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI when the store is a tracking server, else ""."""
    if not tracking_uri.startswith(("http://", "https://")):
        return ""
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _result_figures(runs: pd.DataFrame, by_gap: pd.DataFrame, clip_drawn: bool,
                    n_settings: int) -> dict[str, ReportFigure]:
    """The figures of the accuracy, solved-gap and clipping sections."""
    settings_note = ("" if clip_drawn else f"Not drawn: the experiment has {n_settings} clip "
                     "setting(s); the heatmaps need at least two")
    entries = [
        ReportFigure(
            png=ACCURACY_FACETS_PNG, csvs=(ACCURACY_FACETS_CSV,),
            title="Accuracy vs gap by activation and clipping",
            sentence="Final eval accuracy against the gap, one row of panels per task and "
            "clip setting, one column per activation; lines are configurations in their "
            f"model's colour; {figures.UNCERTAINTY_TEXT} ([0, 1]); chance dashed.",
            note=""),
        ReportFigure(
            png=NORMALIZED_LOSS_PNG, csvs=(NORMALIZED_LOSS_CSV,),
            title="Normalized loss vs gap",
            sentence="Final eval loss divided by the chance loss (the loss of the best "
            "memoryless predictor; dashed at 1) against the gap, log scale; "
            f"{figures.UNCERTAINTY_TEXT} (≥ 0; its lower edge floored for the log axis).",
            note=""),
        ReportFigure(
            png=STEPS_TO_SOLVE_PNG, csvs=(STEPS_TO_SOLVE_CSV,),
            title="Steps to solve vs gap",
            sentence="Training steps until eval accuracy first reached the solve threshold, "
            "over the solved runs only (the CSV gives how many of how many runs solved each "
            "point, and the solve rate with its Wilson 95% interval); "
            f"{figures.UNCERTAINTY_TEXT} (≥ 0).",
            note="" if (runs[names.STATUS] == names.SOLVED).any() else "No run solved"),
        ReportFigure(
            png=SOLVE_RATE_PNG, csvs=(SOLVE_RATE_CSV,),
            title="Solve rate vs gap",
            sentence=f"The share of runs solved at each gap, one line per configuration "
            f"(configurations at one gap drawn side by side); {tables.WILSON_TEXT}.",
            note=""),
        ReportFigure(
            png=CLIP_HEATMAP_PNG, csvs=(CLIP_HEATMAP_CSV,),
            title="Clipping × gap, per model",
            sentence="Mean final eval accuracy over seeds for every clip setting (rows) and "
            "gap (columns), one panel per task and model variant.",
            note=settings_note),
    ]
    if not by_gap.empty:
        entries.append(ReportFigure(
            png=EVAL_BY_GAP_PNG, csvs=(EVAL_BY_GAP_CSV,),
            title="Accuracy by gap within variable-gap runs",
            sentence=f"From each run's {names.EVAL_BY_GAP_ARTIFACT}: accuracy at the final "
            "evaluation for the sequences of each gap, mean over runs with a Student-t 95% "
            "CI band clipped to [0, 1].", note=""))
    return {e.png: e for e in entries}


def _histories(sweep: Sweep, tracking_uri: str) -> pd.DataFrame:
    """Histories only of the runs the gradient figures draw (each configuration's top gap)."""
    norm_plan = gradients.grad_norm_plan(sweep.runs, sweep.finals)
    spectral_plan = gradients.spectral_plan(sweep.runs, sweep.finals)
    plan = {rid: [*norm_plan.get(rid, []), *spectral_plan.get(rid, [])]
            for rid in sorted({*norm_plan, *spectral_plan})}
    return load_metric_histories(plan, tracking_uri)


def _frontier_md(fronts: frontier_.Frontiers,
                 section: frontier_grads.FrontierGradients | None,
                 vgaps: variable_gap.VariableGaps, drawn: bool) -> str:
    """The frontier section of summary.md: the frontier sweeps' answers with their gradients,
    then how far variable-gap runs held; "" with neither."""
    text = frontier_.markdown(fronts)
    if section is not None:
        text += "\n" + frontier_grads.markdown(section, drawn)
    if not vgaps.empty:
        text += ("" if text else "## Frontier\n\n") + variable_gap.markdown(vgaps)
    return text


def _frontier_grads_context(section: frontier_grads.FrontierGradients | None,
                            out: Path) -> dict[str, object] | None:
    """What the page shows of the frontier's gradients (None without a frontier)."""
    if section is None:
        return None
    png = out / FRONTIER_GRAD_PNG
    return {
        "title": frontier_grads.TITLE,
        "notes": list(section.notes),
        "figure": ReportFigure(
            png=FRONTIER_GRAD_PNG, csvs=(FRONTIER_GRAD_CURVES_CSV, FRONTIER_GRAD_CSV),
            title=frontier_grads.FIGURE_TITLE, sentence=frontier_grads.SENTENCE, note="",
            uri=_data_uri(png)) if png.is_file() else None,
        "header": list(frontier_grads.DISPLAY_HEADER),
        "rows": (frontier_grads.display_rows(section.table) if frontier_grads.profiled(section)
                 else []),
        "clipping": list(section.clipping),
    }


def _workers() -> int:
    """Processes to draw figures with: the cores this process may use, at most MAX_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def _draw(jobs: Sequence[tuple[Callable[..., object], tuple[object, ...]]],
          workers: int) -> list[object]:
    """Run the figure jobs, in parallel processes when there are cores to spare.

    Drawing (matplotlib layout and PNG encoding) is most of a large report's time and is
    single-threaded, so figures are spread over processes. Forking is cheapest and safe while
    this process runs a single thread; otherwise workers are spawned (they import the
    report's modules first). Each figure's bytes do not depend on the process that drew it.
    """
    if workers <= 1 or len(jobs) <= 1:
        return [func(*args) for func, args in jobs]
    method = "fork" if (threading.active_count() == 1
                        and "fork" in multiprocessing.get_all_start_methods()) else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(func, *args) for func, args in jobs]
        return [future.result() for future in futures]


class Stopwatch:
    """Seconds spent per phase of a build: `with watch("reads"): ...` adds to "reads"."""

    PHASES = ("reads", "frames", "drawing", "writing")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(self.PHASES, 0.0)
        self._start = time.perf_counter()

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def split(self) -> dict[str, float]:
        """Each phase's seconds; "frames" is the rest of the build (computing the tables and
        the figures' data), "total" the whole."""
        total = time.perf_counter() - self._start
        out = dict(self.seconds)
        out["frames"] = total - sum(v for k, v in out.items() if k != "frames")
        return {**out, "total": total}


def build_report(experiment: str, tracking_uri: str, out_root: Path = Path("reports"),
                 workers: int | None = None, claims_path: Path | None = None,
                 pool: Sequence[str] = (), timings: dict[str, float] | None = None) -> Path:
    """Write the report of `experiment` to `out_root/<experiment>/`; return its index.html.

    Path separators in the experiment name become '_' in the folder name. The folder holds
    index.html (self-contained), summary.md, every figure as PNG with its data as CSV,
    runs.csv, findings.csv and the tables. Figures are drawn by `workers` processes (default:
    the usable cores, at most MAX_WORKERS; 1 draws in this process). The scorecard checks the
    claims of `claims_path`, else of the paper preset's claims file that names the experiment
    (`claims.claims_for`); without either there is none. `pool` names swept params to pool
    over on purpose (`load.check_pool`): they stay out of the labels, and the page and
    summary.md open by saying so. Raises `ReportError` (a ValueError) if the store does not
    exist, the experiment is missing or has no runs, a claims file is malformed or `pool`
    names a param that cannot be pooled. `timings`, when given, receives the seconds spent
    reading the store, computing frames, drawing and writing (`Stopwatch.split`).
    """
    watch = Stopwatch()
    workers = _workers() if workers is None else workers
    with watch("reads"):
        sweep = load_sweep(experiment, tracking_uri, pool)
        runs, finals = sweep.runs, sweep.finals
        fronts = frontier_.load_frontiers(sweep, tracking_uri)
        profiles = load_drawn_profiles(runs, tracking_uri,
                                       frontier_grads.level_runs(fronts)[RUN_ID])
        n_profiled = len(artifact_runs(runs, names.GRAD_PROFILE_ARTIFACT, tracking_uri))
        by_gap_raw = load_eval_by_gap(runs, tracking_uri)
        histories = _histories(sweep, tracking_uri)
        card = claims.scorecard(experiment, sweep, tracking_uri, claims_path)

    out = Path(out_root) / _folder_name(experiment)
    out.mkdir(parents=True, exist_ok=True)
    # Files drawn only when the data has them: a rebuild must not keep one from before.
    for optional in (SCORECARD_CSV, VARIABLE_GAP_CSV, CLIP_HEATMAP_PNG, CLIP_HEATMAP_CSV,
                     EVAL_BY_GAP_PNG, EVAL_BY_GAP_CSV, FRONTIER_PNG, FRONTIER_CSV,
                     frontier_.FORMER_CSV, FRONTIER_GRAD_PNG, FRONTIER_GRAD_CSV,
                     FRONTIER_GRAD_CURVES_CSV):
        (out / optional).unlink(missing_ok=True)
    written: list[str] = []

    def csv(frame: pd.DataFrame, name: str) -> None:
        with watch("writing"):
            tables.write_csv(frame, out / name)
        written.append(name)

    view = overview.overview(sweep, tracking_uri)
    counts = tables.status_counts(runs)
    found = findings_.findings(runs)
    vgaps = variable_gap.variable_gap_frontier(runs, sweep.params, by_gap_raw)
    lead = headline_.headline(
        runs, None if fronts.empty else fronts.table,
        {str(task): variable_gap.sentence(str(task), vgaps)
         for task in vgaps.table[names.TASK_LABEL].unique()})
    solved = tables.largest_solved_gap(runs)
    accuracy = tables.accuracy_by_gap(runs)
    csv(runs[list(RUN_COLUMNS)], RUNS_CSV)
    csv(counts, STATUS_CSV)
    csv(view.axes, AXES_CSV)
    csv(findings_.frame(found), FINDINGS_CSV)
    csv(solved, LARGEST_SOLVED_GAP_CSV)
    csv(accuracy, ACCURACY_CSV)
    if card is not None:
        csv(card.table, SCORECARD_CSV)
    if not vgaps.empty:
        csv(vgaps.table, VARIABLE_GAP_CSV)
    front_grads = None
    if not fronts.empty:
        csv(fronts.table, FRONTIER_CSV)
        front_grads = frontier_grads.frontier_gradients(fronts, runs, finals, profiles)
        csv(front_grads.table, FRONTIER_GRAD_CSV)

    heatmap = gradients.heatmap_table(runs, profiles)
    decay_points = gradients.decay_points(runs, finals)
    decay = gradients.decay_table(decay_points)
    norms = gradients.grad_norm_table(runs, histories)
    clip_points = gradients.clip_points(runs)
    clip_rates = gradients.clip_rate_table(clip_points)
    spectral = gradients.spectral_table(runs, finals, histories)
    for frame, name in ((heatmap, GRAD_HEATMAP_CSV), (decay, GRAD_DECAY_CSV),
                        (norms, GRAD_NORM_CSV), (clip_rates, CLIP_RATE_CSV),
                        (spectral, SPECTRAL_CSV)):
        csv(frame, name)
    grad_section = _gradient_figures(heatmap, decay, norms, clip_rates, spectral)
    by_gap = gap_figures.eval_by_gap_table(runs, by_gap_raw)
    n_settings = len(gap_figures.clip_settings(runs))
    clip_drawn = n_settings > 1
    results = _result_figures(runs, by_gap, clip_drawn, n_settings)

    colors = figures.label_colors(runs)
    markers = figures.label_markers(runs)
    style = (colors, markers, experiment)
    # Every figure is drawn on its own; the ones that return a frame return what they drew.
    jobs: list[tuple[str | None, Callable[..., object], tuple[object, ...]]] = [
        (None, grad_figures.grad_norm_over_training,
         (norms, clip_points, *style, out / GRAD_NORM_PNG)),
        (ACCURACY_FACETS_CSV, gap_figures.accuracy_facets,
         (runs, *style, out / ACCURACY_FACETS_PNG)),
        (None, grad_figures.spectral_radius, (spectral, runs, *style, out / SPECTRAL_PNG)),
        (None, grad_figures.grad_heatmap, (heatmap, experiment, out / GRAD_HEATMAP_PNG)),
        (GRAD_PROFILE_CSV, figures.grad_profile,
         (runs, profiles, *style, out / GRAD_PROFILE_PNG)),
        (None, grad_figures.grad_decay_vs_gap, (decay_points, *style, out / GRAD_DECAY_PNG)),
        (NORMALIZED_LOSS_CSV, gap_figures.normalized_loss_vs_gap,
         (runs, *style, out / NORMALIZED_LOSS_PNG)),
        (STEPS_TO_SOLVE_CSV, gap_figures.steps_to_solve_vs_gap,
         (runs, *style, out / STEPS_TO_SOLVE_PNG)),
        (SOLVE_RATE_CSV, gap_figures.solve_rate_vs_gap, (runs, *style, out / SOLVE_RATE_PNG)),
        (None, figures.accuracy_vs_gap, (runs, accuracy, *style, out / ACCURACY_PNG)),
    ]
    if clip_drawn:
        jobs.append((CLIP_HEATMAP_CSV, gap_figures.clip_heatmaps,
                     (runs, experiment, out / CLIP_HEATMAP_PNG)))
    if not fronts.empty:
        jobs.append((None, frontier_.frontier_figure,
                     (fronts.table, fronts.levels, colors, experiment, out / FRONTIER_PNG)))
    if front_grads is not None and not front_grads.curves.empty:
        csv(front_grads.curves, FRONTIER_GRAD_CURVES_CSV)
        jobs.append((None, frontier_grads.frontier_gradient_figure,
                     (front_grads.curves, front_grads.table, *style, out / FRONTIER_GRAD_PNG)))
    if not by_gap.empty:
        csv(by_gap, EVAL_BY_GAP_CSV)
        jobs.append((None, gap_figures.eval_by_gap,
                     (by_gap, runs, *style, out / EVAL_BY_GAP_PNG)))
    with watch("drawing"):
        drawn_frames = _draw([(f, a) for _, f, a in jobs], workers)
    for (name, _, _), frame in zip(jobs, drawn_frames, strict=True):
        if name is not None:
            assert isinstance(frame, pd.DataFrame)
            csv(frame, name)

    summary = tables.summary_markdown(experiment, tracking_uri, counts, solved, accuracy,
                                      overview.markdown(view, counts) + claims.markdown(card),
                                      findings_.markdown(found), headline_.markdown(lead),
                                      _frontier_md(fronts, front_grads, vgaps,
                                                   (out / FRONTIER_GRAD_PNG).is_file()),
                                      overview.pool_banner(view))
    summary += "\n" + gradients.gradients_markdown(
        decay, [(f.png, f.sentence, f.note) for f in grad_section]
    )
    with watch("writing"):
        (out / SUMMARY_MD).write_text(summary, encoding="utf-8", newline="\n")
    written.append(SUMMARY_MD)

    def drawn(entry: ReportFigure) -> ReportFigure:
        path = out / entry.png
        return replace(entry, uri=_data_uri(path)) if path.is_file() else entry

    acc_header, acc_rows = tables.accuracy_display(accuracy)
    run_header, run_rows = tables.run_display(runs)
    links = [run_link(tracking_uri, str(e), str(r))
             for e, r in zip(runs[EXPERIMENT_ID], runs[RUN_ID], strict=True)]
    pngs = [e.png for e in [*results.values(), *grad_section] if (out / e.png).is_file()]
    pngs += [ACCURACY_PNG, GRAD_PROFILE_PNG]
    pngs += [png for png in (FRONTIER_PNG, FRONTIER_GRAD_PNG) if (out / png).is_file()]
    with watch("writing"):  # the page: PNGs as data URIs, rendered
        html = _render_html(
            {
                "experiment": experiment,
                "tracking_uri": tracking_uri,
                "n_runs": len(runs),
                "n_profiled": n_profiled,
                "counts": tables.display_rows(counts),
                "overview": view,
                "axes_rows": tables.display_rows(view.axes, [overview.AXIS, overview.VALUES]),
                "compute_text": overview.compute_text(view).replace("`", ""),
                "pooled_text": overview.pooled_text(view).replace("`", ""),
                "pool_banner": overview.pool_banner(view).replace("`", ""),
                "findings": found,
                "sections": _sections(not fronts.empty or not vgaps.empty, card is not None),
                "heading": {a: title for a, title, _ in _sections(
                    not fronts.empty or not vgaps.empty, card is not None)},
                "variable_gaps": None if vgaps.empty else {
                    "meaning": variable_gap.MEANING.replace("*", ""),
                    "sentences": [variable_gap.sentence(str(task), vgaps) for task in
                                  sorted(vgaps.table[names.TASK_LABEL].astype(str).unique())],
                    "header": list(variable_gap.DISPLAY_HEADER),
                    "rows": variable_gap.display_rows(vgaps),
                    "note": variable_gap.note(vgaps),
                },
                "scorecard": None if card is None else {
                    "summary": claims.summary_text(card),
                    "source": claims.source_text(card).replace("`", ""),
                    "rule": claims.RULE_TEXT,
                    "header": list(claims.DISPLAY_HEADER),
                    "rows": claims.display_rows(card),
                    "verdicts": list(card.table["verdict"]),
                },
                "frontier": None if fronts.empty else {
                    "source": frontier_.source_text(fronts),
                    "meaning": frontier_.MEANING.replace("*", ""),
                    "header": list(frontier_.DISPLAY_HEADER),
                    "rows": frontier_.display_rows(fronts),
                    "figure": ReportFigure(
                        png=FRONTIER_PNG, csvs=(FRONTIER_CSV,), title=frontier_.FIGURE_TITLE,
                        sentence=f"{frontier_.FIGURE_SENTENCE} {frontier_.rule_text(fronts)}",
                        note="", uri=_data_uri(out / FRONTIER_PNG)),
                    "gradients": _frontier_grads_context(front_grads, out),
                },
                "headline": lead,
                "status_key": names.STATUS,
                "reason_key": names.STATUS_REASON,
                "solved_status": names.SOLVED,
                "none_marker": tables.NONE,
                "solved_header": list(solved.columns),
                "solved_rows": tables.display_rows(solved),
                "accuracy_header": acc_header,
                "accuracy_rows": acc_rows,
                "run_header": run_header,
                "run_rows": list(zip(run_rows, links, strict=True)),
                "has_links": any(links),
                "accuracy_png": _data_uri(out / ACCURACY_PNG),
                "grad_profile_png": _data_uri(out / GRAD_PROFILE_PNG),
                "results": {k: drawn(v) for k, v in results.items()},
                "eval_by_gap_png": EVAL_BY_GAP_PNG,
                "grad_figures": [drawn(f) for f in grad_section],
                "decay_sentence": gradients.DECAY_SENTENCE,
                "uncertainty_text": figures.UNCERTAINTY_TEXT,
                "decay_header": gradients.DECAY_HEADER,
                "decay_rows": gradients.decay_display(decay),
                "files": sorted([*written, *pngs]),
            }
        )
        index = out / INDEX_HTML
        index.write_text(html, encoding="utf-8", newline="\n")
    if timings is not None:
        timings.update(watch.split())
    return index
