"""The interface feature-based OOD detectors need from a classifier.

MSP, ODIN, Energy, Mahalanobis and Zhou's feature reconstruction all look at a classifier
through two maps: the penultimate *features* ``f = features(x)`` of shape (N, D) and the
*logits* computed from them, ``logits_from_features(f)`` of shape (N, C). Any pretrained model
that exposes those two (a CIFAR-10 backbone of basin's own, or one a user brings) can be
plugged into every detector; :class:`LinearHeadClassifier` adapts the common case of a
feature extractor followed by one ``nn.Linear``, and :class:`LogitsClassifier` any model
that only returns logits (features optional).

The detectors never switch the model between train and eval mode: put it in ``eval()``
before fitting or scoring (batch-norm statistics must not move while scores are computed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@runtime_checkable
class FeatureClassifier(Protocol):
    """A classifier exposing penultimate features and the logits computed from them.

    ``logits(x)`` must equal ``logits_from_features(features(x))``; all three maps must be
    differentiable with respect to their input so that attacks can go through detectors.
    """

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features, shape (N, D)."""
        ...

    def logits_from_features(self, f: Tensor) -> Tensor:
        """Class logits from features, shape (N, C)."""
        ...

    def logits(self, x: Tensor) -> Tensor:
        """Class logits from inputs, shape (N, C)."""
        ...


def check_feature_classifier(model: object, name: str = "model") -> FeatureClassifier:
    """Return ``model`` if it implements :class:`FeatureClassifier`, else raise TypeError."""
    if not isinstance(model, FeatureClassifier):
        missing = [m for m in ("features", "logits_from_features", "logits")
                   if not callable(getattr(model, m, None))]
        raise TypeError(f"{name}: {type(model).__name__} is not a FeatureClassifier "
                        f"(missing method(s) {missing}); wrap a (backbone, linear head) pair "
                        "in basin.models.feature_classifier.LinearHeadClassifier")
    return model


class LinearHeadMixin:
    """``logits_from_features``, ``logits`` and ``forward`` for a module whose class defines
    ``features(x)`` and a linear ``head`` (optionally scaled by ``logit_scale``).

    Put it before ``nn.Module`` in the bases, so that its ``forward`` is the one used.
    """

    head: nn.Linear
    logit_scale: float = 1.0

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    @property
    def n_classes(self) -> int:
        return self.head.out_features

    def logits_from_features(self, f: Tensor) -> Tensor:
        dim = self.head.in_features
        if f.dim() != 2 or f.shape[1] != dim:
            raise ValueError(f"features: expected shape (N, {dim}), got {tuple(f.shape)}")
        logits = self.head(f)
        return logits if self.logit_scale == 1.0 else logits * self.logit_scale

    def logits(self, x: Tensor) -> Tensor:
        return self.logits_from_features(self.features(x))  # type: ignore[attr-defined]

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(x)


class LinearHeadClassifier(LinearHeadMixin, nn.Module):
    """Adapt a (feature extractor, linear head) pair to :class:`FeatureClassifier`.

    Args:
        feature_extractor: module mapping inputs to features; any output shape (N, ...)
            is flattened to (N, D), so a backbone ending in global pooling with shape
            (N, D, 1, 1) works as is.
        head: the final ``nn.Linear(D, C)``.

    ``forward(x)`` returns the logits, so the wrapper is also an ordinary classifier.
    """

    def __init__(self, feature_extractor: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        if not isinstance(feature_extractor, nn.Module):
            raise TypeError(f"feature_extractor: expected an nn.Module, got "
                            f"{type(feature_extractor).__name__}")
        if not isinstance(head, nn.Linear):
            raise TypeError(f"head: expected an nn.Linear, got {type(head).__name__}")
        self.feature_extractor = feature_extractor
        self.head = head

    def features(self, x: Tensor) -> Tensor:
        f = self.feature_extractor(x)
        f = f.reshape(f.shape[0], -1)
        if f.shape[1] != self.head.in_features:
            raise ValueError(f"feature_extractor: produced {f.shape[1]} features per input, "
                             f"the head expects {self.head.in_features}")
        return f


class LogitsClassifier(nn.Module):
    """Adapt *any* model that maps inputs to logits to :class:`FeatureClassifier`.

    Every detector and the audit then work on models basin has never seen. Features are
    optional: with ``features`` and ``head`` given, ``features(x)`` is the penultimate layer
    and ``head`` maps it to the logits (``model`` is then only used for ``forward``); without
    them the logits themselves serve as the features and ``logits_from_features`` is the
    identity, which keeps ``logits(x) == logits_from_features(features(x))`` exact (MSP,
    Energy and ODIN are unchanged; Mahalanobis then models the logit space).

    Args:
        model: ``nn.Module`` (or callable) mapping a batch to logits (N, C); a model with a
            ``logits`` method is called through it.
        features: optional callable ``x -> (N, D)`` penultimate features.
        head: optional callable ``(N, D) -> (N, C)``; required together with ``features``.
    """

    def __init__(self, model: nn.Module, features: Callable[[Tensor], Tensor] | None = None,
                 head: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model: expected a callable nn.Module, got {type(model).__name__}")
        if (features is None) != (head is None):
            raise TypeError("features, head: give both (penultimate features and the map to "
                            "logits) or neither (the logits are then the features)")
        self.model = model
        self._features = features
        self._head = head

    def logits(self, x: Tensor) -> Tensor:
        if self._features is not None and self._head is not None:
            return self.logits_from_features(self.features(x))
        inner = getattr(self.model, "logits", None)
        out = inner(x) if callable(inner) else self.model(x)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"model: must return logits of shape ({x.shape[0]}, n_classes), "
                             f"got {got}")
        return out

    def features(self, x: Tensor) -> Tensor:
        if self._features is None:
            return self.logits(x)
        f = self._features(x)
        return f.reshape(f.shape[0], -1)

    def logits_from_features(self, f: Tensor) -> Tensor:
        return f if self._head is None else self._head(f)

    def probabilities(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(x)


def as_feature_classifier(model: object) -> FeatureClassifier:
    """``model`` itself if it is a :class:`FeatureClassifier`, else a :class:`LogitsClassifier`
    around it (the logits then double as features)."""
    if isinstance(model, FeatureClassifier):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module returning logits, got "
                        f"{type(model).__name__}")
    return LogitsClassifier(model)


@torch.no_grad()
def extract_features(model: FeatureClassifier, x: Tensor, batch_size: int = 512) -> Tensor:
    """``model.features(x)`` in batches without a graph, e.g. to cache features once."""
    check_feature_classifier(model)
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if len(x) == 0:
        raise ValueError("x: cannot extract features of an empty batch")
    return torch.cat([model.features(x[i:i + batch_size]).detach()
                      for i in range(0, len(x), batch_size)])
