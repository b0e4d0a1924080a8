"""Loss terms of the robust attractor system (issue 13): adversarial, attractor, outlier.

The system classifies with ``F(x)`` (the head on the encoder of the input itself) and accepts
an input when ``r(x, G^n(x))``, the Pearson correlation with its iterated reconstruction, is
above a threshold calibrated on validation data. Training must make three things hold inside
every L-inf ball of radius eps:

1. **classification** of attacked digits ``x'`` (adversarial training of F, Madry-style,
   with a clean term as in TRADES' trade-off);
2. **attraction**: ``G(x') ~ x`` for ``x'`` in the ball around a training digit ``x``
   (the ball lies in the basin of its sample), with the contractive eigen term
   ``1/2 ||dG/dx||_F^2`` at clean *and* attacked points (projection estimator), so that
   iterating G pulls attacked inputs back and the similarity stays high;
3. **adversarial outlier exposure**: the worst outlier in its ball (the one with the highest
   similarity) is pushed to low similarity, and the head to a uniform prediction on it
   (ACET), while attacked digits are pushed to high similarity.

The attack objectives used to *find* ``x'`` and the worst outliers are here too
(``id_attack_loss``, ``outlier_attack_loss``), so that what is trained against is written
next to what is trained.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from basin.detectors.pearson import pearson_correlation
from basin.losses.forward import run_stack
from basin.losses.jacobian_projection import frobenius_sq_projection
from basin.models.attractor import AttractorNet
from basin.models.factory import AnyAttractor


@dataclass(frozen=True)
class RobustWeights:
    """Weights of the terms of ``robust_loss`` (each finite, >= 0) and the hinge margins.

    ``id_margin``: attacked digits are pushed until ``r(x', G(x')) >= id_margin``;
    ``ood_margin``: attacked outliers until ``r(o', G(o')) <= ood_margin``.
    ``sim_clean``: the same hinge on *clean* digits only (keeps them accepted without asking
    attacked ones to be). ``cor``: weight of the correct-or-reject term
    (:func:`correct_or_reject`) on attacked digits, with its sigmoid's ``cor_temperature``.
    The defaults of the last three leave the first presets' objective unchanged.
    """

    ce_adv: float = 1.0
    ce_clean: float = 0.5
    recon_adv: float = 10.0
    recon_clean: float = 10.0
    eigen: float = 0.002
    sim_id: float = 2.0
    sim_ood: float = 2.0
    oe_head: float = 0.5
    id_margin: float = 0.9
    ood_margin: float = 0.3
    sim_clean: float = 0.0
    cor: float = 0.0
    cor_temperature: float = 0.05

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"RobustWeights.{name}: expected a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"RobustWeights.{name}: must be finite, got {value}")
            if not name.endswith("margin") and value < 0:
                raise ValueError(f"RobustWeights.{name}: must be >= 0, got {value}")
        if self.cor_temperature <= 0:
            raise ValueError(f"RobustWeights.cor_temperature: must be > 0, got "
                             f"{self.cor_temperature}")
        if not -1.0 <= self.ood_margin < self.id_margin <= 1.0:
            raise ValueError(f"RobustWeights: need -1 <= ood_margin < id_margin <= 1, got "
                             f"{self.ood_margin}, {self.id_margin}")


def similarity(net: AnyAttractor, x: Tensor, steps: int = 1) -> Tensor:
    """The system's acceptance score ``r(x, G^steps(x))``, (N,), differentiable."""
    h = x
    for _ in range(steps):
        h = net.reconstruct(h)
    return pearson_correlation(x, h)


def uniform_ce(logits: Tensor) -> Tensor:
    """Per-sample cross-entropy to the uniform label, minus its minimum ``log K`` (>= 0)."""
    return -F.log_softmax(logits, dim=1).mean(dim=1) - math.log(logits.shape[1])


