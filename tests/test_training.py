"""basin.training: the layer-wise schedule, early stopping, checkpoints, resume, load_run.

Every run here is a tiny network (12-10-8-6-8-10-12, three pretraining stages as in the paper's
network) on the built-in toy problem, on the CPU with one thread, so the file runs in
seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from basin.models.attractor import AttractorNet
from basin.training import (
    PRESETS,
    RunExistsError,
    TrainConfig,
    TrainData,
    build_model,
    load_run,
    toy_split,
    train,
)
from basin.training.checkpoint import STATE_FILE, TENSORS_FILE
from basin.training.run import CHECKPOINT_DIR, MODEL_FILE
from basin.training.trainer import derive_seed
from basin.utils.io import CheckpointError, load_tensors

WIDTHS = (12, 10, 8, 6, 8, 10, 12)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**changes) -> TrainConfig:
    base = TrainConfig(dataset="toy", widths=WIDTHS, n_classes=3, weights=(0.5, 0.01, 0.49),
                       jacobian="projection", batch_size=16, max_epochs=3, patience=3,
                       learning_rates=(0.02, 0.02, 0.02, 0.01), eval_batch_size=50)
    return base.replace(**changes)


def tiny_data(n_train: int = 240, n_val: int = 60, n_test: int = 60) -> TrainData:
    return TrainData(*toy_split("train", WIDTHS[0], 3, n_train),
                     *toy_split("val", WIDTHS[0], 3, n_val),
                     *toy_split("test", WIDTHS[0], 3, n_test))


def state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# -- config ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name):
    config = PRESETS[name]
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.preset == name
    assert again.learning_rates == (0.001, 0.005, 0.005, 0.0005)
    assert (again.batch_size, again.max_epochs, again.patience) == (64, 100, 8)


def test_presets_follow_the_paper():
    base, attr, full = (PRESETS[n] for n in ("paper-baseline", "paper-attractor",
                                             "attractor-full"))
    assert base.weights == (0.99, 0.0, 0.01) and base.train_size is None
    assert attr.weights == (0.988, 0.002, 0.01) and attr.train_size == 1000
    assert attr.jacobian == "exact-fast"
    assert full.weights == attr.weights and full.train_size is None
    assert (full.jacobian, full.projections) == ("projection", 1)
    assert base.widths == (784, 500, 300, 300, 300, 500, 784)


@pytest.mark.parametrize(("changes", "field"), [
    ({"learning_rates": (0.1, 0.1)}, "learning_rates"),
    ({"weights": (1.0, -0.1, 0.0)}, "weights"),
    ({"widths": (8, 4, 6)}, "widths"),
    ({"jacobian": "exactly"}, "jacobian"),
    ({"train_size": 0}, "train_size"),
    ({"patience": 0}, "patience"),
    ({"dataset": "imagenet"}, "dataset"),
])
def test_config_rejects_bad_values_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**changes)


def test_derived_seeds_differ_per_stage_epoch_and_purpose():
    seeds = {derive_seed(0, s, e, p) for s in range(4) for e in range(20) for p in range(3)}
    assert len(seeds) == 4 * 20 * 3
    assert derive_seed(5, 1, 2, 0) == derive_seed(5, 1, 2, 0) != derive_seed(6, 1, 2, 0)


# -- learning and the schedule -----------------------------------------------------------
def test_tiny_network_learns_the_toy_problem(tmp_path):
    config, data = tiny_config(max_epochs=6, patience=6), tiny_data()
    untrained, _ = build_model(config)
    chance = (untrained.logits(data.val_x).argmax(1) == data.val_y).float().mean()
    assert chance < 0.6
    result = train(config, data, tmp_path / "run")
    assert result.metrics["val_accuracy"] >= 0.9  # chance is 1/3
    assert result.metrics["test_accuracy"] >= 0.9
    finetune = result.history[-1]["epochs"]
    assert finetune[-1]["loss"]["reconstruction"] < finetune[0]["loss"]["reconstruction"]


def test_stages_train_their_own_parameters_with_their_learning_rates(tmp_path):
    config = tiny_config(max_epochs=1, learning_rates=(0.011, 0.012, 0.013, 0.004))
    seen = {}

    def record(info):
        group = info.optimizer.param_groups[0]
        seen[info.stage.index] = (group["lr"], {id(p) for p in group["params"]}, info.stage)

    result = train(config, tiny_data(), tmp_path / "run", on_epoch_end=record)
    net, heads = result.net, result.heads
    assert [seen[k][0] for k in range(4)] == [0.011, 0.012, 0.013, 0.004]
    assert [s["lr"] for s in result.history] == [0.011, 0.012, 0.013, 0.004]
    assert [s["name"] for s in result.history] == ["pretrain-1", "pretrain-2", "pretrain-3",
                                                    "finetune"]
    for k in range(3):
        enc, dec = net.encoder[k], net.decoder[len(net.decoder) - 1 - k]
        expected = {id(p) for m in (enc, dec, heads[k]) for p in m.parameters()}
        assert seen[k][1] == expected
        assert seen[k][2].stack.in_features == WIDTHS[k]
    assert seen[3][1] == {id(p) for p in net.parameters()}


def test_finetuning_starts_from_the_last_stage_head(tmp_path):
    # A negligible fine-tuning rate leaves the head where fine-tuning initialised it.
    config = tiny_config(max_epochs=2, learning_rates=(0.01, 0.01, 0.01, 1e-12))
    result = train(config, tiny_data(), tmp_path / "run")
    fresh = AttractorNet(WIDTHS, 3)
    assert torch.allclose(result.net.head.weight, result.heads[2].weight, atol=1e-9)
    assert torch.allclose(result.net.head.bias, result.heads[2].bias, atol=1e-9)
    assert not torch.allclose(fresh.head.weight, result.heads[2].weight, atol=1e-3)


def test_no_pretrain_runs_only_finetuning(tmp_path):
    result = train(tiny_config(pretrain=False), tiny_data(), tmp_path / "run")
    assert [s["name"] for s in result.history] == ["finetune"]


def test_early_stopping_stops_after_patience_and_restores_the_best_weights(tmp_path):
    config = tiny_config(max_epochs=40, patience=2)
    snapshots: dict[tuple[int, int], dict] = {}

    def keep(info):
        snapshots[info.stage.index, info.epoch] = {
            "net": state_of(info.stage.net), "head0": state_of(info.heads[0])}

    result = train(config, tiny_data(), tmp_path / "run", on_epoch_end=keep)
    for stage in result.history:
        accuracies = [e["val_accuracy"] for e in stage["epochs"]]
        best = stage["best_epoch"]
        assert stage["stopped"] == "patience"
        assert len(accuracies) == best + config.patience
        assert max(accuracies) == accuracies[best - 1] == stage["best_val_accuracy"]
        assert max(accuracies[best:]) <= accuracies[best - 1]
    best_ft = result.history[-1]["best_epoch"]
    last_ft = len(result.history[-1]["epochs"])
    assert_same_tensors(state_of(result.net), snapshots[3, best_ft]["net"])
    last = snapshots[3, last_ft]["net"]
    assert any(not torch.equal(v, last[k]) for k, v in state_of(result.net).items())
    # The stage-1 head is not touched after its stage: it must hold that stage's best.
    assert_same_tensors(state_of(result.heads[0]),
                        snapshots[0, result.history[0]["best_epoch"]]["head0"])


# -- checkpoints, resume, run folder -----------------------------------------------------
class Interrupt:
    """on_epoch_end hook that simulates Ctrl-C after ``after`` epochs of the whole run."""

    def __init__(self, after: int) -> None:
        self.after, self.count = after, 0

    def __call__(self, info) -> None:
        self.count += 1
        if self.count == self.after:
            raise KeyboardInterrupt


@pytest.mark.parametrize("after", [2, 3, 7, 10])
def test_resume_reproduces_an_uninterrupted_run_bit_exactly(tmp_path, after):
    # after=3 interrupts on a stage's last epoch, 7 inside stage 3, 10 inside fine-tuning.
    config, data = tiny_config(), tiny_data()
    whole = train(config, data, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train(config, data, tmp_path / "cut", on_epoch_end=Interrupt(after))
    assert (tmp_path / "cut" / CHECKPOINT_DIR / TENSORS_FILE).is_file()
    assert not (tmp_path / "cut" / MODEL_FILE).exists()
    resumed = train(config, data, tmp_path / "cut", resume=True)
    assert_same_tensors(load_tensors(tmp_path / "whole" / MODEL_FILE),
                        load_tensors(tmp_path / "cut" / MODEL_FILE))
    assert_same_tensors(state_of(whole.heads), state_of(resumed.heads))

    def strip(history):
        return [[{k: v for k, v in e.items() if k != "wall_s"} for e in s["epochs"]]
                for s in history]
    assert strip(whole.history) == strip(resumed.history)
    assert whole.metrics["test_loss"] == resumed.metrics["test_loss"]
    assert not (tmp_path / "cut" / CHECKPOINT_DIR).exists()


def test_run_folder_round_trip_is_bit_exact(tmp_path):
    config = tiny_config(max_epochs=2)
    result = train(config, tiny_data(), tmp_path / "run")
    loaded = load_run(tmp_path / "run")
    assert_same_tensors(state_of(loaded.net), state_of(result.net))
    assert loaded.metrics == json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert TrainConfig.from_dict(loaded.config["train"]) == config
    assert loaded.config["model"] == result.net.config()
    assert loaded.config["run"]["seed"] == config.seed
    x = tiny_data().test_x
    assert torch.equal(loaded.net.reconstruct(x), result.net.reconstruct(x))
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["config.json", "history.json", "metrics.json", "model.safetensors",
                     "model.safetensors.json"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_config(max_epochs=1), tiny_data(), out)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for path in src.iterdir():
        (dst / path.name).write_bytes(path.read_bytes())
    return dst


def test_load_run_names_a_missing_model_file(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    (run / MODEL_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*not found"):
        load_run(run)


def test_load_run_names_a_truncated_model_file(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    data = (run / MODEL_FILE).read_bytes()
    (run / MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_run(run)


def test_load_run_names_a_model_that_does_not_match_its_config(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["model"]["widths"] = [8, 7, 5, 4, 5, 7, 8]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*shape"):
        load_run(run)


@pytest.mark.parametrize("content", [None, "{not json", '{"model": {}}'])
def test_load_run_names_a_bad_config(finished_run, tmp_path, content):
    run = copy_run(finished_run, tmp_path / "run")
    if content is None:
        (run / "config.json").unlink()
    else:
        (run / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_run(run)


@pytest.mark.parametrize("damage", ["truncate", "missing-json", "torn"])
def test_resume_names_a_damaged_checkpoint(tmp_path, damage):
    config, data, out = tiny_config(), tiny_data(), tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, data, out, on_epoch_end=Interrupt(2))
    folder = out / CHECKPOINT_DIR
    if damage == "truncate":
        blob = (folder / TENSORS_FILE).read_bytes()
        (folder / TENSORS_FILE).write_bytes(blob[:100])
        expected = TENSORS_FILE
    elif damage == "missing-json":
        (folder / STATE_FILE).unlink()
        expected = STATE_FILE
    else:  # tensors of one epoch with the small state of another
        state = json.loads((folder / STATE_FILE).read_text())
        state["checkpoint_id"] -= 1
        (folder / STATE_FILE).write_text(json.dumps(state))
        expected = TENSORS_FILE
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        train(config, data, out, resume=True)


def test_refuses_to_clobber_a_finished_or_partial_run(finished_run, tmp_path):
    before = {p.name: p.read_bytes() for p in finished_run.iterdir()}
    with pytest.raises(RunExistsError, match="--resume"):
        train(tiny_config(max_epochs=1), tiny_data(), finished_run)
    assert {p.name: p.read_bytes() for p in finished_run.iterdir()} == before
    partial = tmp_path / "partial"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), tiny_data(), partial, on_epoch_end=Interrupt(1))
    with pytest.raises(RunExistsError, match="partial"):
        train(tiny_config(), tiny_data(), partial)


def test_resume_refuses_another_config_and_loads_a_complete_run(finished_run):
    with pytest.raises(ValueError, match="max_epochs"):
        train(tiny_config(max_epochs=5), tiny_data(), finished_run, resume=True)

    def never(info):
        raise AssertionError("a complete run must not be trained again")

    result = train(tiny_config(max_epochs=1), None, finished_run, resume=True,
                   on_epoch_end=never)
    assert result.metrics == json.loads((finished_run / "metrics.json").read_text())


def test_train_checks_data_against_the_config(tmp_path):
    data = tiny_data()
    with pytest.raises(ValueError, match="widths"):
        train(tiny_config(widths=(10, 6, 5, 4, 5, 6, 10)), data, tmp_path / "a")
    with pytest.raises(ValueError, match="labels"):
        train(tiny_config(n_classes=2), data, tmp_path / "b")
