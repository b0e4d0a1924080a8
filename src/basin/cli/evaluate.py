"""``basin evaluate``: clean, attacked and corrupted evaluation of a trained run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import click

from basin.cli.options import device_option, mirror_option, seed_option


def _split_names(values: tuple[str, ...]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


@click.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder written by `basin train`.")
@click.option("--ood", multiple=True, default=("fashion-mnist",), show_default=True,
              help="OOD dataset name(s), comma-separated or repeated.")
@click.option("--attack", "attacks", multiple=True,
              help="Attack spec, repeatable, e.g. fgsm:paper:20/255 or pgd:ce:20/255:steps=40.")
@click.option("--corruption", "corruptions", multiple=True,
              help="Corruption spec, repeatable, e.g. gaussian-noise:3.")
@click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True,
              help="Iterations n of G before the similarity score.")
@click.option("--threshold", type=float, default=0.8, show_default=True,
              help="Similarity threshold T (the paper's 0.8).")
@click.option("--calibrate", "acceptance", type=click.FloatRange(0, 1, min_open=True),
              default=None, help="Instead of --threshold, calibrate T on the ID validation "
                                 "split to accept this fraction (e.g. 0.95).")
@click.option("--classify", type=click.Choice(["input", "iterate"]), default="input",
              show_default=True, help="Classify F(x) or F(G^n(x)).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Use a seeded subset of N inputs per dataset (quick runs).")
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the records, sanity flags and settings as JSON here.")
@seed_option
@device_option
@mirror_option
def evaluate(run_dir: str, ood: tuple[str, ...], attacks: tuple[str, ...],
             corruptions: tuple[str, ...], steps: int, threshold: float,
             acceptance: float | None, classify: Literal["input", "iterate"],
             limit: int | None, batch_size: int, json_out: str | None, seed: int,
             device: str | None, mirror: str | None) -> None:
    """Evaluate a trained run clean, under attack and under corruption (ID and OOD)."""
    from basin.report.tables import format_records
    from basin.robustness.evaluation import (
        EvaluationSettings,
        check_dataset_names,
        evaluate_run,
        parse_conditions,
    )
    from basin.training.run import load_run
    from basin.utils.device import resolve_device
    from basin.utils.io import CheckpointError, atomic_write_json
    from basin.utils.runinfo import run_record
    from basin.utils.seed import seed_everything

    ood_names = _split_names(ood)
    try:  # every spec is checked before any work starts
        parse_conditions(attacks, corruptions)
        check_dataset_names(ood_names)
        dev = resolve_device(device)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        run = load_run(run_dir, device=dev)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    seed_everything(seed)
    settings = EvaluationSettings(steps=steps, threshold=None if acceptance else threshold,
                                  acceptance=acceptance or 0.95, classify=classify,
                                  limit=limit, batch_size=batch_size, seed=seed,
                                  loss_weights=tuple(run.config["train"]["weights"]))
    start = time.perf_counter()
    result = evaluate_run(run.mlp(), id_name=run.config["train"]["dataset"],
                          ood=ood_names, attacks=attacks, corruptions=corruptions,
                          settings=settings, mirror=mirror, device=dev)
    click.echo(format_records(result.records))
    for flag in result.sanity:
        click.echo(f"sanity: {flag}")
    if json_out:
        payload = result.to_json()
        payload["run"] = run_record({"run": str(Path(run_dir).resolve()),
                                     "attacks": list(attacks),
                                     "corruptions": list(corruptions)}, seed)
        payload["wall_time_s"] = time.perf_counter() - start
        atomic_write_json(json_out, payload)
        click.echo(f"wrote {json_out}")
