"""Issue 14 part 1: an ablation over the attractor paper's unstated choices ("readings").

``protocol`` (readings, plan, targets) -> ``run`` (train or reuse, measure; a grid of
cells through :func:`basin.distributed.run_grid`) -> ``tables`` (means over seeds, gaps to
the paper, verdicts) -> ``report``. :func:`reproduce_attractor_ablation` runs them in order.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from basin.data import mirror_checksums
from basin.reproductions.attractor_ablation.protocol import (
    ID_DATASET,
    OOD_SETS,
    READING_NAMES,
    READINGS,
    AblationPlan,
    Reading,
)
from basin.reproductions.attractor_ablation.report import write_ablation_report
from basin.reproductions.attractor_ablation.run import (
    AblationShared,
    measure_cell,
    measure_network,
    run_ablation,
)
from basin.utils.runinfo import run_record


def reuse_map(folder: str | os.PathLike[str] | None, seed: int) -> dict[str, dict[int, str]]:
    """A ``basin reproduce attractor-paper`` folder's runs as the exact-Jacobian literal
    reading's and the baseline's seed-``seed`` cells (used only where their configs match)."""
    if folder is None:
        return {}
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"--reuse: {root} is not a folder")
    return {"literal-exact": {seed: str(root / "attractor")},
            "baseline": {seed: str(root / "baseline")}}


def reproduce_attractor_ablation(out_dir: str | os.PathLike[str], *, plan: AblationPlan,
                                 mirror: str | os.PathLike[str] | None = None,
                                 device: torch.device | None = None,
                                 reuse: str | os.PathLike[str] | None = None,
                                 executor: str = "local", ray_address: str | None = None,
                                 progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the grid and write the report; returns results.json's content."""
    out = Path(out_dir)
    shared = AblationShared(plan=plan, out_dir=str(out),
                            mirror=None if mirror is None else str(mirror),
                            device=str(device or torch.device("cpu")), progress=progress,
                            reuse=reuse_map(reuse, plan.seed))
    start = time.perf_counter()
    records = run_ablation(shared, executor=executor, ray_address=ray_address)
    run = run_record({"plan": plan.to_json(), "device": shared.device,
                      "threads": torch.get_num_threads(), "executor": executor},
                     plan.seed, mirror_checksums((ID_DATASET, *OOD_SETS), mirror=mirror))
    run["wall_time_s"] = time.perf_counter() - start
    return write_ablation_report(out, plan, records, run)


__all__ = ["READINGS", "READING_NAMES", "AblationPlan", "AblationShared", "Reading",
           "measure_cell", "measure_network", "reproduce_attractor_ablation", "reuse_map",
           "run_ablation", "write_ablation_report"]
