"""The feature-recon reproduction's tables and summary, built as data.

As in :mod:`basin.reproductions.attractor.tables`, every table is built once as data
(``caption``, ``header``, ``rows``), written to ``results.json`` under ``tables`` and rendered
from that same data into ``report.html`` and ``report.md``. Percentages are stored as numbers
in percent, rounded to 2 decimals; ``None`` (not reported / not applicable) renders as a dash.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from basin.corruptions import CORRUPTIONS
from basin.data import split_indices
from basin.data.cifar_sets import ANIMALS, VEHICLES
from basin.data.registry import CIFAR10_CLASSES
from basin.detectors import Detector, DetectorError
from basin.metrics import ood_metrics
from basin.report.figures import format_epsilon
from basin.reproductions.feature_recon.protocol import (
    LSUN_RESIZE,
    OTHER_NAMES,
    PAPER_TABLE1,
    SEVERITY,
    TINY,
    TINY_RESIZE,
    BackboneRun,
    Plan,
)
from basin.robustness.detector_level import DetectorRobustness
from basin.robustness.records import Record, select


def pct(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(100 * float(value), 2)


def method_name(det: str) -> str:
    return PAPER_TABLE1[det][0] + f" ({det})" if det in PAPER_TABLE1 else OTHER_NAMES[det]


def pooled(run: BackboneRun, kind: str, det: str) -> np.ndarray | None:
    parts = [s[det] for k, s in run.scores.values() if k == kind]
    return np.concatenate(parts) if parts else None


def threshold_of(det: Detector) -> float:
    """``det``'s calibrated threshold; the run calibrates every detector before any table or
    figure is built, so a missing one is a bug worth a clear error rather than a TypeError."""
    if det.threshold is None:
        raise DetectorError(f"{det.name}: no threshold; calibrate before building tables")
    return float(det.threshold)


def metric_records(runs: dict[str, BackboneRun]) -> list[dict[str, Any]]:
    """One record per (backbone, detector, set), pooled sets included."""
    records = []
    for run in runs.values():
        sets: list[tuple[str, str, str | None]] = [
            (n, k, None) for n, (k, _) in run.scores.items() if k not in ("id", "id-val")]
        sets += [(f"{k} (all)", k, k) for k in ("far-ood", "anomaly")
                 if any(kind == k for kind, _ in run.scores.values())]
        for det, d in run.detectors.items():
            id_scores = run.scores[run.key][1][det]
            for name, kind, pool in sets:
                ood = pooled(run, pool, det) if pool else run.scores[name][1][det]
                m = ood_metrics(id_scores, ood, threshold_of(d))
                records.append({"backbone": run.key, "detector": det, "set": name,
                                "kind": kind, "pooled": pool is not None, **m})
    return records


def _find(records: list[dict[str, Any]], backbone: str, det: str, name: str) -> dict | None:
    return next((r for r in records if (r["backbone"], r["detector"], r["set"]) ==
                 (backbone, det, name)), None)


def build_tables(plan: Plan, runs: dict[str, BackboneRun], records: list[dict[str, Any]]
                 ) -> dict[str, dict[str, Any]]:
    """Every table of the report, as data, keyed by the id it has in the report."""
    tables: dict[str, dict[str, Any]] = {"table1": _table1(runs, records)}
    tables["backbones"] = {
        "caption": "Backbones (airbench convnet): test accuracy and ECE with the plain forward "
                   "pass (what the detectors see), on the test images used",
        "header": ["backbone", "ID classes", "training images", "epochs", "label smoothing",
                   "reused", "test images", "test accuracy", "ECE", "wall time (s)"],
        "rows": [[r.key, ", ".join(r.classes), r.info["n_train"], r.info["epochs"],
                  r.info.get("label_smoothing"), str(r.info.get("reused")), r.info["n_test"],
                  pct(r.info["test_accuracy"]), pct(r.info["test_ece"]),
                  round(r.info["seconds"], 1)] for r in runs.values()]}
    tables["metrics"] = {
        "caption": "Every detector on every OOD and anomaly set (ID = the backbone's test "
                   "images; %). Detected = rejected at the 95%-validation threshold",
        "header": ["backbone", "detector", "set", "kind", "n", "AUROC", "FPR@95%TPR",
                   "AUPR-In", "AUPR-Out", "detected", "ID test accepted"],
        "rows": [[r["backbone"], r["detector"], r["set"], r["kind"], r["n_ood"],
                  pct(r["auroc"]), pct(r["fpr_at_95_tpr"]), pct(r["aupr_in"]),
                  pct(r["aupr_out"]), pct(r["tnr"]), pct(r["recall"])] for r in records]}
    tables["robustness"] = _robustness_table(plan, runs)
    tables["odin"] = {
        "caption": "ODIN's temperature and preprocessing step, tuned on validation data only "
                   "(ID validation images against the OOD proxy; criterion FPR@95%TPR). The "
                   "proxy's AUROC at T = 1, eps = 0 (plain MSP) shows whether it saturates",
        "header": ["backbone", "T", "epsilon", "val FPR95", "val AUROC", "proxy AUROC of MSP",
                   "val ID / OOD images", "OOD proxy"],
        "rows": [[r.key, r.odin_tuning["temperature"], r.odin_tuning["epsilon"],
                  pct(_grid_value(r.odin_tuning, "fpr95")),
                  pct(_grid_value(r.odin_tuning, "auroc")),
                  pct(_grid_value(r.odin_tuning, "auroc", (1.0, 0.0))),
                  f"{r.odin_tuning['n_val_id']} / {r.odin_tuning['n_val_ood']}",
                  r.odin_tuning["ood_source"]] for r in runs.values()]}
    tables["zhou-fit"] = {
        "caption": "Zhou's normal fits (mu, sigma of msp, e1, e2) and the combined detector's: "
                   "which images they used. Indices are positions in the official CIFAR-10 "
                   "training file; the test file is a different file",
        "header": ["backbone", "training features", "validation features",
                   "all in basin's val split", "any in the train split", "uses the test file",
                   "val features SHA-256"],
        "rows": [[r.key, r.zhou_fit.get("n_train"), r.zhou_fit.get("n_val"),
                  *zhou_checks(r.zhou_fit), str(r.zhou_fit.get("val_sha256", ""))[:16]]
                 for r in runs.values()]}
    rows = [[run.key, name, kind, len(next(iter(s.values()))), describe(run.key, name, kind)]
            for run in runs.values() for name, (kind, s) in run.scores.items()]
    tables["sets"] = {"caption": "Every set scored (validation: calibration only)",
                      "header": ["backbone", "set", "kind", "images", "what"], "rows": rows}
    return tables


def _table1(runs: dict[str, BackboneRun], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The paper's Table 1 beside basin's numbers, with the natural-image sets when present:
    ODIN's Tiny-ImageNet (resize), the paper's own OOD set, and LSUN (resize)."""
    scores = runs["cifar10"].scores
    natural = [n for n in (TINY_RESIZE, LSUN_RESIZE, TINY) if n in scores]
    label = {TINY_RESIZE: "Tiny-ImageNet (resize)", LSUN_RESIZE: "LSUN (resize)",
             TINY: "Tiny-ImageNet (val zip)"}
    rows = []
    for det in runs["cifar10"].detectors:
        far = _find(records, "cifar10", det, "far-ood (all)") or {}
        anom = _find(records, "cifar10", det, "anomaly (all)") or {}
        near = _find(records, "cifar6", det, "cifar4-vehicles") or {}
        nat = [_find(records, "cifar10", det, n) or {} for n in natural]
        paper = PAPER_TABLE1.get(det, (None, None, None))
        rows.append([method_name(det), paper[1], paper[2], *(pct(r.get("tnr")) for r in nat),
                     pct(far.get("tnr")), pct(near.get("tnr")), pct(anom.get("tnr")),
                     *(pct(r.get("auroc")) for r in nat), pct(far.get("auroc")),
                     pct(near.get("auroc")), pct(anom.get("auroc"))])
    return {
        "caption": "Table 1 beside basin's numbers: OoD accuracy (detected OOD / all OOD) and "
                   "anomaly accuracy (detected anomalies / all anomalies) at the threshold "
                   "accepting 95% of CIFAR-10 validation images, %, and AUROC, %. The paper's "
                   "OOD set is resized Tiny-ImageNet: " + (
                       "ODIN's Tiny-ImageNet (resize) is basin's column of that name; "
                       if TINY_RESIZE in natural else "not in the mirror; ") +
                   "basin's far-OOD columns pool the far-OOD sets (digits, letters, drawings, "
                   "noise), near-OOD is the 6-vs-4 open-set split"
                   + ("" if "cifar6" in runs else " (not run: no 6-class backbone)"),
        "header": ["method", "paper OoD acc.", "paper anomaly acc."]
        + [f"basin {label[n]} acc." for n in natural]
        + ["basin far-OOD acc.", "basin near-OOD acc.", "basin anomaly acc."]
        + [f"basin {label[n]} AUROC" for n in natural]
        + ["basin far-OOD AUROC", "basin near-OOD AUROC", "basin anomaly AUROC"], "rows": rows}


