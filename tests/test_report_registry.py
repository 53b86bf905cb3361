"""The report as a registry of figures: one object per figure, one module per section, a page
that loops over sections. Built on the report tests' store (known answers there:
tests/helpers/report_store.py)."""

from __future__ import annotations

import base64
import html as html_
import importlib
import pkgutil
import re
from collections import Counter
from csv import DictReader
from pathlib import Path

import pytest
from helpers.report_store import EXPERIMENT, fake_runs

from harness import names
from harness.report import build_report, sections
from harness.report.registry import Figure, Section, figure_ids
from harness.report.sections import FIGURES, SECTIONS

TEMPLATES = Path(sections.__file__).parents[1] / "templates"


@pytest.fixture(scope="module")
def report(report_store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(EXPERIMENT, report_store, tmp_path_factory.mktemp("registry"), workers=1)


def test_one_module_per_section_in_page_order() -> None:
    modules = {m.name for m in pkgutil.iter_modules(sections.__path__)}
    assert modules == {s.id for s in SECTIONS}
    assert [s.id for s in SECTIONS] == ["overview", "scorecard", "frontier", "findings",
                                        "accuracy", "solved", "gradients", "clipping", "runs"]
    for section in SECTIONS:
        module = getattr(sections, section.id)
        assert module.SECTION is section
        assert all(fig.section == section.id for fig in section.figures)


def test_every_figure_is_registered_once() -> None:
    ids = figure_ids(SECTIONS)
    assert len(ids) == len(set(ids)) == len(FIGURES) == sum(len(s.figures) for s in SECTIONS)
    assert ids == [fig.id for fig in FIGURES]  # in page order
    fig = FIGURES[0]
    twice = Section(id=fig.section, heading="x", toc="x", figures=(fig, fig),
                    blocks=lambda r: [])
    with pytest.raises(ValueError, match="registered twice"):
        figure_ids([twice])
    wrong = Section(id=fig.section, heading="x", toc="x",
                    figures=(fig, Figure(**{**fig.__dict__, "section": "elsewhere"})),
                    blocks=lambda r: [])
    with pytest.raises(ValueError, match="says section elsewhere"):
        figure_ids([wrong])


def test_templates_have_no_code_for_any_one_figure() -> None:
    pages = [TEMPLATES / "index.html", *(TEMPLATES / "sections").glob("*.html")]
    text = "\n".join(p.read_text() for p in pages)  # compare.html is another page
    for fig in FIGURES:
        assert fig.png not in text, fig.id
        for csv in fig.csvs:
            assert csv not in text, csv


def test_page_shows_each_drawn_figure_with_its_caption_and_data(report: Path) -> None:
    page = report.read_text()
    folder = report.parent
    drawn = {p.name for p in folder.glob("*.png")}
    assert drawn == {f.png for f in FIGURES} - {
        "accuracy_by_gap_variable.png",  # no variable-gap run
        "frontier.png", "frontier_gradients.png"}  # no frontier sweep
    for fig in FIGURES:
        if fig.png not in drawn:
            continue
        uri = base64.b64encode((folder / fig.png).read_bytes()).decode()
        at = page.index(f'src="data:image/png;base64,{uri}"')
        # In its own section: the last <h2> before it is the figure's section.
        section = re.findall(r'<h2 id="([a-z]+)">', page[:at])[-1]
        assert section == fig.section, fig.id
        heading = page[page.rfind("<h3>", 0, at):at]
        assert heading.startswith(f"<h3>{html_.escape(fig.title, quote=False)}</h3>"), fig.id
        caption = html_.unescape(page[at:page.index("</figcaption>", at)])
        assert isinstance(fig.caption, str) and fig.caption in caption, fig.id
        for csv in fig.csvs:
            assert f"<code>{csv}</code>" in caption and (folder / csv).is_file(), csv


def test_sections_are_numbered_in_order_and_absent_ones_left_out(report: Path) -> None:
    page = report.read_text()
    found = re.findall(r'<h2 id="([a-z]+)">(\d+) ', page)
    assert found == [(sid, str(i)) for i, sid in enumerate(
        ["overview", "findings", "accuracy", "solved", "gradients", "clipping", "runs"],
        start=1)]
    toc = re.search(r'<nav class="toc">(.*?)</nav>', page).group(1)
    assert re.findall(r'href="#([a-z]+)"', toc) == [sid for sid, _ in found]


def test_no_figure_draws_a_band_over_two_seeds(report_store: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The store has at most 2 seeds at every point: every registered figure, drawn from the
    report's inputs, shows seeds as dots, with no band (fill_between) and no error bar."""
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.figure import Figure as MplFigure

    from harness.report import inputs

    r = inputs.Inputs(EXPERIMENT, report_store, inputs.read(EXPERIMENT, report_store))
    assert r.runs.groupby([names.TASK_LABEL, "label", names.GAP])[names.SEED].nunique().max() == 2
    drawn: list[MplFigure] = []
    monkeypatch.setattr(MplFigure, "savefig", lambda fig, *a, **k: drawn.append(fig))
    for fig in FIGURES:
        plot = fig.data(r)
        if not plot.drawn:
            continue
        drawn.clear()
        fig.draw(*plot.args, tmp_path / fig.png)
        (canvas,) = drawn
        bands = [c for ax in canvas.axes for c in ax.collections if isinstance(c, PolyCollection)]
        assert not bands, fig.id
        if fig.id != "solve_rate_vs_gap":  # Wilson intervals: fine at any n
            for ax in canvas.axes:
                spans = [s for c in ax.collections if isinstance(c, LineCollection)
                         for s in c.get_segments() if len(s) and abs(s[0][1] - s[-1][1]) > 0]
                assert not spans, fig.id


def test_summary_md_renders_every_section_of_the_page(report: Path) -> None:
    """summary.md comes from the same registry as the page: each section the page shows, in
    its order, with each drawn figure (as an image) and each figure's data files."""
    page = report.read_text()
    summary = (report.parent / "summary.md").read_text()
    shown = re.findall(r'<h2 id="([a-z]+)">', page)
    headings = re.findall(r"^## (.+)$", summary, flags=re.MULTILINE)
    by_id = {s.id: s for s in SECTIONS}
    assert headings == [by_id[sid].heading for sid in shown]
    for fig in FIGURES:
        if (report.parent / fig.png).is_file():
            at = summary.index(f"![{fig.title}]({fig.png})")
            heading = re.findall(r"^## (.+)$", summary[:at], flags=re.MULTILINE)[-1]
            assert heading == by_id[fig.section].heading, fig.id
            assert all(f"`{csv}`" in summary[at:] for csv in fig.csvs), fig.id


TOY_SECTION = '''"""A section edit, as a contributor would make it: the accuracy section with one
more figure (how many runs each gap has), its data and its drawing beside it."""

import dataclasses

from matplotlib.figure import Figure as MplFigure

from harness import names
from harness.report.plotting import save_png
from harness.report.registry import Figure, Plot
from harness.report.sections import accuracy

TOY_CSV = "toy_runs_per_gap.csv"


def toy_data(r):
    table = r.runs.groupby(names.GAP).size().rename("runs").reset_index()
    return Plot(args=(table,), csvs=((TOY_CSV, table),))


def draw_toy(table, path):
    fig = MplFigure(figsize=(4, 3))
    fig.subplots().bar(table[names.GAP].astype(str), table["runs"])
    save_png(fig, path)


TOY = Figure(id="toy_runs_per_gap", section="accuracy", title="Runs per gap (toy)",
             caption="How many runs each gap has.", csvs=(TOY_CSV,), data=toy_data,
             draw=draw_toy)
SECTION = dataclasses.replace(accuracy.SECTION, figures=(*accuracy.SECTION.figures, TOY),
                              blocks=lambda r: [*accuracy.SECTION.blocks(r), TOY])
'''


def test_a_figure_added_in_its_section_reaches_the_page_and_summary_md(
        report_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a figure is one section edit: a module that registers one more figure in its
    section (written here to a temporary module) gets its PNG, its CSV, its place on the
    page and in summary.md, with nothing else changed."""
    (tmp_path / "toy_section.py").write_text(TOY_SECTION)
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = importlib.import_module("toy_section")
    monkeypatch.setattr(sections, "SECTIONS", tuple(
        toy.SECTION if s.id == toy.SECTION.id else s for s in SECTIONS))
    index = build_report(EXPERIMENT, report_store, tmp_path / "reports", workers=1)
    folder = index.parent
    assert (folder / "toy_runs_per_gap.png").read_bytes().startswith(b"\x89PNG")
    with (folder / toy.TOY_CSV).open() as f:
        counts = {row[names.GAP]: int(row["runs"]) for row in DictReader(f)}
    assert counts == dict(Counter(str(run.gap) for run in fake_runs()))
    page = index.read_text()
    at = page.index('alt="Runs per gap (toy)"')
    assert re.findall(r'<h2 id="([a-z]+)">', page[:at])[-1] == "accuracy"
    assert "<h3>Runs per gap (toy)</h3>" in page and f"<code>{toy.TOY_CSV}</code>" in page
    summary = (folder / "summary.md").read_text()
    at = summary.index("![Runs per gap (toy)](toy_runs_per_gap.png)")
    assert re.findall(r"^## (.+)$", summary[:at], flags=re.MULTILINE)[-1] == "Accuracy vs gap"
    assert f"How many runs each gap has. Data: `{toy.TOY_CSV}`." in summary
