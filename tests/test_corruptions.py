"""Tests of basin.corruptions: ranges, determinism, severity order, hand cases, errors."""

from __future__ import annotations

import itertools

import pytest
import torch

from basin.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    Corruption,
    CorruptionError,
    corrupt,
    parse_corruption_spec,
)

NAMES = sorted(CORRUPTIONS)
RANDOM_NAMES = ["gaussian-noise", "salt-and-pepper", "pixel-dropout"]


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(123))


def test_registry_names_and_tables() -> None:
    assert set(NAMES) == {"gaussian-noise", "salt-and-pepper", "brightness", "contrast",
                          "pixel-dropout"}
    for name, c in CORRUPTIONS.items():
        assert isinstance(c, Corruption) and c.name == name and c.description
        assert len(c.params) == len(SEVERITIES)
    assert CORRUPTIONS["gaussian-noise"].param(1) == 0.04
    assert CORRUPTIONS["contrast"].param(5) == 0.15


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_range_shape_dtype(name: str, dtype: torch.dtype, batch: torch.Tensor) -> None:
    x = batch.to(dtype)
    for severity in SEVERITIES:
        y = corrupt(x, name, severity, seed=1)
        assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
        assert y.min() >= 0 and y.max() <= 1
    # Any channel count, including grey-scale.
    grey = x[:, :1]
    assert corrupt(grey, name, 5).shape == grey.shape


@pytest.mark.parametrize("name", RANDOM_NAMES)
def test_seeded_and_independent_of_global_rng(name: str, batch: torch.Tensor) -> None:
    torch.manual_seed(0)
    a = corrupt(batch, name, 3, seed=7)
    torch.manual_seed(999)
    torch.rand(100)
    b = corrupt(batch, name, 3, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, corrupt(batch, name, 3, seed=8))
    gen_a = torch.Generator().manual_seed(7)
    assert torch.equal(a, corrupt(batch, name, 3, generator=gen_a))


@pytest.mark.parametrize("name", NAMES)
def test_severity_monotone(name: str, batch: torch.Tensor) -> None:
    change = [float((corrupt(batch, name, s, seed=3) - batch).abs().mean()) for s in SEVERITIES]
    assert all(lo < hi for lo, hi in itertools.pairwise(change)), change


@pytest.mark.parametrize(("name", "severity"), [("salt-and-pepper", 5), ("pixel-dropout", 3)])
def test_hit_fraction_matches_p(name: str, severity: int) -> None:
    # Mid-grey images so that every hit location is visible in all channels.
    x = torch.full((20, 3, 32, 32), 0.5)
    y = corrupt(x, name, severity, seed=0)
    changed = (y != x)
    # Locations change in all channels together, never in only some.
    assert torch.equal(changed.all(dim=1), changed.any(dim=1))
    p = CORRUPTIONS[name].param(severity)
    n = 20 * 32 * 32
    frac = changed.all(dim=1).float().mean().item()
    assert abs(frac - p) < 4 * (p * (1 - p) / n) ** 0.5
    hit_values = y[:, 0][changed[:, 0]]
    if name == "pixel-dropout":
        assert torch.all(hit_values == 0)
    else:
        assert set(hit_values.unique().tolist()) == {0.0, 1.0}
        salt = (hit_values == 1).float().mean().item()
        assert abs(salt - 0.5) < 4 * (0.25 / hit_values.numel()) ** 0.5


def test_gaussian_noise_std() -> None:
    x = torch.full((16, 1, 32, 32), 0.5)  # far from the clipping bounds at std 0.1
    noise = corrupt(x, "gaussian-noise", 5, seed=0) - x
    assert abs(noise.std().item() - 0.10) < 0.005
    assert abs(noise.mean().item()) < 0.005


def test_brightness_hand_case() -> None:
    x = torch.tensor([[[[0.0, 0.5], [0.8, 1.0]]]])
    expected = torch.tensor([[[[0.15, 0.65], [0.95, 1.0]]]])  # shift 0.15, clipped at 1
    assert torch.allclose(corrupt(x, "brightness", 3), expected)


def test_contrast_hand_case() -> None:
    # Two channels, per-image mean over all of them = (0 + 0.2 + 0.4 + 0.6 + 1 + 1 + 0 + 0.4)/8.
    x = torch.tensor([[[[0.0, 0.2], [0.4, 0.6]], [[1.0, 1.0], [0.0, 0.4]]]])
    m = 3.6 / 8
    expected = m + 0.5 * (x - m)  # severity 2 -> factor 0.5
    assert torch.allclose(corrupt(x, "contrast", 2), expected)
    # Each image uses its own mean; a constant image is unchanged.
    flat = torch.full((1, 2, 2, 2), 0.3)
    y = corrupt(torch.cat([x, flat]), "contrast", 2)
    assert torch.allclose(y[0], expected[0]) and torch.allclose(y[1], flat[0])


def test_does_not_track_gradients(batch: torch.Tensor) -> None:
    x = batch.clone().requires_grad_(True)
    assert not corrupt(x, "gaussian-noise").requires_grad


def test_parse_spec() -> None:
    assert parse_corruption_spec("gaussian-noise:3") == ("gaussian-noise", 3)
    assert parse_corruption_spec(" pixel-dropout:5 ") == ("pixel-dropout", 5)
    assert parse_corruption_spec("contrast") == ("contrast", 3)


@pytest.mark.parametrize(("spec", "match"), [
    ("fog:3", "unknown corruption 'fog'"),
    ("contrast:6", "must be one of 1..5, got 6"),
    ("contrast:0", "must be one of 1..5, got 0"),
    ("contrast:high", "severity must be an integer"),
    ("contrast:", "severity must be an integer"),
    ("", "expected 'name:severity'"),
])
def test_parse_spec_errors(spec: str, match: str) -> None:
    with pytest.raises(CorruptionError, match=match):
        parse_corruption_spec(spec)


def test_bad_arguments(batch: torch.Tensor) -> None:
    with pytest.raises(CorruptionError, match="unknown corruption"):
        corrupt(batch, "gaussian_noise")
    with pytest.raises(CorruptionError, match="severity"):
        corrupt(batch, "brightness", 2.5)  # type: ignore[arg-type]
    with pytest.raises(CorruptionError, match="severity"):
        corrupt(batch, "brightness", True)
    with pytest.raises(CorruptionError, match=r"x: values must lie in \[0, 1\]"):
        corrupt(batch * 2, "brightness")
    with pytest.raises(CorruptionError, match=r"x: expected shape \(N, C, H, W\)"):
        corrupt(batch[0], "brightness")
    with pytest.raises(CorruptionError, match="x: expected a floating-point"):
        corrupt((batch * 255).to(torch.uint8), "brightness")
    with pytest.raises(CorruptionError, match="seed"):
        corrupt(batch, "gaussian-noise", seed=-1)
