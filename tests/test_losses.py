"""The attractor training loss (Eq. 4): terms against hand computations, weights, skipping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import basin.losses.attractor as attractor_module
from basin.losses import LossTerms, LossWeights, attractor_loss, run_stack
from basin.models.attractor import AttractorNet
from basin.models.layer_stack import LayerStack


def _linear_case() -> tuple[LayerStack, nn.Linear]:
    layer = nn.Linear(2, 2).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5]]))
        layer.bias.copy_(torch.tensor([0.5, -1.0]))
    return LayerStack([layer], ["linear"]), layer


def test_terms_equal_hand_computation_on_a_linear_map() -> None:
    stack, _ = _linear_case()
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, 1.0], [4.0, -1.0]], dtype=torch.float64)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0])
    weights = LossWeights(0.5, 0.25, 2.0)
    # stack(h) = W h + b = [1.5, -2.0] and [4.5, 0.0]
    mse = ((1.5 - 1) ** 2 + (-2 - 1) ** 2 + (4.5 - 4) ** 2 + (0 + 1) ** 2) / 4
    ce = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(1 / (1 + math.e))) / 2
    eigen = 0.5 * (1 + 4 + 1 + 0.25)  # J = W for every sample
    for method in ("exact", "exact-fast"):
        terms = attractor_loss(stack, h, target, logits, labels, weights, jacobian=method)
        assert terms.as_floats() == pytest.approx({
            "total": 0.5 * mse + 0.25 * eigen + 2.0 * ce, "reconstruction": mse,
            "eigen": eigen, "classification": ce}, rel=1e-12)


def test_gradient_of_the_eigen_term_is_the_weight() -> None:
    stack, layer = _linear_case()
    h = torch.rand(4, 2, dtype=torch.float64)
    logits = torch.zeros(4, 2, dtype=torch.float64)
    terms = attractor_loss(stack, h, h, logits, torch.zeros(4, dtype=torch.long),
                           LossWeights(0.0, 3.0, 0.0))
    (grad,) = torch.autograd.grad(terms.total, layer.weight)
    # d/dW of 3 * 1/2 ||W||_F^2
    torch.testing.assert_close(grad, 3.0 * layer.weight.detach())


def test_zero_eigen_weight_skips_the_jacobian(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return torch.ones(3, dtype=torch.float64)

    monkeypatch.setattr(attractor_module, "frobenius_sq_from_record", spy)
    stack, _ = _linear_case()
    h = torch.rand(3, 2, dtype=torch.float64)
    args = (stack, h, h, torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.long))
    terms = attractor_loss(*args, LossWeights.paper_baseline(), jacobian="exact")
    assert calls == []
    assert float(terms.eigen) == 0.0
    values = terms.as_floats()
    assert values["total"] == pytest.approx(0.99 * values["reconstruction"]
                                            + 0.01 * values["classification"])
    terms = attractor_loss(*args, LossWeights.paper_attractor(), jacobian="exact")
    assert calls == [1]
    assert float(terms.eigen) == 0.5


@pytest.mark.parametrize("method", ["exact-fast", "projection"])
def test_reusing_a_forward_record_gives_the_same_loss(method: str) -> None:
    torch.manual_seed(0)
    net = AttractorNet((12, 8, 5, 8, 12), n_classes=3).double()
    stack = net.autoencoder_stack()
    x = torch.rand(6, 12, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    record = run_stack(stack, x)
    logits = net.head(record.activations[len(net.encoder)])  # the bottleneck code
    torch.testing.assert_close(logits, net.logits(x))
    weights = LossWeights.paper_attractor()
    kw = {"jacobian": method, "projections": 2}
    with_record = attractor_loss(stack, x, x, logits, labels, weights, forward=record,
                                 generator=torch.Generator().manual_seed(1), **kw)
    without = attractor_loss(stack, x, x, logits, labels, weights,
                             generator=torch.Generator().manual_seed(1), **kw)
    assert with_record.as_floats() == pytest.approx(without.as_floats(), rel=1e-12)
    with pytest.raises(ValueError, match="forward"):
        attractor_loss(stack, x.clone(), x, logits, labels, weights, forward=record)


def test_loss_weights_validation_and_presets() -> None:
    assert LossWeights.paper_attractor() == LossWeights(0.988, 0.002, 0.01)
    assert LossWeights.paper_baseline().eigen == 0.0
    with pytest.raises(ValueError, match="eigen"):
        LossWeights(1.0, -0.1, 0.0)
    with pytest.raises(ValueError, match="reconstruction"):
        LossWeights(float("nan"), 0.0, 0.0)
    with pytest.raises(ValueError, match="classification"):
        LossWeights(1.0, 0.0, "0.1")  # type: ignore[arg-type]


def test_bad_arguments_raise() -> None:
    stack, _ = _linear_case()
    h = torch.rand(3, 2, dtype=torch.float64)
    logits = torch.zeros(3, 2, dtype=torch.float64)
    labels = torch.zeros(3, dtype=torch.long)
    w = LossWeights.paper_attractor()
    with pytest.raises(ValueError, match="target"):
        attractor_loss(stack, h, h[:, :1], logits, labels, w)
    with pytest.raises(ValueError, match="logits"):
        attractor_loss(stack, h, h, logits[:2], labels, w)
    with pytest.raises(ValueError, match="labels"):
        attractor_loss(stack, h, h, logits, labels.double(), w)
    with pytest.raises(ValueError, match="labels"):
        attractor_loss(stack, h, h, logits, labels + 2, w)
    with pytest.raises(ValueError, match="exact-fast"):
        attractor_loss(stack, h, h, logits, labels, w, jacobian="jvp")
    with pytest.raises(ValueError, match="weights"):
        attractor_loss(stack, h, h, logits, labels, (1.0, 0.0, 0.0))  # type: ignore[arg-type]


def test_loss_terms_as_floats() -> None:
    terms = LossTerms(torch.tensor(1.5, requires_grad=True), torch.tensor(0.25),
                      torch.tensor(0.0), torch.tensor(2.0))
    assert terms.as_floats() == {"total": 1.5, "reconstruction": 0.25, "eigen": 0.0,
                                 "classification": 2.0}
