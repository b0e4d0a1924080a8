"""Reproduction of the attractor paper (Alipour & SeyyedSalehi): train, evaluate, report.

``protocol`` (constants, plan, result types) -> ``run`` (training and evaluation) ->
``tables`` (tables and summary as data) -> ``report`` (HTML, Markdown, results.json);
:func:`reproduce_attractor_paper` runs the last three in order. ``--quick`` shrinks every part
(training images and epochs, test inputs, attack steps) so the whole pipeline runs in
minutes; its report says so at the top.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from basin.reproductions.attractor.protocol import NetworkResults, ReproductionPlan
from basin.reproductions.attractor.report import write_attractor_report
from basin.reproductions.attractor.run import run_attractor_paper, train_or_reuse


def reproduce_attractor_paper(out_dir: str | os.PathLike[str], *, quick: bool = False,
                              seed: int = 0, plan: ReproductionPlan | None = None,
                              mirror: str | os.PathLike[str] | None = None,
                              device: torch.device | None = None,
                              progress: bool = True) -> dict[str, Any]:
    """Run the whole reproduction; returns the results dict also written to results.json."""
    the_plan, networks, record = run_attractor_paper(out_dir, quick=quick, seed=seed, plan=plan,
                                                     mirror=mirror, device=device,
                                                     progress=progress)
    return write_attractor_report(Path(out_dir), the_plan, networks, record)


__all__ = ["NetworkResults", "ReproductionPlan", "reproduce_attractor_paper",
           "run_attractor_paper", "train_or_reuse", "write_attractor_report"]
