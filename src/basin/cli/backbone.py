"""``basin train-backbone``: train a CIFAR-10 classifier for the feature-based detectors.

``basin train-backbone --arch airbench --out runs/backbone`` trains the default backbone with
its default recipe (:mod:`basin.training.backbone`) on the 45,000 CIFAR-10 training images,
checking on the 5,000 validation images after each epoch, then writes to ``--out``:

* ``model.safetensors`` and ``config.json`` (model config, training config and the run
  record: seed, package versions, data checksums), read back by
  :func:`basin.models.cifar.load_backbone`;
* ``history.json`` (per epoch: loss, train and validation accuracy, seconds);
* ``metrics.json``: test accuracy with the plain forward (what detectors use) and with TTA,
  training and wall time, epochs, threads, precision;
* ``checkpoint/`` the state after the latest epoch; ``--resume`` continues from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import torch

from basin.cli.options import device_option, mirror_option, seed_option
from basin.training.backbone_aug import PRECISIONS


def _load_splits(mirror: str | None, limit: int | None) -> tuple[Any, Any, Any]:
    from basin.data import load_dataset

    splits = [load_dataset("cifar10", split, mirror=mirror) for split in ("train", "val", "test")]
    if limit is not None:
        splits = [s.subset(limit) for s in splits]
    train, val, test = splits  # unpacked: tuple(list) has no fixed length for the checker
    return train, val, test


def _check_out(out: Path, resume: bool) -> None:
    if (out / "metrics.json").is_file():
        raise click.ClickException(f"--out {out}: already holds a trained backbone "
                                   "(metrics.json); choose another folder or delete it")
    if (out / "checkpoint" / "state.json").is_file() and not resume:
        raise click.ClickException(f"--out {out}: holds a partial run; add --resume to "
                                   "continue it, or choose another folder")


@click.command("train-backbone")
@click.option("--arch", type=click.Choice(["airbench", "resnet18"]), default="airbench",
              show_default=True, help="Backbone: airbench (fast on CPU) or resnet18 (GPU).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: model.safetensors, config.json, history.json, "
                   "metrics.json, checkpoint/.")
@click.option("--epochs", type=int, default=None,
              help="Training epochs [default: the recipe's, 12 for airbench, 30 for resnet18].")
@click.option("--label-smoothing", type=click.FloatRange(min=0.0, max=1.0, max_open=True),
              default=None,
              help="Label smoothing of the cross-entropy [default: the recipe's, 0.2 for "
                   "airbench]; 0 trains with plain cross-entropy, whose penultimate features "
                   "suit feature-based OOD detectors (Mahalanobis, KNN) better.")
@seed_option
@device_option
@mirror_option
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="auto: bf16 autocast where the CPU/GPU supports it natively, else fp32.")
@click.option("--limit", type=click.IntRange(min=2), default=None,
              help="Use only this many images of each split (a seeded subset): a quick look.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="CPU threads for torch (0: torch's default, all cores).")
@click.option("--resume", is_flag=True, help="Continue the partial run in --out.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_backbone(arch: str, out: str, epochs: int | None, label_smoothing: float | None,
                   seed: int, device: str | None, mirror: str | None, precision: str,
                   limit: int | None, threads: int, resume: bool, quiet: bool) -> None:
    """Train a CIFAR-10 backbone (classifier with penultimate features) into --out."""
    from basin.data import DatasetError, mirror_checksums
    from basin.models.cifar import build_backbone
    from basin.training import backbone as recipe
    from basin.utils.device import resolve_device
    from basin.utils.io import CheckpointError, atomic_write_json
    from basin.utils.runinfo import run_record
    from basin.utils.seed import seed_everything

    if threads:
        torch.set_num_threads(threads)
    out_dir = Path(out)
    _check_out(out_dir, resume)
    changes: dict[str, Any] = {"seed": seed, "precision": precision}
    if epochs is not None:
        changes["epochs"] = epochs
    if label_smoothing is not None:
        changes["label_smoothing"] = label_smoothing
    try:
        config = recipe.default_backbone_config(arch, **changes)
        torch_device = resolve_device(device)
        train, val, test = _load_splits(mirror, limit)
        record = run_record({"arch": arch, "limit": limit, "training": config.to_dict()}, seed,
                            mirror_checksums(["cifar10"], mirror=mirror))
        seed_everything(seed)
        model = build_backbone(arch)
        result = recipe.train_backbone(model, train, val, config, device=torch_device,
                                       out_dir=out_dir, progress=not quiet, resume=resume,
                                       extra_config={"run": record})
        # fp32: the numbers a detector or a reloaded model reproduces exactly
        plain = recipe.evaluate_backbone(model, test, tta_level=0, precision="fp32")
        tta = recipe.evaluate_backbone(model, test, tta_level=config.tta_level,
                                       precision="fp32")
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; continue with: basin train-backbone --arch {arch} "
                   f"--out {out} --resume (same options)", err=True)
        raise SystemExit(130) from None
    except (ValueError, CheckpointError, DatasetError) as exc:
        raise click.ClickException(str(exc)) from exc
    metrics = {"test_accuracy": plain, "test_accuracy_tta": tta, "tta_level": config.tta_level,
               "n_test": len(test), "n_train": len(train), "val_accuracy": result["val_accuracy"],
               "train_seconds": result["train_seconds"], "wall_seconds": result["wall_seconds"],
               "epochs": result["epochs"], "steps": result["steps"],
               "precision": result["precision"], "threads": result["threads"],
               "device": str(torch_device), "arch": arch, "eval_precision": "fp32"}
    atomic_write_json(out_dir / "metrics.json", metrics)
    click.echo(f"test accuracy {plain:.4f} (TTA level {config.tta_level}: {tta:.4f}), "
               f"validation {result['val_accuracy']:.4f}; {result['epochs']} epochs, "
               f"{result['train_seconds']:.0f} s training, {result['precision']}, "
               f"{result['threads']} threads")
    click.echo(f"backbone written to {out_dir}")
