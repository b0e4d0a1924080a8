"""``audit``: a system-level, detector-aware robustness audit of any classifier + OOD detector.

The system under audit answers each input with a class, or abstains when the detector's
score falls below a threshold. What hurts such a system is a *silent failure*: an input it
accepts and gets wrong (every accepted OOD input is one). For each epsilon the audit runs
every attack of the suite on its side (:mod:`basin.robustness.audit_attacks`), and keeps per
input the worst case over all of them, over the clean input, which lies in the ball too, and
over every smaller epsilon audited (a smaller ball lies inside a larger one):

- ID inputs: wrong under *some* run (robust accuracy), accepted-and-wrong under some run
  (silent-failure rate; the ``end-to-end`` objective at several weights of its acceptance
  term aims at exactly this), and the lowest score reached (rejection of ID inputs);
- OOD inputs: the highest score reached (acceptance of OOD inputs).

From those per-input worst cases come AUROC / FPR95 / AUPR with the ID side, the OOD side
and both sides attacked through the detector's own score, and the sanity flags of
:mod:`basin.attacks.sanity` say whether the numbers can be trusted. The threshold is
calibrated on ``calibration`` (ID *validation* data) or given; never on the test inputs.

Example::

    >>> report = basin.audit(model, detector, (x_test, y_test), {"noise": x_noise},
    ...                      epsilons=(8 / 255,), attacks="fast", calibration=x_val)
    >>> print(report.to_markdown())
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from basin.attacks import AttackSpec, check_epsilon, classifier_logits
from basin.detectors import threshold_for_acceptance
from basin.robustness.audit_attacks import (
    BLACK_BOX,
    build_objective,
    check_attacks,
    plan_attacks,
    predict_and_score,
    run_attack,
    side_of,
)
from basin.robustness.audit_metrics import clean_records, run_records, worst_case_records
from basin.robustness.audit_report import AuditReport, RunArrays, WorstCase
from basin.robustness.audit_sanity import sanity_for_epsilon
from basin.robustness.records import Record
from basin.robustness.system import Data, ScoreDetector, as_data_sets, as_score_detector


@dataclass
class AuditContext:
    """Everything one audit shares across epsilons: the system, the data, the clean pass."""

    model: nn.Module
    detector: ScoreDetector
    id_set: Data
    ood_sets: list[Data]
    device: torch.device
    batch_size: int
    seed: int
    threshold: float
    clean_pred: Tensor = field(default_factory=lambda: torch.empty(0))
    clean_id_scores: Tensor = field(default_factory=lambda: torch.empty(0))
    clean_ood_scores: dict[str, Tensor] = field(default_factory=dict)

    def evaluate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return predict_and_score(self.model, self.detector, x, batch_size=self.batch_size,
                                 device=self.device)

    @property
    def labels(self) -> Tensor:
        assert self.id_set.y is not None
        return self.id_set.y


def _check_options(epsilons: Sequence[float], n: int | None, acceptance: float,
                   batch_size: int) -> list[float]:
    if isinstance(epsilons, int | float):
        epsilons = (epsilons,)
    eps = [check_epsilon(e, "epsilons") for e in epsilons]
    if not eps:
        raise ValueError("epsilons: give at least one epsilon")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n: expected an integer >= 1 or None, got {n!r}")
    if not (isinstance(acceptance, int | float) and 0.0 < acceptance <= 1.0):
        raise ValueError(f"acceptance: expected a fraction in (0, 1], got {acceptance!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    return sorted(dict.fromkeys(eps))


def _device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    first = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return first.device if first is not None else torch.device("cpu")


def _threshold(ctx: AuditContext, calibration: Any, threshold: float | None,
               acceptance: float) -> float:
    if threshold is not None:
        if calibration is not None:
            raise ValueError("threshold, calibration: give one of them, not both")
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or \
                not math.isfinite(threshold):
            raise ValueError(f"threshold: expected a finite number, got {threshold!r}")
        return float(threshold)
    if calibration is None:
        raise ValueError("calibration: give ID validation data to calibrate the threshold "
                         "on (never the test inputs), or a threshold= (e.g. "
                         "threshold=detector.threshold)")
    (cal,) = as_data_sets(calibration, "calibration", "calibration", need_labels=False)
    _, scores = ctx.evaluate(cal.x)
    return threshold_for_acceptance(scores, acceptance)


def _worst_case(ctx: AuditContext, specs: Sequence[AttackSpec],
                progress: bool) -> tuple[WorstCase, list[RunArrays]]:
    """Run every spec on its side; per input the worst case over the runs and clean."""
    labels = ctx.labels
    t = ctx.threshold
    wrong = ctx.clean_pred != labels
    silent = wrong & (ctx.clean_id_scores >= t)
    min_score = ctx.clean_id_scores.clone()
    max_scores = {k: v.clone() for k, v in ctx.clean_ood_scores.items()}
    runs: list[RunArrays] = []
    for spec in specs:
        objective = build_objective(spec, ctx.model, ctx.detector)
        targets = [ctx.id_set] if side_of(spec) == "id" else ctx.ood_sets
        for data in targets:
            if progress:
                print(f"audit: {spec.text} on {data.name}", flush=True)
            x_adv = run_attack(spec, objective, data, seed=ctx.seed,
                               batch_size=ctx.batch_size, device=ctx.device)
            pred, score = ctx.evaluate(x_adv)
            if side_of(spec) == "id":
                run_wrong = pred != labels
                wrong |= run_wrong
                silent |= run_wrong & (score >= t)
                min_score = torch.minimum(min_score, score)
            else:
                max_scores[data.name] = torch.maximum(max_scores[data.name], score)
            runs.append(RunArrays(spec.text, spec.attack, spec.objective, spec.epsilon,
                                  data.name, side_of(spec), spec.attack in BLACK_BOX,
                                  score.numpy(), pred.numpy()))
    epsilon = specs[0].epsilon if specs else 0.0
    worst = WorstCase(epsilon, wrong.numpy(), silent.numpy(), min_score.numpy(),
                      {k: v.numpy() for k, v in max_scores.items()})
    return worst, runs


def nest(larger: WorstCase, smaller: WorstCase) -> WorstCase:
    """The worst case at the larger epsilon, counting every candidate of the smaller ball."""
    return WorstCase(larger.epsilon, larger.wrong | smaller.wrong,
                     larger.silent | smaller.silent,
                     np.minimum(larger.id_scores, smaller.id_scores),
                     {k: np.maximum(v, smaller.ood_scores[k])
                      for k, v in larger.ood_scores.items()})


def audit(model: nn.Module, detector: Any, id_data: Any, ood_data: Any, *,
          epsilons: Sequence[float] = (8 / 255,), attacks: str | Sequence[str] = "strongest",
          n: int | None = 1000, seed: int = 0, calibration: Any = None,
          threshold: float | None = None, acceptance: float = 0.95,
          device: str | torch.device | None = None, batch_size: int = 256,
          progress: bool = False) -> AuditReport:
    """Audit ``model`` + ``detector`` against L-infinity attacks at every epsilon.

    Args:
        model: any ``nn.Module`` mapping images in [0, 1] to logits (N, C) (a ``logits``
            method is used when present). Put in eval mode for the audit, restored after.
        detector: a basin ``Detector`` or any callable ``x -> score`` (N,), higher = ID;
            differentiable for the white-box detector-aware attacks (the Square attack of
            ``"strongest"`` needs only values). The caller's detector is never modified.
        id_data: labelled ID test data: ``(x, y)``, an ``ImageDataset`` or ``{name: data}``
            with one entry.
        ood_data: OOD test data: tensors, tuples, ImageDatasets or a ``{name: data}`` dict.
        epsilons: L-infinity radii in pixel scale [0, 1].
        attacks: ``"strongest"``, ``"fast"`` (PGD-10 per goal) or a list of spec strings
            (``"pgd:end-to-end:8/255:steps=40:penalty=10"``); a spec's epsilon is a
            placeholder, every spec runs at every epsilon.
        n: inputs per data set (a seeded subset, as ``ImageDataset.subset``); None for all.
        seed: seeds the subsets and every attack (per epsilon, attack and batch).
        calibration: ID validation data; the threshold accepts ``acceptance`` of it.
        threshold: a fixed threshold instead of calibration.
        device: where to run (default: the model's device); the model is not moved.
        batch_size: inputs per attack batch.
        progress: print one line per attack run.

    Returns:
        An :class:`AuditReport`: ``records`` (``basin.robustness.Record``), sanity flags,
        per-input arrays, ``to_json``/``to_markdown``/``to_html``/``write``.
    """
    eps_list = _check_options(epsilons, n, acceptance, batch_size)
    templates = check_attacks(attacks)
    id_sets = as_data_sets(id_data, "id", "id_data", need_labels=True)
    if len(id_sets) != 1:
        raise ValueError(f"id_data: expected one ID data set, got {len(id_sets)}")
    ood_sets = as_data_sets(ood_data, "ood", "ood_data", need_labels=False)
    names = [d.name for d in ood_sets]
    if len(set(names)) != len(names) or id_sets[0].name in names:
        raise ValueError(f"ood_data: data set names must be distinct and differ from the ID "
                         f"set {id_sets[0].name!r}, got {names}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    ctx = AuditContext(model, as_score_detector(detector), id_sets[0].subset(n, seed),
                       [d.subset(n, seed) for d in ood_sets], _device(model, device),
                       batch_size, seed, math.nan)
    was_training = model.training
    model.eval()
    try:
        ctx.threshold = _threshold(ctx, calibration, threshold, acceptance)
        ctx.detector.threshold = ctx.threshold
        return _run(ctx, eps_list, templates, progress, {
            "epsilons": eps_list, "attacks": templates, "n": n, "seed": seed,
            "acceptance": None if threshold is not None else acceptance,
            "threshold": ctx.threshold, "batch_size": batch_size, "device": str(ctx.device),
            "id": ctx.id_set.name, "ood": names, "detector": ctx.detector.label,
            "n_id": len(ctx.id_set), "n_ood": {d.name: len(d) for d in ctx.ood_sets}})
    finally:
        model.train(was_training)


def _run(ctx: AuditContext, eps_list: list[float], templates: list[str], progress: bool,
         config: dict[str, Any]) -> AuditReport:
    with torch.no_grad():
        n_classes = int(classifier_logits(ctx.model, ctx.id_set.x[:1].to(ctx.device)).shape[1])
    if int(ctx.labels.min()) < 0 or int(ctx.labels.max()) >= n_classes:
        raise ValueError(f"id_data: labels span [{int(ctx.labels.min())}, "
                         f"{int(ctx.labels.max())}] but the model returns {n_classes} classes")
    ctx.clean_pred, ctx.clean_id_scores = ctx.evaluate(ctx.id_set.x)
    ctx.clean_ood_scores = {d.name: ctx.evaluate(d.x)[1] for d in ctx.ood_sets}
    records: list[Record] = clean_records(ctx.id_set.name, ctx.labels, ctx.clean_pred,
                                          ctx.clean_id_scores, ctx.clean_ood_scores,
                                          ctx.threshold)
    worst: dict[float, WorstCase] = {}
    runs: list[RunArrays] = []
    sanity: dict[float, list[str]] = {}
    smaller: WorstCase | None = None
    for eps in eps_list:  # ascending
        specs = plan_attacks(templates, eps, n_classes)
        found, eps_runs = _worst_case(ctx, specs, progress)
        # the smaller ball lies inside this one: what broke an input there breaks it here
        worst[eps] = smaller = found if smaller is None else nest(found, smaller)
        runs += eps_runs
        records += worst_case_records(ctx.id_set.name, ctx.labels.numpy(),
                                      ctx.clean_id_scores.numpy(),
                                      {k: v.numpy() for k, v in ctx.clean_ood_scores.items()},
                                      worst[eps], ctx.threshold)
        records += run_records(ctx.labels.numpy(), ctx.clean_id_scores.numpy(), eps_runs,
                               ctx.threshold)
        flags, sanity_recs = sanity_for_epsilon(ctx.model, ctx.detector, ctx.id_set, specs,
                                                eps_runs, seed=ctx.seed, device=ctx.device)
        sanity[eps] = flags
        records += sanity_recs
    return AuditReport(records=records, sanity=sanity, config=config, threshold=ctx.threshold,
                       id_name=ctx.id_set.name, ood_names=[d.name for d in ctx.ood_sets],
                       labels=ctx.labels.numpy(), clean_predicted=ctx.clean_pred.numpy(),
                       clean_id_scores=ctx.clean_id_scores.numpy(),
                       clean_ood_scores={k: v.numpy() for k, v in ctx.clean_ood_scores.items()},
                       worst=worst, runs=runs)
