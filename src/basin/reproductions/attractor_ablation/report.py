"""The ablation's report: tables, a figure per claim group, verdicts and results.json.

Reads the grid's records (:mod:`.run`) and the tables built from them (:mod:`.tables`);
writes ``report.html``, ``report.md``, ``figures/`` and ``results.json`` (the records
themselves, so every number in the report can be recomputed from it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from basin.report import Report
from basin.reproductions.attractor_ablation.protocol import (
    FGSM_PAPER,
    ID_DATASET,
    OOD_SETS,
    PAPER_RESULTS,
    AblationPlan,
    reading,
)
from basin.reproductions.attractor_ablation.tables import (
    Summary,
    ablation_table,
    best_fits,
    seeds_run,
    steps_table,
    summarise,
    target_table,
    verdict_lines,
    verdicts,
)
from basin.robustness.records import Record
from basin.utils.io import atomic_write_json

# (label, condition, dataset, metric, the paper's attractor value)
FIGURE_PANELS = (
    ("MNIST accuracy, clean", "clean", ID_DATASET, "accuracy",
     PAPER_RESULTS["attractor"]["clean_accuracy"]),
    ("MNIST accuracy, FGSM (paper)", FGSM_PAPER, ID_DATASET, "accuracy",
     PAPER_RESULTS["attractor"]["fgsm_accuracy"]),
    ("MNIST accepted at T = 0.8", "clean", OOD_SETS[0], "recall",
     PAPER_RESULTS["attractor"]["detection"][OOD_SETS[0]]["clean"][2]),
    ("accuracy vs Fashion-MNIST", "clean", OOD_SETS[0], "accuracy",
     PAPER_RESULTS["attractor"]["detection"][OOD_SETS[0]]["clean"][0]),
    ("accuracy vs CIFAR-10-bw", "clean", OOD_SETS[1], "accuracy",
     PAPER_RESULTS["attractor"]["detection"][OOD_SETS[1]]["clean"][0]),
    ("acc vs F-MNIST, FGSM (paper)", FGSM_PAPER, OOD_SETS[0], "accuracy",
     PAPER_RESULTS["attractor"]["detection"][OOD_SETS[0]]["fgsm"][0]),
)


def readings_figure(summary: Summary, plan: AblationPlan, steps: int = 1) -> Figure:
    """Mean ± std over seeds per attractor reading, one panel per quantity; the dashed line
    is the paper's attractor number."""
    names = [n for n in plan.readings if reading(n).network == "attractor"
             and (n, steps) in summary]
    fig = Figure(figsize=(12, 6.5), layout="constrained")
    axes = fig.subplots(2, 3, sharex=True)
    x = np.arange(len(names))
    for ax, (label, cond, ds, metric, paper) in zip(axes.flat, FIGURE_PANELS, strict=True):
        stats = [summary[(n, steps)].get((cond, ds, metric)) for n in names]
        means = [100 * s.mean if s and s.mean is not None else np.nan for s in stats]
        errs = [100 * s.std if s and s.std is not None else 0.0 for s in stats]
        ax.bar(x, means, yerr=errs, capsize=3, color="#4C72B0")
        ax.axhline(100 * paper, color="#C44E52", linestyle="--", label="paper")
        ax.set_title(label, fontsize=10)
        ax.set_ylim(0, 100)
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Attractor paper: readings at T = 0.8, n = {steps} (mean ± std over seeds)")
    return fig


