"""The attractor reproduction's tables and plain-language summary, built as data.

Every table is ``{"caption", "header", "rows"}``, written to ``results.json`` under
``tables`` and rendered from that same data into ``report.html`` and ``report.md`` (by
:mod:`.report`), so the three files cannot disagree. The numbers are read from the
evaluations' records (:mod:`basin.robustness.records`), never recomputed, except Table 2 at
the calibrated threshold, which re-thresholds the recorded test scores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from basin.metrics import ood_metrics
from basin.reproductions.attractor.protocol import (
    DETECTION,
    EXTRA_OOD,
    FGSM_CE,
    FGSM_PAPER,
    HOLDS_WITHIN,
    PAPER_OOD,
    PAPER_RESULTS,
    NetworkResults,
    ReproductionPlan,
)
from basin.robustness.evaluation import EvaluationResult


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def diff(ours: float | None, paper: float) -> str:
    return "n/a" if ours is None else f"{100 * (ours - paper):+.2f}"


def record_value(res: EvaluationResult, condition: str, dataset: str, metric: str
                 ) -> float | None:
    """The one record of ``res`` for (condition, dataset, metric), None when absent."""
    try:
        return res.value(condition, dataset, metric)
    except KeyError:
        return None


def _is_loop(condition: str) -> bool:
    return condition.split(":")[1:2] in (["through-loop"], ["through-loop-bpda"])


def iterate_label(plan: ReproductionPlan) -> str:
    return "F(G(x))" if plan.loop_steps == 1 else f"F(G^{plan.loop_steps}(x))"


def _detection_rows(name: str, metrics: Callable[[str, str], dict[str, float | None]]
                    ) -> list[list[str]]:
    """Rows of the paper's Tables 1 and 2: ``metrics(condition, ood)`` gives ours."""
    rows = []
    for ood in PAPER_OOD:
        for cond, key in (("clean", "clean"), (FGSM_PAPER, "fgsm")):
            ours = metrics(cond, ood)
            theirs = PAPER_RESULTS[name]["detection"][ood][key]
            rows.append([f"MNIST vs {ood}", "without attack" if key == "clean" else
                         "FGSM 20/255 (paper's objective)",
                         *(f"{pct(ours[m])} ({diff(ours[m], t)})" for m, t in zip(
                             DETECTION, theirs, strict=True)),
                         " / ".join(pct(t) for t in theirs)])
    return rows


def recorded_metrics(res: Any) -> Callable[[str, str], dict[str, float | None]]:
    """Table 1/2 metrics as the evaluation recorded them (at its threshold, T = 0.8)."""
    return lambda condition, ood: {m: record_value(res, condition, ood, m) for m in DETECTION}


def calibrated_metrics(r: NetworkResults) -> Callable[[str, str], dict[str, float | None]]:
    """Table 2's metrics at the validation-calibrated T, from the paper protocol's scores."""
    threshold = r.calibration["threshold"]

    def metrics(condition: str, ood: str) -> dict[str, float | None]:
        out = ood_metrics(r.paper.scores[(condition, "mnist")], r.paper.scores[(condition, ood)],
                          threshold)
        return {m: float(out[m]) if np.isfinite(out[m]) else None for m in DETECTION}

    return metrics


def build_tables(plan: ReproductionPlan, nets: dict[str, NetworkResults]) -> dict[str, Any]:
    """Every table of the report, as data, keyed by the id it has in the report."""
    header = ["datasets", "condition", "accuracy", "precision", "recall",
              "paper (acc / prec / rec)"]
    tables: dict[str, dict[str, Any]] = {"accuracy": _accuracy_table(nets)}
    for number, name in ((1, "baseline"), (2, "attractor")):
        rows = _detection_rows(name, recorded_metrics(nets[name].paper))
        tables[f"table{number}"] = {
            "caption": f"Table {number} ({name} network): ID-vs-OOD accuracy, precision, "
                       "recall at T = 0.8, ID positive; basin (difference to the paper, pp) "
                       "and the paper's values", "header": header, "rows": rows}
    cal = nets["attractor"].calibration
    tables["table2_calibrated"] = {
        "caption": f"Table 2 (attractor network) at T = {cal['threshold']:.4f}, the threshold "
                   f"accepting {pct(cal['acceptance'])} of {cal['n_val']} MNIST validation "
                   "images (no test data), on the same test inputs and scores; basin "
                   "(difference to the paper's values at T = 0.8, pp)",
        "header": header, "rows": _detection_rows("attractor",
                                                  calibrated_metrics(nets["attractor"]))}
    tables.update(ood=_ood_table(nets), sweep=_sweep_table(plan, nets),
                  adaptive=_adaptive_table(plan, nets), attractors=_attractor_table(nets),
                  training=_training_table(nets))
    return tables


