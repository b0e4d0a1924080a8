"""basin.audit as a grid of cells (epsilon x attack x data set x input shard), locally.

The cells must change nothing: sharded or not, interrupted and resumed or not, the report's
records and per-input arrays are the same. (Ray gives the same records: test_distributed_ray.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from basin.cli import main
from basin.robustness import audit as audit_module
from basin.robustness.audit_attacks import PER_INPUT, attack_cell
from distributed_work import audit_toy, toy_audit_system

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def system() -> dict[str, Any]:
    return toy_audit_system()


@pytest.fixture(scope="module")
def baseline(system: dict[str, Any]) -> Any:
    return audit_toy(system)


def same_report(a: Any, b: Any) -> None:
    assert a.records == b.records
    assert [r.spec for r in a.runs] == [r.spec for r in b.runs]
    for ra, rb in zip(a.runs, b.runs, strict=True):
        np.testing.assert_array_equal(ra.scores, rb.scores)
        np.testing.assert_array_equal(ra.predicted, rb.predicted)


def test_the_audit_attacks_really_move_the_scores(baseline: Any) -> None:
    # the grid is only worth comparing if the attacks do something
    clean = baseline.value(condition="clean", dataset="id", metric="accuracy", side="none")
    worst = baseline.value(condition="worst-case", epsilon=8 / 255, dataset="id",
                           metric="accuracy")
    assert worst < clean


def test_sharded_cells_merge_to_the_unsharded_audit(system: dict[str, Any],
                                                    baseline: Any) -> None:
    # one cell per spec and set (shards of 20 inputs), and shards of two batches
    same_report(audit_toy(system, shard_size=20), baseline)
    same_report(audit_toy(system, shard_size=8), baseline)
    with pytest.raises(ValueError, match="shard_size"):
        audit_toy(system, shard_size=6)


def test_an_interrupted_audit_resumes_from_its_cells(system: dict[str, Any], baseline: Any,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    stop_after = [7]

    def interrupted(cell: Any, grid: Any) -> Any:
        if len(calls) == stop_after[0]:
            raise KeyboardInterrupt("preempted")
        calls.append(cell.key())
        return attack_cell(cell, grid)

    monkeypatch.setattr(audit_module, "attack_cell", interrupted)
    with pytest.raises(KeyboardInterrupt):
        audit_toy(system, cells_dir=tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    total = manifest["total"]
    assert total == 2 * (4 * 5 + 1 * 3)  # eps x (4 ID specs x 5 shards + 1 OOD x 3 shards)
    calls.clear()
    stop_after[0] = -1
    resumed = audit_toy(system, cells_dir=tmp_path)
    assert len(calls) == total - 7  # only the cells not finished before ran
    same_report(resumed, baseline)
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert len(lines) == total
    record = json.loads(lines[0])["records"][0]
    assert record["metric"] == PER_INPUT and len(record["extra"]["scores"]) == 4
    # the same folder for another system is refused, not mixed in
    with pytest.raises(ValueError, match="another grid"):
        audit_toy(system, cells_dir=tmp_path, seed=4)


def test_cli_executor_ray_without_ray_says_how_to_install(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    result = CliRunner().invoke(main, [
        "audit", "--model", "nowhere.py:f", "--id", "uniform-noise", "--ood", "gaussian-noise",
        "--out", str(tmp_path), "--executor", "ray"])
    assert result.exit_code != 0
    assert "pip install 'basin[ray]'" in result.output
    assert result.output.strip().count("\n") == 0  # one line
    result = CliRunner().invoke(main, [
        "audit", "--model", "nowhere.py:f", "--id", "uniform-noise", "--ood", "gaussian-noise",
        "--out", str(tmp_path), "--batch-size", "4", "--shard-size", "6"])
    assert result.exit_code == 2 and "--shard-size" in result.output


MODEL_FILE = '''
import torch
from torch import nn


def factory():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
'''


def test_cli_rerun_into_the_same_out_skips_the_finished_cells(tmp_path: Path) -> None:
    model = tmp_path / "model.py"
    model.write_text(MODEL_FILE)
    out = tmp_path / "out"
    args = ["audit", "--model", f"{model}:factory", "--id", "uniform-noise", "--ood",
            "gaussian-noise", "--eps", "4/255", "--attacks", "pgd:ce:0:steps=3", "--attacks",
            "pgd:accept-ood:0:steps=3", "--n", "12", "--batch-size", "4", "--out", str(out),
            "--device", "cpu"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    cells = out / "cells" / "records.jsonl"
    assert len(cells.read_text().splitlines()) == 6  # 2 attacks x 3 shards of 4
    records = json.loads((out / "results.json").read_text())["records"]
    cells.write_text("\n".join(cells.read_text().splitlines()[:4]) + "\n")  # lost 2 cells
    before = cells.stat().st_mtime_ns
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert len(cells.read_text().splitlines()) == 6 and cells.stat().st_mtime_ns != before
    assert json.loads((out / "results.json").read_text())["records"] == records
    third = CliRunner().invoke(main, [*args[:-4], "--n", "8", "--out", str(out)])
    assert third.exit_code == 1 and "another grid" in third.output
