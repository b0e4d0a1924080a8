"""What an attractor-network training run is: ``TrainConfig`` and the named presets.

The defaults are the attractor paper's schedule (sections 2.5.2, 3.1.2, 3.1.3): a
784-500-300-300-300-500-784 autoencoder with a 10-way head, three layer-wise pretraining
stages and one fine-tuning stage, Adam with batch 64 and learning rates 0.001, 0.005, 0.005
and 0.0005, up to 100 epochs per stage with early stopping after 8 epochs without a better
validation accuracy. A config is plain data: ``TrainConfig.from_dict(c.to_dict()) == c``, so
it is stored as JSON beside every run and checked again on ``--resume``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from basin.models.attractor import OUTPUT_ACTIVATIONS
from basin.models.init import INITS

# Kept in step with basin.losses.JACOBIAN_METHODS; repeated so that a config can be checked
# without importing the losses.
JACOBIAN_METHODS = ("exact", "exact-fast", "projection")
# How L_reconstruction reduces a sample's squared errors (basin.losses.attractor_loss).
MSE_REDUCTIONS = ("mean", "sum")
# Datasets with 784-pixel images and 10 classes, plus the built-in "toy" problem
# (basin.training.data) that needs no data mirror.
DATASETS = ("mnist", "fashion-mnist", "cifar10-bw", "toy")
PAPER_WIDTHS = (784, 500, 300, 300, 300, 500, 784)
PAPER_LEARNING_RATES = (0.001, 0.005, 0.005, 0.0005)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting that changes the trained weights (and nothing that does not).

    ``train_size`` / ``val_size`` of None use the whole split; otherwise the first n images of
    a permutation seeded by ``seed``. ``weights`` are (alpha1, alpha2, alpha3) of eq. 4:
    reconstruction, eigen (Jacobian) and classification. ``learning_rates`` has one entry per
    pretraining stage and a last one for fine-tuning. ``pretrain=False`` fine-tunes the whole
    network from its random initialisation. ``mse_reduction`` "mean" averages the squared
    errors over a sample's features (the default), "sum" adds them: the paper does not say
    which, and "sum" weighs reconstruction 784x more against the eigen and CE terms.
    ``init`` is the weight initialisation (``basin.models.init.INITS``): PyTorch's default
    or Keras's Glorot-uniform with zero biases; the paper does not say.
    """

    dataset: str = "mnist"
    train_size: int | None = None
    val_size: int | None = None
    widths: tuple[int, ...] = PAPER_WIDTHS
    n_classes: int = 10
    output_activation: str = "relu"
    weights: tuple[float, float, float] = (0.99, 0.0, 0.01)
    mse_reduction: str = "mean"
    jacobian: str = "exact-fast"
    projections: int = 1
    batch_size: int = 64
    learning_rates: tuple[float, ...] = PAPER_LEARNING_RATES
    max_epochs: int = 100
    patience: int = 8
    pretrain: bool = True
    init: str = "torch"
    seed: int = 0
    eval_batch_size: int = 2048
    preset: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Normalise JSON lists to tuples so that equality and hashing work after a round trip.
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "weights", tuple(float(a) for a in self.weights))
        object.__setattr__(self, "learning_rates", tuple(float(r) for r in self.learning_rates))
        self.validate()

    @property
    def n_stages(self) -> int:
        """Layer-wise pretraining stages (the encoder depth); fine-tuning is stage n_stages."""
        return len(self.widths) // 2

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot be trained with."""
        w = self.widths
        if len(w) < 3 or len(w) % 2 == 0 or w[0] != w[-1] or min(w) < 1:
            raise ValueError(f"widths: need an odd number >= 3 of positive widths with equal "
                             f"first and last entries, got {list(w)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset: unknown {self.dataset!r}; choose from {DATASETS}")
        for name in ("train_size", "val_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}: must be >= 1 or None (whole split), got {value}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes: must be >= 2, got {self.n_classes}")
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output_activation: unknown {self.output_activation!r}; "
                             f"choose from {OUTPUT_ACTIVATIONS}")
        if len(self.weights) != 3 or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ValueError(f"weights: need three non-negative loss weights, not all zero, "
                             f"got {list(self.weights)}")
        if self.mse_reduction not in MSE_REDUCTIONS:
            raise ValueError(f"mse_reduction: unknown {self.mse_reduction!r}; choose from "
                             f"{MSE_REDUCTIONS}")
        if self.init not in INITS:
            raise ValueError(f"init: unknown {self.init!r}; choose from {INITS}")
        if self.jacobian not in JACOBIAN_METHODS:
            raise ValueError(f"jacobian: unknown {self.jacobian!r}; choose from "
                             f"{JACOBIAN_METHODS}")
        if len(self.learning_rates) != self.n_stages + 1 or min(self.learning_rates) <= 0:
            raise ValueError(f"learning_rates: need {self.n_stages + 1} positive rates "
                             f"({self.n_stages} pretraining stages + fine-tuning), got "
                             f"{list(self.learning_rates)}")
        if self.seed < 0:
            raise ValueError(f"seed: must be >= 0, got {self.seed}")
        for name in ("projections", "batch_size", "max_epochs", "patience", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys are an error (a config from another version)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"train config: unknown field(s) {unknown}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def differences(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ, as {name: (self's, other's)} (``preset`` ignored)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if k != "preset" and mine[k] != theirs[k]}


_BASELINE = (0.99, 0.0, 0.01)
_ATTRACTOR = (0.988, 0.002, 0.01)

PRESETS: dict[str, TrainConfig] = {
    # Section 3.1.3 baseline: no eigen loss, all 50,000 MNIST training images.
    "paper-baseline": TrainConfig(weights=_BASELINE, preset="paper-baseline"),
    # The paper's attractor network: eigen loss, 1,000 training images, exact Jacobian.
    "paper-attractor": TrainConfig(weights=_ATTRACTOR, train_size=1000, jacobian="exact-fast",
                                   preset="paper-attractor"),
    # Not in the paper: the attractor loss on all 50,000 images, affordable with the
    # one-projection unbiased estimator of ||J||_F^2.
    "attractor-full": TrainConfig(weights=_ATTRACTOR, jacobian="projection", projections=1,
                                  preset="attractor-full"),
    # The reading of the paper closest to its Table 2 in the ablation of issue 14
    # (basin reproduce attractor-ablation, reading 'sigmoid-joint-sum'): sigmoid output
    # (images in [0, 1]), joint training instead of layer-wise pretraining, and the squared
    # errors summed per image; the exact Jacobian as the paper (the grid used the estimator).
    "paper-attractor-sigmoid-sum": TrainConfig(weights=_ATTRACTOR, train_size=1000,
                                               output_activation="sigmoid", pretrain=False,
                                               mse_reduction="sum", jacobian="exact-fast",
                                               preset="paper-attractor-sigmoid-sum"),
    # The closest reading once the initialisation is varied too (reading
    # 'sigmoid-joint-sum-glorot'): the same with Keras's Dense initialisation (Glorot-uniform
    # weights, zero biases); it reproduces Table 2 without attack within 2 points.
    "paper-attractor-sigmoid-sum-glorot": TrainConfig(
        weights=_ATTRACTOR, train_size=1000, output_activation="sigmoid", pretrain=False,
        mse_reduction="sum", init="glorot", jacobian="exact-fast",
        preset="paper-attractor-sigmoid-sum-glorot"),
}


def preset(name: str) -> TrainConfig:
    """The preset called ``name``; ValueError listing the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"preset: unknown {name!r}; choose from {sorted(PRESETS)}") from None
