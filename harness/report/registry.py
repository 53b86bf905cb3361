"""The report as a registry: sections in page order, each holding its figures and page blocks.

A `Figure` is one object: its id (the PNG is `<id>.png`), the section it belongs to, a title
and caption, the CSV files of its data, `data` (from the report's `Inputs`, what it draws:
a `Plot`) and `draw` (a module-level function, so figures can be drawn in worker processes).
A `Section` (one module per section in `harness.report.sections`) lists its figures and says
what the page shows in order (`blocks`): figures, headings, paragraphs, lists and tables.
`templates/index.html` loops over the sections and their blocks; it has no code of its own
for any one figure. summary.md is the same blocks as Markdown: each block's `markdown()`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import pandas as pd
from markupsafe import Markup

from harness.report.tables import markdown_table

if TYPE_CHECKING:
    from harness.report.inputs import Inputs


@dataclass(frozen=True)
class Plot:
    """What one figure draws, from one report's inputs.

    `args` are the drawing function's arguments before the PNG's path; `csvs` the frames the
    figure draws, written under their names before drawing; `returns` names the CSV the
    drawing function writes from the frame it returns (it computes what it draws), or None.
    `drawn` False: the figure is not drawn for lack of data; the page then shows `note` in
    its place (or nothing when `note` is ""). With `drawn`, `note` says what part is missing.
    """

    args: tuple[object, ...] = ()
    csvs: tuple[tuple[str, pd.DataFrame], ...] = ()
    returns: str | None = None
    note: str = ""
    drawn: bool = True


def not_drawn(note: str = "", csvs: tuple[tuple[str, pd.DataFrame], ...] = ()) -> Plot:
    """A figure left out: `note` says why ("" leaves it off the page without a word)."""
    return Plot(csvs=csvs, note=note, drawn=False)


@dataclass(frozen=True)
class Figure:
    """One figure of the report.

    `caption` says what the figure shows and the rule behind its lines, bands or colours
    (a function of the inputs where it depends on them); the page adds its data files.
    `weight` orders the drawing jobs (heaviest first, so parallel workers finish together).
    `lead`: the page shows it beside the headline, at the top, rather than among its
    section's blocks (its section still holds its data and drawing).
    """

    id: str
    section: str
    title: str
    caption: str | Callable[[Inputs], str]
    csvs: tuple[str, ...]
    data: Callable[[Inputs], Plot]
    draw: Callable[..., pd.DataFrame | None]
    weight: int = 1
    lead: bool = False

    @property
    def png(self) -> str:
        return f"{self.id}.png"

    def caption_for(self, inputs: Inputs) -> str:
        return self.caption(inputs) if callable(self.caption) else self.caption


@dataclass(frozen=True)
class Shown:
    """A figure as the page and summary.md show it, once drawn (or not)."""

    id: str
    png: str
    title: str
    sentence: str
    csvs: tuple[str, ...]
    note: str
    uri: str = ""  # the PNG as a data: URI; "" when it was not drawn
    kind: str = "figure"

    def markdown(self) -> str:
        """Its heading, the PNG beside summary.md and the caption; or why it is not drawn."""
        if not self.uri:
            return f"### {self.title}\n\n*{self.note}.*"
        note = f" *{self.note}.*" if self.note else ""
        data = ", ".join(f"`{name}`" for name in self.csvs)
        return (f"### {self.title}\n\n![{self.title}]({self.png})\n\n"
                f"{self.sentence}{note} Data: {data}.")


# --- the other blocks of a section ---------------------------------------------------------


@dataclass(frozen=True)
class Heading:
    text: str
    kind: str = "heading"

    def markdown(self) -> str:
        return f"### {self.text}"


def _plain(text: str | Markup) -> str:
    """Markup as Markdown text: `<code>` becomes backticks, other tags are dropped."""
    if not isinstance(text, Markup):
        return text
    return html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"</?code>", "`", str(text))))


@dataclass(frozen=True)
class Text:
    """A paragraph; `text` is escaped unless it is `Markup` (build that with
    `Markup(...).format(...)`, which escapes the values it is given)."""

    text: str | Markup
    cls: str = ""
    kind: str = "text"

    def markdown(self) -> str:
        text = _plain(self.text)
        return f"*{text}*" if self.cls == "none" else text  # the page greys these out


@dataclass(frozen=True)
class Items:
    """A bulleted list of sentences."""

    lines: Sequence[str]
    kind: str = "items"

    def markdown(self) -> str:
        return "\n".join(f"- {line}" for line in self.lines)


@dataclass(frozen=True)
class Table:
    """A table in a scrolling box; cells equal to `none_marker` are greyed, `row_classes`
    (one per row, or empty) classes each row, `cls` the table. `links` (one URL per row, ""
    for none, or empty) makes each row's cell in `link_column` a link."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    none_marker: str | None = None
    row_classes: Sequence[str] = ()
    cls: str = ""
    links: Sequence[str] = ()
    link_column: int = 0
    kind: str = "table"

    def markdown(self) -> str:
        rows = [[f"[{cell}]({self.links[i]})" if self.links and self.links[i]
                 and j == self.link_column else cell for j, cell in enumerate(row)]
                for i, row in enumerate(self.rows)]
        return markdown_table(self.header, rows)


@dataclass(frozen=True)
class Partial:
    """A block with markup of its own (`templates/sections/<template>`), given `values`;
    `text` is the same content as Markdown."""

    template: str
    values: Mapping[str, object] = field(default_factory=dict)
    text: str = ""
    kind: str = "partial"

    def markdown(self) -> str:
        return self.text


Block = Union[Figure, Shown, Heading, Text, Items, Table, Partial]  # noqa: UP007


def always(_: Inputs) -> bool:
    return True


@dataclass(frozen=True)
class Section:
    """One section of the page: `id` is its anchor; `present` says whether the experiment
    has it (absent sections are not numbered); `blocks` its content in page order, figures
    given as the `Figure` objects of `figures`."""

    id: str
    heading: str
    toc: str
    figures: tuple[Figure, ...]
    blocks: Callable[[Inputs], list[Block]]
    present: Callable[[Inputs], bool] = always


def figure_ids(sections: Sequence[Section]) -> list[str]:
    """Every figure's id, in page order; raises if one is registered twice or in a section
    other than its own."""
    seen: list[str] = []
    for section in sections:
        for fig in section.figures:
            if fig.section != section.id:
                raise ValueError(f"figure {fig.id} says section {fig.section}, "
                                 f"is listed in {section.id}")
            if fig.id in seen:
                raise ValueError(f"figure {fig.id} is registered twice")
            seen.append(fig.id)
    return seen
