"""OOD detectors, one per file, behind the API of :mod:`basin.detectors.base`."""

from basin.detectors.base import Detector, DetectorError, threshold_for_acceptance
from basin.detectors.combined import CombinedDetector
from basin.detectors.energy import EnergyDetector
from basin.detectors.knn import KNNDetector
from basin.detectors.mahalanobis import MahalanobisDetector
from basin.detectors.msp import MSPDetector
from basin.detectors.odin import ODINDetector
from basin.detectors.pearson import PearsonDetector, pearson_correlation
from basin.detectors.pixel_autoencoder import PixelAutoencoderDetector
from basin.detectors.registry import DETECTORS, detector_class
from basin.detectors.reject import RejectOptionClassifier, RejectOptionResult
from basin.detectors.zhou import ZhouDetector
from basin.detectors.zhou_faithful import ZhouFaithfulDetector

__all__ = ["Detector", "DetectorError", "threshold_for_acceptance"]
__all__ += ["PearsonDetector", "RejectOptionClassifier", "RejectOptionResult",
            "pearson_correlation"]
__all__ += ["CombinedDetector", "EnergyDetector", "KNNDetector", "MSPDetector",
            "MahalanobisDetector",
            "ODINDetector", "PixelAutoencoderDetector", "ZhouDetector", "ZhouFaithfulDetector"]
__all__ += ["DETECTORS", "detector_class"]