def silent_log_prob(logits: Tensor, r: Tensor, y: Tensor, threshold: float,
                    temperature: float) -> Tensor:
    """Per-sample ``log P(silent failure) = log(1 - p_y) + log sigmoid((r - T) / t)``, with
    ``p = softmax(F)`` and a soft acceptance of the score ``r`` at threshold ``T``.

    In log space so that its gradient never vanishes: an input far below the threshold still
    gets the pull ``(dr/dx) / t`` towards acceptance, which a sign-gradient attack turns into
    full steps (the probability itself underflows to exactly 0 there)."""
    log_p = F.log_softmax(logits, dim=1)
    others = log_p.scatter(1, y[:, None], -math.inf)
    return torch.logsumexp(others, dim=1) + F.logsigmoid((r - threshold) / temperature)


def correct_or_reject(logits: Tensor, r: Tensor, y: Tensor, threshold: float,
                      temperature: float) -> Tensor:
    """Per-sample ``-log P(no silent failure) = -log(1 - P(silent failure))``: the system is
    fine on an input when F is right *or* the input is rejected, i.e. with ``p = softmax(F)``
    and ``a = sigmoid((r - threshold) / temperature)`` the loss is
    ``-log(p_y + (1 - p_y)(1 - a))``.

    This is the issue's metric made differentiable: it never asks an attacked digit to be
    accepted (which helps an attacker whenever F is wrong on it), only to be right or
    rejected. ``logits`` (N, K), ``r`` and ``y`` (N,).
    """
    s = silent_log_prob(logits, r, y, threshold, temperature).clamp(max=-1e-7)
    # -log(-expm1(s)) is accurate near s = 0, -log1p(-exp(s)) for very negative s
    return torch.where(s > -math.log(2.0), -torch.log(-torch.expm1(s)),
                       -torch.log1p(-torch.exp(s)))


def id_attack_loss(net: AnyAttractor, x: Tensor, y: Tensor, *, sim_weight: float = 1.0,
                   cor: RobustWeights | None = None, threshold: float | None = None
                   ) -> Tensor:
    """Per-sample objective the training attack on digits *maximises*.

    Default: misclassify F and lower the similarity at once,
    ``CE(F(x'), y) + sim_weight * (1 - r(x', G(x')))`` (one forward pass serves both).
    With ``cor`` (the weights of a correct-or-reject run): the log-probability of a silent
    failure (:func:`silent_log_prob`), so the attack looks for the inputs that are wrong
    *and* accepted, the inner maximisation of the correct-or-reject loss (which increases
    with it) with a gradient that does not vanish where the input is rejected. Acceptance is
    soft at ``threshold`` (default ``cor.id_margin``).
    """
    recon, logits = net(x)
    if cor is not None:
        at = cor.id_margin if threshold is None else threshold
        return silent_log_prob(logits, pearson_correlation(x, recon), y, at,
                               cor.cor_temperature)
    ce = F.cross_entropy(logits, y, reduction="none")
    if sim_weight == 0:
        return ce
    return ce + sim_weight * (1.0 - pearson_correlation(x, recon))


def outlier_attack_loss(net: AnyAttractor, o: Tensor, *, conf_weight: float = 1.0) -> Tensor:
    """Per-sample objective the training attack on outliers *maximises*: raise the
    similarity and the head's confidence, ``r(o', G(o')) + conf_weight * max log F(o')``."""
    recon, logits = net(o)
    out = pearson_correlation(o, recon)
    if conf_weight:
        out = out + conf_weight * F.log_softmax(logits, dim=1).amax(dim=1)
    return out


@dataclass
class RobustTerms:
    """Total (with graph), the unweighted terms (detached floats via ``as_floats``) and the
    clean digits' similarities (detached, for the training's acceptance threshold)."""

    total: Tensor
    terms: dict[str, Tensor]
    clean_scores: Tensor

    def as_floats(self) -> dict[str, float]:
        return {"total": float(self.total.detach()),
                **{k: float(v.detach()) for k, v in self.terms.items()}}


