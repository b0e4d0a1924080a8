"""The feature-recon reproduction's report: figures, the tables of :mod:`.tables`, results.json.

Reads what :mod:`.run` produced and writes ``report.html``, ``report.md``, ``figures/`` and
``results.json``; it imports the protocol and the tables, never the reverse.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from basin.report import Report, figures
from basin.reproductions.feature_recon.protocol import (
    ATOM_REFERENCE,
    TINY,
    TINY_RESIZE,
    BackboneRun,
    Plan,
)
from basin.reproductions.feature_recon.tables import (
    build_tables,
    metric_records,
    pooled,
    summary_lines,
    threshold_of,
)
from basin.utils.io import atomic_write_json


def _clip(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip(values, lo, hi) if hi > lo else values


def add_figures(report: Report, runs: dict[str, BackboneRun]) -> None:
    plots = (("cifar10", "far-ood", "roc-far", "far-OOD (pooled)"),
             ("cifar10", "natural-ood", "roc-natural", "Tiny-ImageNet + LSUN (resize)"),
             ("cifar6", "near-ood", "roc-near", "near-OOD (6 vs 4)"),
             ("cifar10", "anomaly", "roc-anomaly", "anomalies (pooled)"))
    for key, kind, name, title in plots:
        run = runs.get(key)
        if run is None or not any(k == kind for k, _ in run.scores.values()):
            continue
        curves = {d: (run.scores[run.key][1][d], pooled(run, kind, d)) for d in run.detectors}
        report.figure(figures.roc_curves(curves, title=f"ROC: {run.key} test vs {title}"),
                      name, f"ROC curves of every detector, ID positive ({run.key} test vs "
                            f"{title})")
    for run in runs.values():
        for det, d in run.detectors.items():
            sets = {f"{run.key} test": run.scores[run.key][1][det]}
            for kind in ("far-ood", "natural-ood", "near-ood", "anomaly"):
                p = pooled(run, kind, det)
                if p is not None:
                    sets[kind] = p
            lo, hi = np.quantile(np.concatenate(list(sets.values())), [0.01, 0.99])
            lo, hi = min(lo, threshold_of(d)), max(hi, threshold_of(d))
            report.figure(figures.score_histograms(
                {k: _clip(v, lo, hi) for k, v in sets.items()}, threshold_of(d),
                title=f"{det} on the {run.key} backbone"), f"hist-{run.key}-{det}",
                f"{det} scores ({run.key} backbone), clipped to the pooled 1st-99th "
                "percentile range; black line: the 95%-validation threshold")
    for run in runs.values():
        combined = run.detectors["combined"]
        threshold = threshold_of(combined)
        images, labels = [], []
        for name, x in run.examples.items():
            s = combined.score_batches(x[:3].to(next(run.model.parameters()).device)).cpu()
            images.append(x[:3])
            labels += [f"{name[:20]}\n{v:.3g} {'acc' if v >= threshold else 'rej'}"
                       for v in s.tolist()]
        report.figure(figures.image_grid(torch.cat(images), labels, ncols=6, max_items=99,
                                         title=f"Examples ({run.key} backbone): combined "
                                               "score, accepted or rejected"),
                      f"examples-{run.key}", f"Example inputs of every set with the combined "
                                             f"detector's score ({run.key} backbone)")


def _record_text(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=1, sort_keys=True, default=str)


def write_feature_recon_report(out: Path, plan: Plan, runs: dict[str, BackboneRun],
                               record: dict[str, Any]) -> dict[str, Any]:
    records = metric_records(runs)
    tables = build_tables(plan, runs, records)
    summary = summary_lines(runs, records)
    sanity = [f"{run.key}/{det}/{line}" for run in runs.values()
              for det, res in run.robustness.items() for line in res.sanity]
    report = Report("Reproduction: feature reconstruction + MSP for OOD and anomaly detection",
                    "Mulé & Shaner (Zhou's Algorithm 1 + Hendrycks' MSP), ID CIFAR-10")
    if plan.name != "full":
        report.note(f"{plan.name.upper()} RUN on reduced data: {plan.train_limit} training "
                    f"images, {plan.epochs}/{plan.epochs6} backbone epochs, at most "
                    f"{plan.test_limit} ID test and {plan.ood_limit} OOD images per set, "
                    f"{plan.robust_n} inputs per side and {plan.pgd_steps} PGD steps (fewer "
                    "than 40). Numbers are not comparable with the paper's; run without "
                    "--quick.", "warning")
    if not {TINY, TINY_RESIZE} & set(runs["cifar10"].scores):
        report.note("The paper's OOD set, Tiny-ImageNet, is not in the data mirror: basin's "
                    "OOD accuracy is measured on far-OOD sets (MNIST, Fashion-MNIST, "
                    "notMNIST, Omniglot, noise) and on a near-OOD open-set split of CIFAR-10 "
                    "instead. A mirror with odin/Imagenet_resize.tar.gz (ODIN's resized set) "
                    "adds it.")
    if not plan.attacks:
        report.note("Detector stage only (attacks=False): no robustness numbers in this run.")
    if "cifar6" not in runs:
        report.note("No 6-class backbone in this run: no near-OOD numbers.")
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
               "metrics": records,
               "robustness": {k: {det: res.to_dict() for det, res in r.robustness.items()}
                              for k, r in runs.items()},
               "zhou_fit": {k: r.zhou_fit for k, r in runs.items()},
               "odin_tuning": {k: r.odin_tuning for k, r in runs.items()},
               "backbones": {k: r.info for k, r in runs.items()},
               "figures": report.figure_names}
    atomic_write_json(out / "results.json", results)
    report.write(out)
    return results
