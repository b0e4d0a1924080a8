"""The ablation's numbers as data: per-reading means and spreads, distances to the paper.

Everything is computed from the grid's records (:class:`basin.robustness.records.Record`,
tagged in ``extra`` with reading, seed and n): :func:`summarise` pools the seeds of each
(reading, n) into mean, sample standard deviation and count for every (condition, dataset,
metric); :func:`fit` compares a summary with the paper's published numbers
(:func:`.protocol.targets`); :func:`verdicts` says per claim under which readings it holds.
Tables are ``{"caption", "header", "rows"}`` like the attractor reproduction's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from basin.reproductions.attractor.tables import pct
from basin.reproductions.attractor_ablation.protocol import (
    FGSM_CE,
    FGSM_PAPER,
    ID_DATASET,
    OOD_SETS,
    TARGET_WITHIN,
    AblationPlan,
    Target,
    reading,
    targets,
)
from basin.robustness.records import Record

Key = tuple[str, str, str]          # (condition, dataset, metric)
ROBUST_WITHIN = 0.05                # the reproduction's "accuracy kept under attack" margin


@dataclass(frozen=True)
class Stat:
    mean: float | None
    std: float | None
    n: int

    def text(self) -> str:
        if self.mean is None:
            return "n/a"
        spread = "" if self.std is None else f" ± {100 * self.std:.2f}"
        return f"{100 * self.mean:.2f}{spread}"


def stat(values: Sequence[float | None]) -> Stat:
    """Mean and sample standard deviation (None for one value) of the defined values."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return Stat(None, None, 0)
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return Stat(mean, std, len(xs))


Summary = dict[tuple[str, int], dict[Key, Stat]]


def summarise(records: Sequence[Record]) -> Summary:
    """{(reading, n): {(condition, dataset, metric): Stat over seeds}}."""
    values: dict[tuple[str, int], dict[Key, list[float | None]]] = defaultdict(
        lambda: defaultdict(list))
    for r in records:
        name, steps = r.extra.get("reading"), r.extra.get("steps")
        if name is None or steps is None:
            raise ValueError(f"record {r.condition}/{r.dataset}/{r.metric}: extra lacks the "
                             f"reading or steps tag")
        values[(str(name), int(steps))][(r.condition, r.dataset, r.metric)].append(r.value)
    return {k: {key: stat(v) for key, v in per.items()} for k, per in values.items()}


def seeds_run(records: Sequence[Record]) -> dict[str, list[int]]:
    out: dict[str, set[int]] = defaultdict(set)
    for r in records:
        out[str(r.extra["reading"])].add(int(r.extra["seed"]))
    return {k: sorted(v) for k, v in out.items()}


@dataclass(frozen=True)
class Fit:
    """How far a (reading, n) is from the paper: the worst and mean absolute gap."""

    reading: str
    steps: int
    worst: float | None
    mean_abs: float | None
    gaps: dict[str, float | None]

    @property
    def within(self) -> bool:
        # the 1e-9 keeps a gap of exactly 2 points (up to float rounding) inside
        return self.worst is not None and self.worst <= TARGET_WITHIN + 1e-9


def fit(summary: Summary, name: str, steps: int, goal: Sequence[Target]) -> Fit:
    stats = summary.get((name, steps), {})
    gaps: dict[str, float | None] = {}
    for t in goal:
        s = stats.get((t.condition, t.dataset, t.metric))
        gaps[t.label] = None if s is None or s.mean is None else s.mean - t.paper
    known = [abs(g) for g in gaps.values() if g is not None]
    complete = len(known) == len(gaps)
    return Fit(name, steps, max(known) if complete else None,
               sum(known) / len(known) if known else None, gaps)


def best_fits(summary: Summary, network: str) -> list[Fit]:
    """Every (reading, n) of ``network``, closest to the paper first (worst gap, then mean)."""
    goal = targets(network)
    fits = [fit(summary, name, steps, goal) for name, steps in summary
            if reading(name).network == network]
    return sorted(fits, key=lambda f: (f.worst is None, f.worst or 0.0, f.mean_abs or 0.0))


def _v(stats: dict[Key, Stat], condition: str, dataset: str, metric: str) -> str:
    s = stats.get((condition, dataset, metric))
    return "n/a" if s is None else s.text()


def ablation_table(summary: Summary, plan: AblationPlan, seeds: dict[str, list[int]],
                   steps: int = 1) -> dict[str, Any]:
    """One row per reading at n = ``steps``: the paper's measured quantities, mean ± std."""
    rows = []
    for name in plan.readings:
        stats = summary.get((name, steps))
        if stats is None:
            rows.append([name, "not run", *["n/a"] * 10])
            continue
        worst = fit(summary, name, steps, targets(reading(name).network)).worst
        rows.append([name, ", ".join(map(str, seeds.get(name, []))),
                     _v(stats, "clean", ID_DATASET, "accuracy"),
                     _v(stats, FGSM_PAPER, ID_DATASET, "accuracy"),
                     _v(stats, FGSM_CE, ID_DATASET, "accuracy"),
                     _v(stats, "clean", ID_DATASET, "acceptance_rate"),
                     *(_v(stats, "clean", ood, "accuracy") for ood in OOD_SETS),
                     _v(stats, FGSM_PAPER, ID_DATASET, "acceptance_rate"),
                     *(_v(stats, FGSM_PAPER, ood, "accuracy") for ood in OOD_SETS),
                     "n/a" if worst is None else f"{100 * worst:.2f}"])
    return {"caption": f"Readings at T = 0.8 and n = {steps} (mean ± std over seeds, %): MNIST "
                       "accuracy clean / FGSM with the paper's objective / CE-FGSM at 20/255, "
                       "MNIST test images accepted, ID-vs-OOD accuracy (Tables 1 and 2); "
                       "last column: the largest gap to the paper's numbers, points",
            "header": ["reading", "seeds", "clean acc", "FGSM-paper acc", "CE-FGSM acc",
                       "MNIST accepted", "acc vs F-MNIST", "acc vs CIFAR-bw",
                       "MNIST accepted (FGSM)", "acc vs F-MNIST (FGSM)",
                       "acc vs CIFAR-bw (FGSM)", "worst gap"], "rows": rows}


