"""Name -> class/builder tables for attacks and objectives, and the objective entry point.

Kept apart from the modules they list so that the objective modules can import each other
without a cycle; the CLI, the evaluation runner and the tests all go through these tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from basin.attacks.adaptive import build_accept_ood, build_end_to_end, build_reject_id
from basin.attacks.apgd import APGD
from basin.attacks.base import Attack
from basin.attacks.fgsm import FGSM
from basin.attacks.objectives import (
    Objective,
    build_ce,
    build_dlr,
    build_margin,
    build_paper,
    build_through_loop,
    build_through_loop_bpda,
)
from basin.attacks.pgd import PGD
from basin.attacks.square import Square

ATTACKS: dict[str, type[Attack]] = {"fgsm": FGSM, "pgd": PGD, "square": Square, "apgd": APGD}

OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "ce": build_ce,
    "dlr": build_dlr,
    "margin": build_margin,
    "paper": build_paper,
    "through-loop": build_through_loop,
    "through-loop-bpda": build_through_loop_bpda,
    "reject-id": build_reject_id,
    "accept-ood": build_accept_ood,
    "end-to-end": build_end_to_end,
}

# what each objective attacks, and what attacks keep by default, as the builders declare it
OBJECTIVE_KINDS: dict[str, str] = {name: getattr(b, "kind", "classifier")
                                   for name, b in OBJECTIVES.items()}
OBJECTIVE_KEEPS: dict[str, str] = {name: getattr(b, "keep", "first-success")
                                   for name, b in OBJECTIVES.items()}

# objectives that need a detector with a threshold (kind "detector" or "joint")
DETECTOR_OBJECTIVES = frozenset(n for n, kind in OBJECTIVE_KINDS.items() if kind != "classifier")


def make_objective(name: str, model: Any = None, *, detector: Any = None, steps: int = 1,
                   weights: Any = None, penalty: float = 10.0, margin: float = 0.0,
                   jacobian: str = "exact-fast", projections: int = 1,
                   seed: int = 0) -> Objective:
    """Build the objective ``name`` (a key of ``OBJECTIVES``).

    Args:
        name: objective name.
        model: classifier (``logits(x)`` or callable); also ``reconstruct`` for the loop
            objectives and ``autoencoder_stack`` for ``paper``. Unused by
            ``reject-id``/``accept-ood`` (may be None).
        detector: a :class:`basin.detectors.base.Detector` with a threshold, required by
            ``reject-id``, ``accept-ood`` and ``end-to-end``.
        steps: loop iterations n of ``through-loop``/``through-loop-bpda``.
        weights: ``basin.losses.LossWeights`` for ``paper`` (default: the paper's
            0.988/0.002/0.01).
        penalty, margin: the ``end-to-end`` loss ``CE - penalty * relu(T + margin - score)``.
        jacobian, projections, seed: how ``paper`` evaluates its eigen term (passed on to
            ``basin.losses.attractor_loss``).

    Returns:
        The :class:`Objective`; ``objective.needs_labels`` says whether attacks need ``y``.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose from {sorted(OBJECTIVES)}")
    return OBJECTIVES[name](model, detector=detector, steps=steps, weights=weights,
                            penalty=penalty, margin=margin, jacobian=jacobian,
                            projections=projections, seed=seed)
