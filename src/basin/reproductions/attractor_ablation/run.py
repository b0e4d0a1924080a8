"""Train (or reuse) and measure every cell of the ablation grid.

:func:`measure_cell` is the grid's module-level work function ``(cell, shared) ->
list[Record]``: it trains the cell's reading and seed into ``out/cells/<reading>/seed<k>``
(or loads the finished run there, or a reused run of the same config), then measures it with
:func:`measure_network`. :func:`run_ablation` runs all cells through
:func:`basin.distributed.run_grid`, which keeps finished cells in ``out/grid`` so that a rerun
measures only what is missing (and training resumes per run folder).

:func:`measure_network` applies each condition once (the attacked inputs do not depend on
the number of iterations: the paper's and the CE objective attack F and the training cost,
not the loop) and measures the same inputs with the detector at every ``n`` by
:meth:`basin.robustness.evaluation.Evaluator.measure`, the evaluation runner's own measuring
code; at ``n = 1`` its records equal :func:`basin.robustness.evaluation.evaluate_run`'s.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from basin.data import ImageDataset, load_dataset
from basin.distributed import Cell, run_grid
from basin.models import AttractorNet
from basin.reproductions.attractor_ablation.protocol import (
    ATTACKS,
    EVAL_SEED,
    ID_DATASET,
    OOD_SETS,
    THRESHOLD,
    AblationPlan,
    objective_weights,
)
from basin.robustness.conditions import parse_conditions
from basin.robustness.evaluation import EvaluationResult, EvaluationSettings, Evaluator
from basin.robustness.records import Record
from basin.training import TrainConfig, load_train_data, train
from basin.training.run import RunPaths, read_run_config


@dataclass
class AblationShared:
    """What every cell reads; plain data, so that Ray can ship it to workers."""

    plan: AblationPlan
    out_dir: str
    mirror: str | None = None
    device: str = "cpu"
    progress: bool = False
    # reading -> {seed: finished run folder} to reuse instead of training (same config)
    reuse: dict[str, dict[int, str]] = field(default_factory=dict)


def _limited(data: ImageDataset, limit: int | None) -> ImageDataset:
    return data.subset(limit, seed=EVAL_SEED) if limit else data


def _relabel(record: Record, condition: Any, id_name: str, extra: dict[str, Any]) -> Record:
    about = "id" if record.dataset == id_name else "ood"
    return dataclasses.replace(record, condition=condition.text, attack=condition.attack_name,
                               epsilon=condition.epsilon, side=condition.side(about),
                               extra=extra)


def measure_network(net: AttractorNet, *, loss_weights: tuple[float, float, float],
                    steps: tuple[int, ...], limit: int | None,
                    mirror: str | os.PathLike[str] | None, device: torch.device,
                    extra: dict[str, Any] | None = None) -> list[Record]:
    """The paper's protocol at T = 0.8 for every n in ``steps``; ``extra["steps"]`` says n.

    ``loss_weights`` are the paper's FGSM objective's (a1, a2, a3) (see
    :func:`.protocol.objective_weights`). ID: the MNIST test set, OOD: Fashion-MNIST and
    CIFAR-10-bw, each the ``limit`` subset of seed ``EVAL_SEED`` (the same for every cell).
    """
    def settings(n: int) -> EvaluationSettings:
        return EvaluationSettings(steps=n, threshold=THRESHOLD, limit=limit, seed=EVAL_SEED,
                                  loss_weights=loss_weights)

    attacker = Evaluator(net, settings(1), device, progress=False)
    evaluators = {n: Evaluator(net, settings(n), device, progress=False) for n in steps}
    id_test = _limited(load_dataset(ID_DATASET, "test", mirror=mirror), limit)
    ood_sets = [_limited(load_dataset(name, "test", mirror=mirror, seed=EVAL_SEED), limit)
                for name in OOD_SETS]
    conditions = parse_conditions(ATTACKS)
    clean = conditions[0]
    out: list[Record] = []
    for condition in conditions:
        x_id = attacker.apply(condition, id_test, "id")
        x_ood = [attacker.apply(condition, o, "ood") for o in ood_sets]
        attacked_id = dataclasses.replace(id_test, images=x_id)
        attacked_ood = [dataclasses.replace(o, images=x) for o, x in
                        zip(ood_sets, x_ood, strict=True)]
        for n, evaluator in evaluators.items():
            result = EvaluationResult(records=[], sanity=[], settings={}, threshold=THRESHOLD)
            # the inputs are already perturbed: measure them as they are
            evaluator.measure(clean, attacked_id, attacked_ood, result)
            tags = {**(extra or {}), "steps": n, "n_eval": len(id_test)}
            out += [_relabel(r, condition, id_test.name, tags) for r in result.records]
    return out


@torch.no_grad()
def full_test_accuracy(net: AttractorNet, test: ImageDataset, device: torch.device) -> float:
    """F(x)'s accuracy on the whole test split (forward passes only)."""
    correct = 0
    for xb, yb in zip(test.images.split(2000), test.labels.split(2000), strict=True):
        correct += int((net.logits(xb.to(device)).argmax(1).cpu() == yb).sum())
    return correct / len(test)


