"""The attractor training loss, Eq. 4 of the attractor paper.

``L_total = a1 L_reconstruction + a2 L_eigen + a3 L_classification`` with
``L_reconstruction`` the mean squared error over all elements, ``L_eigen`` the batch mean of
``1/2 ||dG/dx||_F^2`` (Eq. 5, ``basin.losses.jacobian``) and ``L_classification`` the mean
cross-entropy of the softmax head. The paper uses ``(0.988, 0.002, 0.01)`` for attractor
training and ``(0.99, 0, 0.01)`` for the baseline (section 3); both are presets here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from basin.losses.forward import StackForward, check_stack_input, run_stack
from basin.losses.jacobian import check_jacobian_options, frobenius_sq_from_record
from basin.models.layer_stack import LayerStack


@dataclass(frozen=True)
class LossWeights:
    """The coefficients ``a1, a2, a3`` of Eq. 4; each finite and >= 0."""

    reconstruction: float
    eigen: float
    classification: float

    def __post_init__(self) -> None:
        for name in ("reconstruction", "eigen", "classification"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"LossWeights.{name}: expected a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"LossWeights.{name}: must be finite and >= 0, got {value}")

    @classmethod
    def paper_attractor(cls) -> LossWeights:
        """Attractor training: ``(0.988, 0.002, 0.01)``."""
        return cls(0.988, 0.002, 0.01)

    @classmethod
    def paper_baseline(cls) -> LossWeights:
        """Baseline training, no eigen loss: ``(0.99, 0.0, 0.01)``."""
        return cls(0.99, 0.0, 0.01)


@dataclass
class LossTerms:
    """The total and its three (unweighted) terms, all scalar tensors; ``total`` carries the
    graph to back-propagate."""

    total: Tensor
    reconstruction: Tensor
    eigen: Tensor
    classification: Tensor

    def as_floats(self) -> dict[str, float]:
        """Plain floats for logging, keyed ``total``, ``reconstruction``, ``eigen``,
        ``classification``."""
        return {"total": float(self.total.detach()),
                "reconstruction": float(self.reconstruction.detach()),
                "eigen": float(self.eigen.detach()),
                "classification": float(self.classification.detach())}


def _check_targets(n: int, out_features: int, target: Tensor, logits: Tensor,
                   labels: Tensor) -> None:
    if not isinstance(target, Tensor) or tuple(target.shape) != (n, out_features):
        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"target: expected shape ({n}, {out_features}) like the stack's "
                         f"output, got {shape}")
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != n:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits: expected shape ({n}, n_classes), got {shape}")
    if (not isinstance(labels, Tensor) or labels.shape != (n,)
            or labels.dtype not in (torch.int64, torch.int32)):
        desc = (f"{tuple(labels.shape)} {labels.dtype}" if isinstance(labels, Tensor)
                else type(labels).__name__)
        raise ValueError(f"labels: expected integer class indices of shape ({n},), got {desc}")
    if n and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels: class indices must lie in [0, {logits.shape[1]}), got "
                         f"range [{int(labels.min())}, {int(labels.max())}]")


def attractor_loss(stack: LayerStack, h: Tensor, target: Tensor, logits: Tensor,
                   labels: Tensor, weights: LossWeights, *, jacobian: str = "exact-fast",
                   projections: int = 1, generator: torch.Generator | None = None,
                   chunk_size: int = 64, forward: StackForward | None = None,
                   mse_reduction: str = "mean") -> LossTerms:
    """Eq. 4 on one batch.

    Args:
        stack: the autoencoder G being trained (whole network or one pretraining stage).
        h: its flat inputs ``(N, in_features)``.
        target: what ``stack(h)`` should reconstruct, ``(N, out_features)`` (``h`` itself for
            an autoencoder).
        logits: class scores ``(N, n_classes)`` of the softmax head; labels: ``(N,)``.
        weights: ``a1, a2, a3``. The Jacobian is only computed when ``weights.eigen > 0``;
            otherwise ``eigen`` is a zero tensor and costs nothing.
        jacobian, projections, generator, chunk_size: how ``||J||_F^2`` is computed, see
            ``basin.losses.jacobian.jacobian_frobenius_sq``.
        forward: an existing ``run_stack(stack, h)`` record (e.g. one whose bottleneck
            activation produced ``logits``), so the stack is not run a second time.
        mse_reduction: "mean" over all elements (the default) or "sum" over a sample's
            features, averaged over the batch (out_features times larger).
    """
    if mse_reduction not in ("mean", "sum"):
        raise ValueError(f"mse_reduction: expected 'mean' or 'sum', got {mse_reduction!r}")
    if not isinstance(weights, LossWeights):
        raise ValueError(f"weights: expected LossWeights, got {type(weights).__name__}")
    check_jacobian_options(jacobian, projections, chunk_size)
    check_stack_input(stack, h)
    if forward is None:
        forward = run_stack(stack, h)
    elif (forward.stack is not stack or forward.input.shape != h.shape
          or forward.input.data_ptr() != h.data_ptr()):
        raise ValueError("forward: the record was not made by run_stack(stack, h) for these "
                         "arguments")
    _check_targets(h.shape[0], stack.out_features, target, logits, labels)
    if h.shape[0] == 0:
        raise ValueError("h: empty batch")

    if mse_reduction == "mean":
        reconstruction = F.mse_loss(forward.output, target)
    else:
        reconstruction = (forward.output - target).square().sum(dim=1).mean()
    classification = F.cross_entropy(logits, labels.long())
    if weights.eigen > 0:
        values = frobenius_sq_from_record(forward, jacobian, projections=projections,
                                          generator=generator, chunk_size=chunk_size)
        eigen = 0.5 * values.mean()
    else:
        eigen = reconstruction.new_zeros(())
    total = (weights.reconstruction * reconstruction + weights.eigen * eigen
             + weights.classification * classification)
    return LossTerms(total, reconstruction, eigen, classification)
