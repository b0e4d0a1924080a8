"""The attack API and what every L-infinity attack shares.

Threat model everywhere: an L-infinity perturbation of at most ``epsilon`` in pixel space,
images in [0, 1]; every candidate is projected onto the epsilon-ball around the clean input
intersected with the box [0, 1].

Attacks see only an :class:`~basin.attacks.objectives.Objective` (per-sample loss to
maximise, optional success test), never the model: they run under ``torch.enable_grad()``,
take gradients with ``torch.autograd.grad`` with respect to the input only (so no ``.grad``
is left on any parameter), and never touch ``model.train()``/``eval()``; setting the mode is
the caller's job. Random draws come from a CPU generator seeded with ``seed`` and are then
moved to the input's device, so a run is reproducible and the same on CPU and GPU.

What an attack returns per input is its ``keep`` rule (default: the objective's own):
``"first-success"`` keeps the first successful iterate and stops attacking that input (the
remaining inputs go on as a smaller batch, so finished inputs cost nothing), else the
highest-objective iterate; ``"strongest"`` ignores the success test and keeps the
highest-objective point seen, the clean input included, so it is never worse than clean.
Loss and success come from one forward pass (:meth:`Objective.evaluate`).

Memory layout: on a CPU, colour image batches reach the objective in channels_last order
(:func:`model_layout`), where oneDNN's fp32 convolutions run in about 0.8x the time of NCHW
ones for the CIFAR backbone's input-gradient step; the values are the same, the model rounds
differently in the last bits (``benchmarks/speed.py --feature-recon`` runs both side by side).
:func:`channels_last_inputs` switches it off.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ClassVar

import torch
from torch import Tensor

from basin.attacks.objectives import KEEPS, Objective
from basin.models.attractor import check_images

_CHANNELS_LAST: ContextVar[bool] = ContextVar("basin_attacks_channels_last", default=True)


@contextmanager
def channels_last_inputs(enabled: bool) -> Iterator[None]:
    """Within the block, whether attacks hand colour images to the objective in
    channels_last order on a CPU (on by default; off reproduces the NCHW arithmetic)."""
    token = _CHANNELS_LAST.set(bool(enabled))
    try:
        yield
    finally:
        _CHANNELS_LAST.reset(token)


def model_layout(x: Tensor) -> Tensor:
    """``x`` as the objective receives it: a CPU batch of colour images ``(N, C > 1, H, W)``
    in channels_last memory order (same values, other strides), anything else as it is."""
    if (_CHANNELS_LAST.get() and x.dim() == 4 and x.shape[1] > 1 and x.device.type == "cpu"
            and not x.is_contiguous(memory_format=torch.channels_last)):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def check_epsilon(epsilon: float, name: str = "epsilon") -> float:
    """``epsilon`` as a float, or ValueError unless it is a finite number in [0, 1]."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise ValueError(f"{name} must be a number in [0, 1], got {epsilon!r}")
    value = float(epsilon)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1] (pixel scale), got {epsilon!r}")
    return value


def project_linf(x_adv: Tensor, x: Tensor, epsilon: float) -> Tensor:
    """Nearest point of the epsilon-ball around ``x`` intersected with [0, 1]."""
    delta = (x_adv - x).clamp_(-epsilon, epsilon)
    return (x + delta).clamp_(0.0, 1.0)


def check_keep(keep: str | None, objective: Objective) -> str:
    """``keep``, or the objective's default when None; ValueError naming the argument."""
    if keep is None:
        return objective.keep
    if keep not in KEEPS:
        raise ValueError(f"keep must be one of {KEEPS} (or None for the objective's "
                         f"default), got {keep!r}")
    return keep


def take_rows(t: Tensor | None, rows: Tensor) -> Tensor | None:
    """``t[rows]``, passing None through (label-free objectives have ``y = None``)."""
    return None if t is None else t[rows]


