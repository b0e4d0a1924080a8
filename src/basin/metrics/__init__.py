"""Classification, calibration, ID-vs-OOD and reject-option metrics.

Every metric accepts torch tensors or numpy arrays and raises ``MetricError`` (a
``ValueError``) naming the argument for empty, NaN, mis-shaped or mismatched input. In all
OOD metrics scores are higher for in-distribution and ID is the positive class; see
``basin.metrics.ood`` for the exact definitions (FPR at 95% TPR in particular).
"""

from basin.metrics._arrays import MetricError
from basin.metrics.calibration import ece
from basin.metrics.classification import accuracy
from basin.metrics.ood import (
    aupr_in,
    aupr_out,
    auroc,
    detection_accuracy,
    fpr_at_threshold,
    fpr_at_tpr,
    ood_metrics,
    roc_curve_arrays,
    threshold_metrics,
    tpr_at_threshold,
)
from basin.metrics.reject_option import reject_option_metrics

__all__ = [
    "MetricError",
    "accuracy",
    "aupr_in",
    "aupr_out",
    "auroc",
    "detection_accuracy",
    "ece",
    "fpr_at_threshold",
    "fpr_at_tpr",
    "ood_metrics",
    "reject_option_metrics",
    "roc_curve_arrays",
    "threshold_metrics",
    "tpr_at_threshold",
]
