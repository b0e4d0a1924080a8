"""A small report builder that renders the same content as self-contained HTML and Markdown.

The reproduce pipelines add headings, paragraphs, tables, figures and notes in order; ``write``
produces ``report.html`` (inline CSS, figures embedded as ``data:image/png;base64`` URIs, no
scripts, so the file can be mailed or archived on its own), ``report.md`` (GitHub-flavoured,
figures referenced as ``figures/<name>.png``) and those PNG files. Every user string is
HTML-escaped; only ``**bold**`` and ```code``` inline markup is interpreted.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from basin.utils.io import atomic_write_bytes, atomic_write_text

FIGURE_DPI = 110
NOTE_KINDS = ("info", "warning", "danger")
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class _Block:
    kind: str
    payload: Any


@dataclass(frozen=True)
class _Table:
    id: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]
    caption: str | None


@dataclass(frozen=True)
class _Figure:
    name: str
    caption: str
    png: bytes
    width: int
    height: int


def render_png(fig: Figure, dpi: int = FIGURE_DPI) -> bytes:
    """The figure as PNG bytes (module-level so tests can make rendering fail)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding a PNG in HTML without a separate file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def format_cell(value: Any) -> str:
    """A table cell as text: floats with 4 significant digits, ``None``/NaN as an em dash."""
    if value is None:
        return "—"
    if hasattr(value, "item") and not isinstance(value, str):
        try:
            value = value.item()  # numpy / torch scalars
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, numbers.Integral):  # bool included
        return str(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return "—" if math.isnan(value) else format(value, ".4g")
    return str(value)


def _is_numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if hasattr(value, "item") and not isinstance(value, str):
        return getattr(value, "ndim", 0) == 0
    return isinstance(value, numbers.Real)


def _close(fig: Figure) -> None:
    # A figure made with pyplot is registered with a manager and would leak until closed;
    # one built from matplotlib.figure.Figure directly has no global state to release.
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.5;
color:#1f2328;background:#fff;margin:0}
main{max-width:62rem;margin:0 auto;padding:1.5rem 1.25rem 4rem}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}
.subtitle{color:#59636e;margin-top:0}
nav.toc{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.2rem 1rem}
nav.toc h2{border:0;font-size:1rem;margin:.6rem 0 0}
a{color:#0969da}
.table-wrap{overflow-x:auto;margin:1rem 0}
table{border-collapse:collapse;font-size:.92rem}
caption{caption-side:top;text-align:left;font-weight:600;padding-bottom:.3rem}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
thead th{background:#eaeef2}tbody tr:nth-child(even){background:#f6f8fa}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.2rem 0;text-align:center}
figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{font-size:.92rem;color:#59636e;margin-top:.3rem}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.88em;
background:#eff2f5;padding:.1em .3em;border-radius:4px}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.8rem;overflow-x:auto}
pre code{background:none;padding:0}
.note{border-left:4px solid;border-radius:4px;padding:.6rem 1rem;margin:1rem 0}
.note-info{border-color:#0969da;background:#ddf4ff}
.note-warning{border-color:#9a6700;background:#fff8c5}
.note-danger{border-color:#cf222e;background:#ffebe9}
"""
_CODE_SPAN = re.compile(r"(`[^`\n]+`)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ENTITY_LIKE = re.compile(r"&(?=#?\w+;)")
_NOTE_LABELS = {"info": "Note", "warning": "Warning", "danger": "Caution"}
_MD_ALERTS = {"info": "NOTE", "warning": "WARNING", "danger": "CAUTION"}


def _inline_html(text: str) -> str:
    """Escape ``text`` for HTML, then turn ``**bold**`` and ```code``` into tags."""
    out = []
    for i, part in enumerate(_CODE_SPAN.split(str(text))):
        if i % 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            out.append(_BOLD.sub(r"<strong>\1</strong>", html.escape(part)))
    return "<br>".join("".join(out).split("\n"))


def _inline_markdown(text: str, *, in_table: bool = False) -> str:
    """``text`` with raw HTML neutralised (code spans are literal and kept as they are)."""
    out = []
    for i, part in enumerate(_CODE_SPAN.split(str(text))):
        if not i % 2:
            part = _ENTITY_LIKE.sub(r"\\&", part.replace("<", "\\<").replace(">", "\\>"))
        out.append(part.replace("|", "\\|") if in_table else part)
    joined = "".join(out)
    return " ".join(joined.split("\n")) if in_table else joined


def _block_html(block: _Block) -> str:
    kind, p = block.kind, block.payload
    if kind == "heading":
        level, text, anchor = p
        return f'<h{level} id="{anchor}">{_inline_html(text)}</h{level}>'
    if kind == "paragraph":
        return f"<p>{_inline_html(p)}</p>"
    if kind == "bullets":
        return "<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in p) + "</ul>"
    if kind == "code":
        return f"<pre><code>{html.escape(p)}</code></pre>"
    if kind == "note":
        note_kind, text = p
        return (f'<div class="note note-{note_kind}" role="note"><strong>'
                f"{_NOTE_LABELS[note_kind]}:</strong> {_inline_html(text)}</div>")
    if kind == "figure":
        return (f'<figure id="{p.name}"><img src="{png_data_uri(p.png)}" '
                f'alt="{html.escape(p.caption)}" width="{p.width}" height="{p.height}">'
                f"<figcaption>{_inline_html(p.caption)}</figcaption></figure>")
    return _table_html(p)


def _table_html(t: _Table) -> str:
    def cls(j: int) -> str:
        return ' class="num"' if t.numeric[j] else ""

    caption = f"<caption>{_inline_html(t.caption)}</caption>" if t.caption else ""
    head = "".join(f"<th{cls(j)}>{_inline_html(h)}</th>" for j, h in enumerate(t.header))
    body = "".join("<tr>" + "".join(f"<td{cls(j)}>{_inline_html(c)}</td>"
                                    for j, c in enumerate(row)) + "</tr>" for row in t.rows)
    return (f'<div class="table-wrap"><table id="{t.id}">{caption}'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def _block_markdown(block: _Block) -> str:
    kind, p = block.kind, block.payload
    if kind == "heading":
        level, text, _ = p
        return "#" * level + " " + _inline_markdown(text)
    if kind == "paragraph":
        return _inline_markdown(p)
    if kind == "bullets":
        return "\n".join("- " + " ".join(_inline_markdown(item).split("\n")) for item in p)
    if kind == "code":
        longest = max((len(run) for run in re.findall(r"`+", p)), default=0)
        fence = "`" * max(3, longest + 1)
        return f"{fence}text\n{p}\n{fence}"
    if kind == "note":
        note_kind, text = p
        lines = [f"[!{_MD_ALERTS[note_kind]}]", *_inline_markdown(text).split("\n")]
        return "\n".join(f"> {line}".rstrip() for line in lines)
    if kind == "figure":
        alt = re.sub(r"[\[\]\n]", " ", p.caption)
        return (f"![{alt}](figures/{p.name}.png)\n\n"
                f"_{_inline_markdown(p.caption)}_")
    return _table_markdown(p)


def _table_markdown(t: _Table) -> str:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(_inline_markdown(c, in_table=True) for c in cells) + " |"

    rule = "|" + "|".join("---:" if n else "---" for n in t.numeric) + "|"
    lines = [row(t.header), rule, *(row(r) for r in t.rows)]
    return "\n".join([f"**{_inline_markdown(t.caption)}**", "", *lines] if t.caption else lines)


class Report:
    """Ordered report content, rendered on demand to HTML and Markdown.

    Figures are rendered to PNG once, when added, and the matplotlib figure is closed; the
    report then holds only bytes, so building a long report does not accumulate figures.
    """

    def __init__(self, title: str, subtitle: str | None = None) -> None:
        if not isinstance(title, str) or not title.strip():
            raise ValueError(f"title: expected a non-empty string, got {title!r}")
        self.title = title
        self.subtitle = subtitle
        self._blocks: list[_Block] = []
        self._ids: set[str] = set()
        self._heading_count = 0

    @property
    def table_ids(self) -> list[str]:
        return [b.payload.id for b in self._blocks if b.kind == "table"]

    @property
    def figure_names(self) -> list[str]:
        return [b.payload.name for b in self._blocks if b.kind == "figure"]

    def _claim_id(self, value: str, argument: str) -> str:
        if not isinstance(value, str) or not _SLUG.match(value):
            raise ValueError(f"{argument}: {value!r} is not a slug (letters, digits, '-', '_', "
                             "starting with a letter or digit)")
        if value in self._ids:
            raise ValueError(f"{argument}: {value!r} is already used in this report")
        self._ids.add(value)
        return value

    def heading(self, text: str, level: int = 2) -> None:
        """A section heading; level 1 is the title, so ``level`` runs from 2 to 6."""
        if not isinstance(level, int) or not 2 <= level <= 6:
            raise ValueError(f"level: expected an integer from 2 to 6, got {level!r}")
        slug = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")[:40] or "section"
        anchor = ""
        while not anchor or anchor in self._ids:  # never reuse a table or figure id
            self._heading_count += 1
            anchor = f"s{self._heading_count}-{slug}"
        self._ids.add(anchor)
        self._blocks.append(_Block("heading", (level, text, anchor)))

    def paragraph(self, text: str) -> None:
        self._blocks.append(_Block("paragraph", str(text)))

    def bullets(self, items: Sequence[str]) -> None:
        if isinstance(items, str) or len(items) == 0:
            raise ValueError("items: expected a non-empty sequence of strings")
        self._blocks.append(_Block("bullets", tuple(str(item) for item in items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]],
              caption: str | None = None, *, id: str | None = None) -> None:
        """A table; cells are formatted with :func:`format_cell`, numeric columns right-aligned."""
        if isinstance(header, str) or len(header) == 0:
            raise ValueError("header: expected a non-empty sequence of column names")
        width = len(header)
        for i, row in enumerate(rows):
            if isinstance(row, str) or len(row) != width:
                raise ValueError(f"rows[{i}]: has {len(row)} cells, the header has {width}")
        table_id = self._claim_id(id if id is not None else f"table-{len(self.table_ids) + 1}",
                                  "id")
        numeric = tuple(bool(rows) and all(_is_numeric(row[j]) or row[j] is None for row in rows)
                        for j in range(width))
        cells = tuple(tuple(format_cell(v) for v in row) for row in rows)
        self._blocks.append(_Block("table", _Table(table_id, tuple(map(str, header)), cells,
                                                   numeric, caption)))

    def figure(self, fig: Figure, name: str, caption: str) -> None:
        """Render ``fig`` to PNG now (``FIGURE_DPI``) and close it; ``name`` names the file."""
        if not isinstance(fig, Figure):
            raise ValueError(f"fig: expected a matplotlib Figure, got {type(fig).__name__}")
        self._claim_id(name, "name")
        try:
            png = render_png(fig)
        except Exception:
            self._ids.discard(name)
            raise
        finally:
            _close(fig)
        if not png.startswith(_PNG_SIGNATURE) or len(png) < 24:
            raise ValueError(f"fig: rendering {name!r} did not produce a PNG")
        width, height = (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big"))
        self._blocks.append(_Block("figure", _Figure(name, str(caption), png, width, height)))

    def code(self, text: str) -> None:
        self._blocks.append(_Block("code", str(text)))

    def note(self, text: str, kind: str = "info") -> None:
        """A highlighted box; ``kind`` is ``info``, ``warning`` or ``danger``."""
        if kind not in NOTE_KINDS:
            raise ValueError(f"kind: expected one of {NOTE_KINDS}, got {kind!r}")
        self._blocks.append(_Block("note", (kind, str(text))))

    def render_html(self) -> str:
        """A complete HTML5 document: inline CSS, embedded PNGs, contents of level-2 headings."""
        toc = [(text, anchor) for kind, (level, text, anchor) in
               ((b.kind, b.payload) for b in self._blocks if b.kind == "heading") if level == 2]
        parts = [f"<h1>{_inline_html(self.title)}</h1>"]
        if self.subtitle:
            parts.append(f'<p class="subtitle">{_inline_html(self.subtitle)}</p>')
        if toc:
            links = "".join(f'<li><a href="#{anchor}">{_inline_html(text)}</a></li>'
                            for text, anchor in toc)
            parts.append(f'<nav class="toc"><h2>Contents</h2><ol>{links}</ol></nav>')
        parts.extend(_block_html(block) for block in self._blocks)
        body = "\n".join(parts)
        return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
                f"<title>{html.escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n"
                f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n")

    def render_markdown(self) -> str:
        """GitHub-flavoured Markdown; figures are referenced as ``figures/<name>.png``."""
        parts = [f"# {_inline_markdown(self.title)}"]
        if self.subtitle:
            parts.append(f"_{_inline_markdown(self.subtitle)}_")
        parts.extend(_block_markdown(block) for block in self._blocks)
        return "\n\n".join(parts) + "\n"

    def write(self, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``report.html``, ``report.md`` and ``figures/*.png`` under ``out_dir``.

        Both documents are rendered in memory before anything is written, and every file is
        replaced atomically; ``report.html`` is written last, so its presence means the
        figures and the Markdown beside it are complete.
        """
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise ValueError(f"out_dir: {out} exists and is not a folder")
        markdown = self.render_markdown()
        html_text = self.render_html()
        for block in self._blocks:
            if block.kind == "figure":
                atomic_write_bytes(out / "figures" / f"{block.payload.name}.png", block.payload.png)
        md_path, html_path = out / "report.md", out / "report.html"
        atomic_write_text(md_path, markdown)
        atomic_write_text(html_path, html_text)
        return html_path, md_path
