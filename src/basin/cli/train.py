"""``basin train`` (one attractor-network training run) and ``basin smoke`` (a tiny one).

``basin train --preset NAME --out DIR`` starts from a preset of ``basin.training.config`` and
applies every option given on the command line; ``--resume`` continues the run in DIR with
its stored config (options given with ``--resume`` must agree with it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import click
import torch

from basin.cli.options import device_option, mirror_option, seed_option
from basin.models.init import INITS
from basin.training.config import DATASETS, JACOBIAN_METHODS, PRESETS, TrainConfig, preset
from basin.training.robust_config import ROBUST_PRESETS
from basin.training.run import RunPaths, read_run_config, run_status

# The smoke run: a small paper-attractor-like network, seconds per stage on a laptop CPU.
# The projection estimator keeps the deep eigen loss affordable on the 10,000 test images.
SMOKE_CHANGES: dict[str, Any] = {"train_size": 2000, "val_size": 1000, "max_epochs": 2,
                                 "jacobian": "projection", "preset": "smoke"}


def _numbers(text: str | None, kind: type, option: str, count: int | None = None) -> Any:
    if text is None:
        return None
    try:
        values = tuple(kind(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated {kind.__name__}s, got {text!r}",
                                 param_hint=option) from None
    if count is not None and len(values) != count:
        raise click.BadParameter(f"expected {count} values, got {len(values)}",
                                 param_hint=option)
    return values


def _size(text: str | None, option: str) -> int | str | None:
    """``"all"`` -> None (whole split); a positive integer; not given -> "unset"."""
    if text is None:
        return "unset"
    if text.lower() == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(f"expected a number of images or 'all', got {text!r}",
                                 param_hint=option) from None


def _overrides(ctx: click.Context, options: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig fields set explicitly on the command line."""
    changes: dict[str, Any] = {}
    for field in ("dataset", "n_classes", "output_activation", "jacobian", "projections",
                  "batch_size", "max_epochs", "patience", "eval_batch_size", "pretrain",
                  "init"):
        if options[field] is not None:
            changes[field] = options[field]
    source = ctx.get_parameter_source("seed")
    if source is not None and source.name != "DEFAULT":
        changes["seed"] = options["seed"]
    for field, option in (("train_size", "--train-size"), ("val_size", "--val-size")):
        value = _size(options[field], option)
        if value != "unset":
            changes[field] = value
    for field, text, kind, count, option in (
            ("widths", options["widths"], int, None, "--widths"),
            ("weights", options["alpha"], float, 3, "--alpha"),
            ("learning_rates", options["lr"], float, None, "--lr")):
        value = _numbers(text, kind, option, count)
        if value is not None:
            changes[field] = value
    return changes


def threads_option(f: Any) -> Any:
    return click.option(
        "--threads", type=int, default=1, show_default=True,
        help="CPU threads for torch (0: torch's default). One is fastest for these small "
             "matrix products on a busy 2-core machine: a paper-baseline epoch of stage 1 "
             "took 6.8 s with one thread and 74 s with two.")(f)


def _set_threads(threads: int) -> None:
    if threads < 0:
        raise click.BadParameter(f"must be >= 0, got {threads}", param_hint="--threads")
    if threads:
        torch.set_num_threads(threads)


def _run(config: TrainConfig, out: str, *, device: str | None, mirror: str | None,
         resume: bool, quiet: bool) -> dict[str, Any]:
    """Load the data, train, and turn library errors into clean command-line errors."""
    from basin.data import DatasetError
    from basin.training.data import load_train_data
    from basin.training.run import RunExistsError
    from basin.training.trainer import train
    from basin.utils.io import CheckpointError
    try:
        if run_status(out) == "complete" and resume:
            click.echo(f"{out}: run already complete; nothing to do")
        data = (None if run_status(out) == "complete"
                else load_train_data(config, mirror=mirror))
        result = train(config, data, out, device=device, resume=resume, progress=not quiet)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; continue with: basin train --out {out} --resume", err=True)
        raise SystemExit(130) from None
    except (ValueError, CheckpointError, RunExistsError, DatasetError) as exc:
        raise click.ClickException(str(exc)) from exc
    return result.metrics


def _report(metrics: dict[str, Any], out: str) -> None:
    if "test_accuracy" in metrics:
        click.echo(f"test accuracy: {metrics['test_accuracy']:.4f} "
                   f"(n={metrics['n_test']}, validation {metrics['val_accuracy']:.4f}, "
                   f"{metrics['wall_s']:.1f} s)")
    click.echo(f"run written to {out}")


