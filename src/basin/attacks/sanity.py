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

AutoAttack's checks (Croce & Hein 2020, ``flags_doc.md`` of their code) add two symptoms of a
model the standard attacks do not fit, each one flag string here (``flag_ok`` tells them
apart): a randomised defence (two forwards of the same input differ: the attack needs
expectation over transformation), and a model that outputs probabilities instead of logits
(cross-entropy on probabilities saturates and masks gradients). :func:`autoattack_flags` runs
all four on a batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

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

    flags.append(blackbox_flag(white, black))
    return flags


def blackbox_flag(whitebox_accs: Mapping[str, float], blackbox_accs: Mapping[str, float]) -> str:
    """Whether a gradient-free attack beats every gradient attack (lower accuracy wins)."""
    white = {k: _check_accuracy(v, f"whitebox_accs[{k!r}]") for k, v in whitebox_accs.items()}
    black = {k: _check_accuracy(v, f"blackbox_accs[{k!r}]") for k, v in blackbox_accs.items()}
    if not white or not black:
        return "black-box vs white-box: not checked (needs both kinds of attack)"
    white_name = min(white, key=white.__getitem__)
    black_name = min(black, key=black.__getitem__)
    if black[black_name] < white[white_name] - _TOLERANCE:
        return (f"suspected gradient masking: {black_name} attack beats the best white-box "
                f"attack ({black[black_name]:.4f} vs {white[white_name]:.4f} for "
                f"{white_name})")
    return f"black-box ({', '.join(sorted(black))}) does not beat white-box: OK"


def flag_ok(flag: str) -> bool:
    """Whether a flag of this module reports a passed check."""
    return flag.endswith(": OK")


def zero_gradient_flag(objective: Objective, x: Tensor, y: Tensor | None = None) -> str:
    """Flag inputs whose input gradient is exactly zero (AutoAttack's ``check_zero_gradients``)."""
    zero = 1.0 - gradient_nonzero_fraction(objective, x, y)
    if zero > 0:
        return (f"zero gradients on {100 * zero:.1f}% of inputs: suspected gradient masking "
                "(try BPDA or a black-box attack)")
    return "zero gradients on 0.0% of inputs: OK"


def randomness_flag(forward: Callable[[Tensor], Tensor], x: Tensor, *,
                    tolerance: float = 1e-6) -> str:
    """Flag a randomised defence: two forwards of the same input differ beyond ``tolerance``."""
    with torch.no_grad():
        first, second = forward(x), forward(x)
    if not isinstance(first, Tensor) or first.shape != second.shape:
        raise ValueError("forward: expected the same tensor shape on two calls")
    gap = float((first.double() - second.double()).abs().max()) if first.numel() else 0.0
    if gap > tolerance or math.isnan(gap):
        return (f"randomised defence: two forwards of the same input differ by up to "
                f"{gap:.3g}: evaluate with expectation over transformation (EOT)")
    return "deterministic forward: OK"


def probability_output_flag(forward: Callable[[Tensor], Tensor], x: Tensor, *,
                            tolerance: float = 1e-5) -> str:
    """Flag a model whose outputs are probabilities (rows non-negative, summing to 1)."""
    with torch.no_grad():
        out = forward(x)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(f"forward: expected outputs of shape (N, n_classes) with "
                         f"N={x.shape[0]}")
    out = out.double()
    sums_to_one = bool(((out.sum(dim=1) - 1).abs() <= tolerance).all())
    if sums_to_one and bool((out >= 0).all()):
        return ("model outputs probabilities (rows non-negative, summing to 1): attack its "
                "logits, cross-entropy on probabilities masks gradients")
    return "model outputs logits: OK"


def autoattack_flags(forward: Callable[[Tensor], Tensor], objective: Objective, x: Tensor,
                     y: Tensor | None = None, *,
                     whitebox_accs: Mapping[str, float] | None = None,
                     blackbox_accs: Mapping[str, float] | None = None) -> list[str]:
    """The four AutoAttack checks on a batch: randomness, probabilities, zero gradients,
    black-box beating white-box (only when both accuracy tables are given)."""
    flags = [randomness_flag(forward, x), probability_output_flag(forward, x),
             zero_gradient_flag(objective, x, y)]
    if whitebox_accs is not None and blackbox_accs is not None:
        flags.append(blackbox_flag(whitebox_accs, blackbox_accs))
    return flags
