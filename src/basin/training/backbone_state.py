"""Backbone training state: the lookahead average and per-epoch checkpoints for resume.

A checkpoint folder holds ``state.safetensors`` (model weights and buffers under ``model.``,
SGD momentum buffers under ``momentum.<parameter name>``, the lookahead average under
``ema.``; the epoch in its metadata) and ``state.json`` (epoch, history, training seconds and
the training config). The JSON is written last, and both record the epoch, so a crash between
the two writes is detected rather than silently mixing two epochs. The tensors are checked
against their sha256 record (``state.safetensors.json``, see :mod:`basin.utils.io`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from basin.utils.io import (
    CheckpointError,
    atomic_write_json,
    load_state_dict_strict,
    read_json,
    read_tensors,
    save_tensors,
)

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


class Lookahead:
    """An average of the floating-point state that the model is periodically reset to.

    ``update(model, decay)``: ``avg <- decay * avg + (1 - decay) * current``, then the model
    takes ``avg`` (weights and batch-norm statistics alike). With ``decay = 0`` it is a no-op
    on the model; with ``decay = 1`` the model returns to the average.
    """

    def __init__(self, model: nn.Module) -> None:
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items()
                        if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay: must be in [0, 1], got {decay}")
        for key, value in model.state_dict().items():
            if key in self.average:
                self.average[key].lerp_(value, 1.0 - decay)
                value.copy_(self.average[key])


def _momentum_buffers(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    buffers = {}
    for name, param in model.named_parameters():
        buffer = optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            buffers[f"momentum.{name}"] = buffer
    return buffers


def save_state(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               lookahead: Lookahead | None, epoch: int, history: list[dict[str, Any]],
               train_seconds: float, training: Mapping[str, Any]) -> None:
    """Write the state after ``epoch`` epochs to ``directory`` (atomically, file by file)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(_momentum_buffers(model, optimizer))
    if lookahead is not None:
        tensors.update({f"ema.{k}": v for k, v in lookahead.average.items()})
    save_tensors(directory / STATE_TENSORS, tensors, metadata={"epoch": str(epoch)})
    atomic_write_json(directory / STATE_JSON, {
        "epoch": epoch, "history": history, "train_seconds": train_seconds,
        "training": dict(training)})


def load_state(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               lookahead: Lookahead | None, training: Mapping[str, Any]
               ) -> tuple[int, list[dict[str, Any]], float]:
    """Restore a checkpoint into ``model``, ``optimizer`` and ``lookahead``.

    Returns (epochs done, history, training seconds so far). Raises
    :class:`~basin.utils.io.CheckpointError` if the files are damaged, disagree with each
    other, or were written with a different training config.
    """
    json_path, tensor_path = directory / STATE_JSON, directory / STATE_TENSORS
    meta = read_json(json_path)
    if not isinstance(meta, dict) or not {"epoch", "history", "training"} <= set(meta):
        raise CheckpointError(f"{json_path}: missing epoch/history/training entries")
    if meta["training"] != dict(training):
        changed = sorted(k for k in set(meta["training"]) | set(training)
                         if meta["training"].get(k) != training.get(k))
        raise CheckpointError(f"{json_path}: written with a different training config "
                              f"(differs in {changed}); resume with the same options or "
                              "start a new run folder")
    tensors, metadata = read_tensors(tensor_path)
    _check_epoch(tensor_path, metadata.get("epoch"), int(meta["epoch"]))
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    load_state_dict_strict(model, model_state, tensor_path)
    params = dict(model.named_parameters())
    for key, value in tensors.items():
        if key.startswith("momentum."):
            name = key[len("momentum."):]
            if name not in params:
                raise CheckpointError(f"{tensor_path}: momentum for unknown parameter {name!r}")
            optimizer.state[params[name]]["momentum_buffer"] = value.to(params[name].device)
    if lookahead is not None:
        for key in lookahead.average:
            if f"ema.{key}" not in tensors:
                raise CheckpointError(f"{tensor_path}: no lookahead average for {key!r}")
            lookahead.average[key].copy_(tensors[f"ema.{key}"])
    return int(meta["epoch"]), list(meta["history"]), float(meta.get("train_seconds", 0.0))


def _check_epoch(path: Path, stored: str | None, epoch: int) -> None:
    if stored != str(epoch):
        raise CheckpointError(f"{path}: holds epoch {stored}, but {path.parent / STATE_JSON} "
                              f"says {epoch} (interrupted while saving?); delete the "
                              "checkpoint folder to restart")
