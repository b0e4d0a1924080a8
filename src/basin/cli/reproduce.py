"""``basin reproduce``: one command per paper, from training to a report."""

from __future__ import annotations

import time

import click

from basin.cli.options import device_option, mirror_option, seed_option


@click.group()
def reproduce() -> None:
    """Reproduce a paper end to end (train or reuse, evaluate, write a report)."""


@reproduce.command("attractor-paper")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the runs, report.html, report.md and results.json; runs "
                   "already there with the same config are reused.")
@click.option("--quick", is_flag=True, help="Reduced data and epochs (minutes, labelled as "
                                            "such in the report).")
@seed_option
@device_option
@mirror_option
def attractor_paper(out_dir: str, quick: bool, seed: int, device: str | None,
                    mirror: str | None) -> None:
    """Alipour & SeyyedSalehi: attractor networks for OOD rejection under attack (MNIST)."""
    from basin.experiments.attractor_paper import reproduce_attractor_paper
    from basin.training.run import RunExistsError
    from basin.utils.device import resolve_device
    from basin.utils.io import CheckpointError
    from basin.utils.seed import seed_everything

    try:
        dev = resolve_device(device)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    seed_everything(seed)
    start = time.perf_counter()
    try:
        results = reproduce_attractor_paper(out_dir, quick=quick, seed=seed, mirror=mirror,
                                            device=dev)
    except (RunExistsError, CheckpointError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in results["summary"]:
        click.echo(line.replace("**", ""))
    click.echo(f"report: {out_dir}/report.html ({time.perf_counter() - start:.0f} s)")