def _accuracy_table(nets: dict[str, NetworkResults]) -> dict[str, Any]:
    rows = []
    for name, r in nets.items():
        paper = PAPER_RESULTS[name]
        clean = record_value(r.paper, "clean", "mnist", "accuracy")
        fgsm_p = record_value(r.paper, FGSM_PAPER, "mnist", "accuracy")
        fgsm_ce = record_value(r.paper, FGSM_CE, "mnist", "accuracy")
        rows += [[name, "clean", pct(paper["clean_accuracy"]), pct(clean),
                  diff(clean, paper["clean_accuracy"])],
                 [name, "FGSM 20/255, paper's objective", pct(paper["fgsm_accuracy"]),
                  pct(fgsm_p), diff(fgsm_p, paper["fgsm_accuracy"])],
                 [name, "FGSM 20/255, cross-entropy", "not reported", pct(fgsm_ce), "n/a"]]
    return {"caption": "Classification accuracy on MNIST test (paper vs basin; "
                       "difference in percentage points)",
            "header": ["network", "condition", "paper", "basin", "difference"],
            "rows": rows}


def _ood_table(nets: dict[str, NetworkResults]) -> dict[str, Any]:
    rows = []
    for name, r in nets.items():
        for cond in ("clean", FGSM_PAPER, FGSM_CE):
            for ood in PAPER_OOD + EXTRA_OOD:
                rows.append([name, cond, ood, *(pct(record_value(r.paper, cond, ood, m)) for m in (
                    "auroc", "fpr_at_95_tpr", "aupr_in", "ood_acceptance_rate",
                    "silent_failure_rate"))])
    return {"caption": "Beyond the paper: threshold-free OOD metrics and OOD "
                       "acceptance at T = 0.8, for every OOD set",
            "header": ["network", "condition", "OOD set", "AUROC", "FPR@95%TPR",
                       "AUPR-In", "OOD accepted", "silent failures"], "rows": rows}


def _sweep_table(plan: ReproductionPlan, nets: dict[str, NetworkResults]) -> dict[str, Any]:
    rows = []
    for name, r in nets.items():
        for eps, res in r.sweep.items():
            conds = [c for c in res.conditions() if c != "clean"]
            rows.append([name, eps,
                         *(pct(record_value(res, c, "mnist", "accuracy")) for c in conds),
                         *(pct(record_value(res, c, "fashion-mnist", "auroc")) for c in conds)])
    return {"caption": "Epsilon sweep: MNIST accuracy and AUROC vs Fashion-MNIST "
                       "(attacks on ID and OOD inputs)",
            "header": ["network", "epsilon", "acc FGSM-paper", "acc FGSM-CE",
                       f"acc PGD-{plan.pgd_steps} CE", "AUROC FGSM-paper",
                       "AUROC FGSM-CE", f"AUROC PGD-{plan.pgd_steps} CE"],
            "rows": rows}


def _adaptive_table(plan: ReproductionPlan, nets: dict[str, NetworkResults]) -> dict[str, Any]:
    rows = []
    looped = iterate_label(plan)
    for name, r in nets.items():
        runs = [(r.adaptive, "F(x)", f"transfer: attacks {looped}")]
        if r.loop_white_box is not None:
            runs.append((r.loop_white_box, looped, "white-box"))
        for res, classifies, how in runs:
            for cond in res.conditions():
                label = f"{cond} ({how})" if _is_loop(cond) else cond
                v = {m: record_value(res, cond, "mnist", m) for m in (
                    "accuracy", "acceptance_rate", "accuracy_accepted")}
                o = {m: record_value(res, cond, "fashion-mnist", m) for m in (
                    "auroc", "fpr_at_95_tpr", "ood_acceptance_rate", "id_silent_failure_rate",
                    "silent_failure_rate")}
                rows.append([name, classifies, label, *(pct(x) for x in v.values()),
                             *(pct(x) for x in o.values())])
    return {
        "caption": "Adaptive evaluation at 20/255 (ID: MNIST test subset; OOD: Fashion-MNIST "
                   "subset attacked towards acceptance for detector-aware objectives); "
                   f"through-loop attacks are transfer attacks on F(x), white-box on {looped}",
        "header": ["network", "system classifies", "attack", "ID accuracy", "ID accepted",
                   "accuracy on accepted", "AUROC", "FPR@95%TPR", "OOD accepted",
                   "ID accepted & wrong", "silent failures"], "rows": rows}


