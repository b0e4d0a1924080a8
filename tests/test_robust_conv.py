"""The convolutional attractor variant and the correct-or-reject objective (issue 13)."""

from __future__ import annotations

import math
from pathlib import Path

import click
import pytest
import torch

from basin.cli.reproduce import parse_robust_runs
from basin.data.outliers import OutlierPool
from basin.losses.robust import (
    RobustWeights,
    correct_or_reject,
    frobenius_sq_jvp,
    id_attack_loss,
    robust_loss,
    silent_log_prob,
    similarity,
)
from basin.models.attractor import AttractorNet
from basin.models.conv_attractor import ConvAttractorNet
from basin.models.factory import build_attractor
from basin.reproductions.robust_attractor.protocol import RobustPlan
from basin.robustness.certify import certify, decoder_box, encoder_box, input_box
from basin.training.robust import as_images, pgd_linf, train_robust
from basin.training.robust_config import ROBUST_PRESETS, RobustConfig
from basin.training.run import load_run
from basin.utils.io import CheckpointError
from toy_attractor import toy_train_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_conv_net_shapes_and_config_round_trip() -> None:
    torch.manual_seed(0)
    net = ConvAttractorNet((4, 8), 16)
    x = torch.rand(5, 1, 28, 28)
    recon, logits = net(x)
    assert recon.shape == x.shape and logits.shape == (5, 10)
    assert net.reconstruct(x.reshape(5, 784)).shape == (5, 784)
    # clamp output: every reconstruction lies in the image box
    assert float(recon.min()) >= 0.0 and float(recon.max()) <= 1.0
    twin = build_attractor(net.config())
    twin.load_state_dict(net.state_dict())
    assert torch.equal(twin.logits(x), net.logits(x))
    assert isinstance(build_attractor({"widths": [784, 8, 784]}), AttractorNet)


def test_conv_net_and_factory_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="784"):
        ConvAttractorNet((4, 8), 16).logits(torch.rand(2, 1, 20, 20))
    with pytest.raises(ValueError, match="channels"):
        ConvAttractorNet((4, 8, 16), 16)
    with pytest.raises(ValueError, match="arch"):
        build_attractor({"arch": "transformer"})
    with pytest.raises(ValueError, match="arch"):
        RobustConfig(arch="transformer")
    with pytest.raises(ValueError, match="id_attack"):
        RobustConfig(id_attack="fgsm")
    with pytest.raises(ValueError, match="cor_temperature"):
        RobustWeights(cor_temperature=0.0)


def test_jvp_estimator_is_unbiased_for_the_conv_jacobian() -> None:
    torch.manual_seed(0)
    net = ConvAttractorNet((3, 4), 8, output_activation="linear")
    x = torch.rand(1, 1, 28, 28)
    jac = torch.autograd.functional.jacobian(
        lambda t: net.reconstruct(t.reshape(1, 1, 28, 28)).flatten(), x.flatten())
    exact = float(jac.pow(2).sum())
    gen = torch.Generator().manual_seed(1)
    draws = torch.stack([frobenius_sq_jvp(net.reconstruct, x, gen)[0] for _ in range(1500)])
    mean, se = float(draws.mean()), float(draws.std()) / math.sqrt(len(draws))
    assert abs(mean - exact) < 4 * se, (mean, exact, se)
    assert se < 0.1 * exact   # the test has power: 4 SE is under 40% of the value


def test_correct_or_reject_matches_hand_computed_values() -> None:
    # two classes, logits (0, log 3): p(class 1) = 3/4
    logits = torch.tensor([[0.0, math.log(3.0)]] * 3)
    y = torch.tensor([1, 0, 0])
    r = torch.tensor([0.9, 0.9, 0.5])
    loss = correct_or_reject(logits, r, y, threshold=0.7, temperature=0.1)
    reject_accepted = float(torch.sigmoid(torch.tensor(-2.0)))   # r 0.9: mostly accepted
    reject_low = float(torch.sigmoid(torch.tensor(2.0)))         # r 0.5: mostly rejected
    expected = [-math.log(0.75 + 0.25 * reject_accepted),
                -math.log(0.25 + 0.75 * reject_accepted),
                -math.log(0.25 + 0.75 * reject_low)]
    assert loss.tolist() == pytest.approx(expected, rel=1e-5)
    # wrong and accepted is the costly case; wrong but rejected costs little
    assert loss[1] > 3 * loss[2]
    # the log form agrees with the direct one: log P(silent) = log((1 - p_y) a)
    log_silent = silent_log_prob(logits, r, y, 0.7, 0.1)
    assert torch.exp(log_silent).tolist() == pytest.approx(
        [0.25 * (1 - reject_accepted), 0.75 * (1 - reject_accepted), 0.75 * (1 - reject_low)],
        rel=1e-5)


def test_cor_attack_finds_wrong_and_accepted_inputs() -> None:
    """The training attack's objective (log P(silent failure)) has a gradient even where every
    input is rejected at initialisation (the probability itself is 0 there), and an ascent
    step raises it, as the inner maximisation must."""
    torch.manual_seed(0)
    net = ConvAttractorNet((4, 8), 16)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    weights = RobustWeights(sim_id=0.0, sim_clean=2.0, cor=1.0)
    x_var = x.clone().requires_grad_(True)
    loss = id_attack_loss(net, x_var, y, cor=weights)
    (grad,) = torch.autograd.grad(loss.sum(), x_var)
    assert float((grad != 0).float().mean()) > 0.5
    stepped = (x + 0.01 * grad.sign()).clamp(0, 1)
    assert float(id_attack_loss(net, stepped, y, cor=weights).sum()) > float(loss.sum())


