"""The corruption registry, ``corrupt`` by name and parsing of ``name:severity`` specs.

Severity tables follow CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019) where it has the same
corruption, adapted to a plain pixel-space operation on [0, 1] images:

=================  ==========  ====================================  =====================
name               parameter   severity 1..5                         source
=================  ==========  ====================================  =====================
gaussian-noise     std         0.04, 0.06, 0.08, 0.09, 0.10          CIFAR-10-C gaussian
salt-and-pepper    fraction    0.01, 0.02, 0.03, 0.05, 0.07          CIFAR-10-C impulse
brightness         shift       0.05, 0.10, 0.15, 0.20, 0.30          CIFAR-10-C brightness
contrast           factor      0.75, 0.50, 0.40, 0.30, 0.15          CIFAR-10-C contrast
pixel-dropout      fraction    0.05, 0.10, 0.20, 0.30, 0.40          basin's own
=================  ==========  ====================================  =====================

CIFAR-10-C shifts brightness in HSV value and scales contrast per channel; basin shifts all
channels and scales around the per-image mean, which is what the feature-reconstruction
paper describes ("brightness and contrast adjustments") and works for any channel count.
"""

from __future__ import annotations

import torch
from torch import Tensor

from basin.corruptions.base import DEFAULT_SEVERITY, Corruption, CorruptionError, check_severity
from basin.corruptions.noise import gaussian_noise, pixel_dropout, salt_and_pepper
from basin.corruptions.photometric import brightness, contrast

CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in (
    Corruption("gaussian-noise", "additive N(0, std^2) noise on every pixel and channel",
               "std", (0.04, 0.06, 0.08, 0.09, 0.10), gaussian_noise),
    Corruption("salt-and-pepper", "a fraction of pixel locations set to 0 or 1 (all channels)",
               "fraction", (0.01, 0.02, 0.03, 0.05, 0.07), salt_and_pepper),
    Corruption("brightness", "a constant added to every pixel of the image",
               "shift", (0.05, 0.10, 0.15, 0.20, 0.30), brightness),
    Corruption("contrast", "each image scaled around its mean by a factor < 1",
               "factor", (0.75, 0.50, 0.40, 0.30, 0.15), contrast),
    Corruption("pixel-dropout", "a fraction of pixel locations set to 0 (all channels)",
               "fraction", (0.05, 0.10, 0.20, 0.30, 0.40), pixel_dropout),
)}


def get_corruption(name: str) -> Corruption:
    """The registered corruption called ``name``, or a CorruptionError listing the names."""
    try:
        return CORRUPTIONS[name]
    except (KeyError, TypeError):
        raise CorruptionError(f"name: unknown corruption {name!r}; expected one of "
                              f"{', '.join(sorted(CORRUPTIONS))}") from None


def corrupt(x: Tensor, name: str, severity: int = DEFAULT_SEVERITY, *, seed: int = 0,
            generator: torch.Generator | None = None) -> Tensor:
    """Apply the corruption ``name`` at ``severity`` (1..5) to ``x`` (N, C, H, W) in [0, 1].

    Returns a tensor of the same shape, dtype and device, clipped to [0, 1]. The same
    ``seed`` (or the same state of ``generator``) gives the same output.
    """
    return get_corruption(name)(x, severity, seed=seed, generator=generator)


def parse_corruption_spec(spec: str) -> tuple[str, int]:
    """``"gaussian-noise:3"`` -> ``("gaussian-noise", 3)``; a bare name gets severity 3."""
    if not isinstance(spec, str) or not spec.strip():
        raise CorruptionError(f"corruption spec: expected 'name:severity', got {spec!r}")
    name, sep, level = spec.strip().partition(":")
    get_corruption(name)
    if not sep:
        return name, DEFAULT_SEVERITY
    try:
        severity = int(level)
    except ValueError:
        raise CorruptionError(f"corruption spec {spec!r}: severity must be an integer in "
                              f"1..5, got {level!r}") from None
    try:
        return name, check_severity(severity)
    except CorruptionError as err:
        raise CorruptionError(f"corruption spec {spec!r}: {err}") from None
