"""The strongest attack: an AutoAttack-style ensemble with the worst case kept per input.

Croce & Hein (ICML 2020) showed that no single attack is reliable and composed AutoAttack
from diverse parameter-free ones, reporting per input the worst case over all of them.
``attacks="strongest"`` does the same for any basin objective: APGD on the objective itself
(APGD-CE for ``ce``), APGD on the DLR loss (the CW margin when there are fewer than three
classes; skipped for a scalar detector objective, whose score already is a margin to the
threshold), PGD with random restarts and the black-box Square attack (which catches gradient
masking). Every member's output is judged by the one *primary* objective:

- ``keep="first-success"`` (the objective's success test is the outcome): an input's result
  is the first member's successful point, and later members only attack the inputs still
  standing, as AutoAttack runs its ensemble;
- ``keep="strongest"`` (detector scores): every member attacks every input and the highest
  primary objective wins, the clean input included.

:func:`strongest_specs` names the members as attack specs (so ``"strongest"`` resolves to a
list of strings, see :func:`resolve_attacks`); :func:`strongest_suite` builds the
:class:`WorstCase` attack from them; :meth:`WorstCase.run` also says which member won.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from basin.attacks.base import Attack, BestSoFar, check_keep
from basin.attacks.objectives import Objective
from basin.attacks.registry import OBJECTIVE_KINDS, OBJECTIVES, make_objective
from basin.attacks.spec import build_attack, parse_attack_spec

# a second, scale-invariant loss for the objectives that are a classifier loss on F(x)
_DLR_PARTNER = {"ce": "dlr", "end-to-end": "dlr", "dlr": "ce", "margin": "ce"}


def strongest_specs(objective: str, epsilon: float, *, n_classes: int | None = None,
                    apgd_steps: int = 100, pgd_steps: int = 40, pgd_restarts: int = 2,
                    square_queries: int = 5000) -> list[str]:
    """The members of the strongest suite for ``objective`` at ``epsilon``, as attack specs.

    ``n_classes`` picks DLR (>= 3) or the margin (< 3) for the classifier objectives that
    have a DLR partner; it is required there and ignored otherwise.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: unknown {objective!r}; choose from {sorted(OBJECTIVES)}")
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and 0 <= epsilon <= 1):
        raise ValueError(f"epsilon must be a number in [0, 1], got {epsilon!r}")
    eps = repr(float(epsilon))
    specs = [f"apgd:{objective}:{eps}:steps={apgd_steps}"]
    partner = _DLR_PARTNER.get(objective)
    if partner is not None:
        if n_classes is None:
            raise ValueError(f"n_classes is needed for objective {objective!r} (DLR needs at "
                             "least 3 classes, else the margin loss is used)")
        if partner == "dlr" and n_classes < 3:
            partner = "margin"
        if partner != objective:
            specs.append(f"apgd:{partner}:{eps}:steps={apgd_steps}")
    specs.append(f"pgd:{objective}:{eps}:steps={pgd_steps}:restarts={pgd_restarts}")
    specs.append(f"square:{objective}:{eps}:queries={square_queries}")
    return specs


ATTACK_SETS: dict[str, Callable[..., list[str]]] = {"strongest": strongest_specs}


def resolve_attacks(attacks: str | Sequence[str], objective: str, epsilon: float,
                    **kwargs: Any) -> list[str]:
    """Attack specs for ``attacks``: a set name (``"strongest"``), one spec, or a list."""
    if isinstance(attacks, str):
        if attacks in ATTACK_SETS:
            return ATTACK_SETS[attacks](objective, epsilon, **kwargs)
        if ":" not in attacks:
            raise ValueError(f"attacks: unknown set {attacks!r}; choose from "
                             f"{sorted(ATTACK_SETS)} or give attack specs such as "
                             "'pgd:ce:8/255:steps=40'")
        return [parse_attack_spec(attacks).text]
    specs = [parse_attack_spec(a).text for a in attacks]
    if not specs:
        raise ValueError("attacks: expected a set name such as 'strongest' or attack specs, "
                         "got an empty list")
    return specs


@dataclass
class WorstCaseResult:
    """Per input: the worst case, its primary loss and success, and the member that won.

    ``winner[i]`` is a member label, or ``"clean"`` where no member beat the clean input
    (``keep="strongest"``) or none succeeded and the clean input was the best seen;
    ``member_loss[label]`` is the primary loss of that member's output (NaN where the member
    did not attack that input).
    """

    x_adv: Tensor
    loss: Tensor
    success: Tensor
    winner: list[str]
    member_loss: dict[str, Tensor]


