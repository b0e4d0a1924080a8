"""Every dataset loaded from the real mirror: sizes, label counts, ranges, splits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from basin.data import ImageDataset, dataset_info, load_dataset, verify_dataset

pytestmark = pytest.mark.integration
Loader = Callable[..., ImageDataset]


@pytest.fixture(scope="module")
def load(mirror_dir: Path) -> Loader:
    def _load(name: str, split: str = "test") -> ImageDataset:
        return load_dataset(name, split, mirror=mirror_dir)
    return _load


def assert_unit_range(data: ImageDataset) -> None:
    assert data.images.dtype == torch.float32 and data.labels.dtype == torch.int64
    assert float(data.images.min()) >= 0.0 and float(data.images.max()) <= 1.0


def test_mnist(load: Loader) -> None:
    test = load("mnist")
    assert test.images.shape == (10_000, 1, 28, 28)
    assert int((test.labels == 1).sum()) == 1_135
    assert_unit_range(test)
    train, val = load("mnist", "train"), load("mnist", "val")
    assert (len(train), len(val)) == (50_000, 10_000)
    assert set(train.indices.tolist()).isdisjoint(val.indices.tolist())
    assert torch.equal(torch.cat([train.indices, val.indices]).sort().values,
                       torch.arange(60_000))
    # every digit is represented in validation at roughly its training frequency
    counts = torch.bincount(val.labels, minlength=10)
    assert int(counts.min()) > 850 and int(counts.sum()) == 10_000


def test_fashion_mnist(load: Loader) -> None:
    test = load("fashion-mnist")
    assert test.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1_000] * 10
    assert_unit_range(test)
    assert len(load("fashion-mnist", "train")) == 50_000


def test_cifar10(load: Loader, mirror_dir: Path) -> None:
    test = load("cifar10")
    assert test.images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(test.labels).tolist() == [1_000] * 10
    assert_unit_range(test)
    meta = (mirror_dir / "cifar-10-batches-bin" / "batches.meta.txt").read_text().split()
    assert test.classes == tuple(meta)
    train, val = load("cifar10", "train"), load("cifar10", "val")
    assert (len(train), len(val)) == (45_000, 5_000)
    assert set(train.indices.tolist()).isdisjoint(val.indices.tolist())


def test_cifar10_bw_is_the_red_channel_resized(load: Loader) -> None:
    rgb, bw = load("cifar10"), load("cifar10-bw")
    assert bw.images.shape == (10_000, 1, 28, 28)
    assert torch.equal(bw.labels, rgb.labels)
    assert_unit_range(bw)
    for i in (0, 4321):  # Pillow's bilinear resize of the R plane as the reference
        red = rgb.images[i, 0].numpy()
        reference = np.asarray(Image.fromarray(red, mode="F").resize((28, 28), Image.BILINEAR))
        np.testing.assert_allclose(bw.images[i, 0].numpy(), reference, atol=1e-5)


def test_notmnist(load: Loader) -> None:
    test = load("notmnist")
    assert test.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1_000] * 10
    assert_unit_range(test)


def test_omniglot_is_white_ink_on_black(load: Loader) -> None:
    test = load("omniglot")
    assert test.images.shape == (6_640, 1, 28, 28)
    assert_unit_range(test)
    assert float(test.images.mean()) < 0.5
    assert float(test.images[:, :, 0, :].mean()) < 0.05  # the border is background
    assert len(test.classes) == dataset_info("omniglot").n_classes
    counts = torch.bincount(test.labels, minlength=len(test.classes))
    # 292 background characters x 20 drawers, 400 one-shot classes x (1 train + 1 test)
    assert sorted(counts.unique().tolist()) == [2, 20]
    assert int((counts == 20).sum()) == 292


def test_verify_returns_the_official_checksums(mirror_dir: Path) -> None:
    listed = dict(reversed(line.split()) for line in
                  (mirror_dir / "SHA256SUMS.uncompressed").read_text().splitlines())
    checksums = verify_dataset("notmnist", mirror=mirror_dir)
    assert checksums == {rel: listed[f"./{rel}"] for rel in dataset_info("notmnist").files}
