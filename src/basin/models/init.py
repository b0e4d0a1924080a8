"""Weight initialisation schemes of the attractor network (an unstated choice of the paper).

``"torch"`` keeps PyTorch's ``nn.Linear`` default (Kaiming-uniform with a = sqrt(5), biases
uniform in +-1/sqrt(fan_in)); ``"glorot"`` is Keras's default for a Dense layer (Glorot /
Xavier uniform weights, zero biases), the framework a 2020s MLP paper most likely used.
"""

from __future__ import annotations

from torch import nn

INITS = ("torch", "glorot")


def initialise(module: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise every ``nn.Linear`` in ``module`` by ``scheme`` (in place; returned).

    ``"torch"`` leaves the module as constructed; random draws come from torch's global
    generator, so a caller seeds it (or forks it) first.
    """
    if scheme not in INITS:
        raise ValueError(f"init: unknown {scheme!r}; choose from {INITS}")
    if scheme == "glorot":
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
    return module
