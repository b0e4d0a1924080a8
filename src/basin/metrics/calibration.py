"""Expected calibration error (ECE) with equal-width confidence bins.

Definition (Guo et al., ICML 2017, "On calibration of modern neural networks"): with the
confidence ``conf_i = max_c p_ic`` and the prediction ``argmax_c p_ic`` of each input, split
[0, 1] into ``n_bins`` equal-width bins ``B_b = ((b-1)/M, b/M]`` (the first bin also holds a
confidence of exactly 0) and take

    ECE = sum_b |B_b| / N * | acc(B_b) - mean_conf(B_b) |,

where ``acc(B_b)`` is the accuracy and ``mean_conf(B_b)`` the mean confidence of the inputs
in bin ``b``; empty bins contribute nothing. 15 bins is the usual default.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from basin.metrics._arrays import MetricError, labels_1d, same_length, to_numpy

# Float32 softmax rows sum to 1 within ~1e-6; a looser bound still catches logits by mistake.
_ROW_SUM_TOLERANCE = 1e-3


def ece(probabilities: Any, labels: Any, n_bins: int = 15) -> float:
    """Expected calibration error of (N, C) class probabilities against integer labels.

    ``probabilities`` must lie in [0, 1] with rows summing to 1 (pass softmax outputs, not
    logits). Returns a value in [0, 1]; 0 means perfectly calibrated on these inputs.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise MetricError(f"n_bins: expected a positive integer, got {n_bins!r}")
    probs = to_numpy(probabilities, "probabilities")
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise MetricError(f"probabilities: expected a non-empty (N, C) array, got shape "
                          f"{probs.shape}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise MetricError(f"probabilities: expected floats, got dtype {probs.dtype}")
    probs = probs.astype(np.float64)
    if not np.isfinite(probs).all():
        raise MetricError("probabilities: contains NaN or infinite values")
    if probs.min() < 0 or probs.max() > 1:
        raise MetricError(f"probabilities: values must lie in [0, 1], got range "
                          f"[{probs.min():.4g}, {probs.max():.4g}] (logits instead of softmax?)")
    row_sums = probs.sum(axis=1)
    if np.abs(row_sums - 1).max() > _ROW_SUM_TOLERANCE:
        raise MetricError(f"probabilities: rows must sum to 1, found a row summing to "
                          f"{row_sums[np.abs(row_sums - 1).argmax()]:.6g}")
    true = labels_1d(labels, "labels")
    same_length(probs, "probabilities", true, "labels")
    if true.max() >= probs.shape[1]:
        raise MetricError(f"labels: class {int(true.max())} is out of range for "
                          f"{probs.shape[1]} probability columns")

    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == true).astype(np.float64)
    # Right-closed bins: ceil(conf * M) - 1 puts conf in ((b-1)/M, b/M]; conf = 0 -> bin 0.
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    # |sum(correct) - sum(conf)| / N per bin equals |B|/N * |acc(B) - conf(B)|.
    return float(np.abs(acc_sum - conf_sum).sum() / len(true))
