"""End to end: the attractor-paper reproduction on a tiny plan writes a complete report."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import torch

from basin.experiments.attractor_paper import (
    ReproductionPlan,
    reproduce_attractor_paper,
    train_or_reuse,
)
from basin.experiments.report import format_cell

TABLES = ("accuracy", "table1", "table2", "ood", "sweep", "adaptive", "attractors", "training")
FIGURES = ("recon-baseline-mnist-clean", "recon-attractor-fashion-mnist-fgsm",
           "scores-baseline-clean", "scores-attractor-fgsm", "iterates-attractor",
           "perturbation-levels", "roc-fashion", "sweep-accuracy", "sweep-auroc")


@pytest.fixture(scope="module")
def tiny_reproduction(mirror_dir: Path, tmp_path_factory: pytest.TempPathFactory
                      ) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("repro")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = reproduce_attractor_paper(out, plan=ReproductionPlan.tiny(), mirror=mirror_dir,
                                            progress=False)
    finally:
        torch.set_num_threads(threads)
    return out, results


@pytest.mark.slow
def test_report_has_every_table_and_figure(tiny_reproduction: tuple[Path, dict]) -> None:
    out, results = tiny_reproduction
    html = (out / "report.html").read_text()
    markdown = (out / "report.md").read_text()
    assert set(results["tables"]) == set(TABLES)
    for table in TABLES:
        assert f'id="{table}"' in html
    for name in FIGURES:
        assert f"figures/{name}.png" in markdown
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        match = re.search(rf'id="{name}".*?src="data:image/png;base64,([^"]+)"', html, re.S)
        assert match, name
        assert base64.b64decode(match.group(1))[:4] == b"\x89PNG"
    assert "QUICK RUN" in markdown  # reduced data is labelled


@pytest.mark.slow
def test_results_json_matches_the_markdown_tables(tiny_reproduction: tuple[Path, dict]
                                                   ) -> None:
    out, _ = tiny_reproduction
    results = json.loads((out / "results.json").read_text())
    markdown = (out / "report.md").read_text()
    for table in results["tables"].values():
        assert "| " + " | ".join(table["header"]) + " |" in markdown
        for row in table["rows"]:
            cells = [format_cell(c).replace("|", "\\|") for c in row]
            assert "| " + " | ".join(cells) + " |" in markdown, row


@pytest.mark.slow
def test_paper_numbers_and_run_record(tiny_reproduction: tuple[Path, dict]) -> None:
    _out, results = tiny_reproduction
    rows = results["tables"]["accuracy"]["rows"]
    assert rows[0][:3] == ["baseline", "clean", "98.17%"]
    assert rows[4][:3] == ["attractor", "FGSM 20/255, paper's objective", "87.13%"]
    record = results["run"]
    assert record["seed"] == 0 and record["versions"]["torch"].startswith("2.13")
    assert any(k.startswith("mnist/") for k in record["data_checksums"])
    # the table's clean accuracy is the evaluation's own record, not a copy of the training one
    paper = results["records"]["baseline"]["paper"]["records"]
    clean = next(r["value"] for r in paper if (r["condition"], r["dataset"], r["metric"]) ==
                 ("clean", "mnist", "accuracy"))
    assert rows[0][3] == f"{100 * clean:.2f}%"


@pytest.mark.slow
def test_existing_runs_are_reused(tiny_reproduction: tuple[Path, dict], mirror_dir: Path) -> None:
    out, _ = tiny_reproduction
    before = (out / "baseline" / "model.safetensors").read_bytes()
    result, _ = train_or_reuse("baseline", ReproductionPlan.tiny(), out, mirror=mirror_dir,
                               device=torch.device("cpu"), progress=False)
    assert (out / "baseline" / "model.safetensors").read_bytes() == before
    assert result.metrics["test_accuracy"] == json.loads(
        (out / "baseline" / "metrics.json").read_text())["test_accuracy"]
