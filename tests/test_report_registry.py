"""The report as a registry of figures: one object per figure, one module per section, a page
that loops over sections. Built on the report tests' store (known answers there:
tests/helpers/report_store.py)."""

from __future__ import annotations

import base64
import html as html_
import pkgutil
import re
from pathlib import Path

import pytest
from helpers.report_store import EXPERIMENT

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
    assert len(ids) == len(set(ids)) == len(FIGURES) == 14
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
