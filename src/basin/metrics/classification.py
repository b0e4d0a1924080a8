"""Classification accuracy."""

from __future__ import annotations

from typing import Any

from basin.metrics._arrays import labels_1d, predictions_1d, same_length


def accuracy(predictions: Any, labels: Any) -> float:
    """Fraction of inputs whose predicted class equals the label.

    ``predictions`` is either a 1-D vector of predicted classes or an (N, C) array of
    logits/probabilities, reduced by argmax (ties go to the lowest class index, as in
    ``numpy.argmax``). ``labels`` is a 1-D integer vector of the same length N > 0.
    """
    pred = predictions_1d(predictions, "predictions")
    true = labels_1d(labels, "labels")
    same_length(pred, "predictions", true, "labels")
    return float((pred == true).mean())
