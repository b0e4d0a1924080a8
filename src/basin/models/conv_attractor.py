"""A convolutional attractor network: the paper's design (autoencoder G with a softmax head
F on its bottleneck) with a convolutional encoder and a transposed-convolution decoder.

Issue 13 asks for it beside the paper's MLP because L-inf robustness at 0.3 on MNIST is a
matter of architecture as much as of training (Madry et al.'s CNN keeps about 89% under
PGD at 0.3, a PGD-trained MLP of the paper's widths about 60%). The shape follows the
small convnets of the certified-training literature (two stride-2 4x4 convolutions and a
dense layer), sized so that one pass of G + F costs about what the MLP's does on a CPU:

    encoder: conv(1 -> c1, 4x4, /2) - ReLU - conv(c1 -> c2, 4x4, /2) - ReLU - dense(-> code)
    head:    dense(code -> 10)                                  (F = softmax of the head)
    decoder: dense(code -> c2*7*7) - ReLU - tconv(c2 -> c1, x2) - ReLU - tconv(c1 -> 1, x2)

The decoder ends in the network's output activation (default ``"clamp"``, so that iterates
stay in the image box [0, 1]). The public interface is the MLP's (``reconstruct``,
``logits``, ``probabilities``, ``encode``, ``decode``, ``forward``, ``config``), so the
detectors, attacks and the robust-attractor evaluation take either network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from basin.models.activations import OUTPUT_ACTIVATIONS, apply_activation
from basin.models.maps import AttractorMaps

IMAGE_SHAPE = (1, 28, 28)


class ConvAttractorNet(AttractorMaps):
    """Convolutional autoencoder G with a classification head F on its bottleneck.

    Args:
        channels: (c1, c2), channels of the two stride-2 convolutions (28 -> 14 -> 7).
        code: width of the bottleneck (the head's input).
        n_classes: number of classes.
        output_activation: one of ``OUTPUT_ACTIVATIONS`` for G's last layer.

    Shapes: inputs ``(N, 1, 28, 28)`` or flat ``(N, 784)``; ``reconstruct`` returns the
    input's shape, ``logits`` ``(N, n_classes)``.

    Example:
        >>> net = ConvAttractorNet()
        >>> net.reconstruct(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 1, 28, 28])
    """

    arch = "conv"

    def __init__(self, channels: Sequence[int] = (16, 32), code: int = 256,
                 n_classes: int = 10, output_activation: str = "clamp") -> None:
        super().__init__()
        if len(channels) != 2:
            raise ValueError(f"channels: need two channel counts, got {list(channels)}")
        c1, c2 = (int(c) for c in channels)
        if min(c1, c2, code) < 1 or n_classes < 2:
            raise ValueError(f"channels and code must be positive and n_classes >= 2, got "
                             f"{[c1, c2]}, {code}, {n_classes}")
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"unknown output activation {output_activation!r}; "
                             f"choose from {OUTPUT_ACTIVATIONS}")
        self.channels, self.code, self.n_classes = (c1, c2), int(code), n_classes
        self.output_activation = output_activation
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(c2 * 7 * 7, code), nn.ReLU())
        self.head = nn.Linear(code, n_classes)
        self.decoder = nn.Sequential(
            nn.Linear(code, c2 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (c2, 7, 7)),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1))

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the model (``build_attractor(net.config())``)."""
        return {"arch": self.arch, "channels": list(self.channels), "code": self.code,
                "n_classes": self.n_classes, "output_activation": self.output_activation}

    @property
    def input_dim(self) -> int:
        return IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]

    def _images(self, x: Tensor) -> Tensor:
        if x[0].numel() != self.input_dim:
            raise ValueError(f"input has {x[0].numel()} features per sample "
                             f"(shape {tuple(x.shape)}), the model expects {self.input_dim}")
        return x.reshape(x.shape[0], *IMAGE_SHAPE)

    def encode(self, x: Tensor) -> Tensor:
        """Bottleneck code, shape (N, code)."""
        return self.encoder(self._images(x))

    def decode(self, code: Tensor) -> Tensor:
        """Reconstruction from a code, shape (N, 1, 28, 28)."""
        return apply_activation(self.output_activation, self.decoder(code))
