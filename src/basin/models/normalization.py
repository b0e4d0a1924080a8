"""CIFAR-10 input handling shared by every backbone: the shape check and the normalisation.

Backbones take pixels in [0, 1] and normalise inside, so attacks and detectors work in pixel
space. This sits below the architectures (:mod:`basin.models.airbench`,
:mod:`basin.models.resnet`) and the registry that builds them (:mod:`basin.models.cifar`),
so the registry can import the architectures at the top without a cycle.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# per-channel statistics of the CIFAR-10 training images (the values in common use)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR_SHAPE = (3, 32, 32)


class CifarNormalize(nn.Module):
    """``(x - mean) / std`` per channel, after checking ``x`` is a batch of CIFAR images."""

    # declared so type checkers see the registered buffers as tensors, not Tensor | Module
    mean: Tensor
    std: Tensor

    def __init__(self, mean: tuple[float, ...] = CIFAR_MEAN,
                 std: tuple[float, ...] = CIFAR_STD) -> None:
        super().__init__()
        # non-persistent: constants of the architecture, not weights to checkpoint
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        check_cifar_images(x)
        return (x - self.mean) / self.std


def check_cifar_images(x: object, name: str = "x") -> Tensor:
    """Raise a clear error unless ``x`` is a floating (N, 3, 32, 32) tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of images, got {type(x).__name__}")
    if x.dim() != 4 or tuple(x.shape[1:]) != CIFAR_SHAPE:
        raise ValueError(f"{name}: expected images of shape (N, 3, 32, 32), "
                         f"got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected floating-point pixels in [0, 1], got {x.dtype}")
    return x
