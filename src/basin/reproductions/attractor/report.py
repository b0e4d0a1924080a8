"""The attractor reproduction's report: figures, the tables of :mod:`.tables`, results.json.

Reads what :mod:`.run` produced and writes ``report.html``, ``report.md``, ``figures/`` and
``results.json``; it imports the protocol and the tables, never the reverse.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from basin.detectors import pearson_correlation
from basin.report import Report, figures
from basin.reproductions.attractor.protocol import (
    FGSM_PAPER,
    FIG12_EPS,
    NetworkResults,
    ReproductionPlan,
)
from basin.reproductions.attractor.tables import (
    build_tables,
    iterate_label,
    pct,
    record_value,
    summary_lines,
)
from basin.utils.io import atomic_write_json


def _reconstruction_figure(r: NetworkResults, condition: str, dataset: str, title: str) -> Any:
    x = r.paper.images[(condition, dataset)][:10]
    device = next(r.net.parameters()).device
    with torch.no_grad():
        recon = r.net.reconstruct(x.to(device)).cpu()
        predicted = r.net.logits(x.to(device)).argmax(1).cpu()
    return figures.reconstruction_grid(x, recon, predicted, pearson_correlation(x, recon),
                                       title=title, threshold=r.paper.threshold)


def add_figures(report: Report, nets: dict[str, NetworkResults]) -> None:
    for name, r in nets.items():
        for cond, label in (("clean", "clean"), (FGSM_PAPER, "FGSM 20/255")):
            for ds in ("mnist", "fashion-mnist", "cifar10-bw"):
                report.figure(_reconstruction_figure(r, cond, ds,
                                                     f"{name}: {ds}, {label}"),
                              f"recon-{name}-{ds}-{'clean' if cond == 'clean' else 'fgsm'}",
                              f"Inputs and reconstructions ({name} network, {ds}, {label}); "
                              "predicted class above, similarity below (Fig. 7 and 10)")
    for name, r in nets.items():
        for cond, label in (("clean", "clean"), (FGSM_PAPER, "FGSM 20/255 (paper)")):
            report.figure(figures.score_scatter(
                r.paper.scores[(cond, "mnist")], r.paper.scores[(cond, "fashion-mnist")],
                r.paper.threshold, title=f"{name}: similarity, {label}", id_label="MNIST",
                ood_label="Fashion-MNIST"),
                f"scores-{name}-{'clean' if cond == 'clean' else 'fgsm'}",
                f"Similarity scores of ID and OOD inputs with T = 0.8 ({name}, {label}; Fig. 8 "
                "and 13)")
    for name, r in nets.items():
        report.figure(figures.iteration_strip(
            r.diagnostics["fig11"], title=f"{name}: iterates of a training sample after FGSM "
                                          "255/255", labels=["input"] + [
                f"G^{k}" for k in range(1, len(r.diagnostics["fig11"]))]),
            f"iterates-{name}", f"Successive iterates of a heavily perturbed training sample "
                                f"({name}; Fig. 11)")
    report.figure(figures.perturbation_panel({n: r.diagnostics["fig12"] for n, r in
                                              nets.items()}, FIG12_EPS,
                                             title="Reconstruction and class across FGSM "
                                                   "(paper objective) perturbation levels"),
                  "perturbation-levels", "Reconstruction and classification across "
                                         "perturbation levels for both networks (Fig. 12)")
    curves = {f"{n}, {c.split(':')[0] if c != 'clean' else 'clean'}"
              f"{' (paper)' if c == FGSM_PAPER else ''}": (r.paper.scores[(c, "mnist")],
                                                           r.paper.scores[(c, "fashion-mnist")])
              for n, r in nets.items() for c in ("clean", FGSM_PAPER)}
    report.figure(figures.roc_curves(curves, title="ROC: MNIST vs Fashion-MNIST"),
                  "roc-fashion", "ROC curves, MNIST (positive) vs Fashion-MNIST")
    for metric, ds, ylabel in (("accuracy", "mnist", "MNIST accuracy"),
                               ("auroc", "fashion-mnist", "AUROC vs Fashion-MNIST")):
        series = {}
        for n, r in nets.items():
            eps_list = list(r.sweep)
            for kind in ("fgsm:paper", "fgsm:ce", "pgd:ce"):
                series[f"{n} {kind}"] = [
                    record_value(res, next(c for c in res.conditions() if c.startswith(kind)),
                        ds, metric) or float("nan") for res in r.sweep.values()]
        report.figure(figures.line_plot(list(range(len(eps_list))), series,
                                        title=f"{ylabel} vs epsilon", xlabel="epsilon",
                                        ylabel=ylabel, percent=True, xticklabels=eps_list),
                      f"sweep-{metric}", f"Epsilon sweep: {ylabel}")


def write_attractor_report(out: Path, plan: ReproductionPlan, nets: dict[str, NetworkResults],
                           record: dict[str, Any]) -> dict[str, Any]:
    tables = build_tables(plan, nets)
    summary = summary_lines(plan, nets)
    sanity = {name: r.adaptive.sanity + r.paper.sanity for name, r in nets.items()}
    results = {"tables": tables, "summary": summary, "sanity": sanity, "run": record,
               "quick": plan.quick,
               "records": {name: {"paper": r.paper.to_json(), "adaptive": r.adaptive.to_json(),
                                  "loop_white_box": None if r.loop_white_box is None
                                  else r.loop_white_box.to_json(),
                                  "sweep": {e: s.to_json() for e, s in r.sweep.items()}}
                           for name, r in nets.items()},
               "calibration": {n: r.calibration for n, r in nets.items()},
               "diagnostics": {n: r.diagnostics["attractors"] for n, r in nets.items()},
               "training": {n: {"metrics": r.metrics, "config": r.config}
                            for n, r in nets.items()}}
    report = Report("Reproduction: attractor networks for OOD rejection under attack",
                    "Alipour & SeyyedSalehi, MNIST vs Fashion-MNIST / CIFAR-10-bw")
    if plan.quick:
        report.note("QUICK RUN on reduced data: fewer training images and epochs, "
                    f"{plan.eval_limit} test inputs per dataset, {plan.pgd_steps} PGD steps. "
                    "Numbers are not comparable with the paper's; run without --quick.",
                    "warning")
    report.heading("Summary")
    report.bullets(summary)
    flags = [f"{n}: {f}" for n, fl in sanity.items() for f in fl]
    if any("suspected gradient masking" in f or "FAILED" in f for f in flags):
        report.note("Sanity checks flagged a problem: see the adaptive-evaluation section.",
                    "danger")
    sections = (("Classification accuracy", "accuracy"), ("Table 1: baseline network", "table1"),
                ("Table 2: attractor network", "table2"),
                ("Table 2 at a validation-calibrated threshold", "table2_calibrated"),
                ("Beyond the paper: OOD metrics", "ood"),
                ("Epsilon sweep", "sweep"), ("Adaptive evaluation", "adaptive"),
                ("Attractor diagnostics", "attractors"), ("Training", "training"))
    intros = {"table2_calibrated": _calibration_text(nets["attractor"]),
              "adaptive": _adaptive_text(plan)}
    for title, key in sections:
        report.heading(title)
        if key in intros:
            report.paragraph(intros[key])
        t = tables[key]
        report.table(t["header"], t["rows"], t["caption"], id=key)
        if key == "adaptive":
            report.paragraph("Sanity checks (on a subset of ID inputs):")
            report.bullets(flags or ["no attack conditions"])
    report.heading("Figures")
    add_figures(report, nets)
    report.heading("Run record")
    threads = record["config"].get("threads")
    report.paragraph(f"Wall time {record['wall_time_s']:.0f} s; seed {record['seed']}"
                     + (f"; {threads} torch thread(s)." if threads else "."))
    report.code(_format_record(record, plan))
    atomic_write_json(out / "results.json", results)
    report.write(out)
    return results


def _calibration_text(r: NetworkResults) -> str:
    cal = r.calibration
    accepted = record_value(r.paper, "clean", "mnist", "acceptance_rate")
    return (f"At the paper's T = 0.8 the attractor network accepts {pct(accepted)} of MNIST "
            "test images, so Table 2 cannot reproduce at that threshold. Here the threshold "
            f"is **T = {cal['threshold']:.4f}**, the one accepting {pct(cal['acceptance'])} of "
            f"{cal['n_val']} MNIST *validation* images (fitted without any test data); the "
            "test inputs and their scores are those of the table above, and the paper's "
            "values (at its T = 0.8) are repeated for comparison.")


def _adaptive_text(plan: ReproductionPlan) -> str:
    looped = iterate_label(plan)
    return (f"The through-loop attacks maximise the cross-entropy of {looped}. The paper's "
            "system classifies F(x), so against it they are transfer attacks (rows with "
            f"\"system classifies\" F(x)); the rows with {looped} run the same attacks, on "
            f"the same inputs, against a system that classifies {looped}, for which they are "
            "white-box. The detector-aware objectives (reject-id, accept-ood) keep each "
            "input's highest-objective iterate, or the clean input where it is stronger, so "
            "AUROC and FPR95 under them are not inflated by an early stop at the threshold.")


def _format_record(record: dict[str, Any], plan: ReproductionPlan) -> str:
    lines = [f"{k}: {v}" for k, v in record["versions"].items()]
    lines += [f"{k}: {v}" for k, v in record["data_checksums"].items()]
    lines += [f"plan: {asdict(plan)}"]
    return "\n".join(lines)
