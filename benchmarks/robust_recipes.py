"""A/B of robust attractor training recipes at small scale, judged by the reproduction's suite.

Each variant is a robust preset with field changes (JSON); each is trained per seed (a
complete run folder in ``--out`` is reused) and judged like ``basin reproduce
robust-attractor`` judges a system: threshold for 95% of MNIST validation images accepted,
then the suite's ID attacks (APGD / PGD CE, end-to-end PGD and APGD at penalties 1, 10, 100,
the small-step end-to-end PGD from the clean input, BPDA, Square on the first quarter) and
its OOD attacks on each ``--ood`` set, per input the worst case. The transfer attack (it needs
the paper baseline) is left out, so the numbers are comparable between variants, not with
the reproduction's tables.

Usage::

    python benchmarks/robust_recipes.py --out runs/recipes --seeds 0,1 --n 200 \\
        --variant margin='{"clean_start_fraction": 0.5, "id_steps": 7, "outlier_steps": 3}' \\
        --variant adaptive='{"clean_start_fraction": 0.5, "id_steps": 7, "outlier_steps": 3,
                             "cor_threshold": "adaptive"}'

Prints one row per run and the mean per variant; writes ``results.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from basin.metrics.ood import auroc
from basin.reproductions.robust_attractor.protocol import RobustPlan
from basin.reproductions.robust_attractor.run import calibrate, load_sets
from basin.reproductions.robust_attractor.suite import (
    attack_id,
    attack_ood,
    id_worst_case,
    ood_worst_case,
)
from basin.training.robust_config import ROBUST_PRESETS, RobustConfig
from basin.training.robust_run import run_robust
from basin.training.run import load_run
from basin.utils.io import atomic_write_json

METRICS = ("test_accuracy", "threshold", "silent_clean", "silent_worst", "auroc_ood_attacked")


def variant_config(base: str, changes: dict[str, Any], seed: int) -> RobustConfig:
    """The preset ``base`` with ``changes`` (``weights`` merged key by key) and ``seed``."""
    preset = ROBUST_PRESETS[base]
    if "weights" in changes:
        changes = {**changes, "weights": {**asdict(preset.weights), **changes["weights"]}}
    return preset.replace(**changes, seed=seed)


def judge(run: Path, sets: dict[str, Any], plan: RobustPlan, eps: float,
          ood_names: list[str]) -> dict[str, float]:
    """The suite's worst case on one trained run (see the module docstring)."""
    net = load_run(run).net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    system = calibrate(net, run.name, sets["val_x"], score_steps=1)
    x, y = sets["x"], sets["y"]
    pred, clean_scores = system.answer(x)
    worst = id_worst_case(attack_id(system, x, y, eps, plan, seed=plan.seed), y,
                          system.threshold)
    out = {"threshold": system.threshold,
           "silent_clean": float(((pred != y) & (clean_scores >= system.threshold))
                                 .float().mean()),
           "silent_worst": float(worst["silent"].float().mean())}
    aurocs = []
    for name in ood_names:
        x_ood = sets["ood"][name]
        high = ood_worst_case(attack_ood(system, x_ood, eps, plan, seed=plan.seed),
                              len(x_ood))
        out[f"auroc_{name}"] = auroc(clean_scores, high)
        aurocs.append(out[f"auroc_{name}"])
    out["auroc_ood_attacked"] = statistics.fmean(aurocs) if aurocs else float("nan")
    return out


def parse_variants(items: list[str]) -> dict[str, dict[str, Any]]:
    variants: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--variant: expected NAME=JSON, got {item!r}")
        try:
            variants[name] = json.loads(text)
        except json.JSONDecodeError as err:
            raise SystemExit(f"--variant {name}: not JSON ({err})") from err
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="attractor-robust-conv-quick",
                        choices=sorted(ROBUST_PRESETS))
    parser.add_argument("--variant", action="append", required=True, help="NAME=JSON")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--n", type=int, default=200, help="MNIST test digits (OOD: n / 2)")
    parser.add_argument("--ood", default="fashion-mnist,cifar10-bw")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = parse_variants(args.variant)
    seeds = [int(s) for s in args.seeds.split(",")]
    ood_names = [s for s in args.ood.split(",") if s]
    plan = RobustPlan(n_id=args.n, n_ood=max(1, args.n // 2), n_square=max(1, args.n // 4))
    sets = load_sets(plan, None)
    rows: list[dict[str, Any]] = []
    for name, changes in variants.items():
        for seed in seeds:
            start = time.perf_counter()
            config = variant_config(args.base, changes, seed)
            metrics = run_robust(config, args.out / f"{name}-s{seed}", quiet=True)
            row = {"variant": name, "seed": seed, "changes": changes,
                   "test_accuracy": metrics["test_accuracy"], "train_s": metrics["wall_s"],
                   **judge(args.out / f"{name}-s{seed}", sets, plan, args.eps, ood_names)}
            row["wall_s"] = time.perf_counter() - start
            rows.append(row)
            print(f"{name} seed {seed}: " + " ".join(f"{k}={row[k]:.4f}" for k in METRICS)
                  + f" ({row['wall_s']:.0f} s)", flush=True)
    print(f"\nmean over seeds {seeds} (eps {args.eps}, {args.n} digits, OOD {ood_names}):")
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        print(f"{name}: " + " ".join(f"{k}={statistics.fmean(r[k] for r in mine):.4f}"
                                     for k in METRICS))
    atomic_write_json(args.out / "results.json",
                      {"base": args.base, "eps": args.eps, "plan": plan.to_dict(),
                       "seeds": seeds, "rows": rows})


if __name__ == "__main__":
    main()
