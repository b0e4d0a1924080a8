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
from basin.robustness.records import select, value_of

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
    result = detector_robustness(det, x_id, x_ood, settings, id_name="toy", ood_name="far")
    recs = result.records
    assert (result.n_id, result.n_ood) == (40, 40)

    def v(**where: object) -> float:
        value = value_of(recs, **where)
        assert value is not None, where
        return value

    def auroc(side: str, eps: float) -> float:
        found = [r for r in select(recs, attack="pgd", epsilon=eps, side=side, metric="auroc")]
        assert len(found) == 1
        return found[0].value  # type: ignore[return-value]

    clean = v(condition="clean", dataset="far", metric="auroc")
    correct_clean = v(condition="clean", metric="detection_accuracy")
    for eps in (1 / 255, 16 / 255):
        assert auroc("both", eps) <= auroc("ood", eps) + 1e-12 <= clean + 2e-12
        both = select(recs, attack="pgd", epsilon=eps, side="both", metric="detection_accuracy")
        assert all(r.value <= correct_clean for r in both)  # type: ignore[operator]
    assert v(condition="clean", dataset="toy", metric="grad_nonzero_fraction") == 1.0
    assert sum("eps=0 reproduces clean: OK" in f for f in result.sanity) == 2
    # a bigger ball gives the attacker more: the linear model's energy is easy to move
    assert auroc("both", 16 / 255) < auroc("both", 1 / 255)
    assert auroc("both", 16 / 255) < 0.5 < clean
    # the black-box check runs at the largest epsilon only, on the first square_n inputs
    square = select(recs, attack="square")
    assert {r.epsilon for r in square} == {16 / 255}
    assert all(r.condition.endswith(":first=10") and r.side == "both" for r in square)
    pgd_subset = [r for r in select(recs, attack="pgd", metric="detection_accuracy")
                  if r.condition.endswith(":first=10")]
    assert len(pgd_subset) == 1
    assert v(attack="square", metric="detection_accuracy") >= pgd_subset[0].value
    assert any(f.startswith("16/255: ") and "black-box (square) does not beat white-box: OK" in f
               for f in result.sanity)


def test_records_say_which_side_was_attacked() -> None:
    model = linear_model(seed=1)
    det = MSPDetector(model)
    x_id, x_ood = id_and_ood(model)
    det.threshold = float(det.score_batches(x_id).quantile(0.05))
    recs = detector_robustness(det, x_id, x_ood, RobustnessSettings(
        epsilons=(4 / 255,), steps=2, square_n=0), id_name="toy", ood_name="far").records
    for r in recs:
        assert (r.side == "none") == (r.condition == "clean") == (r.attack == "none")
        assert (r.epsilon == 0.0) == (r.side == "none")
        # the ID rejection rate is about the ID set, every other metric about the OOD set
        assert r.dataset == ("toy" if r.metric in ("id_rejection_rate",
                                                   "grad_nonzero_fraction") else "far")
    sides = {r.side: r.condition for r in recs if r.attack == "pgd"}
    assert sides == {"ood": "pgd:accept-ood:4/255:steps=2", "id": "pgd:reject-id:4/255:steps=2",
                     "both": "pgd:reject-id+accept-ood:4/255:steps=2"}
    # one value per cell: the metrics a table pivots on are unique within the result
    keys = [(r.condition, r.dataset, r.side, r.metric) for r in recs]
    assert len(keys) == len(set(keys))


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
