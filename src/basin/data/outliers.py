"""The training outlier pool of the robust attractor system (outlier exposure, issue 13).

Adversarial outlier exposure needs inputs that are *not* MNIST digits to push towards low
similarity during training. The pool is built only from sources that are not test OOD sets:

- ``uniform``: i.i.d. uniform noise in [0, 1];
- ``gaussian``: i.i.d. Gaussian noise (mean 0.5, std drawn in [0.1, 0.4]) clipped to [0, 1];
- ``permuted``: an MNIST *training* image with its pixels randomly permuted (same histogram,
  no shape);
- ``patches``: an MNIST training image cut into 7x7 patches that are shuffled (local strokes,
  no global digit shape);
- ``lowpass``: an MNIST training image blurred by a wide box filter (a blob, no strokes);
- ``mixture``: the pixelwise maximum or mean of two training digits of *different* classes;
- ``omniglot-background``: the mirror's Omniglot *background* drawings (small1 + small2).

Never Fashion-MNIST, notMNIST, CIFAR-10(-bw) or the Omniglot evaluation drawings (the
one-shot runs, ``all_runs.zip``): they are the test OOD sets, and exposing the detector to
them would turn the OOD evaluation into a training-set measurement. ``FORBIDDEN_SOURCES``
names them and the constructor refuses them; ``tests/test_outliers.py`` checks the pool.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from basin.data.datasets import load_dataset

SYNTHETIC_SOURCES = ("uniform", "gaussian", "permuted", "patches", "lowpass", "mixture")
OMNIGLOT_BACKGROUND = "omniglot-background"
SOURCES = (*SYNTHETIC_SOURCES, OMNIGLOT_BACKGROUND)
FORBIDDEN_SOURCES = ("fashion-mnist", "notmnist", "cifar10", "cifar10-bw",
                     "omniglot-evaluation", "omniglot", "tiny-imagenet")
# class keys of the background drawings start with their zip's stem (basin.data.parsers)
_BACKGROUND_STEMS = ("images_background_small1/", "images_background_small2/")
_EVALUATION_STEM = "all_runs/"


def omniglot_parts(mirror: str | os.PathLike[str] | None = None) -> tuple[Tensor, Tensor]:
    """(background drawings, evaluation drawings) of the mirror's Omniglot, (N, 1, 28, 28).

    The loader ``load_dataset("omniglot", "test")`` returns both; the split is by class key
    (the zip each drawing came from). Background drawings may train; the evaluation
    drawings (the one-shot runs) are a test OOD set.
    """
    ds = load_dataset("omniglot", "test", mirror=mirror)
    keys = [ds.classes[int(i)] for i in ds.labels]
    background = torch.tensor([k.startswith(_BACKGROUND_STEMS) for k in keys])
    evaluation = torch.tensor([k.startswith(_EVALUATION_STEM) for k in keys])
    if not bool((background | evaluation).all()):
        raise ValueError("omniglot: drawings from an unknown zip; cannot tell background "
                         "from evaluation")
    return ds.images[background].contiguous(), ds.images[evaluation].contiguous()


def _check_images(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1:] != (1, 28, 28):
        raise ValueError(f"{name}: expected images (N, 1, 28, 28), got "
                         f"{tuple(getattr(x, 'shape', ()))}")
    if not x.is_floating_point() or len(x) == 0:
        raise ValueError(f"{name}: expected a non-empty float batch, got {x.dtype}")
    return x


class OutlierPool:
    """Draws seeded batches of training outliers, an equal share from each source.

    Args:
        digits: MNIST *training* images (N, 1, 28, 28) in [0, 1], the raw material of the
            synthetic outliers; labels: their classes (mixtures take two different classes).
        omniglot_background: background drawings, or None to leave that source out.
        sources: which of ``SOURCES`` to draw from (default: all available).
    """

    def __init__(self, digits: Tensor, labels: Tensor, *,
                 omniglot_background: Tensor | None = None,
                 sources: tuple[str, ...] | None = None) -> None:
        self.digits = _check_images(digits, "digits")
        if not isinstance(labels, Tensor) or labels.shape != (len(digits),):
            raise ValueError(f"labels: expected shape ({len(digits)},), got "
                             f"{tuple(getattr(labels, 'shape', ()))}")
        self.labels = labels.long()
        self.omniglot = (None if omniglot_background is None
                         else _check_images(omniglot_background, "omniglot_background"))
        if sources is None:
            sources = SOURCES if self.omniglot is not None else SYNTHETIC_SOURCES
        bad = [s for s in sources if s in FORBIDDEN_SOURCES]
        if bad:
            raise ValueError(f"sources: {bad} are test OOD sets and may never train")
        unknown = [s for s in sources if s not in SOURCES]
        if unknown or not sources:
            raise ValueError(f"sources: unknown {unknown}; choose from {SOURCES}")
        if OMNIGLOT_BACKGROUND in sources and self.omniglot is None:
            raise ValueError("sources: omniglot-background needs omniglot_background images")
        self.sources = tuple(sources)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(outliers (n, 1, 28, 28) in [0, 1], source index (n,) into ``self.sources``)."""
        if n < 1:
            raise ValueError(f"n: must be >= 1, got {n}")
        which = torch.randperm(n, generator=generator) % len(self.sources)
        out = torch.empty(n, 1, 28, 28)
        for k, source in enumerate(self.sources):
            idx = torch.nonzero(which == k).flatten()
            if idx.numel():
                out[idx] = self._draw(source, idx.numel(), generator)
        return out.clamp_(0.0, 1.0), which

    def _pick(self, n: int, generator: torch.Generator) -> Tensor:
        return self.digits[torch.randint(len(self.digits), (n,), generator=generator)]

    def _draw(self, source: str, n: int, g: torch.Generator) -> Tensor:
        if source == "uniform":
            return torch.rand(n, 1, 28, 28, generator=g)
        if source == "gaussian":
            std = 0.1 + 0.3 * torch.rand(n, 1, 1, 1, generator=g)
            return 0.5 + std * torch.randn(n, 1, 28, 28, generator=g)
        if source == "permuted":
            flat = self._pick(n, g).reshape(n, -1)
            perm = torch.argsort(torch.rand(n, 784, generator=g), dim=1)
            return flat.gather(1, perm).reshape(n, 1, 28, 28)
        if source == "patches":
            return shuffle_patches(self._pick(n, g), 7, g)
        if source == "lowpass":
            return _box_blur(self._pick(n, g), 9)
        if source == "mixture":
            return self._mixture(n, g)
        assert self.omniglot is not None
        return self.omniglot[torch.randint(len(self.omniglot), (n,), generator=g)]

    def _mixture(self, n: int, g: torch.Generator) -> Tensor:
        i = torch.randint(len(self.digits), (n,), generator=g)
        j = torch.randint(len(self.digits), (n,), generator=g)
        same = self.labels[i] == self.labels[j]
        for _ in range(20):  # redraw partners of the same class (rarely needs > 3 rounds)
            if not bool(same.any()):
                break
            j[same] = torch.randint(len(self.digits), (int(same.sum()),), generator=g)
            same = self.labels[i] == self.labels[j]
        a, b = self.digits[i], self.digits[j]
        use_max = torch.rand(n, 1, 1, 1, generator=g) < 0.5
        return torch.where(use_max, torch.maximum(a, b), 0.5 * (a + b))


def shuffle_patches(x: Tensor, size: int, g: torch.Generator) -> Tensor:
    """Each image of ``x`` (N, C, H, W; H and W multiples of ``size``) with its grid of
    ``size`` x ``size`` patches in a random order (one draw of ``g`` per image and patch)."""
    n, c, h, w = x.shape
    gh, gw = h // size, w // size
    patches = x.reshape(n, c, gh, size, gw, size).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(n, gh * gw, c, size, size)
    perm = torch.argsort(torch.rand(n, gh * gw, generator=g), dim=1)
    patches = patches[torch.arange(n)[:, None], perm]
    patches = patches.reshape(n, gh, gw, c, size, size).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(n, c, h, w)


def _box_blur(x: Tensor, width: int) -> Tensor:
    blurred = F.avg_pool2d(x, width, stride=1, padding=width // 2, count_include_pad=False)
    # rescale so that the blob keeps the image's contrast (a faint blob is an easy outlier)
    peak = blurred.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return blurred / peak
