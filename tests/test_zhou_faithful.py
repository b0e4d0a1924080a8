"""Zhou's official-code variant beside the default variant, on test_zhou's synthetic features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from torch import nn

from basin.detectors import DETECTORS, CombinedDetector, MSPDetector, ZhouDetector
from basin.detectors.zhou_faithful import ZhouFaithfulDetector, head_as_linear
from basin.models.airbench import AirbenchNet
from test_zhou import backbone, id_features, ood_features  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"epochs": 20, "batch_size": 64, "d2_hidden": (64, 32), "lr": 3e-3}


@pytest.fixture(scope="module")
def faithful(backbone: nn.Module) -> tuple[ZhouFaithfulDetector, torch.Tensor]:  # noqa: F811
    f_train, y_train = id_features(200, seed=1)
    f_val, _ = id_features(60, seed=2)
    det = ZhouFaithfulDetector(backbone, **SMALL)  # type: ignore[arg-type]
    return det.fit_features(f_train, y_train, f_val), f_val


def test_official_defaults_and_registry(backbone: nn.Module) -> None:  # noqa: F811
    det = ZhouFaithfulDetector(backbone)  # type: ignore[arg-type]
    assert (det.temperature, det.msp_temperature, det.sigma_scales) == (100.0, 1000.0,
                                                                         (10.0, 10.0, 10.0))
    assert (det.lr, det.epochs, det.batch_size, det.lam) == (1e-4, 300, 128, 1.0)
    assert det.lr_schedule == "cosine" and ZhouDetector.lr_schedule == "constant"
    assert DETECTORS["zhou_faithful"] is ZhouFaithfulDetector


def test_w_starts_from_the_backbone_head() -> None:
    model = AirbenchNet(widths=(8, 16, 16), n_classes=4).eval()
    layer = head_as_linear(model)
    assert layer is not None
    f = torch.randn(6, 16)
    # airbench's logits are head(f) / 9: W must reproduce them exactly
    torch.testing.assert_close(layer(f), model.logits_from_features(f))
    assert head_as_linear(nn.Identity()) is None  # type: ignore[arg-type]


def test_losses_and_errors_are_the_official_formulas(
        faithful: tuple[ZhouFaithfulDetector, torch.Tensor]) -> None:
    det, _ = faithful
    v, _ = id_features(5, seed=4)
    z = det.heads.W(v)
    zt = z / 100.0
    rec_v, rec_z = det.heads.D1(z), det.heads.D2(torch.softmax(zt, 1))
    l1, l2 = det.training_losses(v, z)
    torch.testing.assert_close(l1, ((v - rec_v) ** 2).sum(1))  # raw, not relative
    torch.testing.assert_close(l2, ((zt - rec_z) ** 2).sum(1))
    e1, e2 = det.errors(v, z)
    nv, nz = v.norm(dim=1, keepdim=True), zt.norm(dim=1, keepdim=True)
    torch.testing.assert_close(e1, ((v / nv - rec_v / nv) ** 2).sum(1))
    torch.testing.assert_close(e2, ((zt / nz - rec_z / nz) ** 2).sum(1))
    # the default variant's errors over the same heads are the square roots of these
    default = ZhouDetector.errors(det, v, z)
    torch.testing.assert_close(default[0] ** 2, e1)
    torch.testing.assert_close(default[1] ** 2, e2)
    parts = det.components(v)
    torch.testing.assert_close(parts["msp"], torch.softmax(z / 1000.0, 1).max(1).values)


def test_fused_score_widens_all_three_normals(
        faithful: tuple[ZhouFaithfulDetector, torch.Tensor]) -> None:
    det, f_val = faithful
    v = torch.cat([id_features(4, seed=5)[0], ood_features(4, seed=6)])
    with torch.no_grad():
        parts = {k: t.double().numpy() for k, t in det.components(v).items()}
        val = {k: t.double().numpy() for k, t in det.components(f_val).items()}
        score = det.score_features(v).double().numpy()
    expected = np.zeros(len(v))
    for k in ("msp", "e1", "e2"):
        mu, sigma = norm.fit(val[k])  # scipy's MLE fit, as Zhou's code
        cdf = norm.cdf(parts[k], loc=mu, scale=10 * sigma)
        expected += np.log(cdf if k == "msp" else 1 - cdf)
    np.testing.assert_allclose(score, expected, rtol=1e-4, atol=1e-4)


def test_both_variants_separate_far_ood_and_round_trip(
        faithful: tuple[ZhouFaithfulDetector, torch.Tensor], tmp_path: Path,
        backbone: nn.Module) -> None:  # noqa: F811
    det, f_val = faithful
    f_id, f_ood = id_features(50, seed=7)[0], ood_features(150, seed=8)
    labels = [1] * len(f_id) + [0] * len(f_ood)
    with torch.no_grad():
        auroc = roc_auc_score(labels, torch.cat([det.score_features(f_id),
                                                 det.score_features(f_ood)]).numpy())
    assert auroc > 0.95
    det.save(tmp_path / "zf")
    again = ZhouFaithfulDetector.load(tmp_path / "zf", backbone)  # type: ignore[arg-type]
    assert isinstance(again, ZhouFaithfulDetector)
    torch.testing.assert_close(again.score_features(f_ood), det.score_features(f_ood))
    combined = CombinedDetector(det, MSPDetector(backbone)).fit_features(f_val)  # type: ignore[arg-type]
    with torch.no_grad():
        c = combined.score_features(f_ood)
        expected = det.score_features(f_ood).double() + torch.special.log_ndtr(
            (MSPDetector(backbone).score_features(f_ood).double()  # type: ignore[arg-type]
             - combined.normals["msp"][0]) / (10 * combined.normals["msp"][1]))
    torch.testing.assert_close(c.double(), expected, rtol=1e-5, atol=1e-5)
