"""Zhou's feature-reconstruction detector and the combined (Zhou + MSP) detector.

Synthetic features: three Gaussian ID classes in 16-D, an identity "backbone" (so inputs are
features and input gradients are feature gradients) and the Bayes-optimal linear head for
equal isotropic classes (w_c = mu_c, b_c = -|mu_c|^2 / 2), so the MSP model needs no training.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from torch import nn

from basin.detectors import CombinedDetector, DetectorError, MSPDetector, ZhouDetector
from basin.detectors.zhou import fingerprint
from basin.models.feature_classifier import LinearHeadClassifier

D, C = 16, 3
MEANS = torch.zeros(C, D)
MEANS[0, 0], MEANS[1, 1], MEANS[2, 2] = 4.0, 4.0, 4.0
MEANS[:, 3] = 2.0


def id_features(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(C).repeat_interleave(n_per_class)
    return MEANS[y] + 0.5 * torch.randn(len(y), D, generator=gen), y


def ood_features(n: int, seed: int) -> torch.Tensor:
    """Far from every ID mean, along directions the ID classes never use."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.zeros(D)
    centre[8:12] = 3.0
    return centre + 0.5 * torch.randn(n, D, generator=gen)


pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def backbone() -> LinearHeadClassifier:
    head = nn.Linear(D, C)
    with torch.no_grad():
        head.weight.copy_(MEANS)
        head.bias.copy_(-0.5 * MEANS.pow(2).sum(1))
    return LinearHeadClassifier(nn.Identity(), head).eval()


