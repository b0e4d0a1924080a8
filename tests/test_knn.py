"""KNN (Sun et al. 2022) against a brute-force neighbour search on tiny feature sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from basin.detectors import DetectorError, KNNDetector
from basin.detectors import knn as knn_module
from basin.models.feature_classifier import LinearHeadClassifier
from basin.utils.io import CheckpointError


def identity_model(dim: int) -> LinearHeadClassifier:
    """features(x) = x: the detector then sees exactly the vectors the test builds."""
    return LinearHeadClassifier(nn.Identity(), nn.Linear(dim, 3)).eval()


def brute_force(bank: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The k-th smallest Euclidean distance between normalised vectors, by sorting all."""
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    d = np.sqrt(((q[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return np.sort(d, axis=1)[:, k - 1]


@pytest.mark.parametrize("k", [1, 3, 7, 40])
@pytest.mark.parametrize("chunk", [4, 8192])
def test_matches_brute_force(k: int, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # chunk 4 forces the running top-k over ten bank blocks
    monkeypatch.setattr(knn_module, "_CHUNK", chunk)
    gen = np.random.default_rng(0)
    bank = gen.normal(size=(40, 5)) * gen.uniform(0.1, 10, size=(40, 1))  # norms differ
    queries = gen.normal(size=(15, 5))
    det = KNNDetector(identity_model(5), k=k).fit(torch.from_numpy(bank).float())
    scores = det.score(torch.from_numpy(queries).float())
    expected = -brute_force(bank, queries, k)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-5)
    # feature scale does not matter: the bank and the queries are normalised
    scaled = det.score(7.5 * torch.from_numpy(queries).float())
    np.testing.assert_allclose(scaled.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_leave_one_out_skips_the_query_itself() -> None:
    gen = np.random.default_rng(1)
    bank = gen.normal(size=(30, 4))
    det = KNNDetector(identity_model(4), k=2).fit(torch.from_numpy(bank).float())
    got = det.kth_distance(torch.from_numpy(bank).float(), exclude_self=True).numpy()
    # by hand: drop each point from the bank before searching
    expected = [brute_force(np.delete(bank, i, 0), bank[i:i + 1], 2)[0] for i in range(30)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # without exclusion a bank entry is its own nearest neighbour, at distance ~0 (float32
    # cosines of a vector with itself round to 1 - 1e-7, whose sqrt(2 - 2 cos) is ~4e-4)
    assert float(KNNDetector(identity_model(4), k=1).fit(torch.from_numpy(bank).float())
                 .kth_distance(torch.from_numpy(bank[:3]).float()).max()) < 1e-3


def test_ood_far_from_the_bank_scores_lower_and_gradients_flow() -> None:
    gen = torch.Generator().manual_seed(0)
    ident = identity_model(3)
    cluster = torch.tensor([1.0, 0.0, 0.0]) + 0.1 * torch.randn(200, 3, generator=gen)
    det = KNNDetector(ident, k=10).fit(cluster)
    id_q = torch.tensor([1.0, 0.0, 0.0]) + 0.1 * torch.randn(20, 3, generator=gen)
    ood_q = torch.tensor([0.0, 1.0, 0.0]) + 0.1 * torch.randn(20, 3, generator=gen)
    assert float(det.score(id_q).min()) > float(det.score(ood_q).max())
    x = ood_q.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(det.score(x).sum(), x)
    assert torch.isfinite(grad).all() and float(grad.abs().sum(1).min()) > 0


def test_checkpoint_round_trip_and_errors(tmp_path: Path) -> None:
    bank = torch.randn(12, 4, generator=torch.Generator().manual_seed(2))
    det = KNNDetector(identity_model(4), k=3).fit(bank)
    det.save(tmp_path / "knn.safetensors")
    again = KNNDetector(identity_model(4), k=3).load(tmp_path / "knn.safetensors")
    q = torch.randn(5, 4)
    assert torch.equal(again.score(q), det.score(q))
    with pytest.raises(CheckpointError, match="written with k = 3, this detector has k = 4"):
        KNNDetector(identity_model(4), k=4).load(tmp_path / "knn.safetensors")
    with pytest.raises(DetectorError, match="k: must be a positive int"):
        KNNDetector(identity_model(4), k=0)
    with pytest.raises(DetectorError, match=r"expected shape \(N >= k = 3, D\)"):
        KNNDetector(identity_model(4), k=3).fit(bank[:2])
    with pytest.raises(DetectorError, match="not fitted"):
        KNNDetector(identity_model(4)).score(q)
    with pytest.raises(DetectorError, match=r"expected shape \(N, 4\)"):
        det.score_features(torch.randn(2, 5))
