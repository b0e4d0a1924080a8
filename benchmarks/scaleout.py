"""Scale-out of an attack grid: the local executor, Ray with 1 worker and Ray with 2 workers.

Usage: ``python benchmarks/scaleout.py [--backbone DIR] [--n 64] [--batch 16] [--steps 10]
[--mirror DIR] [--out runs/scaleout.json]``.

The grid is a ``basin.audit`` of a CIFAR-10 backbone (``--backbone``: a folder written by
``basin train-backbone`` or a feature-recon run's ``backbone/``; without one, an untrained
airbench of the same architecture, which costs the same to attack) with its MSP detector:
PGD (``--steps``) on the cross-entropy, the end-to-end goal at two penalties and ID rejection
on ``--n`` CIFAR-10 test images, OOD acceptance on ``--n`` Fashion-MNIST images, at 1/255
and 8/255, one cell per epsilon x attack x data set x ``--batch`` inputs. Side by side in one
run, each executor audits the same grid:

* ``local``: in this process, torch on 1 thread (and on ``--local-threads`` more: torch's
  own parallelism);
* ``ray-1`` / ``ray-2``: a local Ray with 1 / 2 CPUs, one single-threaded task per cell;
  Ray's start (and the workers' first import of torch and basin, which a long-lived cluster
  pays once) is timed apart from the grid.

Printed: the grid's wall time per executor, the speed-up of ``ray-2`` over ``local`` (1
thread) and over ``ray-1``, the per-cell overhead of Ray (``(ray-1 - local) / cells``, and
the time of ``--noop-cells`` empty cells with the same shared objects), the load average
before each run (other jobs on the machine slow the parallel runs most), and whether every
executor's records equal the local ones (they must). On a machine shared with other jobs the
CPU share of each row changes from one minute to the next (the local row ran 40 to 87 s in
three runs of the same grid on the 2-core machine): read the speed-ups with the load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from basin.data import load_dataset
from basin.data.cifar_sets import to_cifar_shape
from basin.detectors import MSPDetector
from basin.distributed import Cell, RayExecutor, Resources, import_ray, run_grid
from basin.models.cifar import build_backbone, load_backbone
from basin.robustness.audit import audit


def system(backbone: Path | None) -> tuple[torch.nn.Module, str]:
    if backbone is not None and (backbone / "model.safetensors").is_file():
        return load_backbone(backbone).eval().requires_grad_(False), str(backbone)
    torch.manual_seed(0)
    model = build_backbone("airbench", n_classes=10).eval().requires_grad_(False)
    return model, "untrained airbench (same cost)"


def attacks(steps: int) -> list[str]:
    return [f"pgd:ce:8/255:steps={steps}", f"pgd:end-to-end:8/255:steps={steps}:penalty=1",
            f"pgd:end-to-end:8/255:steps={steps}:penalty=10",
            f"pgd:reject-id:8/255:steps={steps}", f"pgd:accept-ood:8/255:steps={steps}"]


def timed_audit(args: argparse.Namespace, parts: dict[str, Any], executor: Any
                ) -> tuple[float, Any]:
    start = time.perf_counter()
    report = audit(parts["model"], parts["detector"], parts["id"], parts["ood"],
                   epsilons=(1 / 255, 8 / 255), attacks=attacks(args.steps), n=None,
                   seed=0, calibration=parts["val"], batch_size=args.batch,
                   executor=executor)
    return time.perf_counter() - start, report


def load() -> float:
    return os.getloadavg()[0]


def run_ray(args: argparse.Namespace, parts: dict[str, Any], cpus: int,
            local_records: list[Any]) -> dict[str, Any]:
    ray = import_ray()
    before, start = load(), time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    # the workers' first import of torch and basin: paid once per cluster, not per grid
    ray.get([ray.remote(_warm).options(num_cpus=1).remote() for _ in range(cpus)])
    startup = time.perf_counter() - start
    try:
        executor = RayExecutor(resources=Resources(num_gpus=0.0))
        wall, report = timed_audit(args, parts, executor)
        # Ray's own cost per cell: cells that do nothing, with the same shared objects
        noop = [Cell(condition="noop", params={"i": i}) for i in range(args.noop_cells)]
        start = time.perf_counter()
        run_grid(noop, _noop, shared=parts, executor=executor)
        per_noop = (time.perf_counter() - start) / max(1, args.noop_cells)
    finally:
        ray.shutdown()
    return {"wall_s": wall, "startup_s": startup, "load_before": before,
            "identical": report.records == local_records, "noop_cell_s": per_noop}


def _noop(cell: Cell, shared: Any) -> list[Any]:
    return []


def _warm() -> int:
    import basin.robustness.audit_attacks  # noqa: F401  (what every cell imports)

    return os.getpid()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", type=Path, default=None,
                        help="trained backbone folder [default: an untrained airbench]")
    parser.add_argument("--n", type=int, default=64, help="inputs per side")
    parser.add_argument("--batch", type=int, default=16, help="inputs per cell")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps")
    parser.add_argument("--mirror", default=None)
    parser.add_argument("--local-threads", type=int, nargs="+", default=[1],
                        help="torch threads of the local runs (1 is the row the speed-ups "
                             "compare with; 2 adds torch's own parallelism, which stalls on "
                             "a machine shared with other jobs)")
    parser.add_argument("--noop-cells", type=int, default=200,
                        help="empty cells timed on Ray: its overhead per cell")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON")
    args = parser.parse_args()
    if min(args.n, args.batch, args.steps) < 1:
        parser.error("--n, --batch and --steps must be >= 1")
    model, source = system(args.backbone)
    cifar = load_dataset("cifar10", "test", mirror=args.mirror).subset(args.n, seed=0)
    val = load_dataset("cifar10", "val", mirror=args.mirror).subset(256, seed=0)
    fmnist = load_dataset("fashion-mnist", "test", mirror=args.mirror).subset(args.n, seed=0)
    parts = {"model": model, "detector": MSPDetector(model), "id": cifar,
             "ood": {"fashion-mnist": to_cifar_shape(fmnist.images)}, "val": val.images}
    cells = 2 * (4 + 1) * -(-args.n // args.batch)
    rows: dict[str, dict[str, Any]] = {}
    local_records: list[Any] = []
    for threads in sorted(set([1, *args.local_threads])):
        torch.set_num_threads(threads)
        before = load()
        wall, report = timed_audit(args, parts, "local")
        rows[f"local ({threads} thread{'s' * (threads > 1)})"] = {
            "wall_s": wall, "load_before": before,
            "identical": threads == 1 or report.records == local_records}
        print(f"local, {threads} thread(s): {wall:.1f} s", flush=True)
        local_records = local_records or report.records
    torch.set_num_threads(1)
    for cpus in (1, 2):
        rows[f"ray-{cpus}"] = run_ray(args, parts, cpus, local_records)
        print(f"ray, {cpus} worker(s): {rows[f'ray-{cpus}']['wall_s']:.1f} s", flush=True)
    local = rows["local (1 thread)"]["wall_s"]
    summary = {"cells": cells, "speedup_ray2_vs_local": local / rows["ray-2"]["wall_s"],
               "speedup_ray2_vs_ray1": rows["ray-1"]["wall_s"] / rows["ray-2"]["wall_s"],
               "overhead_per_cell_s": (rows["ray-1"]["wall_s"] - local) / cells,
               "noop_cell_s_ray1": rows["ray-1"]["noop_cell_s"],
               "noop_cell_s_ray2": rows["ray-2"]["noop_cell_s"],
               "nice": os.nice(0),
               "backbone": source, "n": args.n, "batch": args.batch, "steps": args.steps,
               "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine()}
    print(f"attack grid: {cells} cells (2 eps x 5 attacks x {args.n}/{args.batch} shards), "
          f"PGD-{args.steps}, {source}")
    print(f"{'executor':<18} {'grid wall s':>11} {'ray start s':>11} {'load avg':>8} "
          f"{'same records':>12}")
    for name, row in rows.items():
        start = f"{row['startup_s']:.1f}" if "startup_s" in row else "-"
        print(f"{name:<18} {row['wall_s']:>11.1f} {start:>11} {row['load_before']:>8.2f} "
              f"{row['identical']!s:>12}")
    print(f"speed-up ray-2 vs local (1 thread): {summary['speedup_ray2_vs_local']:.2f}x; "
          f"vs ray-1: {summary['speedup_ray2_vs_ray1']:.2f}x")
    print(f"Ray overhead per cell: (ray-1 - local) / cells = "
          f"{summary['overhead_per_cell_s'] * 1000:.0f} ms; an empty cell takes "
          f"{summary['noop_cell_s_ray1'] * 1000:.1f} ms (1 worker), "
          f"{summary['noop_cell_s_ray2'] * 1000:.1f} ms (2 workers)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
