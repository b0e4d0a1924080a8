"""The ``Corruption`` type: a named pixel-space perturbation with five severity levels.

Corruptions build the anomaly set of the feature-reconstruction paper (section 4.1: CIFAR-10
images with Gaussian noise, salt-and-pepper noise, brightness and contrast changes and pixel
dropout). They act on float NCHW batches in [0, 1] with any number of channels, return a
batch of the same shape, dtype and device clipped to [0, 1], and never build an autograd
graph: they make data, they are not attacks.

Randomness comes from a private CPU ``torch.Generator`` (seeded by ``seed`` unless one is
passed), so the output depends only on the input, the severity and the seed: not on the
global RNG, and not on the device, because random draws are made on the CPU and then moved.
Each corruption draws the same random numbers at every severity, so with one seed the
pixels hit at a low severity are a subset of those hit at a higher one.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
DEFAULT_SEVERITY = 3

# (images, parameter of the chosen severity, CPU generator) -> corrupted, unclipped images.
CorruptionFn = Callable[[Tensor, float, torch.Generator], Tensor]


class CorruptionError(ValueError):
    """A corruption was asked for by an unknown name or severity, or given unusable input."""


def check_severity(severity: object) -> int:
    """``severity`` as an int in 1..5, or a CorruptionError saying what was wrong."""
    if isinstance(severity, bool):
        raise CorruptionError(f"severity: expected an integer in 1..5, got {severity!r}")
    try:
        level = operator.index(severity)  # type: ignore[arg-type]
    except TypeError:
        raise CorruptionError(f"severity: expected an integer in 1..5, got "
                              f"{severity!r}") from None
    if level not in SEVERITIES:
        raise CorruptionError(f"severity: must be one of 1..5, got {level}")
    return level


def check_image_batch(x: object, name: str = "x") -> Tensor:
    """Raise CorruptionError unless ``x`` is a finite float NCHW tensor in [0, 1]."""
    if not isinstance(x, Tensor):
        raise CorruptionError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise CorruptionError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if x.dim() != 4:
        raise CorruptionError(f"{name}: expected shape (N, C, H, W), got {tuple(x.shape)}")
    if x.numel():
        if not torch.isfinite(x).all():
            raise CorruptionError(f"{name}: contains NaN or infinite values")
        lo, hi = x.min().item(), x.max().item()
        if lo < 0 or hi > 1:
            raise CorruptionError(f"{name}: values must lie in [0, 1], got range "
                                  f"[{lo:.4g}, {hi:.4g}]")
    return x


def make_generator(seed: int, generator: torch.Generator | None) -> torch.Generator:
    """The generator to draw from: ``generator`` if given (CPU only), else one from ``seed``."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise CorruptionError(f"generator: expected a torch.Generator, got "
                                  f"{type(generator).__name__}")
        if generator.device.type != "cpu":
            raise CorruptionError(f"generator: must be a CPU generator, got one on "
                                  f"{generator.device}")
        return generator
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CorruptionError(f"seed: expected an integer, got {seed!r}")
    if seed < 0:
        raise CorruptionError(f"seed: must be >= 0, got {seed}")
    return torch.Generator(device="cpu").manual_seed(seed)


def random_like(x: Tensor, shape: tuple[int, ...], gen: torch.Generator,
                kind: str = "uniform") -> Tensor:
    """Uniform [0, 1) or standard normal draws of ``shape``, made on the CPU, on x's device."""
    draw_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if kind == "uniform":
        draws = torch.rand(shape, generator=gen, dtype=draw_dtype)
    elif kind == "normal":
        draws = torch.randn(shape, generator=gen, dtype=draw_dtype)
    else:
        raise ValueError(f"kind: expected 'uniform' or 'normal', got {kind!r}")
    return draws.to(device=x.device)


@dataclass(frozen=True)
class Corruption:
    """A corruption by name, with one documented parameter value per severity 1..5."""

    name: str
    description: str
    param_name: str
    params: tuple[float, ...]
    fn: CorruptionFn

    def __post_init__(self) -> None:
        if len(self.params) != len(SEVERITIES):
            raise ValueError(f"{self.name}: needs {len(SEVERITIES)} parameters (one per "
                             f"severity), got {len(self.params)}")

    def param(self, severity: int) -> float:
        """The parameter (``param_name``) used at ``severity``."""
        return self.params[check_severity(severity) - 1]

    def __call__(self, x: Tensor, severity: int = DEFAULT_SEVERITY, *, seed: int = 0,
                 generator: torch.Generator | None = None) -> Tensor:
        """Corrupt ``x`` (N, C, H, W) in [0, 1] at ``severity``; same shape, dtype, device."""
        value = self.param(severity)
        check_image_batch(x)
        gen = make_generator(seed, generator)
        with torch.no_grad():
            work = x.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32)
            out = self.fn(work, value, gen).clamp_(0.0, 1.0)
        return out.to(x.dtype)
