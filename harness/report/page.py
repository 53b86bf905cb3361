"""The report's two renderings of the same registry: the HTML page (jinja2 templates, figures
as data: URIs) and summary.md (each section's blocks as Markdown), with what both open with:
the headline, the experiment's runs in the MLflow UI and how to start that UI.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import jinja2

from harness.report.registry import Block
from harness.report.ui import ui_command

TEMPLATES = Path(__file__).parent / "templates"


def data_uri(png: Path) -> str:
    """The PNG as a data: URI, so the page needs no file beside it."""
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def render_html(context: dict[str, object], template: str) -> str:
    """`templates/<template>` rendered with `context`."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        # Run names, reasons and labels come from configs: never let them become markup.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template(template).render(**context)


def experiment_folder(experiment: str) -> str:
    """The experiment name as one safe path component: a '/' must not nest or escape out_root."""
    name = experiment.replace("/", "_").replace("\\", "_")
    return f"_{name}" if name in ("", ".", "..") else name


def ui_markdown(runs_url: str, tracking_uri: str) -> str:
    """The summary.md line that links the experiment's runs in the MLflow UI."""
    command = ui_command(tracking_uri)
    start = f" (start it on this store first: `{command}`)" if command else ""
    return f"- MLflow UI: [{runs_url}]({runs_url}){start}"


def section_markdown(heading: str, blocks: Sequence[Block]) -> str:
    """One section of summary.md: its heading and its blocks as Markdown, in page order."""
    return "\n\n".join([f"## {heading}", *(b.markdown() for b in blocks)]) + "\n"


def summary_markdown(experiment: str, tracking_uri: str, runs_url: str, banner: str,
                     headline: str, sections: Sequence[str]) -> str:
    """The text of summary.md: nothing time-dependent, so a rebuild gives the same bytes.

    `banner` (a warning, such as runs pooled on purpose) comes first of all, as a quote;
    `headline` (a few computed sentences per task) opens it, under the title; then where the
    runs are, and `sections` (each `section_markdown`) in page order.
    """
    parts = [
        f"# Report: {experiment}",
        "",
        *([f"> **{banner}**", ""] if banner else []),
        *([headline.rstrip("\n"), ""] if headline else []),
        f"- experiment: `{experiment}`",
        f"- store: `{tracking_uri}`",
        ui_markdown(runs_url, tracking_uri),
        "",
    ]
    return "\n".join(parts) + "\n" + "\n".join(sections)
