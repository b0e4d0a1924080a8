"""APGD: auto projected gradient descent, the parameter-free PGD of AutoAttack.

Paper: Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020 (Algorithm 1, L-infinity version).

Threat model: L-infinity, ``|x_adv - x|_inf <= epsilon``, images in [0, 1]; white-box.
PGD with a fixed step size either overshoots (large steps) or stalls (small ones); APGD starts
with the step ``eta = 2 * epsilon`` and halves it, per input, at checkpoints
``w_j = ceil(p_j * steps)`` with ``p_0 = 0``, ``p_1 = 0.22``,
``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, when either

1. fewer than a fraction ``rho`` of the steps since the last checkpoint raised the objective, or
2. neither the step size nor the best objective changed since the last checkpoint;

and a halving restarts the search from the best point found so far. Each step is a momentum
step: ``z = P(x_k + eta * sign(grad))``, ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)
(x_k - x_{k-1}))`` with ``alpha = 0.75`` (the first step is plain ``z``). Random restarts start
uniformly in the ball. Per input the first successful iterate is kept (that input then leaves
the batch), else the highest-objective one; ``keep="strongest"`` ignores the success test and
never returns worse than the clean input. Any per-sample objective works, the detector-aware
ones included: APGD only reads the loss and its input gradient.

Arguments:
    objective: :class:`~basin.attacks.objectives.Objective` to maximise (``ce`` gives
        APGD-CE, ``dlr`` APGD-DLR, ``margin`` a CW-loss APGD, or any detector objective).
    epsilon: perturbation budget in [0, 1].
    steps: iterations per restart (default 100, the paper's budget).
    restarts: random restarts (default 1).
    rho: the fraction of condition 1 (default 0.75).
    alpha: momentum weight of the new step (default 0.75).
    seed: seed of the random starts.
    keep: ``"first-success"`` or ``"strongest"``; default: the objective's ``keep``.

Shapes: ``x`` (N, C, H, W) or (N, D) in [0, 1]; ``y`` (N,) integer labels or None for
label-free objectives; returns ``x_adv`` with the shape, dtype and device of ``x``.

Example::

    >>> from basin.attacks import APGD, make_objective
    >>> attack = APGD(make_objective("dlr", model), 8 / 255, steps=100, restarts=2, seed=0)
    >>> x_adv = attack(x, y)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from basin.attacks.base import BestSoFar, RestartingAttack, project_linf, take_rows
from basin.attacks.objectives import Objective


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations ``w_j = ceil(p_j * steps)`` (j >= 1) at which the step size may halve."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    p_prev, p = 0.0, 0.22
    points: list[int] = []
    while p <= 1.0:
        w = math.ceil(round(p * steps, 9))
        if w >= 1 and (not points or w > points[-1]):
            points.append(w)
        p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)
    return points


def _fraction(value: float, name: str, *, open_low: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            (value > 0.0 if open_low else value >= 0.0) and value <= 1.0):
        bound = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"{name} must be a number in {bound}, got {value!r}")
    return float(value)


@dataclass
class _State:
    """The per-input search state of one restart (rows of the inputs still attacked)."""

    x: Tensor          # clean inputs
    y: Tensor | None
    idx: Tensor        # rows of the full batch
    cur: Tensor        # current iterate x_k
    prev: Tensor       # x_{k-1}, for the momentum
    grad: Tensor       # gradient at cur
    loss: Tensor       # objective at cur (float64)
    eta: Tensor        # per-input step size (N,)
    top: Tensor        # best point x_max of this restart
    top_grad: Tensor   # gradient at top
    top_loss: Tensor   # f_max
    rises: Tensor      # steps since the last checkpoint that raised the objective
    eta_check: Tensor  # step size at the last checkpoint
    top_check: Tensor  # f_max at the last checkpoint

    def keep_rows(self, rows: Tensor) -> _State:
        taken = {k: take_rows(v, rows) for k, v in vars(self).items()}
        return _State(**taken)  # type: ignore[arg-type]


class APGD(RestartingAttack):
    """L-infinity APGD (Croce & Hein 2020) with momentum, checkpoints and random restarts."""

    name = "apgd"

    def __init__(self, objective: Objective, epsilon: float, *, steps: int = 100,
                 restarts: int = 1, rho: float = 0.75, alpha: float = 0.75, seed: int = 0,
                 keep: str | None = None) -> None:
        super().__init__(objective, epsilon, seed=seed, keep=keep)
        self.checkpoints = apgd_checkpoints(steps)
        self.steps = steps
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
            raise ValueError(f"restarts must be an integer >= 1, got {restarts!r}")
        self.restarts = restarts
        self.rho = _fraction(rho, "rho", open_low=False)
        self.alpha = _fraction(alpha, "alpha", open_low=True)

    def _start(self, x: Tensor, generator: torch.Generator) -> Tensor:
        noise = torch.rand(x.shape, generator=generator, dtype=torch.float64) * 2 - 1
        return project_linf(x + (self.epsilon * noise).to(x), x, self.epsilon)

    def _restart(self, start: Tensor, x: Tensor, y: Tensor | None, idx: Tensor,
                 best: BestSoFar) -> None:
        loss, success, grad = self.evaluate_with_grad(start, y)
        best.update(start, loss, success, idx)
        loss = loss.to(torch.float64)
        n = x.shape[0]
        eta = torch.full((n,), 2 * self.epsilon, dtype=torch.float64, device=x.device)
        rises = torch.zeros(n, dtype=torch.long, device=x.device)
        state = self._drop(_State(x, y, idx, start, start, grad, loss, eta, start, grad, loss,
                                  rises, eta.clone(), loss.clone()), success)
        last_check = 0
        for k in range(self.steps):
            if state is None:
                return
            nxt = self._momentum_step(state, first=k == 0)
            final = k == self.steps - 1
            if final:  # the last iterate needs its value only, not a gradient
                loss, success = self.evaluate(nxt, state.y)
                grad = state.grad
            else:
                loss, success, grad = self.evaluate_with_grad(nxt, state.y)
            best.update(nxt, loss, success, state.idx)
            self._advance(state, nxt, loss.to(torch.float64), grad)
            if k + 1 in self.checkpoints and not final:
                self._checkpoint(state, k + 1 - last_check)
                last_check = k + 1
            state = self._drop(state, success)

    def _momentum_step(self, s: _State, *, first: bool) -> Tensor:
        eta = s.eta.to(s.cur.dtype).reshape((-1,) + (1,) * (s.cur.dim() - 1))
        z = project_linf(s.cur + eta * torch.sign(s.grad), s.x, self.epsilon)
        if first:
            return z
        moved = s.cur + self.alpha * (z - s.cur) + (1 - self.alpha) * (s.cur - s.prev)
        return project_linf(moved, s.x, self.epsilon)

    @staticmethod
    def _advance(s: _State, nxt: Tensor, loss: Tensor, grad: Tensor) -> None:
        s.rises += (loss > s.loss).long()
        s.prev, s.cur, s.loss, s.grad = s.cur, nxt, loss, grad
        higher = loss > s.top_loss  # NaN compares False: never the best point
        rows = higher.reshape((-1,) + (1,) * (nxt.dim() - 1))
        s.top = torch.where(rows, nxt, s.top)
        s.top_grad = torch.where(rows, grad, s.top_grad)
        s.top_loss = torch.where(higher, loss, s.top_loss)

    def _checkpoint(self, s: _State, interval: int) -> None:
        """Halve the step of stalled inputs and send them back to their best point."""
        too_few_rises = s.rises < self.rho * interval
        stalled = (s.eta_check == s.eta) & (s.top_check == s.top_loss)
        halve = too_few_rises | stalled
        s.eta = torch.where(halve, s.eta / 2, s.eta)
        rows = halve.reshape((-1,) + (1,) * (s.cur.dim() - 1))
        s.cur = torch.where(rows, s.top, s.cur)
        s.prev = torch.where(rows, s.top, s.prev)  # no momentum out of a restart
        s.grad = torch.where(rows, s.top_grad, s.grad)
        s.loss = torch.where(halve, s.top_loss, s.loss)
        s.rises = torch.zeros_like(s.rises)
        s.eta_check, s.top_check = s.eta.clone(), s.top_loss.clone()

    @staticmethod
    def _drop(s: _State, success: Tensor) -> _State | None:
        """The state without the inputs that just succeeded (None when none is left)."""
        if not bool(success.any()):
            return s
        left = ~success
        return s.keep_rows(left) if bool(left.any()) else None
