"""The HTML report renders in a real (headless) browser: every image decodes, no script errors.

No Playwright: a copy of the report gets a small checker script (the report itself never has
one), headless Chromium runs it and prints the resulting DOM, and the verdict is read back from
a ``<pre id="verdict">`` element. Skipped where no Chromium/Chrome is installed, except on CI
(``CI=true``), where a missing browser is a failure.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from basin.report import figures as F
from basin.report.builder import Report

CHECKER = """<script>
window.__errors = [];
window.onerror = function (message, source, line) {
  window.__errors.push(String(message) + " at " + source + ":" + line);
};
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var verdict = {
    images: images.length,
    decoded: images.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length,
    errors: window.__errors,
    tables: document.querySelectorAll("table").length
  };
  var pre = document.createElement("pre");
  pre.id = "verdict";
  pre.textContent = JSON.stringify(verdict);
  document.body.appendChild(pre);
});
</script>
"""


def _browser() -> str:
    found = (shutil.which("chromium") or shutil.which("chromium-browser")
             or shutil.which("google-chrome"))
    if found is None:
        message = "no chromium, chromium-browser or google-chrome on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI must install Debian's chromium)")
        pytest.skip(message)
    return found


def _report_with_figures() -> Report:
    rng = np.random.default_rng(0)
    report = Report("Browser check <&>", subtitle="figures and tables")
    report.heading("Scores")
    report.note("reduced data (--quick)", kind="warning")
    report.table(["detector", "AUROC"], [["pearson", 0.99], ["msp", 0.91]], id="auroc")
    report.figure(F.score_scatter(rng.normal(1, 0.1, 300), rng.normal(0, 0.1, 300), 0.5,
                                  title="scatter"), "scatter", "Similarity scores")
    report.heading("Images")
    x = torch.rand(3, 1, 8, 8)
    report.figure(F.reconstruction_grid(x, x, [1, 2, 3], [0.9, 0.5, 0.7], title="grid",
                                        threshold=0.6), "grid", "Reconstructions")
    report.figure(F.image_grid(torch.rand(4, 3, 8, 8), title="colour"), "colour", "Colour")
    return report


def test_html_report_renders_in_headless_browser(tmp_path: Path) -> None:
    browser = _browser()
    html_path, _ = _report_with_figures().write(tmp_path / "out")
    original = html_path.read_text(encoding="utf-8")
    assert "<script" not in original
    checked = tmp_path / "checked.html"
    checked.write_text(original.replace("</head>", CHECKER + "</head>", 1), encoding="utf-8")

    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
               "--dump-dom", checked.as_uri()]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=90,
                                check=False)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{browser} did not finish within 90 s: {err}")
    match = re.search(r'<pre id="verdict">(.*?)</pre>', result.stdout, re.S)
    assert match, (f"no verdict in the browser output (rc={result.returncode}); "
                   f"stderr tail: {result.stderr[-2000:]}")
    verdict = json.loads(html.unescape(match.group(1)))
    assert verdict == {"images": 3, "decoded": 3, "errors": [], "tables": 1}
