"""The image sets of the CIFAR-10 OOD experiments: ID splits, the open-set split, far-OOD sets.

* **ID**: CIFAR-10 train / val / test (val = the fixed 5,000-image validation split carved
  from the official training files, see :mod:`basin.data.splits`).
* **near-OOD** (open-set split): the 6 animal classes (bird, cat, deer, dog, frog, horse) are
  in-distribution, the 4 vehicle classes (airplane, automobile, ship, truck) of the test file
  are OOD.
* **far-OOD**: MNIST, Fashion-MNIST, notMNIST and Omniglot (1x28x28, bilinear-upsampled to
  32x32 and the channel repeated), uniform and Gaussian noise drawn at 3x32x32, and
  Tiny-ImageNet (the official zip's val images) whenever its files are present (mirror or
  cache): basin never downloads it unasked.
* **natural-image OOD**: ODIN's Tiny-ImageNet (resize), the paper's OOD set, and LSUN
  (resize), 32x32 RGB, from the mirror's ``odin/`` folder when present.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from basin.data.datasets import ImageDataset, is_available, load_dataset
from basin.data.transforms import resize_bilinear

ANIMALS = (2, 3, 4, 5, 6, 7)      # bird, cat, deer, dog, frog, horse: the 6 ID classes
VEHICLES = (0, 1, 8, 9)           # airplane, automobile, ship, truck: near-OOD
FAR_OOD = ("mnist", "fashion-mnist", "notmnist", "omniglot", "uniform-noise", "gaussian-noise")
OPTIONAL_FAR_OOD = ("tiny-imagenet",)
# ODIN's natural-image sets (the mirror's odin/ folder): Tiny-ImageNet (resize), LSUN (resize)
NATURAL_OOD = ("tiny-imagenet-resize", "lsun-resize")


def to_cifar_shape(images: Tensor) -> Tensor:
    """1xHxW greyscale images -> 3x32x32: bilinear resize to 32x32, channel repeated."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images: expected (N, 1 or 3, H, W), got {tuple(images.shape)}")
    out = resize_bilinear(images, (32, 32))
    return out.repeat(1, 3, 1, 1) if out.shape[1] == 1 else out


def class_subset(data: ImageDataset, keep: tuple[int, ...], name: str) -> ImageDataset:
    """The images of classes ``keep``, relabelled 0..len(keep)-1 (indices kept)."""
    mask = torch.isin(data.labels, torch.tensor(keep))
    lookup = torch.full((10,), -1, dtype=torch.int64)
    lookup[list(keep)] = torch.arange(len(keep))
    return ImageDataset(name, data.split, data.images[mask].contiguous(),
                        lookup[data.labels[mask]], tuple(data.classes[k] for k in keep),
                        None if data.indices is None else data.indices[mask])


def limit(data: ImageDataset, n: int | None, seed: int) -> ImageDataset:
    """A seeded subset of ``n`` images (all of them when ``n`` is None)."""
    return data if n is None else data.subset(n, seed=seed)


def load_splits(key: str, mirror: Any, *, seed: int, train_limit: int | None = None,
                val_limit: int | None = None, test_limit: int | None = None,
                near_limit: int | None = None) -> dict[str, ImageDataset]:
    """train / val / test of the 10-class (``cifar10``) or 6-class (``cifar6``) ID set.

    For ``cifar6`` the dict also holds ``near``: the vehicle images of the test file.
    """
    if key not in ("cifar10", "cifar6"):
        raise ValueError(f"key: expected 'cifar10' or 'cifar6', got {key!r}")
    out = {s: load_dataset("cifar10", s, mirror=mirror) for s in ("train", "val", "test")}
    if key == "cifar6":
        out["near"] = limit(class_subset(out["test"], VEHICLES, "cifar4-vehicles"),
                            near_limit, seed)
        out.update({s: class_subset(out[s], ANIMALS, "cifar6") for s in ("train", "val", "test")})
    out["train"] = limit(out["train"], train_limit, seed)
    out["val"] = limit(out["val"], val_limit, seed)
    out["test"] = limit(out["test"], test_limit, seed)
    return out


def far_ood_names(mirror: Any) -> tuple[str, ...]:
    """The far-OOD sets of a run: the mirror's, plus the optional ones that are present."""
    return FAR_OOD + tuple(n for n in OPTIONAL_FAR_OOD if is_available(n, mirror=mirror))


def natural_ood_names(mirror: Any) -> tuple[str, ...]:
    """ODIN's natural-image OOD sets whose files are present (mirror or cache)."""
    return tuple(n for n in NATURAL_OOD if is_available(n, mirror=mirror))


def far_ood_set(name: str, mirror: Any, *, seed: int, n: int | None = None) -> Tensor:
    """Test images of far-OOD set ``name`` as (N, 3, 32, 32), at most ``n`` of them."""
    shape = (3, 32, 32) if "noise" in name else None
    data = limit(load_dataset(name, "test", mirror=mirror, seed=seed, shape=shape), n, seed)
    return to_cifar_shape(data.images)
