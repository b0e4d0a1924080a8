"""The tensors a training run needs, loaded once and kept on the training device.

``TrainData`` is what the trainer consumes; it can be built from any tensors (tests pass small
toy sets) or by ``load_train_data`` from a ``TrainConfig``: the data layer's splits for
``mnist`` (train 50,000 / val 10,000 carved from the official training file / test 10,000;
likewise ``fashion-mnist`` and ``cifar10-bw``), or ``toy``, a tiny built-in problem
(Gaussian clouds around random class prototypes in [0, 1]^D) that needs no data mirror, for
tests and quick checks of the command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import Tensor

from basin.data import load_dataset, verify_dataset
from basin.training.config import TrainConfig

# Split sizes of the toy problem; train_size / val_size take subsets as for MNIST.
TOY_SIZES = {"train": 600, "val": 200, "test": 200}
_TOY_SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}


@dataclass
class TrainData:
    """Training, validation and (optionally) test tensors; images float in [0, 1]."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor | None = None
    test_y: Tensor | None = None
    checksums: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pairs = [("train", self.train_x, self.train_y), ("val", self.val_x, self.val_y)]
        if (self.test_x is None) != (self.test_y is None):
            raise ValueError("test_x and test_y must be given together")
        if self.test_x is not None and self.test_y is not None:
            pairs.append(("test", self.test_x, self.test_y))
        for name, x, y in pairs:
            if not x.is_floating_point() or x.dim() < 2 or len(x) == 0:
                raise ValueError(f"{name}_x: expected a non-empty float batch (N, ...), got "
                                 f"{x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (len(x),):
                raise ValueError(f"{name}_y: expected int64 labels of shape ({len(x)},), got "
                                 f"{y.dtype} {tuple(y.shape)}")

    def to(self, device: torch.device | str) -> TrainData:
        """A copy with every tensor on ``device`` (once, so no step copies data)."""
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)
        return TrainData(self.train_x.to(device), self.train_y.to(device),
                         self.val_x.to(device), self.val_y.to(device),
                         move(self.test_x), move(self.test_y), dict(self.checksums))


def toy_split(split: str, dim: int, n_classes: int, n: int | None = None,
                    noise: float = 0.08) -> tuple[Tensor, Tensor]:
    """The toy problem's ``split``: (images (n, dim) in [0, 1], int64 labels).

    The class prototypes are fixed (seed 0) so that every split samples the same problem;
    each split draws its own points. Classes are balanced up to rounding.
    """
    if split not in TOY_SIZES:
        raise ValueError(f"split: unknown {split!r}; choose from {sorted(TOY_SIZES)}")
    n = TOY_SIZES[split] if n is None else n
    prototypes = torch.rand(n_classes, dim, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(_TOY_SPLIT_SEEDS[split])
    labels = torch.randperm(n, generator=gen) % n_classes
    x = prototypes[labels] + noise * torch.randn(n, dim, generator=gen)
    return x.clamp(0.0, 1.0), labels.to(torch.int64)


def _subset(x: Tensor, y: Tensor, n: int | None, seed: int) -> tuple[Tensor, Tensor]:
    if n is None or n >= len(x):
        return x, y
    # Same rule as ImageDataset.subset: first n of a seeded permutation, in original order.
    keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return x[keep], y[keep]


def load_train_data(config: TrainConfig, *, mirror: str | os.PathLike[str] | None = None,
                    with_test: bool = True, verify: bool = True) -> TrainData:
    """The data of ``config``: its dataset's splits, cut to train_size / val_size.

    Subsets are the first n images of a permutation seeded by ``config.seed`` (the data
    layer's ``ImageDataset.subset``). ``verify`` records the files' SHA-256 checksums (from
    ``basin.data.verify_dataset``, which also refuses a corrupt mirror).
    """
    if config.dataset == "toy":
        parts = {s: toy_split(s, config.widths[0], config.n_classes)
                 for s in ("train", "val", "test")}
        train = _subset(*parts["train"], config.train_size, config.seed)
        val = _subset(*parts["val"], config.val_size, config.seed)
        test = parts["test"] if with_test else (None, None)
        return TrainData(*train, *val, *test)

    checksums = dict(verify_dataset(config.dataset, mirror=mirror)) if verify else {}
    splits = {}
    for split, size in (("train", config.train_size), ("val", config.val_size),
                        ("test", None)):
        if split == "test" and not with_test:
            continue
        ds = load_dataset(config.dataset, split, mirror=mirror)
        if size is not None and size < len(ds.images):
            ds = ds.subset(size, seed=config.seed)
        if len(ds.classes) != config.n_classes:
            raise ValueError(f"n_classes: the config says {config.n_classes} but "
                             f"{config.dataset} has {len(ds.classes)} classes")
        splits[split] = (ds.images, ds.labels)
    test_pair: tuple[Tensor | None, Tensor | None] = splits.get("test", (None, None))
    test_x, test_y = test_pair
    return TrainData(*splits["train"], *splits["val"], test_x, test_y, checksums=checksums)
