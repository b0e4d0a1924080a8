"""The robust attractor system's evaluation protocol (issue 13): constants, plan, targets.

The bottom of the reproduction: :mod:`.run` measures under a :class:`RobustPlan`,
:mod:`.tables` turns the records into tables, :mod:`.report` writes them.

The system: classify with ``F(x)`` (the head on the input's own code); accept when
``r(x, G^n(x)) >= T``, T calibrated for 95% acceptance of MNIST *validation* images. Three
networks are judged under the same attacks: ``baseline`` and ``attractor`` (the paper's,
reused from a ``basin reproduce attractor-paper`` folder or trained small with ``--quick``)
and the robust ones of ``ROBUST_SYSTEMS`` (``basin train --preset attractor-robust-pgd7``,
``attractor-robust-cor``, ``attractor-robust-conv``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

PAPER_SYSTEMS = ("baseline", "attractor")
# system name -> the robust training preset that makes its network (issue 13): the MLP with
# the first objective, the MLP with the correct-or-reject objective, the convolutional variant
# with it, the second convolutional run (training attacks from the clean input too), the
# third (stronger training attack, more epochs), the third with the adaptive acceptance
# threshold, and the fourth (the third with small steps from the clean input)
ROBUST_SYSTEMS = {"robust": "attractor-robust-pgd7", "robust-cor": "attractor-robust-cor",
                  "robust-conv": "attractor-robust-conv", "robust-conv2": "attractor-robust-conv2",
                  "robust-conv3": "attractor-robust-conv3",
                  "robust-conv3-adaptive": "attractor-robust-conv3-adaptive",
                  "robust-conv4": "attractor-robust-conv4"}
# what a full run judges when no --systems is given: the three networks, the robust
# one being the best recipe measured (README); every other recipe stays one --systems away
DEFAULT_SYSTEMS = ("robust-conv4", "baseline", "attractor")
QUICK_ROBUST_SYSTEMS = {"robust": "attractor-robust-quick",
                        "robust-conv": "attractor-robust-conv-quick"}
OOD_SETS = ("fashion-mnist", "notmnist", "cifar10-bw", "omniglot-evaluation")
ACCEPTANCE = 0.95
# the targets (moonshot), in the units of the records (fractions)
TARGETS = {"clean_accuracy": 0.985, "silent_failure_0.3": 0.10,
           "auroc_fashion-mnist_0.3": 0.984, "auroc_cifar10-bw_0.3": 0.993,
           "certified_auroc_fashion-mnist_0.3": 0.78}


@dataclass(frozen=True)
class RobustPlan:
    """Every size of the evaluation; recorded in results.json."""

    quick: bool = False
    seed: int = 0
    epsilons: tuple[float, ...] = (0.1, 0.2, 0.3)
    certify_epsilons: tuple[float, ...] = (0.0003, 0.001, 0.01, 0.1, 0.3)
    n_id: int = 1000
    n_ood: int = 300
    n_square: int = 100           # first inputs per set that the Square attack also gets
    pgd_steps: int = 40
    pgd_restarts: int = 1
    apgd_steps: int = 50
    square_queries: int = 300
    # weights of the acceptance term (end-to-end), as basin.audit's strongest suite
    penalties: tuple[float, ...] = (1.0, 10.0, 100.0)
    score_steps: int = 1          # n of G^n(x) in the acceptance score
    robust_presets: dict[str, str] = field(default_factory=lambda: dict(ROBUST_SYSTEMS))
    paper_systems: tuple[str, ...] = PAPER_SYSTEMS
    robust_changes: dict[str, Any] = field(default_factory=dict)  # applied to every preset
    paper_changes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def systems(self) -> tuple[str, ...]:
        """Every system judged, robust ones first (the order of tables and figures)."""
        return (*self.robust_presets, *self.paper_systems)

    def only(self, systems: Sequence[str] | None) -> RobustPlan:
        """The same plan judging only ``systems`` (None: all); ValueError naming unknown
        ones. The paper baseline is still loaded for the transfer attack."""
        if not systems:
            return self
        unknown = sorted(set(systems) - set(self.systems))
        if unknown:
            raise ValueError(f"systems: unknown {unknown}; choose from {list(self.systems)}")
        return replace(self, robust_presets={k: v for k, v in self.robust_presets.items()
                                             if k in systems},
                       paper_systems=tuple(s for s in self.paper_systems if s in systems))

    def default_selection(self) -> tuple[str, ...] | None:
        """The systems judged without ``--systems``: ``DEFAULT_SYSTEMS`` where the plan has
        them all (the full plan), else every system (the quick and tiny plans)."""
        if set(DEFAULT_SYSTEMS) <= set(self.systems):
            return DEFAULT_SYSTEMS
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def make(cls, quick: bool, seed: int = 0) -> RobustPlan:
        """The full plan, or ``--quick``: small networks (the paper attractor with the
        projection estimator, whose exact-fast test evaluation alone takes about a minute)
        and few attack steps."""
        if not quick:
            return cls(seed=seed)
        return cls(quick=True, seed=seed, epsilons=(0.1, 0.3), certify_epsilons=(0.01, 0.3),
                   n_id=100, n_ood=60, n_square=20, pgd_steps=10, apgd_steps=10,
                   square_queries=50, robust_presets=dict(QUICK_ROBUST_SYSTEMS),
                   robust_changes={"train_size": 3000, "epochs": 4, "ramp_epochs": 2,
                                   "seed": seed},
                   paper_changes={"baseline": {"train_size": 3000, "val_size": 2000,
                                               "max_epochs": 2, "seed": seed},
                                  "attractor": {"train_size": 500, "val_size": 2000,
                                                "max_epochs": 2, "seed": seed,
                                                "jacobian": "projection"}})

    @classmethod
    def tiny(cls, seed: int = 0) -> RobustPlan:
        """Seconds: the integration test of the whole pipeline."""
        return cls(quick=True, seed=seed, epsilons=(0.3,), certify_epsilons=(0.3,), n_id=16,
                   n_ood=8, n_square=4, pgd_steps=2, apgd_steps=2, square_queries=5,
                   penalties=(10.0,), robust_presets=dict(QUICK_ROBUST_SYSTEMS),
                   robust_changes={"train_size": 300, "val_size": 300, "epochs": 1,
                                   "ramp_epochs": 1, "monitor_n": 16, "seed": seed},
                   paper_changes={"baseline": {"train_size": 300, "val_size": 300,
                                               "max_epochs": 1, "seed": seed},
                                  "attractor": {"train_size": 100, "val_size": 300,
                                                "max_epochs": 1, "seed": seed,
                                                "jacobian": "projection"}})
