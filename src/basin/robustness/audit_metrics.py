"""The audit's numbers as records (:class:`~basin.robustness.records.Record`), one per number.

Records the audit writes (``T`` the threshold, ``side`` the perturbed inputs):

- ``clean`` (epsilon 0, side ``none``): on the ID set ``accuracy``, ``acceptance_rate``,
  ``silent_failure_rate`` (accepted and wrong, over all ID inputs), ``accuracy_accepted``,
  ``mean_score``; on each OOD set ``ood_acceptance_rate``, ``auroc``, ``fpr_at_95_tpr``,
  ``aupr_in``, ``aupr_out`` and the system's ``silent_failure_rate`` over ID + OOD inputs.
- ``worst-case`` per epsilon, per input over every run and the clean input: the ID set's
  ``accuracy``, ``acceptance_rate`` and ``silent_failure_rate`` (side ``id``); per OOD set the
  detection metrics with side ``id`` (ID attacked, OOD clean), ``ood`` and ``both``, the
  ``ood_acceptance_rate`` (side ``ood``) and the system ``silent_failure_rate`` (``both``).
- one group per attack run (condition = the spec text): ``accuracy``, ``acceptance_rate``,
  ``silent_failure_rate``, ``mean_score`` for ID runs; ``ood_acceptance_rate``,
  ``mean_score``, ``auroc`` (against clean ID scores) for OOD runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

from basin.metrics import ood_metrics
from basin.robustness.audit_report import RunArrays, WorstCase
from basin.robustness.records import Record

DETECTION_METRICS = ("auroc", "fpr_at_95_tpr", "aupr_in", "aupr_out")
Array = NDArray[Any]


def _np(a: Tensor | Array) -> Array:
    return a.numpy() if isinstance(a, Tensor) else np.asarray(a)


def _mean(mask: Array) -> float:
    return float(np.mean(mask)) if mask.size else math.nan


def id_side_metrics(labels: Array, wrong: Array, scores: Array,
                    threshold: float) -> dict[str, float]:
    """Accuracy, acceptance, silent failures (accepted and wrong) and the mean score."""
    accepted = scores >= threshold
    return {"accuracy": 1.0 - _mean(wrong), "acceptance_rate": _mean(accepted),
            "silent_failure_rate": _mean(accepted & wrong),
            "accuracy_accepted": _mean(~wrong[accepted]), "mean_score": float(np.mean(scores))}


def detection(id_scores: Array, ood_scores: Array) -> dict[str, float]:
    """AUROC, FPR at 95% TPR and both AUPRs of ID (positive) against OOD scores."""
    metrics = ood_metrics(id_scores, ood_scores)
    return {k: metrics[k] for k in DETECTION_METRICS}


def system_silent_failure(id_silent: Array, ood_accepted: Array) -> float:
    """(accepted-and-wrong ID + accepted OOD) over all ID and OOD inputs."""
    return float((id_silent.sum() + ood_accepted.sum()) / (len(id_silent) + len(ood_accepted)))


def _records(condition: str, attack: str, epsilon: float, dataset: str, side: str,
             metrics: Mapping[str, float], extra: Mapping[str, Any]) -> list[Record]:
    return [Record(condition, attack, epsilon, dataset, side, k, v, dict(extra))
            for k, v in metrics.items()]


def clean_records(id_name: str, labels: Tensor, pred: Tensor, id_scores: Tensor,
                  ood_scores: Mapping[str, Tensor], threshold: float) -> list[Record]:
    """Records of the unperturbed system (condition ``clean``)."""
    y, s_id = _np(labels), _np(id_scores)
    wrong = _np(pred) != y
    extra = {"threshold": threshold}
    out = _records("clean", "none", 0.0, id_name, "none",
                   id_side_metrics(y, wrong, s_id, threshold), extra)
    silent = wrong & (s_id >= threshold)
    for name, s in ood_scores.items():
        s_ood = _np(s)
        metrics = {"ood_acceptance_rate": _mean(s_ood >= threshold), **detection(s_id, s_ood),
                   "silent_failure_rate": system_silent_failure(silent, s_ood >= threshold)}
        out += _records("clean", "none", 0.0, name, "none", metrics, extra)
    return out


def worst_case_records(id_name: str, labels: Array, clean_id: Array,
                       clean_ood: Mapping[str, Array], worst: WorstCase,
                       threshold: float) -> list[Record]:
    """Records of the per-input worst case at one epsilon (condition ``worst-case``)."""
    eps, extra = worst.epsilon, {"threshold": threshold}
    metrics = id_side_metrics(labels, worst.wrong, worst.id_scores, threshold)
    metrics = {"accuracy": metrics["accuracy"], "acceptance_rate": metrics["acceptance_rate"],
               "silent_failure_rate": _mean(worst.silent), "mean_score": metrics["mean_score"]}
    out = _records("worst-case", "worst-case", eps, id_name, "id", metrics, extra)
    for name, s_ood in worst.ood_scores.items():
        accepted = s_ood >= threshold
        sides = {"id": (worst.id_scores, clean_ood[name]), "ood": (clean_id, s_ood),
                 "both": (worst.id_scores, s_ood)}
        for side, (a, b) in sides.items():
            metrics = detection(a, b)
            if side == "ood":
                metrics["ood_acceptance_rate"] = _mean(accepted)
            if side == "both":
                metrics["silent_failure_rate"] = system_silent_failure(worst.silent, accepted)
            out += _records("worst-case", "worst-case", eps, name, side, metrics, extra)
    return out


def run_records(labels: Array, clean_id: Array, runs: Sequence[RunArrays],
                threshold: float) -> list[Record]:
    """One group of records per attack run, on the data set it attacked."""
    out: list[Record] = []
    for run in runs:
        extra = {"threshold": threshold, "objective": run.objective, "black_box": run.black_box}
        if run.side == "id":
            metrics = id_side_metrics(labels, run.predicted != labels, run.scores, threshold)
            metrics.pop("accuracy_accepted")
        else:
            metrics = {"ood_acceptance_rate": _mean(run.scores >= threshold),
                       "mean_score": float(np.mean(run.scores)),
                       "auroc": detection(clean_id, run.scores)["auroc"]}
        out += _records(run.spec, run.attack, run.epsilon, run.dataset, run.side, metrics,
                        extra)
    return out
