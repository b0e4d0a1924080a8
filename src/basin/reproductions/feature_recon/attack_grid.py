"""The reproduction's attack stage as a grid: one cell per detector (:mod:`basin.distributed`).

The attack stage (PGD and Square through every detector's own score) is most of the
reproduction's time, and each detector's attacks are independent of the others': one
:class:`~basin.distributed.Cell` per (backbone, detector), run by the local executor (the
default: the same loop as before, the same numbers) or as Ray tasks (``executor="ray"``);
the backbone, the detectors and the attacked inputs are put in Ray's object store once.
Each cell's records stream into ``cells_dir`` as it finishes, so an interrupted run's rerun
attacks only the detectors not finished before. The seeds are those of
:func:`~basin.robustness.detector_level.detector_robustness` (from the settings, not from
the order), so the records do not depend on which worker attacks which detector.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from basin.detectors import Detector
from basin.distributed import Cell, run_cells
from basin.robustness.detector_level import (
    DetectorRobustness,
    RobustnessSettings,
    detector_robustness,
)
from basin.robustness.records import Record

SANITY = "sanity_flags"
"""The metric of the record that carries a detector's sanity flags through the grid."""


@dataclass(frozen=True)
class Execution:
    """Where the attack cells run: ``local`` (default) or ``ray`` (at ``ray_address``, or a
    local Ray started for the stage)."""

    executor: str = "local"
    ray_address: str | None = None


LOCAL = Execution()

@dataclass
class AttackStage:
    """What every cell reads: the detectors (thresholds set), the inputs, the settings."""

    detectors: dict[str, Detector]
    x_id: Tensor
    x_ood: Tensor
    settings: RobustnessSettings
    id_name: str
    ood_name: str


def detector_cell(cell: Cell, stage: AttackStage) -> list[Record]:
    """One detector's records under attack, its sanity flags as a last record."""
    result = detector_robustness(stage.detectors[cell.detector], stage.x_id, stage.x_ood,
                                 stage.settings, id_name=stage.id_name,
                                 ood_name=stage.ood_name)
    flags = Record("sanity", "none", 0.0, stage.id_name, "none", SANITY, None,
                   {"flags": list(result.sanity), "n_id": result.n_id, "n_ood": result.n_ood})
    return [*result.records, flags]


def _from_cell(name: str, records: list[Record]) -> DetectorRobustness:
    *results, flags = records
    if flags.metric != SANITY:
        raise ValueError(f"detector {name!r}: its cell has no sanity record")
    return DetectorRobustness(name, int(flags.extra["n_id"]), int(flags.extra["n_ood"]),
                              results, [str(f) for f in flags.extra["flags"]])


def _fingerprint(stage: AttackStage, model_id: str) -> dict[str, Any]:
    """What the cells read beyond their keys: a rerun into the same folder must match."""
    digest = hashlib.sha256()
    for x in (stage.x_id, stage.x_ood):
        digest.update(x.detach().cpu().contiguous().numpy().tobytes())
    return {"format": "basin.feature-recon-attacks/1", "model": model_id,
            "inputs_sha256": digest.hexdigest(), "settings": asdict(stage.settings),
            "thresholds": {k: repr(d.threshold) for k, d in stage.detectors.items()},
            "sets": [stage.id_name, stage.ood_name]}


def attack_detectors(stage: AttackStage, *, model_id: str, execution: Execution = LOCAL,
                     cells_dir: str | os.PathLike[str] | None = None,
                     progress: bool = False) -> dict[str, DetectorRobustness]:
    """Every detector of ``stage`` attacked, one cell each; by detector, in their order.

    ``model_id`` names the backbone in the cell keys (its sha256 in the reproduction). The
    cells go to a subfolder of ``cells_dir`` named by what they read (backbone, thresholds,
    inputs, settings), so a rerun with refitted detectors starts afresh beside the old one.
    """
    cells = [Cell(model=model_id, detector=name, condition="detector-robustness")
             for name in stage.detectors]
    config = _fingerprint(stage, model_id)
    folder = None
    if cells_dir is not None:
        text = json.dumps(config, sort_keys=True, default=str).encode()
        folder = Path(cells_dir) / f"{stage.id_name}-{hashlib.sha256(text).hexdigest()[:12]}"
    per_cell = run_cells(cells, detector_cell, shared=stage, executor=execution.executor,
                         ray_address=execution.ray_address, out_dir=folder, config=config,
                         progress=progress, desc=f"attacks ({stage.id_name})")
    return {c.detector: _from_cell(c.detector, records)
            for c, records in zip(cells, per_cell, strict=True)}
