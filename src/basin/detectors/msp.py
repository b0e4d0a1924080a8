"""Maximum softmax probability (MSP), the baseline OOD score.

Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution Examples
in Neural Networks", ICLR 2017; Algorithm 2 of the second reproduced paper (Mulé & Shaner).

    score(x) = max_c softmax(z(x) / T)_c,     z = model.logits(x), T = 1 by default

in (1/C, 1], higher = more in-distribution. Algorithm 2 labels x in-distribution when the
score exceeds a threshold tau; basin accepts ``score >= threshold`` with the threshold from
``calibrate`` on validation data. The score is a composition of differentiable maps, so
gradients reach ``x`` (almost everywhere: ``max`` picks one class).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from basin.detectors.base import DetectorError
from basin.detectors.logit_score import LogitScoreDetector


def max_softmax(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``max_c softmax(logits / temperature)_c`` per row, shape (N,)."""
    if logits.dim() != 2:
        raise DetectorError(f"logits: expected shape (N, C), got {tuple(logits.shape)}")
    return torch.softmax(logits / temperature, dim=1).max(dim=1).values


class MSPDetector(LogitScoreDetector):
    """Maximum softmax probability of a :class:`FeatureClassifier`.

    Args:
        model: the classifier (in eval mode).
        temperature: softmax temperature T > 0 (1 is the baseline of Hendrycks & Gimpel).
        threshold: optional fixed acceptance threshold.
    """

    name: ClassVar[str] = "msp"

    def score_logits(self, logits: Tensor) -> Tensor:
        return max_softmax(logits, self.temperature)
