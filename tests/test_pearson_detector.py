"""Pearson correlation (Eq. 7) and the detector built on it (Eq. 6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from basin.detectors import DetectorError, PearsonDetector, pearson_correlation
from basin.models.attractor import AttractorNet, check_images
from basin.models.dynamics import iterate


def test_pearson_equals_numpy_corrcoef():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 4, 5, generator=gen, dtype=torch.float64)
    y = 0.3 * x + torch.rand(6, 1, 4, 5, generator=gen, dtype=torch.float64)
    r = pearson_correlation(x, y)
    expected = [np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]
                for a, b in zip(x, y, strict=True)]
    np.testing.assert_allclose(r.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert r.shape == (6,)


@settings(max_examples=40, deadline=None)
@given(scale=st.floats(0.01, 100.0), shift=st.floats(-10.0, 10.0), seed=st.integers(0, 1000))
def test_pearson_is_invariant_to_affine_rescaling(scale, shift, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 16, generator=gen, dtype=torch.float64)
    y = torch.rand(3, 16, generator=gen, dtype=torch.float64)
    base = pearson_correlation(x, y)
    torch.testing.assert_close(pearson_correlation(scale * x + shift, y), base)
    torch.testing.assert_close(pearson_correlation(x, -scale * y + shift), -base)


def test_pearson_of_identical_images_is_one():
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(pearson_correlation(x, x), torch.ones(5), rtol=0, atol=1e-6)
    assert (pearson_correlation(x, x) <= 1).all()
    torch.testing.assert_close(pearson_correlation(x, 1 - x), -torch.ones(5), rtol=0, atol=1e-6)


def test_constant_images_score_zero_with_finite_zero_gradients():
    varied = torch.rand(1, 784)
    black, white, grey = torch.zeros(1, 784), torch.ones(1, 784), torch.full((1, 784), 0.3)
    x = torch.cat([black, varied, white, grey, black, varied]).requires_grad_(True)
    y = torch.cat([varied, black, white, grey, grey, varied]).requires_grad_(True)
    r = pearson_correlation(x, y)
    # Either side constant (also both the same constant) -> 0; the last pair is identical.
    torch.testing.assert_close(r[:5], torch.zeros(5), rtol=0, atol=0)
    assert r[5].item() == pytest.approx(1.0, abs=1e-6)
    r.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert (x.grad[:5] == 0).all() and (y.grad[:5] == 0).all()


def test_pearson_gradcheck_in_float64():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.rand(3, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pearson_correlation, (x, y))


def test_pearson_rejects_bad_arguments():
    with pytest.raises(ValueError, match="same shape"):
        pearson_correlation(torch.rand(2, 4), torch.rand(2, 5))
    with pytest.raises(ValueError, match=">= 2 dims"):
        pearson_correlation(torch.rand(4), torch.rand(4))
    with pytest.raises(ValueError, match="floating"):
        pearson_correlation(torch.ones(2, 4, dtype=torch.int64), torch.ones(2, 4))


class Identity:
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return x


class PullToTemplate:
    """G(x) = t + a (x - t): a = 0 outputs the fixed template t, a = 0.5 contracts towards it."""

    def __init__(self, template: torch.Tensor, a: float = 0.0) -> None:
        self.template, self.a = template, a

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.template + self.a * (x - self.template)


def test_identity_model_scores_one():
    x = torch.rand(7, 1, 5, 5)
    for steps in (1, 3):
        score = PearsonDetector(Identity(), steps=steps).score(x)
        torch.testing.assert_close(score, torch.ones(7), rtol=0, atol=1e-6)


def test_template_model_separates_template_like_inputs():
    gen = torch.Generator().manual_seed(4)
    template = torch.rand(1, 64, generator=gen)
    like = (0.2 + 0.6 * template + 0.05 * torch.rand(10, 64, generator=gen)).clamp(0, 1)
    other = torch.rand(10, 64, generator=gen)
    detector = PearsonDetector(PullToTemplate(template))
    assert detector.threshold == 0.8
    like_scores, other_scores = detector.score(like), detector.score(other)
    assert like_scores.min() > 0.9 and other_scores.abs().max() < 0.5
    assert detector.predict(torch.cat([like, other])).tolist() == [True] * 10 + [False] * 10


def test_steps_and_tol_score_the_iterated_reconstruction():
    gen = torch.Generator().manual_seed(5)
    template = torch.rand(1, 32, generator=gen, dtype=torch.float64)
    model = PullToTemplate(template, a=0.5)
    x = torch.rand(4, 32, generator=gen, dtype=torch.float64)
    # G^n(x) = t + 0.5^n (x - t): more iterations pull the reconstruction further from x.
    scores = []
    for n in (1, 2, 4):
        expected = pearson_correlation(x, template + 0.5**n * (x - template))
        score = PearsonDetector(model, steps=n).score(x)
        torch.testing.assert_close(score, expected)
        scores.append(score)
    assert (scores[0] > scores[1]).all() and (scores[1] > scores[2]).all()
    converged = iterate(model.reconstruct, x, tol=1e-4, max_iter=50).final
    torch.testing.assert_close(PearsonDetector(model, tol=1e-4, max_iter=50).score(x),
                               pearson_correlation(x, converged))


def test_calibrate_accepts_the_requested_fraction():
    gen = torch.Generator().manual_seed(6)
    template = torch.rand(1, 64, generator=gen)
    noise = torch.linspace(0.0, 1.0, 200)[:, None]
    x_val = ((1 - noise) * template + noise * torch.rand(200, 64, generator=gen)).clamp(0, 1)
    detector = PearsonDetector(PullToTemplate(template))
    threshold = detector.calibrate(x_val, acceptance=0.95)
    assert detector.threshold == threshold
    assert detector.predict(x_val).sum().item() == 190
    scores = detector.score(x_val)
    assert threshold == pytest.approx(torch.sort(scores, descending=True).values[189].item())


def test_attractor_net_score_is_differentiable_and_model_goes_to_eval_mode():
    torch.manual_seed(7)
    net = AttractorNet((16, 8, 4, 8, 16), n_classes=3)
    net.train()
    detector = PearsonDetector(net, steps=2)
    assert not net.training
    x = torch.rand(5, 16, requires_grad=True)
    detector.score(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    torch.testing.assert_close(detector.score_batches(x.detach(), batch_size=2),
                               detector.score(x).detach())


def test_detector_rejects_bad_arguments():
    with pytest.raises(DetectorError, match="reconstruct"):
        PearsonDetector(object())
    with pytest.raises(DetectorError, match="not both"):
        PearsonDetector(Identity(), steps=3, tol=1e-3)
    with pytest.raises(ValueError, match="steps"):
        PearsonDetector(Identity(), steps=-1)
    with pytest.raises(ValueError, match="tol"):
        PearsonDetector(Identity(), tol=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        PearsonDetector(Identity()).score(torch.tensor([[0.5, float("nan")]]))
    detector = PearsonDetector(Identity(), threshold=None)
    with pytest.raises(DetectorError, match="threshold"):
        detector.predict(torch.rand(2, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_check_images_finds_any_non_finite_value_but_not_a_finite_overflow(bad):
    x = torch.rand(3, 1, 4, 4)
    x[1, 0, 2, 3] = bad
    with pytest.raises(ValueError, match="xin: contains NaN or infinite"):
        check_images(x, "xin", require_unit_range=False)
    both = torch.zeros(2, 4)
    both[0, 0], both[1, 1] = float("inf"), float("-inf")   # their sum is NaN, not inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_images(both, require_unit_range=False)
    huge = torch.full((2, 8), 3e38)                          # finite, but the sum overflows
    assert not torch.isfinite(huge.sum())
    check_images(huge, require_unit_range=False)
