"""Adversarial attacks under an L-infinity threat model in pixel space [0, 1].

One attack per file (``fgsm``, ``pgd``, ``apgd``, ``square``) over a shared base (``base``);
what an attack maximises is a pluggable per-sample :class:`Objective` (``objectives``,
``adaptive``), so any model or detector plugs in; every attack takes ``keep=`` (stop at the
first success, or keep each input's strongest point, never worse than clean). ``registry``
lists both (``ATTACKS``, ``OBJECTIVES``, the objectives' kinds), ``spec`` parses command-line
specs such as ``"pgd:ce:8/255:steps=40"``, ``suite`` runs AutoAttack-style ensembles and keeps
the worst case per input (``attacks="strongest"``), and ``sanity`` holds the
gradient-masking checks.
"""

from basin.attacks.adaptive import detector_score
from basin.attacks.apgd import APGD, apgd_checkpoints
from basin.attacks.base import (
    Attack,
    BestSoFar,
    GradientAttack,
    channels_last_inputs,
    check_epsilon,
    check_keep,
    model_layout,
    project_linf,
)
from basin.attacks.fgsm import FGSM
from basin.attacks.objectives import (
    KEEPS,
    KINDS,
    PAPER_WEIGHTS,
    Objective,
    classifier_logits,
    dlr_loss,
    iterate_reconstruction,
    margin_loss,
)
from basin.attacks.pgd import PGD
from basin.attacks.registry import (
    ATTACKS,
    DETECTOR_OBJECTIVES,
    OBJECTIVE_KEEPS,
    OBJECTIVE_KINDS,
    OBJECTIVES,
    make_objective,
)
from basin.attacks.sanity import (
    autoattack_flags,
    blackbox_flag,
    flag_ok,
    gradient_nonzero_fraction,
    probability_output_flag,
    randomness_flag,
    sanity_flags,
    zero_gradient_flag,
)
from basin.attacks.spec import AttackSpec, build_attack, parse_attack_spec, parse_epsilon
from basin.attacks.square import Square, p_selection
from basin.attacks.suite import (
    ATTACK_SETS,
    WorstCase,
    WorstCaseResult,
    resolve_attacks,
    strongest_specs,
    strongest_suite,
)

__all__ = [
    "APGD",
    "ATTACKS",
    "ATTACK_SETS",
    "DETECTOR_OBJECTIVES",
    "FGSM",
    "KEEPS",
    "KINDS",
    "OBJECTIVES",
    "OBJECTIVE_KEEPS",
    "OBJECTIVE_KINDS",
    "PAPER_WEIGHTS",
    "PGD",
    "Attack",
    "AttackSpec",
    "BestSoFar",
    "GradientAttack",
    "Objective",
    "Square",
    "WorstCase",
    "WorstCaseResult",
    "apgd_checkpoints",
    "autoattack_flags",
    "blackbox_flag",
    "build_attack",
    "channels_last_inputs",
    "check_epsilon",
    "check_keep",
    "classifier_logits",
    "detector_score",
    "dlr_loss",
    "flag_ok",
    "gradient_nonzero_fraction",
    "iterate_reconstruction",
    "make_objective",
    "margin_loss",
    "model_layout",
    "p_selection",
    "parse_attack_spec",
    "parse_epsilon",
    "probability_output_flag",
    "project_linf",
    "randomness_flag",
    "resolve_attacks",
    "sanity_flags",
    "strongest_specs",
    "strongest_suite",
    "zero_gradient_flag",
]
