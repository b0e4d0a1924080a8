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
    from basin.data import DatasetError
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
    except (RunExistsError, CheckpointError, DatasetError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in results["summary"]:
        click.echo(line.replace("**", ""))
    click.echo(f"report: {out_dir}/report.html ({time.perf_counter() - start:.0f} s)")


@reproduce.command("feature-recon-paper")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for backbone/, backbone6/, detectors/, report.html, report.md and "
                   "results.json; backbones and detectors already there are reused.")
@click.option("--quick", is_flag=True, help="Reduced data, epochs and PGD steps (minutes, "
                                            "labelled as such in the report).")
@click.option("--backbone", "backbone_dir", type=click.Path(file_okay=False), default=None,
              help="A trained 10-class backbone folder (basin train-backbone) to use instead "
                   "of training one in --out/backbone.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="CPU threads for torch (0: torch's default, all cores; 1 is faster on a "
                   "machine shared with other jobs).")
@seed_option
@device_option
@mirror_option
def feature_recon_paper(out_dir: str, quick: bool, backbone_dir: str | None, threads: int,
                        seed: int, device: str | None, mirror: str | None) -> None:
    """Mulé & Shaner: feature reconstruction + MSP for OOD and anomaly detection (CIFAR-10)."""
    import torch

    from basin.data import DatasetError
    from basin.detectors import DetectorError
    from basin.experiments.feature_recon_paper import reproduce_feature_recon_paper
    from basin.utils.device import resolve_device
    from basin.utils.io import CheckpointError
    from basin.utils.seed import seed_everything

    try:
        dev = resolve_device(device)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if threads:
        torch.set_num_threads(threads)
    seed_everything(seed)
    start = time.perf_counter()
    try:
        results = reproduce_feature_recon_paper(out_dir, plan="quick" if quick else "full",
                                                seed=seed, mirror=mirror, device=dev,
                                                backbone_dir=backbone_dir)
    except (CheckpointError, DatasetError, DetectorError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in results["summary"]:
        click.echo(line.replace("**", ""))
    for line in results["sanity"]:
        click.echo(f"sanity: {line}")
    click.echo(f"report: {out_dir}/report.html ({time.perf_counter() - start:.0f} s)")
