"""Training a CIFAR-10 backbone fast: airbench94's recipe, seeded, on CPU or GPU.

The default recipe (:func:`default_backbone_config` ``("airbench")``) is Keller Jordan's
airbench94 (github.com/KellerJordan/cifar10-airbench, legacy/airbench94.py; its ablations in
KellerJordan/cifar10-zoo credit each ingredient with the epochs it saves), itself built on
tysam-code's hlb-CIFAR10 and David Page's "How to train your ResNet" (2018):

* Nesterov SGD, momentum 0.85, on the *summed* label-smoothed (0.2) cross-entropy of batches
  of 1024; ``lr`` and ``weight_decay`` are per 1024 examples and divided by
  ``1024 * (1 + 1/(1 - momentum))`` so the step size does not depend on the momentum; batch-
  norm biases learn ``bias_scaler`` = 64 times faster (same decay);
* a triangular schedule: the lr factor goes linearly 0.2 -> 1 over the first 20% of the steps,
  then 1 -> 0;
* the whitening layer (:meth:`~basin.models.airbench.AirbenchNet.init_whitening`, computed on
  5,000 training images) keeps its weights frozen and trains its bias for 3 epochs only;
* lookahead: every 5 steps the weights are replaced by an exponential moving average whose
  decay ``0.95**5 * (step/total)**3`` grows from 0 to 0.77, and the final weights are that
  average;
* alternating-flip and 2-pixel translate augmentation, 6-view TTA at test
  (:mod:`basin.training.backbone_aug`).

airbench94 reaches 94.01% (mean of 1000 runs) in 9.9 epochs of 50,000 images. basin trains on
the 45,000-image ``train`` split (``val`` is kept for detector calibration), so the default
runs 12 epochs: 516 steps against airbench94's 475, to make up for the smaller set.

Reduced precision (bf16 autocast) and channels-last memory layout keep a CPU epoch near 100
seconds on 2 AVX-512-BF16 cores. A run is a pure function of ``config.seed`` (data order,
flips and translations are drawn from generators seeded by ``(seed, epoch)``, so a resumed
run sees the same batches); the caller seeds the model's initialisation. In fp32 on one
machine two runs give bit-identical weights.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from basin.data import ImageDataset
from basin.models.cifar import check_cifar_images, save_backbone
from basin.training.backbone_aug import (
    PRECISIONS,
    TTA_LEVELS,
    accuracy,
    augment_batch,
    autocast,
    flip_bits,
    resolve_precision,
)
from basin.training.backbone_state import Lookahead, load_state, save_state
from basin.utils.io import atomic_write_json


@dataclass(frozen=True)
class BackboneConfig:
    """A backbone training recipe; ``lr`` and ``weight_decay`` are per 1024 examples."""

    epochs: int = 12
    batch_size: int = 1024
    lr: float = 11.5
    momentum: float = 0.85
    weight_decay: float = 0.0153
    bias_scaler: float = 64.0
    label_smoothing: float = 0.2
    warmup_fraction: float = 0.2
    lr_start: float = 0.2
    lr_end: float = 0.0
    whiten_bias_epochs: int = 3
    whiten_samples: int = 5000
    lookahead: bool = True
    lookahead_every: int = 5
    lookahead_decay: float = 0.95
    flip: bool = True
    translate: int = 2
    tta_level: int = 2
    precision: str = "auto"
    channels_last: bool = True
    eval_batch_size: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "lookahead_every", "eval_batch_size")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive int, got {value!r}")
        for name in ("lr", "momentum", "weight_decay", "bias_scaler", "label_smoothing",
                     "warmup_fraction", "lr_start", "lr_end", "lookahead_decay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        if self.lr <= 0 or self.bias_scaler <= 0:
            raise ValueError(f"lr and bias_scaler must be > 0, got {self.lr}, {self.bias_scaler}")
        if not self.momentum < 1 or not self.label_smoothing < 1 or self.warmup_fraction > 1:
            raise ValueError("momentum and label_smoothing must be < 1, warmup_fraction <= 1")
        if self.translate < 0 or self.whiten_bias_epochs < 0 or self.whiten_samples < 2:
            raise ValueError("translate and whiten_bias_epochs must be >= 0, whiten_samples >= 2")
        if self.tta_level not in TTA_LEVELS:
            raise ValueError(f"tta_level: expected one of {TTA_LEVELS}, got {self.tta_level!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")

    def replace(self, **changes: Any) -> BackboneConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackboneConfig:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"backbone config: unknown keys {unknown}")
        return cls(**data)


def default_backbone_config(arch: str = "airbench", **changes: Any) -> BackboneConfig:
    """The recipe for ``arch``: airbench94's, or a standard GPU recipe for ResNet-18.

    ResNet-18's (not measured here: it needs a GPU) is the common CIFAR one expressed in the
    same units: Nesterov SGD momentum 0.9, per-example lr equal to 0.1 at batch 128 and weight
    decay 5e-4, label smoothing 0.1, 4-pixel translations, 30 epochs of a triangular
    schedule, no batch-norm lr scaling and no lookahead.
    """
    if arch == "airbench":
        base = BackboneConfig()
    elif arch == "resnet18":
        base = BackboneConfig(epochs=30, batch_size=512, lr=8.8, momentum=0.9,
                              weight_decay=4.4e-3, bias_scaler=1.0, label_smoothing=0.1,
                              warmup_fraction=0.15, whiten_bias_epochs=0, lookahead=False,
                              translate=4, eval_batch_size=500)
    else:
        raise ValueError(f"arch: no default recipe for {arch!r}; choose airbench or resnet18")
    return base.replace(**changes)


def lr_factor(step: int, total: int, config: BackboneConfig) -> float:
    """The triangular schedule's multiplier at ``step`` of ``total``."""
    peak = int(config.warmup_fraction * total)
    return float(np.interp(step, [0, peak, total], [config.lr_start, 1.0, config.lr_end]))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of epoch ``epoch``'s data order and augmentation (``-1``: setup)."""
    state = np.random.SeedSequence([seed, epoch + 1]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0]) & (2**63 - 1))


