"""The maps every attractor network offers, from its ``encode``, ``decode`` and ``head``.

G(x) = decode(encode(x)), F(x) = softmax(head(encode(x))). The paper's MLP and the
convolutional variant differ only in how they encode and decode; what the detectors,
attacks and evaluations call is written once here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AttractorMaps(nn.Module):
    """Base of the attractor networks: subclasses define ``encode``, ``decode`` and a
    ``head`` (``nn.Linear`` from the code to the class logits)."""

    head: nn.Linear

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, code: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(reconstruction with the input's shape, logits)."""
        code = self.encode(x)
        return self.decode(code).reshape(x.shape), self.head(code)

    def reconstruct(self, x: Tensor) -> Tensor:
        """G(x), with the input's shape."""
        return self.decode(self.encode(x)).reshape(x.shape)

    def logits(self, x: Tensor) -> Tensor:
        return self.head(self.encode(x))

    def probabilities(self, x: Tensor) -> Tensor:
        """F(x): softmax class probabilities."""
        return torch.softmax(self.logits(x), dim=1)