def _one(found: list[Record]) -> float | None:
    return found[0].value if len(found) == 1 else None


def _robustness_row(backbone: str, det: str, res: DetectorRobustness, eps: float
                    ) -> dict[str, Any]:
    """The flat row of one (backbone, detector, epsilon), filtered from ``res.records``."""
    recs = res.records
    ood = next(r.dataset for r in recs if r.metric == "auroc")
    clean = {m: _one(select(recs, condition="clean", dataset=ood, metric=m))
             for m in ("auroc", "fpr_at_95_tpr", "ood_acceptance_rate")}
    pgd = {(side, m): _one([r for r in select(recs, attack="pgd", epsilon=eps, side=side,
                                              metric=m) if ":first=" not in r.condition])
           for side in ("ood", "both") for m in ("auroc", "fpr_at_95_tpr", "ood_acceptance_rate")}
    row = {"backbone": backbone, "ood_set": ood, "detector": det, "epsilon": eps,
           "n_id": res.n_id, "n_ood": res.n_ood, "auroc_clean": clean["auroc"],
           "auroc_ood_attacked": pgd["ood", "auroc"], "auroc_both_attacked": pgd["both", "auroc"],
           "fpr95_clean": clean["fpr_at_95_tpr"], "fpr95_ood_attacked": pgd["ood", "fpr_at_95_tpr"],
           "fpr95_both_attacked": pgd["both", "fpr_at_95_tpr"],
           "ood_accepted_clean": clean["ood_acceptance_rate"],
           "ood_accepted_attacked": pgd["ood", "ood_acceptance_rate"],
           "grad_nonzero": _one(select(recs, condition="clean", dataset=backbone,
                                       metric="grad_nonzero_fraction"))}
    square = select(recs, attack="square", epsilon=eps, metric="detection_accuracy")
    subset = [r for r in select(recs, attack="pgd", epsilon=eps, side="both",
                                metric="detection_accuracy") if ":first=" in r.condition]
    if square and subset:
        row.update(square_correct=square[0].value, pgd_correct_on_square_subset=subset[0].value,
                   square_n=int(square[0].condition.rsplit("=", 1)[1]))
    return row