def _attractor_table(nets: dict[str, NetworkResults]) -> dict[str, Any]:
    rows = []
    for name, r in nets.items():
        s = r.diagnostics["attractors"]
        rows.append([name, s["n"], pct(s["fixed_point_fraction"]),
                     pct(s["attractor_fraction"]), pct(s["stable_fraction"]),
                     pct(s["near_attractor_fraction"]), _num(s["rho_input_median"]),
                     _num(s["distance_median"])])
    return {
        "caption": "Attractor diagnostics on training samples (fixed point: ||G(x)-x||_inf < "
                   "1e-3; attractor: fixed point with spectral radius < 1; stable: iteration "
                   "converges to a point with radius < 1; near: stable within RMS distance "
                   "0.1)",
        "header": ["network", "samples", "fixed points", "attractors", "stable",
                   "near attractor", "median rho(J) at x", "median distance to limit"],
        "rows": rows}


def _training_table(nets: dict[str, NetworkResults]) -> dict[str, Any]:
    rows = [[name, r.metrics.get("n_train"),
             " / ".join(str(e) for e in (r.metrics.get("epochs") or {}).values()),
             pct(r.metrics.get("test_accuracy")), f"{r.train_seconds:.0f} s",
             ", ".join(f"{k} {v:.0f} s" for k, v in r.phase_seconds.items())]
            for name, r in nets.items()]
    return {"caption": "Training runs (wall time includes data loading; a "
                       "reused run shows its loading time)",
            "header": ["network", "training images",
                       "epochs (stages 1-3, fine-tuning)", "test accuracy",
                       "training wall time", "evaluation wall time"],
            "rows": rows}


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _conditions(res: Any) -> list[str]:
    return [c for c in res.conditions() if c != "clean"]


def summary_lines(plan: ReproductionPlan, nets: dict[str, NetworkResults]) -> list[str]:
    """Which of the paper's claims hold under which attack, in plain words."""
    lines = []
    looped = iterate_label(plan)
    for name, r in nets.items():
        clean = record_value(r.paper, "clean", "mnist", "accuracy") or 0.0
        verdicts = []
        checks = [(FGSM_PAPER, r.paper, FGSM_PAPER), (FGSM_CE, r.paper, FGSM_CE)]
        checks += [(c, r.adaptive, f"{c} (transfer to F(x))" if _is_loop(c) else c)
                   for c in _conditions(r.adaptive) if c.split(":")[1] == "ce" or _is_loop(c)]
        if r.loop_white_box is not None:
            checks += [(c, r.loop_white_box, f"{c} against a system classifying {looped} "
                                             "(white-box)")
                       for c in _conditions(r.loop_white_box)]
        for cond, res, label in checks:
            acc = record_value(res, cond, "mnist", "accuracy")
            reference = record_value(res, "clean", "mnist", "accuracy")  # same inputs, same system
            if acc is None or reference is None:
                continue
            holds = reference - acc <= HOLDS_WITHIN
            verdicts.append(f"{label}: {pct(acc)} ({'holds' if holds else 'does not hold'})")
        lines.append(f"**{name}** network, clean accuracy {pct(clean)}; accuracy kept within "
                     f"5 points under attack? " + "; ".join(verdicts))
        e2e = [c for c in r.adaptive.conditions() if ":end-to-end:" in c]
        for cond in e2e:
            sf = record_value(r.adaptive, cond, "fashion-mnist", "silent_failure_rate")
            auroc = record_value(r.adaptive, cond, "fashion-mnist", "auroc")
            lines.append(f"**{name}** under the detector-aware end-to-end attack ({cond}): "
                         f"silent-failure rate {pct(sf)}, AUROC vs Fashion-MNIST {pct(auroc)} "
                         "(OOD inputs pushed towards acceptance).")
    if "attractor" in nets and nets["attractor"].calibration:
        r = nets["attractor"]
        ours = calibrated_metrics(r)("clean", "fashion-mnist")
        lines.append(
            f"**attractor** Table 2 at a validation-calibrated T = "
            f"{r.calibration['threshold']:.4f} (the paper's T = 0.8 accepts "
            f"{pct(record_value(r.paper, 'clean', 'mnist', 'acceptance_rate'))} of MNIST test "
            f"images): MNIST vs Fashion-MNIST accuracy / precision / recall "
            + " / ".join(pct(ours[m]) for m in DETECTION) + ".")
    return lines