def steps_figure(summary: Summary, plan: AblationPlan) -> Figure:
    """MNIST acceptance and accuracy vs Fashion-MNIST against n, one line per reading."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = (("MNIST accepted at T = 0.8", OOD_SETS[0], "recall"),
              ("accuracy vs Fashion-MNIST", OOD_SETS[0], "accuracy"))
    for ax, (label, ds, metric) in zip(axes, panels, strict=True):
        for name in plan.readings:
            ys = [summary.get((name, n), {}).get(("clean", ds, metric)) for n in plan.steps]
            if all(s is None for s in ys):
                continue
            ax.plot(plan.steps, [100 * s.mean if s and s.mean is not None else np.nan
                                 for s in ys], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xticks(list(plan.steps), [str(n) for n in plan.steps])
        ax.set_xlabel("n (iterations of G)")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    return fig


def control_lines(summary: Summary) -> list[str]:
    """The exact-Jacobian controls beside their one-projection counterparts (n = 1)."""
    lines = []
    keys = (("clean", ID_DATASET, "accuracy", "clean accuracy"),
            ("clean", OOD_SETS[0], "recall", "MNIST accepted"),
            ("clean", OOD_SETS[0], "accuracy", "accuracy vs Fashion-MNIST"))
    for name in sorted({n for n, _ in summary}):
        base = name.removesuffix("-exact")
        if base == name or (base, 1) not in summary or (name, 1) not in summary:
            continue
        parts = []
        for cond, ds, metric, label in keys:
            exact, grid = (summary[(n, 1)].get((cond, ds, metric)) for n in (name, base))
            parts.append(f"{label} {exact.text() if exact else 'n/a'} vs "
                         f"{grid.text() if grid else 'n/a'}")
        lines.append(f"Estimator control: **{name}** (exact Jacobian) vs **{base}** (the "
                     f"grid's one-projection estimator), %: " + "; ".join(parts) + ".")
    return lines


def write_ablation_report(out: Path, plan: AblationPlan, records: list[Record],
                          run: dict[str, Any]) -> dict[str, Any]:
    summary = summarise(records)
    seeds = seeds_run(records)
    fits = {net: best_fits(summary, net) for net in ("attractor", "baseline")}
    best = fits["attractor"][0] if fits["attractor"] else None
    tables: dict[str, Any] = {"ablation": ablation_table(summary, plan, seeds),
                              "steps": steps_table(summary, plan)}
    if best is not None:
        tables["best"] = target_table(summary, best.reading, best.steps)
    if ("literal", 1) in summary:
        tables["literal"] = target_table(summary, "literal", 1)
    if ("baseline", 1) in summary:
        tables["baseline"] = target_table(summary, "baseline", 1)
    claims = verdicts(summary)
    summary_lines = []
    if best is not None:
        worst = "n/a" if best.worst is None else f"{100 * best.worst:.2f}"
        summary_lines.append(
            f"Closest attractor reading: **{best.reading}** at n = {best.steps}, largest gap "
            f"to the paper's 14 attractor numbers {worst} points "
            f"({'within' if best.within else 'not within'} the 2-point target).")
    summary_lines += verdict_lines(claims)
    summary_lines += control_lines(summary)
    not_run = [n for n in plan.readings if n not in seeds]
    if not_run:
        summary_lines.append(f"Readings in the plan but not measured: {', '.join(not_run)}.")
    results = {"plan": plan.to_json(), "run": run, "summary": summary_lines, "tables": tables,
               "verdicts": claims, "seeds": seeds,
               "fits": {net: [{"reading": f.reading, "steps": f.steps, "worst": f.worst,
                               "mean_abs": f.mean_abs, "gaps": f.gaps} for f in fs]
                        for net, fs in fits.items()},
               "readings": {n: {"changes": dict(reading(n).changes), "why": reading(n).why,
                                "network": reading(n).network, "around": reading(n).around}
                            for n in plan.readings},
               "records": [r.to_dict() for r in records]}
    report = Report("Attractor paper: ablation over readings",
                    "Which unstated choices reproduce Tables 1 and 2 and 88.73% / 87.13%")
    if plan.quick:
        report.note(f"QUICK RUN: {plan.train} training overrides, {plan.eval_limit} test "
                    "inputs per set. Numbers are not comparable with the paper's.", "warning")
    report.heading("Summary")
    report.bullets(summary_lines)
    report.heading("Readings")
    report.table(["reading", "network", "changes from the preset", "varies around", "why"],
                 [[n, reading(n).network, ", ".join(f"{k}={v}" for k, v in
                                                    reading(n).changes.items()) or "none",
                   reading(n).around, reading(n).why] for n in plan.readings],
                 "Readings (changes to paper-attractor / paper-baseline)", id="readings")
    for key, title in (("ablation", "Ablation at n = 1"), ("steps", "Iterations before the "
                       "score"), ("best", "The closest reading against the paper"),
                       ("literal", "The literal reading against the paper"),
                       ("baseline", "The baseline (Table 1)")):
        if key in tables:
            report.heading(title)
            t = tables[key]
            report.table(t["header"], t["rows"], t["caption"], id=key)
            if key == "ablation" and summary:
                report.figure(readings_figure(summary, plan), "ablation-readings",
                              "Readings at T = 0.8, n = 1: mean ± std over seeds; dashed: "
                              "the paper's attractor network")
            if key == "steps" and summary:
                report.figure(steps_figure(summary, plan), "ablation-steps",
                              "Acceptance and accuracy vs Fashion-MNIST against n")
    report.heading("Run")
    report.paragraph(f"Evaluation: {plan.eval_limit or 'all'} test inputs per set (seeded "
                     f"subset, the same for every cell); wall time {run.get('wall_time_s', 0):.0f}"
                     " s for the cells computed in this invocation.")
    report.write(out)
    atomic_write_json(out / "results.json", results)
    return results
