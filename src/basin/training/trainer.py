"""The attractor paper's training schedule, with early stopping, checkpoints and resume.

``train`` runs the layer-wise pretraining stages then fine-tuning (``basin.training.stages``),
each with its own Adam optimiser and learning rate, for up to ``max_epochs`` epochs, stopping
a stage once its validation accuracy has not improved for ``patience`` epochs and restoring
that stage's best weights. After every epoch the whole state is checkpointed atomically, so
``resume=True`` continues an interrupted run to bit-identical weights: nothing depends on a
global random state (data order and projection noise are drawn from generators seeded by
(seed, stage, epoch), the initialisation from ``seed``).

Throughput: the data live on the training device as tensors, batches are index slices of a
``randperm`` (no DataLoader), inputs of a pretraining stage are computed once per stage,
validation runs in large batches without gradients, and the step's kernels are the fast
ones of ``basin.training.step`` unless ``fast_kernels=False`` (``benchmarks/speed.py``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from basin.losses import LossWeights
from basin.models.attractor import AttractorNet
from basin.models.init import initialise
from basin.training.checkpoint import (
    Progress,
    load_checkpoint,
    save_checkpoint,
    snapshot,
)
from basin.training.config import TrainConfig
from basin.training.data import TrainData
from basin.training.run import (
    RunPaths,
    ensure_can_start,
    load_run,
    read_run_config,
)
from basin.training.stages import Stage, build_stage, make_stage_heads, stage_order
from basin.training.step import KERNELS, make_optimizer, stage_loss, train_step
from basin.utils.device import resolve_device
from basin.utils.io import (
    CheckpointError,
    atomic_write_json,
    load_state_dict_strict,
    read_json,
    save_tensors,
)
from basin.utils.runinfo import run_record

LOSS_TERMS = ("total", "reconstruction", "eigen", "classification")
# Purposes of the derived seeds, so that two streams never share a seed.
_ORDER, _PROJECTION, _EVAL_PROJECTION = 0, 1, 2


@dataclass
class EpochInfo:
    """Handed to ``on_epoch_end`` after each epoch's checkpoint is on disk."""

    stage: Stage
    epoch: int
    record: dict[str, Any]
    optimizer: torch.optim.Optimizer
    heads: nn.ModuleList
    progress: Progress


EpochCallback = Callable[[EpochInfo], None]


@dataclass
class TrainResult:
    net: AttractorNet
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    heads: nn.ModuleList | None = None


def derive_seed(seed: int, stage: int, epoch: int, purpose: int) -> int:
    """A well-mixed 64-bit seed for one (run seed, stage, epoch, purpose) stream."""
    return int(np.random.SeedSequence([seed, stage, epoch, purpose]).generate_state(
        1, np.uint64)[0])


