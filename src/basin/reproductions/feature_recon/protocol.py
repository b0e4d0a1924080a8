"""The feature-reconstruction paper's protocol (Mulé & Shaner): constants, plans, result type.

The bottom of the reproduction: :mod:`.run` fills a :class:`BackboneRun` per backbone under a
:class:`Plan`, :mod:`.tables` turns the runs into tables and :mod:`.report` writes them;
nothing here imports any of those. The image sets are those of :mod:`basin.data.cifar_sets`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from basin.data.cifar_sets import NATURAL_OOD
from basin.detectors import Detector
from basin.robustness.detector_level import DetectorRobustness

CORRUPTIONS = ("gaussian-noise", "salt-and-pepper", "brightness", "contrast", "pixel-dropout")
SEVERITY = 3
FGSM_EPS = 8 / 255
DETECTORS = ("msp", "odin", "energy", "mahalanobis", "mahalanobis_pp", "mahalanobis_rel",
             "knn", "pixel_autoencoder", "zhou", "combined", "zhou_faithful", "combined_faithful")
# Mahalanobis and its two published repairs (basin.detectors.mahalanobis): constructor options
MAHALANOBIS_VARIANTS = {"mahalanobis": {}, "mahalanobis_pp": {"normalize": True},
                        "mahalanobis_rel": {"relative": True}}
# ODIN's Tiny-ImageNet (resize): the paper's Table 1 OOD set, with LSUN (resize) beside it
TINY_RESIZE, LSUN_RESIZE = NATURAL_OOD
ROBUST_FAR = "fashion-mnist"
ACCEPTANCE = 0.95
BATCH = 250
ATTACK_FIELDS = ("robust_n", "pgd_steps", "robust_eps", "square_n", "square_queries",
                 "attack_precision", "attacks", "keys")
# Table 1 of Mulé & Shaner: OoD accuracy and anomaly accuracy (%), ID CIFAR-10, OOD
# Tiny-ImageNet (resized), anomalies = the six perturbations of CIFAR-10.
TINY = "tiny-imagenet"
PAPER_TABLE1 = {"pixel_autoencoder": ("Simple Autoencoder", 15.89, 70.84),
                "zhou": ("Zhou's Method", 99.93, 85.05),
                "combined": ("Combined Method", 99.90, 95.94)}
OTHER_NAMES = {"msp": "MSP (Hendrycks & Gimpel)", "odin": "ODIN", "energy": "Energy",
               "mahalanobis": "Mahalanobis",
               "mahalanobis_pp": "Mahalanobis++ (normalised features)",
               "mahalanobis_rel": "Relative Mahalanobis (Ren et al.)",
               "knn": "KNN (Sun et al., k=50)",
               "zhou_faithful": "Zhou, official code's variant",
               "combined_faithful": "Combined (official-code Zhou x MSP)"}
ATOM_REFERENCE = ("Published reference for the shape of this table: MSP on CIFAR-10 drops "
                  "from AUROC 91.8 to 13.8 under PGD-40 at 8/255 on OOD inputs (Chen et al., "
                  "ATOM).")
TABLE_IDS = ("table1", "backbones", "metrics", "robustness", "odin", "zhou-fit", "sets")


@dataclass
class Plan:
    """Every size a plan changes, recorded in results.json (None: the whole split)."""

    name: str
    seed: int = 0
    widths: tuple[int, int, int] | None = None       # None: airbench's (64, 256, 256)
    train_limit: int | None = None
    epochs: int = 12
    epochs6: int = 8
    batch_size: int | None = None
    val_limit: int | None = None
    test_limit: int | None = None
    ood_limit: int | None = 3000
    near_limit: int | None = None
    anomaly_limit: int | None = 3000
    odin_n: int = 300
    odin_temperatures: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)
    odin_epsilons: tuple[float, ...] = (0.0, 0.0007, 0.0014, 0.0028, 0.004)
    ae_epochs: int = 10
    zhou_epochs: int = 30
    zhou_hidden: tuple[int, int] | None = None        # None: Zhou's (D, D) and (512, 256)
    zhou_faithful_epochs: int = 100                   # Zhou's code: 300 (CPU budget)
    knn_k: int = 50
    # backbone cross-entropy label smoothing; None: the airbench recipe's 0.2
    label_smoothing: float | None = None
    # which backbones run: the 10-class one (far-OOD, anomalies) and the 6-class (near-OOD)
    keys: tuple[str, ...] = ("cifar10", "cifar6")
    attacks: bool = True                              # False: the detector stage only
    robust_n: int = 500
    pgd_steps: int = 40
    robust_eps: tuple[float, ...] = (1 / 255, 8 / 255)
    square_n: int = 100
    square_queries: int = 300
    # fp32: bf16 autocast steps are ~1.5x faster but measured slightly weaker at 1/255
    # (benchmarks/attack_precision.py), and a robustness number needs the strongest attack
    attack_precision: str = "fp32"

    def __post_init__(self) -> None:
        if "cifar10" not in self.keys or not set(self.keys) <= {"cifar10", "cifar6"}:
            raise ValueError(f"keys: must hold 'cifar10' and optionally 'cifar6', got "
                             f"{self.keys!r}")
        if self.label_smoothing is not None and not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")

    @classmethod
    def make(cls, name: str, seed: int = 0) -> Plan:
        if name == "full":
            return cls("full", seed)
        if name == "quick":
            return cls("quick", seed, train_limit=8000, epochs=2, epochs6=2, val_limit=1000,
                       test_limit=1000, ood_limit=300, near_limit=500, anomaly_limit=300,
                       odin_n=100, odin_temperatures=(1.0, 100.0, 1000.0),
                       odin_epsilons=(0.0, 0.0014, 0.0028), ae_epochs=2, zhou_epochs=10,
                       zhou_faithful_epochs=20,
                       robust_n=64, pgd_steps=10, square_n=32, square_queries=100,
                       attack_precision="auto")
        if name == "tiny":
            return cls("tiny", seed, widths=(16, 32, 32), train_limit=256, epochs=1, epochs6=1,
                       batch_size=128, val_limit=64, test_limit=64, ood_limit=32,
                       near_limit=32, anomaly_limit=32, odin_n=32,
                       odin_temperatures=(1.0, 1000.0), odin_epsilons=(0.0, 0.0014),
                       ae_epochs=1, zhou_epochs=2, zhou_faithful_epochs=2,
                       zhou_hidden=(32, 32), knn_k=5, robust_n=16,
                       pgd_steps=3, square_n=8, square_queries=20)
        raise ValueError(f"plan: expected 'full', 'quick' or 'tiny', got {name!r}")


@dataclass
class BackboneRun:
    """One backbone with its detectors, thresholds and every score it produced."""

    key: str                                  # "cifar10" or "cifar6"
    folder: Path
    model: Any
    classes: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)
    detectors: dict[str, Detector] = field(default_factory=dict)
    # set name -> (kind, {detector: scores}); kinds: id, id-val, far-ood, near-ood, anomaly
    scores: dict[str, tuple[str, dict[str, np.ndarray]]] = field(default_factory=dict)
    examples: dict[str, Tensor] = field(default_factory=dict)
    zhou_fit: dict[str, Any] = field(default_factory=dict)
    odin_tuning: dict[str, Any] = field(default_factory=dict)
    # detector -> its records under attack (the OOD set is the records' dataset)
    robustness: dict[str, DetectorRobustness] = field(default_factory=dict)
