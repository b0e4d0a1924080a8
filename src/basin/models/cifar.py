"""CIFAR-10 backbones: shared input handling, the registry, and saving/loading a trained one.

Two architectures implement :class:`~basin.models.feature_classifier.FeatureClassifier`:

* ``"airbench"`` (:class:`~basin.models.airbench.AirbenchNet`, the default): the 8-layer
  convnet of Keller Jordan's airbench94, fast enough to train to ~94% on a CPU;
* ``"resnet18"`` (:class:`~basin.models.resnet.ResNet18`): the CIFAR variant of ResNet-18,
  for machines with a GPU.

Every backbone takes float32 images in [0, 1] of shape (N, 3, 32, 32) and normalises them
inside (:class:`~basin.models.normalization.CifarNormalize`), so attacks and detectors work
in pixel space; ``features`` is the penultimate pooled vector, ``logits_from_features`` the
final linear map, and ``config()`` a JSON-able dict that :func:`build_backbone` turns back
into the same model.

A trained backbone is a folder: ``model.safetensors`` (weights, with the architecture name in
its metadata) and ``config.json`` (``{"model": model.config(), ...}``), written by
:func:`save_backbone` and read back by :func:`load_backbone`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from basin.models.airbench import AirbenchNet
from basin.models.normalization import (
    CIFAR_MEAN,
    CIFAR_SHAPE,
    CIFAR_STD,
    CifarNormalize,
    check_cifar_images,
)
from basin.models.resnet import ResNet18
from basin.utils.io import (
    CheckpointError,
    atomic_write_json,
    load_state_dict_strict,
    load_tensors,
    read_json,
    save_tensors,
)

# re-exported: the input handling lived here before it moved below the architectures
__all__ = ["CIFAR_MEAN", "CIFAR_SHAPE", "CIFAR_STD", "CONFIG_FILE", "WEIGHTS_FILE",
           "CifarNormalize", "backbone_names", "build_backbone", "build_from_config",
           "check_cifar_images", "load_backbone", "save_backbone"]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def _registry() -> dict[str, Callable[..., nn.Module]]:
    return {"airbench": AirbenchNet, "resnet18": ResNet18}


def backbone_names() -> list[str]:
    return sorted(_registry())


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """A fresh backbone ``name`` (see :func:`backbone_names`) built with ``kwargs``.

    ``build_backbone(**model.config())`` rebuilds ``model``'s architecture (the config holds
    the name under ``"arch"``).
    """
    registry = _registry()
    if name not in registry:
        raise ValueError(f"arch: unknown backbone {name!r}; choose from {backbone_names()}")
    try:
        return registry[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"arch {name!r}: bad options {sorted(kwargs)} ({exc})") from exc


def build_from_config(config: Mapping[str, Any]) -> nn.Module:
    if not isinstance(config, Mapping) or "arch" not in config:
        raise ValueError(f"model config: expected a dict with an 'arch' entry, got {config!r}")
    options = {k: v for k, v in config.items() if k != "arch"}
    return build_backbone(str(config["arch"]), **options)


def save_backbone(model: nn.Module, directory: str | os.PathLike[str],
                  extra: Mapping[str, Any] | None = None) -> None:
    """Write ``model.safetensors`` and ``config.json`` (``{"model": config, **extra}``)."""
    config = _model_config(model)
    directory = Path(directory)
    save_tensors(directory / WEIGHTS_FILE, model.state_dict(),
                 metadata={"arch": str(config["arch"]), "config": json.dumps(config)})
    atomic_write_json(directory / CONFIG_FILE, {**dict(extra or {}), "model": config})


def load_backbone(directory: str | os.PathLike[str],
                  device: str | torch.device | None = None) -> nn.Module:
    """Rebuild the backbone saved in ``directory``, in ``eval()`` mode, on ``device`` (CPU).

    Raises :class:`~basin.utils.io.CheckpointError` naming the file when a file is missing,
    truncated, or its weights do not match the architecture recorded in ``config.json``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: backbone folder not found")
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    config = read_json(config_path)
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{config_path}: no 'model' entry (expected the dict written "
                              "by save_backbone)")
    try:
        model = build_from_config(config["model"])
    except ValueError as exc:
        raise CheckpointError(f"{config_path}: {exc}") from exc
    tensors = load_tensors(weights_path)
    arch = _weights_arch(weights_path)
    if arch is not None and arch != config["model"]["arch"]:
        raise CheckpointError(f"{weights_path}: weights of a {arch!r} backbone, but "
                              f"{config_path} describes {config['model']['arch']!r}")
    load_state_dict_strict(model, tensors, weights_path)
    model.eval()
    return model.to(torch.device(device) if device is not None else torch.device("cpu"))


def _weights_arch(path: Path) -> str | None:
    with safe_open(str(path), framework="pt") as handle:
        return (handle.metadata() or {}).get("arch")


def _model_config(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if not callable(config):
        raise TypeError(f"model: {type(model).__name__} has no config() method; only "
                        f"backbones built by build_backbone can be saved")
    result = config()
    if not isinstance(result, dict) or "arch" not in result:
        raise TypeError(f"model: {type(model).__name__}.config() must return a dict with "
                        "an 'arch' entry")
    return result
