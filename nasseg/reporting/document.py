"""The report as a document: sections of paragraphs, tables, images and code, in any output format.

What: a :class:`Document` is a title and :class:`Section` s; a section holds blocks
(:class:`Paragraph`, :class:`Note`, :class:`Table`, :class:`Image`, :class:`Code`, and
:class:`Subsection` s and :class:`Folded` groups of those). Tables hold text already formatted; images hold their
encoded bytes (PNG or SVG).

Why: the report is written once, as data, and :mod:`nasseg.reporting.render` turns the
same document into a self-contained HTML page and into Markdown with image files,
so the two outputs cannot say different things. Paragraph text may use two marks of
Markdown, ``**bold**`` and ```code```; the HTML renderer translates them.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Union

__all__ = ["Paragraph", "Note", "Table", "Image", "Folded", "Code", "Subsection", "Block", "Section", "Document"]


@dataclass(frozen=True)
class Paragraph:
    """A paragraph of text (``**bold**`` and ```code``` allowed)."""
    text: str
    kind: ClassVar[str] = "paragraph"


@dataclass(frozen=True)
class Note:
    """A paragraph set apart: a caveat, or what a section could not show and why."""
    text: str
    kind: ClassVar[str] = "note"


@dataclass(frozen=True)
class Table:
    """Rows of formatted cells under ``columns``.

    ``numeric`` flags the right-aligned columns; ``row_styles`` (one per row, or empty)
    names a style per row: "" (plain), ``reference`` (a reference slot or baseline) or
    ``published`` (a figure from a paper, not measured here).
    """
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    numeric: tuple[bool, ...] = ()
    row_styles: tuple[str, ...] = ()
    kind: ClassVar[str] = "table"

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.caption!r}: a row of {len(row)} cells under "
                                 f"{len(self.columns)} columns: {row}")
        if self.numeric and len(self.numeric) != len(self.columns):
            raise ValueError(f"table {self.caption!r}: numeric flags for {len(self.numeric)} of "
                             f"{len(self.columns)} columns")
        if self.row_styles and len(self.row_styles) != len(self.rows):
            raise ValueError(f"table {self.caption!r}: {len(self.row_styles)} row styles for "
                             f"{len(self.rows)} rows")

    def style(self, i: int) -> str:
        return self.row_styles[i] if self.row_styles else ""

    def is_numeric(self, j: int) -> bool:
        return bool(self.numeric) and self.numeric[j]


@dataclass(frozen=True)
class Image:
    """An image: ``name`` is its file stem (unique within a document), ``format`` png or svg."""
    name: str
    data: bytes
    caption: str
    format: str = "png"
    width: int | None = None     # the most pixels wide it is shown at (None: the page's width)
    kind: ClassVar[str] = "image"

    def __post_init__(self) -> None:
        if self.format not in ("png", "svg"):
            raise ValueError(f"image {self.name}: format {self.format!r}, expected png or svg")
        if not self.name or any(c in self.name for c in "/\\ ") or self.name.startswith("."):
            raise ValueError(f"image name {self.name!r}: a file stem without slashes or spaces")

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.format}"

    @property
    def mime(self) -> str:
        return "image/png" if self.format == "png" else "image/svg+xml"


@dataclass(frozen=True)
class Folded:
    """Blocks shown folded under ``summary`` (HTML ``<details>``): detail a reader opens on demand."""
    summary: str
    blocks: tuple[Block, ...]
    kind: ClassVar[str] = "folded"


@dataclass(frozen=True)
class Code:
    """Preformatted text (YAML, JSON); shown folded under ``summary`` when one is given."""
    text: str
    language: str = ""
    summary: str = ""
    kind: ClassVar[str] = "code"


@dataclass(frozen=True)
class Subsection:
    """A titled group of blocks inside a section."""
    title: str
    blocks: tuple[Block, ...]
    kind: ClassVar[str] = "subsection"


Block = Union[Paragraph, Note, Table, Image, Folded, Code, Subsection]


@dataclass(frozen=True)
class Section:
    """A top-level section; ``id`` is its anchor in the HTML page."""
    id: str
    title: str
    blocks: tuple[Block, ...]

    def walk(self) -> Iterator[Block]:
        """Every block of the section, subsections' blocks included (depth first)."""
        stack = list(reversed(self.blocks))
        while stack:
            block = stack.pop()
            yield block
            if isinstance(block, (Subsection, Folded)):
                stack.extend(reversed(block.blocks))


@dataclass(frozen=True)
class Document:
    """The whole report."""
    title: str
    subtitle: str
    sections: tuple[Section, ...]

    def images(self) -> list[Image]:
        """Every image, in document order; their names are checked to be distinct."""
        found = [b for s in self.sections for b in s.walk() if isinstance(b, Image)]
        names = [i.name for i in found]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"image names used twice: {', '.join(dupes)}")
        return found