def build_model(config: TrainConfig) -> tuple[AttractorNet, nn.ModuleList]:
    """The network and its stage heads, initialised from ``config.seed`` on the CPU (so the
    same seed gives the same start on every device) without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = AttractorNet(config.widths, config.n_classes, config.output_activation)
        heads = make_stage_heads(net)
        initialise(net, config.init)
        initialise(heads, config.init)
    return net, heads


def _loss_weights(config: TrainConfig) -> LossWeights:
    return LossWeights(*config.weights)


def _term_vector(terms: Any, device: torch.device) -> Tensor:
    """The four loss terms as one float64 vector on ``device`` (no host sync per step; one
    stack and one exact cast, not four conversions)."""
    return torch.stack([getattr(terms, name).detach().reshape(()) for name in LOSS_TERMS]
                       ).to(device=device, dtype=torch.float64)


def _projection_generator(config: TrainConfig, weights: Any, stage: int, epoch: int,
                          purpose: int) -> torch.Generator | None:
    """The projection estimator's noise stream; a CPU generator, so that the directions
    (drawn on the generator's device) are the same on every training device."""
    if config.jacobian != "projection" or weights.eigen == 0:
        return None
    return torch.Generator().manual_seed(derive_seed(config.seed, stage, epoch, purpose))


def _train_epoch(stage: Stage, h: Tensor, y: Tensor, optimizer: torch.optim.Optimizer,
                 config: TrainConfig, weights: Any, epoch: int, bar: tqdm,
                 fast: bool) -> dict[str, float]:
    order_gen = torch.Generator().manual_seed(
        derive_seed(config.seed, stage.index, epoch, _ORDER))
    order = torch.randperm(len(h), generator=order_gen).to(h.device)
    noise = _projection_generator(config, weights, stage.index, epoch, _PROJECTION)
    sums = torch.zeros(len(LOSS_TERMS), dtype=torch.float64, device=h.device)
    for step, idx in enumerate(order.split(config.batch_size)):
        terms = train_step(stage, h[idx], y[idx], optimizer, config, weights, noise, fast=fast)
        sums += _term_vector(terms, h.device) * len(idx)
        bar.update(1)
        if step % 50 == 0 and not bar.disable:
            bar.set_postfix(loss=f"{terms.total.item():.4f}")
    return dict(zip(LOSS_TERMS, (sums / len(h)).tolist(), strict=True))


@torch.no_grad()
def evaluate(net: AttractorNet, x: Tensor, y: Tensor, config: TrainConfig, *,
             fast_kernels: bool = True) -> dict[str, Any]:
    """Accuracy and mean loss terms of the whole network on (x, y) (e.g. the test set).

    Runs without autograd (every Jacobian method computes its value without it; the losses
    chunk the per-sample Jacobians, which bounds their memory) in batches of
    ``eval_batch_size``; the projection estimator's noise has its own seeded stream.
    """
    weights = _loss_weights(config)
    stage = build_stage(net, make_stage_heads(net), net.n_stages, config.learning_rates)
    noise = _projection_generator(config, weights, net.n_stages + 1, 0, _EVAL_PROJECTION)
    sums = torch.zeros(len(LOSS_TERMS), dtype=torch.float64, device=x.device)
    correct = 0
    flat = x.reshape(len(x), -1)
    for hb, yb in zip(flat.split(config.eval_batch_size), y.split(config.eval_batch_size),
                      strict=True):
        terms = stage_loss(stage, hb, yb, config, weights, noise, fast=fast_kernels)
        sums += _term_vector(terms, x.device) * len(yb)
        correct += int((net.logits(hb).argmax(dim=1) == yb).sum())
    losses = dict(zip(LOSS_TERMS, (sums / len(y)).tolist(), strict=True))
    return {"accuracy": correct / len(y), "loss": losses, "n": len(y)}


def _check_data(config: TrainConfig, data: TrainData) -> None:
    for name, x, y in (("train", data.train_x, data.train_y), ("val", data.val_x, data.val_y)):
        features = x[0].numel()
        if features != config.widths[0]:
            raise ValueError(f"{name}_x: {features} features per image, but widths[0] is "
                             f"{config.widths[0]}")
        if int(y.min()) < 0 or int(y.max()) >= config.n_classes:
            raise ValueError(f"{name}_y: labels must lie in [0, {config.n_classes}), got "
                             f"[{int(y.min())}, {int(y.max())}]")


def _write_config(paths: RunPaths, config: TrainConfig, net: AttractorNet, data: TrainData,
                  device: torch.device, fast: bool) -> None:
    record = run_record(config.to_dict(), config.seed, data.checksums)
    record["device"] = str(device)
    record["threads"] = torch.get_num_threads()
    record["kernels"] = KERNELS[fast]
    atomic_write_json(paths.config, {"model": net.config(), "train": config.to_dict(),
                                     "run": record})


def _check_same_kernels(paths: RunPaths, fast: bool) -> None:
    """A partial run continues on its kernels (runs from before the choice was recorded used
    the reference ones); a complete run trains nothing more, so any will do to reuse it."""
    run = read_run_config(paths.root).get("run", {})
    # "optimizer": "adam-fused" was the record's name for the fast kernels for a while
    started_with = run.get("kernels", KERNELS[run.get("optimizer") == "adam-fused"])
    if started_with != KERNELS[fast]:
        raise ValueError(f"fast_kernels: {paths.config} was started on the {started_with!r} "
                         f"kernels; resuming on {KERNELS[fast]!r} would change its arithmetic")


def _check_same_config(paths: RunPaths, config: TrainConfig,
                       checksums: dict[str, str] | None) -> None:
    """A resumed run must continue with the config (and data files) it started with."""
    stored = read_run_config(paths.root)
    recorded = stored.get("run", {}).get("data_checksums") or {}
    if checksums and recorded and dict(checksums) != recorded:
        changed = sorted(k for k in set(checksums) | set(recorded)
                         if checksums.get(k) != recorded.get(k))
        raise ValueError(f"{paths.config}: the data files differ from those the run started "
                         f"with ({', '.join(changed)})")
    try:
        previous = TrainConfig.from_dict(stored["train"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{paths.config}: invalid train config ({exc})") from exc
    diff = previous.differences(config)
    if diff:
        shown = ", ".join(f"{k}: stored {old!r}, given {new!r}"
                          for k, (old, new) in diff.items())
        raise ValueError(f"{paths.config}: the run was started with another config ({shown}); "
                         f"resume it with its own settings")


def _restore(paths: RunPaths, net: AttractorNet, heads: nn.ModuleList,
             device: torch.device) -> tuple[Progress, dict[str, Tensor] | None, dict]:
    ckpt = load_checkpoint(paths.checkpoint)
    load_state_dict_strict(net, ckpt.module_state("net"), ckpt.source)
    load_state_dict_strict(heads, ckpt.module_state("heads"), ckpt.source)
    best = {k: v.to(device) for k, v in ckpt.module_state("best").items()} or None
    return ckpt.progress, best, ckpt.optimizer_state()


def train(config: TrainConfig, data: TrainData | None, out_dir: str | os.PathLike[str], *,
          device: str | torch.device | None = None, resume: bool = False,
          progress: bool = False, on_epoch_end: EpochCallback | None = None,
          fast_kernels: bool = True) -> TrainResult:
    """Train ``config`` on ``data`` into the run folder ``out_dir`` (see basin.training.run).

    Refuses (RunExistsError) a folder that already holds a run unless ``resume``; with
    ``resume`` the stored config must equal ``config``, and a complete run is loaded, not
    retrained (``data`` may then be None). ``on_epoch_end`` is called after each epoch's
    checkpoint is written (raising KeyboardInterrupt there simulates an interruption).
    ``fast_kernels``: the step's kernels (``basin.training.step``).
    """
    paths = RunPaths(Path(out_dir))
    status = ensure_can_start(paths.root, resume)
    if status != "empty":
        _check_same_config(paths, config, None if data is None else data.checksums)
    if status == "partial":
        _check_same_kernels(paths, fast_kernels)
    if status == "complete":
        loaded = load_run(paths.root, device=resolve_device(None if device is None
                                                             else str(device)))
        return TrainResult(loaded.mlp(), read_json(paths.history)["stages"],
                           loaded.metrics or {})
    if data is None:
        raise ValueError("data: required unless the run in out_dir is complete")
    dev = resolve_device(None if device is None else str(device))
    _check_data(config, data)
    net, heads = build_model(config)
    net, heads = net.to(dev), heads.to(dev)
    data = data.to(dev)
    order = stage_order(net.n_stages, config.pretrain)
    state, best = Progress(stage=order[0]), None
    adam_state: dict[int, dict[str, Tensor]] = {}
    if paths.checkpoint.exists():
        state, best, adam_state = _restore(paths, net, heads, dev)
    elif status == "empty":
        _write_config(paths, config, net, data, dev, fast_kernels)
    weights = _loss_weights(config)

    while not state.finished:
        stage = build_stage(net, heads, state.stage, config.learning_rates)
        if state.epoch == 0 and stage.is_finetune and config.pretrain:
            # Fine-tuning starts from the last pretraining stage's classifier.
            with torch.no_grad():
                net.head.load_state_dict(heads[net.n_stages - 1].state_dict())
        if not state.history or state.history[-1]["stage"] != stage.index:
            state.history.append({"stage": stage.index, "name": stage.name, "lr": stage.lr,
                                  "epochs": [], "best_epoch": None,
                                  "best_val_accuracy": None, "stopped": None})
        optimizer = make_optimizer(list(stage.parameters()), stage.lr, fast=fast_kernels)
        if adam_state:
            optimizer.load_state_dict({"state": adam_state,
                                       "param_groups": optimizer.state_dict()["param_groups"]})
            adam_state = {}
        best = _run_stage(stage, optimizer, heads, data, config, weights, state, best, paths,
                          progress, on_epoch_end, fast_kernels)
        # The stage is over: keep its best weights and move on.
        _load_snapshot(net, heads, best)
        record = state.history[-1]
        record["stopped"] = "patience" if state.since_best >= config.patience else "max_epochs"
        position = order.index(stage.index)
        if position + 1 < len(order):
            state.start_stage(order[position + 1])
        else:
            state.finished = True
        best = None
        save_checkpoint(paths.checkpoint, state, net, heads, None, None)
        atomic_write_json(paths.history, {"stages": state.history, "wall_s": state.wall_s})
    return _finish(paths, net, heads, data, config, state, dev, fast_kernels)


def _load_snapshot(net: AttractorNet, heads: nn.ModuleList,
                   best: dict[str, Tensor] | None) -> None:
    if best is None:
        return
    net.load_state_dict({k[4:]: v for k, v in best.items() if k.startswith("net.")})
    heads.load_state_dict({k[6:]: v for k, v in best.items() if k.startswith("heads.")})


def _run_stage(stage: Stage, optimizer: torch.optim.Optimizer, heads: nn.ModuleList,
               data: TrainData, config: TrainConfig, weights: Any, state: Progress,
               best: dict[str, Tensor] | None, paths: RunPaths, progress: bool,
               on_epoch_end: EpochCallback | None, fast: bool) -> dict[str, Tensor] | None:
    """Epochs of one stage until ``max_epochs`` or ``patience``; returns the best weights."""
    h_train = stage.inputs(data.train_x, config.eval_batch_size)
    h_val = stage.inputs(data.val_x, config.eval_batch_size)
    n_batches = -(-len(h_train) // config.batch_size)
    record = state.history[-1]
    while state.epoch < config.max_epochs and state.since_best < config.patience:
        start = time.perf_counter()
        with tqdm(total=n_batches, desc=f"{stage.name} {state.epoch + 1}/{config.max_epochs}",
                  unit="batch", disable=not progress, leave=True, dynamic_ncols=True) as bar:
            losses = _train_epoch(stage, h_train, data.train_y, optimizer, config, weights,
                                  state.epoch, bar, fast)
            accuracy = stage.accuracy(h_val, data.val_y, config.eval_batch_size)
            bar.set_postfix(loss=f"{losses['total']:.4f}", val_acc=f"{accuracy:.4f}")
        state.epoch += 1
        improved = accuracy > state.best_accuracy
        if improved:
            state.best_accuracy, state.best_epoch, state.since_best = accuracy, state.epoch, 0
            best = snapshot(stage.net, heads)
        else:
            state.since_best += 1
        elapsed = time.perf_counter() - start
        state.wall_s += elapsed
        epoch_record = {"epoch": state.epoch, "loss": losses, "val_accuracy": accuracy,
                        "improved": improved, "wall_s": elapsed}
        record["epochs"].append(epoch_record)
        record["best_epoch"], record["best_val_accuracy"] = state.best_epoch, state.best_accuracy
        save_checkpoint(paths.checkpoint, state, stage.net, heads, best, optimizer)
        atomic_write_json(paths.history, {"stages": state.history, "wall_s": state.wall_s})
        if on_epoch_end is not None:
            on_epoch_end(EpochInfo(stage, state.epoch, epoch_record, optimizer, heads, state))
    return best


def _finish(paths: RunPaths, net: AttractorNet, heads: nn.ModuleList, data: TrainData,
            config: TrainConfig, state: Progress, device: torch.device,
            fast: bool) -> TrainResult:
    """Test metrics, then the final files; the checkpoint goes once they are all written."""
    start = time.perf_counter()
    flat_val = data.val_x.reshape(len(data.val_x), -1)
    stage = build_stage(net, heads, net.n_stages, config.learning_rates)
    metrics: dict[str, Any] = {
        "val_accuracy": stage.accuracy(flat_val, data.val_y, config.eval_batch_size),
        "n_train": len(data.train_y), "n_val": len(data.val_y),
        "epochs": {s["name"]: len(s["epochs"]) for s in state.history},
        "device": str(device),
    }
    if data.test_x is not None and data.test_y is not None:
        test = evaluate(net, data.test_x, data.test_y, config, fast_kernels=fast)
        metrics.update({"test_accuracy": test["accuracy"], "test_loss": test["loss"],
                        "n_test": test["n"]})
    state.wall_s += time.perf_counter() - start
    metrics["wall_s"] = state.wall_s
    save_tensors(paths.model, net.state_dict(),
                 metadata={"format": "basin.AttractorNet", "config": "config.json"})
    atomic_write_json(paths.history, {"stages": state.history, "wall_s": state.wall_s})
    atomic_write_json(paths.metrics, metrics)
    shutil.rmtree(paths.checkpoint, ignore_errors=True)
    return TrainResult(net, state.history, metrics, heads)
