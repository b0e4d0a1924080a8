"""Random-noise corruptions: Gaussian noise, salt-and-pepper and pixel dropout.

Salt-and-pepper and dropout act per *pixel location*: a hit location is changed in every
channel together, as a dead or saturated sensor pixel would be, so on a colour image the
hit pixels become black or white rather than randomly coloured.
"""

from __future__ import annotations

import torch
from torch import Tensor

from basin.corruptions.base import random_like


def _location_shape(x: Tensor) -> tuple[int, ...]:
    """One draw per (image, row, column), broadcast over the channels."""
    n, _, h, w = x.shape
    return (n, 1, h, w)


def gaussian_noise(x: Tensor, std: float, gen: torch.Generator) -> Tensor:
    """Add independent N(0, std^2) noise to every pixel and channel."""
    return x + std * random_like(x, tuple(x.shape), gen, "normal")


def salt_and_pepper(x: Tensor, fraction: float, gen: torch.Generator) -> Tensor:
    """Set a random ``fraction`` of pixel locations to 0 or 1 (each with probability 1/2)."""
    shape = _location_shape(x)
    hit = random_like(x, shape, gen) < fraction
    # A second, independent draw decides salt or pepper so the hit set stays nested
    # across severities for a fixed seed.
    salt = (random_like(x, shape, gen) < 0.5).to(x.dtype)
    return torch.where(hit, salt, x)


def pixel_dropout(x: Tensor, fraction: float, gen: torch.Generator) -> Tensor:
    """Set a random ``fraction`` of pixel locations to 0 in every channel."""
    keep = random_like(x, _location_shape(x), gen) >= fraction
    return x * keep.to(x.dtype)
