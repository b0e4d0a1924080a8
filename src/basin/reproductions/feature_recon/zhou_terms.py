"""Zhou's fused score term by term, beside the backbone's MSP: why one ranks above the other.

Zhou's score is ``log p = log Phi_msp + log Phi_e1 + log Phi_e2`` (:mod:`basin.detectors.zhou`):
the head W's MSP at Zhou's temperature and the two reconstruction errors, each through a
normal fitted on validation features. Whether the fused score beats the backbone's own MSP
depends on which term separates ID from OOD on a given set and which one dominates the sum.
For every OOD set of a finished ``basin reproduce feature-recon-paper`` folder this module
measures, on the run's own fitted detectors and the same seeded images:

* the AUROC of the backbone MSP (T = 1), of each of Zhou's three terms alone (``-e1``,
  ``-e2``: a lower error is more ID-like) and of the fused score;
* the fused score with one term left out (which term helps, which hurts);
* the median of each log-CDF term over the OOD set, ID test median subtracted (how far each
  term pushes an OOD input down in the sum: the term with the largest drop dominates).

``python -m basin.reproductions.feature_recon.zhou_terms --run DIR [--key cifar10]`` writes
``zhou_terms_<key>.json`` and ``zhou_terms_<key>.md`` into ``DIR`` (or ``--out``) and prints
the tables.
Anomaly sets are not rebuilt (their FGSM images need the attack); the OOD sets are those of
the run (far-OOD, the natural sets, the pooled far-OOD; near-OOD for ``cifar6``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from basin.data.cifar_sets import far_ood_names, far_ood_set, load_splits, natural_ood_names
from basin.detectors import MSPDetector, ZhouDetector, ZhouFaithfulDetector
from basin.metrics import auroc
from basin.models.cifar import load_backbone
from basin.models.feature_classifier import check_feature_classifier, extract_features
from basin.reproductions.feature_recon.protocol import BATCH
from basin.utils.io import atomic_write_json, atomic_write_text, read_json

TERMS = ("msp", "e1", "e2")
POOLED = "far-ood (all)"


def term_scores(det: ZhouDetector, f: Tensor) -> dict[str, np.ndarray]:
    """Scores of features ``f`` oriented so that higher means more ID-like: each term alone
    (``msp``, ``-e1``, ``-e2``), each log-CDF term, the fused ``log_p`` and ``log_p`` without
    each term (``log_p-msp`` etc.)."""
    with torch.no_grad():
        parts = torch.cat([torch.stack([det.log_terms(f[i:i + BATCH])[k].double() for k in
                                        (*TERMS, *(f"log_phi_{t}" for t in TERMS), "log_p")])
                           for i in range(0, len(f), BATCH)], dim=1).cpu().numpy()
    raw, logs, log_p = parts[:3], parts[3:6], parts[6]
    out = {"msp": raw[0], "-e1": -raw[1], "-e2": -raw[2], "log_p": log_p}
    for i, t in enumerate(TERMS):
        out[f"log_phi_{t}"] = logs[i]
        out[f"log_p-{t}"] = log_p - logs[i]
    return out


def term_table(id_scores: Mapping[str, np.ndarray],
               ood: Mapping[str, Mapping[str, np.ndarray]]) -> list[dict[str, Any]]:
    """One row per OOD set: AUROC (%) of every oriented score (backbone MSP under ``backbone
    msp`` when given) and the median drop of each log-CDF term from ID to that set."""
    rows = []
    for name, scores in ood.items():
        row: dict[str, Any] = {"set": name, "n": len(next(iter(scores.values())))}
        for k in ("backbone msp", "msp", "-e1", "-e2", "log_p", *(f"log_p-{t}" for t in TERMS)):
            if k in scores:
                row[f"auroc {k}"] = round(100 * auroc(id_scores[k], scores[k]), 2)
        for t in TERMS:
            k = f"log_phi_{t}"
            row[f"drop {k}"] = round(float(np.median(id_scores[k]) - np.median(scores[k])), 3)
        rows.append(row)
    return rows


def markdown(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    header = list(rows[0])
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    return "\n".join(lines)


def _ood_sets(key: str, plan: Mapping[str, Any], mirror: Any,
              data: Mapping[str, Any]) -> dict[str, Tensor]:
    if key == "cifar6":
        return {"cifar4-vehicles": data["near"].images}
    seed, n = int(plan["seed"]), plan.get("ood_limit")
    return {name: far_ood_set(name, mirror, seed=seed, n=n)
            for name in (*far_ood_names(mirror), *natural_ood_names(mirror))}


def analyse_run(run_dir: str | Path, key: str = "cifar10", mirror: Any = None,
                device: torch.device | None = None) -> dict[str, list[dict[str, Any]]]:
    """Both Zhou variants of ``run_dir`` (a finished feature-recon folder) term by term."""
    run_dir = Path(run_dir)
    results = read_json(run_dir / "results.json")
    if key not in results["backbones"]:
        raise ValueError(f"key: {key!r} is not in {run_dir}/results.json (has "
                         f"{sorted(results['backbones'])})")
    plan, device = results["plan"], device or torch.device("cpu")
    model = check_feature_classifier(
        load_backbone(results["backbones"][key]["folder"], device=device).requires_grad_(False))
    data = load_splits(key, mirror, seed=int(plan["seed"]), test_limit=plan.get("test_limit"),
                       near_limit=plan.get("near_limit"))
    cache = run_dir / "detectors" / key
    detectors = {"zhou": ZhouDetector.load(cache / "zhou", model),
                 "zhou_faithful": ZhouFaithfulDetector.load(cache / "zhou_faithful", model)}
    sets = {"id": data["test"].images, **_ood_sets(key, plan, mirror, data)}
    feats = {name: extract_features(model, x.to(device), BATCH) for name, x in sets.items()}
    msp = MSPDetector(model)
    out = {}
    for name, det in detectors.items():
        scores = {}
        for s, f in feats.items():
            scores[s] = term_scores(det, f)
            with torch.no_grad():
                scores[s]["backbone msp"] = msp.score_features(f).double().cpu().numpy()
        if key == "cifar10":
            far = [s for s in feats if s in far_ood_names(mirror)]
            scores[POOLED] = {k: np.concatenate([scores[s][k] for s in far])
                              for k in scores["id"]}
        id_scores = scores.pop("id")
        out[name] = term_table(id_scores, scores)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a finished feature-recon-paper folder")
    parser.add_argument("--key", default="cifar10", choices=("cifar10", "cifar6"))
    parser.add_argument("--out", default=None, help="output folder [default: --run]")
    parser.add_argument("--mirror", default=None, help="data mirror [$BASIN_DATA_MIRROR]")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    tables = analyse_run(args.run, args.key, args.mirror)
    out = Path(args.out or args.run)
    text = "\n\n".join(markdown(rows, f"{name} on the {args.key} backbone (AUROC %, "
                                      "median log-CDF drop ID -> OOD)")
                       for name, rows in tables.items())
    atomic_write_json(out / f"zhou_terms_{args.key}.json", tables)
    atomic_write_text(out / f"zhou_terms_{args.key}.md", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
