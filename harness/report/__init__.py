"""Turn one sweep's MLflow experiment into a static report folder (CSV, markdown, PNG, HTML).

`build_report` is the whole public API; `harness.report.cli` wraps it for the shell.
"""

from __future__ import annotations

import base64
from pathlib import Path

import jinja2

from harness import names
from harness.report import figures, tables
from harness.report.load import ReportError, load_grad_profiles, load_runs

__all__ = ["ReportError", "build_report"]

RUNS_CSV = "runs.csv"
LARGEST_SOLVED_GAP_CSV = "largest_solved_gap.csv"
ACCURACY_CSV = "accuracy_by_gap.csv"
SUMMARY_MD = "summary.md"
ACCURACY_PNG = "accuracy_vs_gap.png"
GRAD_PROFILE_PNG = "grad_profile.png"
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


def build_report(experiment: str, tracking_uri: str, out_root: Path = Path("reports")) -> Path:
    """Write the report of `experiment` to `out_root/<experiment>/`; return its index.html.

    Path separators in the experiment name become '_' in the folder name.

    Files: runs.csv, largest_solved_gap.csv, accuracy_by_gap.csv, summary.md,
    accuracy_vs_gap.png, grad_profile.png, index.html. Raises `ReportError` (a ValueError)
    if the store does not exist, or the experiment is missing or has no runs.
    """
    runs = load_runs(experiment, tracking_uri)
    profiles = load_grad_profiles(runs["run_id"].tolist(), tracking_uri)

    out = Path(out_root) / _folder_name(experiment)
    out.mkdir(parents=True, exist_ok=True)

    counts = tables.status_counts(runs)
    solved = tables.largest_solved_gap(runs)
    accuracy = tables.accuracy_by_gap(runs)
    tables.write_csv(runs, out / RUNS_CSV)
    tables.write_csv(solved, out / LARGEST_SOLVED_GAP_CSV)
    tables.write_csv(accuracy, out / ACCURACY_CSV)
    summary = tables.summary_markdown(experiment, tracking_uri, counts, solved, accuracy)
    (out / SUMMARY_MD).write_text(summary, encoding="utf-8", newline="\n")

    colors = figures.label_colors(runs["label"])
    markers = figures.label_markers(runs["label"])
    figures.accuracy_vs_gap(runs, colors, markers, experiment, out / ACCURACY_PNG)
    figures.grad_profile(runs, profiles, colors, markers, experiment, out / GRAD_PROFILE_PNG)

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
            "files": [RUNS_CSV, LARGEST_SOLVED_GAP_CSV, ACCURACY_CSV, SUMMARY_MD,
                      ACCURACY_PNG, GRAD_PROFILE_PNG],
        }
    )
    index = out / INDEX_HTML
    index.write_text(html, encoding="utf-8", newline="\n")
    return index
