"""The resize filter (antialiased bilinear) against hand-computed values and Pillow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from basin.data.transforms import cifar_to_bw, resize_bilinear, to_unit_float


def test_halving_uses_a_widened_triangle_filter() -> None:
    # output pixel 0 is centred at input x = 0.5; a triangle of radius 2 weights inputs
    # 0, 1, 2 by 0.75, 0.75, 0.25 (renormalised), output 1 mirrors it
    row = torch.tensor([0.1, 0.2, 0.3, 0.4]).reshape(1, 1, 1, 4)
    out = resize_bilinear(row, (1, 2)).flatten().tolist()
    assert out == pytest.approx([(0.075 + 0.15 + 0.075) / 1.75, (0.05 + 0.225 + 0.3) / 1.75])


@pytest.mark.parametrize(("source", "target"), [((32, 32), (28, 28)), ((105, 105), (28, 28))])
def test_matches_pillow_bilinear(source: tuple[int, int], target: tuple[int, int]) -> None:
    pixels = np.random.default_rng(0).random(source, dtype=np.float32)
    reference = Image.fromarray(pixels, mode="F").resize(target[::-1], Image.BILINEAR)
    out = resize_bilinear(torch.from_numpy(pixels)[None, None], target)[0, 0]
    np.testing.assert_allclose(out.numpy(), np.asarray(reference), atol=1e-5)


def test_cifar_to_bw_keeps_only_the_red_channel() -> None:
    images = torch.zeros(2, 3, 32, 32)
    images[:, 0] = torch.linspace(0, 1, 32)  # horizontal ramp in R
    images[:, 1:] = 1.0
    bw = cifar_to_bw(images)
    assert bw.shape == (2, 1, 28, 28)
    torch.testing.assert_close(bw, resize_bilinear(images[:, :1], (28, 28)))
    assert float(bw[0, 0, 5, 0]) < 0.05 and float(bw[0, 0, 5, 27]) > 0.95


def test_to_unit_float_and_bad_input() -> None:
    pixels = np.array([0, 51, 255], dtype=np.uint8)
    pixels.flags.writeable = False
    assert to_unit_float(pixels).tolist() == pytest.approx([0.0, 0.2, 1.0])
    with pytest.raises(TypeError, match="uint8"):
        to_unit_float(torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        resize_bilinear(torch.zeros(3, 32, 32), (28, 28))
