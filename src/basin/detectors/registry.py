"""``DETECTORS``: every OOD detector basin ships, by its ``name``.

One table that the CLI, the audit and the detector tests share, so that a new detector is
tested against the common API contract (score shape, calibration, ``predict``, gradients)
as soon as it is listed here; the names are the detectors' own ``name`` class attributes.
"""

from __future__ import annotations

from basin.detectors.base import Detector
from basin.detectors.combined import CombinedDetector
from basin.detectors.energy import EnergyDetector
from basin.detectors.knn import KNNDetector
from basin.detectors.mahalanobis import MahalanobisDetector
from basin.detectors.msp import MSPDetector
from basin.detectors.odin import ODINDetector
from basin.detectors.pearson import PearsonDetector
from basin.detectors.pixel_autoencoder import PixelAutoencoderDetector
from basin.detectors.zhou import ZhouDetector
from basin.detectors.zhou_faithful import ZhouFaithfulDetector

DETECTORS: dict[str, type[Detector]] = {cls.name: cls for cls in (
    MSPDetector, EnergyDetector, ODINDetector, MahalanobisDetector, KNNDetector, ZhouDetector,
    ZhouFaithfulDetector, CombinedDetector, PixelAutoencoderDetector, PearsonDetector)}


def detector_class(name: str) -> type[Detector]:
    """The detector class called ``name``; ValueError listing the known names otherwise."""
    try:
        return DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose from {sorted(DETECTORS)}") from None