def steps_table(summary: Summary, plan: AblationPlan) -> dict[str, Any]:
    """The evaluation-only axis: n iterations of G before the Pearson score."""
    rows = []
    for name in plan.readings:
        for n in plan.steps:
            stats = summary.get((name, n))
            if stats is None:
                continue
            rows.append([name, n, _v(stats, "clean", ID_DATASET, "acceptance_rate"),
                         *(_v(stats, "clean", ood, m) for ood in OOD_SETS
                           for m in ("accuracy", "auroc")),
                         _v(stats, FGSM_PAPER, ID_DATASET, "acceptance_rate"),
                         *(_v(stats, FGSM_PAPER, ood, "accuracy") for ood in OOD_SETS)])
    return {"caption": "Iterations n of G before the Pearson score (Eq. 6), same networks "
                       "and inputs (mean ± std over seeds, %)",
            "header": ["reading", "n", "MNIST accepted", "acc vs F-MNIST", "AUROC F-MNIST",
                       "acc vs CIFAR-bw", "AUROC CIFAR-bw", "MNIST accepted (FGSM)",
                       "acc vs F-MNIST (FGSM)", "acc vs CIFAR-bw (FGSM)"], "rows": rows}


def target_table(summary: Summary, name: str, steps: int) -> dict[str, Any]:
    """Every published number beside the reading's mean ± std and the gap."""
    network = reading(name).network
    stats = summary.get((name, steps), {})
    rows = []
    for t in targets(network):
        s = stats.get((t.condition, t.dataset, t.metric), Stat(None, None, 0))
        gap = None if s.mean is None else s.mean - t.paper
        rows.append([t.label, pct(t.paper), s.text(),
                     "n/a" if gap is None else f"{100 * gap:+.2f}",
                     "yes" if gap is not None and abs(gap) <= TARGET_WITHIN + 1e-9 else "no"])
    return {"caption": f"The paper's numbers ({network}) against reading '{name}' at n = "
                       f"{steps} (mean ± std over seeds, %)",
            "header": ["number", "paper", "basin", "gap (points)", "within 2 points"],
            "rows": rows}


def _robust_holds(summary: Summary, name: str, steps: int, condition: str) -> bool | None:
    stats = summary.get((name, steps), {})
    clean = stats.get(("clean", ID_DATASET, "accuracy"))
    attacked = stats.get((condition, ID_DATASET, "accuracy"))
    if clean is None or attacked is None or clean.mean is None or attacked.mean is None:
        return None
    return clean.mean - attacked.mean <= ROBUST_WITHIN


def verdicts(summary: Summary) -> list[dict[str, Any]]:
    """Per claim: the (reading, n) under which it holds (all its numbers within 2 points)."""
    out = []
    for network in ("attractor", "baseline"):
        goal = targets(network)
        for claim in dict.fromkeys(t.claim for t in goal):
            part = [t for t in goal if t.claim == claim]
            holds, tried = [], []
            # F(x) classifies the input: accuracy claims do not depend on n, so n = 1 only
            id_only = all(t.dataset == ID_DATASET for t in part)
            for name, steps in sorted(summary):
                if reading(name).network != network or (id_only and steps != 1):
                    continue
                f = fit(summary, name, steps, part)
                tried.append(f"{name} n={steps}")
                if f.within:
                    holds.append(f"{name} n={steps}")
            out.append({"network": network, "claim": f"{claim} ({len(part)} numbers within "
                                                     "2 points)", "holds_under": holds,
                        "tried": tried})
    for condition, label in ((FGSM_PAPER, "the paper's FGSM"), (FGSM_CE, "CE-FGSM")):
        keys = [k for k in sorted(summary) if reading(k[0]).network == "attractor" and k[1] == 1]
        holds = [f"{n} n={s}" for n, s in keys if _robust_holds(summary, n, s, condition)]
        out.append({"network": "attractor", "claim": f"accuracy kept within 5 points under "
                                                     f"{label} at 20/255",
                    "holds_under": holds, "tried": [f"{n} n={s}" for n, s in keys]})
    return out


def verdict_lines(items: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for v in items:
        where = ", ".join(v["holds_under"]) if v["holds_under"] else "none of the readings tried"
        lines.append(f"**{v['network']}**: {v['claim']}: holds under {where} "
                     f"({len(v['tried'])} tried)")
    return lines
