"""Cells: the independent units of work of a grid (an audit, a reproduction, a sweep).

A :class:`Cell` is a frozen, hashable key that says *what* is computed, never *where* or
*when*: the model, the detector, a shard of the inputs (an index range), the condition, the
attack and epsilon, plus free ``params`` (a goal, a data set, a hyper-parameter). Everything
derived from a cell comes from its key alone:

* :meth:`Cell.key` is a canonical JSON text (sorted, exact float ``repr``), so two equal cells
  built in different processes or orders have the same key, and a store can recognise a
  finished cell on a rerun;
* :meth:`Cell.seed` hashes ``(base seed, key)``, so a cell's random numbers do not depend on
  the order the cells run in, on the worker that runs it, or on which other cells exist.

Large attacks are split over input index ranges with :func:`shard_ranges` /
:func:`shard_cells`; a work function that computes per-input results on its shard and a
merge in shard order then equal the unsharded computation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

KEY_FORMAT = "basin.cell/1"
_SCALARS = (str, int, float, bool, type(None))


def _frozen(value: Any, where: str) -> Any:
    """``value`` as a hashable, JSON-able constant (tuples for lists, sorted pairs for dicts)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v, f"{where}[{k!r}]")) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise ValueError(f"{where}: expected str, int, float, bool, None, a list or a dict, got "
                     f"{type(value).__name__}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return repr(value)  # exact: 0.1 + 0.2 and 0.3 stay different keys
    return value


@dataclass(frozen=True)
class Cell:
    """One unit of work; equal cells are the same work and get the same seed.

    Args:
        model: which model (a name, a checkpoint digest, a sweep member).
        detector: which detector ("" when the cell has none).
        shard: ``(start, stop)``: the input index range, or None for all inputs.
        condition: what is done to the inputs (an attack spec text, ``"clean"``, a sweep name).
        attack: the attack's name ("" when none).
        epsilon: the L-infinity radius (0.0 when nothing is attacked).
        params: anything else that changes the result (a goal, a data set, a learning
            rate): a dict or pairs, stored as sorted pairs so the cell stays hashable.
    """

    model: str = ""
    detector: str = ""
    shard: tuple[int, int] | None = None
    condition: str = ""
    attack: str = ""
    epsilon: float = 0.0
    params: Any = field(default=())

    def __post_init__(self) -> None:
        for name in ("model", "detector", "condition", "attack"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"cell {name}: expected a string, got "
                                 f"{getattr(self, name)!r}")
        if isinstance(self.epsilon, bool) or not isinstance(self.epsilon, int | float) or \
                not math.isfinite(self.epsilon) or self.epsilon < 0:
            raise ValueError(f"cell epsilon: expected a finite number >= 0, got "
                             f"{self.epsilon!r}")
        object.__setattr__(self, "epsilon", float(self.epsilon))
        if self.shard is not None:
            object.__setattr__(self, "shard", _check_shard(self.shard))
        params = self.params
        if isinstance(params, Mapping):
            frozen = _frozen(params, "cell params")
        elif isinstance(params, list | tuple) and all(
                isinstance(p, list | tuple) and len(p) == 2 and isinstance(p[0], str)
                for p in params):
            frozen = _frozen(dict(params), "cell params")
        else:
            raise ValueError(f"cell params: expected a dict or (name, value) pairs, got "
                             f"{params!r}")
        object.__setattr__(self, "params", frozen)

    def param(self, name: str, default: Any = None) -> Any:
        """The value of one entry of ``params`` (lists come back as tuples)."""
        return dict(self.params).get(name, default)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`from_dict` turns back into an equal cell."""
        return {"model": self.model, "detector": self.detector,
                "shard": list(self.shard) if self.shard is not None else None,
                "condition": self.condition, "attack": self.attack, "epsilon": self.epsilon,
                "params": {k: _jsonable_value(v) for k, v in self.params}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cell:
        shard = data.get("shard")
        return cls(model=data.get("model", ""), detector=data.get("detector", ""),
                   shard=tuple(shard) if shard is not None else None,
                   condition=data.get("condition", ""), attack=data.get("attack", ""),
                   epsilon=data.get("epsilon", 0.0), params=data.get("params", {}))

    def key(self) -> str:
        """Canonical text of the cell: equal for equal cells, in any process."""
        body = [KEY_FORMAT, self.model, self.detector,
                list(self.shard) if self.shard is not None else None, self.condition,
                self.attack, repr(self.epsilon), _jsonable(self.params)]
        return json.dumps(body, separators=(",", ":"), ensure_ascii=True)

    def digest(self) -> str:
        """sha256 of :meth:`key` (hex): a short, file-name-safe name of the cell."""
        return hashlib.sha256(self.key().encode()).hexdigest()

    def seed(self, base: int = 0) -> int:
        """A 31-bit seed from ``base`` and the cell's key: independent of execution order,
        worker and the rest of the grid."""
        if isinstance(base, bool) or not isinstance(base, int):
            raise ValueError(f"base: expected an integer seed, got {base!r}")
        text = f"{int(base)}|{self.key()}"
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF

    def with_shard(self, start: int, stop: int) -> Cell:
        return dataclasses.replace(self, shard=(start, stop))


def _jsonable_value(value: Any) -> Any:
    return [_jsonable_value(v) for v in value] if isinstance(value, tuple) else value


def _check_shard(shard: Any) -> tuple[int, int]:
    ok = (isinstance(shard, list | tuple) and len(shard) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
          and 0 <= shard[0] < shard[1])
    if not ok:
        raise ValueError(f"cell shard: expected (start, stop) with 0 <= start < stop, got "
                         f"{shard!r}")
    return int(shard[0]), int(shard[1])


def shard_ranges(n: int, size: int | None) -> list[tuple[int, int]]:
    """``[(0, size), (size, 2 size), ...]`` covering ``range(n)``; one range when ``size`` is
    None. Every range but the last has exactly ``size`` inputs, so batches inside a shard
    line up with the batches of the unsharded run when ``size`` is a multiple of the batch."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n: expected an integer >= 0, got {n!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size: expected an integer >= 1 or None, got {size!r}")
    if n == 0:
        return []
    step = n if size is None else size
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def shard_cells(cell: Cell, n: int, size: int | None) -> list[Cell]:
    """``cell`` once per shard of ``range(n)`` (see :func:`shard_ranges`)."""
    return [cell.with_shard(start, stop) for start, stop in shard_ranges(n, size)]


def check_unique(cells: Sequence[Cell]) -> list[Cell]:
    """The cells as a list; ValueError naming the first cell given twice (a grid computes
    each cell once, and a store keys its results by cell)."""
    seen: set[str] = set()
    out = []
    for i, cell in enumerate(cells):
        if not isinstance(cell, Cell):
            raise ValueError(f"cells[{i}]: expected a basin.distributed.Cell, got "
                             f"{type(cell).__name__}")
        key = cell.key()
        if key in seen:
            raise ValueError(f"cells[{i}]: the cell {key} appears twice; every cell of a grid "
                             "must be distinct")
        seen.add(key)
        out.append(cell)
    return out
