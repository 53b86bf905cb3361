"""Build one experiment's report: read the store once, write the tables' CSVs, draw every
registered figure (in parallel), and render the registry's sections as the HTML page and as
summary.md (`harness.report.page`).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from harness.report import (
    claims,
    clip_effect,
    headline,
    inputs,
    overview,
    page,
    sections,
    tables,
    variable_gap,
)
from harness.report import findings as findings_
from harness.report import frontier as frontier_
from harness.report.inputs import Inputs
from harness.report.load import RUN_COLUMNS
from harness.report.registry import Figure, Plot, Section, Shown, figure_ids
from harness.report.ui import ui_command
from harness.tracking.links import experiment_url

LARGEST_SOLVED_GAP_CSV = "largest_solved_gap.csv"
SUMMARY_MD = "summary.md"
AXES_CSV = "swept_axes.csv"
FINDINGS_CSV = "findings.csv"
STATUS_CSV = "runs_by_status.csv"
INDEX_HTML = "index.html"
SCORECARD_CSV = claims.SCORECARD_CSV
MAX_WORKERS = 4


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


def _registered() -> list[Figure]:
    """Every figure of the sections registered now (`sections.SECTIONS`), in page order."""
    figure_ids(sections.SECTIONS)  # none registered twice or in another section
    return [fig for section in sections.SECTIONS for fig in section.figures]


def _stale_files(figures: Sequence[Figure]) -> list[str]:
    """Every file a build may write beside the tables always written: a rebuild removes them
    first, so one written from older data (or by an older version) cannot stay behind."""
    files = [claims.SCORECARD_CSV, variable_gap.VARIABLE_GAP_CSV, frontier_.FORMER_CSV]
    for fig in figures:
        files += [fig.png, *fig.csvs]
    return files


def _shown(fig: Figure, plot: Plot, r: Inputs, out: Path) -> Shown | None:
    """The figure as the page shows it; None when it is left off without a word."""
    if not plot.drawn and not plot.note:
        return None
    png = out / fig.png
    return Shown(id=fig.id, png=fig.png, title=fig.title, sentence=fig.caption_for(r),
                 csvs=fig.csvs, note=plot.note,
                 uri=page.data_uri(png) if plot.drawn and png.is_file() else "")


def _page_sections(present: Sequence[Section], r: Inputs,
                   figures: dict[str, Shown | None]) -> list[dict[str, object]]:
    """The present sections, numbered, each with its blocks (figures as drawn)."""
    shown = []
    for number, section in enumerate(present, start=1):
        blocks = []
        for b in section.blocks(r):
            if isinstance(b, Figure):
                drawn = figures[b.id]
                if drawn is None:
                    continue
                blocks.append(drawn)
            else:
                blocks.append(b)
        shown.append({"id": section.id, "title": f"{number} {section.heading}",
                      "heading": section.heading, "toc": f"{number} {section.toc}",
                      "blocks": blocks})
    return shown


def build_report(experiment: str, tracking_uri: str, out_root: Path = Path("reports"),
                 workers: int | None = None, claims_path: Path | None = None,
                 pool: Sequence[str] = (), timings: dict[str, float] | None = None) -> Path:
    """Write the report of `experiment` to `out_root/<experiment>/`; return its index.html.

    Path separators in the experiment name become '_' in the folder name. The folder holds
    index.html (self-contained), summary.md, every figure as PNG with its data as CSV, runs.csv,
    findings.csv and the tables. The page's sections and their figures are those of
    `harness.report.sections` (`SECTIONS`, read at each build), in that order; each figure is
    computed from the report's `inputs.Inputs` and drawn by `workers` processes (default: the
    usable cores, at most MAX_WORKERS; 1 draws in this process). The scorecard checks the claims
    of `claims_path`, else of the paper preset's claims file that names the experiment
    (`claims.claims_for`); without either there is none. `pool` names swept params to pool over
    on purpose (`load.check_pool`): they stay out of the labels, and the page and summary.md
    open by saying so. Raises `ReportError` (a ValueError) if the store does not exist, the
    experiment is missing or has no runs, a claims file is malformed or `pool` names a param
    that cannot be pooled. `timings`, when given, receives the seconds spent reading the store,
    computing frames, drawing and writing (`Stopwatch.split`).
    """
    watch = Stopwatch()
    workers = _workers() if workers is None else workers
    with watch("reads"):
        reads = inputs.read(experiment, tracking_uri, pool, claims_path)
    r = Inputs(experiment, tracking_uri, reads)
    runs = r.runs

    out = Path(out_root) / page.experiment_folder(experiment)
    out.mkdir(parents=True, exist_ok=True)
    figures = _registered()
    for stale in _stale_files(figures):
        (out / stale).unlink(missing_ok=True)
    written: list[str] = []

    def csv(frame: pd.DataFrame, name: str) -> None:
        with watch("writing"):
            tables.write_csv(frame, out / name)
        written.append(name)

    csv(runs[list(RUN_COLUMNS)], tables.RUNS_CSV)
    csv(r.counts, STATUS_CSV)
    csv(r.view.axes, AXES_CSV)
    csv(findings_.frame(r.found), FINDINGS_CSV)
    csv(r.solved, LARGEST_SOLVED_GAP_CSV)
    csv(r.clipping, clip_effect.CLIPPING_CSV)
    if r.card is not None:
        csv(r.card.table, SCORECARD_CSV)
    if not r.vgaps.empty:
        csv(r.vgaps.table, variable_gap.VARIABLE_GAP_CSV)

    plots = {fig.id: fig.data(r) for fig in figures}
    for plot in plots.values():
        for name, frame in plot.csvs:
            csv(frame, name)
    # Heaviest first, so the workers finish together; each job draws one figure's PNG.
    jobs = sorted((fig for fig in figures if plots[fig.id].drawn), key=lambda f: -f.weight)
    with watch("drawing"):
        drawn = _draw([(fig.draw, (*plots[fig.id].args, out / fig.png)) for fig in jobs],
                      workers)
    for fig, frame in zip(jobs, drawn, strict=True):
        name = plots[fig.id].returns
        if name is not None:
            assert isinstance(frame, pd.DataFrame), fig.id
            csv(frame, name)
    pngs = [fig.png for fig in jobs]
    shown = {fig.id: _shown(fig, plots[fig.id], r, out) for fig in figures}

    present = [s for s in sections.SECTIONS if s.present(r)]
    page_sections = _page_sections(present, r, shown)
    lead_figures = [drawn for fig in figures if fig.lead
                    and (drawn := shown[fig.id]) is not None and drawn.uri]
    runs_url = experiment_url(tracking_uri, r.experiment_id)
    banner = overview.pool_banner(r.view)
    summary = page.summary_markdown(
        experiment, tracking_uri, runs_url, banner,
        "\n\n".join([headline.markdown(r.lead).rstrip("\n"),
                      *(f.markdown() for f in lead_figures)]).strip("\n"),
        [page.section_markdown(str(s["heading"]), s["blocks"])  # type: ignore[arg-type]
         for s in page_sections])
    with watch("writing"):
        (out / SUMMARY_MD).write_text(summary, encoding="utf-8", newline="\n")
    written.append(SUMMARY_MD)

    with watch("writing"):  # the page: PNGs as data URIs, rendered
        html = page.render_html({
            "experiment": experiment,
            "tracking_uri": tracking_uri,
            "runs_url": runs_url,
            "ui_command": ui_command(tracking_uri),
            "pool_banner": banner.replace("`", ""),
            "headline": r.lead,
            "lead_figures": lead_figures,
            "scorecard_summary": "" if r.card is None else claims.summary_text(r.card),
            "sections": page_sections,
            "files": sorted([*written, *pngs]),
        }, INDEX_HTML)
        index = out / INDEX_HTML
        index.write_text(html, encoding="utf-8", newline="\n")
    if timings is not None:
        timings.update(watch.split())
    return index
