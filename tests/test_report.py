"""The report builder: HTML and Markdown carry every table and figure, escape user text, and
are written atomically."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from basin.report import builder as report_module
from basin.report.builder import FIGURE_DPI, Report, format_cell
from basin.utils.io import atomic_path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID_TAGS = {"meta", "img", "br", "hr", "link", "input"}


def _figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in))
    fig.subplots().plot([0, 1, 2], [1, 0, 1])
    return fig


def _sample_report() -> Report:
    report = Report("Attractor paper", subtitle="quick run")
    report.heading("Summary")
    report.paragraph("The **attractor** network keeps `87.13%` accuracy.")
    report.note("reduced data (--quick)", kind="warning")
    report.bullets(["first", "second"])
    report.table(["method", "accuracy", "AUROC"],
                 [["baseline", 0.97134, 0.5], ["attractor", 0.88, None]],
                 caption="Table 1 of the paper", id="table-1-baseline")
    report.heading("Figures")
    report.heading("Details", level=3)
    report.figure(_figure(3.0, 2.0), "fig7-reconstructions", "Reconstructions")
    report.figure(_figure(4.0, 2.5), "fig8-scores", "Similarity scores")
    report.table(["epsilon", "accuracy"], [[0.0, 0.98], [20 / 255, 0.27]], id="sweep")
    report.code("basin reproduce attractor-paper --out DIR")
    return report


class _Collector(HTMLParser):
    """Records ids, tags, attributes and checks that non-void tags nest properly."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ids: list[str] = []
        self.tags: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.hrefs: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.append(str(attributes["id"]))
        if tag == "img":
            self.imgs.append(attributes)
        if tag == "a":
            self.hrefs.append(str(attributes.get("href")))
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")


def _parse(html_text: str) -> _Collector:
    parser = _Collector()
    parser.feed(html_text)
    parser.close()
    return parser


def test_write_produces_html_and_markdown_with_every_table_and_figure(tmp_path: Path) -> None:
    report = _sample_report()
    html_path, md_path = report.write(tmp_path / "out")
    out = tmp_path / "out"
    assert (html_path, md_path) == (out / "report.html", out / "report.md")
    assert report.table_ids == ["table-1-baseline", "sweep"]
    assert report.figure_names == ["fig7-reconstructions", "fig8-scores"]

    html_text = html_path.read_text(encoding="utf-8")
    assert html_text.startswith("<!DOCTYPE html>")
    parsed = _parse(html_text)
    assert parsed.errors == [] and parsed.stack == []
    assert len(parsed.ids) == len(set(parsed.ids))
    for table_id in report.table_ids:
        assert table_id in parsed.ids
    assert "script" not in parsed.tags
    # Self-contained: every image is inline and every link an in-page anchor that exists.
    assert all(href.startswith("#") and href[1:] in parsed.ids for href in parsed.hrefs)
    assert len(parsed.hrefs) == 2  # contents lists the two level-2 headings only
    sizes = {"fig7-reconstructions": (3.0, 2.0), "fig8-scores": (4.0, 2.5)}
    assert len(parsed.imgs) == 2
    for name, img in zip(report.figure_names, parsed.imgs, strict=True):
        assert name in parsed.ids
        src = str(img["src"])
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(png)) as image:
            expected = tuple(round(v * FIGURE_DPI) for v in sizes[name])
            assert image.size == expected
            assert (img["width"], img["height"]) == tuple(map(str, expected))

    assert '<table id="table-1-baseline"><caption>Table 1 of the paper</caption>' in html_text
    assert "<figcaption>Similarity scores</figcaption>" in html_text
    assert "The <strong>attractor</strong> network keeps <code>87.13%</code>" in html_text

    markdown = md_path.read_text(encoding="utf-8")
    assert markdown.startswith("# Attractor paper\n\n_quick run_\n")
    assert "**Table 1 of the paper**\n\n| method |" in markdown
    assert "![Similarity scores](figures/fig8-scores.png)\n\n_Similarity scores_" in markdown
    assert "| method | accuracy | AUROC |\n|---|---:|---:|" in markdown
    assert "| baseline | 0.9713 | 0.5 |" in markdown
    assert "| attractor | 0.88 | — |" in markdown
    assert "| epsilon | accuracy |" in markdown
    assert "> [!WARNING]\n> reduced data (--quick)" in markdown
    for name in report.figure_names:
        assert f"](figures/{name}.png)" in markdown
        png_path = tmp_path / "out" / "figures" / f"{name}.png"
        assert png_path.read_bytes().startswith(PNG_SIGNATURE)
        with Image.open(png_path) as image:
            image.verify()
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == sorted(
        ["figures", "report.html", "report.md", "fig7-reconstructions.png", "fig8-scores.png"])


