"""Mahalanobis-distance OOD score on penultimate features.

Lee, Lee, Lee & Shin, "A Simple Unified Framework for Detecting Out-of-Distribution Samples
and Adversarial Attacks", NeurIPS 2018. Class-conditional Gaussians with one tied covariance
are fitted to the training features f = model.features(x):

    mu_c  = mean of the features of class c
    Sigma = (1/N) sum_i (f_i - mu_{y_i}) (f_i - mu_{y_i})^T
    P     = pinv(Sigma + r * (tr(Sigma) / D) * I)             (r = ``shrinkage``, default 0)
    score(x) = -min_c (f(x) - mu_c)^T P (f(x) - mu_c)

so higher = closer to some class = more in-distribution. Two published repairs for features
on which this fails, both off by default:

- ``normalize=True`` (Mahalanobis++: Mueller & Hein, "Mahalanobis++: Improving OOD Detection
  via Feature Normalization", ICML 2025): every feature is L2-normalised, f / ||f||, before
  the fit and the score, so that the feature norm, which varies widely across inputs and
  classes, no longer dominates the distances.
- ``relative=True`` (relative Mahalanobis: Ren et al., "A Simple Fix to Mahalanobis Distance
  for Improving Near-OOD Detection", 2021): a background Gaussian N(mu_0, Sigma_0) is fitted
  to all training features regardless of class and its distance is subtracted,
  ``score(x) = -min_c [MD_c(x) - MD_0(x)]``. In D dimensions an ID feature lies at squared
  distance about D from its class mean (the within-class noise); a feature with little of
  that noise (e.g. of a blank image) lies *inside* that shell, closer to every mean than the
  ID data, and plain Mahalanobis ranks it as more in-distribution. MD_0 has the same shell,
  so the difference keeps only how much closer x is to a class than to the data as a whole.

The pseudo-inverse keeps P finite
when features are rank deficient (ReLU features often are); ``shrinkage`` > 0 regularises
further. With ``epsilon`` > 0 the input is first moved like ODIN's preprocessing, one step of
``eps * sign(grad_x score)`` (Lee et al., eq. 4), the step treated as a constant for attacks
(see :mod:`basin.detectors.odin`). basin uses the penultimate layer only; Lee et al.'s
multi-layer ensemble with a logistic-regression combiner is not implemented.

Means and precision are stored as float64 tensors; scores are computed in float64 (distances
of hundreds differ in the last digits) and returned in the features' dtype, differentiable.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

import torch
from torch import Tensor

from basin.detectors.base import Detector, DetectorError
from basin.detectors.odin import gradient_sign_step
from basin.models.feature_classifier import (
    FeatureClassifier,
    check_feature_classifier,
    extract_features,
)
from basin.utils.io import CheckpointError, read_tensors, save_tensors


class MahalanobisDetector(Detector):
    """Tied-covariance Gaussian class model on a :class:`FeatureClassifier`'s features.

    Args:
        model: the classifier (in eval mode).
        epsilon: input preprocessing step (default 0, none).
        shrinkage: r >= 0, the ridge added to Sigma relative to its mean eigenvalue.
        normalize: L2-normalise features first (Mahalanobis++).
        relative: subtract the class-agnostic background distance (relative Mahalanobis).
        threshold: optional fixed acceptance threshold.
    """

    name: ClassVar[str] = "mahalanobis"

    def __init__(self, model: FeatureClassifier, epsilon: float = 0.0,
                 shrinkage: float = 0.0, normalize: bool = False, relative: bool = False,
                 threshold: float | None = None) -> None:
        super().__init__(threshold)
        self.model = check_feature_classifier(model)
        if not epsilon >= 0:
            raise DetectorError(f"epsilon: must be >= 0, got {epsilon}")
        if not shrinkage >= 0:
            raise DetectorError(f"shrinkage: must be >= 0, got {shrinkage}")
        self.epsilon, self.shrinkage = float(epsilon), float(shrinkage)
        self.normalize, self.relative = bool(normalize), bool(relative)
        self.classes: Tensor | None = None
        self.means: Tensor | None = None
        self.precision: Tensor | None = None
        # the background Gaussian of relative=True: mean (1, D) and precision (D, D)
        self.background_mean: Tensor | None = None
        self.background_precision: Tensor | None = None

    def _prepare(self, f: Tensor) -> Tensor:
        f = f.double()
        return torch.nn.functional.normalize(f, dim=1) if self.normalize else f

    def _precision(self, centred: Tensor) -> Tensor:
        sigma = centred.T @ centred / len(centred)
        if self.shrinkage:
            ridge = self.shrinkage * torch.trace(sigma) / sigma.shape[0]
            sigma = sigma + ridge * torch.eye(sigma.shape[0], dtype=sigma.dtype,
                                              device=sigma.device)
        return torch.linalg.pinv(sigma, hermitian=True)

    def fit(self, x: Tensor, y: Tensor | None = None) -> Self:
        """Fit means and tied covariance on the features of training inputs ``x``."""
        if y is None:
            raise DetectorError("y: Mahalanobis needs the class labels of the training data")
        return self.fit_features(extract_features(self.model, x), y)

    def fit_features(self, f: Tensor, y: Tensor) -> Self:
        """Fit on precomputed training features ``f`` (N, D) with labels ``y`` (N,)."""
        if f.dim() != 2 or len(f) < 2:
            raise DetectorError(f"f: expected shape (N >= 2, D), got {tuple(f.shape)}")
        if y.shape != (len(f),):
            raise DetectorError(f"y: expected shape ({len(f)},), got {tuple(y.shape)}")
        f, y = self._prepare(f.detach()), y.detach().long().to(f.device)
        classes = torch.unique(y)
        if len(classes) < 2 or classes.min() < 0:
            raise DetectorError(f"y: need >= 2 classes with labels >= 0, got {classes.tolist()}")
        means = torch.stack([f[y == c].mean(0) for c in classes])
        self.classes = classes
        self.means = means
        self.precision = self._precision(f - means[torch.searchsorted(classes, y)])
        if self.relative:
            self.background_mean = f.mean(0, keepdim=True)
            self.background_precision = self._precision(f - self.background_mean)
        return self

    def distances(self, f: Tensor) -> Tensor:
        """Squared Mahalanobis distances to every class mean, shape (N, n_classes), of the
        (normalised, with ``normalize``) features; with ``relative`` minus the background
        distance MD_0."""
        if self.means is None or self.precision is None:
            raise DetectorError("mahalanobis: not fitted; call fit() or fit_features() first")
        if f.dim() != 2 or f.shape[1] != self.means.shape[1]:
            raise DetectorError(f"features: expected shape (N, {self.means.shape[1]}), "
                                f"got {tuple(f.shape)}")
        z = self._prepare(f)
        out = _squared(z, self.means.to(f.device), self.precision.to(f.device))
        if self.relative:
            if self.background_mean is None or self.background_precision is None:
                raise DetectorError("mahalanobis: relative=True but no background Gaussian "
                                    "was fitted or loaded")
            out = out - _squared(z, self.background_mean.to(f.device),
                                 self.background_precision.to(f.device))
        return out

    def score_features(self, f: Tensor) -> Tensor:
        """``-min_c`` squared distance for precomputed features (no preprocessing)."""
        return -self.distances(f).min(dim=1).values.to(f.dtype)

    def score(self, x: Tensor) -> Tensor:
        def raw(z: Tensor) -> Tensor:
            return self.score_features(self.model.features(z))
        return raw(gradient_sign_step(x, raw, self.epsilon))

    def save(self, path: str | Path) -> None:
        """Write means, precision and class labels as one safetensors file."""
        if self.means is None or self.precision is None or self.classes is None:
            raise DetectorError("mahalanobis: nothing to save; fit first")
        tensors = {"means": self.means, "precision": self.precision, "classes": self.classes}
        if self.relative and self.background_mean is not None:
            assert self.background_precision is not None
            tensors |= {"background_mean": self.background_mean,
                        "background_precision": self.background_precision}
        # the variants' flags only where set: a plain detector writes the same bytes as before
        flags = {k: "True" for k in ("normalize", "relative") if getattr(self, k)}
        save_tensors(path, tensors, metadata={"epsilon": repr(self.epsilon),
                                              "shrinkage": repr(self.shrinkage), **flags})

    def load(self, path: str | Path) -> Self:
        """Read what :meth:`save` wrote (the model itself is not part of the file)."""
        tensors, metadata = read_tensors(path)
        # a Mahalanobis++ file read by a plain detector (or the reverse) would score silently
        # wrong: the fitted Gaussians belong to one feature map
        for flag in ("normalize", "relative"):
            saved = metadata.get(flag) == "True"
            if saved != getattr(self, flag):
                raise CheckpointError(f"{path}: fitted with {flag}={saved}, but this detector "
                                      f"has {flag}={getattr(self, flag)}")
        expected = {"means", "precision", "classes"}
        if self.relative:
            expected |= {"background_mean", "background_precision"}
        if set(tensors) != expected:
            raise CheckpointError(f"{path}: expected tensors {sorted(expected)} (relative="
                                  f"{self.relative}); found {sorted(tensors)}")
        d = tensors["means"].shape[1]
        if tensors["precision"].shape != (d, d):
            raise CheckpointError(f"{path}: precision shape {tuple(tensors['precision'].shape)}"
                                  f" does not match means of width {d}")
        self.means, self.precision = tensors["means"], tensors["precision"]
        self.classes = tensors["classes"]
        if self.relative:
            self.background_mean = tensors["background_mean"]
            self.background_precision = tensors["background_precision"]
            if self.background_mean.shape != (1, d) or \
                    self.background_precision.shape != (d, d):
                raise CheckpointError(f"{path}: background Gaussian shapes "
                                      f"{tuple(self.background_mean.shape)}, "
                                      f"{tuple(self.background_precision.shape)} do not match "
                                      f"means of width {d}")
        return self


def _squared(z: Tensor, means: Tensor, precision: Tensor) -> Tensor:
    """(z - mu_c)^T P (z - mu_c) for every row of ``z`` (N, D) and mean (C, D): (N, C)."""
    diff = z[:, None, :] - means[None]
    return torch.einsum("ncd,de,nce->nc", diff, precision, diff)
