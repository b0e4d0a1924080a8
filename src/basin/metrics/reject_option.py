"""Metrics of a classifier that may reject inputs, evaluated on ID and OOD inputs together.

A reject-option system answers each input with a class or a rejection. On in-distribution
(ID) inputs a rejection is a safe refusal and an accepted wrong class a *silent failure*; on
out-of-distribution (OOD) inputs every accepted answer is a silent failure, whatever class it
names, because no class is correct.
"""

from __future__ import annotations

import math
from typing import Any

from basin.metrics._arrays import labels_1d, mask_1d, predictions_1d, same_length


def reject_option_metrics(id_pred: Any, id_labels: Any, id_accepted: Any,
                          ood_accepted: Any) -> dict[str, float]:
    """Coverage, selective and overall accuracy and silent-failure rates.

    Arguments: ``id_pred`` the predicted classes of the N ID inputs (1-D, or (N, C) logits
    reduced by argmax), ``id_labels`` their true classes, ``id_accepted`` a boolean (N,) mask
    of the ID inputs the system accepted, ``ood_accepted`` a boolean (M,) mask of the OOD
    inputs it accepted. N, M > 0.

    With ``A`` the accepted ID inputs and ``W`` those of them that are misclassified:

    - ``coverage`` = |A| / N, the fraction of ID inputs accepted.
    - ``selective_accuracy`` = (|A| - |W|) / |A|, accuracy on accepted ID inputs
      (NaN when nothing is accepted).
    - ``overall_accuracy`` = (|A| - |W|) / N, accuracy on all ID inputs with every rejected
      ID input counted as an error.
    - ``id_silent_failure_rate`` = |W| / N, accepted-and-wrong ID inputs over all ID inputs.
    - ``ood_acceptance_rate`` = (accepted OOD) / M.
    - ``silent_failure_rate`` = (|W| + accepted OOD) / (N + M), over all ID and OOD inputs.

    ``n_id`` = N and ``n_ood`` = M are included so the rates can be recombined.
    """
    pred = predictions_1d(id_pred, "id_pred")
    true = labels_1d(id_labels, "id_labels")
    acc_id = mask_1d(id_accepted, "id_accepted")
    acc_ood = mask_1d(ood_accepted, "ood_accepted")
    same_length(pred, "id_pred", true, "id_labels")
    same_length(pred, "id_pred", acc_id, "id_accepted")

    n_id, n_ood = len(true), len(acc_ood)
    n_accepted = int(acc_id.sum())
    n_right = int((acc_id & (pred == true)).sum())
    n_wrong = n_accepted - n_right
    n_ood_accepted = int(acc_ood.sum())
    return {
        "n_id": n_id,
        "n_ood": n_ood,
        "coverage": n_accepted / n_id,
        "selective_accuracy": n_right / n_accepted if n_accepted else math.nan,
        "overall_accuracy": n_right / n_id,
        "id_silent_failure_rate": n_wrong / n_id,
        "ood_acceptance_rate": n_ood_accepted / n_ood,
        "silent_failure_rate": (n_wrong + n_ood_accepted) / (n_id + n_ood),
    }
