"""Per-epoch checkpoint of a robust training run (network + Adam state), for ``--resume``.

Data order, attack starts and outlier draws come from generators seeded by (seed, epoch),
so the network, the optimiser's moments and the epoch counter are the whole state.
Two files, ``checkpoint/state.safetensors`` and ``checkpoint/state.json``, tied together by a
``checkpoint_id`` so that a pair torn by a crash between the two writes is detected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from basin.utils.io import (
    CheckpointError,
    atomic_write_json,
    load_state_dict_strict,
    load_tensors,
    read_json,
    save_tensors,
)

TENSORS = "state.safetensors"
STATE = "state.json"


def save_state(folder: Path, net: nn.Module, optimizer: torch.optim.Adam,
               state: dict[str, Any]) -> None:
    """Write the network, Adam's moments and ``state`` (epoch, history, wall time)."""
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    opt = optimizer.state_dict()
    for index, slot in opt["state"].items():
        for key, value in slot.items():
            tensors[f"opt.{index}.{key}"] = torch.as_tensor(value)
    checkpoint_id = int(state.get("checkpoint_id", 0)) + 1
    state = {**state, "checkpoint_id": checkpoint_id}
    save_tensors(folder / TENSORS, tensors, {"checkpoint_id": str(checkpoint_id)})
    atomic_write_json(folder / STATE, state)


def load_state(folder: Path, net: nn.Module, optimizer: torch.optim.Adam) -> dict[str, Any]:
    """Restore what ``save_state`` wrote into ``net`` and ``optimizer``; return ``state``."""
    state = read_json(folder / STATE)
    tensors = load_tensors(folder / TENSORS)
    net_tensors = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    load_state_dict_strict(net, net_tensors, folder / TENSORS)
    opt = optimizer.state_dict()
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
    if slots and len(slots) != len(opt["param_groups"][0]["params"]):
        raise CheckpointError(f"{folder / TENSORS}: optimiser state for {len(slots)} "
                              f"parameters, the model has "
                              f"{len(opt['param_groups'][0]['params'])}")
    opt["state"] = slots
    optimizer.load_state_dict(opt)
    if not isinstance(state, dict) or "epoch" not in state:
        raise CheckpointError(f"{folder / STATE}: not a robust training state")
    with safe_open(str(folder / TENSORS), "pt") as handle:
        tensor_id = (handle.metadata() or {}).get("checkpoint_id")
    if tensor_id != str(state.get("checkpoint_id")):
        raise CheckpointError(f"{folder}: {TENSORS} (id {tensor_id}) and {STATE} (id "
                              f"{state.get('checkpoint_id')}) come from different epochs")
    return state
