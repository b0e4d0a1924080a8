"""AirbenchNet: the 8-layer CIFAR-10 convnet of airbench94, basin's default backbone.

Architecture (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", 2024,
github.com/KellerJordan/cifar10-airbench; it descends from tysam-code's hlb-CIFAR10 and David
Page's 2018 DAWNBench ResNet):

* a 2x2 convolution without padding (32 -> 31 pixels) whose 24 filters are the +/- whitened
  eigenvectors of the covariance of 2x2 training patches (:meth:`AirbenchNet.init_whitening`;
  Page 2018), frozen during training except for its bias, then GELU;
* three blocks ``conv3x3 - maxpool2 - BN - GELU - conv3x3 - BN - GELU`` of widths
  64/256/256 (31 -> 15 -> 7 -> 3 pixels), convolutions without bias and dirac-initialised in
  their first ``in_channels`` filters, batch norms with the scale fixed at 1 (only the bias
  learns), eps 1e-12 and a fast running-average momentum 0.4;
* a 3x3 max pool to the 256-d *features*, and a bias-free linear layer whose logits are
  scaled by 1/9.

Pixels in [0, 1] are normalised inside with the CIFAR-10 mean and std. The public record for
this network with its recipe (:mod:`basin.training.backbone`) is 94.01% mean test accuracy
(n=1000 runs) after 9.9 epochs of the 50,000 training images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from basin.models.feature_classifier import LinearHeadMixin
from basin.models.normalization import CifarNormalize, check_cifar_images

WHITEN_KERNEL = 2
WHITEN_WIDTH = 2 * 3 * WHITEN_KERNEL ** 2


class _DiracConv(nn.Conv2d):
    """3x3 'same' convolution, no bias, its first ``in_channels`` filters the identity."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        # identity filters make each block start close to a pass-through, which trains faster
        n = min(self.in_channels, self.out_channels)
        nn.init.dirac_(self.weight.data[:n])


class _BiasOnlyBatchNorm(nn.BatchNorm2d):
    """Batch norm whose scale stays 1: only the shift is learned."""

    def __init__(self, channels: int, momentum: float) -> None:
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(False)


class _ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float) -> None:
        super().__init__()
        self.conv1 = _DiracConv(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _BiasOnlyBatchNorm(out_channels, bn_momentum)
        self.conv2 = _DiracConv(out_channels, out_channels)
        self.norm2 = _BiasOnlyBatchNorm(out_channels, bn_momentum)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class AirbenchNet(LinearHeadMixin, nn.Module):
    """The airbench94 convnet as a :class:`~basin.models.feature_classifier.FeatureClassifier`.

    Args:
        widths: output channels of the three blocks (default 64, 256, 256); the last one is
            the feature dimension.
        n_classes: number of logits.
        logit_scale: factor applied to the linear layer's output (1/9 in airbench94).
        bn_momentum: PyTorch batch-norm momentum (0.4, i.e. airbench's 0.6 in the other
            convention).
    """

    def __init__(self, widths: Sequence[int] = (64, 256, 256), n_classes: int = 10,
                 logit_scale: float = 1 / 9, bn_momentum: float = 0.4) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths: expected three positive block widths, got {widths}")
        if int(n_classes) < 2:
            raise ValueError(f"n_classes: must be >= 2, got {n_classes}")
        if not 0.0 < bn_momentum <= 1.0:
            raise ValueError(f"bn_momentum: must be in (0, 1], got {bn_momentum}")
        self.widths, self._n_classes = widths, int(n_classes)
        self.logit_scale, self.bn_momentum = float(logit_scale), float(bn_momentum)
        self.normalize = CifarNormalize()
        self.whiten = nn.Conv2d(3, WHITEN_WIDTH, kernel_size=WHITEN_KERNEL, padding=0, bias=True)
        if self.whiten.bias is not None:  # always (bias=True); narrows Tensor | None
            nn.init.zeros_(self.whiten.bias)
        self.whiten.weight.requires_grad_(False)
        self.act = nn.GELU()
        channels = (WHITEN_WIDTH, *widths)
        self.blocks = nn.Sequential(*(_ConvBlock(channels[i], channels[i + 1], bn_momentum)
                                      for i in range(3)))
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(widths[-1], self._n_classes, bias=False)

    def config(self) -> dict[str, Any]:
        return {"arch": "airbench", "widths": list(self.widths), "n_classes": self._n_classes,
                "logit_scale": self.logit_scale, "bn_momentum": self.bn_momentum}

    def features(self, x: Tensor) -> Tensor:
        x = self.act(self.whiten(self.normalize(x)))
        return self.pool(self.blocks(x)).flatten(1)

    @torch.no_grad()
    def init_whitening(self, images: Tensor, eps: float = 5e-4) -> None:
        """Set the first layer to whiten 2x2 patches of ``images`` (N, 3, 32, 32) in [0, 1].

        With ``C`` the (uncentred) covariance of all normalised 2x2 patches and
        ``C = sum_i l_i v_i v_i^T`` its eigen-decomposition, the 12 filters
        ``v_i / sqrt(l_i + eps)`` and their negatives make the layer's outputs decorrelated
        with unit variance on the data (the negatives keep both signs alive through GELU).
        """
        check_cifar_images(images, "images")
        if len(images) < 2:
            raise ValueError(f"images: need at least 2 images to whiten, got {len(images)}")
        if eps <= 0:
            raise ValueError(f"eps: must be > 0, got {eps}")
        x = self.normalize(images.to(self.whiten.weight.device, torch.float32))
        k = WHITEN_KERNEL
        # every k x k patch (stride 1) as a row of length 3*k*k, in the conv weight's layout
        patches = x.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5)
        patches = patches.reshape(-1, 3 * k * k).double()
        covariance = patches.T @ patches / patches.shape[0]
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        # largest eigenvalue first, so filter i is the i-th principal direction
        order = torch.argsort(eigenvalues, descending=True)
        filters = eigenvectors[:, order].T / torch.sqrt(eigenvalues[order] + eps)[:, None]
        filters = filters.reshape(-1, 3, k, k).to(self.whiten.weight.dtype)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
