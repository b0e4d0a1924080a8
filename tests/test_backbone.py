"""CIFAR-10 backbones (AirbenchNet, ResNet18), their training recipe, checkpoints and CLI.

Unit tests use narrow networks and a synthetic two-colour problem so that a whole training
run takes about a second on one CPU thread; the CLI test reads the real mirror (a 64-image
subset of each split).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F

from basin.data import ImageDataset
from basin.models.airbench import AirbenchNet
from basin.models.cifar import (
    CIFAR_MEAN,
    CIFAR_STD,
    CifarNormalize,
    build_backbone,
    build_from_config,
    load_backbone,
    save_backbone,
)
from basin.models.feature_classifier import FeatureClassifier, check_feature_classifier
from basin.models.resnet import ResNet18
from basin.training.backbone import (
    BackboneConfig,
    default_backbone_config,
    evaluate_backbone,
    lr_factor,
    train_backbone,
)
from basin.training.backbone_aug import (
    augment_batch,
    cpu_has_fast_bf16,
    predict_logits,
    resolve_precision,
    translate_batch,
    tta_logits,
)
from basin.training.backbone_state import Lookahead
from basin.utils.io import CheckpointError

TINY = {"airbench": {"widths": (8, 16, 16), "n_classes": 2},
        "resnet18": {"widths": (8, 8, 16, 16), "n_classes": 2}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def colours(n: int, seed: int, noise: float = 0.15) -> ImageDataset:
    """Two classes under heavy pixel noise: red above blue, or blue above red.

    Both classes have the same mean colour, so an untrained network is near chance.
    """
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    red, blue = torch.tensor([0.6, 0.4, 0.4]), torch.tensor([0.4, 0.4, 0.6])
    top = torch.where(y[:, None] == 0, red, blue)[:, :, None, None]
    bottom = torch.where(y[:, None] == 0, blue, red)[:, :, None, None]
    rows = (torch.arange(32) < 16).view(1, 1, 32, 1)
    x = torch.where(rows, top, bottom) + noise * torch.randn(n, 3, 32, 32, generator=gen)
    return ImageDataset("colours", "train", x.clamp(0, 1), y, ("red-blue", "blue-red"), None)


def tiny(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone(arch, **TINY[arch])


def quick(arch: str = "airbench", **changes: object) -> BackboneConfig:
    settings = {"epochs": 3, "batch_size": 64, "precision": "fp32", "eval_batch_size": 128}
    settings.update(changes)
    return default_backbone_config(arch, **settings)


# ---- models -------------------------------------------------------------------------------

@pytest.mark.parametrize("arch, dim", [("airbench", 16), ("resnet18", 16)])
def test_feature_classifier_shapes_and_consistency(arch: str, dim: int) -> None:
    model = tiny(arch).eval()
    assert isinstance(model, FeatureClassifier)
    assert check_feature_classifier(model) is model
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    f = model.features(x)
    assert f.shape == (5, dim) and model.feature_dim == dim
    logits = model.logits(x)
    assert logits.shape == (5, 2)
    assert torch.equal(logits, model.logits_from_features(f))
    assert torch.equal(model(x), logits)
    # differentiable in the input, so attacks can go through a detector
    x.requires_grad_(True)
    model.logits(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_default_architectures_have_published_sizes() -> None:
    airbench, resnet = build_backbone("airbench"), build_backbone("resnet18")
    # airbench94: 1.97 M parameters; CIFAR ResNet-18: 11.17 M
    assert sum(p.numel() for p in airbench.parameters()) == 1_972_792
    assert sum(p.numel() for p in resnet.parameters()) == 11_173_962
    assert airbench.features(torch.rand(2, 3, 32, 32)).shape == (2, 256)
    assert resnet.features(torch.rand(2, 3, 32, 32)).shape == (2, 512)


def test_normalisation_happens_inside() -> None:
    norm = CifarNormalize()
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    assert torch.allclose(norm(mean), torch.zeros(1, 3, 32, 32), atol=1e-6)
    assert torch.allclose(norm(mean + std), torch.ones(1, 3, 32, 32), atol=1e-6)


def test_config_rebuilds_the_same_architecture() -> None:
    for arch in TINY:
        model = tiny(arch)
        rebuilt = build_from_config(json.loads(json.dumps(model.config())))
        assert type(rebuilt) is type(model)
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
            {k: v.shape for k, v in model.state_dict().items()}


def test_whitening_decorrelates_patches() -> None:
    gen = torch.Generator().manual_seed(0)
    # smooth images: strongly correlated neighbouring pixels and channels
    low = torch.rand(64, 1, 8, 8, generator=gen)
    images = (0.5 * F.interpolate(low, size=32, mode="bilinear").expand(-1, 3, -1, -1)
              + 0.1 * torch.rand(64, 3, 32, 32, generator=gen)).contiguous()
    model = AirbenchNet(widths=(8, 16, 16))
    model.init_whitening(images, eps=1e-6)
    out = F.conv2d(model.normalize(images), model.whiten.weight[:12]).double()
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = flat.T @ flat / flat.shape[0]
    assert torch.allclose(covariance, torch.eye(12, dtype=torch.float64), atol=2e-3)
    assert torch.equal(model.whiten.weight[12:], -model.whiten.weight[:12])


# ---- recipe pieces ------------------------------------------------------------------------

def test_lr_schedule_is_triangular() -> None:
    config = BackboneConfig(warmup_fraction=0.2, lr_start=0.2, lr_end=0.0)
    assert lr_factor(0, 100, config) == pytest.approx(0.2)
    assert lr_factor(10, 100, config) == pytest.approx(0.6)
    assert lr_factor(20, 100, config) == pytest.approx(1.0)
    assert lr_factor(60, 100, config) == pytest.approx(0.5)
    assert lr_factor(100, 100, config) == pytest.approx(0.0)


def test_lookahead_update_by_hand() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    lookahead = Lookahead(model)
    with torch.no_grad():
        model.weight.fill_(4.0)
    lookahead.update(model, 0.0)                 # average <- current, model unchanged
    assert model.weight.item() == 4.0
    with torch.no_grad():
        model.weight.fill_(8.0)
    lookahead.update(model, 0.75)                # 0.75 * 4 + 0.25 * 8
    assert model.weight.item() == 5.0
    with torch.no_grad():
        model.weight.fill_(100.0)
    lookahead.update(model, 1.0)                 # back to the average
    assert model.weight.item() == 5.0


def test_translate_matches_a_reflect_padded_crop() -> None:
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = translate_batch(x, 2, torch.Generator().manual_seed(5))
    offsets = torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(5))
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(6):
        dy, dx = int(offsets[0, i]), int(offsets[1, i])
        assert torch.equal(out[i], padded[i, :, dy:dy + 32, dx:dx + 32])
    assert torch.equal(translate_batch(x, 0, torch.Generator()), x)


def test_flip_alternates_between_epochs() -> None:
    x = torch.rand(4, 3, 32, 32)
    bits = torch.tensor([True, False, True, False])
    even = augment_batch(x, bits, 0, 0, torch.Generator())
    odd = augment_batch(x, bits, 1, 0, torch.Generator())
    for i in range(4):
        assert torch.equal(even[i], x[i].flip(-1) if bits[i] else x[i])
        assert torch.equal(odd[i], x[i] if bits[i] else x[i].flip(-1))


def test_tta_levels_by_hand() -> None:
    x = torch.rand(3, 3, 32, 32)

    def corner(v: torch.Tensor) -> torch.Tensor:     # logits = the top-left pixel per channel
        return v[:, :, 0, 0]

    assert torch.equal(tta_logits(corner, x, 0), x[:, :, 0, 0])
    assert torch.allclose(tta_logits(corner, x, 1), 0.5 * (x[:, :, 0, 0] + x[:, :, 0, -1]))
    # level 2: half level 1, a quarter each level 1 of the image shifted one pixel up-left
    # and down-right; with reflection padding both shifted views have x[1, 1] in their corner
    # and x[1, 30] in their mirror's
    shifted = 0.5 * (x[:, :, 1, 1] + x[:, :, 1, -2])
    expected = 0.25 * (x[:, :, 0, 0] + x[:, :, 0, -1]) + 0.5 * shifted
    assert torch.allclose(tta_logits(corner, x, 2), expected)


# ---- training -----------------------------------------------------------------------------

# the GPU recipe's lr is sized for the full-width ResNet-18; the 8-16 wide one needs more
@pytest.mark.parametrize("arch, changes", [("airbench", {}), ("resnet18", {"lr": 30.0})])
def test_learns_a_tiny_problem(arch: str, changes: dict[str, float]) -> None:
    train, val = colours(256, 0), colours(128, 1)
    model = tiny(arch)
    before = evaluate_backbone(model, train, precision="fp32")
    result = train_backbone(model, train, val, quick(arch, epochs=6, **changes),
                            progress=False)
    after = evaluate_backbone(model, train, precision="fp32")
    assert before < 0.7
    assert after > 0.9 and result["val_accuracy"] > 0.9
    assert result["epochs"] == 6 and len(result["history"]) == 6
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]


def test_plain_cross_entropy_is_more_confident_than_label_smoothing() -> None:
    """Label smoothing 0.2 on 2 classes makes p = 0.9 the loss's optimum, so its train-set
    confidence stays below 0.9; plain cross-entropy (the feature detectors' backbone) keeps
    pushing towards 1 (measured: 0.77 vs 0.83 after 8 short epochs)."""
    train = colours(256, 0, noise=0.05)
    confidence = {}
    for smoothing in (0.2, 0.0):
        model = tiny("airbench")
        train_backbone(model, train, None, quick(epochs=8, label_smoothing=smoothing),
                       progress=False)
        with torch.no_grad():
            probs = torch.softmax(model(train.images), 1)
        confidence[smoothing] = float(probs.max(1).values.mean())
    assert confidence[0.2] < 0.9
    assert confidence[0.0] > confidence[0.2] + 0.03


def test_training_is_deterministic_and_seed_dependent() -> None:
    train = colours(128, 0)
    states = []
    for seed in (0, 0, 1):
        model = tiny("airbench")
        train_backbone(model, train, None, quick(epochs=2, seed=seed), progress=False)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_resume_is_bit_exact(tmp_path: Path) -> None:
    train = colours(128, 0)
    full = tiny("airbench")
    train_backbone(full, train, None, quick(), out_dir=tmp_path / "a", progress=False)
    part = tiny("airbench")
    first = train_backbone(part, train, None, quick(), out_dir=tmp_path / "b",
                           progress=False, stop_after_epoch=1)
    assert not first["finished"] and not (tmp_path / "b" / "model.safetensors").exists()
    resumed = tiny("airbench", seed=123)              # the checkpoint overrides the init
    train_backbone(resumed, train, None, quick(), out_dir=tmp_path / "b", progress=False,
                   resume=True)
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    with pytest.raises(CheckpointError, match="different training config"):
        train_backbone(tiny("airbench"), train, None, quick(epochs=5), progress=False,
                       out_dir=tmp_path / "b", resume=True)


def test_bf16_is_close_to_fp32() -> None:
    if not cpu_has_fast_bf16():
        pytest.skip("this CPU has no native bf16 (AVX-512 BF16 / AMX); auto uses fp32")
    assert resolve_precision("auto", torch.device("cpu")) == "bf16"
    train = colours(128, 0)
    model = tiny("airbench")
    result = train_backbone(model, train, None, quick(precision="bf16", epochs=2),
                            progress=False)
    assert result["precision"] == "bf16"
    x = colours(64, 3).images
    exact = predict_logits(model, x, precision="fp32")
    low = predict_logits(model, x, precision="bf16")
    assert not torch.equal(exact, low)                # it really ran in bf16
    assert (low - exact).abs().max() <= 0.05 * exact.abs().max()
    assert torch.equal(low.argmax(1), exact.argmax(1))


def test_checkpoint_round_trip_is_bit_exact(tmp_path: Path) -> None:
    for arch in TINY:
        model = tiny(arch)
        train_backbone(model, colours(64, 0), None, quick(arch, epochs=1), progress=False)
        save_backbone(model, tmp_path / arch, {"note": "test"})
        loaded = load_backbone(tmp_path / arch)
        assert not loaded.training and loaded.config() == model.config()
        for key, value in model.state_dict().items():
            assert torch.equal(value, loaded.state_dict()[key])
        x = torch.rand(4, 3, 32, 32)
        assert torch.equal(model.eval().logits(x), loaded.logits(x))
        assert json.loads((tmp_path / arch / "config.json").read_text())["note"] == "test"


def test_load_backbone_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_backbone(tmp_path / "nothing")
    save_backbone(tiny("airbench"), tmp_path / "a")
    weights = tmp_path / "a" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_backbone(tmp_path / "a")
    weights.unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: file not found"):
        load_backbone(tmp_path / "a")
    # weights of one architecture under the config of another
    save_backbone(tiny("resnet18"), tmp_path / "r")
    save_backbone(tiny("airbench"), tmp_path / "mixed")
    (tmp_path / "mixed" / "config.json").write_text((tmp_path / "r" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="'airbench' backbone"):
        load_backbone(tmp_path / "mixed")
    (tmp_path / "mixed" / "config.json").write_text('{"model": {"arch": "vgg"}}')
    with pytest.raises(CheckpointError, match="unknown backbone 'vgg'"):
        load_backbone(tmp_path / "mixed")


def test_bad_inputs_raise_clear_errors() -> None:
    model = tiny("airbench")
    with pytest.raises(ValueError, match=r"x: expected images of shape \(N, 3, 32, 32\)"):
        model.features(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="floating-point"):
        model.features(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"features: expected shape \(N, 16\)"):
        model.logits_from_features(torch.rand(2, 7))
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        build_backbone("vgg")
    with pytest.raises(ValueError, match="widths"):
        AirbenchNet(widths=(8, 16))
    with pytest.raises(ValueError, match="blocks"):
        ResNet18(blocks=(2, 2, 0, 2))
    with pytest.raises(ValueError, match="epochs"):
        BackboneConfig(epochs=0)
    with pytest.raises(ValueError, match="precision"):
        BackboneConfig(precision="fp8")
    with pytest.raises(ValueError, match="tta_level"):
        BackboneConfig(tta_level=3)
    with pytest.raises(ValueError, match="unknown keys"):
        BackboneConfig.from_dict({"epoch": 3})
    bad = colours(8, 0)
    bad = ImageDataset("colours", "train", bad.images, bad.labels + 5, bad.classes, None)
    with pytest.raises(ValueError, match=r"train: labels must lie in \[0, 2\)"):
        train_backbone(model, bad, None, quick(), progress=False)
    with pytest.raises(TypeError, match="train: expected an ImageDataset"):
        train_backbone(model, bad.images, None, quick(), progress=False)  # type: ignore[arg-type]


# ---- command line (real data) ---------------------------------------------------------------

def test_cli_trains_and_writes_a_loadable_backbone(tmp_path: Path, mirror_dir: Path) -> None:
    from basin.cli.backbone import train_backbone as command
    from basin.data import load_dataset

    out = tmp_path / "bb"
    args = ["--out", str(out), "--epochs", "1", "--limit", "64", "--mirror", str(mirror_dir),
            "--precision", "fp32", "--quiet", "--seed", "3", "--label-smoothing", "0"]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert metrics["epochs"] == 1 and metrics["n_test"] == 64 and metrics["precision"] == "fp32"
    assert config["training"]["seed"] == 3 and config["run"]["seed"] == 3
    assert config["training"]["label_smoothing"] == 0.0  # plain cross-entropy, recorded
    assert any("test_batch" in name for name in config["run"]["data_checksums"])
    assert len(json.loads((out / "history.json").read_text())) == 1
    model = load_backbone(out)
    test = load_dataset("cifar10", "test", mirror=mirror_dir).subset(64)
    assert evaluate_backbone(model, test, precision="fp32") == metrics["test_accuracy"]
    again = CliRunner().invoke(command, args)
    assert again.exit_code != 0 and "already holds a trained backbone" in again.output