def test_robust_loss_on_conv_net_is_the_weighted_sum_of_its_terms() -> None:
    torch.manual_seed(0)
    net = ConvAttractorNet((4, 8), 16)
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    o_adv = torch.rand(3, 1, 28, 28)
    weights = RobustWeights(sim_id=0.0, sim_clean=2.0, cor=1.0, eigen=0.5)
    terms = robust_loss(net, x, x_adv, y, o_adv, weights,
                        generator=torch.Generator().manual_seed(0))
    names = ("ce_clean", "ce_adv", "recon_clean", "recon_adv", "sim_id", "sim_clean", "cor",
             "eigen", "sim_ood", "oe_head")
    expected = sum(getattr(weights, k) * float(terms.terms[k]) for k in names)
    assert float(terms.total) == pytest.approx(expected, rel=1e-5)
    terms.total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_conv_robust_run_trains_saves_and_loads(tmp_path: Path) -> None:
    data = toy_train_data(200)
    pool = OutlierPool(as_images(data.train_x), data.train_y)
    config = ROBUST_PRESETS["attractor-robust-conv"].replace(
        dataset="toy", channels=(4, 8), code=32, epochs=2, ramp_epochs=1, epsilon=0.1,
        batch_size=50, monitor_n=20, id_steps=2, outlier_steps=1)
    metrics = train_robust(config, data, pool, tmp_path / "conv", log=None)
    loaded = load_run(tmp_path / "conv")
    assert isinstance(loaded.net, ConvAttractorNet)
    x = as_images(data.test_x)
    with torch.no_grad():
        accuracy = float((loaded.net.logits(x).argmax(1) == data.test_y).float().mean())
    assert accuracy == pytest.approx(metrics["test_accuracy"])
    with pytest.raises(CheckpointError, match="AttractorNet"):
        loaded.mlp()


def test_parse_robust_runs() -> None:
    assert parse_robust_runs(("runs/a", "robust-conv=runs/b")) == {
        "robust": "runs/a", "robust-conv": "runs/b"}
    with pytest.raises(click.BadParameter, match="twice"):
        parse_robust_runs(("runs/a", "robust=runs/b"))
    with pytest.raises(click.BadParameter, match="SYSTEM=DIR"):
        parse_robust_runs(("=runs/a",))


def test_conv_interval_bounds_are_sound_and_exact_on_a_point() -> None:
    """IBP through the convolutional network: at radius 0 the boxes are the values; at a
    small radius every random point of the ball and a PGD point on the score stay inside."""
    torch.manual_seed(0)
    net = ConvAttractorNet((4, 8), 16, output_activation="sigmoid").double()
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        code_lo, code_hi = encoder_box(net, input_box(x, 0.0))
        assert torch.allclose(code_lo, net.encode(x)) and torch.allclose(code_hi, code_lo)
        rec_lo, _ = decoder_box(net, (code_lo, code_hi))
        assert torch.allclose(rec_lo, net.reconstruct(x).flatten(1))
    eps = 0.002
    cert = certify(net, x.float(), eps)
    (code_lo, code_hi) = encoder_box(net, input_box(x, eps))
    g = torch.Generator().manual_seed(1)
    points = [(x + eps * (2 * torch.rand(x.shape, generator=g, dtype=torch.float64) - 1))
              .clamp(0, 1) for _ in range(30)]
    points.append(pgd_linf(lambda t: similarity(net, t), x, eps, 10, eps / 4, g))
    for point in points:
        with torch.no_grad():
            code = net.encode(point)
            r = similarity(net, point).float()
        assert bool(((code >= code_lo - 1e-9) & (code <= code_hi + 1e-9)).all())
        assert bool(((r >= cert.score_lower - 1e-5) & (r <= cert.score_upper + 1e-5)).all())
    assert bool((code_hi - code_lo).max() > 0)   # the box did widen: the check is not vacuous


def test_training_attack_starts_the_first_inputs_at_the_clean_point() -> None:
    x = torch.rand(6, 1, 28, 28) * 0.5 + 0.25
    flat = lambda t: t.flatten(1).sum(1) * 0.0  # noqa: E731  (zero gradient: no step moves)
    out = pgd_linf(flat, x, 0.2, 1, 0.05, torch.Generator().manual_seed(0), clean_start=2)
    assert torch.equal(out[:2], x[:2])
    moved = (out[2:] - x[2:]).abs().flatten(1).amax(1)
    assert bool((moved > 0.1).all()) and float(moved.max()) <= 0.2 + 1e-6
    with pytest.raises(ValueError, match="clean_start_fraction"):
        RobustConfig(clean_start_fraction=1.5)


def test_plan_only_keeps_the_named_systems_in_order() -> None:
    plan = RobustPlan().only(["baseline", "robust-conv"])
    assert plan.systems == ("robust-conv", "baseline")
    assert RobustPlan().only(None).systems == RobustPlan().systems
    with pytest.raises(ValueError, match="robust-transformer"):
        RobustPlan().only(["robust-transformer"])