def _robust(preset_name: str | None, out: str, resume: bool, changes: dict[str, Any],
            mirror: str | None, quiet: bool) -> bool:
    """Run an adversarial attractor training (basin.training.robust) if that is what the
    preset or the run in --out is; False otherwise."""
    from basin.training.robust_run import is_robust_run, robust_config_for, run_robust
    from basin.utils.io import CheckpointError
    if preset_name not in ROBUST_PRESETS and not (preset_name is None and resume
                                                  and is_robust_run(out)):
        return False
    try:
        config = robust_config_for(preset_name, out, resume, changes)
        metrics = run_robust(config, out, resume=resume, mirror=mirror, quiet=quiet)
    except (ValueError, CheckpointError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"test accuracy: {metrics.get('test_accuracy', float('nan')):.4f} "
               f"(validation {metrics['val_accuracy']:.4f}, threshold for 95% validation "
               f"acceptance {metrics['val_threshold_95']:.4f}, {metrics['wall_s']:.1f} s)")
    click.echo(f"run written to {out}")
    return True


@click.command()
@click.option("--preset", "preset_name", type=click.Choice(sorted([*PRESETS, *ROBUST_PRESETS])),
              default=None,
              help="Starting configuration (required unless --resume finds a run in --out).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run folder: model.safetensors, config.json, history.json, metrics.json.")
@seed_option
@device_option
@mirror_option
@click.option("--resume", is_flag=True, help="Continue the (partial) run in --out.")
@click.option("--dataset", type=click.Choice(DATASETS), default=None,
              help="In-distribution dataset ('toy': built-in, no mirror needed).")
@click.option("--train-size", default=None, help="Training images, or 'all'.")
@click.option("--val-size", default=None, help="Validation images, or 'all'.")
@click.option("--widths", default=None, help="Layer widths, e.g. 784,500,300,300,300,500,784.")
@click.option("--n-classes", type=int, default=None, help="Number of classes.")
@click.option("--output-activation", type=click.Choice(["relu", "clamp", "sigmoid", "linear"]),
              default=None, help="Activation of the reconstruction layer.")
@click.option("--alpha", default=None, help="Loss weights A1,A2,A3 (recon, eigen, class).")
@click.option("--jacobian", type=click.Choice(JACOBIAN_METHODS), default=None,
              help="How the eigen loss computes ||dG/dx||_F^2.")
@click.option("--projections", type=int, default=None, help="Directions per sample (projection).")
@click.option("--batch-size", type=int, default=None, help="Minibatch size.")
@click.option("--lr", default=None, help="Learning rates, one per stage: L1,L2,L3,L4.")
@click.option("--max-epochs", type=int, default=None, help="Epoch limit per stage.")
@click.option("--patience", type=int, default=None, help="Early-stopping patience (epochs).")
@click.option("--pretrain/--no-pretrain", default=None, help="Layer-wise pretraining or not.")
@click.option("--init", type=click.Choice(INITS), default=None,
              help="Weight initialisation: torch (PyTorch's default) or glorot (Keras's).")
@click.option("--eval-batch-size", type=int, default=None, help="Batch size of evaluation.")
@threads_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def train(ctx: click.Context, preset_name: str | None, out: str, seed: int,
          device: str | None, mirror: str | None, resume: bool, threads: int, quiet: bool,
          **options: Any) -> None:
    """Train an attractor network (the paper's layer-wise schedule) into --out."""
    _set_threads(threads)
    options["seed"] = seed
    changes = _overrides(ctx, options)
    if _robust(preset_name, out, resume, changes, mirror, quiet):
        return
    if resume and run_status(out) != "empty":
        try:
            stored = read_run_config(out)["train"]
        except Exception as exc:
            raise click.ClickException(str(exc)) from exc
        base = TrainConfig.from_dict(stored)
        if preset_name is not None:
            base = preset(preset_name).replace(preset=base.preset)
    elif preset_name is None:
        raise click.UsageError("--preset is required to start a new run "
                               f"(choose from {', '.join(sorted(PRESETS))})")
    else:
        base = preset(preset_name)
    try:
        config = base.replace(**changes)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    _report(_run(config, out, device=device, mirror=mirror, resume=resume, quiet=quiet), out)


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run folder (a previous smoke run there is replaced).")
@seed_option
@device_option
@mirror_option
@threads_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def smoke(out: str, seed: int, device: str | None, mirror: str | None, threads: int,
          quiet: bool) -> None:
    """Train a tiny paper-attractor-like network on MNIST end to end (seconds on a CPU)
    and print its test accuracy."""
    _set_threads(threads)
    config = preset("paper-attractor").replace(seed=seed, **SMOKE_CHANGES)
    if run_status(out) != "empty":
        try:
            previous = read_run_config(out)["train"].get("preset")
        except Exception:
            previous = None
        if previous != "smoke":
            raise click.ClickException(
                f"{out}: holds a run that is not a smoke run; choose another --out "
                f"(nothing was overwritten)")
        paths = RunPaths(Path(out))
        for name in paths.existing():
            target = paths.root / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    _report(_run(config, out, device=device, mirror=mirror, resume=False, quiet=quiet), out)
