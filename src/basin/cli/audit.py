"""``basin audit``: the system-level robustness audit of a user's model on named data sets.

The model comes from a factory, ``package.module:function`` or ``path/to/file.py:function``,
called without arguments; it returns the model, or ``(model, detector)``. Without a detector
the audit uses the model's maximum softmax probability (MSP). The threshold is calibrated on
the ID data set's validation split (never its test split), then :func:`basin.audit` runs
and ``report.html``, ``report.md`` and ``results.json`` (records, config, seed, versions)
are written under ``--out``, each atomically.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import click
from torch import nn

from basin.attacks import parse_epsilon
from basin.cli.options import device_option, executor_options, mirror_option, seed_option
from basin.data import DatasetError, dataset_info, load_dataset
from basin.detectors import MSPDetector
from basin.distributed import StoreError, make_executor
from basin.models.feature_classifier import as_feature_classifier
from basin.robustness.audit import audit as run_audit
from basin.robustness.audit_attacks import SUITES, check_attacks
from basin.robustness.conditions import check_dataset_names
from basin.utils.device import resolve_device
from basin.utils.io import CheckpointError, load_state_dict_strict, load_tensors
from basin.utils.runinfo import run_record


def load_factory(target: str) -> Any:
    """The callable named by ``module:function`` or ``file.py:function``."""
    source, sep, name = target.rpartition(":")
    if not sep or not source or not name.isidentifier():
        raise ValueError(f"--model {target!r}: expected package.module:factory or "
                         "path/to/file.py:factory")
    if source.endswith(".py"):
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"--model {target!r}: file {path} not found")
        module_name = f"basin_user_model_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"--model {target!r}: cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(source)
        except ImportError as exc:
            raise ValueError(f"--model {target!r}: cannot import {source!r} ({exc})") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ValueError(f"--model {target!r}: {source} has no callable {name!r}")
    return factory


def build_system(target: str, weights: str | None) -> tuple[nn.Module, Any]:
    """Call the factory; load ``weights``; MSP on the model when no detector is returned."""
    made = load_factory(target)()
    model, detector = (made if isinstance(made, tuple) and len(made) == 2 else (made, None))
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {target!r}: the factory must return an nn.Module (or "
                         f"(model, detector)), got {type(model).__name__}")
    if weights:
        load_state_dict_strict(model, load_tensors(weights), weights)
    model.eval()
    if detector is None:
        detector = MSPDetector(as_feature_classifier(model))
    return model, detector


def _ood_data(names: list[str], shape: tuple[int, ...], mirror: str | None,
              seed: int) -> dict[str, Any]:
    out = {}
    for name in names:
        # synthetic sets take the ID images' shape; real ones have their own
        dims = shape if dataset_info(name).synthetic and len(shape) == 3 else None
        out[name] = load_dataset(name, "test", mirror=mirror, seed=seed,
                                 shape=dims)
    return out


@click.command()
@click.option("--model", "model_target", required=True,
              help="Factory returning the model or (model, detector): package.module:name "
                   "or path/to/file.py:name.")
@click.option("--weights", type=click.Path(dir_okay=False, exists=True), default=None,
              help="safetensors state dict to load into the model.")
@click.option("--id", "id_name", required=True, help="In-distribution dataset name.")
@click.option("--ood", multiple=True, required=True, help="OOD dataset name (repeatable).")
@click.option("--eps", "eps_texts", multiple=True, default=("8/255",), show_default=True,
              help="L-infinity radius, e.g. 8/255 or 0.03 (repeatable).")
@click.option("--attacks", multiple=True, default=("strongest",), show_default=True,
              help=f"Suite ({', '.join(sorted(SUITES))}) or attack specs (repeatable), e.g. "
                   "pgd:end-to-end:8/255:steps=40:penalty=10; epsilon comes from --eps.")
@click.option("--n", "n", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Inputs per data set (seeded subset).")
@click.option("--acceptance", type=click.FloatRange(0, 1, min_open=True), default=0.95,
              show_default=True, help="ID validation acceptance of the calibrated threshold.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help="Inputs per cell (a multiple of --batch-size) [default: one batch].")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for report.html, report.md and results.json; finished attack "
                   "cells stream into OUT/cells, and a rerun of the same audit skips them.")
@seed_option
@device_option
@mirror_option
@executor_options
def audit(model_target: str, weights: str | None, id_name: str, ood: tuple[str, ...],
          eps_texts: tuple[str, ...], attacks: tuple[str, ...], n: int, acceptance: float,
          batch_size: int, shard_size: int | None, out_dir: str, seed: int,
          device: str | None, mirror: str | None, executor: str,
          ray_address: str | None) -> None:
    """Audit a model (and detector) under detector-aware attacks on ID and OOD data.

    Every epsilon x attack x data set x input shard is one cell: --executor ray runs them
    as Ray tasks (a local Ray, or a cluster with --ray-address), with the same records."""
    try:  # every option is checked before any model or data is loaded
        epsilons = [parse_epsilon(e) for e in eps_texts]
        attack_arg: str | list[str] = (attacks[0] if len(attacks) == 1 and attacks[0] in SUITES
                                       else list(attacks))
        check_attacks(attack_arg)
        check_dataset_names([id_name], "--id")
        ood_names = check_dataset_names(list(ood))
        dev = resolve_device(device)
        if shard_size is not None and shard_size % batch_size:
            raise ValueError(f"--shard-size {shard_size}: expected a multiple of "
                             f"--batch-size {batch_size}")
        make_executor(executor, ray_address=ray_address)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except RuntimeError as exc:  # Ray missing: one line saying how to install it
        raise click.ClickException(str(exc)) from None
    try:
        model, detector = build_system(model_target, weights)
        model.to(dev)
        id_test = load_dataset(id_name, "test", mirror=mirror)
        calibration = load_dataset(id_name, "val", mirror=mirror)
        ood_sets = _ood_data(ood_names, tuple(id_test.images.shape[1:]), mirror, seed)
    except (ValueError, CheckpointError, DatasetError) as exc:
        raise click.ClickException(str(exc)) from None
    start = time.perf_counter()
    try:
        report = run_audit(model, detector, id_test, ood_sets, epsilons=epsilons,
                           attacks=attack_arg, n=n, seed=seed, calibration=calibration,
                           acceptance=acceptance, device=dev, batch_size=batch_size,
                           progress=True, executor=executor, ray_address=ray_address,
                           shard_size=shard_size, cells_dir=Path(out_dir) / "cells")
    except StoreError as exc:  # the folder holds the cells of another audit
        raise click.ClickException(f"{exc} (the cells of --out {out_dir})") from None
    config = {"model": model_target, "weights": weights, "id": id_name, "ood": ood_names,
              "eps": list(eps_texts), "attacks": list(attacks), "n": n,
              "acceptance": acceptance, "batch_size": batch_size, "device": str(dev),
              "executor": executor, "ray_address": ray_address, "shard_size": shard_size}
    info = run_record(config, seed)
    info["wall_time_s"] = time.perf_counter() - start
    paths = report.write(out_dir, run_info=info)
    for flag in report.suspicious:
        click.echo(f"WARNING: {flag}")
    for eps in sorted(report.worst):
        acc = report.value(condition="worst-case", epsilon=eps, dataset=id_name,
                           metric="accuracy")
        silent = report.value(condition="worst-case", epsilon=eps, dataset=id_name,
                              metric="silent_failure_rate")
        click.echo(f"eps={eps:.4g}: worst-case accuracy {acc:.4f}, ID silent failures "
                   f"{silent:.4f}")
    click.echo(f"wrote {paths['html']}, {paths['markdown']}, {paths['json']}")
