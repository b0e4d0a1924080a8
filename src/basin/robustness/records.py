"""One record schema for every result basin reports.

Long format, one record per number, so that every table is a pivot of the same list and
every figure a filter of it. Fields:

``condition``  what was done to the inputs: ``"clean"``, an attack spec text
               (``"apgd:ce:8/255"``), ``"worst-case"`` (per input over every attack run),
               a corruption (``"gaussian-noise:3"``), ``"certified"``;
``attack``     the attack's name (``"pgd"``, ``"apgd"``, ``"square"``, ``"worst-case"``) or
               ``"none"`` for clean, corrupted and certified conditions;
``epsilon``    L-infinity radius in pixel scale [0, 1] (0.0 when nothing is attacked);
``dataset``    the dataset the number is about (``"mnist"``, ``"fashion-mnist"``, ...);
``side``       which inputs were perturbed: ``"id"``, ``"ood"``, ``"both"`` or ``"none"``;
``metric``     ``"accuracy"``, ``"acceptance_rate"``, ``"silent_failure_rate"``, ``"auroc"``...
``value``      a float, or None where undefined (an empty subset, a constant score);
``extra``      optional free-form context (system name, threshold, n), never needed to
               tell two records apart within one result list.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

SIDES = ("id", "ood", "both", "none")
RECORD_FIELDS = ("condition", "attack", "epsilon", "dataset", "side", "metric", "value")


@dataclass(frozen=True)
class Record:
    """One reported number and everything needed to say what it measures."""

    condition: str
    attack: str
    epsilon: float
    dataset: str
    side: str
    metric: str
    value: float | None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ValueError(f"record side must be one of {SIDES}, got {self.side!r}")
        for name in ("condition", "attack", "dataset", "metric"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"record {name} must be a non-empty string, "
                                 f"got {getattr(self, name)!r}")
        eps = float(self.epsilon)
        if not (math.isfinite(eps) and 0.0 <= eps <= 1.0):
            raise ValueError(f"record epsilon must lie in [0, 1], got {self.epsilon!r}")
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "value", finite_or_none(self.value))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Record:
        missing = [k for k in RECORD_FIELDS if k not in data]
        if missing:
            raise ValueError(f"record is missing field(s) {missing}: {dict(data)!r}")
        return cls(**{k: data[k] for k in RECORD_FIELDS}, extra=dict(data.get("extra", {})))


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` when finite, else None (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def select(records: Iterable[Record], **where: Any) -> list[Record]:
    """The records whose fields equal every ``where`` item (``epsilon`` compared to 1e-12)."""
    out = []
    for r in records:
        if all(_matches(getattr(r, key), key, wanted) for key, wanted in where.items()):
            out.append(r)
    return out


def _matches(got: Any, key: str, wanted: Any) -> bool:
    return abs(got - float(wanted)) <= 1e-12 if key == "epsilon" else bool(got == wanted)


def value_of(records: Iterable[Record], **where: Any) -> float | None:
    """The value of the single record matching ``where``; KeyError if none or several."""
    found = select(records, **where)
    if len(found) != 1:
        raise KeyError(f"{len(found)} records match {where}")
    return found[0].value


def pivot(records: Sequence[Record], rows: str, columns: str,
          **where: Any) -> dict[Any, dict[Any, float | None]]:
    """``{row value: {column value: value}}`` over the records matching ``where``.

    Raises ValueError if two matching records share a cell: the filter must make the cell
    unique, so that a table never silently shows one of two numbers.
    """
    table: dict[Any, dict[Any, float | None]] = {}
    for r in select(records, **where):
        row, col = getattr(r, rows), getattr(r, columns)
        cells = table.setdefault(row, {})
        if col in cells:
            raise ValueError(f"pivot({rows!r}, {columns!r}): two records for cell "
                             f"({row!r}, {col!r}); filter further ({where})")
        cells[col] = r.value
    return table
