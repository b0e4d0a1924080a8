"""Pixel transforms shared by the loaders: uint8 -> [0, 1] floats, and resizing.

Every resize in basin's data layer uses ``torch.nn.functional.interpolate(mode="bilinear",
antialias=True, align_corners=False)``: bilinear interpolation whose triangle filter is
widened by the downscaling factor, so that shrinking (CIFAR-10 32 -> 28, Omniglot 105 -> 28)
averages over the source pixels instead of aliasing. Its weights are non-negative and sum to
one, so outputs stay in [0, 1]; a final clamp only removes rounding error. The one exception
is Tiny-ImageNet (64 -> 32), resized per image by Pillow's bilinear filter while decoding
(:func:`basin.data.parsers.decode_rgb`), the same filter up to uint8 rounding.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_unit_float(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1] (a new tensor; the input is not modified)."""
    if isinstance(pixels, np.ndarray):
        # cached arrays are read-only views of file bytes; torch wants writable memory
        pixels = torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy())
    if pixels.dtype != torch.uint8:
        raise TypeError(f"pixels must be uint8, got {pixels.dtype}")
    return pixels.to(torch.float32).div_(255.0)


def resize_bilinear(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize float NCHW ``images`` to ``size`` = (H, W) with antialiased bilinear filtering."""
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float (N, C, H, W) tensor, got {images.dtype} "
                         f"with shape {tuple(images.shape)}")
    if tuple(images.shape[-2:]) == tuple(size):
        return images.clone()
    if images.shape[0] == 0:
        return images.new_zeros((0, images.shape[1], *size))
    resized = F.interpolate(images, size=size, mode="bilinear", antialias=True,
                            align_corners=False)
    return resized.clamp_(0.0, 1.0)


def cifar_to_bw(images: torch.Tensor) -> torch.Tensor:
    """The paper's CIFAR-10-bw: first (R) channel only, resized 32x32 -> 28x28."""
    return resize_bilinear(images[:, :1], (28, 28))
