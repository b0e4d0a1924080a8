"""Adversarial attractor training on the tiny built-in toy problem (784-pixel clouds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from basin.data.outliers import OutlierPool
from basin.losses.robust import RobustWeights, id_attack_loss, robust_loss, similarity
from basin.training.robust import as_images, epsilon_at, lr_at, pgd_linf, train_robust
from basin.training.robust_config import ROBUST_PRESETS, RobustConfig
from basin.training.run import RunExistsError, load_run
from toy_attractor import toy_train_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = (784, 64, 32, 64, 784)


def _pgd_accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> float:
    x = as_images(x)
    x_adv = pgd_linf(lambda t: id_attack_loss(net, t, y, sim_weight=0.0), x, eps, 20,
                     2.5 * eps / 20, torch.Generator().manual_seed(0))
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    with torch.no_grad():
        return float((net.logits(x_adv).argmax(1) == y).float().mean())


@pytest.mark.slow
def test_adversarial_training_beats_plain_training_under_pgd(tmp_path: Path) -> None:
    data = toy_train_data(600)
    pool = OutlierPool(as_images(data.train_x), data.train_y)
    base = RobustConfig(dataset="toy", widths=SMALL, epochs=6, ramp_epochs=2, epsilon=0.2,
                        batch_size=64, monitor_n=50)
    plain = base.replace(id_steps=0, outlier_steps=0, outlier_fraction=0.0)
    train_robust(plain, data, None, tmp_path / "plain", log=None)
    train_robust(base, data, pool, tmp_path / "adv", log=None)
    acc = {name: _pgd_accuracy(load_run(tmp_path / name).net, data.test_x, data.test_y, 0.2)
           for name in ("plain", "adv")}
    # measured: plain ~0.70, adversarial ~0.99 (PGD-20 at 0.2, 200 test points)
    assert acc["adv"] >= acc["plain"] + 0.15, acc
    history = (tmp_path / "adv" / "history.json").read_text()
    assert "val_pgd10_acc" in history and "pool_accepted_pgd10" in history


def test_resume_continues_and_refuses_to_overwrite(tmp_path: Path) -> None:
    data = toy_train_data()
    config = RobustConfig(dataset="toy", widths=SMALL, epochs=2, ramp_epochs=1,
                          batch_size=100, monitor_n=20)
    full = train_robust(config, data, None, tmp_path / "a", log=None)
    with pytest.raises(RunExistsError):
        train_robust(config, data, None, tmp_path / "a", log=None)
    # run one epoch, then resume to two: same weights as the uninterrupted run
    train_robust(config.replace(epochs=1), data, None, tmp_path / "b", log=None)
    (tmp_path / "b" / "metrics.json").unlink()
    resumed = train_robust(config, data, None, tmp_path / "b", resume=True, log=None)
    a, b = load_run(tmp_path / "a").net, load_run(tmp_path / "b").net
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6), name
    assert full["val_accuracy"] == resumed["val_accuracy"]


def test_schedules_and_config_round_trip() -> None:
    config = ROBUST_PRESETS["attractor-robust"]
    assert epsilon_at(config, 0, 0, 100) == pytest.approx(0.3 / (7 * 100))
    assert epsilon_at(config, 6, 99, 100) == pytest.approx(0.3)
    assert epsilon_at(config, 10, 0, 100) == pytest.approx(0.3)
    assert lr_at(config, 0) == config.lr and lr_at(config, 17) == pytest.approx(0.05 * 1e-3)
    assert RobustConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="epsilon"):
        config.replace(epsilon=1.5)
    with pytest.raises(ValueError, match="margin"):
        RobustWeights(id_margin=0.2, ood_margin=0.5)
    with pytest.raises(ValueError, match="unknown field"):
        RobustConfig.from_dict({"epoch": 3})


def test_robust_loss_terms_have_gradients_and_hinges() -> None:
    torch.manual_seed(0)
    from basin.models.attractor import AttractorNet

    net = AttractorNet(SMALL, 10, output_activation="clamp")
    x = torch.rand(8, 1, 28, 28)
    y = torch.arange(8) % 10
    terms = robust_loss(net, x, x.clone(), y, torch.rand(4, 1, 28, 28), RobustWeights(),
                        generator=torch.Generator().manual_seed(0))
    terms.total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    floats = terms.as_floats()
    # identical clean and attacked inputs: the two CE and the two reconstruction terms agree
    assert floats["ce_adv"] == pytest.approx(floats["ce_clean"], rel=1e-5)
    assert floats["recon_adv"] == pytest.approx(floats["recon_clean"], rel=1e-5)
    assert 0.0 <= floats["sim_id"] <= 1.9 and floats["oe_head"] >= -1e-6
    r = similarity(net, x)
    assert r.shape == (8,) and float(r.detach().abs().max()) <= 1.0
