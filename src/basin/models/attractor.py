"""The attractor paper's network: a fully connected autoencoder with a softmax head.

Default widths 784-500-300-300-300-500-784 (Alipour & SeyyedSalehi, section 2.5.1): the
encoder maps 784 -> 500 -> 300 -> 300 (the bottleneck, the middle layer), the decoder
300 -> 300 -> 500 -> 784, and a linear layer from the bottleneck to the class logits.
``G(x) = reconstruct(x)``, ``F(x) = probabilities(x)``.

Output activation: the default is ``"relu"``, the paper's choice ("the autoencoder layers use
the ReLU activation function"), which keeps the whole map piecewise linear (the exact fast
Jacobian relies on that) and lets an iterate never leave the non-negative orthant. ``"clamp"``
(ReLU capped at 1) keeps iterates inside the image box [0, 1]; ``"sigmoid"`` and
``"linear"`` are offered for experiments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from basin.models.activations import OUTPUT_ACTIVATIONS, activation_derivative, apply_activation
from basin.models.layer_stack import LayerStack
from basin.models.maps import AttractorMaps

# re-exported: the activations lived here before they moved to their own module
__all__ = ["OUTPUT_ACTIVATIONS", "AttractorNet", "activation_derivative", "apply_activation",
           "check_images"]

class AttractorNet(AttractorMaps):
    """Autoencoder G with a classification head F on its bottleneck.

    Args:
        widths: layer widths from input to output, odd length >= 3; the middle entry is the
            bottleneck. Input and output widths must match (G maps images to images).
        n_classes: number of classes of the softmax head.
        output_activation: one of ``OUTPUT_ACTIVATIONS`` (default ``"relu"``, the paper's).

    Shapes: inputs ``(N, C, H, W)`` with ``C*H*W == widths[0]`` or flat ``(N, widths[0])``;
    ``reconstruct`` returns the input's shape, ``logits`` returns ``(N, n_classes)``.
    """

    def __init__(self, widths: Sequence[int] = (784, 500, 300, 300, 300, 500, 784),
                 n_classes: int = 10, output_activation: str = "relu") -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 3 or len(widths) % 2 == 0:
            raise ValueError(f"widths must have odd length >= 3, got {widths}")
        if widths[0] != widths[-1]:
            raise ValueError(f"input and output widths differ: {widths[0]} vs {widths[-1]}")
        if min(widths) < 1 or n_classes < 2:
            raise ValueError(f"widths must be positive and n_classes >= 2, got {widths}, "
                             f"{n_classes}")
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"unknown output activation {output_activation!r}; "
                             f"choose from {OUTPUT_ACTIVATIONS}")
        self.widths = widths
        self.n_classes = n_classes
        self.output_activation = output_activation
        middle = len(widths) // 2
        self.encoder = nn.ModuleList(
            nn.Linear(widths[i], widths[i + 1]) for i in range(middle))
        self.decoder = nn.ModuleList(
            nn.Linear(widths[i], widths[i + 1]) for i in range(middle, len(widths) - 1))
        self.head = nn.Linear(widths[middle], n_classes)

    # -- configuration -----------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the model: ``AttractorNet(**net.config())``."""
        return {"widths": list(self.widths), "n_classes": self.n_classes,
                "output_activation": self.output_activation}

    @property
    def input_dim(self) -> int:
        return self.widths[0]

    # -- maps ----------------------------------------------------------------------------
    def _flatten(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1) if x.dim() != 2 else x
        if flat.shape[1] != self.input_dim:
            raise ValueError(f"input has {flat.shape[1]} features per sample "
                             f"(shape {tuple(x.shape)}), the model expects {self.input_dim}")
        return flat

    def encode(self, x: Tensor) -> Tensor:
        """Bottleneck code, shape (N, widths[middle])."""
        h = self._flatten(x)
        for layer in self.encoder:
            h = torch.relu(layer(h))
        return h

    def decode(self, code: Tensor) -> Tensor:
        """Flat reconstruction from a bottleneck code, shape (N, widths[-1])."""
        h = code
        last = len(self.decoder) - 1
        for i, layer in enumerate(self.decoder):
            z = layer(h)
            h = apply_activation(self.output_activation, z) if i == last else torch.relu(z)
        return h

    # -- layer-wise pretraining --------------------------------------------------------
    @property
    def n_stages(self) -> int:
        """Number of single-hidden-layer autoencoders in layer-wise pretraining."""
        return len(self.encoder)

    def stage_layers(self, k: int) -> tuple[nn.Linear, nn.Linear]:
        """(encoder layer, mirrored decoder layer) of pretraining stage ``k`` (0 = outermost)."""
        if not 0 <= k < self.n_stages:
            raise ValueError(f"stage must be in [0, {self.n_stages}), got {k}")
        # ModuleList indexing is typed as Module; __init__ fills both lists with nn.Linear only
        return (cast(nn.Linear, self.encoder[k]),
                cast(nn.Linear, self.decoder[len(self.decoder) - 1 - k]))

    def stage_output_activation(self, k: int) -> str:
        """Stage 0 reconstructs images (the network's output activation); inner stages
        reconstruct ReLU activations, so their outputs are ReLU."""
        return self.output_activation if k == 0 else "relu"

    def autoencoder_stack(self) -> LayerStack:
        """G as a LayerStack over flat inputs (shares this module's parameters)."""
        layers = [*self.encoder, *self.decoder]
        return LayerStack(layers, ["relu"] * (len(layers) - 1) + [self.output_activation])

    def stage_stack(self, k: int) -> LayerStack:
        """Pretraining stage ``k`` as a single-hidden-layer autoencoder LayerStack."""
        enc, dec = self.stage_layers(k)
        return LayerStack([enc, dec], ["relu", self.stage_output_activation(k)])

    def stage_input(self, x: Tensor, k: int) -> Tensor:
        """The activations that stage ``k`` learns to reconstruct (x itself for k = 0)."""
        h = self._flatten(x)
        for layer in self.encoder[:k]:
            h = torch.relu(layer(h))
        return h


def check_images(x: Tensor, name: str = "input", *, require_unit_range: bool = True) -> None:
    """Raise ValueError naming ``name`` if ``x`` is not a finite float batch in [0, 1]."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if x.dim() not in (2, 4):
        raise ValueError(f"{name}: expected shape (N, C, H, W) or (N, D), got {tuple(x.shape)}")
    # A sum is NaN or infinite when any element is (NaN propagates, +inf + -inf is NaN): one
    # reduction instead of a boolean pass over the batch; the exact test only confirms a
    # non-finite sum, which finite values can also give by overflowing (|x| ~ 1e34).
    if not bool(x.detach().sum().isfinite()) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    if require_unit_range and x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name}: values must lie in [0, 1], got range "
                         f"[{x.min().item():.4g}, {x.max().item():.4g}]")
