"""Per-sample ||dG/dx||_F^2: the autograd reference, the structured exact method and the
random-projection estimator."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from basin.losses import JACOBIAN_METHODS, eigen_loss, jacobian_frobenius_sq, run_stack
from basin.losses.jacobian_fast import _plan, frobenius_sq_structured
from basin.models.attractor import OUTPUT_ACTIVATIONS, AttractorNet
from basin.models.layer_stack import LayerStack

DEFAULT_WIDTHS = (784, 500, 300, 300, 300, 500, 784)


def _stack(widths: list[int], acts: list[str], seed: int = 0,
           dtype: torch.dtype = torch.float64) -> LayerStack:
    torch.manual_seed(seed)
    layers = [nn.Linear(a, b).to(dtype) for a, b in pairwise(widths)]
    return LayerStack(layers, acts)


def _params(stack: LayerStack) -> list[torch.Tensor]:
    return [p for layer in stack.layers for p in layer.parameters()]


def _grads(stack: LayerStack, values: torch.Tensor) -> torch.Tensor:
    """All parameter gradients of ``values.sum()``, flattened into one vector."""
    grads = torch.autograd.grad(values.sum(), _params(stack), allow_unused=True,
                                materialize_grads=True)
    return torch.cat([g.reshape(-1) for g in grads])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_exact_equals_finite_difference_jacobian() -> None:
    stack = _stack([3, 4, 3], ["sigmoid", "relu"], seed=1)
    h = torch.rand(4, 3, dtype=torch.float64) + 0.1
    eps = 1e-6
    expected = []
    for x in h:
        cols = [(stack((x + eps * e)[None]) - stack((x - eps * e)[None]))[0] / (2 * eps)
                for e in torch.eye(3, dtype=torch.float64)]
        expected.append(torch.stack(cols, 1).square().sum())
    got = jacobian_frobenius_sq(stack, h, "exact")
    torch.testing.assert_close(got, torch.stack(expected).detach(), rtol=1e-7, atol=0)


@pytest.mark.parametrize("method", JACOBIAN_METHODS)
def test_linear_map_gives_frobenius_norm_of_its_weight(method: str) -> None:
    # a scaled rotation: ||W v||^2 = 4 for every unit v, so even one projection is exact
    c, s = 2 * math.cos(0.3), 2 * math.sin(0.3)
    layer = nn.Linear(2, 2).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[c, -s], [s, c]]))
    stack = LayerStack([layer], ["linear"])
    h = torch.randn(5, 2, dtype=torch.float64)
    got = jacobian_frobenius_sq(stack, h, method, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, torch.full((5,), 8.0, dtype=torch.float64))
    # eigen loss = 1/2 ||W||^2, whose gradient w.r.t. W is W itself
    (grad,) = torch.autograd.grad(eigen_loss(stack, h, "exact-fast"), layer.weight)
    torch.testing.assert_close(grad, layer.weight.detach())


@pytest.mark.parametrize("mode,dtype,tol", [("dense", torch.float64, 1e-10),
                                            ("sparse", torch.float64, 1e-10),
                                            ("auto", torch.float32, 1e-5)])
def test_exact_fast_equals_exact_on_default_network(mode: str, dtype: torch.dtype,
                                                    tol: float) -> None:
    torch.manual_seed(0)
    net = AttractorNet(DEFAULT_WIDTHS).to(dtype)
    stack = net.autoencoder_stack()
    h = torch.rand(2, 784, dtype=dtype)
    ref = jacobian_frobenius_sq(stack, h, "exact", chunk_size=1)
    fast = frobenius_sq_structured(run_stack(stack, h), chunk_size=1, mode=mode)
    assert _rel(fast.detach(), ref.detach()) < tol
    assert _rel(_grads(stack, fast), _grads(stack, ref)) < tol


@pytest.mark.parametrize("activation", OUTPUT_ACTIVATIONS)
@pytest.mark.parametrize("stage", [0, 1, 2])
def test_exact_fast_equals_exact_on_each_stage(stage: int, activation: str) -> None:
    torch.manual_seed(stage)
    net = AttractorNet(DEFAULT_WIDTHS, output_activation=activation).double()
    stack = net.stage_stack(stage)
    h = net.stage_input(torch.rand(2, 784, dtype=torch.float64), stage).detach()
    if activation == "clamp":
        h = h * 0.05  # keep some outputs inside (0, 1), where the clamp is not flat
    ref = jacobian_frobenius_sq(stack, h, "exact")
    assert float(ref.detach().min()) > 0
    ref_grads = _grads(stack, ref)
    for mode in ("dense", "sparse"):
        fast = frobenius_sq_structured(run_stack(stack, h), chunk_size=64, mode=mode)
        assert _rel(fast.detach(), ref.detach()) < 1e-10
        assert _rel(_grads(stack, fast), ref_grads) < 1e-10


@settings(max_examples=25, deadline=None)
@given(widths=st.lists(st.integers(1, 6), min_size=2, max_size=5),
       acts=st.lists(st.sampled_from(OUTPUT_ACTIVATIONS), min_size=4, max_size=4),
       mode=st.sampled_from(["dense", "sparse", "auto"]), seed=st.integers(0, 100),
       chunk=st.integers(1, 4))
def test_exact_fast_equals_exact_on_random_stacks(widths: list[int], acts: list[str],
                                                  mode: str, seed: int, chunk: int) -> None:
    stack = _stack(widths, acts[:len(widths) - 1], seed=seed)
    h = torch.rand(5, widths[0], dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    ref = jacobian_frobenius_sq(stack, h, "exact")
    fast = frobenius_sq_structured(run_stack(stack, h), chunk_size=chunk, mode=mode)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-12)


def test_plan_routes_the_deep_network_through_the_bottleneck() -> None:
    plan = _plan(DEFAULT_WIDTHS, (True,) * 6, 64)
    assert DEFAULT_WIDTHS[plan.split] == 300
    # the autograd Jacobian costs one backward pass (~1.3 M MAC) per output pixel
    forward_macs = sum(a * b for a, b in pairwise(DEFAULT_WIDTHS))
    assert plan.cost < 784 * forward_macs / 2
    # a one-hidden-layer stage with a linear output: W1 W1^T and W2^T W2 once per batch of 64,
    # then only the m^T K m quadratic form per sample
    linear = _plan((784, 500, 784), (True, False), 64)
    assert linear.split == 1
    assert linear.cost == 2 * 784 * 500**2 / 64 + 500**2


def test_projection_is_unbiased() -> None:
    torch.manual_seed(3)
    stack = _stack([6, 5, 4, 6], ["relu", "sigmoid", "linear"], seed=3)
    x = torch.rand(1, 6, dtype=torch.float64)
    exact = float(jacobian_frobenius_sq(stack, x, "exact").detach())
    draws = 2000
    # each row of the repeated batch gets its own direction: 2000 independent draws
    est = jacobian_frobenius_sq(stack, x.expand(draws, 6), "projection",
                                generator=torch.Generator().manual_seed(0)).detach()
    stderr = float(est.std()) / math.sqrt(draws)
    assert stderr > 0
    assert abs(float(est.mean()) - exact) < 4 * stderr
    # k projections average k draws: the same mean, a smaller spread
    est4 = jacobian_frobenius_sq(stack, x.expand(draws, 6), "projection", projections=4,
                                 generator=torch.Generator().manual_seed(1)).detach()
    assert abs(float(est4.mean()) - exact) < 4 * float(est4.std()) / math.sqrt(draws)
    assert float(est4.std()) < 0.75 * float(est.std())


def test_projection_is_reproducible_and_differentiable() -> None:
    stack = _stack([5, 4, 5], ["relu", "relu"], seed=4)
    h = torch.rand(3, 5, dtype=torch.float64)
    a = jacobian_frobenius_sq(stack, h, "projection", projections=2,
                              generator=torch.Generator().manual_seed(7))
    b = jacobian_frobenius_sq(stack, h, "projection", projections=2,
                              generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    grads = _grads(stack, a)
    first_weight = grads[: stack.layers[0].weight.numel()]
    assert float(first_weight.abs().sum()) > 0  # reaches the first layer's weights


def test_chunking_does_not_change_the_result() -> None:
    stack = _stack([7, 5, 3, 5, 7], ["relu"] * 4, seed=5)
    h = torch.rand(9, 7, dtype=torch.float64)
    for method in ("exact", "exact-fast"):
        whole = jacobian_frobenius_sq(stack, h, method, chunk_size=64)
        torch.testing.assert_close(jacobian_frobenius_sq(stack, h, method, chunk_size=2), whole)


def test_bad_arguments_raise() -> None:
    stack = _stack([3, 2, 3], ["relu", "linear"])
    h = torch.rand(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="exact-fast"):
        jacobian_frobenius_sq(stack, h, "hutchinson")
    with pytest.raises(ValueError, match="projections"):
        jacobian_frobenius_sq(stack, h, "projection", projections=0)
    with pytest.raises(ValueError, match="chunk_size"):
        jacobian_frobenius_sq(stack, h, chunk_size=0)
    with pytest.raises(ValueError, match=r"h: expected shape \(N, 3\)"):
        jacobian_frobenius_sq(stack, torch.rand(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="mode"):
        frobenius_sq_structured(run_stack(stack, h), 4, mode="fast")
    with pytest.raises(ValueError, match="empty batch"):
        eigen_loss(stack, h[:0])
