"""Tables, figures and summary of the feature-reconstruction paper's reproduction.

As in :mod:`basin.experiments.attractor_report`, every table is built once as data
(``caption``, ``header``, ``rows``), written to ``results.json`` under ``tables`` and rendered
from that same data into ``report.html`` and ``report.md``. Percentages are stored as numbers
in percent, rounded to 2 decimals; ``None`` (not reported / not applicable) renders as a dash.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from basin.corruptions import CORRUPTIONS
from basin.data import split_indices
from basin.data.registry import CIFAR10_CLASSES
from basin.metrics import ood_metrics
from basin.report import Report, figures
from basin.utils.io import atomic_write_json

if TYPE_CHECKING:
    from basin.experiments.feature_recon_paper import BackboneRun, Plan

# Table 1 of Mulé & Shaner: OoD accuracy and anomaly accuracy (%), ID CIFAR-10, OOD
# Tiny-ImageNet (resized), anomalies = the six perturbations of CIFAR-10.
TINY = "tiny-imagenet"
PAPER_TABLE1 = {"pixel_autoencoder": ("Simple Autoencoder", 15.89, 70.84),
                "zhou": ("Zhou's Method", 99.93, 85.05),
                "combined": ("Combined Method", 99.90, 95.94)}
OTHER_NAMES = {"msp": "MSP (Hendrycks & Gimpel)", "odin": "ODIN", "energy": "Energy",
               "mahalanobis": "Mahalanobis"}
ATOM_REFERENCE = ("Published reference for the shape of this table: MSP on CIFAR-10 drops "
                  "from AUROC 91.8 to 13.8 under PGD-40 at 8/255 on OOD inputs (Chen et al., "
                  "ATOM).")
TABLE_IDS = ("table1", "backbones", "metrics", "robustness", "odin", "zhou-fit", "sets")


def pct(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(100 * float(value), 2)


def method_name(det: str) -> str:
    return PAPER_TABLE1[det][0] + f" ({det})" if det in PAPER_TABLE1 else OTHER_NAMES[det]


def pooled(run: BackboneRun, kind: str, det: str) -> np.ndarray | None:
    parts = [s[det] for k, s in run.scores.values() if k == kind]
    return np.concatenate(parts) if parts else None


def metric_records(runs: dict[str, BackboneRun]) -> list[dict[str, Any]]:
    """One record per (backbone, detector, set), pooled sets included."""
    records = []
    for run in runs.values():
        sets = [(n, k, None) for n, (k, _) in run.scores.items() if k not in ("id", "id-val")]
        sets += [(f"{k} (all)", k, k) for k in ("far-ood", "anomaly")
                 if any(kind == k for kind, _ in run.scores.values())]
        for det, d in run.detectors.items():
            id_scores = run.scores[run.key][1][det]
            for name, kind, pool in sets:
                ood = pooled(run, pool, det) if pool else run.scores[name][1][det]
                m = ood_metrics(id_scores, ood, float(d.threshold))
                records.append({"backbone": run.key, "detector": det, "set": name,
                                "kind": kind, "pooled": pool is not None, **m})
    return records


def _find(records: list[dict[str, Any]], backbone: str, det: str, name: str) -> dict | None:
    return next((r for r in records if (r["backbone"], r["detector"], r["set"]) ==
                 (backbone, det, name)), None)


def build_tables(plan: Plan, runs: dict[str, BackboneRun], records: list[dict[str, Any]]
                 ) -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    rows = []
    has_tiny = TINY in runs["cifar10"].scores
    for det in runs["cifar10"].detectors:
        far = _find(records, "cifar10", det, "far-ood (all)") or {}
        anom = _find(records, "cifar10", det, "anomaly (all)") or {}
        near = _find(records, "cifar6", det, "cifar4-vehicles") or {}
        paper = PAPER_TABLE1.get(det, (None, None, None))
        row = [method_name(det), paper[1], paper[2], pct(far.get("tnr")),
               pct(near.get("tnr")), pct(anom.get("tnr")), pct(far.get("auroc")),
               pct(near.get("auroc")), pct(anom.get("auroc"))]
        if has_tiny:  # the paper's own OOD set, when its files were present
            tiny = _find(records, "cifar10", det, TINY) or {}
            row[3:3] = [pct(tiny.get("tnr"))]
            row.append(pct(tiny.get("auroc")))
        rows.append(row)
    tables["table1"] = {
        "caption": "Table 1 beside basin's numbers: OoD accuracy (detected OOD / all OOD) and "
                   "anomaly accuracy (detected anomalies / all anomalies) at the threshold "
                   "accepting 95% of CIFAR-10 validation images, %, and AUROC, %. The paper's "
                   "OOD set is resized Tiny-ImageNet" + (
                       " (basin's Tiny-ImageNet columns: its 10,000 val images resized to "
                       "32x32); " if has_tiny else " (not in the mirror); ") +
                   "basin's far-OOD columns pool every far-OOD set, near-OOD is the 6-vs-4 "
                   "open-set split",
        "header": ["method", "paper OoD acc.", "paper anomaly acc."]
        + (["basin Tiny-ImageNet acc."] if has_tiny else [])
        + ["basin far-OOD acc.", "basin near-OOD acc.", "basin anomaly acc.",
           "basin far-OOD AUROC", "basin near-OOD AUROC", "basin anomaly AUROC"]
        + (["basin Tiny-ImageNet AUROC"] if has_tiny else []), "rows": rows}
    tables["backbones"] = {
        "caption": "Backbones (airbench convnet): test accuracy and ECE with the plain forward "
                   "pass (what the detectors see), on the test images used",
        "header": ["backbone", "ID classes", "training images", "epochs", "reused",
                   "test images", "test accuracy", "ECE", "wall time (s)"],
        "rows": [[r.key, ", ".join(r.classes), r.info["n_train"], r.info["epochs"],
                  str(r.info.get("reused")), r.info["n_test"], pct(r.info["test_accuracy"]),
                  pct(r.info["test_ece"]), round(r.info["seconds"], 1)] for r in runs.values()]}
    tables["metrics"] = {
        "caption": "Every detector on every OOD and anomaly set (ID = the backbone's test "
                   "images; %). Detected = rejected at the 95%-validation threshold",
        "header": ["backbone", "detector", "set", "kind", "n", "AUROC", "FPR@95%TPR",
                   "AUPR-In", "AUPR-Out", "detected", "ID test accepted"],
        "rows": [[r["backbone"], r["detector"], r["set"], r["kind"], r["n_ood"],
                  pct(r["auroc"]), pct(r["fpr_at_95_tpr"]), pct(r["aupr_in"]),
                  pct(r["aupr_out"]), pct(r["tnr"]), pct(r["recall"])] for r in records]}
    rob = [r for run in runs.values() for r in run.robustness]
    tables["robustness"] = {
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
                  figures.format_epsilon(r["epsilon"]), f"{r['n_id']} / {r['n_ood']}",
                  pct(r["auroc_clean"]), pct(r["auroc_ood_attacked"]),
                  pct(r["auroc_both_attacked"]), pct(r["fpr95_clean"]),
                  pct(r["fpr95_ood_attacked"]), pct(r["fpr95_both_attacked"]),
                  pct(r["ood_accepted_clean"]), pct(r["ood_accepted_attacked"]),
                  pct(r["grad_nonzero"]), _square_cell(r)] for r in rob]}
    tables["odin"] = {
        "caption": "ODIN's temperature and preprocessing step, tuned on validation data only "
                   "(ID validation images and uniform noise of the noise val split; criterion "
                   "FPR@95%TPR)",
        "header": ["backbone", "T", "epsilon", "val FPR95", "val ID / OOD images", "OOD proxy"],
        "rows": [[r.key, r.odin_tuning["temperature"], r.odin_tuning["epsilon"],
                  pct(_grid_fpr(r.odin_tuning)),
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


def describe(backbone: str, name: str, kind: str) -> str:
    """What a scored set is, with the severity's parameter for corruptions."""
    from basin.experiments.feature_recon_paper import ANIMALS, SEVERITY, VEHICLES

    if name == "fgsm:8/255":
        return "FGSM 8/255, cross-entropy of the trained 10-class backbone"
    if kind == "anomaly":
        c = CORRUPTIONS[name.split(":")[0]]
        return f"severity {SEVERITY}: {c.description} ({c.param_name} {c.param(SEVERITY)})"
    if kind == "near-ood":
        return "CIFAR-10 test images of " + ", ".join(CIFAR10_CLASSES[k] for k in VEHICLES)
    if kind == "far-ood":
        return ("3x32x32 noise" if "noise" in name
                else "28x28 greyscale, bilinear-upsampled to 32x32, channel repeated")
    classes = ANIMALS if backbone == "cifar6" else range(10)
    return f"CIFAR-10 {'val' if kind == 'id-val' else 'test'} images of " + ", ".join(
        CIFAR10_CLASSES[k] for k in classes)


