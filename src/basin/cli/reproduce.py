"""``basin reproduce``: one command per paper, from training to a report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from basin.cli.options import (
    device_option,
    executor_options,
    mirror_option,
    seed_option,
)
from basin.cli.running import run_reproduction

if TYPE_CHECKING:
    pass

# basin.training.backbone_aug.PRECISIONS, spelt out so that --help does not import torch
ATTACK_PRECISIONS = ("auto", "bf16", "fp32")


@click.group()
def reproduce() -> None:
    """Reproduce a paper end to end (train or reuse, evaluate, write a report)."""


@reproduce.command("attractor-paper")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the runs, report.html, report.md and results.json; runs "
                   "already there with the same config are reused.")
@click.option("--quick", is_flag=True, help="Reduced data and epochs (minutes, labelled as "
                                            "such in the report).")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="CPU threads for torch (0: torch's default, all cores). These MLPs are "
                   "small enough that one thread is faster than two, most of all on a "
                   "shared machine; recorded in results.json.")
@seed_option
@device_option
@mirror_option
def attractor_paper(out_dir: str, quick: bool, threads: int, seed: int, device: str | None,
                    mirror: str | None) -> None:
    """Alipour & SeyyedSalehi: attractor networks for OOD rejection under attack (MNIST)."""
    from basin.data import DatasetError
    from basin.reproductions.attractor import reproduce_attractor_paper
    from basin.training.run import RunExistsError
    from basin.utils.io import CheckpointError

    run_reproduction(
        lambda dev: reproduce_attractor_paper(out_dir, quick=quick, seed=seed, mirror=mirror,
                                              device=dev),
        out_dir=out_dir, device=device, seed=seed, threads=threads,
        errors=(RunExistsError, CheckpointError, DatasetError, ValueError))


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
@click.option("--attack-precision", type=click.Choice(ATTACK_PRECISIONS), default=None,
              help="Precision of the PGD and Square search steps on the detectors (scores "
                   "are always fp32): auto is bf16 autocast where the hardware runs it "
                   "natively, else fp32. Default: fp32 for the full run (the strongest "
                   "attack: bf16 steps measured 0.3-1.7 AUROC points weaker at 1/255), auto "
                   "with --quick.")
@click.option("--label-smoothing", type=click.FloatRange(0.0, 1.0, max_open=True),
              default=None, help="Label smoothing of the backbones trained in the run "
                                 "[default: the recipe's 0.2]; 0: plain cross-entropy.")
@click.option("--no-attacks", is_flag=True, help="The detector stage only (features, fits, "
                                                 "scores, tables): no robustness stage.")
@click.option("--no-near-ood", is_flag=True, help="Only the 10-class backbone: no 6-class "
                                                  "backbone, no near-OOD numbers.")
@seed_option
@device_option
@mirror_option
@executor_options
def feature_recon_paper(out_dir: str, quick: bool, backbone_dir: str | None, threads: int,
                        attack_precision: str | None, label_smoothing: float | None,
                        no_attacks: bool, no_near_ood: bool, seed: int, device: str | None,
                        mirror: str | None, executor: str, ray_address: str | None) -> None:
    """Mulé & Shaner: feature reconstruction + MSP for OOD and anomaly detection (CIFAR-10).

    The attack stage runs one cell per detector: --executor ray runs them as Ray tasks (same
    records); finished cells stream into OUT/attack_cells and a rerun skips them."""
    from basin.data import DatasetError
    from basin.detectors import DetectorError
    from basin.distributed import make_executor
    from basin.reproductions.feature_recon import reproduce_feature_recon_paper
    from basin.utils.io import CheckpointError

    try:  # before any training: Ray missing is one line saying how to install it
        make_executor(executor, ray_address=ray_address)
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None

    run_reproduction(
        lambda dev: reproduce_feature_recon_paper(
            out_dir, plan="quick" if quick else "full", seed=seed, mirror=mirror, device=dev,
            backbone_dir=backbone_dir, attack_precision=attack_precision, executor=executor,
            ray_address=ray_address, changes=plan_changes(label_smoothing, no_attacks,
                                                          no_near_ood)),
        out_dir=out_dir, device=device, seed=seed, threads=threads,
        errors=(CheckpointError, DatasetError, DetectorError, ValueError), echo_sanity=True)


def plan_changes(label_smoothing: float | None, no_attacks: bool, no_near_ood: bool
                 ) -> dict[str, Any]:
    """The feature-recon Plan fields that the command line overrides."""
    changes: dict[str, Any] = {}
    if label_smoothing is not None:
        changes["label_smoothing"] = label_smoothing
    if no_attacks:
        changes["attacks"] = False
    if no_near_ood:
        changes["keys"] = ("cifar10",)
    return changes


@reproduce.command("robust-attractor")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for robust/ (unless --robust-run), report.html, report.md and "
                   "results.json; a finished robust run there is reused.")
@click.option("--quick", is_flag=True, help="Small versions of all three networks, few "
                                            "attack steps (minutes, labelled in the report).")
@click.option("--reuse", type=click.Path(file_okay=False), default=None,
              help="A 'basin reproduce attractor-paper' folder whose baseline/ and "
                   "attractor/ runs are evaluated instead of training them.")
@click.option("--robust-run", "robust_runs", multiple=True, metavar="[SYSTEM=]DIR",
              help="A finished robust training run to evaluate instead of training it, as "
                   "SYSTEM=DIR (robust, robust-cor, robust-conv, ... robust-conv4; a bare DIR "
                   "is 'robust'); "
                   "repeatable.")
@click.option("--systems", default=None, metavar="A,B",
              help="Judge only these systems (e.g. robust-conv2,baseline); default: "
                   "robust-conv4, baseline and attractor (--quick: all of its).")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="CPU threads for torch (0: torch's default).")
@seed_option
@device_option
@mirror_option
def robust_attractor(out_dir: str, quick: bool, reuse: str | None,
                     robust_runs: tuple[str, ...], systems: str | None, threads: int, seed: int,
                     device: str | None, mirror: str | None) -> None:
    """Issue 13: the adversarially trained attractor system beside the paper's networks."""
    from basin.data import DatasetError
    from basin.reproductions.robust_attractor.report import reproduce_robust_attractor
    from basin.training.run import RunExistsError
    from basin.utils.io import CheckpointError

    run_reproduction(
        lambda dev: reproduce_robust_attractor(out_dir, quick=quick, seed=seed, mirror=mirror,
                                               device=dev, reuse=reuse,
                                               robust_runs=parse_robust_runs(robust_runs),
                                               systems=None if systems is None else
                                               [n.strip() for n in systems.split(",")]),
        out_dir=out_dir, device=device, seed=seed, threads=threads,
        errors=(RunExistsError, CheckpointError, DatasetError, ValueError), echo_sanity=True)


# Its own module (issue 14's ablation); imported last, as it needs nothing defined here at
# import time.
from basin.cli.ablation import attractor_ablation  # noqa: E402

reproduce.add_command(attractor_ablation)


def parse_robust_runs(values: tuple[str, ...]) -> dict[str, str]:
    """``--robust-run`` values as {system: folder}; a value without ``=`` is ``robust``."""
    runs: dict[str, str] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep:
            name, folder = "robust", value
        if not name or not folder:
            raise click.BadParameter(f"expected SYSTEM=DIR or DIR, got {value!r}",
                                     param_hint="--robust-run")
        if name in runs:
            raise click.BadParameter(f"system {name!r} given twice", param_hint="--robust-run")
        runs[name] = folder
    return runs
