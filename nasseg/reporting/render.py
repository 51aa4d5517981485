"""The report document as one self-contained HTML page and as Markdown with image files.

What: :func:`render_html` fills a Jinja2 template with a :class:`~.document.Document`;
every image is embedded as a base64 ``data:`` URI, and the style sheet is inline, so
the page is one file that opens anywhere, offline, and can be mailed or archived.
:func:`render_markdown` writes the same document as Markdown whose images are files
in ``figures/`` beside it, referenced relatively (GitHub, GitLab and most viewers
show them). :func:`write_report` writes both and the figures, each atomically
(the figures folder is replaced as a whole, so no figure of an earlier report
survives).

The template is a string in this module rather than a package data file, so that the
pipeline's computed code dependencies (the import closure of a stage) include it.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from jinja2 import Environment, StrictUndefined
from markupsafe import Markup

from ..io import atomic_directory, atomic_write_text
from .document import Block, Code, Document, Folded, Image, Note, Paragraph, Subsection, Table

__all__ = ["render_html", "render_markdown", "write_report", "FIGURES", "HTML_NAME", "MD_NAME"]

FIGURES = "figures"
HTML_NAME = "report.html"
MD_NAME = "report.md"

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> Markup:
    """Escape ``text`` for HTML, then turn ``**bold**`` and ```code``` into tags."""
    out = html.escape(text, quote=False)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    return Markup(out.replace("\n", "<br>"))


def _data_uri(image: Image) -> str:
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ doc.title }}</title>
<style>
  body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; font-size: 15px;
         line-height: 1.45; color: #1d2330; max-width: 1240px; margin: 0 auto; padding: 0 24px 64px; }
  header { border-bottom: 3px solid #2f5d8a; margin-bottom: 12px; }
  h1 { font-size: 28px; margin: 24px 0 4px; }
  .subtitle { color: #555; margin: 0 0 12px; }
  nav ol { columns: 2; margin: 8px 0 16px; }
  nav a { color: #2f5d8a; text-decoration: none; }
  section { border-top: 1px solid #d5dbe3; padding-top: 4px; margin-top: 28px; }
  h2 { font-size: 22px; color: #2f5d8a; margin: 14px 0 8px; }
  h3 { font-size: 17px; margin: 20px 0 6px; }
  p { margin: 6px 0 10px; }
  code { background: #eef1f5; padding: 0 3px; border-radius: 3px; font-size: 13px; }
  .note { background: #fff8e1; border-left: 4px solid #e0a800; padding: 6px 12px; margin: 8px 0 12px; }
  table { border-collapse: collapse; margin: 6px 0 4px; font-size: 13.5px; }
  th, td { border: 1px solid #cfd6df; padding: 3px 8px; vertical-align: top; }
  th { background: #e8edf3; text-align: left; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
  tr:nth-child(even) td { background: #f7f9fb; }
  tr.reference td { background: #eef5ec; }
  tr.published td { background: #f3eefa; font-style: italic; }
  .caption { color: #4a5361; font-size: 13px; margin: 2px 0 14px; }
  .table-wrap { overflow-x: auto; }
  figure { margin: 10px 0 18px; }
  figure img { max-width: 100%; height: auto; border: 1px solid #e1e5ea; background: #fff; }
  figcaption { color: #4a5361; font-size: 13px; margin-top: 2px; }
  details.folded { margin: 6px 0 12px; }
  details.folded > summary { font-weight: 600; }
  pre { background: #f4f6f9; border: 1px solid #dde2e8; padding: 8px 10px; overflow-x: auto; font-size: 12.5px; }
  details summary { cursor: pointer; color: #2f5d8a; margin: 6px 0; }
  .legend span { display: inline-block; padding: 0 6px; margin-right: 8px; border-radius: 3px; font-size: 12.5px; }
  .legend .reference { background: #eef5ec; } .legend .published { background: #f3eefa; font-style: italic; }
</style>
</head>
<body>
<header>
<h1>{{ doc.title }}</h1>
<p class="subtitle">{{ doc.subtitle | inline }}</p>
<p class="legend">Table rows: <span class="reference">reference slot or baseline</span>
<span class="published">published figure (a paper's, not measured here)</span></p>
</header>
<nav><ol>{% for s in doc.sections %}<li><a href="#{{ s.id }}">{{ s.title }}</a></li>{% endfor %}</ol></nav>
{% macro render(block) -%}
{% if block.kind == "paragraph" %}<p>{{ block.text | inline }}</p>
{% elif block.kind == "note" %}<div class="note">{{ block.text | inline }}</div>
{% elif block.kind == "table" %}<div class="table-wrap"><table>
<thead><tr>{% for c in block.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in block.rows %}{% set i = loop.index0 %}<tr{% if block.style(i) %} class="{{ block.style(i) }}"{% endif %}>{% for cell in row %}<td{% if block.is_numeric(loop.index0) %} class="num"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></div>{% if block.caption %}<p class="caption">{{ block.caption | inline }}</p>{% endif %}
{% elif block.kind == "image" %}<figure><img src="{{ uri(block) }}" alt="{{ block.caption }}"{% if block.width %} style="max-width: min(100%, {{ block.width }}px)"{% endif %}><figcaption>{{ block.caption | inline }}</figcaption></figure>
{% elif block.kind == "folded" %}<details class="folded"><summary>{{ block.summary }}</summary>
{% for b in block.blocks %}{{ render(b) }}{% endfor %}</details>
{% elif block.kind == "code" %}{% if block.summary %}<details><summary>{{ block.summary }}</summary>{% endif %}<pre>{{ block.text }}</pre>{% if block.summary %}</details>{% endif %}
{% elif block.kind == "subsection" %}<h3>{{ block.title }}</h3>
{% for b in block.blocks %}{{ render(b) }}{% endfor %}
{% endif %}
{%- endmacro %}
{% for s in doc.sections %}<section id="{{ s.id }}">
<h2>{{ loop.index }}. {{ s.title }}</h2>
{% for b in s.blocks %}{{ render(b) }}{% endfor %}
</section>
{% endfor %}
</body>
</html>
"""


