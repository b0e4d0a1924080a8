"""Zhou's detector as the feature-recon reproduction fits it (shared by :mod:`.run` and
:mod:`.feature_only`, so both fit the same detector from the same features)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from basin.data import ImageDataset
from basin.detectors import ZhouDetector, ZhouFaithfulDetector
from basin.reproductions.feature_recon.protocol import Plan


def fit_zhou(name: str, model: Any, plan: Plan, data: dict[str, ImageDataset],
             feats: dict[str, Tensor]) -> ZhouDetector:
    """Zhou's detector (``zhou``) or the official code's variant (``zhou_faithful``) as the
    plan sizes it, trained on the training features, normals fitted on validation ones."""
    cls, epochs = ((ZhouDetector, plan.zhou_epochs) if name == "zhou" else
                   (ZhouFaithfulDetector, plan.zhou_faithful_epochs))
    train, val, hidden = data["train"], data["val"], plan.zhou_hidden
    zhou = cls(model, n_classes=len(train.classes), epochs=epochs, seed=plan.seed,
               d1_hidden=hidden, d2_hidden=hidden or (512, 256))
    # official-file indices of the images behind each feature row, for provenance
    return zhou.fit_features(feats["train"], train.labels, feats["val"],
                             val_indices=val.indices, train_indices=train.indices)
