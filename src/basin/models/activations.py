"""The elementwise activations of the attractor MLP and their derivatives, by name.

In their own module because both the network (:mod:`basin.models.attractor`) and its
layer-list view (:mod:`basin.models.layer_stack`) need them: the view is built by the network,
so the shared piece sits below both and the import graph has no cycle.
"""

from __future__ import annotations

import torch
from torch import Tensor

OUTPUT_ACTIVATIONS = ("relu", "clamp", "sigmoid", "linear")


def apply_activation(name: str, z: Tensor) -> Tensor:
    if name == "relu":
        return torch.relu(z)
    if name == "clamp":
        return torch.clamp(z, 0.0, 1.0)
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "linear":
        return z
    raise ValueError(f"unknown activation {name!r}; choose from {OUTPUT_ACTIVATIONS}")


def activation_derivative(name: str, z: Tensor) -> Tensor:
    """d act(z) / dz, elementwise (the derivative at a kink is taken as 0, as autograd does)."""
    if name == "relu":
        return (z > 0).to(z.dtype)
    if name == "clamp":
        return ((z > 0) & (z < 1)).to(z.dtype)
    if name == "sigmoid":
        s = torch.sigmoid(z)
        return s * (1 - s)
    if name == "linear":
        return torch.ones_like(z)
    raise ValueError(f"unknown activation {name!r}; choose from {OUTPUT_ACTIVATIONS}")
