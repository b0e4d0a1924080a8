"""A training run's folder: what it holds, refusing to clobber it, and loading it back.

Layout of ``DIR``:

- ``config.json``: ``{"model": net.config(), "train": TrainConfig.to_dict(), "run":
  run_record(...)}``, written when the run starts (with the data checksums and versions);
- ``history.json``: per stage, per epoch losses, validation accuracy and wall time, rewritten
  after every epoch;
- ``checkpoint/``: the per-epoch training state (``basin.training.checkpoint``), removed once
  the run is complete;
- ``model.safetensors``: the trained network (its ``state_dict``), written at the end;
  ``model.safetensors.json`` beside it records its sha256, checked on every load;
- ``metrics.json``: test accuracy, test loss terms and wall time, written last, so its
  presence means "complete".

Everything is safetensors or JSON (never pickle) and written atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from basin.models.attractor import AttractorNet
from basin.models.factory import AnyAttractor, build_attractor
from basin.utils.device import resolve_device
from basin.utils.io import CheckpointError, load_state_dict_strict, load_tensors, read_json

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoint"
_RUN_ENTRIES = (CONFIG_FILE, HISTORY_FILE, MODEL_FILE, METRICS_FILE, CHECKPOINT_DIR)


class RunExistsError(RuntimeError):
    """The output folder already holds a (finished or partial) run."""


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def history(self) -> Path:
        return self.root / HISTORY_FILE

    @property
    def model(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT_DIR

    def existing(self) -> list[str]:
        """Names of run files already in the folder."""
        return [name for name in _RUN_ENTRIES if (self.root / name).exists()]

    def is_complete(self) -> bool:
        return self.metrics.is_file() and self.model.is_file()


def run_status(out_dir: str | os.PathLike[str]) -> str:
    """``"empty"`` (nothing of a run there), ``"partial"`` or ``"complete"``."""
    paths = RunPaths(Path(out_dir))
    if not paths.existing():
        return "empty"
    return "complete" if paths.is_complete() else "partial"


def ensure_can_start(out_dir: str | os.PathLike[str], resume: bool) -> str:
    """Refuse (RunExistsError) to start over a run unless resuming; return the status."""
    status = run_status(out_dir)
    if status != "empty" and not resume:
        found = ", ".join(RunPaths(Path(out_dir)).existing())
        raise RunExistsError(
            f"{out_dir}: already holds a {status} run ({found}); pass --resume to continue "
            f"it, or choose another output folder (nothing was overwritten)")
    return status


def read_run_config(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's ``config.json``, checked to have its three sections."""
    path = RunPaths(Path(out_dir)).config
    config = read_json(path)
    if not isinstance(config, dict) or not {"model", "train"} <= set(config):
        raise CheckpointError(f"{path}: not a basin run config (needs 'model' and 'train')")
    return config


@dataclass
class LoadedRun:
    """A trained network (in eval mode) with its run's config and test metrics."""

    net: AnyAttractor
    config: dict[str, Any]
    metrics: dict[str, Any] | None

    def mlp(self) -> AttractorNet:
        """The network as the paper's MLP; CheckpointError if the run holds another one
        (the paper's training, Jacobians and evaluation are written for the MLP)."""
        if not isinstance(self.net, AttractorNet):
            raise CheckpointError(f"run holds a {type(self.net).__name__}, not the paper's "
                                  f"AttractorNet (MLP) this needs")
        return self.net


def load_run(out_dir: str | os.PathLike[str],
             device: str | torch.device | None = None) -> LoadedRun:
    """Rebuild the network of a finished run from ``config.json`` + ``model.safetensors``.

    ``device`` None means CPU, so that loading never moves weights to a GPU unasked.
    Raises CheckpointError naming the file when one is missing, truncated, or holds tensors
    that do not fit the model config; ``metrics`` is None when ``metrics.json`` is absent.
    """
    paths = RunPaths(Path(out_dir))
    if not paths.root.is_dir():
        raise CheckpointError(f"{paths.root}: run folder not found")
    config = read_run_config(paths.root)
    try:
        net = build_attractor(config["model"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{paths.config}: invalid model config ({exc})") from exc
    load_state_dict_strict(net, load_tensors(paths.model), paths.model)
    metrics = read_json(paths.metrics) if paths.metrics.is_file() else None
    target = torch.device("cpu") if device is None else resolve_device(str(device))
    return LoadedRun(net.to(target).eval(), config, metrics)
