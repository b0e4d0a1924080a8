"""In-distribution vs out-of-distribution metrics, with ID as the positive class.

Conventions (those of ``basin.detectors``): scores are *higher for in-distribution*, an
input is *accepted* as in-distribution when ``score >= threshold``, and in-distribution is
the positive class, as in the attractor paper's tables. So TPR is the fraction of ID inputs
accepted and FPR the fraction of OOD inputs accepted.

Threshold-free metrics (curves from scikit-learn):

- ``auroc``: area under the ROC curve; ties between an ID and an OOD score count 1/2.
- ``aupr_in``: average precision with ID positive and the scores as they are.
- ``aupr_out``: average precision with OOD positive and the scores negated.
  Average precision is scikit-learn's step-wise ``sum_n (R_n - R_{n-1}) P_n``, not a
  trapezoidal area (which overestimates).
- ``fpr_at_95_tpr``: the fraction of OOD inputs accepted at the *largest* threshold that
  accepts at least 95% of ID inputs. Computed exactly (no interpolation) as the smallest FPR
  among ROC points with TPR >= 0.95; tied scores move together, so with ties the TPR at that
  threshold can exceed 0.95.
- ``detection_accuracy``: ``max_t 1/2 (TPR(t) + 1 - FPR(t))``, the best accuracy of a
  threshold on a balanced ID/OOD mixture (ODIN's "detection accuracy", Liang et al. 2018).

At a given threshold ``t``: ``accuracy`` (ID accepted + OOD rejected over all inputs),
``precision`` (ID accepted / all accepted; NaN if nothing is accepted), ``recall`` (= TPR,
ID accepted / ID), ``fpr`` (OOD accepted / OOD) and ``tnr`` (= 1 - fpr, OOD rejected / OOD,
the feature-reconstruction paper's "OoD accuracy").
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from basin.metrics._arrays import MetricError, scores_1d

# TPRs are ratios of integer counts; this only absorbs rounding of the target itself.
_TPR_TOLERANCE = 1e-12


def _labelled(id_scores: Any, ood_scores: Any) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Labels (ID = 1, OOD = 0) and scores of the pooled inputs."""
    s_id = scores_1d(id_scores, "id_scores")
    s_ood = scores_1d(ood_scores, "ood_scores")
    labels = np.concatenate([np.ones(len(s_id), np.int64), np.zeros(len(s_ood), np.int64)])
    return labels, np.concatenate([s_id, s_ood])


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise MetricError(f"threshold: expected a number, got {type(threshold).__name__}")
    if math.isnan(threshold):
        raise MetricError("threshold: is NaN")
    return float(threshold)


def roc_curve_arrays(id_scores: Any, ood_scores: Any
                     ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``(fpr, tpr, thresholds)`` of every distinct threshold, for plotting or analysis.

    Point ``i`` accepts inputs with ``score >= thresholds[i]``; thresholds decrease, and the
    first point (threshold ``inf``) accepts nothing, so the curve runs from (0, 0) to (1, 1).
    """
    labels, scores = _labelled(id_scores, ood_scores)
    fpr, tpr, thresholds = roc_curve(labels, scores, pos_label=1, drop_intermediate=False)
    return fpr.astype(np.float64), tpr.astype(np.float64), thresholds.astype(np.float64)


def auroc(id_scores: Any, ood_scores: Any) -> float:
    """Area under the ROC curve, ID positive: P(id > ood) + 1/2 P(id == ood)."""
    labels, scores = _labelled(id_scores, ood_scores)
    return float(roc_auc_score(labels, scores))


def aupr_in(id_scores: Any, ood_scores: Any) -> float:
    """Average precision with ID as the positive class and the scores as they are."""
    labels, scores = _labelled(id_scores, ood_scores)
    return float(average_precision_score(labels, scores))


def aupr_out(id_scores: Any, ood_scores: Any) -> float:
    """Average precision with OOD as the positive class and the scores negated."""
    labels, scores = _labelled(id_scores, ood_scores)
    return float(average_precision_score(1 - labels, -scores))


def fpr_at_tpr(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> float:
    """Fraction of OOD accepted at the largest threshold accepting >= ``tpr`` of ID inputs."""
    if not 0.0 < tpr <= 1.0:
        raise MetricError(f"tpr: must lie in (0, 1], got {tpr}")
    fprs, tprs, _ = roc_curve_arrays(id_scores, ood_scores)
    # FPR never decreases as the threshold falls, so the smallest FPR among qualifying
    # points is the FPR at the largest qualifying threshold.
    return float(fprs[tprs >= tpr - _TPR_TOLERANCE].min())


def detection_accuracy(id_scores: Any, ood_scores: Any) -> float:
    """Best balanced accuracy over all thresholds: ``max_t (TPR + 1 - FPR) / 2``."""
    fprs, tprs, _ = roc_curve_arrays(id_scores, ood_scores)
    return float((0.5 * (tprs + 1.0 - fprs)).max())


def tpr_at_threshold(id_scores: Any, threshold: float) -> float:
    """Fraction of ID inputs accepted (``score >= threshold``)."""
    return float((scores_1d(id_scores, "id_scores") >= _check_threshold(threshold)).mean())


def fpr_at_threshold(ood_scores: Any, threshold: float) -> float:
    """Fraction of OOD inputs accepted (``score >= threshold``)."""
    return float((scores_1d(ood_scores, "ood_scores") >= _check_threshold(threshold)).mean())


def threshold_metrics(id_scores: Any, ood_scores: Any, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, fpr and tnr of the decision ``score >= threshold``."""
    t = _check_threshold(threshold)
    s_id = scores_1d(id_scores, "id_scores")
    s_ood = scores_1d(ood_scores, "ood_scores")
    id_accepted = int((s_id >= t).sum())
    ood_accepted = int((s_ood >= t).sum())
    accepted = id_accepted + ood_accepted
    ood_rejected = len(s_ood) - ood_accepted
    fpr = ood_accepted / len(s_ood)
    return {
        "threshold": t,
        "accuracy": (id_accepted + ood_rejected) / (len(s_id) + len(s_ood)),
        "precision": id_accepted / accepted if accepted else math.nan,
        "recall": id_accepted / len(s_id),
        "fpr": fpr,
        "tnr": 1.0 - fpr,
    }


def ood_metrics(id_scores: Any, ood_scores: Any,
                threshold: float | None = None) -> dict[str, float]:
    """Every ID-vs-OOD metric of the module docstring in one dict.

    Always: ``auroc``, ``aupr_in``, ``aupr_out``, ``fpr_at_95_tpr``, ``detection_accuracy``,
    ``n_id``, ``n_ood``. With a ``threshold``, also those of ``threshold_metrics``:
    ``threshold``, ``accuracy``, ``precision``, ``recall``, ``fpr``, ``tnr``.
    """
    labels, scores = _labelled(id_scores, ood_scores)
    s_id, s_ood = scores[labels == 1], scores[labels == 0]
    out: dict[str, float] = {
        "n_id": len(s_id),
        "n_ood": len(s_ood),
        "auroc": auroc(s_id, s_ood),
        "aupr_in": aupr_in(s_id, s_ood),
        "aupr_out": aupr_out(s_id, s_ood),
        "fpr_at_95_tpr": fpr_at_tpr(s_id, s_ood, 0.95),
        "detection_accuracy": detection_accuracy(s_id, s_ood),
    }
    if threshold is not None:
        out.update(threshold_metrics(s_id, s_ood, threshold))
    return out