def _param_groups(model: nn.Module, config: BackboneConfig) -> list[dict[str, Any]]:
    kilostep = 1024 * (1 + 1 / (1 - config.momentum))
    lr = config.lr / kilostep
    decay = config.weight_decay * config.batch_size / kilostep
    norm_ids = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                for p in m.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    norms = [p for p in trainable if id(p) in norm_ids]
    others = [p for p in trainable if id(p) not in norm_ids]
    # torch couples decay to lr; divide so the per-step decay is ``decay`` in both groups
    norm_lr = lr * config.bias_scaler
    return [{"params": norms, "lr": norm_lr, "weight_decay": decay / norm_lr, "base_lr": norm_lr},
            {"params": others, "lr": lr, "weight_decay": decay / lr, "base_lr": lr}]


def _check_split(data: object, name: str, n_classes: int) -> ImageDataset:
    if not isinstance(data, ImageDataset):
        raise TypeError(f"{name}: expected an ImageDataset, got {type(data).__name__}")
    check_cifar_images(data.images, f"{name}.images")
    if len(data) == 0:
        raise ValueError(f"{name}: empty dataset")
    if int(data.labels.min()) < 0 or int(data.labels.max()) >= n_classes:
        raise ValueError(f"{name}: labels must lie in [0, {n_classes}), got range "
                         f"[{int(data.labels.min())}, {int(data.labels.max())}]")
    return data