class WorstCase(Attack):
    """Run several attacks and keep, per input, the worst case for the primary objective."""

    name = "worst-case"

    def __init__(self, objective: Objective, members: Sequence[tuple[str, Attack]],
                 epsilon: float, *, keep: str | None = None) -> None:
        super().__init__(objective, epsilon, keep=check_keep(keep, objective))
        if not members:
            raise ValueError("members: expected at least one (label, attack) pair")
        for label, attack in members:
            if not isinstance(attack, Attack):
                raise ValueError(f"members[{label!r}]: expected a basin Attack, got "
                                 f"{type(attack).__name__}")
            if attack.epsilon > self.epsilon + 1e-12:
                raise ValueError(f"members[{label!r}]: epsilon {attack.epsilon:g} exceeds the "
                                 f"suite's {self.epsilon:g}")
        labels = [label for label, _ in members]
        if len(set(labels)) != len(labels):
            raise ValueError(f"members: labels must be unique, got {labels}")
        self.members = list(members)

    def _perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        return self.run(x, y).x_adv

    def run(self, x: Tensor, y: Tensor | None = None) -> WorstCaseResult:
        """Every member in order; the worst case per input and who found it."""
        x = x.detach()
        if self.epsilon == 0.0 or x.shape[0] == 0:
            loss, success = self.evaluate(x, y)
            return WorstCaseResult(x.clone(), loss.to(torch.float64), success,
                                   ["clean"] * x.shape[0], {})
        clean_loss, clean_success = self.evaluate(x, y)
        best = BestSoFar(x, clean_loss)
        best.success = clean_success.clone()
        winner = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        member_loss: dict[str, Tensor] = {}
        for k, (label, attack) in enumerate(self.members):
            idx = torch.nonzero(~best.success)[:, 0]
            member_loss[label] = torch.full((x.shape[0],), math.nan, dtype=torch.float64,
                                            device=x.device)
            if len(idx) == 0:
                continue
            labels = None if y is None else y[idx]
            x_adv = attack.perturb(x[idx], labels)
            loss, success = self.evaluate(x_adv, labels)
            member_loss[label][idx] = loss.to(torch.float64)
            before = best.loss[idx].clone(), best.success[idx].clone()
            best.update(x_adv, loss, success, idx)
            changed = (best.loss[idx] != before[0]) | (best.success[idx] != before[1])
            winner[idx[changed]] = k
        names = ["clean"] + [label for label, _ in self.members]
        return WorstCaseResult(best.x, best.loss, best.success,
                               [names[int(i) + 1] for i in winner], member_loss)


def strongest_suite(objective: str, model: Any = None, epsilon: float = 8 / 255, *,
                    detector: Any = None, n_classes: int | None = None, seed: int = 0,
                    keep: str | None = None, objective_kwargs: dict[str, Any] | None = None,
                    **budget: int) -> WorstCase:
    """The strongest suite on ``objective`` (built by :func:`make_objective`).

    Args:
        objective: the primary objective's name; every member is judged by it.
        model, detector, objective_kwargs: passed to :func:`make_objective`.
        epsilon: L-infinity budget of every member.
        n_classes: class count (default ``model.n_classes``), for DLR or margin.
        seed: member ``k`` is seeded with ``seed + k``.
        keep: the suite's selection; default the primary objective's ``keep``.
        budget: ``apgd_steps``, ``pgd_steps``, ``pgd_restarts``, ``square_queries``.
    """
    kwargs = dict(objective_kwargs or {})
    primary = make_objective(objective, model, detector=detector, **kwargs)
    keep = check_keep(keep, primary)
    if n_classes is None and OBJECTIVE_KINDS.get(objective) != "detector":
        n_classes = getattr(model, "n_classes", None)
    members: list[tuple[str, Attack]] = []
    for k, text in enumerate(strongest_specs(objective, epsilon, n_classes=n_classes,
                                             **budget)):
        spec = parse_attack_spec(f"{text}:keep={keep}")
        member_objective = primary if spec.objective == objective else make_objective(
            spec.objective, model, detector=detector)
        members.append((text, build_attack(spec, member_objective, seed=seed + k)))
    return WorstCase(primary, members, epsilon, keep=keep)
