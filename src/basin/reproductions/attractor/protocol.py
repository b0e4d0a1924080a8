"""The attractor paper's protocol: its constants, its published numbers, the plan, result types.

The bottom of the reproduction: :mod:`.run` produces :class:`NetworkResults` under a
:class:`ReproductionPlan`, :mod:`.tables` turns them into tables and :mod:`.report` writes
them; nothing here imports any of those, so the data flows one way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from basin.models import AttractorNet
from basin.robustness.evaluation import EvaluationResult
from basin.training import PRESETS, TrainConfig

NETWORKS = ("baseline", "attractor")
PAPER_OOD = ("fashion-mnist", "cifar10-bw")
EXTRA_OOD = ("notmnist", "omniglot")
PAPER_EPS = "20/255"
PAPER_ATTACKS = (f"fgsm:paper:{PAPER_EPS}", f"fgsm:ce:{PAPER_EPS}")
SWEEP_EPS = ("1/255", "2/255", "3/255", "4/255", "5/255", "6/255", "7/255", "8/255", "9/255",
             "10/255", "20/255")
QUICK_SWEEP_EPS = ("1/255", "5/255", "10/255", "20/255")
FIG12_EPS = (0.0, 5 / 255, 10 / 255, 20 / 255, 50 / 255, 100 / 255)
CALIBRATION_ACCEPTANCE = 0.95   # ID validation acceptance of the calibrated threshold
LOOP_OBJECTIVES = ("through-loop", "through-loop-bpda")
FGSM_PAPER = "fgsm:paper:20/255"
FGSM_CE = "fgsm:ce:20/255"
HOLDS_WITHIN = 0.05  # a robustness claim "holds" if accuracy drops by at most 5 points
DETECTION = ("accuracy", "precision", "recall")

# The paper's numbers (section 3.2, Tables 1 and 2): accuracy, precision, recall at T = 0.8.
PAPER_RESULTS: dict[str, Any] = {
    "baseline": {"clean_accuracy": 0.9817, "fgsm_accuracy": 0.2784, "detection": {
        "fashion-mnist": {"clean": (0.9915, 0.9915, 0.9915), "fgsm": (0.8884, 0.9967, 0.7793)},
        "cifar10-bw": {"clean": (0.9950, 0.9984, 0.9915), "fgsm": (0.8893, 0.9991, 0.7793)}}},
    "attractor": {"clean_accuracy": 0.8873, "fgsm_accuracy": 0.8713, "detection": {
        "fashion-mnist": {"clean": (0.9884, 0.9867, 0.9901), "fgsm": (0.9848, 0.9890, 0.9804)},
        "cifar10-bw": {"clean": (0.9928, 0.9955, 0.9901), "fgsm": (0.9888, 0.9971, 0.9804)}}},
}


@dataclass
class ReproductionPlan:
    """Every size that ``--quick`` changes, recorded in results.json."""

    quick: bool
    seed: int = 0
    train: dict[str, dict[str, Any]] = field(default_factory=dict)   # network -> overrides
    eval_limit: int | None = None           # ID and OOD test inputs for the paper's tables
    adaptive_limit: int | None = 1000       # inputs per dataset for the adaptive attacks
    sweep_limit: int | None = 2000
    sweep_eps: Sequence[str] = SWEEP_EPS
    pgd_steps: int = 40
    square_queries: int = 1000
    loop_steps: int = 1                     # n of G^n(x) in the detector (the paper: n = 1)
    diagnostic_samples: int = 200           # training samples for the attractor statistics

    @classmethod
    def tiny(cls, seed: int = 0) -> ReproductionPlan:
        """Seconds, not minutes: for the integration test of the whole pipeline."""
        return cls(quick=True, seed=seed,
                   train={"baseline": {"seed": seed, "train_size": 500, "val_size": 300,
                                       "max_epochs": 1},
                          "attractor": {"seed": seed, "train_size": 200, "val_size": 300,
                                        "max_epochs": 1}},
                   eval_limit=48, adaptive_limit=24, sweep_limit=24,
                   sweep_eps=("5/255", "20/255"), pgd_steps=3, square_queries=30,
                   diagnostic_samples=4)

    @classmethod
    def make(cls, quick: bool, seed: int = 0) -> ReproductionPlan:
        if not quick:
            return cls(quick=False, seed=seed,
                       train={"baseline": {"seed": seed}, "attractor": {"seed": seed}})
        return cls(quick=True, seed=seed,
                   train={"baseline": {"seed": seed, "train_size": 5000, "val_size": 2000,
                                       "max_epochs": 3},
                          "attractor": {"seed": seed, "val_size": 2000, "max_epochs": 3}},
                   eval_limit=500, adaptive_limit=200, sweep_limit=300,
                   sweep_eps=QUICK_SWEEP_EPS, pgd_steps=10, square_queries=300,
                   diagnostic_samples=50)

    def train_config(self, network: str) -> TrainConfig:
        base = PRESETS["paper-baseline" if network == "baseline" else "paper-attractor"]
        return base.replace(**self.train[network])

    def adaptive_attacks(self) -> list[str]:
        eps, steps = PAPER_EPS, self.pgd_steps
        return [f"pgd:ce:{eps}:steps={steps}", f"pgd:through-loop:{eps}:steps={steps}",
                f"pgd:through-loop-bpda:{eps}:steps={steps}",
                f"square:ce:{eps}:queries={self.square_queries}",
                f"pgd:reject-id:{eps}:steps={steps}", f"pgd:end-to-end:{eps}:steps={steps}"]

    def loop_attacks(self) -> list[str]:
        """The adaptive attacks that differentiate F(G^n(x)), the iterate's classification."""
        return [a for a in self.adaptive_attacks() if a.split(":")[1] in LOOP_OBJECTIVES]


@dataclass
class NetworkResults:
    name: str
    net: AttractorNet
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: Any
    paper: EvaluationResult          # clean + the paper's FGSM, all OOD sets
    adaptive: EvaluationResult       # stronger attacks on a subset
    sweep: dict[str, EvaluationResult]   # epsilon -> FGSM (paper, ce) and PGD (ce)
    diagnostics: dict[str, Any]
    train_seconds: float
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # the through-loop attacks against a system that classifies F(G^n(x)) (white-box there)
    loop_white_box: EvaluationResult | None = None
    # threshold fitted on MNIST validation images: threshold, acceptance, n_val
    calibration: dict[str, Any] = field(default_factory=dict)
