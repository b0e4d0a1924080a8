"""One forward pass through a LayerStack that keeps what the Jacobian losses need.

The structured Jacobian methods need every layer's pre-activation (its activation derivative
is the diagonal factor of the Jacobian); the reconstruction loss needs the output; a
classification head on the bottleneck needs a hidden activation. ``run_stack`` computes all of
them once so that a training step does not pay for the same forward pass two or three times.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from basin.models.attractor import activation_derivative, apply_activation
from basin.models.layer_stack import LayerStack


@dataclass(frozen=True)
class StackForward:
    """The record of ``stack(h)``: ``activations[0]`` is ``h``, ``activations[l]`` the output
    of layer ``l`` (1-based), ``pre_activations[l - 1]`` its input to the activation."""

    stack: LayerStack
    activations: list[Tensor]
    pre_activations: list[Tensor]

    @property
    def output(self) -> Tensor:
        """``stack(h)``."""
        return self.activations[-1]

    @property
    def input(self) -> Tensor:
        return self.activations[0]

    def derivatives(self) -> list[Tensor | None]:
        """``act_l'(z_l)`` for every layer, ``None`` where the activation is linear (the
        identity needs no per-sample factor, which keeps products with it shared)."""
        return [None if act == "linear" else activation_derivative(act, z)
                for act, z in zip(self.stack.activations, self.pre_activations, strict=True)]


def check_stack_input(stack: LayerStack, h: Tensor, name: str = "h") -> None:
    """Raise ValueError naming ``name`` unless ``h`` is a float batch ``(N, in_features)``."""
    if not isinstance(h, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(h).__name__}")
    if not h.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {h.dtype}")
    if h.dim() != 2 or h.shape[1] != stack.in_features:
        raise ValueError(f"{name}: expected shape (N, {stack.in_features}) for this stack, "
                         f"got {tuple(h.shape)}")


def run_stack(stack: LayerStack, h: Tensor) -> StackForward:
    """Apply ``stack`` to flat inputs ``h`` of shape ``(N, in_features)``, keeping every
    pre-activation and activation (the graph stays attached: losses built on the record are
    differentiable w.r.t. the stack's parameters and ``h``)."""
    check_stack_input(stack, h)
    activations = [h]
    pre = []
    for layer, act in zip(stack.layers, stack.activations, strict=True):
        z = layer(activations[-1])
        pre.append(z)
        activations.append(apply_activation(act, z))
    return StackForward(stack, activations, pre)
