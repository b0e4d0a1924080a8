"""The attractor reproduction's paper protocol on a trained network: time, and its records
against those of a finished reproduction.

Usage: ``python benchmarks/paper_protocol.py --run DIR/attractor --results DIR/results.json
[--network attractor] [--threads 1] [--mirror DIR]``.

Runs the protocol's first phase exactly as ``basin reproduce attractor-paper`` does (T = 0.8,
FGSM 20/255 with the paper's and the CE objective on every MNIST test image and every OOD set,
the sanity checks) on the network of ``--run`` (nothing is trained or written), prints its wall
and CPU time, and compares every record with the ``paper`` records of ``--network`` in
``--results``: after a speed-up that must not change the arithmetic they are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from basin.reproductions.attractor.protocol import (
    EXTRA_OOD,
    PAPER_ATTACKS,
    PAPER_OOD,
    ReproductionPlan,
)
from basin.robustness.evaluation import EvaluationSettings, evaluate_run
from basin.training.run import load_run


def _equal(a: object, b: object) -> bool:
    return a == b or (a != a and b != b)  # NaN == NaN here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="a trained network's folder")
    parser.add_argument("--results", required=True, type=Path,
                        help="results.json of the reproduction that trained it")
    parser.add_argument("--network", default="attractor", choices=("baseline", "attractor"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mirror", default=os.environ.get("BASIN_DATA_MIRROR"))
    args = parser.parse_args()
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    reference = json.loads(args.results.read_text())
    plan = ReproductionPlan.make(bool(reference["quick"]), reference["run"]["seed"])
    net = load_run(args.run).mlp()
    settings = EvaluationSettings(steps=plan.loop_steps, threshold=0.8, limit=plan.eval_limit,
                                  seed=plan.seed,
                                  loss_weights=tuple(plan.train_config(args.network).weights))
    wall, cpu = time.perf_counter(), time.process_time()
    result = evaluate_run(net, ood=PAPER_OOD + EXTRA_OOD, attacks=PAPER_ATTACKS,
                          settings=settings, mirror=args.mirror, device=torch.device("cpu"),
                          progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    def key(r: dict) -> tuple:
        return r["condition"], r["dataset"], r["side"], r["metric"]

    ours = {key(r): r["value"] for r in result.to_json()["records"]}
    theirs = {key(r): r["value"] for r in reference["records"][args.network]["paper"]["records"]}
    same = sum(1 for k, v in ours.items() if k in theirs and _equal(v, theirs[k]))
    print(f"paper protocol of {args.run} ({args.network}): wall {wall:.0f} s, CPU {cpu:.0f} s, "
          f"{torch.get_num_threads()} thread(s), load {os.getloadavg()[0]:.1f}")
    print(f"records: {len(ours)} here, {len(theirs)} in {args.results}; identical: {same}; "
          f"missing on either side: {len(set(ours) ^ set(theirs))}")


if __name__ == "__main__":
    main()
