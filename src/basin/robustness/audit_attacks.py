"""Which attacks an audit runs, and running one of them over a data set in batches.

Every attack is a ``basin.attacks`` spec whose objective says which side it perturbs:
``accept-ood`` pushes OOD inputs to be accepted (side ``ood``); every other objective
(``ce``, ``end-to-end``, ``reject-id``, ...) perturbs the labelled ID inputs (side ``id``).
The audit then keeps, per input, the worst case over every run on its side, so adding an
attack can only make the reported numbers worse for the defender, never better.

Suites are templates over epsilon: ``"fast"`` (PGD-10 on each goal, for tests and quick
looks) and ``"strongest"`` (long PGD with restarts on each goal, the end-to-end objective at
several weights of its acceptance term, and the Square black-box attack on the same goals,
whose job is also to expose gradient masking).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from basin.attacks import AttackSpec, Objective, build_attack, make_objective, parse_attack_spec
from basin.attacks.objectives import classifier_logits
from basin.robustness.system import Data, derive_seed, format_epsilon

# objectives on the detector score alone: run without their success test so each input keeps
# its strongest iterate (lowest ID score, highest OOD score), which threshold-free metrics need
SCORE_OBJECTIVES = frozenset({"reject-id", "accept-ood"})
OOD_OBJECTIVES = frozenset({"accept-ood"})
BLACK_BOX = frozenset({"square"})

SUITES: dict[str, tuple[str, ...]] = {
    "fast": (
        "pgd:ce:{eps}:steps=10",
        "pgd:end-to-end:{eps}:steps=10:penalty=1",
        "pgd:end-to-end:{eps}:steps=10:penalty=10",
        "pgd:reject-id:{eps}:steps=10",
        "pgd:accept-ood:{eps}:steps=10",
    ),
    "strongest": (
        "pgd:ce:{eps}:steps=100:restarts=2",
        "pgd:end-to-end:{eps}:steps=100:penalty=1",
        "pgd:end-to-end:{eps}:steps=100:penalty=10",
        "pgd:end-to-end:{eps}:steps=100:penalty=100",
        "pgd:reject-id:{eps}:steps=100:restarts=2",
        "square:ce:{eps}:queries=1000",
        "square:end-to-end:{eps}:queries=1000:penalty=10",
        "square:reject-id:{eps}:queries=1000",
        "pgd:accept-ood:{eps}:steps=100:restarts=2",
        "square:accept-ood:{eps}:queries=1000",
    ),
}


def _at_epsilon(text: str, epsilon: float) -> AttackSpec:
    parts = text.strip().split(":")
    if len(parts) < 3:
        return parse_attack_spec(text)  # raises with the spec's own message
    parts[2] = format_epsilon(epsilon)
    spec = parse_attack_spec(":".join(parts))
    return dataclasses.replace(spec, epsilon=epsilon)


def check_attacks(attacks: str | Sequence[str]) -> list[str]:
    """The spec templates of ``attacks`` (a suite name or spec strings), all validated."""
    if isinstance(attacks, str):
        if attacks not in SUITES:
            raise ValueError(f"attacks: expected one of {sorted(SUITES)} or a list of attack "
                             f"specs such as 'pgd:ce:8/255:steps=40', got {attacks!r}")
        templates = list(SUITES[attacks])
    else:
        templates = list(attacks)
        if not templates or not all(isinstance(t, str) for t in templates):
            raise ValueError(f"attacks: expected a non-empty list of spec strings, got "
                             f"{attacks!r}")
    for text in templates:
        _at_epsilon(text.replace("{eps}", "0"), 0.0)
    return templates


def plan_attacks(templates: Sequence[str], epsilon: float) -> list[AttackSpec]:
    """Each template at ``epsilon``: a spec's own epsilon is a placeholder, replaced."""
    return [_at_epsilon(t.replace("{eps}", "0"), epsilon) for t in templates]


def side_of(spec: AttackSpec) -> str:
    """``"ood"`` for objectives that attack OOD inputs, else ``"id"``."""
    return "ood" if spec.objective in OOD_OBJECTIVES else "id"


def build_objective(spec: AttackSpec, model: Any, detector: Any) -> Objective:
    """The spec's objective on ``model`` and ``detector``; score objectives keep the strongest
    iterate (no success test)."""
    objective = make_objective(spec.objective, model, detector=detector,
                               **spec.objective_kwargs())
    if spec.objective in SCORE_OBJECTIVES:
        objective = dataclasses.replace(objective, success_fn=None)
    return objective


@torch.no_grad()
def _no_worse_than_clean(objective: Objective, x: Tensor, y: Tensor | None,
                         x_adv: Tensor) -> Tensor:
    """Per input, ``x`` where it beats ``x_adv`` on the objective (it lies in the ball too)."""
    clean_wins = objective(x, y) > objective(x_adv, y)
    return torch.where(clean_wins.reshape((-1,) + (1,) * (x.dim() - 1)), x, x_adv)


def run_attack(spec: AttackSpec, objective: Objective, data: Data, *, seed: int,
               batch_size: int, device: torch.device) -> Tensor:
    """Adversarial versions of every input of ``data`` (on the CPU), batch seeds derived from
    (seed, epsilon, spec, data set, batch index)."""
    out = []
    for k, start in enumerate(range(0, len(data), batch_size)):
        attack = build_attack(spec, objective,
                              seed=derive_seed(seed, spec.epsilon, spec.text, data.name, k))
        xb = data.x[start:start + batch_size].to(device)
        yb = None if data.y is None else data.y[start:start + batch_size].to(device)
        if not objective.needs_labels:
            yb = None
        x_adv = attack.perturb(xb, yb)
        if spec.objective in SCORE_OBJECTIVES:
            x_adv = _no_worse_than_clean(objective, xb, yb, x_adv)
        out.append(x_adv.detach().cpu())
    return torch.cat(out)


@torch.no_grad()
def predict_and_score(model: Any, detector: Any, x: Tensor, *, batch_size: int,
                      device: torch.device) -> tuple[Tensor, Tensor]:
    """Predicted classes (int64) and detector scores (float64) of ``x``, on the CPU."""
    preds, scores = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        preds.append(classifier_logits(model, xb).argmax(dim=1).cpu())
        scores.append(detector.score(xb).detach().double().cpu())
    return torch.cat(preds), torch.cat(scores)
