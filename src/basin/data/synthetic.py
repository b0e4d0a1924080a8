"""Seeded synthetic out-of-distribution sets: uniform and Gaussian pixel noise.

``uniform-noise`` draws every pixel i.i.d. from U[0, 1]; ``gaussian-noise`` from
N(0.5, 0.25^2) clipped to [0, 1] (about 4.6% of pixels land on 0 or 1). Each (kind, split,
seed) has its own random stream, derived by hashing, so "val" and "test" never share images
and the result does not depend on torch's global RNG state.
"""

from __future__ import annotations

import hashlib

import torch

from basin.data.errors import DatasetError

GAUSSIAN_MEAN = 0.5
GAUSSIAN_STD = 0.25


def _stream_seed(kind: str, split: str, seed: int) -> int:
    digest = hashlib.sha256(f"basin/{kind}/{split}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # manual_seed wants < 2**63 here


def check_shape(shape: object) -> tuple[int, int, int]:
    """``shape`` as a (C, H, W) tuple of positive ints, else ValueError naming it."""
    if (not isinstance(shape, tuple | list) or len(shape) != 3
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                       for d in shape)):
        raise ValueError(f"shape must be (channels, height, width) of positive ints, "
                         f"got {shape!r}")
    return (shape[0], shape[1], shape[2])


def noise_images(kind: str, n: int, shape: tuple[int, int, int], *, split: str,
                 seed: int) -> torch.Tensor:
    """``n`` float32 noise images of ``shape`` in [0, 1], reproducible from (kind, split, seed)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    generator = torch.Generator().manual_seed(_stream_seed(kind, split, seed))
    size = (n, *check_shape(shape))
    if kind == "uniform-noise":
        return torch.rand(size, generator=generator)
    if kind == "gaussian-noise":
        noise = torch.randn(size, generator=generator)
        return noise.mul_(GAUSSIAN_STD).add_(GAUSSIAN_MEAN).clamp_(0.0, 1.0)
    raise DatasetError(f"{kind}: not a synthetic noise dataset")
