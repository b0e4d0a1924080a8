"""End to end: the attractor-paper reproduction on a tiny plan writes a complete report."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from basin.cli import main
from basin.cli.reproduce import ATTACK_PRECISIONS
from basin.data import load_dataset
from basin.detectors import PearsonDetector
from basin.metrics import ood_metrics
from basin.report.builder import format_cell
from basin.reproductions.attractor import (
    ReproductionPlan,
    reproduce_attractor_paper,
    train_or_reuse,
)
from basin.training import load_run
from basin.training.backbone_aug import PRECISIONS

TABLES = ("accuracy", "table1", "table2", "table2_calibrated", "ood", "sweep", "adaptive",
          "attractors", "training")
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


@pytest.mark.slow
def test_calibrated_table2_uses_a_validation_threshold(tiny_reproduction: tuple[Path, dict],
                                                       mirror_dir: Path) -> None:
    out, results = tiny_reproduction
    plan = ReproductionPlan.tiny()
    net = load_run(out / "attractor").net.eval()
    val = load_dataset("mnist", "val", mirror=mirror_dir).subset(plan.eval_limit, seed=0)
    detector = PearsonDetector(net, steps=plan.loop_steps, threshold=None)
    threshold = detector.calibrate(val.images, 0.95)
    calibration = results["calibration"]["attractor"]
    assert calibration == {"threshold": pytest.approx(threshold), "acceptance": 0.95,
                           "n_val": plan.eval_limit}
    assert float((detector.score_batches(val.images) >= threshold).double().mean()) >= 0.95
    # the table's clean row is the detector at that T on the paper protocol's test inputs
    test = load_dataset("mnist", "test", mirror=mirror_dir).subset(plan.eval_limit, seed=0)
    ood = load_dataset("fashion-mnist", "test", mirror=mirror_dir, seed=0).subset(
        plan.eval_limit, seed=0)
    expected = ood_metrics(detector.score_batches(test.images),
                           detector.score_batches(ood.images), threshold)
    table = results["tables"]["table2_calibrated"]
    row = table["rows"][0]
    assert row[:2] == ["MNIST vs fashion-mnist", "without attack"]
    assert [cell.split(" ")[0] for cell in row[2:5]] == [
        f"{100 * expected[m]:.2f}%" for m in ("accuracy", "precision", "recall")]
    assert table["header"] == results["tables"]["table2"]["header"]
    assert f"T = {threshold:.4f}" in (out / "report.md").read_text()


@pytest.mark.slow
def test_through_loop_attacks_are_also_run_white_box(tiny_reproduction: tuple[Path, dict]
                                                     ) -> None:
    _out, results = tiny_reproduction
    rows = results["tables"]["adaptive"]["rows"]
    loop = [r for r in rows if ":through-loop" in r[2]]
    transfer = [r for r in loop if r[1] == "F(x)"]
    white_box = [r for r in loop if r[1] == "F(G(x))"]
    assert len(transfer) == len(white_box) == 2 * 2  # two objectives, two networks
    assert all("(transfer" in r[2] for r in transfer)
    assert all(r[2].endswith("(white-box)") for r in white_box)
    # each system is compared with its own clean accuracy on the same inputs
    records = results["records"]["attractor"]["loop_white_box"]
    assert records["settings"]["classify"] == "iterate"
    assert records["settings"]["limit"] == ReproductionPlan.tiny().adaptive_limit
    assert any("against a system classifying F(G(x)) (white-box)" in line
               for line in results["summary"])


@pytest.mark.slow
def test_thread_count_is_recorded(tiny_reproduction: tuple[Path, dict]) -> None:
    _out, results = tiny_reproduction
    assert results["run"]["config"]["threads"] == 1  # the fixture's setting


# ---- the CLI, with the pipelines replaced by recorders ------------------------------------
@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def fake(out_dir: str, **kwargs: Any) -> dict[str, Any]:
        if kwargs.get("seed") == 13:
            raise ValueError("--out: something clear went wrong")
        seen.append({"threads": torch.get_num_threads(), **kwargs})
        return {"summary": ["**net** fine"], "sanity": ["flag"]}

    threads = torch.get_num_threads()
    monkeypatch.setattr("basin.reproductions.attractor.reproduce_attractor_paper", fake)
    monkeypatch.setattr("basin.reproductions.feature_recon.reproduce_feature_recon_paper",
                        fake)
    yield seen
    torch.set_num_threads(threads)


def test_attractor_cli_runs_on_one_thread_unless_told(calls: list[dict[str, Any]],
                                                      tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["reproduce", "attractor-paper", "--out", str(tmp_path), "--device", "cpu"]
    first = runner.invoke(main, base)
    second = runner.invoke(main, [*base, "--threads", "2", "--quick", "--seed", "3"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert [(c["threads"], c["quick"], c["seed"]) for c in calls] == [(1, False, 0),
                                                                       (2, True, 3)]
    assert first.output.splitlines()[0] == "net fine"
    assert f"report: {tmp_path}/report.html" in first.output
    assert "sanity:" not in first.output


def test_feature_recon_cli_passes_the_attack_precision(calls: list[dict[str, Any]],
                                                       tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["reproduce", "feature-recon-paper", "--out", str(tmp_path), "--device", "cpu"]
    assert runner.invoke(main, base).exit_code == 0
    result = runner.invoke(main, [*base, "--attack-precision", "fp32", "--quick"])
    assert result.exit_code == 0, result.output
    assert [(c["attack_precision"], c["plan"]) for c in calls] == [(None, "full"),
                                                                   ("fp32", "quick")]
    assert "sanity: flag" in result.output
    bad = runner.invoke(main, [*base, "--attack-precision", "fp16"])
    assert bad.exit_code == 2 and "--attack-precision" in bad.output
    assert ATTACK_PRECISIONS == PRECISIONS


@pytest.mark.parametrize("command", ["attractor-paper", "feature-recon-paper"])
def test_cli_errors_are_one_line_messages(calls: list[dict[str, Any]], tmp_path: Path,
                                          command: str) -> None:
    runner = CliRunner()
    base = ["reproduce", command, "--out", str(tmp_path)]
    device = runner.invoke(main, [*base, "--device", "nonsense"])
    assert device.exit_code == 2 and "--device 'nonsense'" in device.output
    failed = runner.invoke(main, [*base, "--device", "cpu", "--seed", "13"])
    assert failed.exit_code == 1
    assert "Error: --out: something clear went wrong" in failed.output
    assert "Traceback" not in failed.output and calls == []
