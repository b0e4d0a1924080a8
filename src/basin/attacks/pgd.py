"""PGD: projected gradient descent (ascent on the objective) with random restarts.

Paper: Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018.

Threat model: L-infinity, ``|x_adv - x|_inf <= epsilon``, images in [0, 1]; white-box.
Each restart starts from a point drawn uniformly in the epsilon-ball (seeded), takes
``steps`` sign-gradient steps of ``step_size``, each followed by the projection onto the
ball intersected with [0, 1]. Every iterate of every restart is a candidate; per sample the
first successful candidate is kept (if the objective defines success), else the one with
the highest objective. ``epsilon = 0`` returns ``x`` exactly.

Arguments:
    objective: :class:`~basin.attacks.objectives.Objective` to maximise.
    epsilon: perturbation budget in [0, 1].
    steps: gradient steps per restart (default 40).
    step_size: default ``2.5 * epsilon / steps`` (Madry et al.'s choice, which lets an
        iterate cross the whole ball).
    restarts: independent random starts (default 1).
    random_start: start uniformly in the ball (default True); False starts at ``x``.
    seed: seed of the random starts.

Shapes: ``x`` (N, C, H, W) or (N, D) in [0, 1]; ``y`` (N,) integer labels or None for
label-free objectives; returns ``x_adv`` with the shape, dtype and device of ``x``.

Example::

    >>> from basin.attacks import PGD, make_objective
    >>> attack = PGD(make_objective("ce", model), 8 / 255, steps=40, restarts=2, seed=0)
    >>> x_adv = attack(x, y)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from basin.attacks.base import BestSoFar, GradientAttack, project_linf
from basin.attacks.objectives import Objective


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class PGD(GradientAttack):
    """L-infinity PGD with uniform random starts and per-sample best-candidate selection."""

    name = "pgd"

    def __init__(self, objective: Objective, epsilon: float, *, steps: int = 40,
                 step_size: float | None = None, restarts: int = 1, random_start: bool = True,
                 seed: int = 0) -> None:
        super().__init__(objective, epsilon, seed=seed)
        self.steps = _positive_int(steps, "steps")
        self.restarts = _positive_int(restarts, "restarts")
        if step_size is None:
            step_size = 2.5 * self.epsilon / self.steps
        if isinstance(step_size, bool) or not isinstance(step_size, int | float) or not (
                math.isfinite(step_size) and step_size >= 0):
            raise ValueError(f"step_size must be a finite number >= 0, got {step_size!r}")
        self.step_size = float(step_size)
        self.random_start = bool(random_start)

    def _start(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if not self.random_start:
            return x.clone()
        # drawn on the CPU so that a seed gives the same starts on every device
        noise = torch.rand(x.shape, generator=generator, dtype=torch.float64) * 2 - 1
        return project_linf(x + (self.epsilon * noise).to(x), x, self.epsilon)

    def _perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        best = BestSoFar(x)
        generator = self._generator()
        for _ in range(self.restarts):
            x_adv = self._start(x, generator)
            for _ in range(self.steps):
                loss, grad = self.loss_and_grad(x_adv, y)
                best.update(x_adv, loss, self.objective.success(x_adv, y))
                x_adv = self.step(x_adv, x, grad, self.step_size)
            with torch.no_grad():
                best.update(x_adv, self.objective(x_adv, y), self.objective.success(x_adv, y))
            if bool(best.success.all()):
                break
        return best.x
