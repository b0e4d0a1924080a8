"""PGD: projected gradient descent (ascent on the objective) with random restarts.

Paper: Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018.

Threat model: L-infinity, ``|x_adv - x|_inf <= epsilon``, images in [0, 1]; white-box.
Each restart starts from a point drawn uniformly in the epsilon-ball (seeded), takes
``steps`` sign-gradient steps of ``step_size``, each followed by the projection onto the
ball intersected with [0, 1]. Every iterate of every restart is a candidate; per sample the
first successful candidate is kept (if the objective defines success; the input then leaves
the batch), else the one with the highest objective. Each step takes loss, success and
gradient from one forward and one backward pass; only the last iterate of a restart costs
an extra forward. ``epsilon = 0`` returns ``x`` exactly.

Arguments:
    objective: :class:`~basin.attacks.objectives.Objective` to maximise.
    epsilon: perturbation budget in [0, 1].
    steps: gradient steps per restart (default 40).
    step_size: default ``2.5 * epsilon / steps`` (Madry et al.'s choice, which lets an
        iterate cross the whole ball).
    restarts: independent random starts (default 1).
    random_start: start uniformly in the ball (default True); False starts at ``x``.
    seed: seed of the random starts.
    keep: ``"first-success"`` or ``"strongest"`` (ignore the success test, keep the highest
        objective, the clean input included); default: the objective's ``keep``.

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

from basin.attacks.base import BestSoFar, RestartingAttack, project_linf, take_rows
from basin.attacks.objectives import Objective


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class PGD(RestartingAttack):
    """L-infinity PGD with uniform random starts and per-sample best-candidate selection."""

    name = "pgd"

    def __init__(self, objective: Objective, epsilon: float, *, steps: int = 40,
                 step_size: float | None = None, restarts: int = 1, random_start: bool = True,
                 seed: int = 0, keep: str | None = None) -> None:
        super().__init__(objective, epsilon, seed=seed, keep=keep)
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

    def _seed_with_clean(self) -> bool:
        # without a random start the clean input is the first iterate: no separate forward
        return self.strongest and self.random_start

    def _restart(self, x_adv: Tensor, x: Tensor, y: Tensor | None, idx: Tensor,
                 best: BestSoFar) -> None:
        """One restart on the rows ``idx``; inputs leave the batch at their first success."""
        for _ in range(self.steps):
            loss, success, grad = self.evaluate_with_grad(x_adv, y)
            best.update(x_adv, loss, success, idx)
            if bool(success.any()):
                left = ~success
                if not bool(left.any()):
                    return
                x_adv, x, grad, idx = x_adv[left], x[left], grad[left], idx[left]
                y = take_rows(y, left)
            x_adv = self.step(x_adv, x, grad, self.step_size)
        loss, success = self.evaluate(x_adv, y)
        best.update(x_adv, loss, success, idx)
