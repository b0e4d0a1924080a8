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

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from basin.attacks import AttackSpec, check_epsilon, classifier_logits
from basin.detectors import threshold_for_acceptance
from basin.distributed.cells import Cell
from basin.distributed.executors import Executor, Resources, make_executor
from basin.distributed.grid import run_cells
from basin.robustness.audit_attacks import (
    BLACK_BOX,
    AttackGrid,
    attack_cell,
    check_attacks,
    plan_attacks,
    predict_and_score,
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


@dataclass(frozen=True)
class Execution:
    """How the audit's attack cells run (never what they compute): the executor (``local``
    or ``ray``), a Ray cluster address, inputs per cell (a multiple of the batch size, so
    that the batches and their seeds are those of one unsharded run), a run folder that
    makes a rerun skip finished cells, and Ray's per-cell resources."""

    executor: str | Executor = "local"
    ray_address: str | None = None
    shard_size: int | None = None
    cells_dir: str | os.PathLike[str] | None = None
    resources: Resources | None = None

    def check(self, batch_size: int) -> None:
        size = self.shard_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                 or size < 1 or size % batch_size):
            raise ValueError(f"shard_size: expected a multiple of batch_size={batch_size} "
                             f"(shards must start on a batch boundary), got {size!r}")
        make_executor(self.executor, ray_address=self.ray_address)  # fails early if unusable


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
                found: dict[tuple[float, str, str], tuple[Tensor, Tensor]]
                ) -> tuple[WorstCase, list[RunArrays]]:
    """Every spec's run on its side (``found``: the merged cells, by epsilon, spec text and
    data set); per input the worst case over the runs and clean."""
    labels = ctx.labels
    t = ctx.threshold
    wrong = ctx.clean_pred != labels
    silent = wrong & (ctx.clean_id_scores >= t)
    min_score = ctx.clean_id_scores.clone()
    max_scores = {k: v.clone() for k, v in ctx.clean_ood_scores.items()}
    runs: list[RunArrays] = []
    for spec in specs:
        targets = [ctx.id_set] if side_of(spec) == "id" else ctx.ood_sets
        for data in targets:
            pred, score = found[(spec.epsilon, spec.text, data.name)]
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


