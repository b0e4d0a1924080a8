"""Conditions of an evaluation: ``clean``, an attack spec or a corruption spec.

Parsed and validated before any work starts, so that a typo in the tenth spec fails in
milliseconds rather than after an hour of attacks on the first nine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from basin.attacks import AttackSpec, parse_attack_spec
from basin.corruptions import parse_corruption_spec
from basin.data import dataset_names


@dataclass(frozen=True)
class Condition:
    """``clean``, an attack or a corruption, with the text it was given as."""

    kind: str  # "clean" | "attack" | "corruption"
    text: str
    attack: AttackSpec | None = None
    corruption: tuple[str, int] | None = None

    @property
    def attack_name(self) -> str:
        """The record's ``attack`` field: the attack's name, ``"none"`` when nothing attacks."""
        return self.attack.attack if self.attack is not None else "none"

    @property
    def epsilon(self) -> float:
        """The record's ``epsilon`` field: the attack's radius, 0.0 when nothing attacks."""
        return float(self.attack.epsilon) if self.attack is not None else 0.0

    def side(self, about: str) -> str:
        """The record's ``side`` field for a metric ``about`` the ``"id"`` or ``"ood"`` set.

        A condition perturbs every input it is applied to, and every OOD metric compares the
        perturbed ID scores with the perturbed OOD scores: ID metrics are ``"id"``, OOD
        metrics ``"both"``, and nothing is perturbed under ``clean`` (``"none"``).
        """
        if about not in ("id", "ood"):
            raise ValueError(f"about: expected 'id' or 'ood', got {about!r}")
        if self.kind == "clean":
            return "none"
        return "id" if about == "id" else "both"


def parse_conditions(attacks: Sequence[str] = (), corruptions: Sequence[str] = ()
                     ) -> list[Condition]:
    """Validate every spec before any work starts (ValueError naming the bad one)."""
    conditions = [Condition("clean", "clean")]
    conditions += [Condition("attack", spec.text, attack=spec)
                   for spec in map(parse_attack_spec, attacks)]
    for text in corruptions:
        conditions.append(Condition("corruption", text.strip(),
                                    corruption=parse_corruption_spec(text)))
    return conditions


def check_dataset_names(names: Sequence[str], option: str = "--ood") -> list[str]:
    """``names`` if every one is a known dataset; ValueError naming ``option`` otherwise."""
    known = dataset_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{option}: unknown dataset(s) {unknown}; choose from {known}")
    if not names:
        raise ValueError(f"{option}: give at least one dataset")
    return list(names)