def _grid_fpr(tuning: dict[str, Any]) -> float | None:
    return next((g["fpr95"] for g in tuning.get("grid", []) if
                 (g["temperature"], g["epsilon"]) == (tuning["temperature"],
                                                      tuning["epsilon"])), None)


def zhou_checks(fit: dict[str, Any]) -> list[str]:
    """(val indices all in the val split, any in the train split, test file used) as text."""
    idx = fit.get("val_indices")
    if idx is None:
        return ["unknown", "unknown", "unknown"]
    val = set(split_indices("cifar10", "val").tolist())
    train = set(split_indices("cifar10", "train").tolist())
    return [str(set(idx) <= val), str(bool(set(idx) & train)), "False"]


def summary_lines(runs: dict[str, BackboneRun], records: list[dict[str, Any]]) -> list[str]:
    lines = []
    for det in runs["cifar10"].detectors:
        far = _find(records, "cifar10", det, "far-ood (all)") or {}
        near = _find(records, "cifar6", det, "cifar4-vehicles") or {}
        anom = _find(records, "cifar10", det, "anomaly (all)") or {}
        worst = min((r for run in runs.values() for r in run.robustness
                     if r["detector"] == det), key=lambda r: r["auroc_ood_attacked"],
                    default=None)
        text = (f"**{det}**: far-OOD detected {pct(far.get('tnr'))}%, near-OOD "
                f"{pct(near.get('tnr'))}%, anomalies {pct(anom.get('tnr'))}%")
        if worst is not None:
            text += (f"; under PGD {figures.format_epsilon(worst['epsilon'])} on "
                     f"{worst['ood_set']} ({worst['backbone']} backbone) AUROC "
                     f"{pct(worst['auroc_clean'])}% -> "
                     f"{pct(worst['auroc_ood_attacked'])}% (OOD attacked)")
        lines.append(text)
    return lines