def render_html(doc: Document) -> str:
    """The document as one HTML page, images embedded as data URIs."""
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=False)
    env.filters["inline"] = _inline
    env.globals["uri"] = _data_uri
    doc.images()   # checks the image names
    return env.from_string(_TEMPLATE).render(doc=doc)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def _md_table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(c) for c in table.columns) + " |",
             "|" + "|".join("---:" if table.is_numeric(j) else "---" for j in range(len(table.columns))) + "|"]
    for i, row in enumerate(table.rows):
        cells = [_md_cell(c) for c in row]
        if table.style(i) == "published":   # a paper's figure: in italics, as the legend says
            cells = [f"*{c}*" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    if table.caption:
        lines += ["", f"*{table.caption}*"]
    return lines


def _md_block(block: Block, level: int) -> list[str]:
    if isinstance(block, Paragraph):
        return [block.text, ""]
    if isinstance(block, Note):
        return ["> " + line for line in block.text.splitlines()] + [""]
    if isinstance(block, Table):
        return [*_md_table(block), ""]
    if isinstance(block, Image):
        return [f"![{block.caption}]({FIGURES}/{block.filename})", "", f"*{block.caption}*", ""]
    if isinstance(block, Folded):
        inner = [line for b in block.blocks for line in _md_block(b, level)]
        return [f"<details><summary>{html.escape(block.summary)}</summary>", "", *inner, "</details>", ""]
    if isinstance(block, Code):
        fence = [f"```{block.language}", block.text.rstrip("\n"), "```"]
        if block.summary:
            return [f"<details><summary>{html.escape(block.summary)}</summary>", "", *fence, "", "</details>", ""]
        return [*fence, ""]
    if isinstance(block, Subsection):
        out = [f"{'#' * level} {block.title}", ""]
        for b in block.blocks:
            out += _md_block(b, level + 1)
        return out
    raise TypeError(f"unknown block {type(block).__name__}")


def render_markdown(doc: Document) -> str:
    """The document as Markdown; images are referenced as ``figures/<name>.<ext>``."""
    doc.images()
    lines = [f"# {doc.title}", "", doc.subtitle, "",
             "Rows in *italics* are published figures (a paper's, not measured here).", ""]
    lines += [f"{i}. [{s.title}](#{s.id})" for i, s in enumerate(doc.sections, start=1)] + [""]
    for i, section in enumerate(doc.sections, start=1):
        lines += [f'<a id="{section.id}"></a>', "", f"## {i}. {section.title}", ""]
        for block in section.blocks:
            lines += _md_block(block, 3)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(doc: Document, out: str | Path) -> dict[str, Path]:
    """Write ``out/report.html``, ``out/report.md`` and ``out/figures/``; return their paths.

    The figures folder first (replaced as a whole), then the Markdown, the HTML last.
    """
    out = Path(out)
    images = doc.images()
    with atomic_directory(out / FIGURES) as tmp:
        for image in images:
            (tmp / image.filename).write_bytes(image.data)
    atomic_write_text(out / MD_NAME, render_markdown(doc))
    atomic_write_text(out / HTML_NAME, render_html(doc))
    return {"html": out / HTML_NAME, "markdown": out / MD_NAME, "figures": out / FIGURES}