class BestSoFar:
    """Per-sample best candidate: the first successful one, else the highest loss.

    With ``clean_loss`` the clean input is itself a candidate of that loss (the ``strongest``
    rule: never worse than clean). ``update`` may cover a subset of the rows (``idx``), which
    is how attacks that stop on successful inputs report the rest.
    """

    def __init__(self, x: Tensor, clean_loss: Tensor | None = None) -> None:
        self.x = x.detach().clone()
        self.loss = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=torch.float64)
        if clean_loss is not None:
            clean = clean_loss.detach().to(torch.float64)
            self.loss = torch.where(torch.isnan(clean), self.loss, clean)
        self.success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        self._borrowed = False

    def update(self, x_cand: Tensor, loss: Tensor, success: Tensor,
               idx: Tensor | None = None) -> None:
        loss = loss.detach().to(torch.float64)
        if idx is None:
            # NaN losses compare False and are never kept
            better = ~self.success & (success | (loss > self.loss))
            self._own()
            self.x[better] = x_cand.detach()[better]
            self.loss = torch.where(better, loss, self.loss)
            self.success = self.success | (better & success)
            return
        better = ~self.success[idx] & (success | (loss > self.loss[idx]))
        if bool(better.all()):  # the common case while the loss rises
            if len(idx) == self.x.shape[0] and bool(
                    (idx == torch.arange(len(idx), device=idx.device)).all()):
                # every row improved: hold the candidate itself instead of copying it (the
                # attacks never write into an iterate; a later partial update copies first)
                self.x, self._borrowed = x_cand.detach(), True
                self.loss, self.success = loss.clone(), success.clone()
                return
            rows, src = idx, x_cand
        else:
            rows, src = idx[better], x_cand[better]
            loss, success = loss[better], success[better]
        self._own()
        self.x.index_copy_(0, rows, src.detach())
        self.loss.index_copy_(0, rows, loss)
        self.success.index_copy_(0, rows, success)

    def _own(self) -> None:
        """Copy a held candidate before writing into it (the attack may still read it)."""
        if self._borrowed:
            self.x, self._borrowed = self.x.clone(), False


