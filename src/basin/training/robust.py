"""Adversarial attractor training (issue 13): the loop, its epsilon ramp and its monitor.

Per batch of digits ``x`` (and ``outlier_fraction`` as many outliers ``o`` from the pool):

1. one PGD attack on the digits maximising ``CE(F(x')) + w (1 - r(x', G(x')))`` (the head's
   loss and the similarity at once, so one attack serves every ID term);
2. one PGD attack on the outliers maximising ``r(o', G(o')) + w' max log F(o')``;
3. one step on ``basin.losses.robust.robust_loss``.

A correct-or-reject run with ``cor_threshold = "adaptive"`` aims both its attack and its loss
at the running threshold of ``basin.training.acceptance`` (updated from each batch's clean
digits), recorded per epoch as ``cor_threshold`` in the history and restored on resume.

Epsilon grows linearly per step over the first ``ramp_epochs``; the learning rate is
constant until then and follows a cosine afterwards. After every epoch a small monitor on
held-out validation images (never test images) logs clean accuracy, PGD-10 accuracy at the
full epsilon, the acceptance threshold for 95% of validation digits, the fraction of
validation-pool outliers accepted at it and the silent-failure rate of a joint attack.

Run folder (``load_run`` reads it like any basin run): ``config.json`` (``model``,
``train`` = ``RobustConfig.to_dict()``, ``run``), ``history.json``, ``checkpoint/`` while
training, ``model.safetensors`` and ``metrics.json`` (written last: "complete").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from basin.data.outliers import OutlierPool
from basin.detectors.base import threshold_for_acceptance
from basin.losses.robust import (
    id_attack_loss,
    outlier_attack_loss,
    robust_loss,
    silent_log_prob,
    similarity,
)
from basin.models.attractor import AttractorNet
from basin.models.conv_attractor import ConvAttractorNet
from basin.models.factory import AnyAttractor
from basin.training.acceptance import AcceptanceThreshold
from basin.training.data import TrainData
from basin.training.robust_config import RobustConfig
from basin.training.robust_state import load_state, save_state
from basin.training.run import RunPaths, ensure_can_start
from basin.utils.io import atomic_write_json, save_tensors
from basin.utils.runinfo import run_record

LossFn = Callable[[Tensor], Tensor]


def pgd_linf(loss_fn: LossFn, x: Tensor, epsilon: float, steps: int,
             step_size: float | Tensor, generator: torch.Generator | None,
             clean_start: int = 0) -> Tensor:
    """Sign-gradient ascent on ``loss_fn(x').sum()`` inside the L-inf ball and [0, 1],
    from a uniform random start (the cheap training attack; the last iterate is returned);
    the first ``clean_start`` inputs start at the clean point instead. ``step_size``: one
    number, or one per input (a tensor broadcastable against ``x``). With ``steps = 0`` or
    ``epsilon = 0`` returns ``x``."""
    if steps == 0 or epsilon == 0:
        return x.detach()
    noise = torch.rand(x.shape, generator=generator) * 2 - 1
    noise[:clean_start] = 0.0
    x_adv = (x + epsilon * noise.to(x)).clamp(0.0, 1.0).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(x_adv).sum(), x_adv)
        with torch.no_grad():
            x_adv = x_adv + step_size * grad.sign()
            x_adv = torch.minimum(torch.maximum(x_adv, x - epsilon), x + epsilon).clamp(0, 1)
        x_adv = x_adv.detach()
    return x_adv


def epsilon_at(config: RobustConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Linear ramp from 0 (first step) to ``config.epsilon`` at the end of ``ramp_epochs``."""
    if config.ramp_epochs == 0:
        return config.epsilon
    progress = (epoch * steps_per_epoch + step + 1) / (config.ramp_epochs * steps_per_epoch)
    return config.epsilon * min(1.0, progress)


def lr_at(config: RobustConfig, epoch: int) -> float:
    """Constant during the ramp, then a cosine from ``lr`` to ``lr * lr_final``."""
    if epoch < config.ramp_epochs or config.epochs <= config.ramp_epochs:
        return config.lr
    t = (epoch - config.ramp_epochs) / max(1, config.epochs - config.ramp_epochs - 1)
    floor = config.lr * config.lr_final
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def build_robust_model(config: RobustConfig) -> AnyAttractor:
    torch.manual_seed(config.seed)
    if config.arch == "conv":
        return ConvAttractorNet(config.channels, config.code, 10,
                                output_activation=config.output_activation)
    return AttractorNet(config.widths, 10, output_activation=config.output_activation)


def as_images(x: Tensor) -> Tensor:
    """Flat 784-pixel batches (the toy problem) as (N, 1, 28, 28); images unchanged."""
    return x.reshape(x.shape[0], 1, 28, 28) if x.dim() == 2 else x


def _id_loss(net: AnyAttractor, y: Tensor, config: RobustConfig,
             threshold: float | None) -> LossFn:
    """The ID attack loss with this batch's labels (and acceptance threshold) bound: a
    closure per batch, so the attack never sees a later batch's ``y``."""
    cor = config.weights if config.id_attack == "cor" else None

    def loss(t: Tensor) -> Tensor:
        return id_attack_loss(net, t, y, sim_weight=config.attack_sim_weight, cor=cor,
                              threshold=threshold)
    return loss


def acceptance_tracker(config: RobustConfig, value: float | None = None
                       ) -> AcceptanceThreshold | None:
    """The running acceptance threshold of an "adaptive" run (None for "margin"), starting
    at ``value`` (a resumed run's) or at the margin."""
    if config.cor_threshold != "adaptive":
        return None
    start = config.weights.id_margin if value is None else value
    return AcceptanceThreshold(start, slack=config.cor_slack)


def train_epoch(net: AnyAttractor, optimizer: torch.optim.Optimizer, config: RobustConfig,
                x_all: Tensor, y_all: Tensor, pool: OutlierPool | None, epoch: int,
                tracker: AcceptanceThreshold | None = None) -> dict[str, float]:
    """One pass over the training images; returns the mean of every loss term (and, with a
    ``tracker``, the acceptance threshold it ended at, which it updates per batch)."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    order = torch.randperm(len(x_all), generator=gen)
    steps = math.ceil(len(x_all) / config.batch_size)
    n_out = round(config.batch_size * config.outlier_fraction) if pool is not None else 0
    sums: dict[str, float] = {}
    net.train()
    for step in range(steps):
        idx = order[step * config.batch_size:(step + 1) * config.batch_size]
        x, y = x_all[idx], y_all[idx]
        eps = epsilon_at(config, epoch, step, steps)
        n_clean = round(config.clean_start_fraction * len(idx))
        size = _id_step_sizes(config, eps, len(idx), n_clean)
        at = tracker.target() if tracker is not None else None
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=config.bf16):
            x_adv = pgd_linf(_id_loss(net, y, config, at), x, eps, config.id_steps, size, gen,
                             clean_start=n_clean)
            o_adv = None
            if n_out and pool is not None:   # n_out is 0 without a pool
                o, _ = pool.sample(max(1, round(n_out * len(idx) / config.batch_size)), gen)
                o_size = config.step_factor * eps / max(1, config.outlier_steps)
                o_adv = pgd_linf(lambda t: outlier_attack_loss(
                    net, t, conf_weight=config.attack_conf_weight),
                    o, eps, config.outlier_steps, o_size, gen)
            terms = robust_loss(net, x, x_adv, y, o_adv, config.weights, generator=gen,
                                threshold=at)
        if tracker is not None:
            tracker.update(terms.clean_scores)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        for key, value in terms.as_floats().items():
            sums[key] = sums.get(key, 0.0) + value
        sums["epsilon"] = eps
    out = {k: (v if k == "epsilon" else v / steps) for k, v in sums.items()}
    if tracker is not None:
        out["cor_threshold"] = tracker.value
    return out


def _id_step_sizes(config: RobustConfig, eps: float, n: int, n_clean: int
                   ) -> float | Tensor:
    """The digits' PGD step: ``step_factor * eps / id_steps``, and for the first ``n_clean``
    of the ``n`` inputs (those that start at the clean digit) ``clean_step_factor * eps /
    id_steps`` when that is set (a walk from the accepted input in small steps finds failures
    that coarse steps jump over)."""
    size = config.step_factor * eps / max(1, config.id_steps)
    if config.clean_step_factor is None:
        return size
    sizes = torch.full((n, 1, 1, 1), size)
    sizes[:n_clean] = (
        config.clean_step_factor * eps / max(1, config.id_steps))
    return sizes


def monitor(net: AnyAttractor, config: RobustConfig, val_x: Tensor, val_y: Tensor,
            pool: OutlierPool | None) -> dict[str, float]:
    """Cheap held-out checks after an epoch (validation images and a fixed pool draw)."""
    net.eval()
    n = min(config.monitor_n, len(val_x))
    x, y = val_x[:n], val_y[:n]
    eps = config.epsilon
    gen = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        clean_acc = float((net.logits(x).argmax(1) == y).float().mean())
        scores = similarity(net, val_x[:4 * n], config.score_steps)
        threshold = threshold_for_acceptance(scores, 0.95)
    x_pgd = pgd_linf(lambda t: id_attack_loss(net, t, y, sim_weight=0.0), x, eps, 10,
                     2.5 * eps / 10, gen)
    out: dict[str, float] = {}
    with torch.no_grad():
        out["val_clean_acc"] = clean_acc
        out["val_pgd10_acc"] = float((net.logits(x_pgd).argmax(1) == y).float().mean())
    out["val_joint_silent"] = joint_silent_rate(net, x, y, eps, threshold,
                                                config.score_steps, gen)
    out["val_threshold"] = threshold
    with torch.no_grad():
        out["val_score_median"] = float(scores.median())
    if pool is not None:
        o, _ = pool.sample(n, torch.Generator().manual_seed(54321))
        o_att = pgd_linf(lambda t: similarity(net, t, config.score_steps), o, eps, 10,
                         2.5 * eps / 10, gen)
        with torch.no_grad():
            out["pool_accepted_clean"] = float(
                (similarity(net, o, config.score_steps) >= threshold).float().mean())
            out["pool_accepted_pgd10"] = float(
                (similarity(net, o_att, config.score_steps) >= threshold).float().mean())
    return out


def joint_silent_rate(net: AnyAttractor, x: Tensor, y: Tensor, eps: float, threshold: float,
                      score_steps: int, gen: torch.Generator) -> float:
    """Fraction of ``x`` silently wrong (accepted at ``threshold`` and misclassified) under
    either of two end-to-end attacks: random-start PGD-10 on ``CE - 10 relu(T - r)``, and
    PGD-20 with small steps (eps / 10) from the clean digit on log P(silent failure), the
    shape of the evaluation's strongest run (a coarse random start at large epsilon lands in
    rejection and misses the failures that a walk from the accepted input finds)."""
    def penalised(t: Tensor) -> Tensor:
        ce = id_attack_loss(net, t, y, sim_weight=0.0)
        return ce - 10.0 * torch.relu(threshold - similarity(net, t, score_steps))

    def silent(t: Tensor) -> Tensor:
        return silent_log_prob(net.logits(t), similarity(net, t, score_steps), y, threshold,
                               0.05)

    failed = torch.zeros(len(x), dtype=torch.bool)
    for x_adv in (pgd_linf(penalised, x, eps, 10, 2.5 * eps / 10, gen),
                  pgd_linf(silent, x, eps, 20, eps / 10, gen, clean_start=len(x))):
        with torch.no_grad():
            wrong = net.logits(x_adv).argmax(1) != y
            failed |= wrong & (similarity(net, x_adv, score_steps) >= threshold)
    return float(failed.float().mean())


def _start_run(paths: RunPaths, config: RobustConfig, net: AnyAttractor,
               data: TrainData, resume: bool) -> None:
    status = ensure_can_start(paths.root, resume)
    if status == "empty":
        atomic_write_json(paths.config, {"model": net.config(), "train": config.to_dict(),
                                         "kind": "robust",
                                         "run": run_record(config.to_dict(), config.seed,
                                                           data.checksums)})


def train_robust(config: RobustConfig, data: TrainData, pool: OutlierPool | None,
                 out_dir: str | Path, *, resume: bool = False,
                 log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train into ``out_dir`` (refusing to overwrite unless ``resume``); return metrics."""
    paths = RunPaths(Path(out_dir))
    net = build_robust_model(config)
    _start_run(paths, config, net, data, resume)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    state: dict[str, Any] = {"epoch": 0, "history": [], "wall_s": 0.0}
    if resume and (paths.checkpoint / "state.json").is_file():
        state = load_state(paths.checkpoint, net, optimizer)
    last = state["history"][-1] if state["history"] else {}
    tracker = acceptance_tracker(config, last.get("cor_threshold"))
    x_all, y_all = as_images(data.train_x), data.train_y
    val_x, val_y = as_images(data.val_x), data.val_y
    for epoch in range(state["epoch"], config.epochs):
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config, epoch)
        losses = train_epoch(net, optimizer, config, x_all, y_all, pool, epoch, tracker)
        train_s = time.perf_counter() - start
        checks = monitor(net, config, val_x, val_y, pool)
        entry = {"epoch": epoch + 1, "lr": lr_at(config, epoch), "train_s": train_s,
                 "epoch_s": time.perf_counter() - start, **losses, **checks}
        state["history"].append(entry)
        state["epoch"], state["wall_s"] = epoch + 1, state["wall_s"] + entry["epoch_s"]
        save_state(paths.checkpoint, net, optimizer, state)
        state = {**state, "checkpoint_id": state.get("checkpoint_id", 0) + 1}
        atomic_write_json(paths.history, state["history"])
        if log is not None:
            log(format_entry(entry, config.epochs))
    return _finish(paths, net, config, data, state)