def frobenius_sq_jvp(fn: Callable[[Tensor], Tensor], x: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:
    """Per-sample unbiased estimate of ``||d fn / dx||_F^2`` from one Gaussian direction,
    ``||J v||^2`` with ``v ~ N(0, I)`` (E[v v^T] = I), by forward-mode AD: one JVP, any
    architecture (the MLP path uses the cheaper layer-stack estimator instead)."""
    v = torch.randn(x.shape, generator=generator).to(x)
    jv = torch.func.jvp(fn, (x,), (v,))[1]
    return jv.reshape(x.shape[0], -1).pow(2).sum(dim=1)


def _id_forward(net: AnyAttractor, x: Tensor, x_adv: Tensor,
                generator: torch.Generator | None, with_eigen: bool
                ) -> tuple[Tensor, Tensor, Tensor | None]:
    """(reconstructions, logits, eigen term or None) of clean and attacked digits stacked.

    The MLP's forward record serves its projection estimate over both halves; other
    networks estimate it by one JVP on the attacked half, where contraction matters."""
    n = x.shape[0]
    if isinstance(net, AttractorNet):
        flat = torch.cat([x, x_adv]).reshape(2 * n, -1)
        record = run_stack(net.autoencoder_stack(), flat)
        logits = net.head(record.activations[net.n_stages])
        eigen = (0.5 * frobenius_sq_projection(record, 1, generator).mean()
                 if with_eigen else None)
        return record.output, logits, eigen
    recon, logits = net(torch.cat([x, x_adv]))
    eigen = (0.5 * frobenius_sq_jvp(net.reconstruct, x_adv, generator).mean()
             if with_eigen else None)
    return recon.reshape(2 * n, -1), logits, eigen


def robust_loss(net: AnyAttractor, x: Tensor, x_adv: Tensor, y: Tensor, o_adv: Tensor | None,
                weights: RobustWeights, *, generator: torch.Generator | None = None,
                threshold: float | None = None) -> RobustTerms:
    """The robust attractor objective on one batch.

    ``x``: clean digits (N, ...), ``x_adv``: their attacked versions, ``y``: labels,
    ``o_adv``: attacked outliers (M, ...) or None. Clean and attacked digits share one
    forward pass (for the MLP its pre-activations serve the projection estimate of the
    eigen term). ``threshold``: where the correct-or-reject term accepts (default
    ``weights.id_margin``; the training passes its running estimate of the threshold that
    the evaluation will calibrate).
    """
    if x.shape != x_adv.shape or y.shape != (x.shape[0],):
        raise ValueError(f"x, x_adv, y: shapes {tuple(x.shape)}, {tuple(x_adv.shape)}, "
                         f"{tuple(y.shape)} do not match")
    n = x.shape[0]
    recon, logits, eigen = _id_forward(net, x, x_adv, generator, weights.eigen > 0)
    flat = torch.cat([x, x_adv]).reshape(2 * n, -1)
    target = flat[:n]
    r_clean = pearson_correlation(flat[:n], recon[:n])
    r_adv = pearson_correlation(flat[n:], recon[n:])
    terms = {"ce_clean": F.cross_entropy(logits[:n], y),
             "ce_adv": F.cross_entropy(logits[n:], y),
             "recon_clean": F.mse_loss(recon[:n], target),
             "recon_adv": F.mse_loss(recon[n:], target),
             "sim_id": torch.relu(weights.id_margin - r_adv).mean()}
    if weights.sim_clean > 0:
        terms["sim_clean"] = torch.relu(weights.id_margin - r_clean).mean()
    if weights.cor > 0:
        at = weights.id_margin if threshold is None else threshold
        terms["cor"] = correct_or_reject(logits[n:], r_adv, y, at,
                                         weights.cor_temperature).mean()
    if eigen is not None:
        terms["eigen"] = eigen
    if o_adv is not None and o_adv.shape[0]:
        o_recon, o_logits = net(o_adv)
        r_o = pearson_correlation(o_adv, o_recon)
        terms["sim_ood"] = torch.relu(r_o - weights.ood_margin).mean()
        terms["oe_head"] = uniform_ce(o_logits).mean()
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    with torch.no_grad():
        terms["acc_adv"] = (logits[n:].argmax(1) == y).float().mean()
        terms["r_adv"] = r_adv.mean()
    return RobustTerms(cast(Tensor, total), terms, r_clean.detach())