class Attack(ABC):
    """Base class: ``perturb(x, y) -> x_adv`` with ``|x_adv - x|_inf <= epsilon``.

    Subclasses implement ``_perturb`` on a detached, checked batch; the base class handles
    validation, ``epsilon = 0`` (returns ``x`` exactly), gradient mode and detaching.
    """

    name: ClassVar[str] = "attack"

    def __init__(self, objective: Objective, epsilon: float, *, seed: int = 0,
                 keep: str | None = None) -> None:
        if not isinstance(objective, Objective):
            raise ValueError(f"objective must be a basin.attacks.Objective, got "
                             f"{type(objective).__name__}")
        self.objective = objective
        self.epsilon = check_epsilon(epsilon)
        self.seed = int(seed)
        self.keep = check_keep(keep, objective)

    @property
    def strongest(self) -> bool:
        """Whether this attack ignores the success test (``keep="strongest"``)."""
        return self.keep == "strongest"

    def evaluate(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """Detached ``(loss, success)`` at ``x``, success all False under ``"strongest"``."""
        with torch.no_grad():
            loss, success = self.objective.evaluate(model_layout(x), y)
        if self.strongest:
            success = torch.zeros_like(success)
        return loss.detach(), success

    def __repr__(self) -> str:
        return f"{type(self).__name__}(objective={self.objective.name!r}, eps={self.epsilon:.6g})"

    def perturb(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Adversarial version of the batch ``x`` (same shape, dtype and device)."""
        check_images(x, "x")
        if y is not None:
            if not isinstance(y, Tensor) or y.shape != (x.shape[0],) or y.is_floating_point():
                got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
                raise ValueError(f"y: expected integer labels of shape ({x.shape[0]},), "
                                 f"got {got}")
            y = y.to(x.device)
        elif self.objective.needs_labels:
            raise ValueError(f"y: objective {self.objective.name!r} needs labels, got None")
        x = x.detach()
        if self.epsilon == 0.0 or x.shape[0] == 0:
            return x.clone()
        with torch.enable_grad():
            x_adv = self._perturb(x, y)
        # the iterates may have taken the objective's layout: hand back the caller's
        if x.is_contiguous() and not x_adv.is_contiguous():
            x_adv = x_adv.contiguous()
        return x_adv.detach()

    __call__ = perturb

    @abstractmethod
    def _perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        """The attack proper, on a detached batch already checked."""

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)


class GradientAttack(Attack):
    """Shared machinery of sign-gradient attacks (FGSM, PGD): gradient, step, projection."""

    def loss_and_grad(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-sample loss at ``x`` and its input gradient (NaN entries replaced by 0)."""
        loss, _, grad = self._with_grad(x, y, with_success=False)
        return loss, grad

    def gradient(self, x: Tensor, y: Tensor | None) -> Tensor:
        """The objective's input gradient at ``x`` (NaN entries replaced by 0), from its
        cheaper ``gradient_fn`` when it has one (the same gradient, not the same value)."""
        fn = self.objective.gradient_fn
        if fn is None:
            return self.loss_and_grad(x, y)[1]
        if self.objective.needs_labels and y is None:
            raise ValueError(f"objective {self.objective.name!r} needs labels y, got None")
        x_var = model_layout(x.detach()).requires_grad_(True)
        return self._input_grad(self.objective._checked(fn(x_var, y), x), x_var, x)

    def evaluate_with_grad(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss, success, grad)`` at ``x`` from one forward and one backward pass."""
        return self._with_grad(x, y, with_success=True)

    def _with_grad(self, x: Tensor, y: Tensor | None,
                   with_success: bool) -> tuple[Tensor, Tensor, Tensor]:
        x_var = model_layout(x.detach()).requires_grad_(True)
        if with_success and not self.strongest:
            loss, success = self.objective.evaluate(x_var, y)
        else:
            loss = self.objective(x_var, y)
            success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        return loss.detach(), success, self._input_grad(loss, x_var, x)

    @staticmethod
    def _input_grad(loss: Tensor, x_var: Tensor, x: Tensor) -> Tensor:
        grad = None
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(loss.sum(), x_var, allow_unused=True)
        if grad is None:
            # the objective does not depend on x: no direction to follow
            grad = torch.zeros_like(x)
        # one pass, infinities kept (not in place: autograd may return an expanded view)
        return torch.nan_to_num(grad, nan=0.0, posinf=math.inf, neginf=-math.inf)

    def step(self, x_adv: Tensor, x: Tensor, grad: Tensor, step_size: float) -> Tensor:
        """One ascent step along ``sign(grad)`` followed by the projection."""
        # step_size * sign is exact, so the fused add rounds as the plain expression does
        return project_linf(torch.add(x_adv, torch.sign(grad), alpha=step_size), x,
                            self.epsilon)


class RestartingAttack(GradientAttack):
    """Random restarts over the inputs still standing (PGD, APGD).

    Each restart draws its start for the whole batch (so the draws do not depend on which
    inputs are left), then runs :meth:`_restart` on the inputs not yet successful.
    """

    restarts: int

    def _seed_with_clean(self) -> bool:
        """Whether the clean input enters the best-so-far before any restart."""
        return self.strongest

    @abstractmethod
    def _start(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The starting point of one restart, for the whole batch."""

    @abstractmethod
    def _restart(self, start: Tensor, x: Tensor, y: Tensor | None, idx: Tensor,
                 best: BestSoFar) -> None:
        """One restart on the rows ``idx`` of the batch, updating ``best``."""

    def _perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        best = BestSoFar(x, self.evaluate(x, y)[0] if self._seed_with_clean() else None)
        generator = self._generator()
        for _ in range(self.restarts):
            start = self._start(x, generator)
            idx = torch.nonzero(~best.success)[:, 0]
            if len(idx) == 0:
                break
            self._restart(start[idx], x[idx], take_rows(y, idx), idx, best)
        return best.x
