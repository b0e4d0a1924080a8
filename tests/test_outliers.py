"""The training outlier pool: its sources, shares, ranges and that no test OOD set is in it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from basin.data.outliers import (
    FORBIDDEN_SOURCES,
    OMNIGLOT_BACKGROUND,
    SOURCES,
    SYNTHETIC_SOURCES,
    OutlierPool,
    omniglot_parts,
)


def _digits(n: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 1, 28, 28, generator=g) > 0.8).float()
    return x, torch.arange(n) % 10


def test_sources_never_include_a_test_ood_set() -> None:
    assert not set(SOURCES) & set(FORBIDDEN_SOURCES)
    for name in ("fashion-mnist", "notmnist", "cifar10-bw", "omniglot-evaluation"):
        assert name in FORBIDDEN_SOURCES
    x, y = _digits()
    for bad in ("fashion-mnist", "omniglot-evaluation", "cifar10-bw", "notmnist"):
        with pytest.raises(ValueError, match="test OOD"):
            OutlierPool(x, y, sources=("uniform", bad))


def test_sample_shares_range_and_determinism() -> None:
    x, y = _digits()
    omni = torch.rand(10, 1, 28, 28)
    pool = OutlierPool(x, y, omniglot_background=omni)
    assert pool.sources == SOURCES
    out, which = pool.sample(70, torch.Generator().manual_seed(1))
    assert out.shape == (70, 1, 28, 28)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.bincount(which, minlength=len(SOURCES)).tolist() == [10] * len(SOURCES)
    again, which2 = pool.sample(70, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and torch.equal(which, which2)
    # without Omniglot images the pool falls back to the synthetic sources only
    assert OutlierPool(x, y).sources == SYNTHETIC_SOURCES
    with pytest.raises(ValueError, match="omniglot"):
        OutlierPool(x, y, sources=(OMNIGLOT_BACKGROUND,))


def test_synthetic_outliers_keep_pixels_but_not_shape() -> None:
    x, y = _digits(20)
    g = torch.Generator().manual_seed(3)
    for source in ("permuted", "patches"):
        pool = OutlierPool(x[:1].repeat(20, 1, 1, 1), y[:1].repeat(20), sources=(source,))
        out, _ = pool.sample(5, g)
        for img in out:
            # same multiset of pixel values as the source digit, different arrangement
            assert torch.equal(img.flatten().sort().values, x[0].flatten().sort().values)
            assert not torch.equal(img, x[0])
    mix = OutlierPool(x, y, sources=("mixture",))._mixture(200, g)
    assert not any(torch.equal(m, d) for m in mix[:20] for d in x)


def _hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in images}


@pytest.mark.integration
@pytest.mark.slow
def test_omniglot_background_and_evaluation_are_disjoint(mirror_dir: Path) -> None:
    background, evaluation = omniglot_parts(mirror_dir)
    assert len(background) == 5840 and len(evaluation) == 800
    assert not _hashes(background) & _hashes(evaluation)
    pool = OutlierPool(torch.zeros(10, 1, 28, 28), torch.arange(10),
                       omniglot_background=background)
    drawn, which = pool.sample(700, torch.Generator().manual_seed(0))
    omni = drawn[which == pool.sources.index(OMNIGLOT_BACKGROUND)]
    assert _hashes(omni) <= _hashes(background)
    assert not _hashes(omni) & _hashes(evaluation)
