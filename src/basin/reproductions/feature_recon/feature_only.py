"""The backbone-feature detectors alone on a given 10-class backbone: the feature-recon run's
far-OOD and natural-image columns at a fraction of its cost.

``basin reproduce feature-recon-paper`` also fits the pixel autoencoder, tunes ODIN and
scores both (input gradients or a second network for every image), builds the anomaly sets
and trains a 6-class backbone. What needs only the backbone's penultimate features is cheap:
MSP, Energy, Mahalanobis, KNN, Zhou's detector (default reading and the official code's)
and each one's combination with MSP. This module runs exactly those with the reproduction's
own code and plan (:func:`.zhou_fit.fit_zhou`, :func:`.run.score_set`,
:func:`.tables.metric_records`, thresholds at 95% validation acceptance), so each number
equals the full run's for the same backbone, plan and seed (tested against the tiny run), and
adds both Zhou variants' term-by-term tables (:mod:`.zhou_terms`) from the same features.

``python -m basin.reproductions.feature_recon.feature_only --backbone DIR --out DIR --seed 0``
writes ``results.json`` and ``report.md`` into ``--out`` and prints the tables.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from basin.data.cifar_sets import far_ood_names, far_ood_set, load_splits, natural_ood_names
from basin.detectors import (
    CombinedDetector,
    EnergyDetector,
    KNNDetector,
    MahalanobisDetector,
    MSPDetector,
    threshold_for_acceptance,
)
from basin.models.cifar import load_backbone
from basin.models.feature_classifier import check_feature_classifier, extract_features
from basin.reproductions.feature_recon.protocol import (
    ACCEPTANCE,
    BATCH,
    MAHALANOBIS_VARIANTS,
    BackboneRun,
    Plan,
)
from basin.reproductions.feature_recon.run import file_sha256, score_set
from basin.reproductions.feature_recon.tables import metric_records, pct
from basin.reproductions.feature_recon.zhou_fit import fit_zhou
from basin.reproductions.feature_recon.zhou_terms import POOLED, markdown, term_scores, term_table
from basin.utils.io import atomic_write_json, atomic_write_text

DETECTORS = ("msp", "energy", "mahalanobis", "mahalanobis_pp", "mahalanobis_rel", "knn", "zhou",
             "combined", "zhou_faithful", "combined_faithful")
VARIANTS = ("zhou", "zhou_faithful")


def run_feature_only(backbone_dir: str | Path, *, plan: str = "full", seed: int = 0,
                     mirror: Any = None, device: torch.device | None = None,
                     changes: dict[str, Any] | None = None, zhou: bool = True) -> dict[str, Any]:
    """Fit, calibrate and score the feature detectors on ``backbone_dir``; the results dict
    (``metrics`` as the full run's records, ``zhou_terms``, ``feature_norms``, ``backbone``,
    ``plan``). ``zhou=False`` leaves out Zhou's two variants and their combinations (their
    fits are most of the time)."""
    the_plan = replace(Plan.make(plan, seed), **(changes or {}))
    device = device or torch.device("cpu")
    folder = Path(backbone_dir)
    if not (folder / "model.safetensors").is_file():
        raise ValueError(f"--backbone {folder}: no model.safetensors (a folder written by "
                         "basin train-backbone)")
    start = time.perf_counter()
    model = check_feature_classifier(load_backbone(folder, device=device).requires_grad_(False))
    data = load_splits("cifar10", mirror, seed=the_plan.seed, train_limit=the_plan.train_limit,
                       val_limit=the_plan.val_limit, test_limit=the_plan.test_limit)
    feats = {s: extract_features(model, data[s].images.to(device), BATCH)
             for s in ("train", "val", "test")}
    train = data["train"]
    zhous = {v: fit_zhou(v, model, the_plan, data, feats) for v in VARIANTS} if zhou else {}
    msp = MSPDetector(model)
    run = BackboneRun("cifar10", folder, model, train.classes,
                      {"folder": str(folder), "sha256": file_sha256(folder / "model.safetensors")})
    run.detectors = {
        "msp": msp, "energy": EnergyDetector(model),
        **{name: MahalanobisDetector(model, **options).fit_features(feats["train"], train.labels)
           for name, options in MAHALANOBIS_VARIANTS.items()},
        "knn": KNNDetector(model, k=the_plan.knn_k).fit_features(feats["train"])}
    for v, combined in (("zhou", "combined"), ("zhou_faithful", "combined_faithful")):
        if v in zhous:
            run.detectors[v] = zhous[v]
            run.detectors[combined] = CombinedDetector(zhous[v], msp).fit_features(feats["val"])
    val_scores = score_set(run, data["val"].images, feats["val"])
    for name, det in run.detectors.items():
        det.threshold = threshold_for_acceptance(torch.from_numpy(val_scores[name]), ACCEPTANCE)
    run.scores["cifar10"] = ("id", score_set(run, data["test"].images, feats["test"]))
    terms = {v: {"id": term_scores(z, feats["test"])} for v, z in zhous.items()}
    # why raw-feature Mahalanobis can rank OOD above ID: the feature norms per set
    norms = {"cifar10 test": _median_norm(feats["test"])}
    for kind, names in (("far-ood", far_ood_names(mirror)),
                        ("natural-ood", natural_ood_names(mirror))):
        for name in names:
            x = far_ood_set(name, mirror, seed=the_plan.seed, n=the_plan.ood_limit).to(device)
            f = extract_features(model, x, BATCH)
            run.scores[name] = (kind, score_set(run, x, f))
            norms[name] = _median_norm(f)
            for v, z in zhous.items():
                terms[v][name] = term_scores(z, f)
    far = far_ood_names(mirror)
    for sets in terms.values():
        for name, s in sets.items():
            s["backbone msp"] = run.scores["cifar10" if name == "id" else name][1]["msp"]
        sets[POOLED] = {k: np.concatenate([sets[n][k] for n in far]) for k in sets["id"]}
    with torch.no_grad():
        logits = model.logits_from_features(feats["test"]).cpu()
    run.info["test_accuracy"] = float((logits.argmax(1) == data["test"].labels).double().mean())
    return {"plan": asdict(the_plan), "seed": seed, "backbone": run.info,
            "metrics": metric_records({"cifar10": run}),
            "zhou_terms": {v: term_table(sets.pop("id"), sets) for v, sets in terms.items()},
            "feature_norms": norms, "wall_time_s": time.perf_counter() - start}


def _median_norm(f: torch.Tensor) -> float:
    return float(f.double().norm(dim=1).median())


def auroc_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """detector x set AUROC (%), pooled far-OOD first."""
    sets = list(dict.fromkeys(r["set"] for r in results["metrics"]))
    sets = [POOLED, *(s for s in sets if s != POOLED)]
    found = {(r["detector"], r["set"]): r for r in results["metrics"]}
    return [{"detector": det, **{s: pct(found[(det, s)]["auroc"]) for s in sets}}
            for det in DETECTORS if (det, POOLED) in found]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", required=True, help="a basin train-backbone folder")
    parser.add_argument("--out", required=True, help="folder for results.json and report.md")
    parser.add_argument("--plan", default="full", choices=("full", "quick", "tiny"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mirror", default=None, help="data mirror [$BASIN_DATA_MIRROR]")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-zhou", action="store_true",
                        help="leave out Zhou's variants (their fits are most of the time)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results = run_feature_only(args.backbone, plan=args.plan, seed=args.seed, mirror=args.mirror,
                               zhou=not args.no_zhou)
    out = Path(args.out)
    atomic_write_json(out / "results.json", results)
    text = "\n\n".join([
        markdown(auroc_table(results), f"AUROC % (rows: detectors; test accuracy "
                                       f"{pct(results['backbone']['test_accuracy'])}%)"),
        *(markdown(rows, f"{v} term by term (AUROC %, median log-CDF drop ID -> OOD)")
          for v, rows in results["zhou_terms"].items()),
        markdown([{"set": k, "median feature norm": f"{v:.3f}"}
                  for k, v in results["feature_norms"].items()],
                 "Median L2 norm of the penultimate features")])
    atomic_write_text(out / "report.md", text + "\n")
    print(text)
    print(f"wall time {results['wall_time_s']:.0f} s")


if __name__ == "__main__":
    main()