def run_folder(shared: AblationShared, reading: str, seed: int) -> Path:
    """The cell's run: a reused finished run of the same config, else out/cells/..."""
    config = shared.plan.train_config(reading, seed)
    reused = shared.reuse.get(reading, {}).get(seed)
    if reused is not None and _same_config(Path(reused), config):
        return Path(reused)
    return Path(shared.out_dir) / "cells" / reading / f"seed{seed}"


def _same_config(folder: Path, config: TrainConfig) -> bool:
    if not RunPaths(folder).metrics.exists():
        return False
    stored = TrainConfig.from_dict(read_run_config(folder)["train"])
    return not stored.differences(config)


def measure_cell(cell: Cell, shared: AblationShared) -> list[Record]:
    """Train or reuse the cell's network, then measure it (the grid's work function)."""
    reading, seed = cell.model, int(cell.param("seed"))
    config = shared.plan.train_config(reading, seed)
    folder = run_folder(shared, reading, seed)
    device = torch.device(shared.device)
    start = time.perf_counter()
    finished = RunPaths(folder).metrics.exists()
    # no test split: the trainer's test metrics include the exact Jacobian of 10,000 images
    # (minutes); the cell measures its own, and the full test accuracy below is one pass
    data = None if finished else load_train_data(config, mirror=shared.mirror,
                                                 with_test=False)
    result = train(config, data, folder, device=device, resume=True, progress=shared.progress)
    train_s = time.perf_counter() - start
    net = result.net.to(device).eval()
    extra = {"reading": reading, "seed": seed, "run": str(folder),
             "train_wall_s": float(result.metrics.get("wall_s", train_s)),
             "epochs": result.metrics.get("epochs")}
    start = time.perf_counter()
    records = measure_network(net, loss_weights=objective_weights(config),
                              steps=shared.plan.steps, limit=shared.plan.eval_limit,
                              mirror=shared.mirror, device=device, extra=extra)
    eval_s = time.perf_counter() - start
    test = load_dataset(ID_DATASET, "test", mirror=shared.mirror)
    records.append(Record("clean", "none", 0.0, ID_DATASET, "none", "accuracy_all_test",
                          full_test_accuracy(net, test, device),
                          {**extra, "steps": 1, "n_eval": len(test), "eval_wall_s": eval_s}))
    tqdm.write(f"[ablation] {reading} seed {seed}: trained/loaded {train_s:.0f} s, measured "
               f"{eval_s:.0f} s")
    return records


def run_ablation(shared: AblationShared, *, executor: str = "local",
                 ray_address: str | None = None) -> list[Record]:
    """Every cell of the plan, resumable in ``out_dir/grid``; records in cell order."""
    plan = shared.plan
    out = Path(shared.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return run_grid(plan.cells(), measure_cell, shared=shared, executor=executor,
                    out_dir=out / "grid", ray_address=ray_address,
                    # what decides a cell's records besides its key (not which cells run, so
                    # that a rerun with more readings or seeds reuses the finished ones)
                    config={"quick": plan.quick, "steps": list(plan.steps),
                            "eval_limit": plan.eval_limit, "train": plan.train,
                            "threshold": THRESHOLD,
                            "eval_seed": EVAL_SEED, "ood": list(OOD_SETS),
                            "attacks": list(ATTACKS)},
                    progress=shared.progress, desc="ablation cells")
