"""Zhou's fused score term by term (:mod:`basin.reproductions.feature_recon.zhou_terms`).

Synthetic features as in ``test_zhou.py``: three Gaussian ID classes in 16-D, an identity
backbone with the Bayes-optimal linear head; the OOD features lie along unused directions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from basin.detectors import ZhouDetector
from basin.models.feature_classifier import LinearHeadClassifier
from basin.reproductions.feature_recon.zhou_terms import markdown, term_scores, term_table

D, C = 16, 3
MEANS = torch.zeros(C, D)
MEANS[0, 0], MEANS[1, 1], MEANS[2, 2] = 4.0, 4.0, 4.0

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def id_features(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(C).repeat_interleave(n_per_class)
    return MEANS[y] + 0.5 * torch.randn(len(y), D, generator=gen), y


def ood_features(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centre = torch.zeros(D)
    centre[8:12] = 3.0
    return centre + 0.5 * torch.randn(n, D, generator=gen)


@pytest.fixture(scope="module")
def zhou() -> ZhouDetector:
    head = nn.Linear(D, C)
    with torch.no_grad():
        head.weight.copy_(MEANS)
        head.bias.copy_(-0.5 * MEANS.pow(2).sum(1))
    model = LinearHeadClassifier(nn.Identity(), head).eval()
    f_train, y_train = id_features(150, seed=1)
    return ZhouDetector(model, epochs=10, batch_size=64, d2_hidden=(32, 16), lr=3e-3).fit_features(
        f_train, y_train, id_features(40, seed=2)[0])


def test_terms_add_up_to_the_fused_score(zhou: ZhouDetector) -> None:
    # more rows than one scoring batch (250), so the batching is exercised too
    f = torch.cat([id_features(100, seed=3)[0], ood_features(60, seed=4)])
    s = term_scores(zhou, f)
    with torch.no_grad():
        fused = zhou.score_features(f).double().numpy()
        parts = zhou.components(f)
    np.testing.assert_allclose(s["log_p"], fused, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(s["-e1"], -parts["e1"].double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(s["msp"], parts["msp"].double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(s["log_p-msp"], s["log_phi_e1"] + s["log_phi_e2"],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s["log_p-e2"], s["log_phi_msp"] + s["log_phi_e1"],
                               rtol=1e-5, atol=1e-5)
    # a lower error is more ID-like, so the oriented error ranks ID first on these sets
    n_id = 300
    assert roc_auc_score(np.r_[np.ones(n_id), np.zeros(60)], s["-e1"]) > 0.9
    assert np.median(s["log_phi_e1"][:n_id]) > np.median(s["log_phi_e1"][n_id:])


def test_table_matches_a_hand_computed_case() -> None:
    id_s = {"msp": np.array([0.9, 0.8, 0.7]), "log_p": np.array([0.0, -1.0, -2.0]),
            **{f"log_phi_{t}": np.array([-0.1, -0.2, -0.3]) for t in ("msp", "e1", "e2")}}
    ood = {"a": {"msp": np.array([0.75, 0.1]), "log_p": np.array([-5.0, -6.0]),
                 "log_phi_msp": np.array([-1.0, -3.0]), "log_phi_e1": np.array([-0.2, -0.2]),
                 "log_phi_e2": np.array([0.0, -0.4])}}
    (row,) = term_table(id_s, ood)
    # msp: ID 0.9, 0.8 beat both OOD scores, 0.7 beats only 0.1: 5 of 6 pairs
    assert row["auroc msp"] == pytest.approx(100 * 5 / 6, abs=0.005)
    assert row["auroc log_p"] == 100.0
    assert row["n"] == 2 and "auroc -e1" not in row
    # medians: ID -0.2; OOD msp -2.0, e1 -0.2, e2 -0.2
    assert (row["drop log_phi_msp"], row["drop log_phi_e1"], row["drop log_phi_e2"]) == \
        pytest.approx((1.8, 0.0, 0.0))
    text = markdown([row], "t")
    assert "| a | 2 | 83.33 | 100.0 |" in text
