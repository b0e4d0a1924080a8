"""load_dataset on a fake mirror (no real data): splits, pixel scaling, caching, errors."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from basin.data import (
    DatasetError,
    ImageDataset,
    dataset_info,
    dataset_names,
    load_dataset,
    sources,
    split_indices,
    validation_split,
    verify_dataset,
)
from basin.data import datasets as datasets_module
from basin.data.checksums import MD5, SHA256


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) \
        + array.tobytes()


def numbered_images(n: int) -> np.ndarray:
    """Image i carries i in its first two pixels (low byte, high byte)."""
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n) % 256
    images[:, 0, 1] = np.arange(n) // 256
    images[:, 27, 27] = 255
    return images


def image_numbers(images: torch.Tensor) -> torch.Tensor:
    pixels = (images[:, 0, 0, :2] * 255).round().long()
    return pixels[:, 0] + 256 * pixels[:, 1]


@pytest.fixture(scope="module")
def fake_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """MNIST, notMNIST and a CIFAR-10 test batch with known pixels, checksums registered."""
    root = tmp_path_factory.mktemp("mirror")
    labels = (np.arange(60_000) % 10).astype(np.uint8)
    cifar = np.zeros((10_000, 1 + 3072), dtype=np.uint8)
    cifar[:, 0] = np.arange(10_000) % 10
    cifar[:, 1:1025] = (np.arange(10_000) % 256)[:, None]      # R plane: i mod 256
    cifar[:, 1025:2049] = 7                                     # G plane: constant 7
    files = {
        "mnist/train-images-idx3-ubyte": idx_bytes(numbered_images(60_000)),
        "mnist/train-labels-idx1-ubyte": idx_bytes(labels),
        "mnist/t10k-images-idx3-ubyte": idx_bytes(numbered_images(10_000)),
        "mnist/t10k-labels-idx1-ubyte": idx_bytes(labels[:10_000]),
        "notmnist/t10k-images-idx3-ubyte": idx_bytes(numbered_images(10_000)),
        "notmnist/t10k-labels-idx1-ubyte": idx_bytes(labels[:10_000]),
        "cifar-10-batches-bin/test_batch.bin": cifar.tobytes(),
    }
    with pytest.MonkeyPatch.context() as patch:
        for rel, data in files.items():
            patch.setitem(SHA256, rel, hashlib.sha256(data).hexdigest())
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if "t10k" in rel:  # the test files as .gz, as the real mirror stores them
                path.with_name(path.name + ".gz").write_bytes(gzip.compress(data, 1))
            else:
                path.write_bytes(data)
        yield root


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)
    monkeypatch.delenv(sources.BASE_URL_ENV, raising=False)
    monkeypatch.setenv(sources.HOME_ENV, str(tmp_path / "home"))


def test_train_and_val_partition_the_official_training_file(fake_mirror: Path) -> None:
    train = load_dataset("mnist", "train", mirror=fake_mirror)
    val = load_dataset("mnist", "val", mirror=fake_mirror, seed=123)
    assert (len(train), len(val)) == (50_000, 10_000)
    for part in (train, val):
        assert part.images.shape[1:] == (1, 28, 28) and part.images.dtype == torch.float32
        assert part.labels.dtype == torch.int64
        assert torch.equal(image_numbers(part.images), part.indices)
        assert torch.equal(part.labels, part.indices % 10)
        assert torch.equal(part.indices, split_indices("mnist", part.split))
    both = torch.cat([train.indices, val.indices])
    assert torch.equal(both.sort().values, torch.arange(60_000))
    test = load_dataset("mnist", "test", mirror=fake_mirror)
    assert torch.equal(test.indices, torch.arange(10_000))
    assert torch.equal(image_numbers(test.images), test.indices)


def test_validation_split_ignores_global_seed_and_is_sorted() -> None:
    torch.manual_seed(1)
    first = validation_split(60_000, 10_000)
    torch.manual_seed(2)
    second = validation_split(60_000, 10_000)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
        assert torch.all(a[1:] > a[:-1])
    assert len(split_indices("cifar10", "val")) == 5_000
    assert torch.equal(split_indices("cifar10", "val"), split_indices("cifar10-bw", "val"))
    with pytest.raises(ValueError, match="n_val"):
        validation_split(10, 11)


def test_pixels_scale_to_unit_interval(fake_mirror: Path) -> None:
    test = load_dataset("notmnist", mirror=fake_mirror)
    assert test.classes == tuple("ABCDEFGHIJ")
    assert float(test.images[:, 0, 27, 27].min()) == 1.0
    assert float(test.images[:, 0, 5, 5].max()) == 0.0
    assert float(test.images[200, 0, 0, 0]) == pytest.approx(200 / 255, abs=1e-7)


def test_cifar10_and_its_bw_variant(fake_mirror: Path) -> None:
    rgb = load_dataset("cifar10", mirror=fake_mirror)
    assert rgb.images.shape == (10_000, 3, 32, 32)
    assert rgb.classes[:2] == ("airplane", "automobile")
    assert float(rgb.images[300, 0].max()) == pytest.approx((300 % 256) / 255)
    assert float(rgb.images[300, 1].min()) == pytest.approx(7 / 255)
    bw = load_dataset("cifar10-bw", mirror=fake_mirror)
    assert bw.images.shape == (10_000, 1, 28, 28)
    # a constant R plane stays constant under the resize; G and B are dropped
    expected = (torch.arange(10_000) % 256).float().div(255)[:, None, None, None]
    torch.testing.assert_close(bw.images, expected.expand(-1, 1, 28, 28), atol=1e-6, rtol=0)
    assert torch.equal(bw.labels, rgb.labels)


def test_decoded_files_are_cached_but_results_are_independent(fake_mirror: Path) -> None:
    first = load_dataset("notmnist", mirror=fake_mirror)
    hits = datasets_module._decode.cache_info().hits
    first.images.fill_(0.5)
    second = load_dataset("notmnist", mirror=fake_mirror)
    assert datasets_module._decode.cache_info().hits == hits + 1
    assert float(second.images[200, 0, 0, 0]) == pytest.approx(200 / 255, abs=1e-7)


def test_a_file_changed_after_loading_is_checked_again(fake_mirror: Path,
                                                       tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    (copy / "notmnist").mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (copy / "notmnist" / name).write_bytes((fake_mirror / "notmnist" / name).read_bytes())
    load_dataset("notmnist", mirror=copy)
    labels = copy / "notmnist" / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(labels.read_bytes()))
    data[100] ^= 1
    labels.write_bytes(gzip.compress(bytes(data)))
    os.utime(labels, ns=(0, labels.stat().st_mtime_ns + 1_000_000_000))
    with pytest.raises(DatasetError, match=rf"{labels}: checksum mismatch"):
        load_dataset("notmnist", mirror=copy)


def test_download_fills_the_cache(fake_mirror: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for rel in dataset_info("notmnist").files:
        url = (fake_mirror / f"{rel}.gz").as_uri()
        monkeypatch.setitem(sources.REMOTES, rel, sources.Remote(url))
    cache, empty_mirror = tmp_path / "cache", tmp_path / "empty-mirror"
    empty_mirror.mkdir()
    with pytest.raises(DatasetError, match="basin data fetch"):
        load_dataset("notmnist", cache_dir=cache, download=False)
    # by default a configured mirror means offline: nothing is downloaded
    with pytest.raises(DatasetError, match="not found in mirror"):
        load_dataset("notmnist", mirror=empty_mirror, cache_dir=cache)
    assert not cache.exists()
    loaded = load_dataset("notmnist", cache_dir=cache)  # no mirror configured: downloads
    assert torch.equal(image_numbers(loaded.images), torch.arange(10_000))
    assert (cache / "notmnist" / "t10k-images-idx3-ubyte.gz").is_file()
    assert set(verify_dataset("notmnist", cache_dir=cache)) == set(dataset_info("notmnist").files)


def test_bad_requests_name_the_problem(fake_mirror: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'mnits'; known: mnist"):
        load_dataset("mnits")
    with pytest.raises(DatasetError, match="notmnist: no split 'train'; available: test"):
        load_dataset("notmnist", "train", mirror=fake_mirror)
    with pytest.raises(DatasetError, match="synthetic noise sets only"):
        load_dataset("mnist", mirror=fake_mirror, shape=(3, 32, 32))
    with pytest.raises(DatasetError, match="fashion-mnist/t10k-images-idx3-ubyte: not found"):
        load_dataset("fashion-mnist", mirror=fake_mirror, cache_dir=tmp_path)


def test_noise_sets_are_seeded_and_shaped() -> None:
    uniform = load_dataset("uniform-noise", seed=3)
    assert uniform.images.shape == (10_000, 1, 28, 28) and uniform.indices is None
    assert torch.equal(uniform.images, load_dataset("uniform-noise", seed=3).images)
    assert not torch.equal(uniform.images, load_dataset("uniform-noise", seed=4).images)
    assert not torch.equal(uniform.images, load_dataset("uniform-noise", "val", seed=3).images)
    assert float(uniform.images.min()) >= 0.0 and float(uniform.images.max()) < 1.0
    assert float(uniform.images.mean()) == pytest.approx(0.5, abs=0.002)
    rgb = load_dataset("gaussian-noise", shape=(3, 32, 32))
    assert rgb.images.shape == (10_000, 3, 32, 32) and torch.all(rgb.labels == 0)
    # N(0.5, 0.25) clipped at +-2 sd: P(clipped) = 2(1 - Phi(2)) = 0.0455 and the sd becomes
    # 0.25 * sqrt(0.7385 + 4 * 0.0455) = 0.2399
    clipped = ((rgb.images == 0) | (rgb.images == 1)).float().mean()
    assert float(clipped) == pytest.approx(0.0455, abs=0.001)
    assert float(rgb.images.std()) == pytest.approx(0.2399, abs=0.001)
    with pytest.raises(ValueError, match="shape must be"):
        load_dataset("uniform-noise", shape=(28, 28))


def test_subset_is_a_nested_seeded_sample() -> None:
    full = ImageDataset("toy", "test", torch.arange(20.0).reshape(20, 1, 1, 1),
                        torch.arange(20), ("x",), torch.arange(100, 120))
    small, large = full.subset(5, seed=1), full.subset(12, seed=1)
    assert len(small) == 5 and len(large) == 12
    assert set(small.labels.tolist()) <= set(large.labels.tolist())
    assert torch.all(small.labels[1:] > small.labels[:-1])
    assert torch.equal(small.indices, small.labels + 100)
    assert torch.equal(small.images.flatten(), small.labels.float())
    assert not torch.equal(small.labels, full.subset(5, seed=2).labels)
    assert full.subset(20) is full and full.subset(99) is full
    with pytest.raises(ValueError, match="n must be"):
        full.subset(-1)
    with pytest.raises(ValueError, match="labels must be int64"):
        ImageDataset("toy", "test", full.images, full.labels.int(), ("x",), None)


def test_registry_describes_every_dataset() -> None:
    assert dataset_names() == ["mnist", "fashion-mnist", "cifar10", "cifar10-bw", "notmnist",
                               "omniglot", "tiny-imagenet", "tiny-imagenet-resize",
                               "lsun-resize", "uniform-noise", "gaussian-noise"]
    for name in dataset_names():
        info = dataset_info(name)
        assert set(info.splits) == set(info.sizes) == set(info.split_files)
        assert set(info.files) == {f for files in info.split_files.values() for f in files}
        # every file has exactly one checksum; MD5 only for the optional sets without a SHA-256
        assert all((f in SHA256) != (f in MD5) for f in info.files)
        assert all(f in SHA256 for f in info.files) or info.optional
