"""Classification with a reject option (attractor paper, Fig. 6-a).

Every input first goes through an OOD detector ``D``; rejected inputs get the label -1 and
accepted ones the classifier's argmax. The classifier sees either the input, ``F(x)`` (the
paper's Fig. 6), or its iterated reconstruction, ``F(G^n(x))``, which lets the attractor
dynamics clean a perturbation before classification.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from basin.detectors.base import Detector, DetectorError
from basin.models.attractor import check_images
from basin.models.dynamics import iterate

REJECTED = -1
CLASSIFY_MODES = ("input", "iterate")


class ReconstructingClassifier(Protocol):
    def probabilities(self, x: Tensor) -> Tensor: ...

    def reconstruct(self, x: Tensor) -> Tensor: ...


def class_probabilities(model: Any, x: Tensor) -> Tensor:
    """Class probabilities of any classifier: ``probabilities(x)`` if it has one, else the
    softmax of ``logits(x)``, else the softmax of ``model(x)`` (logits)."""
    for method in ("probabilities", "logits"):
        fn = getattr(model, method, None)
        if callable(fn):
            out = fn(x)
            return out if method == "probabilities" else torch.softmax(out, dim=1)
    return torch.softmax(model(x), dim=1)


@dataclass(frozen=True)
class RejectOptionResult:
    """Outcome of ``RejectOptionClassifier.predict`` for N inputs.

    Attributes:
        labels: int64 (N,), the predicted class, or -1 (``REJECTED``) where rejected.
        predicted: int64 (N,), the classifier's argmax whether or not the input was rejected.
        accepted: bool (N,), ``scores >= threshold``.
        scores: (N,) detector scores, higher = more in-distribution.
        probabilities: (N, C) class probabilities of the classified inputs.
        threshold: the detector threshold used.
    """

    labels: Tensor
    predicted: Tensor
    accepted: Tensor
    scores: Tensor
    probabilities: Tensor
    threshold: float

    @property
    def coverage(self) -> float:
        """Fraction of inputs accepted (NaN for an empty batch)."""
        return float(self.accepted.double().mean()) if len(self.accepted) else float("nan")


class RejectOptionClassifier:
    """Reject inputs the detector calls OOD, classify the rest.

    Args:
        model: any classifier: ``probabilities(x)``, ``logits(x)`` or a callable returning
            logits (softmax applied); for ``classify="iterate"`` also ``reconstruct(x)``
            (G), e.g. an ``AttractorNet``. Put in eval mode here.
        detector: any ``Detector`` with a threshold (set by hand or by ``calibrate``).
        classify: ``"input"`` classifies ``F(x)``; ``"iterate"`` classifies ``F(G^n(x))``.
        steps: n for ``"iterate"`` (0 classifies the input itself).
    """

    def __init__(self, model: ReconstructingClassifier | Any, detector: Detector, *,
                 classify: Literal["input", "iterate"] = "input", steps: int = 1) -> None:
        if not any(callable(getattr(model, m, None)) for m in ("probabilities", "logits")) \
                and not callable(model):
            raise ValueError(f"model must return logits (be callable or have logits(x) or "
                             f"probabilities(x)), got {type(model).__name__}")
        if not isinstance(detector, Detector):
            raise ValueError(f"detector must be a basin Detector, got {type(detector).__name__}")
        if classify not in CLASSIFY_MODES:
            raise ValueError(f"classify must be one of {CLASSIFY_MODES}, got {classify!r}")
        if classify == "iterate" and not callable(getattr(model, "reconstruct", None)):
            raise ValueError("classify='iterate' needs a model with a reconstruct(x) method")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        self.model = model
        self.detector = detector
        self.classify = classify
        self.steps = steps
        if hasattr(model, "eval"):
            model.eval()

    def _check_input(self, x: Tensor) -> None:
        check_images(x, "x")
        expected = getattr(self.model, "input_dim", None)
        features = math.prod(x.shape[1:])
        if expected is not None and features != expected:
            raise ValueError(f"x has {features} features per sample (shape {tuple(x.shape)}), "
                             f"the model expects {expected}")

    def _classifier_input(self, x: Tensor) -> Tensor:
        if self.classify == "iterate":
            return iterate(self.model.reconstruct, x, steps=self.steps).final
        return x

    def _device(self, x: Tensor) -> torch.device:
        parameters = getattr(self.model, "parameters", None)
        if callable(parameters):
            first = next(iter(parameters()), None)
            if first is not None:
                return first.device
        return x.device

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 512) -> RejectOptionResult:
        """Labels with rejection for a batch of images ``(N, C, H, W)`` or ``(N, D)`` in [0, 1]."""
        self._check_input(x)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        threshold = self.detector.threshold
        if threshold is None:
            raise DetectorError(f"{self.detector.name}: no threshold; call calibrate() or "
                                "set one before predicting with a reject option")
        device = self._device(x)
        scores, probabilities = [], []
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size].to(device)
            scores.append(self.detector.score(batch).detach().reshape(-1).to(x.device))
            probabilities.append(class_probabilities(self.model, self._classifier_input(batch))
                                 .detach().to(x.device))
        if not scores:
            raise ValueError("x is empty: nothing to classify")
        score = torch.cat(scores)
        probs = torch.cat(probabilities)
        if len(score) != len(x) or probs.dim() != 2 or len(probs) != len(x):
            raise ValueError(f"detector/model returned scores {tuple(score.shape)} and "
                             f"probabilities {tuple(probs.shape)} for {len(x)} inputs")
        predicted = probs.argmax(dim=1).to(torch.int64)
        accepted = score >= threshold
        labels = torch.where(accepted, predicted, torch.full_like(predicted, REJECTED))
        return RejectOptionResult(labels=labels, predicted=predicted, accepted=accepted,
                                  scores=score, probabilities=probs, threshold=float(threshold))
