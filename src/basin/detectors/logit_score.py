"""Detectors whose score is a fixed function of the classifier's logits (MSP, Energy).

They differ only in that function, so the model check, the temperature and the two entry
points (images, or cached penultimate features) live here once.
"""

from __future__ import annotations

from abc import abstractmethod

from torch import Tensor

from basin.detectors.base import Detector, DetectorError
from basin.models.feature_classifier import FeatureClassifier, check_feature_classifier


class LogitScoreDetector(Detector):
    """Base class: ``score(x) = score_logits(model.logits(x))`` at a temperature T > 0."""

    def __init__(self, model: FeatureClassifier, temperature: float = 1.0,
                 threshold: float | None = None) -> None:
        super().__init__(threshold)
        self.model = check_feature_classifier(model)
        if not temperature > 0:
            raise DetectorError(f"temperature: must be > 0, got {temperature}")
        self.temperature = float(temperature)

    @abstractmethod
    def score_logits(self, logits: Tensor) -> Tensor:
        """The score of logits (N, C), shape (N,)."""

    def score(self, x: Tensor) -> Tensor:
        return self.score_logits(self.model.logits(x))

    def score_features(self, f: Tensor) -> Tensor:
        """The same score from cached penultimate features ``f`` (N, D)."""
        return self.score_logits(self.model.logits_from_features(f))
