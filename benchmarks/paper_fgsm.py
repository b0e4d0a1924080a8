"""The paper's FGSM on the attractor network, with and without the Jacobians in its gradient pass.

Usage: ``python benchmarks/paper_fgsm.py [--run DIR] [--n 2000] [--eps 20/255] [--repeats 3]
[--threads 1] [--mirror DIR]``.

The ``paper`` objective (the network's own training cost, eigen term included) is what the
attractor reproduction's FGSM follows on every ID and OOD test image and at every epsilon of
the sweep. For a piecewise-linear G the eigen term ``0.5 ||dG/dx||_F^2`` is constant in ``x``,
so its per-sample Jacobians change the loss value but not the gradient; FGSM needs only the
gradient, and ``Objective.gradient_fn`` leaves them out. Both versions run alternately on the
same ``--n`` MNIST test images of the AttractorNet of ``--run`` (default: the
``paper-attractor`` preset at its initialisation): the fastest time of each, their ratio,
whether the adversarial images are identical bit for bit, and the accuracy under each.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import torch

from basin.attacks import FGSM, make_objective, parse_epsilon
from basin.data import load_dataset
from basin.losses import LossWeights
from basin.training import PRESETS, build_model
from basin.training.run import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=None, help="a paper-attractor run folder")
    parser.add_argument("--n", type=int, default=2000, help="MNIST test images attacked")
    parser.add_argument("--eps", default="20/255")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mirror", default=os.environ.get("BASIN_DATA_MIRROR"))
    args = parser.parse_args()
    if min(args.n, args.repeats, args.threads) < 1:
        parser.error("--n, --repeats and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    config = PRESETS["paper-attractor"]
    if args.run is not None:
        run = load_run(args.run)
        net = run.mlp()
        config = config.replace(weights=tuple(run.config["train"]["weights"]))
    else:
        net, _ = build_model(config)
    net.eval()
    test = load_dataset("mnist", "test", mirror=args.mirror).subset(args.n, seed=0)
    x, y = test.images, test.labels
    eps = parse_epsilon(args.eps)
    fast = make_objective("paper", net, weights=LossWeights(*config.weights))
    if fast.gradient_fn is None:
        parser.error("nothing to leave out: the run's eigen weight is 0 (a baseline), or its "
                     "G is not piecewise linear (the eigen term then has an input gradient)")
    variants = {"with Jacobians": dataclasses.replace(fast, gradient_fn=None),
                "gradient_fn": fast}
    times: dict[str, float] = {}
    out: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        for name, objective in variants.items():
            start = time.perf_counter()
            out[name] = FGSM(objective, eps).perturb(x, y)
            times[name] = min(times.get(name, float("inf")), time.perf_counter() - start)
    same = torch.equal(out["with Jacobians"], out["gradient_fn"])
    print(f"FGSM paper objective, eps {args.eps}, {len(x)} MNIST test images, weights "
          f"{tuple(config.weights)}, {torch.get_num_threads()} thread(s), fastest of "
          f"{args.repeats}, load {os.getloadavg()[0]:.1f}")
    for name in variants:
        with torch.no_grad():
            acc = float((net.logits(out[name]).argmax(1) == y).double().mean())
        print(f"  {name:<15} {times[name]:7.2f} s   accuracy under attack {100 * acc:.2f}%")
    print(f"  ratio {times['gradient_fn'] / times['with Jacobians']:.3f}; adversarial images "
          f"identical bit for bit: {same}")


if __name__ == "__main__":
    main()
