"""``basin evaluate`` on a small trained run over the real mirror."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from basin.cli import main
from basin.data import load_dataset
from basin.detectors import pearson_correlation
from basin.training import PRESETS, load_run, load_train_data, train


@pytest.fixture(scope="module")
def small_run(mirror_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    config = PRESETS["paper-baseline"].replace(train_size=600, val_size=300, max_epochs=1)
    train(config, load_train_data(config, mirror=mirror_dir), out)
    return out


def _records(path: Path) -> dict[tuple[str, str, str], float | None]:
    payload = json.loads(path.read_text())
    return {(r["condition"], r["dataset"], r["metric"]): r["value"] for r in payload["records"]}


@pytest.mark.slow
def test_evaluate_writes_records_that_match_a_direct_computation(
        small_run: Path, mirror_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(main, [
        "evaluate", "--run", str(small_run), "--ood", "fashion-mnist", "--limit", "40",
        "--attack", "fgsm:ce:0/255", "--attack", "pgd:ce:20/255:steps=5",
        "--attack", "square:ce:20/255:queries=20", "--corruption", "contrast:5",
        "--json", str(out), "--mirror", str(mirror_dir)])
    assert result.exit_code == 0, result.output
    records = _records(out)

    net = load_run(small_run).net
    test = load_dataset("mnist", "test", mirror=mirror_dir).subset(40, seed=0)
    with torch.no_grad():
        accuracy = float((net.logits(test.images).argmax(1) == test.labels).double().mean())
        scores = pearson_correlation(test.images, net.reconstruct(test.images))
    assert records[("clean", "mnist", "accuracy")] == pytest.approx(accuracy)
    assert records[("clean", "mnist", "acceptance_rate")] == pytest.approx(
        float((scores >= 0.8).double().mean()))
    # epsilon 0 is the clean condition; a real attack cannot raise accuracy
    assert records[("fgsm:ce:0/255", "mnist", "accuracy")] == pytest.approx(accuracy)
    assert records[("pgd:ce:20/255:steps=5", "mnist", "accuracy")] <= accuracy
    for key in (("clean", "fashion-mnist", "auroc"), ("contrast:5", "fashion-mnist", "auroc")):
        assert 0.0 <= records[key] <= 1.0
    payload = json.loads(out.read_text())
    assert any("eps=0 reproduces clean: OK" in flag for flag in payload["sanity"])
    assert payload["run"]["seed"] == 0 and "sanity:" in result.output


@pytest.mark.parametrize("args, message", [
    (["--attack", "pgd:nope:8/255"], "unknown objective"),
    (["--attack", "pgd:ce:300/255"], "epsilon"),
    (["--attack", "zap:ce:8/255"], "unknown attack"),
    (["--ood", "not-a-dataset"], "unknown dataset"),
    (["--corruption", "gaussian-noise:9"], "severity"),
])
def test_bad_specs_fail_before_any_work(tmp_path: Path, args: list[str], message: str) -> None:
    # the run folder does not even exist: the spec error must come first
    result = CliRunner().invoke(main, ["evaluate", "--run", str(tmp_path / "missing"), *args])
    assert result.exit_code == 2
    assert message in result.output.lower()


def test_missing_run_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["evaluate", "--run", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "run folder not found" in result.output
