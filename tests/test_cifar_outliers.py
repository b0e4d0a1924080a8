"""The CIFAR-shaped validation OOD proxy (basin.data.cifar_outliers) on small synthetic images."""

from __future__ import annotations

import pytest
import torch

from basin.data.cifar_outliers import (
    KINDS,
    cifar_outliers,
    low_pass,
    mixtures,
    permuted,
    shuffled_patches,
)


def images(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=gen), torch.arange(n) % 3


def test_permuted_keeps_each_pixel_colour_and_moves_them() -> None:
    x, _ = images(4)
    out = permuted(x, torch.Generator().manual_seed(1))
    for a, b in zip(x, out, strict=True):
        # the multiset of RGB triplets is unchanged: sort the pixels by their triplet
        pa, pb = a.reshape(3, -1).T, b.reshape(3, -1).T
        key_a, key_b = pa @ torch.tensor([1.0, 1e-3, 1e-6]), pb @ torch.tensor([1.0, 1e-3, 1e-6])
        assert torch.equal(pa[key_a.argsort()], pb[key_b.argsort()])
        assert float((a - b).abs().mean()) > 0.2  # positions really moved


def test_shuffled_patches_is_a_permutation_of_the_grid() -> None:
    # patch (r, c) is filled with the value (4 r + c) / 16: every patch is recognisable
    x = torch.zeros(1, 3, 32, 32)
    for r in range(4):
        for c in range(4):
            x[:, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] = (4 * r + c) / 16
    out = shuffled_patches(x, torch.Generator().manual_seed(0))
    values = [float(out[0, 0, 8 * r, 8 * c]) for r in range(4) for c in range(4)]
    assert sorted(values) == [k / 16 for k in range(16)]
    assert values != [k / 16 for k in range(16)]
    for r in range(4):  # each patch moved whole
        for c in range(4):
            block = out[0, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8]
            assert torch.equal(block, torch.full_like(block, values[4 * r + c]))


def test_low_pass_is_a_box_mean() -> None:
    x, _ = images(2)
    out = low_pass(x, 7)
    assert torch.allclose(out[:, :, 10, 12], x[:, :, 7:14, 9:16].mean(dim=(2, 3)))
    # a corner averages only the pixels inside the image (4 x 4 of them)
    assert torch.allclose(out[:, :, 0, 0], x[:, :, :4, :4].mean(dim=(2, 3)))
    flat = torch.full((1, 3, 32, 32), 0.3)
    assert torch.allclose(low_pass(flat), flat)


def test_mixtures_average_two_different_classes() -> None:
    x, y = images(9)
    out = mixtures(x, y, 20, torch.Generator().manual_seed(3))
    pair_means = 0.5 * (x[:, None] + x[None, :])
    for m in out:
        hits = (pair_means - m).abs().flatten(2).amax(2) < 1e-6
        i, j = torch.nonzero(hits)[0].tolist()
        assert int(y[i]) != int(y[j])


def test_pool_is_seeded_balanced_and_in_range() -> None:
    x, y = images()
    out, kind = cifar_outliers(x, y, 40, seed=5)
    again, kind2 = cifar_outliers(x, y, 40, seed=5)
    other, _ = cifar_outliers(x, y, 40, seed=6)
    assert out.shape == (40, 3, 32, 32) and torch.equal(out, again) and torch.equal(kind, kind2)
    assert not torch.equal(out, other)
    assert torch.bincount(kind, minlength=len(KINDS)).tolist() == [10, 10, 10, 10]
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    only, which = cifar_outliers(x, y, 6, seed=0, kinds=("lowpass",))
    assert which.tolist() == [0] * 6
    assert any(torch.allclose(o, low_pass(x[i:i + 1])[0]) for o in only for i in range(12))


def test_bad_inputs_name_the_argument() -> None:
    x, y = images()
    with pytest.raises(ValueError, match=r"images: expected \(N, 3, H, W\)"):
        cifar_outliers(x[:, :1], y, 4)
    with pytest.raises(ValueError, match="labels: expected shape"):
        cifar_outliers(x, y[:3], 4)
    with pytest.raises(ValueError, match="at least 2 classes"):
        cifar_outliers(x, torch.zeros(12, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="kinds: unknown"):
        cifar_outliers(x, y, 4, kinds=("noise",))
    with pytest.raises(ValueError, match="n: must be >= 1"):
        cifar_outliers(x, y, 0)
    with pytest.raises(ValueError, match="multiples of 8"):
        cifar_outliers(torch.rand(4, 3, 28, 28), torch.arange(4) % 2, 4)
