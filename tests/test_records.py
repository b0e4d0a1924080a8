"""The record schema: validation, round trip, selection and pivots."""

from __future__ import annotations

import math

import pytest

from basin.robustness.records import Record, finite_or_none, pivot, select, value_of


def _rec(metric: str = "accuracy", value: float | None = 0.5, dataset: str = "mnist",
         eps: float = 0.1, condition: str = "pgd:ce:0.1") -> Record:
    return Record(condition, "pgd", eps, dataset, "id", metric, value)


def test_round_trip_and_nan_becomes_none() -> None:
    r = _rec(value=float("nan"))
    assert r.value is None
    back = Record.from_dict(r.to_dict())
    assert back == r
    assert finite_or_none(math.inf) is None and finite_or_none(2) == 2.0


@pytest.mark.parametrize(("field", "bad"), [("side", "left"), ("epsilon", 1.5),
                                            ("metric", ""), ("epsilon", float("nan"))])
def test_invalid_fields_are_refused(field: str, bad: object) -> None:
    kwargs = {"condition": "clean", "attack": "none", "epsilon": 0.0, "dataset": "mnist",
              "side": "none", "metric": "accuracy", "value": 1.0, field: bad}
    with pytest.raises(ValueError, match=field):
        Record(**kwargs)  # type: ignore[arg-type]


def test_missing_field_named() -> None:
    with pytest.raises(ValueError, match="side"):
        Record.from_dict({"condition": "clean", "attack": "none", "epsilon": 0.0,
                          "dataset": "mnist", "metric": "accuracy", "value": 1.0})


def test_select_pivot_value_of() -> None:
    records = [_rec("accuracy", 0.9, "mnist", 0.1), _rec("accuracy", 0.7, "mnist", 0.3),
               _rec("auroc", 0.8, "fashion-mnist", 0.1)]
    assert len(select(records, metric="accuracy")) == 2
    assert value_of(records, metric="accuracy", epsilon=0.3) == 0.7
    table = pivot(records, "dataset", "epsilon", metric="accuracy")
    assert table == {"mnist": {0.1: 0.9, 0.3: 0.7}}
    with pytest.raises(KeyError):
        value_of(records, metric="accuracy")
    with pytest.raises(ValueError, match="two records"):
        pivot([*records, _rec("accuracy", 0.1, "mnist", 0.1)], "dataset", "epsilon",
              metric="accuracy")
