"""Tests of basin.metrics against hand-computed cases, brute-force references and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from basin.metrics import (
    MetricError,
    accuracy,
    aupr_in,
    aupr_out,
    auroc,
    detection_accuracy,
    ece,
    fpr_at_threshold,
    fpr_at_tpr,
    ood_metrics,
    reject_option_metrics,
    roc_curve_arrays,
    threshold_metrics,
    tpr_at_threshold,
)

# Small integer scores make ties frequent, which is where definitions differ.
int_scores = st.lists(st.integers(-6, 6), min_size=1, max_size=25)


def brute_auroc(id_s: list[float], ood_s: list[float]) -> float:
    """Mann-Whitney: P(id > ood) + 1/2 P(id == ood) over all pairs."""
    wins = sum((a > b) + 0.5 * (a == b) for a in id_s for b in ood_s)
    return wins / (len(id_s) * len(ood_s))


def brute_fpr95(id_s: list[float], ood_s: list[float]) -> float:
    """FPR at the largest threshold among the scores that accepts >= 95% of ID inputs."""
    ok = [t for t in set(id_s) | set(ood_s)
          if 100 * sum(s >= t for s in id_s) >= 95 * len(id_s)]
    t = max(ok)
    return sum(s >= t for s in ood_s) / len(ood_s)


# ----------------------------------------------------------------------------- accuracy

def test_accuracy_labels_and_logits() -> None:
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


def test_accuracy_rejects_bad_input() -> None:
    with pytest.raises(MetricError, match="predictions and labels"):
        accuracy([0, 1], [0, 1, 1])
    with pytest.raises(MetricError, match="predictions: is empty"):
        accuracy([], [])
    with pytest.raises(MetricError, match="labels: class labels must be whole"):
        accuracy([0, 1], [0.0, 0.5])


# ----------------------------------------------------------------------------- OOD metrics

def test_perfect_separation() -> None:
    m = ood_metrics(torch.tensor([0.9, 0.8, 0.7]), np.array([0.1, 0.2]))
    assert m["auroc"] == 1.0
    assert m["fpr_at_95_tpr"] == 0.0
    assert m["aupr_in"] == 1.0 and m["aupr_out"] == 1.0
    assert m["detection_accuracy"] == 1.0


def test_reversed_separation() -> None:
    m = ood_metrics([0.1, 0.2, 0.3], [0.8, 0.9])
    assert m["auroc"] == 0.0
    assert m["fpr_at_95_tpr"] == 1.0
    # The accept-everything threshold is as good as it gets: (1 + 1 - 1) / 2.
    assert m["detection_accuracy"] == 0.5


def test_random_scores_auroc_near_half() -> None:
    rng = np.random.default_rng(0)
    m = ood_metrics(rng.normal(size=20_000), rng.normal(size=20_000))
    assert abs(m["auroc"] - 0.5) < 0.02
    assert abs(m["fpr_at_95_tpr"] - 0.95) < 0.02


def test_hand_case_curves_and_threshold() -> None:
    # Ranked: 4 I, 3 I, 2 O, 1 I, 0 O.
    id_s, ood_s = [4.0, 3.0, 1.0], [2.0, 0.0]
    assert auroc(id_s, ood_s) == pytest.approx(5 / 6)  # 5 of 6 pairs ordered correctly
    # AP(ID): recall steps of 1/3 at precisions 1, 1, 3/4.
    assert aupr_in(id_s, ood_s) == pytest.approx(1 / 3 + 1 / 3 + 1 / 3 * 3 / 4)
    # AP(OOD) on negated scores, ranked 0 O, 1 I, 2 O, 3 I, 4 I: steps 1/2 at 1 and 2/3.
    assert aupr_out(id_s, ood_s) == pytest.approx(1 / 2 + 1 / 2 * 2 / 3)
    # Best threshold 3: TPR 2/3, FPR 0.
    assert detection_accuracy(id_s, ood_s) == pytest.approx((2 / 3 + 1) / 2)
    m = ood_metrics(id_s, ood_s, threshold=2.0)  # accepts 4, 3 (ID) and 2 (OOD)
    assert m["accuracy"] == pytest.approx((2 + 1) / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["fpr"] == 0.5 and m["tnr"] == 0.5
    assert tpr_at_threshold(id_s, 3.0) == pytest.approx(2 / 3)  # >= is inclusive
    assert fpr_at_threshold(ood_s, 2.0) == 0.5


def test_threshold_accepting_nothing_has_nan_precision() -> None:
    m = threshold_metrics([1.0, 2.0], [0.0], threshold=5.0)
    assert math.isnan(m["precision"])
    assert m["recall"] == 0.0 and m["accuracy"] == pytest.approx(1 / 3)


def test_fpr95_tie_at_the_cut_counts_tied_ood() -> None:
    # ID 1..20: accepting 19 of 20 needs threshold 2; the two OOD scores equal to 2 are
    # accepted too (score >= threshold), 1 and 0.5 are not.
    assert fpr_at_tpr(np.arange(1.0, 21.0), [2.0, 2.0, 1.0, 0.5]) == 0.5


def test_fpr95_tied_id_group_straddling_the_cut() -> None:
    # 17 ID at 10 and 3 at 5: TPR jumps from 0.85 to 1.0, so the threshold is 5 (no
    # interpolation to exactly 95%); OOD 5 and 10 are accepted.
    id_s = [10.0] * 17 + [5.0] * 3
    assert fpr_at_tpr(id_s, [5.0, 4.0, 10.0, 0.0]) == 0.5
    assert fpr_at_tpr(id_s, [5.0, 4.0, 10.0, 0.0], tpr=0.85) == 0.25


def test_fpr95_exactly_95_percent_is_enough() -> None:
    # 19 of 20 ID above every OOD score: threshold 1 reaches TPR 0.95 exactly with FPR 0.
    assert fpr_at_tpr([1.0] * 19 + [-5.0], [0.0, 0.5]) == 0.0


def test_roc_curve_arrays_shape_and_ends() -> None:
    fpr, tpr, thr = roc_curve_arrays([3.0, 2.0, 2.0], [2.0, 1.0])
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(thr) < 0)
    assert len(fpr) == len(tpr) == len(thr) == 4  # inf and the 3 distinct scores


@pytest.mark.parametrize(("id_s", "ood_s", "match"), [
    ([[0.1, 0.2]], [0.1], "id_scores: expected a 1-D"),
    ([0.1], [], "ood_scores: is empty"),
    ([0.1, float("nan")], [0.2], "id_scores: contains NaN"),
    ([0.1], ["a"], "ood_scores: expected numbers"),
])
def test_ood_metrics_rejects_bad_input(id_s: object, ood_s: object, match: str) -> None:
    with pytest.raises(MetricError, match=match):
        ood_metrics(id_s, ood_s)


def test_bad_threshold_and_tpr() -> None:
    with pytest.raises(MetricError, match="threshold: is NaN"):
        ood_metrics([1.0], [0.0], threshold=float("nan"))
    with pytest.raises(MetricError, match="tpr: must lie in"):
        fpr_at_tpr([1.0], [0.0], tpr=0.0)


@settings(max_examples=60, deadline=None)
@given(int_scores, int_scores)
def test_auroc_and_fpr95_match_brute_force(id_s: list[int], ood_s: list[int]) -> None:
    assert auroc(id_s, ood_s) == pytest.approx(brute_auroc(id_s, ood_s))
    assert fpr_at_tpr(id_s, ood_s) == pytest.approx(brute_fpr95(id_s, ood_s))


@settings(max_examples=60, deadline=None)
@given(int_scores, int_scores)
def test_swapping_roles_mirrors_auroc(id_s: list[int], ood_s: list[int]) -> None:
    assert auroc(id_s, ood_s) == pytest.approx(1.0 - auroc(ood_s, id_s))
    # AUPR-Out is AUPR-In of the swapped, negated problem.
    assert aupr_out(id_s, ood_s) == pytest.approx(
        aupr_in([-s for s in ood_s], [-s for s in id_s]))


@settings(max_examples=60, deadline=None)
@given(int_scores, int_scores)
def test_metrics_invariant_to_monotone_transform(id_s: list[int], ood_s: list[int]) -> None:
    # x -> x^3 + 7 is strictly increasing and exact on small integers.
    def f(v: list[int]) -> list[float]:
        return [float(x) ** 3 + 7.0 for x in v]

    a, b = ood_metrics(id_s, ood_s), ood_metrics(f(id_s), f(ood_s))
    assert a == pytest.approx(b)


# ----------------------------------------------------------------------------- ECE

def test_ece_four_sample_hand_case() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 1])
    # 10 bins: conf 0.9 -> (0.8, 0.9], 0.8 -> (0.7, 0.8], 0.7 -> (0.6, 0.7], 0.55 -> (0.5, 0.6].
    # Each bin holds one sample: |acc - conf| = 0.1, 0.8, 0.3, 0.45.
    assert ece(probs, labels, n_bins=10) == pytest.approx((0.1 + 0.8 + 0.3 + 0.45) / 4)
    # 2 bins: 0.55 and 0.7/0.8/0.9 all share (0.5, 1]: acc 3/4, mean conf 2.95/4.
    assert ece(probs, labels, n_bins=2) == pytest.approx(abs(3 / 4 - 2.95 / 4))


def test_ece_bins_are_right_closed() -> None:
    # Confidence exactly 0.5 belongs to [0, 0.5] with 2 bins: bins {0.5: right} and
    # {0.9: wrong} give (|1 - 0.5| + |0 - 0.9|) / 2; one shared bin would give 0.2.
    probs, labels = np.array([[0.5, 0.5], [0.9, 0.1]]), np.array([0, 1])
    assert ece(probs, labels, n_bins=2) == pytest.approx(0.7)


def test_ece_perfectly_calibrated_and_torch_input() -> None:
    probs = torch.tensor([[0.5, 0.5]] * 4)  # argmax -> class 0; half the labels are 0
    assert ece(probs, torch.tensor([0, 1, 0, 1])) == pytest.approx(0.0)


def test_ece_rejects_bad_input() -> None:
    with pytest.raises(MetricError, match="rows must sum to 1"):
        ece(np.array([[0.2, 0.2]]), [0])
    with pytest.raises(MetricError, match="values must lie in"):
        ece(np.array([[3.0, -2.0]]), [0])
    with pytest.raises(MetricError, match="labels: class 2 is out of range"):
        ece(np.array([[0.5, 0.5]]), [2])
    with pytest.raises(MetricError, match="n_bins"):
        ece(np.array([[0.5, 0.5]]), [0], n_bins=0)


# ----------------------------------------------------------------------------- reject option

def test_reject_option_hand_case() -> None:
    pred = [0, 1, 2, 0, 1]
    labels = [0, 1, 1, 1, 1]
    id_accepted = [True, True, True, False, False]  # accepted: right, right, wrong
    ood_accepted = np.array([1, 0, 0])
    m = reject_option_metrics(pred, labels, id_accepted, ood_accepted)
    assert m["coverage"] == pytest.approx(3 / 5)
    assert m["selective_accuracy"] == pytest.approx(2 / 3)
    assert m["overall_accuracy"] == pytest.approx(2 / 5)
    assert m["id_silent_failure_rate"] == pytest.approx(1 / 5)
    assert m["ood_acceptance_rate"] == pytest.approx(1 / 3)
    assert m["silent_failure_rate"] == pytest.approx((1 + 1) / (5 + 3))


def test_reject_option_nothing_accepted() -> None:
    m = reject_option_metrics([0, 1], [0, 1], [False, False], [False])
    assert m["coverage"] == 0.0 and math.isnan(m["selective_accuracy"])
    assert m["silent_failure_rate"] == 0.0


def test_reject_option_rejects_bad_input() -> None:
    with pytest.raises(MetricError, match="id_pred and id_accepted"):
        reject_option_metrics([0, 1], [0, 1], [True], [False])
    with pytest.raises(MetricError, match="ood_accepted: expected booleans"):
        reject_option_metrics([0], [0], [True], [2])
    with pytest.raises(MetricError, match="ood_accepted: is empty"):
        reject_option_metrics([0], [0], [True], [])