def _clip(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip(values, lo, hi) if hi > lo else values


def add_figures(report: Report, runs: dict[str, BackboneRun]) -> None:
    r10, r6 = runs["cifar10"], runs["cifar6"]
    for run, kind, name, title in ((r10, "far-ood", "roc-far", "far-OOD (pooled)"),
                                   (r6, "near-ood", "roc-near", "near-OOD (6 vs 4)"),
                                   (r10, "anomaly", "roc-anomaly", "anomalies (pooled)")):
        curves = {d: (run.scores[run.key][1][d], pooled(run, kind, d)) for d in run.detectors}
        report.figure(figures.roc_curves(curves, title=f"ROC: {run.key} test vs {title}"),
                      name, f"ROC curves of every detector, ID positive ({run.key} test vs "
                            f"{title})")
    for run in (r10, r6):
        for det, d in run.detectors.items():
            sets = {f"{run.key} test": run.scores[run.key][1][det]}
            for kind in ("far-ood", "near-ood", "anomaly"):
                p = pooled(run, kind, det)
                if p is not None:
                    sets[kind] = p
            lo, hi = np.quantile(np.concatenate(list(sets.values())), [0.01, 0.99])
            lo, hi = min(lo, float(d.threshold)), max(hi, float(d.threshold))
            report.figure(figures.score_histograms(
                {k: _clip(v, lo, hi) for k, v in sets.items()}, float(d.threshold),
                title=f"{det} on the {run.key} backbone"), f"hist-{run.key}-{det}",
                f"{det} scores ({run.key} backbone), clipped to the pooled 1st-99th "
                "percentile range; black line: the 95%-validation threshold")
    for run in (r10, r6):
        det = run.detectors["combined"]
        images, labels = [], []
        for name, x in run.examples.items():
            s = det.score_batches(x[:3].to(next(run.model.parameters()).device)).cpu()
            images.append(x[:3])
            labels += [f"{name[:20]}\n{v:.3g} {'acc' if v >= det.threshold else 'rej'}"
                       for v in s.tolist()]
        report.figure(figures.image_grid(torch.cat(images), labels, ncols=6, max_items=99,
                                         title=f"Examples ({run.key} backbone): combined "
                                               "score, accepted or rejected"),
                      f"examples-{run.key}", f"Example inputs of every set with the combined "
                                             f"detector's score ({run.key} backbone)")


def _record_text(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=1, sort_keys=True, default=str)


def _square_cell(r: dict[str, Any]) -> str:
    if "square_correct" not in r:
        return "-"
    return (f"{pct(r['pgd_correct_on_square_subset'])} / {pct(r['square_correct'])} "
            f"(n={r['square_n']})")


def write_feature_recon_report(out: Path, plan: Plan, runs: dict[str, BackboneRun],
                               record: dict[str, Any]) -> dict[str, Any]:
    records = metric_records(runs)
    tables = build_tables(plan, runs, records)
    summary = summary_lines(runs, records)
    sanity = [f"{r['backbone']}/{r['detector']}/{figures.format_epsilon(r['epsilon'])}: {f}"
              for run in runs.values() for r in run.robustness for f in r["sanity"]]
    report = Report("Reproduction: feature reconstruction + MSP for OOD and anomaly detection",
                    "Mulé & Shaner (Zhou's Algorithm 1 + Hendrycks' MSP), ID CIFAR-10")
    if plan.name != "full":
        report.note(f"{plan.name.upper()} RUN on reduced data: {plan.train_limit} training "
                    f"images, {plan.epochs}/{plan.epochs6} backbone epochs, at most "
                    f"{plan.test_limit} ID test and {plan.ood_limit} OOD images per set, "
                    f"{plan.robust_n} inputs per side and {plan.pgd_steps} PGD steps (fewer "
                    "than 40). Numbers are not comparable with the paper's; run without "
                    "--quick.", "warning")
    if TINY not in runs["cifar10"].scores:
        report.note("The paper's OOD set, Tiny-ImageNet, is not in the data mirror: basin's "
                    "OOD accuracy is measured on far-OOD sets (MNIST, Fashion-MNIST, "
                    "notMNIST, Omniglot, noise) and on a near-OOD open-set split of CIFAR-10 "
                    "instead. Put tiny-imagenet-200.zip in the mirror (or run `basin data "
                    "fetch tiny-imagenet`) and rerun to add it.")
    report.heading("Summary")
    report.bullets(summary)
    sections = (("Table 1: paper vs basin", "table1"), ("Backbones", "backbones"),
                ("All detectors, all sets", "metrics"),
                ("Robustness: adaptive PGD through each detector", "robustness"),
                ("ODIN tuning", "odin"), ("Zhou's normal fits use validation data only",
                                          "zhou-fit"), ("Sets and severities", "sets"))
    for title, key in sections:
        report.heading(title)
        t = tables[key]
        report.table(t["header"], t["rows"], t["caption"], id=key)
        if key == "robustness":
            report.paragraph(ATOM_REFERENCE)
            report.paragraph("Sanity checks (eps = 0 reproduces clean; input gradients "
                             "non-zero; the Square attack does not beat PGD):")
            report.bullets(sanity or ["no attacks"])
    report.heading("Figures")
    add_figures(report, runs)
    report.heading("Run record")
    report.paragraph(f"Wall time {record['wall_time_s']:.0f} s; seed {record['seed']}; plan "
                     f"{plan.name}. Seconds per stage: " + "; ".join(
                         f"{k}: {r.info.get('timings_s')}" for k, r in runs.items()))
    report.code(_record_text(record))
    results = {"tables": tables, "summary": summary, "sanity": sanity, "run": record,
               "plan": record["config"]["plan"], "quick": plan.name != "full",
               "metrics": records, "robustness": [r for run in runs.values()
                                                  for r in run.robustness],
               "zhou_fit": {k: r.zhou_fit for k, r in runs.items()},
               "odin_tuning": {k: r.odin_tuning for k, r in runs.items()},
               "backbones": {k: r.info for k, r in runs.items()},
               "figures": report.figure_names}
    atomic_write_json(out / "results.json", results)
    report.write(out)
    return results
