"""``basin reproduce robust-attractor``: measure (:mod:`.run`), tabulate (:mod:`.tables`) and
write ``report.html``, ``report.md`` and ``results.json`` (every record, the plan, timings).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from basin.report import Report
from basin.report.figures import iteration_strip, line_plot, score_histograms
from basin.reproductions.robust_attractor import tables
from basin.reproductions.robust_attractor.protocol import RobustPlan
from basin.reproductions.robust_attractor.run import measure
from basin.robustness.records import Record
from basin.utils.io import atomic_write_json
from basin.utils.runinfo import run_record

PathArg = str | os.PathLike[str] | None


def _figures(report: Report, records: list[Record], arrays: dict[str, Any],
             plan: RobustPlan) -> None:
    eps = [0.0, *plan.epsilons]
    series: dict[str, list[float]] = {}
    for s in plan.systems:
        silent = [tables.find(records, s, condition="clean", dataset="mnist",
                              metric="silent_failure_rate")]
        silent += [tables.find(records, s, condition="worst-case", epsilon=e, dataset="mnist",
                               metric="silent_failure_rate") for e in plan.epsilons]
        accepted = [tables.find(records, s, condition="clean", dataset="fashion-mnist",
                                metric="acceptance_rate")]
        accepted += [tables.find(records, s, condition="worst-case", epsilon=e,
                                 dataset="fashion-mnist", side="ood",
                                 metric="acceptance_rate") for e in plan.epsilons]
        series[f"{s}: MNIST silent failures"] = [float("nan") if v is None else v
                                                 for v in silent]
        series[f"{s}: Fashion-MNIST accepted"] = [float("nan") if v is None else v
                                                  for v in accepted]
    report.figure(line_plot(eps, series, title="Per-input worst case against epsilon",
                            xlabel="epsilon (L-inf)", ylabel="rate", percent=True),
                  "silent_vs_epsilon", "Silent-failure rate (accepted and wrong) of MNIST test "
                  "inputs and acceptance of Fashion-MNIST under the worst case of the suite.")
    top = max(plan.epsilons)
    for s in plan.robust_presets:
        robust = arrays[s]
        report.figure(score_histograms(
            {"MNIST clean": robust["clean"]["id"],
             f"MNIST worst {top:g}": robust["worst"][top]["id_min"],
             "Fashion-MNIST clean": robust["clean"]["ood"]["fashion-mnist"],
             f"Fashion-MNIST worst {top:g}": robust["worst"][top]["ood_max"]["fashion-mnist"]},
            robust["threshold"], title=f"{s} system: Pearson score, clean vs attacked",
            xlabel="r(x, G^n(x))"), f"scores_{s}",
            f"Scores of the {s} system: MNIST at their lowest and Fashion-MNIST at their "
            "highest over every attack run.")
    for s in plan.systems:
        flow = arrays[s].get("flow")
        if flow is None:
            continue
        labels = ["attacked", *(f"G^{i}" for i in range(1, len(flow["trajectory"])))]
        labels = [f"{lab}\nclass {c}, d={d:.2f}" for lab, c, d in
                  zip(labels, flow["class"], flow["rms_to_clean"], strict=True)]
        report.figure(iteration_strip(list(flow["trajectory"]), labels=labels,
                                      title=f"{s}: an end-to-end attacked input ({top:g}) "
                                            "iterated through G"),
                      f"flow_{s}", f"{s}: iterates of the first test digit's end-to-end PGD "
                      "example; d = RMS distance to the clean digit, class = F's answer.")


def build_report(results: dict[str, Any], plan: RobustPlan) -> Report:
    records = results["records"]
    report = Report("Robust attractor system on MNIST (issue 13)",
                    "Quick plan (small networks, few steps)" if plan.quick else
                    "Full plan")
    sizes = ", ".join(f"{v} {k}" for k, v in results["sets"]["n_ood"].items())
    report.paragraph(
        f"n = {results['sets']['n_id']} MNIST test inputs, {sizes}; threshold for 95% of "
        "MNIST validation "
        "accepted; per input the worst case over every attack run (the clean input "
        "included) at that epsilon and at every smaller one (the balls nest). "
        "Classification by F(x); acceptance by r(x, G^n(x)) with n = "
        f"{plan.score_steps}.")
    report.heading("Headline")
    report.table(*tables.headline(records, plan.epsilons), id="headline")
    report.heading("Targets of the issue (robust systems)")
    report.table(*tables.targets_table(records), id="targets")
    report.heading("OOD side")
    report.table(*tables.ood_table(records, plan.epsilons), id="ood")
    report.heading("Each ID attack run: F accuracy / silent-failure rate (%)")
    report.table(*tables.runs_table(records, plan.epsilons), id="runs")
    report.heading("Certified (IBP)")
    report.table(*tables.certified_table(records, plan.certify_epsilons), id="certified")
    report.heading("Sanity checks")
    report.table(*tables.sanity_table(records), id="sanity")
    report.heading("Figures")
    _figures(report, records, results["arrays"], plan)
    report.heading("Provenance")
    report.bullets([f"{k}: {v}" for k, v in results["where"].items()]
                   + [f"time {k}: {v:.0f} s" for k, v in results["times"].items()])
    return report


def summary_lines(records: list[Record]) -> list[str]:
    header, rows = tables.targets_table(records)
    systems = [h.split(":")[0] for h in header[2:]]
    return [f"{r[0]} (wanted {r[1]}): " + ", ".join(f"{s} {c}" for s, c in
                                                   zip(systems, r[2:], strict=True))
            for r in rows]


def sanity_lines(records: list[Record]) -> list[str]:
    out = []
    for r in records:
        if r.condition == "sanity" and r.value is not None:
            bad = (r.metric.startswith("grad") and r.value < 1.0) or (
                not r.metric.startswith("grad") and r.value > 0.0)
            if bad:
                out.append(f"{r.extra.get('system')} eps {r.epsilon:g} {r.dataset}: "
                           f"{r.metric} = {100 * r.value:.1f}%")
    return out or ["no sanity flag raised"]


def reproduce_robust_attractor(out_dir: str | os.PathLike[str], *, quick: bool = False,
                               seed: int = 0, mirror: PathArg = None,
                               device: torch.device | None = None, reuse: PathArg = None,
                               robust_runs: Mapping[str, PathArg] | None = None,
                               plan: RobustPlan | None = None,
                               systems: Sequence[str] | None = None
                               ) -> dict[str, Any]:
    """Train or reuse every system's network, evaluate, write the report; return the
    summary (one line per target, every robust system). ``systems`` None: the plan's
    default selection (the full plan: the best recipe and the paper's two networks)."""
    plan = plan or RobustPlan.make(quick, seed)
    plan = plan.only(systems if systems is not None else plan.default_selection())
    start = time.perf_counter()
    results = measure(out_dir, plan, mirror=mirror, device=device, reuse=reuse,
                      robust_runs=robust_runs)
    report = build_report(results, plan)
    records = results["records"]
    atomic_write_json(Path(out_dir) / "results.json", {
        "plan": plan.to_dict(), "records": [r.to_dict() for r in records],
        "where": results["where"], "times": results["times"],
        "wall_s": time.perf_counter() - start, "run": run_record(plan.to_dict(), seed)})
    report.write(out_dir)
    return {"summary": summary_lines(records), "sanity": sanity_lines(records),
            "records": records}
