"""Detector robustness records: PGD and Square through a detector's own score."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from basin.detectors import EnergyDetector, MSPDetector
from basin.models.feature_classifier import LinearHeadClassifier
from basin.robustness.detector_level import (
    RobustnessSettings,
    attack_detector,
    detector_robustness,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def linear_model(seed: int = 0) -> LinearHeadClassifier:
    torch.manual_seed(seed)
    return LinearHeadClassifier(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()


def id_and_ood(model: LinearHeadClassifier) -> tuple[torch.Tensor, torch.Tensor]:
    """ID inputs: images the model is most confident on; OOD: the least confident."""
    pool = torch.rand(400, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    order = MSPDetector(model).score_batches(pool).argsort(descending=True)
    return pool[order[:40]], pool[order[-40:]]


def test_records_follow_the_threat_model_and_only_hurt_the_detector() -> None:
    model = linear_model()
    det = EnergyDetector(model)
    x_id, x_ood = id_and_ood(model)
    det.threshold = float(det.score_batches(x_id).quantile(0.05))
    settings = RobustnessSettings(epsilons=(1 / 255, 16 / 255), steps=10, square_n=10,
                                  square_queries=50)
    records = detector_robustness(det, x_id, x_ood, settings)
    assert [r["epsilon"] for r in records] == [1 / 255, 16 / 255]
    weak, strong = records
    for r in records:
        assert r["auroc_both_attacked"] <= r["auroc_ood_attacked"] + 1e-12 <= \
            r["auroc_clean"] + 2e-12
        assert r["correct_attacked"] <= r["correct_clean"]
        assert r["grad_nonzero"] == 1.0
        assert "eps=0 reproduces clean: OK" in r["sanity"]
    # a bigger ball gives the attacker more: the linear model's energy is easy to move
    assert strong["auroc_both_attacked"] < weak["auroc_both_attacked"]
    assert strong["auroc_both_attacked"] < 0.5 < strong["auroc_clean"]
    # the black-box check runs at the largest epsilon only, on the first square_n inputs
    assert "square_correct" not in weak and strong["square_n"] == 10
    assert strong["square_correct"] >= strong["pgd_correct_on_square_subset"]
    assert any("black-box (square) does not beat white-box: OK" in f
               for f in strong["sanity"])


def test_bf16_search_moves_scores_like_fp32() -> None:
    model = linear_model(seed=2)
    det = MSPDetector(model, threshold=0.9)
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    eps = 4 / 255
    clean = det.score_batches(x)
    for precision in ("fp32", "bf16"):
        x_adv = attack_detector(det, "accept-ood", x, eps, steps=5, seed=0,
                                precision=precision)
        assert x_adv.dtype == torch.float32
        assert (x_adv - x).abs().max() <= eps + 1e-6
        assert (det.score_batches(x_adv) > clean).all(), precision


def test_bad_arguments_are_named() -> None:
    det = MSPDetector(linear_model())
    x = torch.rand(4, 3, 8, 8)
    with pytest.raises(ValueError, match="threshold"):
        detector_robustness(det, x, x, RobustnessSettings())
    det.threshold = 0.5
    with pytest.raises(ValueError, match="objective_name"):
        attack_detector(det, "accept-id", x, 0.1, steps=1, seed=0)
    with pytest.raises(ValueError, match="kind"):
        attack_detector(det, "accept-ood", x, 0.1, steps=1, seed=0, kind="cw")
