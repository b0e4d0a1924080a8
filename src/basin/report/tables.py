"""Plain-text and Markdown tables from :class:`~basin.robustness.records.Record` lists.

A table is a pivot of the records (:func:`basin.robustness.records.pivot`): one row per
(condition, dataset), one column per metric; the records stay the source of every number.
"""

from __future__ import annotations

from collections.abc import Sequence

from basin.robustness.records import Record
from basin.robustness.records import pivot as pivot_records

# metrics shown by default, in this order; the JSON keeps every metric
DEFAULT_METRICS = ("accuracy", "acceptance_rate", "accuracy_accepted", "ece", "auroc",
                   "fpr_at_95_tpr", "precision", "recall", "silent_failure_rate")
PERCENT_METRICS = frozenset({"accuracy", "acceptance_rate", "accuracy_accepted", "auroc",
                             "aupr_in", "aupr_out", "fpr_at_95_tpr", "precision", "recall",
                             "silent_failure_rate", "ood_acceptance_rate", "coverage",
                             "id_silent_failure_rate", "detection_accuracy", "tnr", "fpr"})


def format_value(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric in PERCENT_METRICS:
        return f"{100 * value:.2f}%"
    return f"{value:.4f}"


def pivot(records: Sequence[Record], metrics: Sequence[str] = DEFAULT_METRICS
          ) -> tuple[list[str], list[list[str]]]:
    """One row per (condition, dataset) in record order, one column per metric present."""
    rows: dict[tuple[str, str], dict[str, float | None]] = {}
    for condition in dict.fromkeys(r.condition for r in records):
        cells = pivot_records(records, "dataset", "metric", condition=condition)
        rows.update({(condition, dataset): values for dataset, values in cells.items()})
    present = [m for m in metrics if any(m in v for v in rows.values())]
    header = ["condition", "dataset", *present]
    body = [[cond, ds, *(format_value(m, vals[m]) if m in vals else "" for m in present)]
            for (cond, ds), vals in rows.items()]
    return header, body


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def text_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in body]
    return "\n".join(lines)


def format_records(records: Sequence[Record], metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """The records as an aligned plain-text table (what ``basin evaluate`` prints)."""
    return text_table(*pivot(records, metrics))
