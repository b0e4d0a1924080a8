"""basin: robust image classification with out-of-distribution (OOD) rejection.

Audit your own model in a few lines::

    import basin
    report = basin.audit(model, detector, (x_test, y_test), {"noise": x_ood},
                         epsilons=(8 / 255,), attacks="strongest", calibration=x_val)
    print(report.to_markdown())

API overview (everything below is importable from ``basin`` directly)
---------------------------------------------------------------------
Data (``basin.data``)
    ``load_dataset(name, split)``, ``dataset_names()``, ``dataset_info(name)``,
    ``is_available(name)``, ``ImageDataset``: verified MNIST, Fashion-MNIST, CIFAR-10,
    CIFAR-10-bw, notMNIST, Omniglot, Tiny-ImageNet and seeded noise, float32 NCHW in [0, 1].
Models (``basin.models``)
    ``AttractorNet`` (the attractor paper's autoencoder with a softmax head on its
    bottleneck) and ``ConvAttractorNet`` (its convolutional variant); ``load_backbone``
    (basin's CIFAR-10 backbones); the ``FeatureClassifier`` protocol (features + logits) and
    its adapters ``LinearHeadClassifier`` (feature extractor + ``nn.Linear``) and
    ``LogitsClassifier`` (any logits model, features optional).
Detectors (``basin.detectors``)
    ``MSPDetector``, ``EnergyDetector``, ``ODINDetector``, ``MahalanobisDetector``,
    ``ZhouDetector``, ``ZhouFaithfulDetector`` (the official code's variant), ``KNNDetector``,
    ``CombinedDetector``, ``PixelAutoencoderDetector``, ``PearsonDetector``,
    all listed in ``DETECTORS``; one API, that of their base class ``Detector`` (``fit``,
    ``score``, ``calibrate``, ``predict``), scores *higher for in-distribution*.
    ``RejectOptionClassifier`` answers a class, or -1 where the detector rejects.
Attacks (``basin.attacks``)
    L-infinity ``FGSM``, ``PGD``, ``APGD`` (AutoAttack's step-size schedule) and ``Square``
    over pluggable objectives built by ``make_objective`` (``ce``, ``dlr``, ``margin``, the
    paper's cost, through the iteration loop, BPDA, and the detector-aware ``reject-id``,
    ``accept-ood``, ``end-to-end``); every attack takes ``keep=`` (first success, or each
    input's strongest point); ``parse_attack_spec`` reads specs such as
    ``"apgd:end-to-end:8/255:steps=100"``.
Robustness (``basin.robustness``)
    ``audit``: the system-level, detector-aware audit of any classifier + detector, returning
    an ``AuditReport`` of ``Record`` objects (one schema for every result basin reports);
    the system- and detector-level evaluation of the reproductions.
Also: ``basin.losses``, ``basin.training`` (attractor training), ``basin.corruptions``,
``basin.metrics``, ``basin.report`` (report builder and figures) and
``basin.reproductions`` (the paper reproductions).

The names are loaded on first use, so ``import basin`` (and the ``basin`` command's
``--help``) does not pay for torch, scikit-learn and matplotlib until something is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("ImageDataset", "dataset_info", "dataset_names", "is_available",
                     "load_dataset"), "basin.data"),
    "AttractorNet": "basin.models",
    "ConvAttractorNet": "basin.models.conv_attractor",
    "load_backbone": "basin.models.cifar",
    **dict.fromkeys(("FeatureClassifier", "LinearHeadClassifier", "LogitsClassifier"),
                    "basin.models.feature_classifier"),
    **dict.fromkeys(("DETECTORS", "CombinedDetector", "Detector", "EnergyDetector",
                     "KNNDetector", "MSPDetector", "MahalanobisDetector", "ODINDetector",
                     "PearsonDetector", "PixelAutoencoderDetector", "RejectOptionClassifier",
                     "ZhouDetector", "ZhouFaithfulDetector"),
                    "basin.detectors"),
    **dict.fromkeys(("APGD", "FGSM", "PGD", "Square", "make_objective", "parse_attack_spec"),
                    "basin.attacks"),
    "audit": "basin.robustness.audit",
    "AuditReport": "basin.robustness.audit_report",
    "Record": "basin.robustness.records",
}

__all__ = [
    "APGD",
    "DETECTORS",
    "FGSM",
    "PGD",
    "AttractorNet",
    "AuditReport",
    "CombinedDetector",
    "ConvAttractorNet",
    "Detector",
    "EnergyDetector",
    "FeatureClassifier",
    "ImageDataset",
    "KNNDetector",
    "LinearHeadClassifier",
    "LogitsClassifier",
    "MSPDetector",
    "MahalanobisDetector",
    "ODINDetector",
    "PearsonDetector",
    "PixelAutoencoderDetector",
    "Record",
    "RejectOptionClassifier",
    "Square",
    "ZhouDetector",
    "ZhouFaithfulDetector",
    "__version__",
    "audit",
    "dataset_info",
    "dataset_names",
    "is_available",
    "load_backbone",
    "load_dataset",
    "make_objective",
    "parse_attack_spec",
]

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and the import-graph test
    from basin.attacks import APGD, FGSM, PGD, Square, make_objective, parse_attack_spec
    from basin.data import ImageDataset, dataset_info, dataset_names, is_available, load_dataset
    from basin.detectors import (
        DETECTORS,
        CombinedDetector,
        Detector,
        EnergyDetector,
        KNNDetector,
        MahalanobisDetector,
        MSPDetector,
        ODINDetector,
        PearsonDetector,
        PixelAutoencoderDetector,
        RejectOptionClassifier,
        ZhouDetector,
        ZhouFaithfulDetector,
    )
    from basin.models import AttractorNet
    from basin.models.cifar import load_backbone
    from basin.models.conv_attractor import ConvAttractorNet
    from basin.models.feature_classifier import (
        FeatureClassifier,
        LinearHeadClassifier,
        LogitsClassifier,
    )
    from basin.robustness.audit import audit
    from basin.robustness.audit_report import AuditReport
    from basin.robustness.records import Record


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'basin' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
