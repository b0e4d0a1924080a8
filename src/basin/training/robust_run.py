"""Loading what a robust training run needs, and the entry point of ``basin train
--preset attractor-robust`` (kept here so that the command line stays a thin layer).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from basin.data.outliers import OutlierPool, omniglot_parts
from basin.training.config import TrainConfig
from basin.training.data import TrainData, load_train_data
from basin.training.robust import as_images, train_robust
from basin.training.robust_config import ROBUST_PRESETS, RobustConfig
from basin.training.run import read_run_config, run_status
from basin.utils.io import read_json

# command-line TrainConfig fields that mean the same for a robust run (``max_epochs``
# becomes ``epochs``); every other option is refused rather than silently ignored
CLI_FIELDS = {"dataset": "dataset", "train_size": "train_size", "val_size": "val_size",
              "widths": "widths", "output_activation": "output_activation",
              "batch_size": "batch_size", "max_epochs": "epochs", "seed": "seed"}


def load_robust_inputs(config: RobustConfig, *, mirror: str | os.PathLike[str] | None = None,
                       with_test: bool = True) -> tuple[TrainData, OutlierPool]:
    """The run's digits (train / val / test splits as ``basin train`` cuts them) and its
    outlier pool (synthetic sources from the *training* digits, plus the Omniglot
    background drawings for MNIST)."""
    base = TrainConfig(dataset=config.dataset, train_size=config.train_size,
                       val_size=config.val_size, widths=config.widths, seed=config.seed)
    data = load_train_data(base, mirror=mirror, with_test=with_test)
    background = omniglot_parts(mirror)[0] if config.dataset == "mnist" else None
    pool = OutlierPool(as_images(data.train_x), data.train_y, omniglot_background=background)
    return data, pool


def is_robust_run(out_dir: str | os.PathLike[str]) -> bool:
    """Whether ``out_dir`` holds (part of) a robust training run."""
    if run_status(out_dir) == "empty":
        return False
    return read_run_config(out_dir).get("kind") == "robust"


def robust_config_for(preset_name: str | None, out_dir: str | Path, resume: bool,
                      changes: dict[str, Any]) -> RobustConfig:
    """The preset (or, on resume, the stored config) with the command-line ``changes``
    (TrainConfig field names) applied; ValueError for options a robust run has not."""
    unknown = sorted(set(changes) - set(CLI_FIELDS))
    if unknown:
        raise ValueError(f"options {unknown} do not apply to a robust run (it accepts "
                         f"{sorted(CLI_FIELDS)})")
    mapped = {CLI_FIELDS[k]: v for k, v in changes.items()}
    if resume and is_robust_run(out_dir):
        base = RobustConfig.from_dict(read_run_config(out_dir)["train"])
        config = base.replace(**mapped)
        diff = base.differences(config)
        if diff:
            raise ValueError(f"--resume: options differ from the stored run: {diff}")
        return config
    if preset_name not in ROBUST_PRESETS:
        raise ValueError(f"preset: unknown robust preset {preset_name!r}; choose from "
                         f"{sorted(ROBUST_PRESETS)}")
    return ROBUST_PRESETS[preset_name].replace(**mapped)


def run_robust(config: RobustConfig, out_dir: str | Path, *, resume: bool = False,
               mirror: str | os.PathLike[str] | None = None, quiet: bool = False
               ) -> dict[str, Any]:
    """Load the inputs and train (or finish) the run in ``out_dir``; return its metrics."""
    if run_status(out_dir) == "complete":
        return read_json(Path(out_dir) / "metrics.json")
    data, pool = load_robust_inputs(config, mirror=mirror)
    return train_robust(config, data, pool, out_dir, resume=resume,
                        log=None if quiet else _echo)


def _echo(line: str) -> None:
    print(line, flush=True)