@dataclass
class _Loop:
    """What every training step needs, set up once per run (see :func:`_setup`)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    lookahead: Lookahead | None
    images: torch.Tensor
    labels: torch.Tensor
    flips: torch.Tensor
    config: BackboneConfig
    device: torch.device
    precision: str
    steps_per_epoch: int
    total: int


def _setup(model: nn.Module, train: ImageDataset, config: BackboneConfig,
           device: torch.device) -> tuple[_Loop, torch.Tensor | None]:
    """Model on ``device``, whitening fitted, flips drawn, optimiser built; and the whitening
    bias (trained for the first epochs only), or None for a model without one."""
    precision = resolve_precision(config.precision, device)
    model.to(device)
    if config.channels_last:
        # torch's stubs omit Module.to(memory_format=...), which it accepts at run time
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    images, labels = train.images.to(device), train.labels.to(device)
    setup = epoch_generator(config.seed, -1)
    whiten = getattr(model, "init_whitening", None)
    if callable(whiten):
        chosen = torch.randperm(len(train), generator=setup)[:config.whiten_samples]
        whiten(train.images[chosen])
    flips = flip_bits(len(train), setup)
    whiten_bias = getattr(getattr(model, "whiten", None), "bias", None)
    optimizer = torch.optim.SGD(_param_groups(model, config), momentum=config.momentum,
                                nesterov=True)
    lookahead = Lookahead(model) if config.lookahead else None
    steps_per_epoch = max(1, len(train) // config.batch_size)
    return _Loop(model, optimizer, lookahead, images, labels, flips, config, device, precision,
                 steps_per_epoch, steps_per_epoch * config.epochs), whiten_bias


def _train_epoch(loop: _Loop, epoch: int, progress: bool) -> tuple[float, int, int, float]:
    """One epoch of steps: ``(summed loss, correct, seen, seconds)``."""
    config, model, device = loop.config, loop.model, loop.device
    generator = epoch_generator(config.seed, epoch)
    order = torch.randperm(len(loop.images), generator=generator)
    model.train()
    tic = time.perf_counter()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(range(loop.steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
               disable=not progress, leave=False)
    for i in bar:
        step = epoch * loop.steps_per_epoch + i
        factor = lr_factor(step, loop.total, config)
        for group in loop.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        idx = order[i * config.batch_size:(i + 1) * config.batch_size]
        x = loop.images[idx.to(device)]
        x = augment_batch(x, loop.flips[idx] if config.flip else None, epoch,
                          config.translate, generator)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = loop.labels[idx.to(device)]
        with autocast(device, loop.precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing,
                               reduction="sum")
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loop.optimizer.step()
        if loop.lookahead is not None and ((step + 1) % config.lookahead_every == 0
                                           or step + 1 == loop.total):
            decay = config.lookahead_decay ** config.lookahead_every
            loop.lookahead.update(model, decay * ((step + 1) / loop.total) ** 3)
        loss_sum += float(loss.detach())
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += len(y)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
    return loss_sum, correct, seen, time.perf_counter() - tic


def train_backbone(model: nn.Module, train: ImageDataset, val: ImageDataset | None,
                   config: BackboneConfig, *, device: str | torch.device = "cpu",
                   out_dir: str | os.PathLike[str] | None = None, progress: bool = True,
                   resume: bool = False, stop_after_epoch: int | None = None,
                   extra_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train ``model`` in place with ``config``; return history, times and val accuracy.

    ``val`` (optional) is scored without TTA after every epoch. With ``out_dir``, the state
    after each epoch goes to ``out_dir/checkpoint`` (``resume=True`` continues from it,
    bit-exactly) and the final model to ``out_dir/model.safetensors`` + ``config.json``
    (``{"model", "training", **extra_config}``) + ``history.json``. ``stop_after_epoch`` ends
    the run early (for time-sliced training); the lookahead average is then not folded in.
    The returned dict has ``history`` (one dict per epoch), ``train_seconds`` (steps only),
    ``wall_seconds``, ``epochs``, ``steps``, ``precision``, ``threads`` and ``val_accuracy``.
    """
    device = torch.device(device)
    n_classes = int(getattr(model, "n_classes", 10))
    train = _check_split(train, "train", n_classes)
    val = None if val is None else _check_split(val, "val", n_classes)
    if not isinstance(config, BackboneConfig):
        raise TypeError(f"config: expected a BackboneConfig, got {type(config).__name__}")
    start_wall = time.perf_counter()
    loop, whiten_bias = _setup(model, train, config, device)
    precision, steps_per_epoch = loop.precision, loop.steps_per_epoch
    history: list[dict[str, Any]] = []
    first_epoch, train_seconds = 0, 0.0
    checkpoint = Path(out_dir) / "checkpoint" if out_dir is not None else None
    if resume and checkpoint is not None and (checkpoint / "state.json").is_file():
        first_epoch, history, train_seconds = load_state(
            checkpoint, model, loop.optimizer, loop.lookahead, config.to_dict())
    last_epoch = config.epochs if stop_after_epoch is None else min(config.epochs,
                                                                     stop_after_epoch)
    for epoch in range(first_epoch, last_epoch):
        if whiten_bias is not None:
            whiten_bias.requires_grad_(epoch < config.whiten_bias_epochs)
        loss_sum, correct, seen, seconds = _train_epoch(loop, epoch, progress)
        train_seconds += seconds
        record = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                  "lr_factor": lr_factor((epoch + 1) * steps_per_epoch, loop.total, config),
                  "train_seconds": train_seconds}
        if val is not None:
            record["val_acc"] = _plain_accuracy(model, val, config, device, precision)
        history.append(record)
        if progress:
            tqdm.write("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in record.items()))
        if checkpoint is not None:
            save_state(checkpoint, model, loop.optimizer, loop.lookahead, epoch + 1, history,
                       train_seconds, config.to_dict())
    finished = last_epoch == config.epochs
    _finish(loop, whiten_bias, finished)
    val_accuracy = (None if val is None
                    else _plain_accuracy(model, val, config, device, precision))
    result = {"history": history, "train_seconds": train_seconds,
              "wall_seconds": time.perf_counter() - start_wall, "epochs": len(history),
              "steps": steps_per_epoch * len(history), "precision": precision,
              "threads": torch.get_num_threads(), "val_accuracy": val_accuracy,
              "finished": finished}
    if out_dir is not None and finished:
        save_backbone(model, out_dir, {**dict(extra_config or {}),
                                       "training": config.to_dict()})
        atomic_write_json(Path(out_dir) / "history.json", history)
    return result


def _finish(loop: _Loop, whiten_bias: torch.Tensor | None, finished: bool) -> None:
    """Fold in the lookahead average (finished runs), unfreeze, back to the default layout."""
    if finished and loop.lookahead is not None:
        loop.lookahead.update(loop.model, 1.0)  # the final weights are the average (a no-op:
        # step total updated it); kept so that the invariant does not depend on that detail
    if whiten_bias is not None:
        whiten_bias.requires_grad_(True)
    # the default layout from here on: a channels-last model computes slightly different
    # floats, and the model must give exactly what load_backbone's copy gives
    loop.model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    loop.model.eval()


def _plain_accuracy(model: nn.Module, data: ImageDataset, config: BackboneConfig,
                    device: torch.device, precision: str) -> float:
    return accuracy(model, data.images, data.labels, tta_level=0,
                    batch_size=config.eval_batch_size, device=device, precision=precision,
                    channels_last=config.channels_last)


def evaluate_backbone(model: nn.Module, data: ImageDataset, *, tta_level: int = 0,
                      device: str | torch.device | None = None, precision: str = "auto",
                      batch_size: int = 1000) -> float:
    """Accuracy of ``model`` on ``data`` with TTA level ``tta_level`` (0: plain forward)."""
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    data = _check_split(data, "data", int(getattr(model, "n_classes", 10)))
    return accuracy(model, data.images, data.labels, tta_level=tta_level, batch_size=batch_size,
                    device=device, precision=resolve_precision(precision, device))
