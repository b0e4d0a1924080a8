"""Sanity checks that flag a robustness number that cannot be trusted.

Reported robustness of defences like these has repeatedly turned out to be gradient masking
(Athalye, Carlini & Wagner 2018): the white-box attack fails because its gradients are
useless, not because the model is robust. Three cheap symptoms, checked by the evaluation
runner for every evaluated model:

1. an attack with ``epsilon = 0`` must reproduce the clean accuracy exactly (else the
   pipeline under attack is not the pipeline that was evaluated clean);
2. the objective's input gradient must be non-zero on most inputs (below half: masking);
3. a black-box attack (Square) must not beat the best white-box attack: lower accuracy =
   stronger attack, and a gradient-free search winning means the gradients mislead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from basin.attacks.objectives import Objective

MASKING_FRACTION = 0.5
_TOLERANCE = 1e-9


def gradient_nonzero_fraction(objective: Objective, x: Tensor, y: Tensor | None = None) -> float:
    """Fraction of inputs whose input gradient has at least one finite non-zero entry."""
    if x.shape[0] == 0:
        raise ValueError("x: cannot measure gradients on an empty batch")
    with torch.enable_grad():
        x_var = x.detach().requires_grad_(True)
        loss = objective(x_var, y)
        if not loss.requires_grad:
            return 0.0
        (grad,) = torch.autograd.grad(loss.sum(), x_var, allow_unused=True)
    if grad is None:
        return 0.0
    useful = (torch.isfinite(grad) & (grad != 0)).flatten(1).any(dim=1)
    return float(useful.double().mean())


def _check_accuracy(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be an accuracy in [0, 1], got {value!r}")
    return float(value)


def sanity_flags(clean_acc: float, eps0_acc: float, whitebox_accs: Mapping[str, float],
                 blackbox_accs: Mapping[str, float], grad_nonzero: float) -> list[str]:
    """Human-readable verdicts, one per check, in the order of the module docstring.

    Args:
        clean_acc: accuracy on clean inputs.
        eps0_acc: accuracy under an attack with ``epsilon = 0``.
        whitebox_accs: attack name -> accuracy under that gradient attack.
        blackbox_accs: attack name -> accuracy under that gradient-free attack (Square).
        grad_nonzero: :func:`gradient_nonzero_fraction` of the white-box objective.
    """
    clean = _check_accuracy(clean_acc, "clean_acc")
    eps0 = _check_accuracy(eps0_acc, "eps0_acc")
    white = {k: _check_accuracy(v, f"whitebox_accs[{k!r}]") for k, v in whitebox_accs.items()}
    black = {k: _check_accuracy(v, f"blackbox_accs[{k!r}]") for k, v in blackbox_accs.items()}
    fraction = _check_accuracy(grad_nonzero, "grad_nonzero")

    flags = []
    if abs(clean - eps0) <= _TOLERANCE:
        flags.append("eps=0 reproduces clean: OK")
    else:
        flags.append(f"eps=0 reproduces clean: FAILED ({eps0:.4f} vs clean {clean:.4f})")

    gradient = f"gradients non-zero on {100 * fraction:.1f}% of inputs"
    if fraction < MASKING_FRACTION:
        gradient += ": suspected gradient masking"
    flags.append(gradient)

    if not white or not black:
        flags.append("black-box vs white-box: not checked (needs both kinds of attack)")
        return flags
    white_name = min(white, key=white.__getitem__)
    black_name = min(black, key=black.__getitem__)
    if black[black_name] < white[white_name] - _TOLERANCE:
        flags.append(f"suspected gradient masking: {black_name} attack beats the best "
                     f"white-box attack ({black[black_name]:.4f} vs {white[white_name]:.4f} "
                     f"for {white_name})")
    else:
        flags.append(f"black-box ({', '.join(sorted(black))}) does not beat white-box: OK")
    return flags
