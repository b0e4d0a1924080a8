"""Iterated inference and attractor diagnostics on maps with known fixed points."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from basin.models.attractor import AttractorNet
from basin.models.dynamics import (
    attractor_report,
    is_fixed_point,
    iterate,
    jacobian_spectral_radius,
)

# Per-sample infinity norms of x_0 - 2c, chosen so that log2(E / tol) is far from an integer.
E0 = torch.tensor([0.3, 1.7, 5.0, 40.0], dtype=torch.float64)
TOL = 1e-3
C = torch.tensor([0.1, -0.2, 0.35], dtype=torch.float64)


def g(x: torch.Tensor) -> torch.Tensor:
    """A contraction with the fixed point 2C: x_k - 2C = 0.5^k (x_0 - 2C)."""
    return 0.5 * x + C


def start_points() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    direction = torch.rand(4, 3, generator=gen, dtype=torch.float64) * 2 - 1
    direction[:, 0] = 1.0  # every row has infinity norm exactly 1
    e0 = E0[:, None] * direction
    return 2 * C + e0, e0


def test_iterate_tol_stops_at_the_analytic_iteration_and_freezes_converged_samples():
    x0, e0 = start_points()
    # |x_k - x_{k-1}|_inf = 0.5^k E, so the first k with 0.5^k E < tol is floor(log2(E/tol))+1.
    expected = torch.tensor([math.floor(math.log2(e / TOL)) + 1 for e in E0.tolist()])
    assert expected.tolist() == [9, 11, 13, 16]
    result = iterate(g, x0, tol=TOL, max_iter=100, keep_trajectory=True)
    assert torch.equal(result.iterations, expected)
    assert result.converged.all()
    # A sample frozen at k must not have moved on while the others kept iterating.
    analytic = 2 * C + (0.5 ** expected.double())[:, None] * e0
    torch.testing.assert_close(result.final, analytic, rtol=0, atol=1e-12)
    assert len(result.trajectory) == 16 + 1
    torch.testing.assert_close(result.trajectory[5], 2 * C + 0.5**5 * e0, rtol=0, atol=1e-12)


def test_iterate_tol_respects_max_iter():
    x0, e0 = start_points()
    result = iterate(g, x0, tol=TOL, max_iter=10)
    assert result.iterations.tolist() == [9, 10, 10, 10]
    assert result.converged.tolist() == [True, False, False, False]
    torch.testing.assert_close(result.final[1:], 2 * C + 0.5**10 * e0[1:], rtol=0, atol=1e-12)


def test_iterate_fixed_steps():
    x0, e0 = start_points()
    for steps in (0, 1, 3):
        result = iterate(g, x0, steps=steps, keep_trajectory=True)
        torch.testing.assert_close(result.final, 2 * C + 0.5**steps * e0, rtol=0, atol=1e-12)
        assert result.iterations.tolist() == [steps] * 4
        assert result.iterations.dtype == torch.int64
        assert len(result.trajectory) == steps + 1
    torch.testing.assert_close(iterate(g, x0, steps=1).final, g(x0), rtol=0, atol=0)
    # Without a tolerance only an exactly unchanged sample counts as converged.
    fixed = torch.stack([2 * C, x0[0]])
    assert iterate(g, fixed, steps=2).converged.tolist() == [True, False]
    assert not iterate(g, fixed, steps=0).converged.any()


def test_iterate_is_differentiable():
    x0, _ = start_points()
    x = x0.clone().requires_grad_(True)
    iterate(g, x, steps=3).final.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 0.125))
    # In tol mode each sample's gradient is 0.5^(its own iteration count).
    x = x0.clone().requires_grad_(True)
    result = iterate(g, x, tol=TOL)
    result.final.sum().backward()
    expected = (0.5 ** result.iterations.double())[:, None].expand_as(x)
    torch.testing.assert_close(x.grad, expected)


def test_iterate_keeps_image_shape_and_handles_empty_batches():
    x = torch.rand(2, 1, 3, 3, dtype=torch.float64)
    result = iterate(lambda t: 0.5 * t, x, tol=1e-6)
    assert result.final.shape == x.shape
    empty = iterate(lambda t: 0.5 * t, x[:0], tol=1e-6)
    assert empty.final.shape == (0, 1, 3, 3) and empty.iterations.shape == (0,)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one"),
    ({"steps": 2, "tol": 0.1}, "exactly one"),
    ({"steps": -1}, "steps"),
    ({"steps": 1.5}, "steps"),
    ({"steps": True}, "steps"),
    ({"tol": 0.0}, "tol"),
    ({"tol": float("nan")}, "tol"),
    ({"tol": 0.1, "max_iter": 0}, "max_iter"),
])
def test_iterate_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        iterate(g, torch.zeros(2, 3, dtype=torch.float64), **kwargs)


def test_iterate_rejects_a_map_that_changes_shape():
    with pytest.raises(ValueError, match="changed the batch shape"):
        iterate(lambda t: t[:, :2], torch.zeros(2, 3), tol=0.1)


def test_is_fixed_point():
    x = torch.stack([2 * C, 2 * C + 0.01])  # g(x) - x = -(x - 2C)/2: 0 and 0.005
    assert is_fixed_point(g, x, 1e-3).tolist() == [True, False]
    assert is_fixed_point(g, x, 1e-2).tolist() == [True, True]
    with pytest.raises(ValueError, match="tol"):
        is_fixed_point(g, x, 0)


def full_jacobian_radius(net: AttractorNet, x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(len(x), -1)
    radii = []
    for row in flat:
        jac = torch.autograd.functional.jacobian(lambda v: net.reconstruct(v[None])[0], row)
        radii.append(torch.linalg.eigvals(jac).abs().max())
    return torch.stack(radii)


@pytest.mark.parametrize("widths, activation", [
    ((6, 5, 3, 5, 6), "relu"),        # narrowest at the bottleneck
    ((10, 3, 6, 3, 10), "sigmoid"),   # narrowest at the first hidden layer
    ((3, 8, 5, 8, 3), "linear"),      # narrowest at the output: no rotation
    ((6, 4, 6), "clamp"),
])
def test_spectral_radius_matches_the_full_jacobian(widths, activation):
    torch.manual_seed(1)
    net = AttractorNet(widths, n_classes=2, output_activation=activation).double()
    with torch.no_grad():
        for layer in [*net.encoder, *net.decoder]:
            layer.weight.mul_(2.0)  # push rho into the range where it matters (around 1)
            layer.bias.uniform_(0.0, 0.5)
    x = torch.rand(8, widths[0], dtype=torch.float64)
    fast = jacobian_spectral_radius(net, x, batch_size=3)
    reference = full_jacobian_radius(net, x)
    assert (reference > 0.01).sum() >= 4  # not a vacuous comparison of zeros
    torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-12)


def test_spectral_radius_accepts_images_and_checks_the_width():
    torch.manual_seed(2)
    net = AttractorNet((6, 4, 6), n_classes=2).double()
    x = torch.rand(3, 1, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(jacobian_spectral_radius(net, x),
                               jacobian_spectral_radius(net, x.reshape(3, 6)))
    with pytest.raises(ValueError, match="features"):
        jacobian_spectral_radius(net, torch.rand(3, 5, dtype=torch.float64))


X_STAR = torch.tensor([0.3, 0.6], dtype=torch.float64)


def linear_map_net(m: torch.Tensor, bias: float) -> AttractorNet:
    """G(x) = M (x - x*) + x* wherever x + bias > 0 (the ReLU stays active)."""
    net = AttractorNet((2, 2, 2), n_classes=2, output_activation="linear").double()
    with torch.no_grad():
        net.encoder[0].weight.copy_(torch.eye(2))
        net.encoder[0].bias.fill_(bias)
        net.decoder[0].weight.copy_(m)
        net.decoder[0].bias.copy_(X_STAR - m @ (X_STAR + bias))
    return net


POINTS = torch.stack([X_STAR, X_STAR + torch.tensor([0.01, -0.02], dtype=torch.float64),
                      X_STAR + torch.tensor([0.2, 0.1], dtype=torch.float64)])


def test_report_on_a_stable_fixed_point():
    m = torch.tensor([[0.5, 0.2], [0.0, 0.5]], dtype=torch.float64)  # eigenvalues 0.5, 0.5
    net = linear_map_net(m, bias=10.0)
    torch.testing.assert_close(jacobian_spectral_radius(net, POINTS),
                               torch.full((3,), 0.5, dtype=torch.float64))
    report = attractor_report(net, POINTS, tol=1e-3, max_iter=200, radius=0.1)
    # G(x) - x = (M - I)(x - x*): 0, (-0.009, 0.01) and (-0.08, -0.05).
    assert report.fixed_point.tolist() == [True, False, False]
    assert report.attractor.tolist() == [True, False, False]
    assert report.converged.all() and report.stable.all()
    rms = (POINTS - X_STAR).norm(dim=1) / math.sqrt(2)  # 0, 0.0158, 0.158
    torch.testing.assert_close(report.distance, rms, rtol=0, atol=2e-3)
    assert report.near_attractor.tolist() == [True, True, False]
    summary = report.summary()
    assert summary["fixed_point_fraction"] == pytest.approx(1 / 3)
    assert summary["stable_fraction"] == 1.0
    assert summary["near_attractor_fraction"] == pytest.approx(2 / 3)
    assert summary["rho_limit_median"] == pytest.approx(0.5)
    assert summary["iterations_median"] >= 1


def test_report_on_an_unstable_fixed_point():
    m = torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=torch.float64)  # eigenvalues 2, 0.5
    net = linear_map_net(m, bias=1000.0)
    report = attractor_report(net, POINTS, tol=1e-3, max_iter=10)
    torch.testing.assert_close(report.rho_input, torch.full((3,), 2.0, dtype=torch.float64))
    assert report.fixed_point.tolist() == [True, False, False]
    assert not report.attractor.any()
    # x* itself stays put; the perturbed points run away along the eigenvalue-2 direction.
    assert report.converged.tolist() == [True, False, False]
    assert report.iterations.tolist() == [1, 10, 10]
    assert not report.stable.any()
    assert torch.isnan(report.rho_limit[1:]).all()
    summary = report.summary()
    assert summary["stable_fraction"] == 0.0 and summary["attractor_fraction"] == 0.0
    assert summary["rho_limit_mean"] == pytest.approx(2.0)
    assert summary["distance_mean"] == pytest.approx(0.0, abs=1e-12)


def test_report_rejects_bad_input():
    net = AttractorNet((2, 2, 2), n_classes=2)
    with pytest.raises(ValueError, match="non-empty"):
        attractor_report(net, torch.zeros(0, 2))
    with pytest.raises(ValueError, match="NaN"):
        attractor_report(net, torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="AttractorNet"):
        jacobian_spectral_radius(nn.Linear(2, 2), torch.zeros(1, 2))  # type: ignore[arg-type]