def test_user_strings_are_escaped_and_inline_markup_applied() -> None:
    evil = "<script>alert('x')</script> & **bold** `a<b>`"
    report = Report(evil, subtitle=evil)
    report.heading(evil)
    report.paragraph(evil)
    report.bullets([evil])
    report.note(evil, kind="danger")
    report.table([evil], [[evil]], caption=evil)
    report.code(evil)
    html_text = report.render_html()
    assert "<script" not in html_text
    assert ("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; <strong>bold</strong>"
            in html_text)
    assert "<code>a&lt;b&gt;</code>" in html_text
    assert "<pre><code>&lt;script&gt;" in html_text
    assert "script" not in _parse(html_text).tags

    markdown = report.render_markdown()
    outside_code = re.sub(r"`[^`\n]+`|```text\n.*?\n```", "", markdown, flags=re.S)
    assert re.search(r"(?<!\\)<script", outside_code) is None  # only as escaped \<script
    assert "\\<script\\>" in markdown
    assert "`a<b>`" in markdown  # code spans are literal in Markdown, left as written


def test_table_cells_are_formatted_and_pipes_escaped_in_markdown() -> None:
    assert [format_cell(v) for v in (0.123456, np.float32(0.5), 3, True, None, float("nan"),
                                      "x")] == ["0.1235", "0.5", "3", "True", "—", "—", "x"]
    report = Report("t")
    report.table(["a|b", "n"], [["x|y", 1], ["z", 2]], id="pipes")
    markdown = report.render_markdown()
    assert "| a\\|b | n |\n|---|---:|\n| x\\|y | 1 |\n| z | 2 |" in markdown
    assert '<td class="num">2</td>' in report.render_html()


def test_bad_arguments_raise_clear_errors() -> None:
    report = Report("t")
    with pytest.raises(ValueError, match=r"rows\[1\]: has 1 cells, the header has 2"):
        report.table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(ValueError, match="name: 'bad name' is not a slug"):
        report.figure(_figure(1, 1), "bad name", "c")
    report.figure(_figure(1, 1), "dup", "c")
    with pytest.raises(ValueError, match="name: 'dup' is already used"):
        report.figure(_figure(1, 1), "dup", "c")
    with pytest.raises(ValueError, match="id: 'dup' is already used"):
        report.table(["a"], [[1]], id="dup")
    with pytest.raises(ValueError, match="level"):
        report.heading("x", level=1)
    with pytest.raises(ValueError, match="kind"):
        report.note("x", kind="fatal")
    with pytest.raises(ValueError, match="title"):
        Report("  ")
    assert report.figure_names == ["dup"] and report.table_ids == []


def test_figure_created_with_pyplot_is_closed() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    assert plt.fignum_exists(fig.number)
    Report("t").figure(fig, "pyplot-figure", "c")
    assert not plt.fignum_exists(fig.number)


def _no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_failure_while_rendering_leaves_previous_report_untouched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = _sample_report()
    (tmp_path / "report.html").write_text("previous report")
    calls = []

    def failing_uri(png: bytes) -> str:
        calls.append(png)
        if len(calls) == 2:
            raise RuntimeError("encoder broke mid-way")
        return "data:image/png;base64,"

    monkeypatch.setattr(report_module, "png_data_uri", failing_uri)
    with pytest.raises(RuntimeError, match="mid-way"):
        report.write(tmp_path)
    assert len(calls) == 2
    assert (tmp_path / "report.html").read_text() == "previous report"
    assert not (tmp_path / "report.md").exists()
    assert _no_temp_files(tmp_path)


def test_failure_while_writing_figures_leaves_no_report_html(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = _sample_report()
    real_write = report_module.atomic_write_bytes
    written = []

    def failing_write(path: Path, data: bytes) -> None:
        if written:
            # Fail inside the atomic write, after part of the temp file exists.
            with atomic_path(path) as tmp:
                tmp.write_bytes(data[:10])
                raise OSError("disk full")
        real_write(path, data)
        written.append(path)

    monkeypatch.setattr(report_module, "atomic_write_bytes", failing_write)
    with pytest.raises(OSError, match="disk full"):
        report.write(tmp_path)
    assert [p.name for p in written] == ["fig7-reconstructions.png"]
    assert not (tmp_path / "report.html").exists()
    assert not (tmp_path / "figures" / "fig8-scores.png").exists()
    assert _no_temp_files(tmp_path)


def test_heading_anchors_stay_unique_beside_chosen_ids() -> None:
    report = Report("t")
    report.table(["a"], [[1]], id="s1-results")
    report.heading("Results")
    report.heading("Results")
    ids = _parse(report.render_html()).ids
    assert sorted(ids) == ["s1-results", "s2-results", "s3-results"]
