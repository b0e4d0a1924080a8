"""Energy score for OOD detection.

Liu, Wang, Owens & Li, "Energy-based Out-of-distribution Detection", NeurIPS 2020. The
free energy of an input under the classifier's logits z = model.logits(x) is

    E(x; T) = -T * logsumexp_c(z_c / T)

and in-distribution inputs have *lower* energy. basin's convention is higher = more
in-distribution, so the detector returns the negative energy

    score(x) = -E(x; T) = T * logsumexp_c(z_c(x) / T),     T = 1 by default.

Unlike MSP the score is not bounded and does not saturate at 1, which is why it separates
confident ID inputs from confident OOD ones better. It is smooth in the logits, so gradients
reach ``x`` everywhere the classifier is differentiable.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from basin.detectors.base import DetectorError
from basin.detectors.logit_score import LogitScoreDetector


def negative_energy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``T * logsumexp(logits / T)`` per row, shape (N,)."""
    if logits.dim() != 2:
        raise DetectorError(f"logits: expected shape (N, C), got {tuple(logits.shape)}")
    return temperature * torch.logsumexp(logits / temperature, dim=1)


class EnergyDetector(LogitScoreDetector):
    """Negative free energy of a :class:`FeatureClassifier`'s logits.

    Args:
        model: the classifier (in eval mode).
        temperature: T > 0; Liu et al. use T = 1.
        threshold: optional fixed acceptance threshold.
    """

    name: ClassVar[str] = "energy"

    def score_logits(self, logits: Tensor) -> Tensor:
        return negative_energy(logits, self.temperature)
