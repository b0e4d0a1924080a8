"""The fixed validation split carved from each official training file.

The paper early-stops on "validation data" taken from MNIST's 60,000 training images,
leaving 50,000 to train on; basin does the same (10,000 for MNIST and Fashion-MNIST, 5,000
of CIFAR-10's 50,000). Which images go to validation is decided by ``torch.randperm`` under
the constant :data:`SPLIT_SEED`, *never* by the user's ``--seed``, so every run, model and
detector calibration agrees on it, and the test file is never touched. The split is not
stratified: with 10,000 (or 5,000) random images every class gets ~10% +- 1%.

Indices are sorted so that both parts keep the official file order.
"""

from __future__ import annotations

import functools

import torch

from basin.data.errors import DatasetError
from basin.data.registry import dataset_info

SPLIT_SEED = 20240101


@functools.lru_cache(maxsize=8)
def _split(n_total: int, n_val: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    perm = torch.randperm(n_total, generator=generator)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def validation_split(n_total: int, n_val: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices) of ``n_total`` training images, ``n_val`` for validation."""
    if not 0 <= n_val <= n_total:
        raise ValueError(f"n_val must lie in [0, n_total={n_total}], got {n_val}")
    train, val = _split(n_total, n_val)
    return train.clone(), val.clone()


def split_indices(name: str, split: str) -> torch.Tensor:
    """int64 indices of ``split`` into the official file it comes from.

    ``train`` and ``val`` index the official training file(s) (CIFAR-10's five batches
    concatenated in order); ``test`` is ``arange`` over the official test file.
    """
    info = dataset_info(name)
    if info.synthetic:
        raise DatasetError(f"{name}: synthetic dataset, it has no official file to index")
    if split not in info.splits:
        raise DatasetError(f"{name}: no split {split!r}; available: {', '.join(info.splits)}")
    if split == "test":
        return torch.arange(info.sizes["test"], dtype=torch.int64)
    train, val = validation_split(info.sizes["train"] + info.sizes["val"], info.n_val)
    return train if split == "train" else val