def _merge_cells(cells: Sequence[Cell], per_cell: Sequence[list[Record]]
                 ) -> dict[tuple[float, str, str], tuple[Tensor, Tensor]]:
    """Predictions and scores per (epsilon, spec, data set), the shards joined in order."""
    parts: dict[tuple[float, str, str], list[tuple[int, Record]]] = {}
    for cell, records in zip(cells, per_cell, strict=True):
        (record,) = records
        key = (cell.epsilon, cell.condition, cell.param("dataset"))
        parts.setdefault(key, []).append((int(record.extra["start"]), record))
    out = {}
    for key, shards in parts.items():
        shards.sort(key=lambda item: item[0])
        out[key] = (torch.tensor([p for _, r in shards for p in r.extra["predicted"]],
                                 dtype=torch.int64),
                    torch.tensor([v for _, r in shards for v in r.extra["scores"]],
                                 dtype=torch.float64))
    return out


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
          progress: bool = False, executor: str | Executor = "local",
          ray_address: str | None = None, shard_size: int | None = None,
          cells_dir: str | os.PathLike[str] | None = None,
          resources: Resources | None = None) -> AuditReport:
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
        progress: show attack cells done / total with an ETA.
        executor: ``"local"`` (in this process) or ``"ray"`` (:mod:`basin.distributed`):
            every epsilon x spec x data set x input shard is one cell; the records are the
            same whichever runs them.
        ray_address: ``"auto"`` or ``"ray://HOST:PORT"``; None starts a local Ray.
        shard_size: inputs per cell, a multiple of ``batch_size`` (default: one batch).
        cells_dir: a run folder for the finished cells (``records.jsonl``,
            ``manifest.json``): a rerun with the same system and data skips them.
        resources: per-cell CPUs, GPU fraction and retries on Ray (default: one CPU, a GPU
            fraction on a CUDA device).

    Returns:
        An :class:`AuditReport`: ``records`` (``basin.robustness.Record``), sanity flags,
        per-input arrays, ``to_json``/``to_markdown``/``to_html``/``write``.
    """
    eps_list = _check_options(epsilons, n, acceptance, batch_size)
    execution = Execution(executor, ray_address, shard_size, cells_dir, resources)
    execution.check(batch_size)
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
            "n_id": len(ctx.id_set), "n_ood": {d.name: len(d) for d in ctx.ood_sets}},
            execution)
    finally:
        model.train(was_training)


def _fingerprint(ctx: AuditContext) -> dict[str, Any]:
    """What an audit's cells read beyond their keys (weights, data, threshold, seed): a
    rerun into the same cells folder must match it, or its finished cells are not reused."""
    digest = hashlib.sha256()
    modules = [m for m in (ctx.model, getattr(ctx.detector, "detector", None), ctx.detector)
               if isinstance(m, nn.Module)]
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for data in [ctx.id_set, *ctx.ood_sets]:
        digest.update(data.name.encode())
        digest.update(data.x.contiguous().numpy().tobytes())
        if data.y is not None:
            digest.update(data.y.contiguous().numpy().tobytes())
    return {"format": "basin.audit-cells/1", "state_sha256": digest.hexdigest(),
            "detector": ctx.detector.label, "threshold": repr(ctx.threshold),
            "seed": ctx.seed, "batch_size": ctx.batch_size}


def _attack_results(ctx: AuditContext, specs: dict[float, list[AttackSpec]],
                    execution: Execution, progress: bool
                    ) -> dict[tuple[float, str, str], tuple[Tensor, Tensor]]:
    """Every attack of every epsilon as cells (spec x data set x input shard), run by the
    executor, merged back per (epsilon, spec, data set)."""
    grid = AttackGrid(ctx.model, ctx.detector,
                      {d.name: d for d in [ctx.id_set, *ctx.ood_sets]},
                      {(eps, s.text): s for eps, eps_specs in specs.items() for s in eps_specs},
                      ctx.seed, ctx.batch_size, ctx.device)
    shard = execution.shard_size or ctx.batch_size
    cells = grid.cells(shard)
    per_cell = run_cells(cells, attack_cell, shared=grid, executor=execution.executor,
                         out_dir=execution.cells_dir, ray_address=execution.ray_address,
                         resources=execution.resources or Resources.for_device(ctx.device),
                         config=_fingerprint(ctx) if execution.cells_dir else None,
                         progress=progress, desc="audit cells")
    return _merge_cells(cells, per_cell)


def _run(ctx: AuditContext, eps_list: list[float], templates: list[str], progress: bool,
         config: dict[str, Any], execution: Execution) -> AuditReport:
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
    specs = {eps: plan_attacks(templates, eps, n_classes) for eps in eps_list}
    found = _attack_results(ctx, specs, execution, progress)
    worst: dict[float, WorstCase] = {}
    runs: list[RunArrays] = []
    sanity: dict[float, list[str]] = {}
    smaller: WorstCase | None = None
    for eps in eps_list:  # ascending
        eps_worst, eps_runs = _worst_case(ctx, specs[eps], found)
        # the smaller ball lies inside this one: what broke an input there breaks it here
        worst[eps] = smaller = eps_worst if smaller is None else nest(eps_worst, smaller)
        runs += eps_runs
        records += worst_case_records(ctx.id_set.name, ctx.labels.numpy(),
                                      ctx.clean_id_scores.numpy(),
                                      {k: v.numpy() for k, v in ctx.clean_ood_scores.items()},
                                      worst[eps], ctx.threshold)
        records += run_records(ctx.labels.numpy(), ctx.clean_id_scores.numpy(), eps_runs,
                               ctx.threshold)
        flags, sanity_recs = sanity_for_epsilon(ctx.model, ctx.detector, ctx.id_set,
                                                specs[eps], eps_runs, seed=ctx.seed,
                                                device=ctx.device)
        sanity[eps] = flags
        records += sanity_recs
    return AuditReport(records=records, sanity=sanity, config=config, threshold=ctx.threshold,
                       id_name=ctx.id_set.name, ood_names=[d.name for d in ctx.ood_sets],
                       labels=ctx.labels.numpy(), clean_predicted=ctx.clean_pred.numpy(),
                       clean_id_scores=ctx.clean_id_scores.numpy(),
                       clean_ood_scores={k: v.numpy() for k, v in ctx.clean_ood_scores.items()},
                       worst=worst, runs=runs)