def robustness_rows(runs: dict[str, BackboneRun]) -> list[dict[str, Any]]:
    """One flat row per (backbone, detector, epsilon), filtered from the detectors' records."""
    return [_robustness_row(run.key, det, res, eps) for run in runs.values()
            for det, res in run.robustness.items()
            for eps in dict.fromkeys(r.epsilon for r in res.records if r.attack == "pgd")]


def _robustness_table(plan: Plan, runs: dict[str, BackboneRun]) -> dict[str, Any]:
    rob = robustness_rows(runs)
    return {
        "caption": f"PGD (L-inf, {plan.pgd_steps} steps, 1 restart) through each detector's "
                   "own score: OOD inputs pushed to acceptance (accept-ood), ID inputs to "
                   "rejection (reject-id); AUROC and FPR@95%TPR (%) clean, with only the OOD "
                   "side attacked, and with both sides attacked. Last column: the black-box "
                   f"check at the largest epsilon, Square ({plan.square_queries} queries) on "
                   f"the first {plan.square_n} inputs per side against PGD on the same inputs "
                   "(right decisions, %; Square above PGD = suspected gradient masking). "
                   f"Attack steps in {plan.attack_precision} precision (auto: bf16 where "
                   "native), every reported score in fp32",
        "header": ["backbone", "OOD set", "detector", "epsilon", "n ID / OOD", "AUROC clean",
                   "AUROC OOD attacked", "AUROC both attacked", "FPR95 clean",
                   "FPR95 OOD attacked", "FPR95 both attacked", "OOD accepted clean",
                   "OOD accepted attacked", "grad non-zero", "right: PGD / Square"],
        "rows": [[r["backbone"], r["ood_set"], r["detector"],
                  format_epsilon(r["epsilon"]), f"{r['n_id']} / {r['n_ood']}",
                  pct(r["auroc_clean"]), pct(r["auroc_ood_attacked"]),
                  pct(r["auroc_both_attacked"]), pct(r["fpr95_clean"]),
                  pct(r["fpr95_ood_attacked"]), pct(r["fpr95_both_attacked"]),
                  pct(r["ood_accepted_clean"]), pct(r["ood_accepted_attacked"]),
                  pct(r["grad_nonzero"]), _square_cell(r)] for r in rob]}


