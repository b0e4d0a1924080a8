"""``basin audit`` with a model defined in a file outside the package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from basin.cli import main
from basin.cli.audit import build_system, load_factory
from basin.detectors import MSPDetector

MODEL_FILE = '''
import torch
from torch import nn


def factory():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def with_detector():
    model = factory()
    return model, lambda x: -(x.flatten(1) - 0.5).abs().mean(1)
'''


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere" / "my_model.py"
    path.parent.mkdir()
    path.write_text(MODEL_FILE)
    return path


def test_audit_cli_on_synthetic_sets_writes_the_three_files(model_file: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "audit", "--model", f"{model_file}:with_detector", "--id", "uniform-noise",
        "--ood", "gaussian-noise", "--eps", "0", "--eps", "4/255", "--attacks", "fast",
        "--n", "12", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "worst-case accuracy" in result.output
    payload = json.loads((out / "results.json").read_text())
    assert payload["run"]["seed"] == 0 and "torch" in payload["run"]["versions"]
    assert payload["config"]["n_id"] == 12 and payload["config"]["ood"] == ["gaussian-noise"]
    records = {(r["condition"], r["epsilon"], r["dataset"], r["side"], r["metric"]): r["value"]
               for r in payload["records"]}
    clean = records[("clean", 0.0, "uniform-noise", "none", "accuracy")]
    assert records[("worst-case", 0.0, "uniform-noise", "id", "accuracy")] == clean
    assert records[("worst-case", 4 / 255, "uniform-noise", "id", "accuracy")] <= clean
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert "| epsilon | ID accuracy |" in (out / "report.md").read_text()


def test_factory_loading_and_default_msp(model_file: Path, tmp_path: Path) -> None:
    model, detector = build_system(f"{model_file}:factory", None)
    assert isinstance(detector, MSPDetector)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(detector.score(x), torch.softmax(model(x), 1).max(1).values)
    assert load_factory("basin.data:dataset_names")()[0] == "mnist"
    for bad, message in [("nocolon", "expected package.module:factory"),
                         (f"{tmp_path}/missing.py:factory", "not found"),
                         (f"{model_file}:absent", "no callable 'absent'"),
                         ("no_such_module_xyz:f", "cannot import")]:
        with pytest.raises(ValueError, match=message):
            load_factory(bad)


def test_bad_options_fail_before_any_work(model_file: Path, tmp_path: Path) -> None:
    base = ["audit", "--model", f"{model_file}:factory", "--out", str(tmp_path / "o")]
    for extra, message in [(["--id", "mnist", "--ood", "nope"], "unknown dataset"),
                           (["--id", "mnist", "--ood", "omniglot", "--eps", "2"], "epsilon"),
                           (["--id", "mnist", "--ood", "omniglot", "--attacks", "pgd:x:1"],
                            "unknown objective")]:
        result = CliRunner().invoke(main, base + extra)
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_audit_cli_on_the_mirror(model_file: Path, mirror_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "mnist"
    result = CliRunner().invoke(main, [
        "audit", "--model", f"{model_file}:factory", "--id", "mnist", "--ood", "fashion-mnist",
        "--ood", "uniform-noise", "--eps", "8/255", "--attacks", "pgd:ce:1/255:steps=3",
        "--attacks", "pgd:accept-ood:1/255:steps=3", "--n", "10", "--out", str(out),
        "--mirror", str(mirror_dir), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "results.json").read_text())
    assert payload["config"]["ood"] == ["fashion-mnist", "uniform-noise"]
    runs = {r["condition"] for r in payload["records"]}
    assert {"pgd:ce:8/255:steps=3", "pgd:accept-ood:8/255:steps=3"} <= runs
