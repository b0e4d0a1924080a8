"""PGD through CIFAR-10 detectors with channels_last inputs vs NCHW, fp32: time and outcome.

Usage: ``python benchmarks/attack_layout.py --backbone DIR [--n 256] [--steps 40]
[--eps 1] [--threads 1] [--seed 0] [--mirror DIR]``.

``--backbone`` is a ``basin train-backbone`` output folder (nothing is trained). The attacks
hand colour images to the model in channels_last order by default (``basin.attacks.base``);
``channels_last_inputs(False)`` gives the NCHW arithmetic. For MSP and Energy (thresholds at
95% acceptance of the CIFAR-10 validation images), PGD (``--steps`` steps, L-inf
``--eps``/255, the reproduction's batch of 250) pushes ``--n`` CIFAR-10 test images towards
rejection and ``--n`` Fashion-MNIST images towards acceptance, once in each layout, and the
table shows the wall time of each (one after the other, per detector), their ratio, the
AUROC with both sides attacked in each layout (every score recomputed in NCHW), how far the
attacked scores differ and the share of identical adversarial pixels. The layout is a fair
speed-up only if the AUROC columns agree to within noise.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from basin.attacks import channels_last_inputs
from basin.data.cifar_sets import far_ood_set, load_splits
from basin.detectors import EnergyDetector, MSPDetector
from basin.detectors.base import threshold_for_acceptance
from basin.metrics import ood_metrics
from basin.models.cifar import load_backbone
from basin.robustness.detector_level import attack_detector

BATCH = 250
OOD = "fashion-mnist"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", required=True, type=Path)
    parser.add_argument("--n", type=int, default=256, help="inputs per side")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eps", type=float, default=1.0, help="L-inf radius in 1/255 units")
    parser.add_argument("--val", type=int, default=2000, help="validation images for T")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mirror", default=os.environ.get("BASIN_DATA_MIRROR"))
    args = parser.parse_args()
    if min(args.n, args.steps, args.threads, args.val) < 1:
        parser.error("--n, --steps, --val and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    model = load_backbone(args.backbone).eval().requires_grad_(False)
    data = load_splits("cifar10", args.mirror, seed=args.seed, val_limit=args.val,
                       test_limit=args.n, train_limit=1)
    x_id = data["test"].images
    x_ood = far_ood_set(OOD, args.mirror, seed=args.seed, n=args.n)
    eps = args.eps / 255
    print(f"PGD-{args.steps}, eps {args.eps:g}/255, {len(x_id)} ID + {len(x_ood)} OOD ({OOD}), "
          f"fp32, {torch.get_num_threads()} thread(s), load {os.getloadavg()[0]:.1f}")
    print(f"{'detector':<8} {'NCHW s':>8} {'CL s':>8} {'CL/NCHW':>8} {'AUROC NCHW':>11} "
          f"{'AUROC CL':>9} {'clean':>7} {'max |score gap|':>16} {'same pixels':>12}")
    for det in (MSPDetector(model), EnergyDetector(model)):
        with channels_last_inputs(False):  # the threshold and clean scores in NCHW, as before
            det.threshold = threshold_for_acceptance(det.score_batches(data["val"].images,
                                                                       BATCH), 0.95)
            s_id = det.score_batches(x_id, BATCH).double()
            s_ood = det.score_batches(x_ood, BATCH).double()
        row = {}
        for layout in (False, True):
            with channels_last_inputs(layout):
                start = time.perf_counter()
                a_id = attack_detector(det, "reject-id", x_id, eps, steps=args.steps,
                                       seed=args.seed, batch=BATCH)
                a_ood = attack_detector(det, "accept-ood", x_ood, eps, steps=args.steps,
                                        seed=args.seed + 10_000, batch=BATCH)
                seconds = time.perf_counter() - start
            with channels_last_inputs(False):  # every reported score in the same arithmetic
                w_id = torch.minimum(s_id, det.score_batches(a_id, BATCH).double())
                w_ood = torch.maximum(s_ood, det.score_batches(a_ood, BATCH).double())
            row[layout] = (seconds, ood_metrics(w_id, w_ood, det.threshold)["auroc"],
                           torch.cat([w_id, w_ood]), torch.cat([a_id, a_ood]))
        (t0, auc0, w0, a0), (t1, auc1, w1, a1) = row[False], row[True]
        clean = ood_metrics(s_id, s_ood, det.threshold)["auroc"]
        print(f"{det.name:<8} {t0:>8.1f} {t1:>8.1f} {t1 / t0:>7.2f}x {100 * auc0:>10.2f}% "
              f"{100 * auc1:>8.2f}% {100 * clean:>6.2f}% {float((w1 - w0).abs().max()):>16.2e} "
              f"{100 * float((a1 == a0).float().mean()):>11.2f}%", flush=True)


if __name__ == "__main__":
    main()