def describe(backbone: str, name: str, kind: str) -> str:
    """What a scored set is, with the severity's parameter for corruptions."""
    if name == "fgsm:8/255":
        return "FGSM 8/255, cross-entropy of the trained 10-class backbone"
    if kind == "anomaly":
        c = CORRUPTIONS[name.split(":")[0]]
        return f"severity {SEVERITY}: {c.description} ({c.param_name} {c.param(SEVERITY)})"
    if kind == "near-ood":
        return "CIFAR-10 test images of " + ", ".join(CIFAR10_CLASSES[k] for k in VEHICLES)
    if kind == "natural-ood":
        return "ODIN's 32x32 JPEGs (the mirror's odin/), unlabelled"
    if kind == "far-ood":
        if name == TINY:
            return "Tiny-ImageNet val images, 64x64 resized to 32x32"
        return ("3x32x32 noise" if "noise" in name
                else "28x28 greyscale, bilinear-upsampled to 32x32, channel repeated")
    classes = ANIMALS if backbone == "cifar6" else range(10)
    return f"CIFAR-10 {'val' if kind == 'id-val' else 'test'} images of " + ", ".join(
        CIFAR10_CLASSES[k] for k in classes)


def _grid_value(tuning: dict[str, Any], metric: str,
                at: tuple[float, float] | None = None) -> float | None:
    """``metric`` of the tuning grid at ``at`` = (T, eps), by default the chosen one."""
    point = at or (tuning["temperature"], tuning["epsilon"])
    return next((g[metric] for g in tuning.get("grid", []) if
                 (g["temperature"], g["epsilon"]) == point), None)


def zhou_checks(fit: dict[str, Any]) -> list[str]:
    """(val indices all in the val split, any in the train split, test file used) as text."""
    idx = fit.get("val_indices")
    if idx is None:
        return ["unknown", "unknown", "unknown"]
    val = set(split_indices("cifar10", "val").tolist())
    train = set(split_indices("cifar10", "train").tolist())
    return [str(set(idx) <= val), str(bool(set(idx) & train)), "False"]


def summary_lines(runs: dict[str, BackboneRun], records: list[dict[str, Any]]) -> list[str]:
    """One line per detector: detection rates and its worst AUROC under PGD."""
    lines, rob = [], robustness_rows(runs)
    for det in runs["cifar10"].detectors:
        far = _find(records, "cifar10", det, "far-ood (all)") or {}
        near = _find(records, "cifar6", det, "cifar4-vehicles") or {}
        anom = _find(records, "cifar10", det, "anomaly (all)") or {}
        worst = min((r for r in rob if r["detector"] == det),
                    key=lambda r: r["auroc_ood_attacked"], default=None)
        text = (f"**{det}**: far-OOD detected {pct(far.get('tnr'))}%, near-OOD "
                f"{pct(near.get('tnr'))}%, anomalies {pct(anom.get('tnr'))}%")
        if worst is not None:
            text += (f"; under PGD {format_epsilon(worst['epsilon'])} on "
                     f"{worst['ood_set']} ({worst['backbone']} backbone) AUROC "
                     f"{pct(worst['auroc_clean'])}% -> "
                     f"{pct(worst['auroc_ood_attacked'])}% (OOD attacked)")
        lines.append(text)
    return lines


def _square_cell(r: dict[str, Any]) -> str:
    if "square_correct" not in r:
        return "-"
    return (f"{pct(r['pgd_correct_on_square_subset'])} / {pct(r['square_correct'])} "
            f"(n={r['square_n']})")
