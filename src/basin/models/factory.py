"""Rebuild either attractor network from the ``model`` section of a run's config.

Runs written before the convolutional variant existed have no ``arch`` key: they are MLPs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from basin.models.attractor import AttractorNet
from basin.models.conv_attractor import ConvAttractorNet

# Every network with the attractor interface (reconstruct = G, logits / probabilities = F).
AnyAttractor = AttractorNet | ConvAttractorNet

ARCHITECTURES = ("mlp", "conv")


def build_attractor(config: Mapping[str, Any]) -> AnyAttractor:
    """``AttractorNet(**config)`` or ``ConvAttractorNet(**config)`` by ``config["arch"]``
    (default ``"mlp"``); ValueError naming the key when it is unknown."""
    settings = dict(config)
    arch = settings.pop("arch", "mlp")
    if arch == "mlp":
        return AttractorNet(**settings)
    if arch == "conv":
        return ConvAttractorNet(**settings)
    raise ValueError(f"model config: unknown arch {arch!r}; choose from {ARCHITECTURES}")
