"""The API every OOD detector implements.

Sign convention: ``score(x)`` is *higher for in-distribution* inputs (a similarity, a
confidence, a negative energy). ``predict(x)`` is True where an input is accepted as
in-distribution, i.e. ``score(x) >= threshold``. In-distribution is the positive class in
every metric, as in the attractor paper's tables.

Thresholds come from ``calibrate`` on *validation* data (never test data) for a chosen
in-distribution acceptance rate, or are set by hand (the attractor paper's T = 0.8).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Self

import torch
from torch import Tensor


class DetectorError(ValueError):
    """A detector was used before it was ready, or given unusable input."""


class Detector(ABC):
    """Base class: subclasses implement ``score`` and, when they learn something, ``fit``."""

    name: ClassVar[str] = "detector"

    def __init__(self, threshold: float | None = None) -> None:
        self.threshold = threshold

    def fit(self, x: Tensor, y: Tensor | None = None) -> Self:
        """Learn whatever the detector needs from in-distribution training data."""
        return self

    @abstractmethod
    def score(self, x: Tensor) -> Tensor:
        """Per-input score, shape (N,), higher = more in-distribution.

        Differentiable with respect to ``x`` wherever the detector allows it, so that
        detector-aware attacks can follow its gradient.
        """

    @torch.no_grad()
    def score_batches(self, x: Tensor, batch_size: int = 512) -> Tensor:
        """``score`` over a large tensor in batches, without building a graph."""
        return torch.cat([self.score(x[i:i + batch_size]).detach()
                          for i in range(0, len(x), batch_size)]) if len(x) else torch.empty(0)

    def calibrate(self, x_val: Tensor, acceptance: float = 0.95,
                  batch_size: int = 512) -> float:
        """Set the threshold so that a fraction ``acceptance`` of ``x_val`` is accepted."""
        if not 0.0 < acceptance <= 1.0:
            raise DetectorError(f"acceptance must be in (0, 1], got {acceptance}")
        scores = self.score_batches(x_val, batch_size)
        self.threshold = threshold_for_acceptance(scores, acceptance)
        return self.threshold

    def predict(self, x: Tensor) -> Tensor:
        """Boolean tensor (N,): True where ``x`` is accepted as in-distribution."""
        if self.threshold is None:
            raise DetectorError(f"{self.name}: no threshold; call calibrate() or set one")
        return self.score_batches(x) >= self.threshold


def threshold_for_acceptance(scores: Tensor, acceptance: float) -> float:
    """Largest threshold t such that at least ``acceptance`` of ``scores`` are >= t."""
    if scores.numel() == 0:
        raise DetectorError("cannot calibrate a threshold on an empty set of scores")
    if not torch.isfinite(scores).all():
        raise DetectorError("cannot calibrate on non-finite scores")
    ordered = torch.sort(scores.flatten().double(), descending=True).values
    k = max(1, int(torch.ceil(torch.tensor(acceptance * len(ordered) - 1e-9)).item()))
    return float(ordered[k - 1])
