"""``basin train`` and ``basin smoke`` end to end, on the built-in toy problem (and, for the
smoke run, on the real MNIST mirror)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import basin.training.trainer as trainer_module
from basin.cli import main
from basin.training import PRESETS, load_run, load_train_data, toy_split, train
from basin.utils.io import load_tensors

WIDTHS = "12,10,8,6,8,10,12"
TOY_ARGS = ["--preset", "paper-attractor", "--dataset", "toy", "--widths", WIDTHS,
            "--n-classes", "3", "--train-size", "240", "--val-size", "60",
            "--alpha", "0.5,0.01,0.49", "--jacobian", "projection", "--batch-size", "16",
            "--lr", "0.02,0.02,0.02,0.01", "--max-epochs", "2", "--patience", "2",
            "--seed", "3", "--device", "cpu", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> tuple[Path, str]:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cli") / "run"
    result = invoke("train", *TOY_ARGS, "--out", str(out))
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train_writes_the_four_files_with_their_content(toy_run):
    out, output = toy_run
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "history.json",
                                                      "metrics.json", "model.safetensors",
                                                      "model.safetensors.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == {"widths": [12, 10, 8, 6, 8, 10, 12], "n_classes": 3,
                               "output_activation": "relu"}
    train_cfg = config["train"]
    assert train_cfg["weights"] == [0.5, 0.01, 0.49]
    assert train_cfg["learning_rates"] == [0.02, 0.02, 0.02, 0.01]
    assert (train_cfg["seed"], train_cfg["train_size"], train_cfg["val_size"]) == (3, 240, 60)
    assert (train_cfg["jacobian"], train_cfg["preset"]) == ("projection", "paper-attractor")
    assert config["run"]["seed"] == 3 and "torch" in config["run"]["versions"]
    assert config["run"]["device"] == "cpu"

    history = json.loads((out / "history.json").read_text())["stages"]
    assert [s["lr"] for s in history] == [0.02, 0.02, 0.02, 0.01]
    for stage in history:
        assert 1 <= len(stage["epochs"]) <= 2
        for epoch in stage["epochs"]:
            assert set(epoch["loss"]) == {"total", "reconstruction", "eigen", "classification"}
            assert 0 <= epoch["val_accuracy"] <= 1 and epoch["wall_s"] > 0

    metrics = json.loads((out / "metrics.json").read_text())
    net = load_run(out).net
    x, y = toy_split("test", 12, 3)
    expected = (net.logits(x).argmax(1) == y).float().mean().item()
    assert metrics["test_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert metrics["n_test"] == len(y) and metrics["wall_s"] > 0
    assert f"test accuracy: {metrics['test_accuracy']:.4f}" in output


def test_train_matches_the_library_bit_exactly(toy_run, tmp_path):
    out, _ = toy_run
    config = PRESETS["paper-attractor"].replace(
        dataset="toy", widths=(12, 10, 8, 6, 8, 10, 12), n_classes=3, train_size=240,
        val_size=60, weights=(0.5, 0.01, 0.49), jacobian="projection", batch_size=16,
        learning_rates=(0.02, 0.02, 0.02, 0.01), max_epochs=2, patience=2, seed=3)
    train(config, load_train_data(config), tmp_path / "lib", device="cpu")
    cli, lib = load_tensors(out / "model.safetensors"), load_tensors(tmp_path / "lib" /
                                                                    "model.safetensors")
    assert cli.keys() == lib.keys()
    assert all(torch.equal(cli[k], lib[k]) for k in cli)


def test_train_refuses_an_existing_run_and_resume_sees_it_is_complete(toy_run):
    out, _ = toy_run
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = invoke("train", *TOY_ARGS, "--out", str(out))
    assert again.exit_code == 1 and "--resume" in again.output
    done = invoke("train", "--out", str(out), "--resume", "--quiet")
    assert done.exit_code == 0 and "already complete" in done.output
    other = invoke("train", "--out", str(out), "--resume", "--max-epochs", "5")
    assert other.exit_code == 1 and "max_epochs" in other.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize(("args", "needle"), [
    (["--alpha", "1,2"], "--alpha"),
    (["--lr", "0.1,0.1"], "learning_rates"),
    (["--train-size", "many"], "--train-size"),
    (["--widths", "12,x,12"], "--widths"),
])
def test_train_rejects_bad_options_naming_them(tmp_path, args, needle):
    result = invoke("train", *TOY_ARGS, *args, "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and needle in result.output
    assert not (tmp_path / "run").exists()


def test_train_needs_a_preset_for_a_new_run(tmp_path):
    result = invoke("train", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "--preset" in result.output


def test_interrupted_train_says_how_to_resume(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "train", interrupted)
    result = CliRunner().invoke(main, ["train", *TOY_ARGS, "--out", str(tmp_path / "r")])
    assert result.exit_code == 130 and "--resume" in result.output


def test_smoke_refuses_a_folder_holding_another_run(toy_run):
    out, _ = toy_run
    result = invoke("smoke", "--out", str(out), "--quiet")
    assert result.exit_code == 1 and "not a smoke run" in result.output


@pytest.mark.slow
def test_smoke_trains_on_mnist_and_prints_its_test_accuracy(mirror_dir, tmp_path):
    result = invoke("smoke", "--out", str(tmp_path / "smoke"), "--mirror", str(mirror_dir),
                    "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "smoke" / "metrics.json").read_text())
    assert metrics["n_test"] == 10_000 and metrics["n_train"] == 2000
    assert metrics["test_accuracy"] > 0.5  # chance is 0.1; two epochs per stage give ~0.8
    assert f"test accuracy: {metrics['test_accuracy']:.4f}" in result.output
    config = json.loads((tmp_path / "smoke" / "config.json").read_text())
    assert len(config["run"]["data_checksums"]) == 4
