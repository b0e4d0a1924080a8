"""What an attack maximises: pluggable per-sample objectives.

An :class:`Objective` maps a batch ``(x, y)`` to a *per-sample* loss of shape ``(N,)`` that the
attack pushes *up*; per-sample values let PGD restarts and the Square attack keep the best
candidate of each input separately. Where "the attack worked" has a crisp meaning (the input
is misclassified, the detector flips, both at once) the objective also carries a ``success``
test, which attacks prefer over the raw loss: the first successful candidate is kept.

Each objective also declares its ``kind`` (``"classifier"``, ``"detector"`` or ``"joint"``,
what it attacks) and its default ``keep`` (what an attack returns per input):
``"first-success"`` stops at the first successful iterate, ``"strongest"`` ignores the success
test and keeps the highest-objective point of the ball, the clean input included, so the
result is never worse than clean. Detector-score objectives default to ``"strongest"``: their
success test (crossing the threshold) is a poor stopping rule for AUROC, which moves with every
score. An optional ``evaluate_fn`` returns loss and success from one forward pass, so an
attack's bookkeeping costs no extra forward; an optional ``gradient_fn`` has the loss's input
gradient without all of its value (a term constant in ``x`` left out), for attacks that only
follow the gradient (FGSM's step).

The attacks never look at the model; they only see the objective. Any classifier plugs in
through ``logits(x)`` (or by being callable), a reconstruction model additionally through
``reconstruct(x)``, a detector through ``score(x)`` and ``threshold``.

Objectives on the classifier live here (``ce``, ``paper``, ``through-loop``,
``through-loop-bpda``); detector-aware ones in :mod:`basin.attacks.adaptive`;
:mod:`basin.attacks.registry` maps every name to its builder (``OBJECTIVES``) and holds the
one entry point, ``make_objective``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from basin.losses import LossWeights, jacobian_frobenius_sq

LossFn = Callable[[Tensor, Tensor | None], Tensor]
EvaluateFn = Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor]]

KINDS = ("classifier", "detector", "joint")
KEEPS = ("first-success", "strongest")

# Alipour & SeyyedSalehi, section 3.1.2: a1, a2, a3 of attractor training.
PAPER_WEIGHTS = (0.988, 0.002, 0.01)
PIECEWISE_LINEAR = frozenset({"relu", "clamp", "linear"})


@dataclass(frozen=True)
class Objective:
    """A per-sample loss to maximise, with an optional per-sample success test.

    Args:
        name: registry name (``"ce"``, ``"end-to-end"``, ...).
        loss_fn: ``(x, y) -> (N,)``, differentiable in ``x`` for gradient attacks.
        success_fn: ``(x, y) -> bool (N,)``, True where the attack has reached its goal.
        needs_labels: whether ``y`` is required (detector-only objectives ignore it).
        kind: what is attacked: ``"classifier"``, ``"detector"`` or ``"joint"`` (both).
        keep: the attacks' default selection, ``"first-success"`` or ``"strongest"``.
        evaluate_fn: optional ``(x, y) -> (loss, success)`` from one forward pass; must agree
            with ``loss_fn`` and ``success_fn`` (it is dropped when ``success_fn`` is None).
        gradient_fn: optional ``(x, y) -> (N,)`` with exactly ``loss_fn``'s gradient in ``x``
            but cheaper (``loss_fn`` minus terms that do not depend on ``x``); its values are
            not the loss and are never compared or returned.
    """

    name: str
    loss_fn: LossFn
    success_fn: LossFn | None = None
    needs_labels: bool = True
    kind: str = "classifier"
    keep: str = "first-success"
    evaluate_fn: EvaluateFn | None = None
    gradient_fn: LossFn | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"objective {self.name!r}: kind must be one of {KINDS}, "
                             f"got {self.kind!r}")
        if self.keep not in KEEPS:
            raise ValueError(f"objective {self.name!r}: keep must be one of {KEEPS}, "
                             f"got {self.keep!r}")

    def __call__(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if self.needs_labels and y is None:
            raise ValueError(f"objective {self.name!r} needs labels y, got None")
        return self._checked(self.loss_fn(x, y), x)

    def _checked(self, loss: Any, x: Tensor) -> Tensor:
        if not isinstance(loss, Tensor) or loss.shape != (x.shape[0],):
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"objective {self.name!r} must return a per-sample loss of shape "
                             f"({x.shape[0]},), got {shape}")
        return loss

    @property
    def has_success(self) -> bool:
        return self.success_fn is not None

    def success(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Boolean (N,); all False when the objective has no notion of success."""
        if self.success_fn is None:
            return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        if self.needs_labels and y is None:
            raise ValueError(f"objective {self.name!r} needs labels y, got None")
        with torch.no_grad():
            return self.success_fn(x, y).to(torch.bool)

    def evaluate(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(loss, success)`` at ``x``; one forward pass when the objective can share it.

        The loss keeps its graph (for gradient attacks); the success test never has one.
        """
        if self.evaluate_fn is None or self.success_fn is None:
            return self(x, y), self.success(x, y)
        if self.needs_labels and y is None:
            raise ValueError(f"objective {self.name!r} needs labels y, got None")
        loss, success = self.evaluate_fn(x, y)
        return self._checked(loss, x), success.detach().to(torch.bool)


def declare(kind: str, keep: str = "first-success") -> Callable[[Callable[..., Objective]],
                                                                Callable[..., Objective]]:
    """Decorator: the builder's objectives get ``kind`` and ``keep``, readable on the builder.

    The registry derives its name lists (``DETECTOR_OBJECTIVES``) from these attributes, so a
    new objective declares what it attacks in one place.
    """
    if kind not in KINDS or keep not in KEEPS:
        raise ValueError(f"declare: kind must be in {KINDS} and keep in {KEEPS}, got "
                         f"{kind!r}, {keep!r}")

    def wrap(builder: Callable[..., Objective]) -> Callable[..., Objective]:
        @functools.wraps(builder)
        def build(*args: Any, **kwargs: Any) -> Objective:
            return dataclasses.replace(builder(*args, **kwargs), kind=kind, keep=keep)

        build.kind = kind  # type: ignore[attr-defined]
        build.keep = keep  # type: ignore[attr-defined]
        return build

    return wrap


# -- model access --------------------------------------------------------------------------
def classifier_logits(model: Any, x: Tensor) -> Tensor:
    """``model.logits(x)`` if the model has it, else ``model(x)``; must be ``(N, K)``."""
    if hasattr(model, "logits"):
        out = model.logits(x)
    elif callable(model):
        out = model(x)
    else:
        raise ValueError(f"model: {type(model).__name__} has no logits() and is not callable")
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model: logits must have shape (N, n_classes) with N={x.shape[0]}, "
                         f"got {got}")
    return out


def _require(model: Any, attr: str, objective: str) -> None:
    if model is None or not callable(getattr(model, attr, None)):
        raise ValueError(f"objective {objective!r} needs a model with {attr}(), got "
                         f"{type(model).__name__}")


def labels(y: Tensor | None) -> Tensor:
    """``y``, or ValueError for a label-free call of an objective that needs labels."""
    if y is None:
        raise ValueError("y: this objective needs labels, got None")
    return y


def misclassified(logits: Tensor, y: Tensor | None) -> Tensor:
    return logits.argmax(dim=1) != labels(y)


# -- classifier objectives -----------------------------------------------------------------
def _from_logits(name: str, logits_of: Callable[[Tensor], Tensor],
                 value: Callable[[Tensor, Tensor], Tensor]) -> Objective:
    """An objective ``value(logits, y)`` with success = misclassified, from one forward."""

    def loss(x: Tensor, y: Tensor | None) -> Tensor:
        return value(logits_of(x), labels(y))

    def success(x: Tensor, y: Tensor | None) -> Tensor:
        return misclassified(logits_of(x), y)

    def evaluate(x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        logits = logits_of(x)
        return value(logits, labels(y)), misclassified(logits.detach(), y)

    return Objective(name, loss, success, evaluate_fn=evaluate)


def _cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """CW-style margin ``max_{i != y} z_i - z_y`` per sample (positive = misclassified)."""
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.max(dim=1).values - true


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio (Croce & Hein 2020, Eq. 6), per sample.

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` with ``z_pi1 >= z_pi2 >= ...`` the sorted
    logits: invariant to shifting and rescaling the logits, so a model cannot hide behind
    their scale. Needs at least three classes.
    """
    if logits.shape[1] < 3:
        raise ValueError(f"objective 'dlr' needs at least 3 classes, the logits have "
                         f"{logits.shape[1]}; use 'margin' instead")
    top = logits.topk(3, dim=1).values
    return margin_loss(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)


def _require_model(model: Any, name: str) -> None:
    if model is None:
        raise ValueError(f"objective {name!r} needs a model, got None")


@declare("classifier")
def build_ce(model: Any, **_: Any) -> Objective:
    """Cross-entropy of the classifier on the input: the standard untargeted attack."""
    _require_model(model, "ce")
    return _from_logits("ce", lambda x: classifier_logits(model, x), _cross_entropy)


@declare("classifier")
def build_margin(model: Any, **_: Any) -> Objective:
    """CW margin ``max_{i != y} z_i - z_y``: positive exactly when the input is misclassified."""
    _require_model(model, "margin")
    return _from_logits("margin", lambda x: classifier_logits(model, x), margin_loss)


@declare("classifier")
def build_dlr(model: Any, **_: Any) -> Objective:
    """DLR loss of APGD-DLR (scale-invariant margin); ValueError with fewer than 3 classes."""
    _require_model(model, "dlr")
    n_classes = getattr(model, "n_classes", None)
    if isinstance(n_classes, int) and n_classes < 3:
        raise ValueError(f"objective 'dlr' needs at least 3 classes, the model has "
                         f"{n_classes}; use 'margin' instead")
    return _from_logits("dlr", lambda x: classifier_logits(model, x), dlr_loss)


@declare("classifier")
def build_paper(model: Any, *, weights: Any = None, jacobian: str = "exact-fast",
                projections: int = 1, seed: int = 0, **_: Any) -> Objective:
    """The attractor paper's FGSM objective: the model's own *training cost* (not standard).

    Alipour & SeyyedSalehi, Eq. 1 and section 2.2.1: "the cost function used to train the
    model", i.e. per sample ``a1*MSE(G(x), x) + a2*0.5*||dG/dx||_F^2 + a3*CE(F(x), y)``, the
    reconstruction target being the attacked input itself, as in training. Most of this
    gradient pushes the reconstruction error, not the class, so it is a much weaker attack
    on the classifier than ``ce``; it is here to reproduce the paper, not to judge robustness.

    The terms are those of :func:`basin.losses.attractor_loss` computed per sample (MSE over
    the sample's features, ``basin.losses.jacobian_frobenius_sq`` per sample), so their batch
    mean is exactly the training loss. With ReLU layers ``||J||_F`` is piecewise constant in
    ``x`` and contributes no input gradient; it still counts in the value.
    """
    for attr in ("reconstruct", "autoencoder_stack"):
        _require(model, attr, "paper")
    if weights is None:
        a1, a2, a3 = PAPER_WEIGHTS
        weights = LossWeights(reconstruction=a1, eigen=a2, classification=a3)
    for term in ("reconstruction", "eigen", "classification"):
        if not isinstance(getattr(weights, term, None), int | float):
            raise ValueError(f"objective 'paper': weights must be a basin.losses.LossWeights, "
                             f"got {weights!r}")
    stack = model.autoencoder_stack()
    piecewise_linear = all(a in PIECEWISE_LINEAR for a in stack.activations)
    generator = torch.Generator().manual_seed(seed) if jacobian == "projection" else None

    def loss_and_logits(x: Tensor, y: Tensor | None,
                        with_eigen: bool = True) -> tuple[Tensor, Tensor]:
        flat = x.reshape(x.shape[0], -1)
        reconstruction = (stack(flat) - flat).square().mean(dim=1)
        logits = classifier_logits(model, x)
        classification = F.cross_entropy(logits, labels(y), reduction="none")
        total = weights.reconstruction * reconstruction + weights.classification * classification
        if weights.eigen > 0 and with_eigen:
            # A piecewise-linear G has a piecewise-constant Jacobian: the term has no input
            # gradient, so skip building its (expensive) graph; the value stays exact.
            with torch.set_grad_enabled(torch.is_grad_enabled() and not piecewise_linear):
                frobenius_sq = jacobian_frobenius_sq(stack, flat, jacobian,
                                                     projections=projections,
                                                     generator=generator)
            total = total + weights.eigen * 0.5 * frobenius_sq
        return total, logits

    def loss(x: Tensor, y: Tensor | None) -> Tensor:
        return loss_and_logits(x, y)[0]

    def success(x: Tensor, y: Tensor | None) -> Tensor:
        return misclassified(classifier_logits(model, x), y)

    def evaluate(x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        total, logits = loss_and_logits(x, y)
        return total, misclassified(logits.detach(), y)

    def without_eigen(x: Tensor, y: Tensor | None) -> Tensor:
        return loss_and_logits(x, y, with_eigen=False)[0]

    # the eigen term enters a piecewise-linear G's loss as a constant: the same gradient
    # (bit for bit: the sum's backward hands the other terms the same ones) without the
    # per-sample Jacobians, most of the paper FGSM's time on the attractor network
    gradient = without_eigen if piecewise_linear and weights.eigen > 0 else None
    return Objective("paper", loss, success, evaluate_fn=evaluate, gradient_fn=gradient)


def iterate_reconstruction(model: Any, x: Tensor, steps: int, *, bpda: bool = False) -> Tensor:
    """``G^steps(x)``; with ``bpda`` each G is the identity on the backward pass."""
    h = x
    for _ in range(steps):
        g = model.reconstruct(h)
        # straight-through (Athalye et al. 2018): value of G(h), gradient of h
        h = h + (g - h).detach() if bpda else g
    return h


def _build_loop(name: str, model: Any, steps: int, bpda: bool) -> Objective:
    _require(model, "reconstruct", name)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"objective {name!r}: steps (loop iterations) must be an integer "
                         f">= 1, got {steps!r}")

    def looped_logits(x: Tensor) -> Tensor:
        return classifier_logits(model, iterate_reconstruction(model, x, steps, bpda=bpda))

    return _from_logits(name, looped_logits, _cross_entropy)


@declare("classifier")
def build_through_loop(model: Any, *, steps: int = 1, **_: Any) -> Objective:
    """CE of ``F(G^n(x))``, differentiating through the unrolled loop (n = ``steps``)."""
    return _build_loop("through-loop", model, steps, bpda=False)


@declare("classifier")
def build_through_loop_bpda(model: Any, *, steps: int = 1, **_: Any) -> Objective:
    """As ``through-loop`` but BPDA: forward ``G^n(x)``, backward treats each G as identity.

    For when the true gradient through the loop vanishes (saturated or dead ReLUs, a loop
    that has converged to a flat attractor) and a gradient attack would stall.
    """
    return _build_loop("through-loop-bpda", model, steps, bpda=True)
