"""Mahalanobis++ (normalised features) and relative Mahalanobis (background distance removed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from basin.detectors import MahalanobisDetector
from basin.models.feature_classifier import LinearHeadClassifier
from basin.utils.io import CheckpointError


def _identity(d: int) -> LinearHeadClassifier:
    return LinearHeadClassifier(nn.Identity(), nn.Linear(d, 3))


def _shell_data(d: int = 64, n: int = 600, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three classes 6 sigma apart in 2 of d dimensions with unit noise in all d; OOD points
    at the global mean with almost no noise: inside the ID shell of radius ~sqrt(d)."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.zeros(3, d)
    means[0, 0], means[1, 1], means[2, :2] = 6.0, 6.0, -3.0
    y = torch.arange(3).repeat_interleave(n)
    f = means[y] + torch.randn(len(y), d, generator=gen)
    f_id = means[y[:300] % 3] + torch.randn(300, d, generator=gen)
    f_ood = means.mean(0) + 0.1 * torch.randn(300, d, generator=gen)
    return f, y, f_id, f_ood


def _np_squared(f: np.ndarray, m: np.ndarray, cov: np.ndarray) -> np.ndarray:
    prec = np.linalg.inv(cov)
    return np.einsum("nd,de,ne->n", f - m, prec, f - m)


def test_relative_equals_class_minus_background_distance_closed_form() -> None:
    f, y, f_id, f_ood = _shell_data(d=5, n=400)
    det = MahalanobisDetector(_identity(5), relative=True).fit(f, y)
    fn, yn, q = f.double().numpy(), y.numpy(), torch.cat([f_id, f_ood]).double().numpy()
    means = np.stack([fn[yn == c].mean(0) for c in range(3)])
    within = (fn - means[yn]).T @ (fn - means[yn]) / len(fn)
    total = np.cov(fn.T, bias=True)
    md0 = _np_squared(q, fn.mean(0), total)
    expected = -np.min(np.stack([_np_squared(q, m, within) for m in means], 1)
                       - md0[:, None], axis=1)
    np.testing.assert_allclose(det.score(torch.from_numpy(q).float()).detach().numpy(),
                               expected, rtol=1e-4, atol=1e-4)


def test_normalize_is_the_plain_fit_on_unit_features() -> None:
    f, y, f_id, _ = _shell_data(d=6, n=300)
    scaled = f * torch.linspace(0.5, 3.0, len(f))[:, None]    # norms vary, directions kept
    pp = MahalanobisDetector(_identity(6), normalize=True).fit(scaled, y)
    plain = MahalanobisDetector(_identity(6)).fit(torch.nn.functional.normalize(f), y)
    torch.testing.assert_close(pp.score(f_id * 7.0), plain.score(
        torch.nn.functional.normalize(f_id)), rtol=1e-5, atol=1e-5)


def test_relative_repairs_the_shell_failure_of_plain_mahalanobis() -> None:
    f, y, f_id, f_ood = _shell_data()
    labels = np.r_[np.ones(len(f_id)), np.zeros(len(f_ood))]

    def auroc(det: MahalanobisDetector) -> float:
        return float(roc_auc_score(labels, det.score(torch.cat([f_id, f_ood])).numpy()))

    plain = auroc(MahalanobisDetector(_identity(64)).fit(f, y))
    relative = auroc(MahalanobisDetector(_identity(64), relative=True).fit(f, y))
    assert plain < 0.05          # the quiet OOD points rank as *more* in-distribution
    assert relative > 0.95


def test_variant_checkpoints_round_trip_and_refuse_the_other_kind(tmp_path: Path) -> None:
    f, y, f_id, f_ood = _shell_data(d=8, n=100)
    x = torch.cat([f_id, f_ood])
    det = MahalanobisDetector(_identity(8), normalize=True, relative=True).fit(f, y)
    det.save(tmp_path / "m.safetensors")
    back = MahalanobisDetector(_identity(8), normalize=True, relative=True)
    torch.testing.assert_close(back.load(tmp_path / "m.safetensors").score(x), det.score(x))
    with pytest.raises(CheckpointError, match="normalize=True"):
        MahalanobisDetector(_identity(8)).load(tmp_path / "m.safetensors")
    MahalanobisDetector(_identity(8)).fit(f, y).save(tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="relative=True"):
        MahalanobisDetector(_identity(8), relative=True).load(tmp_path / "plain.safetensors")


def test_normalize_flag_is_checked_on_load_both_ways(tmp_path: Path) -> None:
    """Same tensor set, different feature map: loading across must fail, not score wrong."""
    f, y, _, _ = _shell_data(d=8, n=100)
    MahalanobisDetector(_identity(8), normalize=True).fit(f, y).save(tmp_path / "pp.safetensors")
    MahalanobisDetector(_identity(8)).fit(f, y).save(tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match=r"pp\.safetensors: fitted with normalize=True"):
        MahalanobisDetector(_identity(8)).load(tmp_path / "pp.safetensors")
    with pytest.raises(CheckpointError, match="fitted with normalize=False"):
        MahalanobisDetector(_identity(8), normalize=True).load(tmp_path / "plain.safetensors")
    back = MahalanobisDetector(_identity(8), normalize=True).load(tmp_path / "pp.safetensors")
    assert back.score(f[:5]).shape == (5,)
