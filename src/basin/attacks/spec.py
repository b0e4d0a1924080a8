"""Attack specs for the command line: ``"attack:objective:epsilon[:key=value...]"``.

Examples: ``"fgsm:paper:20/255"``, ``"pgd:ce:20/255:steps=40"``,
``"square:ce:8/255:queries=1000"``, ``"pgd:end-to-end:8/255:steps=40:restarts=2"``,
``"pgd:through-loop:0.1:loop=5"``, ``"apgd:dlr:8/255:steps=100:restarts=2"``,
``"pgd:reject-id:8/255:keep=first-success"``. Epsilon is a float or ``k/255`` in [0, 1].

Parameters belong either to the attack (``keep`` for every attack; ``steps``, ``step_size``,
``restarts``, ``random_start`` for pgd; ``steps``, ``restarts``, ``rho``, ``alpha`` for apgd;
``queries``, ``p_init`` for square) or to the
objective (``loop`` for the through-loop objectives, ``penalty`` and ``margin`` for
end-to-end). Everything is validated when the spec is parsed, so a typo fails before any
model is loaded or any work starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from basin.attacks.base import Attack
from basin.attacks.objectives import KEEPS, Objective
from basin.attacks.registry import ATTACKS, OBJECTIVES


def parse_epsilon(text: str | float) -> float:
    """``"20/255" -> 20/255``, ``"0.1" -> 0.1``; ValueError unless a finite value in [0, 1]."""
    if isinstance(text, bool):
        raise ValueError(f"epsilon {text!r}: expected a number or 'k/255'")
    if isinstance(text, int | float):
        value = float(text)
    elif isinstance(text, str):
        parts = text.strip().split("/")
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"epsilon {text!r}: expected a number such as 0.1 or a fraction "
                             "such as 8/255") from None
        if len(numbers) > 2:
            raise ValueError(f"epsilon {text!r}: expected at most one '/'")
        if len(numbers) == 2 and not (math.isfinite(numbers[1]) and numbers[1] > 0):
            raise ValueError(f"epsilon {text!r}: the denominator must be a positive number")
        value = numbers[0] / numbers[1] if len(numbers) == 2 else numbers[0]
    else:
        raise ValueError(f"epsilon {text!r}: expected a number or a string, got "
                         f"{type(text).__name__}")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"epsilon {text!r}: must lie in [0, 1] (pixel scale), got {value:g}")
    return value


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError("expected an integer >= 1")
    return int(text)


def _nonnegative_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError("expected a finite number >= 0")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise ValueError("expected a number in (0, 1]")
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _step_size(text: str) -> float:
    return parse_epsilon(text)


def _keep(text: str) -> str:
    value = text.strip()
    if value not in KEEPS:
        raise ValueError(f"expected one of {KEEPS}")
    return value


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("expected a number in [0, 1]")
    return value


Parser = Callable[[str], Any]

ATTACK_PARAMS: dict[str, dict[str, Parser]] = {
    "fgsm": {"keep": _keep},
    "pgd": {"steps": _positive_int, "step_size": _step_size, "restarts": _positive_int,
            "random_start": _boolean, "keep": _keep},
    "square": {"queries": _positive_int, "p_init": _fraction, "keep": _keep},
    "apgd": {"steps": _positive_int, "restarts": _positive_int, "rho": _unit_interval,
             "alpha": _fraction, "keep": _keep},
}

# spec key -> (make_objective keyword, parser, objectives that take it)
OBJECTIVE_PARAMS: dict[str, tuple[str, Parser, frozenset[str]]] = {
    "loop": ("steps", _positive_int, frozenset({"through-loop", "through-loop-bpda"})),
    "penalty": ("penalty", _nonnegative_float, frozenset({"end-to-end"})),
    "margin": ("margin", _finite_float, frozenset({"end-to-end"})),
}


@dataclass(frozen=True)
class AttackSpec:
    """A parsed spec; ``text`` (not compared) keeps the string it came from."""

    attack: str
    objective: str
    epsilon: float
    params: dict[str, Any] = field(default_factory=dict)
    text: str = field(default="", compare=False)

    def attack_params(self) -> dict[str, Any]:
        """Keyword arguments for the attack class."""
        return {k: v for k, v in self.params.items() if k in ATTACK_PARAMS[self.attack]}

    def objective_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`basin.attacks.make_objective`."""
        return {OBJECTIVE_PARAMS[k][0]: v for k, v in self.params.items()
                if k in OBJECTIVE_PARAMS}


def parse_attack_spec(text: str) -> AttackSpec:
    """Parse ``"attack:objective:epsilon[:key=value...]"``; ValueError naming the bad part."""
    if not isinstance(text, str):
        raise ValueError(f"attack spec must be a string, got {type(text).__name__}")
    parts = [p.strip() for p in text.strip().split(":")]
    if len(parts) < 3:
        raise ValueError(f"attack spec {text!r}: expected 'attack:objective:epsilon"
                         "[:key=value...]', e.g. 'pgd:ce:8/255:steps=40'")
    attack, objective, eps_text, *raw_params = parts
    if attack not in ATTACKS:
        raise ValueError(f"attack spec {text!r}: unknown attack {attack!r}; choose from "
                         f"{sorted(ATTACKS)}")
    if objective not in OBJECTIVES:
        raise ValueError(f"attack spec {text!r}: unknown objective {objective!r}; choose "
                         f"from {sorted(OBJECTIVES)}")
    try:
        epsilon = parse_epsilon(eps_text)
    except ValueError as exc:
        raise ValueError(f"attack spec {text!r}: bad {exc}") from None
    params: dict[str, Any] = {}
    for raw in raw_params:
        key, sep, value = raw.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"attack spec {text!r}: parameter {raw!r} is not key=value")
        if key in params:
            raise ValueError(f"attack spec {text!r}: parameter {key!r} given twice")
        params[key] = _parse_param(text, attack, objective, key, value)
    return AttackSpec(attack, objective, epsilon, params, text=text.strip())


def _parse_param(text: str, attack: str, objective: str, key: str, value: str) -> Any:
    parser: Parser | None = ATTACK_PARAMS[attack].get(key)
    if parser is None and key in OBJECTIVE_PARAMS and objective in OBJECTIVE_PARAMS[key][2]:
        parser = OBJECTIVE_PARAMS[key][1]
    if parser is None:
        allowed = sorted(ATTACK_PARAMS[attack]) + sorted(
            k for k, (_, _, users) in OBJECTIVE_PARAMS.items() if objective in users)
        raise ValueError(f"attack spec {text!r}: unknown parameter {key!r} for attack "
                         f"{attack!r} with objective {objective!r}; allowed: "
                         f"{allowed or 'none'}")
    try:
        return parser(value)
    except ValueError as exc:
        raise ValueError(f"attack spec {text!r}: bad value for parameter {key}={value!r}: "
                         f"{exc}") from None


def build_attack(spec: AttackSpec, objective: Objective, *, seed: int = 0) -> Attack:
    """The attack ``spec`` describes, attacking ``objective`` (built for ``spec.objective``)."""
    if not isinstance(objective, Objective):
        raise ValueError(f"objective must be a basin.attacks.Objective, got "
                         f"{type(objective).__name__}")
    if objective.name != spec.objective:
        raise ValueError(f"attack spec {spec.text or spec!r} names objective "
                         f"{spec.objective!r} but the objective given is {objective.name!r}")
    return ATTACKS[spec.attack](objective, spec.epsilon, seed=seed, **spec.attack_params())
