"""ResNet-18, CIFAR variant: the backbone to use on a machine with a GPU.

He et al. 2016's ResNet-18 (four stages of two basic blocks, widths 64/128/256/512) with the
stem that the CIFAR literature uses for 32x32 inputs: one 3x3 stride-1 convolution and no max
pool (the ImageNet 7x7 stride-2 stem and pool would shrink a CIFAR image to 8x8 before the
first block). Projection shortcuts (1x1 convolution + BN) where the shape changes. Features
are the 512-d global average pool, the classifier one linear layer. About 0.56 GMAC per
image forward, ~4.7x :class:`~basin.models.airbench.AirbenchNet` (0.12 GMAC), and its usual
recipes need tens of epochs: too slow to train on two CPU cores, hence not the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from basin.models.feature_classifier import LinearHeadMixin
from basin.models.normalization import CifarNormalize


class _BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(LinearHeadMixin, nn.Module):
    """CIFAR ResNet-18 as a :class:`~basin.models.feature_classifier.FeatureClassifier`.

    Args:
        n_classes: number of logits.
        widths: channels of the four stages (default 64, 128, 256, 512); the last is the
            feature dimension.
        blocks: basic blocks per stage (default 2, 2, 2, 2: ResNet-18).
    """

    def __init__(self, n_classes: int = 10, widths: Sequence[int] = (64, 128, 256, 512),
                 blocks: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        widths, blocks = tuple(int(w) for w in widths), tuple(int(b) for b in blocks)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths: expected four positive stage widths, got {widths}")
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks: expected four positive block counts, got {blocks}")
        if int(n_classes) < 2:
            raise ValueError(f"n_classes: must be >= 2, got {n_classes}")
        self.widths, self.blocks, self._n_classes = widths, blocks, int(n_classes)
        self.normalize = CifarNormalize()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages: list[nn.Module] = []
        in_channels = widths[0]
        for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(_BasicBlock(in_channels, width, stride))
                in_channels = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(widths[-1], self._n_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # zero-init the last BN of each residual branch: every block starts as the identity
        # (Goyal et al. 2017), which helps large-batch training
        for module in self.modules():
            if isinstance(module, _BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def config(self) -> dict[str, Any]:
        return {"arch": "resnet18", "n_classes": self._n_classes, "widths": list(self.widths),
                "blocks": list(self.blocks)}

    def features(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(self.normalize(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)
