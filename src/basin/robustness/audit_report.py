"""What ``basin.audit`` returns: the records, the sanity flags and the per-input arrays.

The records (:class:`~basin.robustness.records.Record`, long format) are the result; every
table of ``to_markdown``/``to_html`` is a pivot of them. The per-input arrays (clean and
worst-case scores, which inputs failed) are kept for callers that draw their own figures
or recombine subsets, e.g. a reproduction reusing the audit's code path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from basin.report import Report
from basin.report.figures import roc_curves, score_histograms
from basin.robustness.records import Record, select, value_of
from basin.utils.io import atomic_write_json

Array = NDArray[Any]
SUMMARY_METRICS = ("accuracy", "acceptance_rate", "silent_failure_rate")
OOD_COLUMNS = ("auroc", "fpr_at_95_tpr", "aupr_in", "ood_acceptance_rate",
               "silent_failure_rate")


@dataclass(frozen=True)
class RunArrays:
    """One attack run on one data set: per-input scores (and predictions on the ID side)."""

    spec: str
    attack: str
    objective: str
    epsilon: float
    dataset: str
    side: str
    black_box: bool
    scores: Array
    predicted: Array


@dataclass(frozen=True)
class WorstCase:
    """Per input at one epsilon, over every run and the clean input.

    ``wrong``/``silent`` (ID, bool): misclassified / accepted-and-misclassified by some
    candidate; ``id_scores``: the lowest ID score reached; ``ood_scores[name]``: the highest.
    """

    epsilon: float
    wrong: Array
    silent: Array
    id_scores: Array
    ood_scores: dict[str, Array]


@dataclass
class AuditReport:
    """The result of :func:`basin.robustness.audit.audit`."""

    records: list[Record]
    sanity: dict[float, list[str]]
    config: dict[str, Any]
    threshold: float
    id_name: str
    ood_names: list[str]
    labels: Array
    clean_predicted: Array
    clean_id_scores: Array
    clean_ood_scores: dict[str, Array]
    worst: dict[float, WorstCase]
    runs: list[RunArrays] = field(default_factory=list)

    # -- access ------------------------------------------------------------------------
    def value(self, **where: Any) -> float | None:
        """The value of the one record matching ``where`` (KeyError if none or several)."""
        return value_of(self.records, **where)

    def select(self, **where: Any) -> list[Record]:
        return select(self.records, **where)

    def scores(self, dataset: str, epsilon: float | None = None) -> Array:
        """Clean scores of ``dataset`` (``epsilon=None``), else its worst-case scores at
        ``epsilon``: the lowest reached for the ID set, the highest for an OOD set."""
        if dataset != self.id_name and dataset not in self.clean_ood_scores:
            raise KeyError(f"dataset {dataset!r}: not in this audit ({self.id_name!r}, "
                           f"{self.ood_names})")
        if epsilon is None:
            return (self.clean_id_scores if dataset == self.id_name
                    else self.clean_ood_scores[dataset])
        worst = self.worst[_epsilon_key(self.worst, epsilon)]
        return worst.id_scores if dataset == self.id_name else worst.ood_scores[dataset]

    @property
    def flags(self) -> list[str]:
        """Every sanity flag, epsilon by epsilon."""
        return [f for eps in sorted(self.sanity) for f in self.sanity[eps]]

    @property
    def suspicious(self) -> list[str]:
        """The sanity flags that say a number cannot be trusted."""
        bad = ("FAILED", "suspected", "randomised defence", "outputs probabilities",
               "cannot follow")
        return [f for f in self.flags if any(b in f for b in bad)]

    # -- serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "threshold": self.threshold,
                "records": [r.to_dict() for r in self.records],
                "sanity": {repr(eps): flags for eps, flags in sorted(self.sanity.items())}}

    def to_json(self, indent: int | None = 2) -> str:
        """Records, config and sanity flags as JSON (no NaN: undefined values are null)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def to_markdown(self) -> str:
        """Summary, per-OOD-set, per-run tables and the sanity flags, as Markdown."""
        return self.build_report(figures=False).render_markdown()

    def to_html(self) -> str:
        """A self-contained HTML page: the tables, ROC curves and score histograms."""
        return self.build_report(figures=True).render_html()

    def write(self, out_dir: str | os.PathLike[str],
              run_info: Mapping[str, Any] | None = None) -> dict[str, Path]:
        """Write ``results.json`` (with ``run_info``), ``report.md``, ``report.html`` and
        the figures under ``out_dir``, each file atomically."""
        out = Path(out_dir)
        payload = self.to_dict()
        if run_info:
            payload["run"] = dict(run_info)
        atomic_write_json(out / "results.json", payload)
        html_path, md_path = self.build_report(figures=True).write(out)
        return {"json": out / "results.json", "markdown": md_path, "html": html_path}

    # -- presentation ------------------------------------------------------------------
    def build_report(self, *, figures: bool) -> Report:
        """The report builder content of this audit (tables first, then figures)."""
        cfg = self.config
        report = Report("Robustness audit",
                        f"ID {self.id_name} (n={cfg.get('n_id')}), OOD {', '.join(self.ood_names)}"
                        f"; threshold {self.threshold:.6g}; attacks {_attacks_text(cfg)}")
        report.heading("Summary")
        report.paragraph("Worst case per input over every attack run and the clean input. "
                         "Silent failure: accepted by the detector and misclassified.")
        rows = [["clean", *(self._v("clean", 0.0, self.id_name, "none", m)
                            for m in SUMMARY_METRICS)]]
        rows += [[_eps(e), *(self._v("worst-case", e, self.id_name, "id", m)
                             for m in SUMMARY_METRICS)] for e in sorted(self.worst)]
        report.table(["epsilon", "ID accuracy", "ID acceptance", "ID silent failures"], rows,
                     id="summary")
        for name in self.ood_names:
            report.heading(f"OOD set {name}", level=3)
            rows = [["clean", "none", *(self._v("clean", 0.0, name, "none", m)
                                        for m in OOD_COLUMNS)]]
            rows += [[_eps(e), side, *(self._v("worst-case", e, name, side, m)
                                       for m in OOD_COLUMNS)]
                     for e in sorted(self.worst) for side in ("id", "ood", "both")]
            report.table(["epsilon", "attacked", "AUROC", "FPR95", "AUPR-in", "OOD accepted",
                          "system silent failures"], rows, id=f"ood-{_slug(name)}")
        report.heading("Attack runs")
        report.table(["run", "data set", "side", "accuracy", "acceptance / OOD accepted",
                      "silent failures", "mean score"], self._run_rows(), id="runs")
        report.heading("Sanity checks")
        if self.flags:
            report.bullets(self.flags)
        for flag in self.suspicious:
            report.note(flag, kind="warning")
        if figures:
            self._add_figures(report)
        return report

    def _v(self, condition: str, epsilon: float, dataset: str, side: str,
           metric: str) -> float | None:
        found = select(self.records, condition=condition, epsilon=epsilon, dataset=dataset,
                       side=side, metric=metric)
        return found[0].value if len(found) == 1 else None

    def _run_rows(self) -> list[list[Any]]:
        rows = []
        for run in self.runs:
            def v(metric: str, run: RunArrays = run) -> float | None:
                return self._v(run.spec, run.epsilon, run.dataset, run.side, metric)

            rate = "acceptance_rate" if run.side == "id" else "ood_acceptance_rate"
            rows.append([run.spec, run.dataset, run.side,
                         v("accuracy") if run.side == "id" else None, v(rate),
                         v("silent_failure_rate"), v("mean_score")])
        return rows

    def _add_figures(self, report: Report) -> None:
        report.heading("Figures")
        for name in self.ood_names:
            curves = {"clean": (self.clean_id_scores, self.clean_ood_scores[name])}
            for e in sorted(self.worst):
                w = self.worst[e]
                curves[f"eps={_eps(e)}, both attacked"] = (w.id_scores, w.ood_scores[name])
            report.figure(roc_curves(curves, title=f"ROC: {self.id_name} vs {name}"),
                          f"roc-{_slug(name)}", f"ROC curves, {self.id_name} (positive) vs "
                          f"{name}, clean and with both sides attacked (worst case).")
        epsilons: list[float | None] = [*sorted(self.worst)] or [None]
        for at in epsilons:
            sets = {f"{self.id_name} clean": self.clean_id_scores}
            sets.update({f"{k} clean": v for k, v in self.clean_ood_scores.items()})
            if at is not None:
                sets[f"{self.id_name} attacked"] = self.worst[at].id_scores
                sets.update({f"{k} attacked": v for k, v in self.worst[at].ood_scores.items()})
            tag = "clean" if at is None else _eps(at)
            report.figure(score_histograms(sets, self.threshold,
                                           title=f"Detector scores, eps={tag}"),
                          f"scores-{_slug(tag)}", f"Detector scores at eps={tag}: clean and "
                          "worst case (ID lowest, OOD highest); the line is the threshold.")


def _epsilon_key(worst: Mapping[float, Any], epsilon: float) -> float:
    for key in worst:
        if abs(key - float(epsilon)) <= 1e-12:
            return key
    raise KeyError(f"epsilon {epsilon!r}: not audited; audited {sorted(worst)}")


def _eps(epsilon: float) -> str:
    k = epsilon * 255
    return f"{round(k)}/255" if np.isclose(k, round(k), atol=1e-9) else f"{epsilon:.4g}"


def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in text).strip("-")
    return out or "x"


def _attacks_text(cfg: Mapping[str, Any]) -> str:
    attacks: Sequence[str] = cfg.get("attacks", ())
    return f"{len(attacks)} specs" if len(attacks) > 3 else ", ".join(attacks)
