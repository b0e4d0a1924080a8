"""The backbone ablation report reads finished runs' results.json and tabulates them as is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from basin.reproductions.feature_recon.ablation import ablation_tables, main, write_ablation


def fake_results(shift: float, smoothing: float | None) -> dict[str, Any]:
    metrics = [{"backbone": "cifar10", "detector": det, "set": name, "auroc": auroc + shift}
               for det, auroc in (("msp", 0.90), ("mahalanobis", 0.50))
               for name in ("far-ood (all)", "tiny-imagenet-resize", "anomaly (all)")]
    metrics.append({"backbone": "cifar6", "detector": "msp", "set": "cifar4-vehicles",
                    "auroc": 0.8})
    return {"metrics": metrics, "plan": {"name": "quick"},
            "backbones": {"cifar10": {"label_smoothing": smoothing, "n_train": 8000,
                                      "epochs": 2, "test_accuracy": 0.7, "test_ece": 0.1}}}


def test_tables_put_each_run_beside_the_other() -> None:
    tables = ablation_tables({"ls0.2": fake_results(0.0, None), "ce": fake_results(0.3, 0.0)})
    header, rows = tables["auroc"]["header"], tables["auroc"]["rows"]
    assert header[:3] == ["detector", "far-OOD: ls0.2", "far-OOD: ce"]
    by_det = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert by_det["mahalanobis"]["far-OOD: ls0.2"] == 50.0
    assert by_det["mahalanobis"]["far-OOD: ce"] == 80.0
    assert by_det["msp"]["Tiny-ImageNet (resize): ce"] == 120.0  # read, not recomputed
    assert by_det["msp"]["near-OOD: ls0.2"] == 80.0
    assert by_det["mahalanobis"]["near-OOD: ce"] is None  # not in that run: a dash
    assert by_det["msp"]["LSUN (resize): ce"] is None
    assert tables["backbones"]["rows"][1] == ["ce", "cifar10", 0.0, 8000, 2, 70.0, 10.0,
                                              "quick"]
    with pytest.raises(ValueError, match="at least one"):
        ablation_tables({})


def test_report_is_written_from_folders(tmp_path: Path) -> None:
    for name, shift in (("a", 0.0), ("b", 0.05)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(fake_results(shift, 0.2)))
    main(["--out", str(tmp_path / "out"), f"A={tmp_path / 'a'}", f"B={tmp_path / 'b'}"])
    saved = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert saved["tables"]["auroc"]["rows"][0][1:3] == [90.0, 95.0]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| msp | 90.0 | 95.0 |" in markdown or "| msp | 90 | 95 |" in markdown
    assert (tmp_path / "out" / "figures" / "ablation-far-ood.png").stat().st_size > 1000
    with pytest.raises(ValueError, match=r"no results\.json"):
        write_ablation(tmp_path / "x", {"A": tmp_path / "missing"})
