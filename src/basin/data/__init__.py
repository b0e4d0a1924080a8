"""Verified image datasets by name, as float32 NCHW tensors in [0, 1].

>>> from basin.data import load_dataset
>>> train = load_dataset("mnist", "train")        # 50,000 images; "val" holds the other 10,000
>>> ood = load_dataset("cifar10-bw", "test")      # (10000, 1, 28, 28)

Datasets (:func:`dataset_names`): ``mnist``, ``fashion-mnist``, ``cifar10`` (3x32x32),
``cifar10-bw`` (the attractor paper's OOD set: CIFAR-10's R channel resized to 28x28),
``notmnist`` and ``omniglot`` (test only), the optional ``tiny-imagenet`` (the official
zip's validation images resized to 3x32x32; not in the offline mirror), the optional
``tiny-imagenet-resize`` and ``lsun-resize`` (ODIN's 32x32 sets, in the mirror's ``odin/``;
check :func:`is_available` before using an optional set), and the seeded
synthetic ``uniform-noise`` and ``gaussian-noise`` (val and test; ``shape=(3, 32, 32)`` for a
CIFAR-sized variant).

Modules: :mod:`~basin.data.sources` finds files (mirror, then cache, then the official URLs
on request) and verifies them against :mod:`~basin.data.checksums`;
:mod:`~basin.data.parsers` decodes IDX, CIFAR-10 binary batches, Omniglot zips and the
Tiny-ImageNet archives;
:mod:`~basin.data.splits` fixes the validation split (seed :data:`SPLIT_SEED`, independent of
the user's seed); :mod:`~basin.data.transforms` holds the resize filter (antialiased
bilinear); :mod:`~basin.data.synthetic` the noise sets; :mod:`~basin.data.datasets` ties them
together. Every failure is a :class:`DatasetError` naming the file and the problem.
"""

from basin.data.datasets import (
    ImageDataset,
    is_available,
    load_dataset,
    mirror_checksums,
    verify_dataset,
)
from basin.data.errors import DatasetError
from basin.data.registry import DatasetInfo, dataset_info, dataset_names
from basin.data.splits import SPLIT_SEED, split_indices, validation_split

__all__ = [
    "SPLIT_SEED",
    "DatasetError",
    "DatasetInfo",
    "ImageDataset",
    "dataset_info",
    "dataset_names",
    "is_available",
    "load_dataset",
    "mirror_checksums",
    "split_indices",
    "validation_split",
    "verify_dataset",
]
