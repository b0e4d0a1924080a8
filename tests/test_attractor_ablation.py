"""The attractor ablation: the new training reading (MSE reduction), the grid and its tables."""

from __future__ import annotations

import pytest
import torch

from basin.losses import LossWeights, attractor_loss, run_stack
from basin.models import AttractorNet
from basin.training import TrainConfig


def _batch(seed: int = 0) -> tuple[AttractorNet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    net = AttractorNet((12, 8, 4, 8, 12), 3, "sigmoid")
    return net, torch.rand(5, 12), torch.tensor([0, 1, 2, 0, 1])


def test_sum_reduction_is_out_features_times_the_mean() -> None:
    net, x, y = _batch()
    stack = net.autoencoder_stack()
    weights = LossWeights(1.0, 0.5, 0.1)
    terms = {}
    for reduction in ("mean", "sum"):
        forward = run_stack(stack, x)
        terms[reduction] = attractor_loss(stack, x, x, net.logits(x), y, weights,
                                          forward=forward, mse_reduction=reduction)
    by_hand = ((net.reconstruct(x) - x) ** 2).sum(dim=1).mean()
    assert float(terms["sum"].reconstruction) == pytest.approx(float(by_hand), rel=1e-6)
    assert float(terms["sum"].reconstruction) == pytest.approx(
        12 * float(terms["mean"].reconstruction), rel=1e-6)
    # the other terms do not depend on the reduction
    assert float(terms["sum"].eigen) == pytest.approx(float(terms["mean"].eigen), rel=1e-6)
    assert float(terms["sum"].classification) == pytest.approx(
        float(terms["mean"].classification), rel=1e-6)


def test_mse_reduction_is_checked_and_defaults_to_mean() -> None:
    assert TrainConfig().mse_reduction == "mean"
    assert TrainConfig.from_dict({"mse_reduction": "sum"}).mse_reduction == "sum"
    with pytest.raises(ValueError, match="mse_reduction"):
        TrainConfig(mse_reduction="median")
    net, x, y = _batch()
    with pytest.raises(ValueError, match="mse_reduction"):
        attractor_loss(net.autoencoder_stack(), x, x, net.logits(x), y,
                       LossWeights(1.0, 0.0, 0.1), mse_reduction="max")
