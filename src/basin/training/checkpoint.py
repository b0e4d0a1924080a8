"""The per-epoch training checkpoint that ``--resume`` continues from.

Two files in ``DIR/checkpoint/``, each written atomically: ``state.safetensors`` holds every
tensor (the network, the stage heads, the stage's best weights so far and Adam's moment
estimates) and ``state.json`` the small state (stage, epoch, best accuracy, epochs since the
best, history, wall time). Both carry the same ``checkpoint_id``, so a pair that was torn by a
crash between the two writes is detected instead of silently mixing two epochs. The tensors
are checked against their sha256 record (``state.safetensors.json``, see
:mod:`basin.utils.io`), so a damaged byte is refused rather than resumed from.

Nothing random needs saving: data order and projection noise come from generators seeded by
(seed, stage, epoch), so the tensors and counters here are the whole state of a run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from basin.utils.io import (
    CheckpointError,
    atomic_write_json,
    load_tensors,
    read_json,
    save_tensors,
)

TENSORS_FILE = "state.safetensors"
STATE_FILE = "state.json"
_ID_KEY = "checkpoint_id"


@dataclass
class Progress:
    """Where a run stands: ``epoch`` epochs of stage ``stage`` are done."""

    stage: int
    epoch: int = 0
    best_accuracy: float = -1.0
    best_epoch: int = -1
    since_best: int = 0
    finished: bool = False
    wall_s: float = 0.0
    checkpoint_id: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def start_stage(self, index: int) -> None:
        self.stage, self.epoch = index, 0
        self.best_accuracy, self.best_epoch, self.since_best = -1.0, -1, 0


@dataclass
class Checkpoint:
    progress: Progress
    tensors: dict[str, Tensor]
    source: Path

    def module_state(self, prefix: str) -> dict[str, Tensor]:
        """Tensors saved under ``prefix.`` (``net``, ``heads``, ``best.net``, ...)."""
        cut = len(prefix) + 1
        return {k[cut:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}

    def optimizer_state(self) -> dict[int, dict[str, Tensor]]:
        """Adam's per-parameter state, keyed by parameter position (empty at a stage start)."""
        state: dict[int, dict[str, Tensor]] = {}
        for key, value in self.module_state("adam").items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value
        return state


def snapshot(net: nn.Module, heads: nn.Module) -> dict[str, Tensor]:
    """Detached copies of every weight of ``net`` and ``heads`` (the "best so far")."""
    out = {f"net.{k}": v.detach().clone() for k, v in net.state_dict().items()}
    out.update({f"heads.{k}": v.detach().clone() for k, v in heads.state_dict().items()})
    return out


def save_checkpoint(folder: Path, progress: Progress, net: nn.Module, heads: nn.Module,
                    best: dict[str, Tensor] | None, optimizer: torch.optim.Optimizer | None,
                    ) -> None:
    """Write the tensors, then the small state; bumps ``progress.checkpoint_id``."""
    progress.checkpoint_id += 1
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors.update({f"heads.{k}": v for k, v in heads.state_dict().items()})
    for key, value in (best or {}).items():
        tensors[f"best.{key}"] = value
    if optimizer is not None:
        for index, state in optimizer.state_dict()["state"].items():
            for name, value in state.items():
                if not isinstance(value, Tensor):
                    raise TypeError(f"optimizer state {name!r} is not a tensor")
                tensors[f"adam.{index}.{name}"] = value
    tensors[_ID_KEY] = torch.tensor(progress.checkpoint_id, dtype=torch.int64)
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(folder / TENSORS_FILE, tensors)
    atomic_write_json(folder / STATE_FILE, dataclasses.asdict(progress))


def load_checkpoint(folder: Path) -> Checkpoint:
    """Read and cross-check both files; CheckpointError naming the file that is wrong."""
    state_path, tensor_path = folder / STATE_FILE, folder / TENSORS_FILE
    raw = read_json(state_path)
    try:
        progress = Progress(**raw)
    except TypeError as exc:
        raise CheckpointError(f"{state_path}: not a training state ({exc})") from exc
    tensors = load_tensors(tensor_path)
    saved_id = tensors.pop(_ID_KEY, None)
    if saved_id is None or int(saved_id) != progress.checkpoint_id:
        raise CheckpointError(
            f"{tensor_path}: checkpoint id {None if saved_id is None else int(saved_id)} does "
            f"not match {progress.checkpoint_id} in {state_path} (the run was interrupted "
            f"while checkpointing; start it again in a new folder)")
    return Checkpoint(progress, tensors, tensor_path)
