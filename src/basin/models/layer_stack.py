"""A view of an MLP as a list of (linear layer, activation) pairs.

The Jacobian losses need the structure of G, not only its values: the whole autoencoder and
each layer-wise pretraining stage are ``LayerStack`` views over the same parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from basin.models.activations import apply_activation


@dataclass(frozen=True)
class LayerStack:
    """``h -> act_L(W_L ... act_1(W_1 h + b_1) ... + b_L)`` on flat inputs ``(N, D)``."""

    layers: Sequence[nn.Linear]
    activations: Sequence[str]

    def __post_init__(self) -> None:
        if len(self.layers) != len(self.activations) or not self.layers:
            raise ValueError("a LayerStack needs one activation per layer, and >= 1 layer")

    def __call__(self, h: Tensor) -> Tensor:
        for layer, act in zip(self.layers, self.activations, strict=True):
            h = apply_activation(act, layer(h))
        return h

    def pre_activations(self, h: Tensor) -> list[Tensor]:
        """Pre-activation of every layer, in order (their signs are the ReLU masks)."""
        out = []
        for layer, act in zip(self.layers, self.activations, strict=True):
            z = layer(h)
            out.append(z)
            h = apply_activation(act, z)
        return out

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    @property
    def out_features(self) -> int:
        return self.layers[-1].out_features
