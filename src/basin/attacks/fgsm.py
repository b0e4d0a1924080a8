"""FGSM: the fast gradient sign method.

Paper: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples",
ICLR 2015; the attack the attractor paper evaluates (its Eq. 1).

Threat model: L-infinity, ``|x_adv - x|_inf <= epsilon``, images in [0, 1]; white-box (needs
the input gradient of the objective); one step, no random start, deterministic.

Arguments:
    objective: :class:`~basin.attacks.objectives.Objective` to maximise.
    epsilon: perturbation budget in [0, 1] (``parse_epsilon("20/255")``).
    seed: unused (FGSM draws nothing); accepted so every attack builds the same way.
    keep: ``"first-success"`` returns the step whatever it does (the paper's FGSM);
        ``"strongest"`` returns ``x`` itself where the step lowered the objective. Default:
        the objective's ``keep``.

Shapes: ``x`` (N, C, H, W) or (N, D) in [0, 1]; ``y`` (N,) integer labels (or None for
label-free objectives); returns ``x_adv`` with the shape, dtype and device of ``x``.

Example::

    >>> from basin.attacks import FGSM, make_objective, parse_epsilon
    >>> attack = FGSM(make_objective("ce", model), parse_epsilon("20/255"))
    >>> x_adv = attack(x, y)
"""

from __future__ import annotations

import torch
from torch import Tensor

from basin.attacks.base import GradientAttack


class FGSM(GradientAttack):
    """``x_adv = clip_[0,1](x + epsilon * sign(grad_x objective(x, y)))``."""

    name = "fgsm"

    def _perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        if not self.strongest:  # one step: the direction is all it needs, not the value
            return self.step(x, x, self.gradient(x, y), self.epsilon)
        clean_loss, grad = self.loss_and_grad(x, y)
        x_adv = self.step(x, x, grad, self.epsilon)
        loss, _ = self.evaluate(x_adv, y)
        clean_wins = ((clean_loss > loss) | torch.isnan(loss)).reshape((-1,) + (1,) * (x.dim() - 1))
        return torch.where(clean_wins, x, x_adv)
