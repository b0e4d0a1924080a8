"""Reproduction of Mulé & Shaner (feature reconstruction + MSP) on CIFAR-10, end to end.

``protocol`` (constants, plans, the per-backbone result type) -> ``run`` (backbones,
detectors, scores, attacks) -> ``tables`` (tables and summary as data) -> ``report`` (HTML,
Markdown, results.json); :func:`reproduce_feature_recon_paper` runs them in order. Plans:
``full`` (the default recipe), ``quick`` (minutes; fewer PGD steps, labelled) and ``tiny``
(the integration test's, seconds).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from basin.reproductions.feature_recon.attack_grid import Execution
from basin.reproductions.feature_recon.protocol import DETECTORS, BackboneRun, Plan
from basin.reproductions.feature_recon.report import write_feature_recon_report
from basin.reproductions.feature_recon.run import run_feature_recon_paper


def reproduce_feature_recon_paper(out_dir: str | os.PathLike[str], *, plan: str = "full",
                                  seed: int = 0, mirror: str | os.PathLike[str] | None = None,
                                  device: torch.device | None = None,
                                  backbone_dir: str | os.PathLike[str] | None = None,
                                  attack_precision: str | None = None,
                                  executor: str = "local", ray_address: str | None = None,
                                  progress: bool = True,
                                  changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the whole reproduction (``plan``: full, quick, tiny); returns results.json's dict.

    ``attack_precision`` (``auto``, ``bf16``, ``fp32``) overrides the plan's precision of the
    PGD and Square search steps; metrics are always scored in fp32. ``changes`` overrides
    other :class:`Plan` fields (e.g. ``{"label_smoothing": 0.0, "attacks": False}``).
    ``executor`` (``local`` or ``ray``, at ``ray_address``) runs the attack stage's cells
    (the same records).
    """
    the_plan, runs, record = run_feature_recon_paper(
        out_dir, plan=plan, seed=seed, mirror=mirror, device=device, backbone_dir=backbone_dir,
        attack_precision=attack_precision, progress=progress,
        execution=Execution(executor, ray_address), changes=changes)
    return write_feature_recon_report(Path(out_dir), the_plan, runs, record)


__all__ = ["DETECTORS", "BackboneRun", "Plan", "reproduce_feature_recon_paper",
           "run_feature_recon_paper", "write_feature_recon_report"]
