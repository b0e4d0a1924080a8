"""Work functions for the grid tests: module level, so Ray workers import them by name.

``noisy_sum`` draws from the cell's own seed, so its records change if the seed depends on
anything but the cell; ``shard_means`` computes per-input results on the cell's shard;
``fail_once`` makes the first attempt of each cell fail (a marker file says it ran before),
by raising or by killing its worker process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from basin.distributed import Cell
from basin.robustness.records import Record


def noisy_sum(cell: Cell, shared: dict[str, Any]) -> list[Record]:
    """Per cell: the sum of the shared vector plus seeded noise, as two records."""
    rng = np.random.default_rng(cell.seed(shared["seed"]))
    noise = float(rng.normal())
    total = float(np.sum(shared["x"])) * cell.epsilon + noise
    log = shared.get("log")
    if log is not None:  # one line per call, whichever process makes it
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(cell.key() + "\n")
    stop = shared.get("stop_after")
    if stop is not None and len(Path(log).read_text().splitlines()) > stop:
        raise KeyboardInterrupt("interrupted for the test")
    return [Record(cell.condition, "pgd", cell.epsilon, cell.model, "id", "total", total,
                   {"seed": cell.seed(shared["seed"])}),
            Record(cell.condition, "pgd", cell.epsilon, cell.model, "id", "noise", noise)]


def shard_means(cell: Cell, shared: dict[str, Any]) -> list[Record]:
    """Per input of the shard: x[i] * epsilon + per-input noise seeded by (seed, i)."""
    start, stop = cell.shard or (0, len(shared["x"]))
    values = []
    for i in range(start, stop):
        rng = np.random.default_rng([shared["seed"], i])
        values.append(float(shared["x"][i]) * cell.epsilon + float(rng.normal()))
    return [Record(cell.condition, "pgd", cell.epsilon, "toy", "id", "per_input", None,
                   {"start": start, "values": values})]


def fail_once(cell: Cell, shared: dict[str, Any]) -> list[Record]:
    """The first attempt at each cell fails (``shared["how"]``: "raise" or "exit")."""
    marker = Path(shared["markers"]) / cell.digest()
    if not marker.exists():
        marker.write_text("tried\n")
        if shared["how"] == "exit":
            os._exit(1)  # the worker process dies: Ray retries the task elsewhere
        raise RuntimeError(f"first attempt at {cell.key()} fails")
    return noisy_sum(cell, {"x": shared["x"], "seed": shared["seed"]})


def toy_audit_system() -> dict[str, Any]:
    """A small CNN + MSP on random 3x8x8 images (10 classes): cheap, but with real batches,
    random starts and a calibrated threshold, as basin.audit runs them."""
    import torch  # kept out of the module's import for the record-only tests
    from torch import nn

    from basin.detectors import MSPDetector
    from basin.models.feature_classifier import as_feature_classifier

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 10)).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(20, 3, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)  # its own answers: clean accuracy 1, the attacks lower it
    return {"model": model, "detector": MSPDetector(as_feature_classifier(model)),
            "id": (x, y),
            "ood": {"sq": torch.rand(12, 3, 8, 8, generator=g) ** 2},
            "calibration": torch.rand(30, 3, 8, 8, generator=g)}


def audit_toy(system: dict[str, Any], **kwargs: Any) -> Any:
    """basin.audit of the toy system: two epsilons, the fast suite, batches of 4."""
    from basin.robustness.audit import audit

    options = {"epsilons": (2 / 255, 8 / 255), "attacks": "fast", "n": None, "seed": 3,
               "calibration": system["calibration"], "batch_size": 4} | kwargs
    return audit(system["model"], system["detector"], system["id"], system["ood"], **options)


def toy_attack_stage() -> Any:
    """The feature-recon attack stage on the toy CNN: MSP and energy, thresholds at the
    median clean ID score, two epsilons, PGD-3 and a small Square check."""
    import torch

    from basin.detectors import EnergyDetector, MSPDetector
    from basin.models.feature_classifier import as_feature_classifier
    from basin.reproductions.feature_recon.attack_grid import AttackStage
    from basin.robustness.detector_level import RobustnessSettings

    system = toy_audit_system()
    model = as_feature_classifier(system["model"])
    x_id, x_ood = system["id"][0], system["ood"]["sq"]
    detectors = {"msp": MSPDetector(model), "energy": EnergyDetector(model)}
    for det in detectors.values():
        det.threshold = float(torch.median(det.score_batches(x_id, 8)))
    settings = RobustnessSettings(epsilons=(2 / 255, 8 / 255), steps=3, square_n=4,
                                  square_queries=10, seed=5, batch=8)
    return AttackStage(detectors, x_id, x_ood, settings, "toy-id", "toy-ood")
