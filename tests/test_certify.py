"""IBP certificates of the attractor system are sound: no attack escapes a certified ball."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from basin.detectors.pearson import pearson_correlation
from basin.losses.robust import id_attack_loss, similarity
from basin.models.attractor import AttractorNet
from basin.robustness.certify import certified_metrics, certify, pearson_bounds
from basin.training.data import TrainData, toy_split
from basin.training.robust import as_images, pgd_linf, train_robust
from basin.training.robust_config import RobustConfig
from basin.training.run import load_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = (784, 64, 32, 64, 784)
EPS = 0.004
# the score's interval bound is void (width 2) at EPS on this network; at 1e-4 it is
# informative (measured median width 0.26), which is where its soundness is tested
SCORE_EPS = 1e-4


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[AttractorNet, torch.Tensor,
                                                                torch.Tensor]:
    """A small network trained (plainly, 3 epochs) on the toy problem, and 200 test points."""
    data = TrainData(*toy_split("train", 784, 10), *toy_split("val", 784, 10),
                     *toy_split("test", 784, 10))
    config = RobustConfig(dataset="toy", widths=SMALL, epochs=3, id_steps=0, outlier_steps=0,
                          outlier_fraction=0.0, batch_size=64, monitor_n=20, epsilon=0.01)
    out = Path(tmp_path_factory.mktemp("cert")) / "run"
    train_robust(config, data, None, out, log=None)
    return load_run(out).net, as_images(data.test_x), data.test_y


def test_pearson_bounds_contain_random_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    lo_x = torch.rand(50, 30, generator=g) * 0.8
    lo_y = torch.rand(50, 30, generator=g) * 0.8
    box_x, box_y = (lo_x, lo_x + 0.1), (lo_y, lo_y + 0.2)
    low, high = pearson_bounds(box_x, box_y)
    for _ in range(200):
        x = lo_x + 0.1 * torch.rand(50, 30, generator=g)
        y = lo_y + 0.2 * torch.rand(50, 30, generator=g)
        r = pearson_correlation(x, y)
        assert bool((r >= low - 1e-6).all()) and bool((r <= high + 1e-6).all())
    # a degenerate point box: exactly the value at that point
    same_low, same_high = pearson_bounds((lo_x, lo_x), (lo_y, lo_y))
    assert torch.allclose(same_low, pearson_correlation(lo_x, lo_y), atol=1e-5)
    assert torch.allclose(same_high, same_low, atol=1e-5)


def test_no_attack_escapes_a_certified_ball(trained: tuple) -> None:
    net, x, y = trained
    cert = certify(net, x, EPS, y=y)
    certified = cert.certified_correct
    # the measured bound is loose but not void at this radius on this network
    assert int(certified.sum()) >= 20, int(certified.sum())
    assert bool((cert.score_lower <= cert.score_upper).all())
    xs, ys = x[certified], y[certified]
    score_cert = certify(net, x, SCORE_EPS)
    assert float((score_cert.score_upper - score_cert.score_lower).median()) < 0.5
    violations = 0
    for seed in range(5):  # PGD-20 from 5 random starts on the class and on both score sides
        g = torch.Generator().manual_seed(seed)
        x_ce = pgd_linf(lambda t: id_attack_loss(net, t, ys, sim_weight=0.0), xs, EPS, 20,
                        EPS / 4, g)
        with torch.no_grad():
            violations += int((net.logits(x_ce).argmax(1) != ys).sum())
        for sign in (1.0, -1.0):
            x_s = pgd_linf(lambda t, s=sign: s * similarity(net, t), x, SCORE_EPS, 20,
                           SCORE_EPS / 4, g)
            with torch.no_grad():
                r = similarity(net, x_s)
            violations += int(((r < score_cert.score_lower - 1e-5)
                               | (r > score_cert.score_upper + 1e-5)).sum())
    assert violations == 0


def test_bounds_contain_values_at_random_points_and_metrics(trained: tuple) -> None:
    net, x, y = trained
    eps = SCORE_EPS
    # n = 1 is informative at this radius; n = 2 (G applied to G's box) is void but sound
    for steps in (1, 2):
        cert = certify(net, x, eps, y=y, score_steps=steps)
        if steps == 1:
            assert float((cert.score_upper - cert.score_lower).median()) < 0.5
        g = torch.Generator().manual_seed(1)
        for _ in range(20):
            point = (x + eps * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
            with torch.no_grad():
                r = similarity(net, point, steps)
                margin = net.logits(point).gather(1, y[:, None]) - net.logits(point)
                margin[torch.arange(len(y)), y] = float("inf")
            assert bool((r >= cert.score_lower - 1e-5).all())
            assert bool((r <= cert.score_upper + 1e-5).all())
            assert bool((margin.amin(1) >= cert.margin_lower - 1e-4).all())
    cert = certify(net, x, eps, y=y)
    ood = certify(net, torch.rand(100, 1, 28, 28, generator=g), eps)
    metrics = certified_metrics(cert, float(cert.score_lower.median()), {"noise": ood})
    assert 0.0 <= metrics["certified_accuracy"] <= metrics["certified_correct"] <= 1.0
    assert 0.0 <= metrics["noise:certified_auroc"] <= 1.0
    # epsilon 0 certifies exactly the clean decisions
    zero = certify(net, x, 0.0, y=y)
    with torch.no_grad():
        clean = net.logits(x).argmax(1) == y
        r0 = similarity(net, x)
    assert torch.equal(zero.certified_correct, clean)
    assert torch.allclose(zero.score_lower, r0, atol=1e-5)
