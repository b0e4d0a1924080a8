"""Cross-check of the robust-attractor numbers with ``basin.audit(attacks="strongest")``.

The robust-attractor reproduction runs its own suite (``reproductions/robust_attractor/suite``);
this runs the library's audit on the same system (F(x) classifies, Pearson r(x, G(x)) accepts at
the reproduction's threshold) so the two can be compared.

Usage: ``python benchmarks/audit_robust_attractor.py --run runs/attractor-robust-pgd7
--threshold 0.8377 --out runs/audit-robust [--n 200] [--eps 0.1 --eps 0.3] [--seed 0]``
(n = 200 per set at 0.1 and 0.3 took about 18 min on one core).
"""

from __future__ import annotations

import argparse
import time

import torch

import basin
from basin.data import load_dataset
from basin.detectors import PearsonDetector
from basin.training.run import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="robust attractor run folder")
    parser.add_argument("--threshold", type=float, required=True,
                        help="the system's threshold (95%% of MNIST validation accepted)")
    parser.add_argument("--out", required=True, help="folder for the audit report")
    parser.add_argument("--n", type=int, default=200, help="inputs per data set")
    parser.add_argument("--eps", type=float, action="append", help="epsilons (0.1, 0.3)")
    parser.add_argument("--ood", action="append", help="OOD sets (fashion-mnist, cifar10-bw)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net = load_run(args.run).net.eval()
    ood = {name: load_dataset(name, "test") for name in args.ood or ("fashion-mnist",
                                                                      "cifar10-bw")}
    start = time.perf_counter()
    report = basin.audit(net, PearsonDetector(net, steps=1), load_dataset("mnist", "test"), ood,
                         epsilons=tuple(args.eps or (0.1, 0.3)), attacks="strongest", n=args.n,
                         seed=args.seed, threshold=args.threshold, batch_size=args.n,
                         progress=True)
    report.write(args.out)
    for r in report.select(condition="worst-case"):
        if r.metric in ("accuracy", "silent_failure_rate", "auroc", "ood_acceptance_rate"):
            print(f"eps={r.epsilon:g} {r.dataset} {r.side}-side {r.metric}: {r.value:.4f}")
    print(f"audit took {time.perf_counter() - start:.0f} s; report in {args.out}")


if __name__ == "__main__":
    main()