def make_zhou(backbone: LinearHeadClassifier, **kw: object) -> ZhouDetector:
    kw = {"epochs": 15, "batch_size": 64, "d2_hidden": (64, 32), "lr": 3e-3, **kw}
    return ZhouDetector(backbone, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fitted(backbone: LinearHeadClassifier) -> tuple[ZhouDetector, torch.Tensor]:
    f_train, y_train = id_features(200, seed=1)
    f_val, _ = id_features(60, seed=2)
    return make_zhou(backbone).fit_features(f_train, y_train, f_val), f_val


def test_training_learns_w_and_the_decoders(fitted: tuple[ZhouDetector, torch.Tensor]) -> None:
    det, _ = fitted
    history = det.fit_record["loss_history"]
    assert len(history) == 15 and history[-1] < 0.5 * history[0]
    f, y = id_features(50, seed=3)
    assert (det.heads.W(f).argmax(1) == y).float().mean() > 0.95


def test_components_follow_algorithm_1(fitted: tuple[ZhouDetector, torch.Tensor]) -> None:
    det, _ = fitted
    v, _ = id_features(5, seed=4)
    z = det.heads.W(v)
    zt = z / 100.0
    parts = det.components(v)
    torch.testing.assert_close(parts["msp"], torch.softmax(zt, 1).max(1).values)
    torch.testing.assert_close(parts["e1"], torch.linalg.norm(
        v / v.norm(dim=1, keepdim=True) - det.heads.D1(z) / v.norm(dim=1, keepdim=True), dim=1))
    torch.testing.assert_close(parts["e2"], torch.linalg.norm(
        zt - det.heads.D2(torch.softmax(zt, 1)), dim=1) / zt.norm(dim=1))


def test_fused_score_is_the_documented_product(fitted: tuple[ZhouDetector, torch.Tensor]) -> None:
    det, _ = fitted
    v = torch.cat([id_features(10, seed=5)[0], ood_features(10, seed=6)])
    parts = {k: t.detach().double().numpy() for k, t in det.components(v).items()}
    (m0, s0), (m1, s1), (m2, s2) = (det.normals[k] for k in ("msp", "e1", "e2"))
    p = (norm.cdf(parts["msp"], m0, 10 * s0) * (1 - norm.cdf(parts["e1"], m1, s1))
         * (1 - norm.cdf(parts["e2"], m2, s2)))
    log_score = det.score_features(v).detach().double().numpy()
    # 1 - Phi(t) in float64 loses every digit below ~1e-16 (why the detector uses log space)
    finite = p > 1e-8
    assert finite.sum() >= 20
    np.testing.assert_allclose(np.exp(log_score[finite]), p[finite], rtol=1e-3)
    np.testing.assert_allclose(log_score, norm.logcdf(parts["msp"], m0, 10 * s0)
                               + norm.logsf(parts["e1"], m1, s1)
                               + norm.logsf(parts["e2"], m2, s2), rtol=1e-3, atol=1e-3)
    det.log_space = False
    try:
        np.testing.assert_allclose(det.score_features(v).detach().numpy(), p, rtol=1e-3,
                                   atol=1e-9)
    finally:
        det.log_space = True


def test_normals_are_fitted_on_validation_data_only(backbone: LinearHeadClassifier) -> None:
    f_train, y_train = id_features(100, seed=7)
    f_val, _ = id_features(30, seed=8)
    a = make_zhou(backbone, epochs=3).fit(f_train, y_train, x_val=f_val)
    assert (a.fit_record["n_train"], a.fit_record["n_val"]) == (300, 90)
    assert a.fit_record["val_sha256"] == fingerprint(f_val)
    with torch.no_grad():
        parts = a.components(f_val)
    for k in ("msp", "e1", "e2"):
        values = parts[k].double().numpy()
        assert a.normals[k] == pytest.approx((values.mean(), values.std()), rel=1e-9)
    # scoring other test sets cannot change them; a refit is identical (seeded) ...
    a.score_features(ood_features(50, seed=9))
    b = make_zhou(backbone, epochs=3).fit(f_train, y_train, x_val=f_val)
    assert a.normals == b.normals
    # ... and the fit does depend on the validation set, so the check above can fail
    c = make_zhou(backbone, epochs=3).fit(f_train, y_train, x_val=id_features(30, seed=10)[0])
    assert c.normals != a.normals


def test_held_out_split_is_recorded(backbone: LinearHeadClassifier) -> None:
    f, y = id_features(50, seed=11)
    det = make_zhou(backbone, epochs=2).fit(f, y, val_fraction=0.2)
    rec = det.fit_record
    val, train = set(rec["val_indices"]), set(rec["train_indices"])
    assert len(val) == 30 and len(train) == 120 and not val & train
    assert val | train == set(range(150))
    assert rec["val_source"] == "held out from x"
    assert rec["val_sha256"] == fingerprint(f[rec["val_indices"]])
    with pytest.raises(DetectorError, match="labels"):
        make_zhou(backbone).fit(f)


def test_separates_far_ood_features(fitted: tuple[ZhouDetector, torch.Tensor]) -> None:
    det, _ = fitted
    s_id = det.score_batches(id_features(100, seed=12)[0])
    s_ood = det.score_batches(ood_features(300, seed=13))
    labels = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
    assert roc_auc_score(labels, torch.cat([s_id, s_ood]).numpy()) > 0.9
    assert torch.isfinite(s_ood).all()  # log space: no underflow to -inf


def test_checkpoint_round_trip(fitted: tuple[ZhouDetector, torch.Tensor],
                               backbone: LinearHeadClassifier, tmp_path) -> None:
    det, _ = fitted
    det.save(tmp_path / "zhou")
    loaded = ZhouDetector.load(tmp_path / "zhou", backbone)
    v = ood_features(10, seed=14)
    torch.testing.assert_close(loaded.score_features(v), det.score_features(v))
    assert loaded.fit_record["val_sha256"] == det.fit_record["val_sha256"]


@pytest.mark.parametrize("rule", ["product", "zsum"])
def test_combined_follows_its_rule(fitted: tuple[ZhouDetector, torch.Tensor],
                                   backbone: LinearHeadClassifier, rule: str) -> None:
    zhou, f_val = fitted
    msp = MSPDetector(backbone)
    comb = CombinedDetector(zhou, msp, rule=rule).fit(f_val[:1], x_val=f_val)
    assert comb.n_val == len(f_val)
    m_val = msp.score(f_val).detach().double().numpy()
    z_val = zhou.score(f_val).detach().double().numpy()
    assert comb.normals["msp"] == pytest.approx((m_val.mean(), m_val.std()), rel=1e-9)
    x = torch.cat([id_features(5, seed=15)[0], ood_features(5, seed=16)])
    parts = {k: t.detach().double().numpy() for k, t in comb.score_parts(x).items()}
    np.testing.assert_allclose(parts["zhou"], zhou.score(x).detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(parts["msp"], msp.score(x).detach().numpy(), rtol=1e-6)
    if rule == "product":
        expected = parts["zhou"] + norm.logcdf(parts["msp"], m_val.mean(), 10 * m_val.std())
        np.testing.assert_allclose(  # the product itself, where it has not underflowed
            np.exp(parts["combined"][:5]), np.exp(parts["zhou"][:5])
            * norm.cdf(parts["msp"][:5], m_val.mean(), 10 * m_val.std()), rtol=1e-4)
    else:
        expected = ((parts["zhou"] - z_val.mean()) / z_val.std()
                    + (parts["msp"] - m_val.mean()) / m_val.std())
    np.testing.assert_allclose(parts["combined"], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(comb.score_features(x), comb.score(x))
    # score() shares one backbone pass between the parts: same numbers as score_parts
    np.testing.assert_allclose(comb.score(x).detach().double().numpy(), parts["combined"],
                               rtol=1e-6, atol=1e-6)


def test_combined_uses_zhous_held_out_split(backbone: LinearHeadClassifier) -> None:
    f, y = id_features(40, seed=17)
    zhou = make_zhou(backbone, epochs=2)
    comb = CombinedDetector(zhou, MSPDetector(backbone)).fit(f, y)
    val = f[zhou.fit_record["val_indices"]]
    ref = CombinedDetector(zhou, MSPDetector(backbone)).fit_features(val)
    assert comb.normals == ref.normals and comb.n_val == 12
    with pytest.raises(DetectorError, match="rule"):
        CombinedDetector(zhou, MSPDetector(backbone), rule="max")
