"""PGD through each detector in bf16 autocast vs fp32: time and attack strength side by side.

Usage: ``python benchmarks/attack_precision.py --run runs/feature-recon [--n 200]
[--steps 40] [--eps 8] [--threads 2] [--mirror DIR]``.

``--run`` is the output folder of a full ``basin reproduce feature-recon-paper`` run: its
10-class backbone and its fitted detectors are loaded from there (nothing is trained), and
every threshold is set on the validation split as the reproduction sets it. For each detector,
PGD (``--steps`` steps, L-inf ``--eps``/255) pushes ``--n`` CIFAR-10 test images towards
rejection and ``--n`` Fashion-MNIST images towards acceptance, once with the search under bf16
autocast and once in fp32, and the table shows the wall time of each, their ratio, and the
AUROC with both sides attacked (scores always recomputed in fp32). bf16 is a fair speed-up only
if it leaves the attack as strong: the AUROC columns should agree to within noise.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from basin.data.cifar_sets import far_ood_set
from basin.metrics import ood_metrics
from basin.models.feature_classifier import extract_features
from basin.reproductions.feature_recon import run as frp
from basin.robustness.detector_level import attack_detector
from basin.utils.io import read_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path,
                        help="output folder of a full feature-recon-paper run")
    parser.add_argument("--n", type=int, default=200, help="inputs per side")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eps", type=float, default=8.0, help="L-inf radius in 1/255 units")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mirror", default=None, help="data mirror [default: "
                                                       "$BASIN_DATA_MIRROR or ../shared/data]")
    args = parser.parse_args()
    if args.n < 1 or args.steps < 1 or args.threads < 1:
        parser.error("--n, --steps and --threads must be >= 1")
    results = args.run / "results.json"
    if not results.is_file():
        parser.error(f"--run {args.run}: no results.json (run `basin reproduce "
                     "feature-recon-paper --out DIR` first)")
    torch.set_num_threads(args.threads)
    mirror = args.mirror
    if mirror is None:
        default = Path(__file__).resolve().parents[2] / "shared" / "data"
        mirror = str(default) if default.is_dir() else None

    recorded = read_json(results)["run"]["config"]["plan"]
    plan = frp.Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()})
    data = frp.load_splits("cifar10", mirror, seed=plan.seed, train_limit=plan.train_limit,
                           val_limit=plan.val_limit, test_limit=plan.test_limit)
    device = torch.device("cpu")
    model, info = frp.backbone("cifar10", plan, args.run / "backbone", data, device=device,
                               progress=False, given=False)
    run = frp.BackboneRun("cifar10", args.run / "detectors" / "cifar10", model,
                          data["train"].classes, info)
    if not (run.folder / "key.json").is_file():
        parser.error(f"--run {args.run}: no fitted detectors in {run.folder}")
    feats = {"val": extract_features(model, data["val"].images, frp.BATCH)}
    frp.build_detectors(run, plan, data, feats)  # loads the cache: the key must match
    val_scores = frp.score_set(run, data["val"].images, feats["val"])
    x_id = data["test"].subset(args.n, seed=plan.seed).images
    x_ood = far_ood_set(frp.ROBUST_FAR, mirror, seed=plan.seed, n=args.n)
    eps = args.eps / 255

    print(f"PGD-{args.steps}, eps {args.eps:g}/255, {args.n} ID + {args.n} OOD "
          f"({frp.ROBUST_FAR}), {args.threads} threads")
    print(f"{'detector':<18} {'fp32 s':>8} {'bf16 s':>8} {'speed-up':>9} "
          f"{'AUROC fp32':>11} {'AUROC bf16':>11} {'clean':>7}")
    for name, det in run.detectors.items():
        det.threshold = frp.threshold_for_acceptance(torch.from_numpy(val_scores[name]),
                                                     frp.ACCEPTANCE)
        s_id = det.score_batches(x_id, frp.BATCH).double()
        s_ood = det.score_batches(x_ood, frp.BATCH).double()
        row = {}
        for precision in ("fp32", "bf16"):
            start = time.perf_counter()
            a_id = attack_detector(det, "reject-id", x_id, eps, steps=args.steps,
                                   seed=plan.seed, precision=precision)
            a_ood = attack_detector(det, "accept-ood", x_ood, eps, steps=args.steps,
                                    seed=plan.seed + 10_000, precision=precision)
            seconds = time.perf_counter() - start
            worst_id = torch.minimum(s_id, det.score_batches(a_id, frp.BATCH).double())
            worst_ood = torch.maximum(s_ood, det.score_batches(a_ood, frp.BATCH).double())
            row[precision] = (seconds, ood_metrics(worst_id, worst_ood, det.threshold)["auroc"])
        clean = ood_metrics(s_id, s_ood, det.threshold)["auroc"]
        print(f"{name:<18} {row['fp32'][0]:>8.1f} {row['bf16'][0]:>8.1f} "
              f"{row['fp32'][0] / row['bf16'][0]:>8.2f}x {100 * row['fp32'][1]:>10.2f}% "
              f"{100 * row['bf16'][1]:>10.2f}% {100 * clean:>6.2f}%", flush=True)


if __name__ == "__main__":
    main()
