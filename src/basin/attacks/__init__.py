"""Adversarial attacks under an L-infinity threat model in pixel space [0, 1].

One attack per file (``fgsm``, ``pgd``, ``square``) over a shared base (``base``); what an
attack maximises is a pluggable per-sample :class:`Objective` (``objectives``, ``adaptive``),
so any model or detector plugs in. ``registry`` lists both (``ATTACKS``, ``OBJECTIVES``),
``spec`` parses command-line specs such as ``"pgd:ce:8/255:steps=40"``, and ``sanity`` holds
the gradient-masking checks of the evaluation runner.
"""

from basin.attacks.adaptive import detector_score
from basin.attacks.base import Attack, BestSoFar, GradientAttack, check_epsilon, project_linf
from basin.attacks.fgsm import FGSM
from basin.attacks.objectives import (
    PAPER_WEIGHTS,
    Objective,
    classifier_logits,
    iterate_reconstruction,
)
from basin.attacks.pgd import PGD
from basin.attacks.registry import ATTACKS, DETECTOR_OBJECTIVES, OBJECTIVES, make_objective
from basin.attacks.sanity import gradient_nonzero_fraction, sanity_flags
from basin.attacks.spec import AttackSpec, build_attack, parse_attack_spec, parse_epsilon
from basin.attacks.square import Square, p_selection

__all__ = [
    "ATTACKS",
    "DETECTOR_OBJECTIVES",
    "FGSM",
    "OBJECTIVES",
    "PAPER_WEIGHTS",
    "PGD",
    "Attack",
    "AttackSpec",
    "BestSoFar",
    "GradientAttack",
    "Objective",
    "Square",
    "build_attack",
    "check_epsilon",
    "classifier_logits",
    "detector_score",
    "gradient_nonzero_fraction",
    "iterate_reconstruction",
    "make_objective",
    "p_selection",
    "parse_attack_spec",
    "parse_epsilon",
    "project_linf",
    "sanity_flags",
]
