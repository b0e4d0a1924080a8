"""Sanity flags of an audit: can its robustness numbers be trusted?

An attack that fails because its gradients are useless reports robustness that is not
there (Athalye, Carlini & Wagner 2018). Per epsilon, on a seeded subset of ID inputs:

1. ``eps = 0`` through the attack path reproduces the clean accuracy (a randomised or
   stateful model, or a pipeline that differs between evaluation and attack, fails this);
2. the classifier's and the detector's input gradients are non-zero on most inputs;
3. a black-box attack does not beat the white-box ones, on the classifier (accuracy), on
   the ID rejection goal and on the OOD acceptance goal;
4. AutoAttack's checks (:mod:`basin.attacks.sanity`): two forwards of one input agree (no
   randomised defence), the model returns logits, not probabilities, and no input has an
   exactly zero gradient.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from basin.attacks import (
    AttackSpec,
    build_attack,
    gradient_nonzero_fraction,
    make_objective,
    sanity_flags,
)
from basin.attacks.objectives import classifier_logits
from basin.attacks.sanity import (
    MASKING_FRACTION,
    probability_output_flag,
    randomness_flag,
    zero_gradient_flag,
)
from basin.robustness.audit_attacks import SCORE_OBJECTIVES, build_objective
from basin.robustness.audit_report import RunArrays
from basin.robustness.records import Record
from basin.robustness.system import Data

SANITY_SUBSET = 256
_TOLERANCE = 1e-9


def _accuracy(model: Any, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    with torch.no_grad():
        pred = classifier_logits(model, x.to(device)).argmax(dim=1).cpu()
    return float((pred == y).double().mean())


def _black_vs_white(runs: Sequence[RunArrays], goal: str, value: Any,
                    higher_is_stronger: bool) -> str | None:
    """A flag when the best black-box run beats the best white-box run on ``goal``."""
    picked = [r for r in runs if r.objective in goal.split("|")]
    white = [value(r) for r in picked if not r.black_box]
    black = [value(r) for r in picked if r.black_box]
    if not white or not black:
        return None
    best_w = max(white) if higher_is_stronger else min(white)
    best_b = max(black) if higher_is_stronger else min(black)
    beaten = best_b > best_w + _TOLERANCE if higher_is_stronger else best_b < best_w - _TOLERANCE
    if beaten:
        return (f"suspected gradient masking: black-box beats white-box on {goal} "
                f"({best_b:.4f} vs {best_w:.4f})")
    return f"black-box does not beat white-box on {goal}: OK"


def sanity_for_epsilon(model: Any, detector: Any, id_set: Data, specs: Sequence[AttackSpec],
                       runs: Sequence[RunArrays], *, seed: int, device: torch.device
                       ) -> tuple[list[str], list[Record]]:
    """The flags of the module docstring at one epsilon, and their numbers as records."""
    if not specs:
        return [], []
    eps = specs[0].epsilon
    sub = id_set.subset(SANITY_SUBSET, seed)
    assert sub.y is not None
    x, y = sub.x.to(device), sub.y.to(device)
    clean = _accuracy(model, sub.x, sub.y, device)
    probe = next((s for s in specs if s.objective not in SCORE_OBJECTIVES), None)
    eps0 = clean
    if probe is not None:
        objective = build_objective(probe, model, detector)
        attack = build_attack(dataclasses.replace(probe, epsilon=0.0), objective, seed=seed)
        eps0 = _accuracy(model, attack.perturb(x, y), sub.y, device)
    grad = gradient_nonzero_fraction(make_objective("ce", model), x, y)
    det_grad = gradient_nonzero_fraction(make_objective("accept-ood", detector=detector), x)
    labels = id_set.y.numpy() if id_set.y is not None else np.empty(0)
    id_runs = [r for r in runs if r.side == "id" and r.objective not in SCORE_OBJECTIVES]
    white = {r.spec: float(np.mean(r.predicted == labels)) for r in id_runs if not r.black_box}
    black = {r.spec: float(np.mean(r.predicted == labels)) for r in id_runs if r.black_box}
    flags = sanity_flags(clean, eps0, white, black, grad)
    detector_flag = f"detector score gradients non-zero on {100 * det_grad:.1f}% of inputs"
    if det_grad < MASKING_FRACTION:
        detector_flag += (": detector-aware white-box attacks cannot follow it; trust the "
                          "black-box (Square) runs")
    flags.append(detector_flag)
    threshold = float(detector.threshold)
    for goal, value, higher in (
            ("reject-id", lambda r: float(np.mean(r.scores >= threshold)), False),
            ("accept-ood", lambda r: float(np.mean(r.scores >= threshold)), True)):
        flag = _black_vs_white(runs, goal, value, higher)
        if flag:
            flags.append(flag)
    forward = functools.partial(classifier_logits, model)
    flags += [randomness_flag(forward, x), probability_output_flag(forward, x),
              zero_gradient_flag(make_objective("ce", model), x, y)]
    prefix = f"[eps={eps:.4g}, {len(sub)} ID inputs] "
    extra = {"n": len(sub)}
    records = [Record("sanity", "none", eps, id_set.name, "id", metric, value, extra)
               for metric, value in (("clean_accuracy", clean), ("eps0_accuracy", eps0),
                                     ("gradient_nonzero_fraction", grad),
                                     ("detector_gradient_nonzero_fraction", det_grad))]
    return [prefix + f for f in flags], records
