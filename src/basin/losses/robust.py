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
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from basin.detectors.pearson import pearson_correlation
from basin.losses.forward import run_stack
from basin.losses.jacobian_projection import frobenius_sq_projection
from basin.models.attractor import AttractorNet


@dataclass(frozen=True)
class RobustWeights:
    """Weights of the terms of ``robust_loss`` (each finite, >= 0) and the hinge margins.

    ``id_margin``: attacked digits are pushed until ``r(x', G(x')) >= id_margin``;
    ``ood_margin``: attacked outliers until ``r(o', G(o')) <= ood_margin``.
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

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"RobustWeights.{name}: expected a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"RobustWeights.{name}: must be finite, got {value}")
            if not name.endswith("margin") and value < 0:
                raise ValueError(f"RobustWeights.{name}: must be >= 0, got {value}")
        if not -1.0 <= self.ood_margin < self.id_margin <= 1.0:
            raise ValueError(f"RobustWeights: need -1 <= ood_margin < id_margin <= 1, got "
                             f"{self.ood_margin}, {self.id_margin}")


def similarity(net: AttractorNet, x: Tensor, steps: int = 1) -> Tensor:
    """The system's acceptance score ``r(x, G^steps(x))``, (N,), differentiable."""
    h = x
    for _ in range(steps):
        h = net.reconstruct(h)
    return pearson_correlation(x, h)


def uniform_ce(logits: Tensor) -> Tensor:
    """Per-sample cross-entropy to the uniform label, minus its minimum ``log K`` (>= 0)."""
    return -F.log_softmax(logits, dim=1).mean(dim=1) - math.log(logits.shape[1])


def id_attack_loss(net: AttractorNet, x: Tensor, y: Tensor, *, sim_weight: float = 1.0
                   ) -> Tensor:
    """Per-sample objective the training attack on digits *maximises*: misclassify F and
    lower the similarity at once, ``CE(F(x'), y) + sim_weight * (1 - r(x', G(x')))``
    (one forward pass serves both)."""
    recon, logits = net(x)
    ce = F.cross_entropy(logits, y, reduction="none")
    if sim_weight == 0:
        return ce
    return ce + sim_weight * (1.0 - pearson_correlation(x, recon))


def outlier_attack_loss(net: AttractorNet, o: Tensor, *, conf_weight: float = 1.0) -> Tensor:
    """Per-sample objective the training attack on outliers *maximises*: raise the
    similarity and the head's confidence, ``r(o', G(o')) + conf_weight * max log F(o')``."""
    recon, logits = net(o)
    out = pearson_correlation(o, recon)
    if conf_weight:
        out = out + conf_weight * F.log_softmax(logits, dim=1).amax(dim=1)
    return out


@dataclass
class RobustTerms:
    """Total (with graph) and the unweighted terms (detached floats via ``as_floats``)."""

    total: Tensor
    terms: dict[str, Tensor]

    def as_floats(self) -> dict[str, float]:
        return {"total": float(self.total.detach()),
                **{k: float(v.detach()) for k, v in self.terms.items()}}


def robust_loss(net: AttractorNet, x: Tensor, x_adv: Tensor, y: Tensor, o_adv: Tensor | None,
                weights: RobustWeights, *, generator: torch.Generator | None = None
                ) -> RobustTerms:
    """The robust attractor objective on one batch.

    ``x``: clean digits (N, ...), ``x_adv``: their attacked versions, ``y``: labels,
    ``o_adv``: attacked outliers (M, ...) or None. Clean and attacked digits share one
    forward record (its pre-activations serve the projection estimate of the eigen term).
    """
    if x.shape != x_adv.shape or y.shape != (x.shape[0],):
        raise ValueError(f"x, x_adv, y: shapes {tuple(x.shape)}, {tuple(x_adv.shape)}, "
                         f"{tuple(y.shape)} do not match")
    n = x.shape[0]
    stack = net.autoencoder_stack()
    flat = torch.cat([x, x_adv]).reshape(2 * n, -1)
    record = run_stack(stack, flat)
    logits = net.head(record.activations[net.n_stages])
    recon = record.output
    target = flat[:n]
    ce_clean = F.cross_entropy(logits[:n], y)
    ce_adv = F.cross_entropy(logits[n:], y)
    recon_clean = F.mse_loss(recon[:n], target)
    recon_adv = F.mse_loss(recon[n:], target)
    r_adv = pearson_correlation(flat[n:], recon[n:])
    sim_id = torch.relu(weights.id_margin - r_adv).mean()
    terms = {"ce_clean": ce_clean, "ce_adv": ce_adv, "recon_clean": recon_clean,
             "recon_adv": recon_adv, "sim_id": sim_id}
    total = (weights.ce_clean * ce_clean + weights.ce_adv * ce_adv
             + weights.recon_clean * recon_clean + weights.recon_adv * recon_adv
             + weights.sim_id * sim_id)
    if weights.eigen > 0:
        eigen = 0.5 * frobenius_sq_projection(record, 1, generator).mean()
        terms["eigen"] = eigen
        total = total + weights.eigen * eigen
    if o_adv is not None and o_adv.shape[0]:
        o_recon, o_logits = net(o_adv)
        r_o = pearson_correlation(o_adv, o_recon)
        sim_ood = torch.relu(r_o - weights.ood_margin).mean()
        oe_head = uniform_ce(o_logits).mean()
        terms["sim_ood"], terms["oe_head"] = sim_ood, oe_head
        total = total + weights.sim_ood * sim_ood + weights.oe_head * oe_head
    with torch.no_grad():
        terms["acc_adv"] = (logits[n:].argmax(1) == y).float().mean()
        terms["r_adv"] = r_adv.mean()
    return RobustTerms(total, terms)