def format_entry(entry: dict[str, Any], epochs: int) -> str:
    keys = ("epsilon", "ce_adv", "acc_adv", "r_adv", "sim_ood", "cor_threshold", "val_clean_acc",
            "val_pgd10_acc", "val_joint_silent", "val_threshold", "pool_accepted_clean",
            "pool_accepted_pgd10")
    parts = [f"{k}={entry[k]:.4f}" for k in keys if k in entry]
    return f"epoch {entry['epoch']}/{epochs} ({entry['epoch_s']:.0f} s): " + " ".join(parts)


def _finish(paths: RunPaths, net: AnyAttractor, config: RobustConfig, data: TrainData,
            state: dict[str, Any]) -> dict[str, Any]:
    net.eval()
    metrics: dict[str, Any] = {"wall_s": state["wall_s"], "epochs": state["epoch"],
                               "preset": config.preset}
    with torch.no_grad():
        val_x = as_images(data.val_x)
        metrics["val_accuracy"] = _accuracy(net, val_x, data.val_y)
        scores = torch.cat([similarity(net, val_x[i:i + 1000], config.score_steps)
                            for i in range(0, len(val_x), 1000)])
        metrics["val_threshold_95"] = threshold_for_acceptance(scores, 0.95)
        if data.test_x is not None:
            if data.test_y is None:
                raise ValueError("data: test_x is given without test_y")
            metrics["test_accuracy"] = _accuracy(net, as_images(data.test_x), data.test_y)
            metrics["n_test"] = len(data.test_x)
    save_tensors(paths.model, net.state_dict())
    atomic_write_json(paths.metrics, metrics)
    return metrics


def _accuracy(net: AnyAttractor, x: Tensor, y: Tensor) -> float:
    hits = sum(int((net.logits(x[i:i + 2000]).argmax(1) == y[i:i + 2000]).sum())
               for i in range(0, len(x), 2000))
    return hits / len(x)
