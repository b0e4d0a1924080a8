"""The training's running acceptance threshold (issue 13, "adaptive" correct-or-reject)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from basin.data.outliers import OutlierPool
from basin.detectors.pearson import pearson_correlation as pearson
from basin.losses.robust import RobustWeights, correct_or_reject, id_attack_loss, robust_loss
from basin.models.conv_attractor import ConvAttractorNet
from basin.reproductions.robust_attractor.protocol import (
    DEFAULT_SYSTEMS,
    ROBUST_SYSTEMS,
    RobustPlan,
)
from basin.training.acceptance import AcceptanceThreshold
from basin.training.robust import (
    _id_step_sizes,
    acceptance_tracker,
    as_images,
    joint_silent_rate,
    pgd_linf,
    train_robust,
)
from basin.training.robust_config import ROBUST_PRESETS, RobustConfig
from basin.training.run import load_run
from basin.utils.io import read_json
from toy_attractor import toy_train_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_running_threshold_converges_to_the_quantile_of_the_scores() -> None:
    gen = torch.Generator().manual_seed(0)
    tracker = AcceptanceThreshold(initial=3.0, accept_fraction=0.95, rate=0.05, slack=0.1)
    values = [tracker.update(torch.randn(256, generator=gen)) for _ in range(600)]
    # the 5% quantile of N(0, 1) is -1.6449; the EMA of batch quantiles of 256 draws
    # fluctuates by about 0.03 around it once the start (3.0) has decayed
    tail = torch.tensor(values[300:])
    assert float(tail.mean()) == pytest.approx(-1.6449, abs=0.03)
    assert float(tail.std()) < 0.05
    assert tracker.target() == pytest.approx(tracker.value - 0.1)


def test_running_threshold_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="accept_fraction"):
        AcceptanceThreshold(0.5, accept_fraction=1.0)
    with pytest.raises(ValueError, match="rate"):
        AcceptanceThreshold(0.5, rate=0.0)
    with pytest.raises(ValueError, match="slack"):
        AcceptanceThreshold(0.5, slack=-0.1)
    with pytest.raises(ValueError, match="scores"):
        AcceptanceThreshold(0.5).update(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="cor_threshold"):
        RobustConfig(cor_threshold="median")
    with pytest.raises(ValueError, match="cor_slack"):
        RobustConfig(cor_slack=1.0)


def test_loss_and_attack_use_the_given_threshold() -> None:
    torch.manual_seed(0)
    net = ConvAttractorNet((4, 8), 16)
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    weights = RobustWeights(sim_id=0.0, sim_clean=2.0, cor=1.0, eigen=0.0)
    at = 0.2
    terms = robust_loss(net, x, x_adv, y, None, weights, threshold=at)
    with torch.no_grad():
        recon, logits = net(x_adv)
        r = pearson(x_adv, recon)
        expected = correct_or_reject(logits, r, y, at, weights.cor_temperature).mean()
        default = correct_or_reject(logits, r, y, weights.id_margin,
                                    weights.cor_temperature).mean()
    assert float(terms.terms["cor"].detach()) == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(expected) - float(default)) > 1e-4   # the threshold matters here
    # clean scores come back detached, one per digit
    with torch.no_grad():
        r_clean = pearson(x, net(x)[0])
    assert terms.clean_scores is not None
    assert torch.allclose(terms.clean_scores, r_clean, atol=1e-5)
    # a threshold far below every score makes acceptance certain: log P(silent) = log(1-p_y)
    with torch.no_grad():
        low = id_attack_loss(net, x_adv, y, cor=weights, threshold=-10.0)
        p_y = torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(low, torch.log1p(-p_y), atol=1e-4)


def test_adaptive_run_records_and_resumes_its_threshold(tmp_path: Path) -> None:
    data = toy_train_data(200)
    pool = OutlierPool(as_images(data.train_x), data.train_y)
    config = ROBUST_PRESETS["attractor-robust-conv"].replace(
        dataset="toy", channels=(4, 8), code=32, epochs=2, ramp_epochs=1, epsilon=0.1,
        batch_size=50, monitor_n=20, id_steps=2, outlier_steps=1, cor_threshold="adaptive")
    assert acceptance_tracker(config.replace(cor_threshold="margin")) is None
    train_robust(config, data, pool, tmp_path / "a", log=None)
    history = read_json(tmp_path / "a" / "history.json")
    values = [entry["cor_threshold"] for entry in history]
    assert len(values) == 2 and values[0] != config.weights.id_margin
    # one epoch, then resume to two: the threshold (and so the weights) continue exactly
    train_robust(config.replace(epochs=1), data, pool, tmp_path / "b", log=None)
    (tmp_path / "b" / "metrics.json").unlink()
    train_robust(config, data, pool, tmp_path / "b", resume=True, log=None)
    resumed = read_json(tmp_path / "b" / "history.json")
    assert resumed[-1]["cor_threshold"] == pytest.approx(values[-1], abs=1e-9)
    a, b = load_run(tmp_path / "a").net, load_run(tmp_path / "b").net
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6), name


def test_monitor_joint_silent_rate_bounds() -> None:
    torch.manual_seed(0)
    net = ConvAttractorNet((4, 8), 16).eval()
    x, y = torch.rand(20, 1, 28, 28), torch.randint(0, 10, (20,))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        clean_wrong = float((net.logits(x).argmax(1) != y).float().mean())
    # every input accepted: at least the clean errors (the clean digit is in the ball)...
    everything = joint_silent_rate(net, x, y, 0.3, -2.0, 1, gen)
    assert clean_wrong <= everything <= 1.0
    # ... and an attack on an untrained net finds more than those
    assert everything > clean_wrong or clean_wrong == 1.0
    # nothing accepted: no silent failure whatever the attack does
    assert joint_silent_rate(net, x, y, 0.3, 2.0, 1, gen) == 0.0


def test_clean_start_inputs_take_their_own_step_size() -> None:
    config = ROBUST_PRESETS["attractor-robust-conv4"]
    sizes = _id_step_sizes(config, 0.3, 8, 4)
    assert isinstance(sizes, torch.Tensor)
    assert sizes.flatten().tolist() == pytest.approx([0.03] * 4 + [0.06] * 4)
    assert _id_step_sizes(config.replace(clean_step_factor=None), 0.3, 8, 4) == pytest.approx(0.06)
    with pytest.raises(ValueError, match="clean_step_factor"):
        config.replace(clean_step_factor=0.0)
    # PGD with per-input steps: the clean-start rows move at most steps x their step
    torch.manual_seed(0)
    net = ConvAttractorNet((4, 8), 16)
    x, y = torch.rand(8, 1, 28, 28) * 0.5 + 0.25, torch.randint(0, 10, (8,))
    x_adv = pgd_linf(lambda t: id_attack_loss(net, t, y, sim_weight=0.0), x, 0.3, 3, sizes,
                     torch.Generator().manual_seed(0), clean_start=4)
    moved = (x_adv - x).abs().flatten(1).amax(1)
    assert float(moved[:4].max()) <= 3 * 0.03 + 1e-6
    assert float(moved[4:].min()) > 3 * 0.03   # random start + coarse steps go further
    assert float(moved.max()) <= 0.3 + 1e-6


def test_full_plan_judges_the_best_recipe_and_the_paper_networks_by_default() -> None:
    full = RobustPlan.make(quick=False)
    assert full.default_selection() == DEFAULT_SYSTEMS
    chosen = full.only(full.default_selection())
    assert chosen.systems == ("robust-conv4", "baseline", "attractor")
    assert chosen.robust_presets == {"robust-conv4": "attractor-robust-conv4"}
    # every recipe is a registered system and a preset; quick plans keep all of theirs
    assert set(ROBUST_SYSTEMS.values()) <= set(ROBUST_PRESETS)
    quick = RobustPlan.make(quick=True)
    assert quick.default_selection() is None and quick.only(None) == quick
