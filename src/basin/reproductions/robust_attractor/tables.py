"""The robust attractor report's tables: pivots of the run's records (numbers as measured).

Every cell is one record's value (a fraction, shown as a percentage) or "—" where the record
does not exist; ``find`` raises if two records would share a cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from basin.reproductions.robust_attractor.protocol import OOD_SETS, PAPER_SYSTEMS, TARGETS
from basin.robustness.records import Record

Row = list[Any]


def find(records: Sequence[Record], system: str, **where: Any) -> float | None:
    """The value of the single record of ``system`` matching ``where`` (None if absent)."""
    hits = [r for r in records if r.extra.get("system") == system
            and all((abs(getattr(r, k) - v) < 1e-12) if k == "epsilon"
                    else getattr(r, k) == v for k, v in where.items())]
    if len(hits) > 1:
        raise ValueError(f"{len(hits)} records for {system} {where}")
    return hits[0].value if hits else None


def systems_in(records: Sequence[Record]) -> list[str]:
    """The systems of the records, in the order they were measured."""
    return list(dict.fromkeys(str(r.extra.get("system")) for r in records))


def robust_systems_in(records: Sequence[Record]) -> list[str]:
    return [s for s in systems_in(records) if s not in PAPER_SYSTEMS]


def pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}"


def headline(records: Sequence[Record], epsilons: Sequence[float]) -> tuple[list[str], list[Row]]:
    top = max(epsilons)
    header = ["system", "clean acc.", "acc. on accepted", "threshold T", "silent clean",
              *[f"silent worst {e:g}" for e in epsilons], f"F robust acc. {top:g}",
              "AUROC FMNIST clean", f"AUROC FMNIST att. {top:g}",
              f"AUROC CIFAR-bw att. {top:g}", f"cert. acc. {top:g}",
              f"cert. AUROC FMNIST {top:g}"]
    rows = []
    for s in systems_in(records):
        thr = find(records, s, condition="clean", metric="threshold")
        rows.append([
            s, pct(find(records, s, condition="clean", metric="accuracy")),
            pct(find(records, s, condition="clean", metric="accepted_accuracy")),
            "—" if thr is None else f"{thr:.4f}",
            pct(find(records, s, condition="clean", dataset="mnist",
                     metric="silent_failure_rate")),
            *[pct(find(records, s, condition="worst-case", epsilon=e, dataset="mnist",
                       metric="silent_failure_rate")) for e in epsilons],
            pct(find(records, s, condition="worst-case", epsilon=top, dataset="mnist",
                     metric="accuracy")),
            pct(find(records, s, condition="clean", dataset="fashion-mnist", metric="auroc")),
            pct(find(records, s, condition="worst-case", epsilon=top, dataset="fashion-mnist",
                     side="ood", metric="auroc")),
            pct(find(records, s, condition="worst-case", epsilon=top, dataset="cifar10-bw",
                     side="ood", metric="auroc")),
            pct(find(records, s, condition="certified", epsilon=top,
                     metric="certified_accuracy")),
            pct(find(records, s, condition="certified", epsilon=top, dataset="fashion-mnist",
                     metric="certified_auroc"))])
    return header, rows


def ood_table(records: Sequence[Record], epsilons: Sequence[float]
              ) -> tuple[list[str], list[Row]]:
    header = ["system", "OOD set", "AUROC clean", "OOD accepted clean",
              *[f"{e:g}: AUROC OOD att. / both att. / OOD accepted" for e in epsilons]]
    rows = []
    for s in systems_in(records):
        for d in OOD_SETS:
            cells = [f"{pct(find(records, s, condition='worst-case', epsilon=e, dataset=d, side='ood', metric='auroc'))} / "  # noqa: E501
                     f"{pct(find(records, s, condition='worst-case', epsilon=e, dataset=d, side='both', metric='auroc'))} / "  # noqa: E501
                     f"{pct(find(records, s, condition='worst-case', epsilon=e, dataset=d, metric='acceptance_rate'))}"  # noqa: E501
                     for e in epsilons]
            rows.append([s, d, pct(find(records, s, condition="clean", dataset=d,
                                        metric="auroc")),
                         pct(find(records, s, condition="clean", dataset=d,
                                  metric="acceptance_rate")), *cells])
    return header, rows


def runs_table(records: Sequence[Record], epsilons: Sequence[float]
               ) -> tuple[list[str], list[Row]]:
    """Per ID attack run: F accuracy / silent-failure rate, per system and epsilon."""
    names = sorted({r.condition for r in records if r.side == "id"
                    and r.metric == "silent_failure_rate"
                    and r.condition not in ("worst-case", "clean")})
    header = ["system", "epsilon", *names, "worst case"]
    rows = []
    for s in systems_in(records):
        for e in epsilons:
            cells = [f"{pct(find(records, s, condition=n, epsilon=e, metric='accuracy'))} / "
                     f"{pct(find(records, s, condition=n, epsilon=e, metric='silent_failure_rate'))}"  # noqa: E501
                     for n in [*names, "worst-case"]]
            rows.append([s, f"{e:g}", *cells])
    return header, rows


def certified_table(records: Sequence[Record], epsilons: Sequence[float]
                    ) -> tuple[list[str], list[Row]]:
    header = ["system", "epsilon", "cert. correct", "cert. accepted", "cert. accuracy",
              *[f"GAUC {d}" for d in OOD_SETS]]
    rows = []
    for s in systems_in(records):
        for e in epsilons:
            rows.append([s, f"{e:g}", *[pct(find(records, s, condition="certified", epsilon=e,
                                                 dataset="mnist", metric=m))
                                        for m in ("certified_correct", "certified_accepted",
                                                  "certified_accuracy")],
                         *[pct(find(records, s, condition="certified", epsilon=e, dataset=d,
                                    metric="certified_auroc")) for d in OOD_SETS]])
    return header, rows


def sanity_table(records: Sequence[Record]) -> tuple[list[str], list[Row]]:
    rows = []
    for r in records:
        if r.condition == "sanity":
            rows.append([r.extra.get("system"), f"{r.epsilon:g}", r.dataset, r.metric,
                         pct(r.value), r.extra.get("n")])
    return ["system", "epsilon", "set", "check", "value %", "n"], rows


def targets_table(records: Sequence[Record]) -> tuple[list[str], list[Row]]:
    """The issue's targets against each robust system's measured numbers."""
    def measured(s: str) -> dict[str, float | None]:
        return {
            "clean_accuracy": find(records, s, condition="clean", metric="accuracy"),
            "silent_failure_0.3": find(records, s, condition="worst-case", epsilon=0.3,
                                       dataset="mnist", metric="silent_failure_rate"),
            "auroc_fashion-mnist_0.3": find(records, s, condition="worst-case", epsilon=0.3,
                                            dataset="fashion-mnist", side="ood",
                                            metric="auroc"),
            "auroc_cifar10-bw_0.3": find(records, s, condition="worst-case", epsilon=0.3,
                                         dataset="cifar10-bw", side="ood", metric="auroc"),
            "certified_auroc_fashion-mnist_0.3": find(records, s, condition="certified",
                                                      epsilon=0.3, dataset="fashion-mnist",
                                                      metric="certified_auroc")}

    systems = robust_systems_in(records)
    values = {s: measured(s) for s in systems}
    rows = []
    for key, target in TARGETS.items():
        lower_better = key.startswith("silent")
        cells = []
        for s in systems:
            value = values[s][key]
            met = None if value is None else (value <= target if lower_better
                                              else value >= target)
            cells.append(f"{pct(value)} ({'—' if met is None else 'met' if met else 'not met'})")
        rows.append([key, ("<= " if lower_better else ">= ") + pct(target), *cells])
    return ["target", "wanted", *[f"{s}: measured (status)" for s in systems]], rows
