"""Plain-text and Markdown tables from flat ``{condition, dataset, metric, value}`` records."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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


def pivot(records: Iterable[Mapping[str, Any]], metrics: Sequence[str] = DEFAULT_METRICS
          ) -> tuple[list[str], list[list[str]]]:
    """One row per (condition, dataset), one column per metric present."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        rows.setdefault((r["condition"], r["dataset"]), {})[r["metric"]] = r["value"]
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


def format_records(records: Iterable[Mapping[str, Any]],
                   metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    return text_table(*pivot(records, metrics))
