"""Detector-aware (adaptive) objectives: attacks that know the OOD detector and its threshold.

A defence that rejects inputs is only as strong as the attack that targets the rejection
(Carlini & Wagner 2017 bypassed MagNet's detector this way). Three goals, with the detector's
convention that ``score`` is higher for in-distribution and ``score >= threshold`` accepts:

- ``reject-id``: an in-distribution input should be *rejected*: maximise ``-score(x)``;
  success when ``score < T``.
- ``accept-ood``: an OOD input should be *accepted*: maximise ``score(x)``; success when
  ``score >= T``.
- ``end-to-end``: misclassify *and* stay accepted (the only outcome that hurts a system
  that abstains on rejected inputs): maximise ``CE(F(x), y) - penalty * relu(T + margin -
  score(x))``. Above ``T + margin`` the penalty is zero and the attack is plain CE; below it
  the penalty pulls the input back into the accepted region. Success requires both
  ``argmax F(x) != y`` and ``score(x) >= T``.

``reject-id`` and ``accept-ood`` are of kind ``"detector"`` and keep each input's strongest
point by default (the score itself, not its crossing of T, drives AUROC and FPR95);
``end-to-end`` is ``"joint"`` and stops at the first success. Each computes loss and success
from one pass of the model and the detector.

The threshold is read from the detector at every call, so recalibrating the detector after
building the objective is honoured; it must be set when the objective is built.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from basin.attacks.objectives import Objective, classifier_logits, declare, labels, misclassified


def _check_detector(detector: Any, name: str) -> None:
    if detector is None:
        raise ValueError(f"objective {name!r} needs a detector (detector=None was given)")
    if not callable(getattr(detector, "score", None)):
        raise ValueError(f"objective {name!r}: detector {type(detector).__name__} has no "
                         "score() method")
    threshold = getattr(detector, "threshold", None)
    if threshold is None:
        raise ValueError(f"objective {name!r}: the detector {type(detector).__name__} has no "
                         "threshold; calibrate it or set one first")


def detector_score(detector: Any, x: Tensor) -> Tensor:
    """``detector.score(x)`` checked to be a per-sample ``(N,)`` tensor."""
    score = detector.score(x)
    if not isinstance(score, Tensor) or score.shape != (x.shape[0],):
        got = tuple(score.shape) if isinstance(score, Tensor) else type(score).__name__
        raise ValueError(f"detector: score must have shape ({x.shape[0]},), got {got}")
    return score


def _threshold(detector: Any) -> float:
    threshold = detector.threshold
    if threshold is None:
        raise ValueError(f"detector {type(detector).__name__}: threshold was unset after the "
                         "objective was built")
    return float(threshold)


def _score_objective(name: str, detector: Any, sign: float) -> Objective:
    """``sign * score``, success ``score < T`` (sign -1) or ``score >= T`` (sign +1)."""

    def crossed(score: Tensor) -> Tensor:
        threshold = _threshold(detector)
        return score < threshold if sign < 0 else score >= threshold

    def loss(x: Tensor, y: Tensor | None) -> Tensor:
        return sign * detector_score(detector, x)

    def success(x: Tensor, y: Tensor | None) -> Tensor:
        return crossed(detector_score(detector, x))

    def evaluate(x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        score = detector_score(detector, x)
        return sign * score, crossed(score.detach())

    return Objective(name, loss, success, needs_labels=False, evaluate_fn=evaluate)


@declare("detector", keep="strongest")
def build_reject_id(model: Any = None, *, detector: Any = None, **_: Any) -> Objective:
    """Push in-distribution inputs to be rejected: maximise ``-score``."""
    _check_detector(detector, "reject-id")
    return _score_objective("reject-id", detector, -1.0)


@declare("detector", keep="strongest")
def build_accept_ood(model: Any = None, *, detector: Any = None, **_: Any) -> Objective:
    """Push OOD inputs to be accepted: maximise ``score``."""
    _check_detector(detector, "accept-ood")
    return _score_objective("accept-ood", detector, 1.0)


@declare("joint")
def build_end_to_end(model: Any, *, detector: Any = None, penalty: float = 10.0,
                     margin: float = 0.0, **_: Any) -> Objective:
    """Misclassify while staying accepted: ``CE - penalty * relu(T + margin - score)``."""
    if model is None:
        raise ValueError("objective 'end-to-end' needs a model, got None")
    _check_detector(detector, "end-to-end")
    if not (math.isfinite(penalty) and penalty >= 0):
        raise ValueError(f"objective 'end-to-end': penalty must be finite and >= 0, "
                         f"got {penalty!r}")
    if not math.isfinite(margin):
        raise ValueError(f"objective 'end-to-end': margin must be finite, got {margin!r}")

    def value(logits: Tensor, score: Tensor, y: Tensor | None) -> Tensor:
        ce = F.cross_entropy(logits, labels(y), reduction="none")
        shortfall = torch.relu(_threshold(detector) + margin - score)
        return ce - penalty * shortfall.to(ce.dtype)

    def succeeded(logits: Tensor, score: Tensor, y: Tensor | None) -> Tensor:
        return misclassified(logits, y) & (score >= _threshold(detector))

    def loss(x: Tensor, y: Tensor | None) -> Tensor:
        return value(classifier_logits(model, x), detector_score(detector, x), y)

    def success(x: Tensor, y: Tensor | None) -> Tensor:
        return succeeded(classifier_logits(model, x), detector_score(detector, x), y)

    def evaluate(x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        logits, score = classifier_logits(model, x), detector_score(detector, x)
        return value(logits, score, y), succeeded(logits.detach(), score.detach(), y)

    return Objective("end-to-end", loss, success, evaluate_fn=evaluate)
