"""OOD detectors, one per file, behind the API of :mod:`basin.detectors.base`."""

from basin.detectors.base import Detector, DetectorError, threshold_for_acceptance

__all__ = ["Detector", "DetectorError", "threshold_for_acceptance"]
