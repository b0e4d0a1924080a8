"""Deterministic photometric corruptions: brightness shift and contrast reduction.

They use no randomness (the seed is accepted for a uniform API and ignored).
"""

from __future__ import annotations

import torch
from torch import Tensor


def brightness(x: Tensor, shift: float, gen: torch.Generator) -> Tensor:
    """Add the constant ``shift`` to every pixel and channel (clipped to [0, 1] afterwards)."""
    del gen
    return x + shift


def contrast(x: Tensor, factor: float, gen: torch.Generator) -> Tensor:
    """Scale each image around its own mean: ``m + factor * (x - m)``.

    ``m`` is the mean of the image over all channels and pixels (one number per image), so
    colour balance is kept and ``factor < 1`` reduces contrast.
    """
    del gen
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + factor * (x - mean)
