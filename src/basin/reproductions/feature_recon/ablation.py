"""Backbone ablation: the same detectors over backbones trained differently (e.g. label
smoothing 0.2 against plain cross-entropy), from finished reproduction folders.

Each folder is a ``basin reproduce feature-recon-paper`` output (its ``results.json``); the
ablation reads, never recomputes, so its numbers are exactly those of the runs' own reports.
:func:`ablation_tables` builds the tables as data (detector x backbone: AUROC on every set
kind, and what each backbone is); :func:`write_ablation` writes ``report.md``,
``report.html`` (with bar charts of the AUROCs under ``figures/``) and ``ablation.json``.

``python -m basin.reproductions.feature_recon.ablation --out DIR LABEL=FOLDER ...``
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from basin.report import Report
from basin.reproductions.feature_recon.protocol import LSUN_RESIZE, TINY_RESIZE
from basin.reproductions.feature_recon.tables import pct
from basin.utils.io import atomic_write_json, read_json

# (column title, backbone, set name in the metric records)
COLUMNS = (("far-OOD", "cifar10", "far-ood (all)"),
           ("Tiny-ImageNet (resize)", "cifar10", TINY_RESIZE),
           ("LSUN (resize)", "cifar10", LSUN_RESIZE),
           ("near-OOD", "cifar6", "cifar4-vehicles"),
           ("anomalies", "cifar10", "anomaly (all)"))


def load_results(folder: str | Path) -> dict[str, Any]:
    """A finished run's ``results.json`` (ValueError naming the folder if there is none)."""
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no results.json (not a finished feature-recon run)")
    return read_json(path)


def _auroc(results: Mapping[str, Any], backbone: str, name: str, det: str) -> float | None:
    found = [r for r in results["metrics"]
             if (r["backbone"], r["set"], r["detector"]) == (backbone, name, det)]
    return pct(found[0]["auroc"]) if len(found) == 1 else None


def ablation_tables(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{"auroc": detector x (set, backbone) AUROC %, "backbones": what each run is}``."""
    if not runs:
        raise ValueError("runs: need at least one labelled run")
    labels = list(runs)
    detectors = list(dict.fromkeys(r["detector"] for res in runs.values()
                                   for r in res["metrics"]))
    header = ["detector"] + [f"{title}: {label}" for title, _, _ in COLUMNS for label in labels]
    rows = [[det, *(_auroc(runs[label], backbone, name, det) for _, backbone, name in COLUMNS
                    for label in labels)] for det in detectors]
    backbone_rows = []
    for label, res in runs.items():
        for key, info in res["backbones"].items():
            backbone_rows.append([label, key, info.get("label_smoothing"), info.get("n_train"),
                                  info.get("epochs"), pct(info.get("test_accuracy")),
                                  pct(info.get("test_ece")), res["plan"]["name"]])
    return {
        "auroc": {"caption": "AUROC (%) of every detector on each backbone (ID = CIFAR-10 test "
                             "images for the 10-class backbone, the 6 animal classes for the "
                             "near-OOD one); a dash: not measured in that run",
                  "header": header, "rows": rows},
        "backbones": {"caption": "The backbones compared (test accuracy and ECE of the plain "
                                 "forward pass, %)",
                      "header": ["run", "backbone", "label smoothing", "training images",
                                 "epochs", "test accuracy", "ECE", "plan"],
                      "rows": backbone_rows}}


def auroc_bars(table: Mapping[str, Any], labels: Sequence[str], column: str) -> Figure:
    """Grouped bars: one group per detector, one bar per labelled run, for ``column``."""
    header, rows = table["header"], table["rows"]
    cols = [header.index(f"{column}: {label}") for label in labels]
    fig = Figure(figsize=(max(6.0, 0.9 * len(rows)), 3.6))
    ax = fig.add_subplot()
    width = 0.8 / len(labels)
    x = np.arange(len(rows))
    for i, (label, col) in enumerate(zip(labels, cols, strict=True)):
        values = [np.nan if row[col] is None else row[col] for row in rows]
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, values, width, label=label)
    ax.axhline(50, color="grey", lw=0.8, ls=":")
    ax.set_xticks(x, [row[0] for row in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("AUROC (%)")
    ax.set_title(f"{column} AUROC by backbone")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_ablation(out: str | Path, folders: Mapping[str, str | Path]) -> dict[str, Any]:
    """Read every labelled run folder, write the ablation report to ``out``; return it."""
    runs = {label: load_results(folder) for label, folder in folders.items()}
    tables = ablation_tables(runs)
    report = Report("Feature-recon backbone ablation",
                    " vs ".join(f"{label} ({folder})" for label, folder in folders.items()))
    for key, title in (("backbones", "Backbones"), ("auroc", "AUROC by detector")):
        report.heading(title)
        t = tables[key]
        report.table(t["header"], t["rows"], t["caption"], id=key)
    report.heading("Figures")
    labels = list(runs)
    for column in ("far-OOD", "Tiny-ImageNet (resize)"):
        if any(v is not None for row in tables["auroc"]["rows"]
               for v, h in zip(row, tables["auroc"]["header"], strict=True)
               if h.startswith(f"{column}:")):
            name = "ablation-" + column.split()[0].lower()
            report.figure(auroc_bars(tables["auroc"], labels, column), name,
                          f"{column} AUROC of every detector, one bar per backbone")
    out = Path(out)
    result = {"tables": tables, "runs": {k: str(v) for k, v in folders.items()}}
    atomic_write_json(out / "ablation.json", result)
    report.write(out)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the ablation report")
    parser.add_argument("runs", nargs="+", metavar="LABEL=FOLDER")
    args = parser.parse_args(argv)
    folders = {}
    for item in args.runs:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            parser.error(f"expected LABEL=FOLDER, got {item!r}")
        folders[label] = folder
    write_ablation(args.out, folders)
    print(f"ablation written to {args.out}")


if __name__ == "__main__":
    main()
