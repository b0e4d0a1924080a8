"""Synthetic CIFAR-shaped outliers made from CIFAR-10 *training* images: a validation OOD proxy.

Tuning a detector's hyper-parameters (ODIN's temperature and input step) needs OOD inputs,
and those must be neither a test OOD set (that would measure on the tuning data) nor so easy
that every setting separates them perfectly (uniform noise saturates: FPR95 = 0 for most of
ODIN's grid, so the tie-break decides). These keep the colour statistics and local texture of
natural images while destroying the object, so a classifier's confidence drops only partly:

- ``permuted``: the image's pixel positions randomly permuted (colour histogram kept, no
  structure at all);
- ``patches``: the 4x4 grid of 8x8 patches shuffled (local texture kept, no object layout);
- ``lowpass``: a 7x7 box blur (layout and colours kept, no edges or texture);
- ``mixture``: the pixelwise mean of two images of *different* classes (two half-objects).

:func:`cifar_outliers` draws an equal share of each, seeded. The images must come from the
training split (the caller passes them; ``basin.reproductions.feature_recon`` uses the
``train`` split), never from the test file or a test OOD set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from basin.data.outliers import shuffle_patches

KINDS = ("permuted", "patches", "lowpass", "mixture")
PATCH = 8
BLUR = 7


def _check(images: Tensor, labels: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected (N, 3, H, W), got "
                         f"{tuple(getattr(images, 'shape', ()))}")
    h, w = images.shape[2:]
    if h % PATCH or w % PATCH:
        raise ValueError(f"images: H and W must be multiples of {PATCH}, got {h}x{w}")
    if not isinstance(labels, Tensor) or labels.shape != (len(images),):
        raise ValueError(f"labels: expected shape ({len(images)},), got "
                         f"{tuple(getattr(labels, 'shape', ()))}")
    if len(torch.unique(labels)) < 2:
        raise ValueError("labels: mixtures need images of at least 2 classes")


def permuted(x: Tensor, g: torch.Generator) -> Tensor:
    """Each image's pixel positions permuted independently (the same for all channels)."""
    n, c, h, w = x.shape
    order = torch.argsort(torch.rand(n, h * w, generator=g), dim=1)
    return x.reshape(n, c, h * w).gather(2, order[:, None, :].expand(n, c, h * w)).reshape(
        x.shape)


def shuffled_patches(x: Tensor, g: torch.Generator, size: int = PATCH) -> Tensor:
    """Each image's grid of ``size`` x ``size`` patches in a random order (the MNIST pool's
    :func:`basin.data.outliers.shuffle_patches`, at CIFAR's patch size)."""
    return shuffle_patches(x, size, g)


def low_pass(x: Tensor, width: int = BLUR) -> Tensor:
    """A ``width`` x ``width`` box blur (edges averaged over the pixels inside the image)."""
    return F.avg_pool2d(x, width, stride=1, padding=width // 2, count_include_pad=False)


def mixtures(x: Tensor, labels: Tensor, n: int, g: torch.Generator) -> Tensor:
    """``n`` pixelwise means of two images of different classes."""
    i = torch.randint(len(x), (n,), generator=g)
    j = torch.randint(len(x), (n,), generator=g)
    for _ in range(50):  # redraw same-class partners; with >= 2 classes this ends quickly
        same = labels[i] == labels[j]
        if not bool(same.any()):
            break
        j[same] = torch.randint(len(x), (int(same.sum()),), generator=g)
    else:
        raise ValueError("labels: could not draw partners of different classes")
    return 0.5 * (x[i] + x[j])


def cifar_outliers(images: Tensor, labels: Tensor, n: int, *, seed: int = 0,
                   kinds: tuple[str, ...] = KINDS) -> tuple[Tensor, Tensor]:
    """``n`` outliers (n, 3, H, W) in [0, 1] from training ``images``, an equal share of each
    of ``kinds`` in a seeded random order; and each one's kind index into ``kinds``."""
    _check(images, labels)
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds: unknown {unknown}; choose from {KINDS}")
    g = torch.Generator().manual_seed(seed)
    which = torch.randperm(n, generator=g) % len(kinds)
    out = torch.empty(n, *images.shape[1:], dtype=images.dtype)
    for k, kind in enumerate(kinds):
        idx = torch.nonzero(which == k).flatten()
        if not idx.numel():
            continue
        if kind == "mixture":
            out[idx] = mixtures(images, labels, idx.numel(), g)
            continue
        base = images[torch.randint(len(images), (idx.numel(),), generator=g)]
        out[idx] = (permuted(base, g) if kind == "permuted" else
                    shuffled_patches(base, g) if kind == "patches" else low_pass(base))
    return out.clamp_(0.0, 1.0), which
