"""The ablation's protocol: the readings of the attractor paper, the grid, what is measured.

The paper (Alipour & SeyyedSalehi) leaves several choices open that change its Table 2 by tens
of points (issue 14). A *reading* is one way of filling them in, written as changes to the
``paper-attractor`` (or ``paper-baseline``) preset; a *cell* is one reading trained with one
seed and measured under the paper's protocol (T = 0.8, FGSM with the paper's objective and
with cross-entropy at 20/255 on ID and OOD inputs, Fashion-MNIST and CIFAR-10-bw) at every
number of iterations ``n`` of G before the Pearson score (an evaluation-only axis: one
training, several measurements).

The full factorial (3 activations x 2 schedules x 2 reductions x eigen scales x 2
initialisations x seeds) is far beyond a 2-core CPU, so the grid is fractional: one factor
at a time around the literal
reading, one factor at a time around the best reading the issue reported (sigmoid output,
joint training), and the baseline only at its literal reading (Table 1). ``READINGS`` is in
priority order; a plan runs a prefix or a named selection of it.

Imports nothing of :mod:`.run`, :mod:`.tables` or :mod:`.report`: data flows one way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from basin.distributed import Cell
from basin.reproductions.attractor.protocol import (
    FGSM_CE,
    FGSM_PAPER,
    PAPER_ATTACKS,
    PAPER_OOD,
    PAPER_RESULTS,
)
from basin.training import PRESETS, TrainConfig

ID_DATASET = "mnist"
THRESHOLD = 0.8            # the paper's T
EVAL_SEED = 0              # the same test subsets for every cell: paired comparisons
TARGET_WITHIN = 0.02       # the target: the paper's numbers within 2 points
ATTACKS = PAPER_ATTACKS
OOD_SETS = PAPER_OOD


@dataclass(frozen=True)
class Reading:
    """One way of filling in what the paper leaves open.

    ``changes`` are TrainConfig overrides of the network's preset; ``why`` quotes or cites
    the paper's text that makes the reading plausible.
    """

    name: str
    network: str             # "attractor" | "baseline"
    changes: Mapping[str, Any]
    why: str
    around: str              # "literal" or "sigmoid-joint": the centre it varies one factor of
    max_seeds: int | None = None   # readings that are costly or only a control: fewer seeds

    def config(self, seed: int, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
        """The preset with the plan's ``overrides``, then this reading's changes (which win:
        a control reading can undo a budget override), then ``seed``."""
        base = PRESETS["paper-attractor" if self.network == "attractor" else "paper-baseline"]
        return base.replace(**{**dict(overrides or {}), **dict(self.changes)}, seed=seed)


_ATT = (0.988, 0.002, 0.01)
_RELU_WHY = "Sec. 2.5.1: 'The autoencoder layers use the ReLU activation function'"
READINGS: tuple[Reading, ...] = (
    Reading("literal", "attractor", {}, f"{_RELU_WHY}; Sec. 2.4 and Fig. 3: layer-wise "
            "pretraining; Eq. 4: 'the mean squared error'", "literal"),
    Reading("literal-exact", "attractor", {"jacobian": "exact-fast"},
            "control: the literal reading with the exact Jacobian the paper computes, against "
            "the grid's one-projection estimator", "literal", max_seeds=1),
    Reading("sigmoid-joint-exact", "attractor",
            {"output_activation": "sigmoid", "pretrain": False, "jacobian": "exact-fast"},
            "control: sigmoid-joint with the exact Jacobian (the issue's run of this reading "
            "accepted 62.8%)", "sigmoid-joint", max_seeds=1),
    Reading("baseline", "baseline", {"jacobian": "exact-fast"},
            "Sec. 3.1.3 baseline, literal reading (Table 1; no eigen term, so no Jacobian)",
            "literal", max_seeds=1),
    Reading("sigmoid-joint", "attractor", {"output_activation": "sigmoid", "pretrain": False},
            "images lie in [0, 1]; the issue's prototype (sigmoid, joint) accepted 82.6%",
            "sigmoid-joint"),
    Reading("joint", "attractor", {"pretrain": False},
            "pretraining only helps convergence (Sec. 2.4, citing He et al.)", "literal"),
    Reading("sigmoid-joint-sum", "attractor",
            {"output_activation": "sigmoid", "pretrain": False, "mse_reduction": "sum"},
            "'mean squared error' may be a per-image sum (Keras/MATLAB 'sse'), 784x the "
            "weight on reconstruction", "sigmoid-joint"),
    Reading("sum", "attractor", {"mse_reduction": "sum"},
            "as sigmoid-joint-sum, at the literal reading", "literal"),
    Reading("clamp-joint", "attractor", {"output_activation": "clamp", "pretrain": False},
            "a ReLU output capped at 1, the pixel range", "sigmoid-joint"),
    Reading("sigmoid", "attractor", {"output_activation": "sigmoid"},
            "sigmoid output with the paper's layer-wise pretraining", "literal"),
    Reading("sigmoid-joint-eigen10", "attractor",
            {"output_activation": "sigmoid", "pretrain": False,
             "weights": (_ATT[0], 10 * _ATT[1], _ATT[2])},
            "Eq. 5's 1/2 sum over the Jacobian may be scaled otherwise (10x the eigen term)",
            "sigmoid-joint"),
    Reading("clamp", "attractor", {"output_activation": "clamp"},
            "clamp output with the paper's layer-wise pretraining", "literal"),
    Reading("glorot", "attractor", {"init": "glorot"},
            "the paper gives no initialisation; Keras's Dense default (Glorot-uniform, zero "
            "biases) instead of PyTorch's", "literal"),
    Reading("sigmoid-joint-sum-glorot", "attractor",
            {"output_activation": "sigmoid", "pretrain": False, "mse_reduction": "sum",
             "init": "glorot"},
            "the best reading (sigmoid-joint-sum) with Keras's initialisation", "sigmoid-joint"),
    # around sigmoid-joint-sum-glorot, the closest reading: which of its four choices matter
    Reading("sum-glorot", "attractor", {"mse_reduction": "sum", "init": "glorot"},
            "only the two choices the paper does not state (MSE reduction, initialisation); "
            "its ReLU output and layer-wise pretraining kept", "literal"),
    Reading("sigmoid-sum-glorot", "attractor",
            {"output_activation": "sigmoid", "mse_reduction": "sum", "init": "glorot"},
            "sigmoid-joint-sum-glorot with the paper's layer-wise pretraining", "sigmoid-joint"),
    Reading("joint-sum-glorot", "attractor",
            {"pretrain": False, "mse_reduction": "sum", "init": "glorot"},
            "sigmoid-joint-sum-glorot with the paper's ReLU output", "sigmoid-joint"),
    Reading("sigmoid-joint-glorot", "attractor",
            {"output_activation": "sigmoid", "pretrain": False, "init": "glorot"},
            "sigmoid-joint-sum-glorot with the mean MSE", "sigmoid-joint"),
    Reading("sigmoid-joint-sum-glorot-exact", "attractor",
            {"output_activation": "sigmoid", "pretrain": False, "mse_reduction": "sum",
             "init": "glorot", "jacobian": "exact-fast"},
            "control: the closest reading with the exact Jacobian the paper computes",
            "sigmoid-joint", max_seeds=1),
)
READING_NAMES = tuple(r.name for r in READINGS)
STEPS = (1, 2, 5)          # n of G^n(x) before the Pearson score (Eq. 6)
# The grid's training budget: the exact ||J||_F^2 of every sample is what makes a cell cost
# 10-40 minutes on this shared CPU; the one-projection estimator is unbiased for it (method
# notes) and costs about a forward pass. The 'literal-exact' control measures what it changes.
BUDGET: dict[str, Any] = {"jacobian": "projection", "projections": 1}


def reading(name: str) -> Reading:
    """The reading called ``name``; ValueError listing the known ones otherwise."""
    for r in READINGS:
        if r.name == name:
            return r
    raise ValueError(f"readings: unknown {name!r}; choose from {list(READING_NAMES)}")


@dataclass
class AblationPlan:
    """Which cells run and how big everything is (recorded in results.json).

    ``seeds`` training seeds per attractor reading starting at ``seed``; the baseline costs
    about 20 minutes a seed on this CPU, so it gets ``baseline_seeds``. ``train`` overrides
    every cell's TrainConfig (quick sizes); ``eval_limit`` ID and OOD test inputs per set (a
    seeded subset shared by all cells, None: all 10,000).
    """

    quick: bool
    readings: tuple[str, ...] = READING_NAMES
    seeds: int = 3
    seed: int = 0
    baseline_seeds: int = 1
    steps: tuple[int, ...] = STEPS
    eval_limit: int | None = 2000
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.readings = tuple(self.readings)
        self.steps = tuple(int(s) for s in self.steps)
        for name in self.readings:
            reading(name)
        if len(set(self.readings)) != len(self.readings) or not self.readings:
            raise ValueError(f"readings: need distinct names, got {list(self.readings)}")
        for name in ("seeds", "baseline_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed: must be >= 0, got {self.seed}")
        if not self.steps or min(self.steps) < 1 or self.steps[0] != 1:
            raise ValueError(f"steps: need iteration counts >= 1 starting with 1, got "
                             f"{list(self.steps)}")

    @classmethod
    def make(cls, quick: bool, *, seeds: int | None = None, seed: int = 0,
             readings: Sequence[str] | None = None) -> AblationPlan:
        if not quick:
            return cls(quick=False, seeds=seeds or 3, seed=seed, eval_limit=1000,
                       readings=tuple(readings or READING_NAMES), train=dict(BUDGET))
        return cls(quick=True, seeds=seeds or 2, seed=seed, eval_limit=300,
                   readings=tuple(readings or ("literal", "sigmoid-joint", "sigmoid-joint-sum",
                                               "baseline")),
                   train={**BUDGET, "train_size": 300, "val_size": 500, "max_epochs": 2})

    @classmethod
    def tiny(cls, seed: int = 0) -> AblationPlan:
        """Seconds: the integration test of the whole pipeline."""
        return cls(quick=True, seeds=2, seed=seed, eval_limit=40, steps=(1, 2),
                   readings=("literal", "sigmoid-joint-sum", "baseline"),
                   train={**BUDGET, "train_size": 64, "val_size": 64, "max_epochs": 1})

    def seeds_of(self, name: str) -> list[int]:
        r = reading(name)
        n = self.baseline_seeds if r.network == "baseline" else self.seeds
        return list(range(self.seed, self.seed + min(n, r.max_seeds or n)))

    def cells(self) -> list[Cell]:
        """Reading-major, so that a stopped grid leaves whole readings, not scattered seeds."""
        return [Cell(model=name, condition="paper-protocol", params={"seed": s})
                for name in self.readings for s in self.seeds_of(name)]

    def train_config(self, name: str, seed: int) -> TrainConfig:
        r = reading(name)
        overrides = dict(self.train)
        if r.network == "baseline" and "train_size" in overrides:
            # the baseline keeps its 50x larger training set in quick plans too
            overrides["train_size"] = 5 * overrides["train_size"]
        return r.config(seed, overrides)

    def to_json(self) -> dict[str, Any]:
        return {"quick": self.quick, "readings": list(self.readings), "seeds": self.seeds,
                "seed": self.seed, "baseline_seeds": self.baseline_seeds,
                "steps": list(self.steps), "eval_limit": self.eval_limit, "train": self.train}


def objective_weights(config: TrainConfig) -> tuple[float, float, float]:
    """(a1, a2, a3) of the paper's FGSM objective, 'the cost function used to train the
    model': the objective averages squared errors per sample, so a 'sum' reading multiplies
    a1 by the 784 pixels."""
    a1, a2, a3 = config.weights
    if config.mse_reduction == "sum":
        a1 *= config.widths[-1]
    return (a1, a2, a3)


@dataclass(frozen=True)
class Target:
    """One published number and the record that measures it."""

    claim: str
    label: str
    condition: str
    dataset: str
    metric: str
    paper: float


def targets(network: str) -> list[Target]:
    """The paper's numbers for ``network``: accuracies, then Table 1 or 2 (acc/prec/rec)."""
    paper = PAPER_RESULTS[network]
    table = "Table 1" if network == "baseline" else "Table 2"
    out = [Target("clean accuracy", "clean accuracy", "clean", ID_DATASET, "accuracy",
                  paper["clean_accuracy"]),
           Target("FGSM accuracy", "FGSM (paper) accuracy", FGSM_PAPER, ID_DATASET,
                  "accuracy", paper["fgsm_accuracy"])]
    for ood in OOD_SETS:
        for cond, key, when in (("clean", "clean", "without attack"),
                                (FGSM_PAPER, "fgsm", "under FGSM")):
            for metric, value in zip(("accuracy", "precision", "recall"),
                                     paper["detection"][ood][key], strict=True):
                out.append(Target(f"{table} {when}", f"{ood} {metric} ({when})", cond, ood,
                                  metric, value))
    return out


__all__ = ["ATTACKS", "EVAL_SEED", "FGSM_CE", "FGSM_PAPER", "ID_DATASET", "OOD_SETS",
           "READINGS", "READING_NAMES", "STEPS", "TARGET_WITHIN", "THRESHOLD", "AblationPlan",
           "Reading", "Target", "objective_weights", "reading", "targets"]
