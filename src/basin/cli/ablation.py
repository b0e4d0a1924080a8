"""``basin reproduce attractor-ablation``: the attractor paper under several readings.

Attached to the ``reproduce`` group by :mod:`basin.cli.reproduce`; imports nothing heavy at
module level so that ``basin --help`` stays fast.
"""

from __future__ import annotations

import click

from basin.cli.options import device_option, mirror_option, seed_option

# basin.reproductions.attractor_ablation.READING_NAMES, spelt out so that --help does not
# import torch (tests/test_attractor_ablation.py checks the two agree)
READINGS = ("literal", "literal-exact", "sigmoid-joint-exact", "baseline", "sigmoid-joint",
            "joint", "sigmoid-joint-sum", "sum", "clamp-joint", "sigmoid",
            "sigmoid-joint-eigen10", "clamp", "glorot", "sigmoid-joint-sum-glorot", "sum-glorot",
            "sigmoid-sum-glorot", "joint-sum-glorot", "sigmoid-joint-glorot",
            "sigmoid-joint-sum-glorot-exact")


def _readings(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in READINGS]
    if unknown or not names:
        raise click.BadParameter(f"unknown reading(s) {unknown}; choose from "
                                 f"{', '.join(READINGS)}", param_hint="--readings")
    return names


@click.command("attractor-ablation")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for cells/ (one training run per reading and seed), grid/ "
                   "(finished cells: a rerun resumes), report.html, report.md, results.json.")
@click.option("--quick", is_flag=True, help="Tiny training sets, 2 epochs, 300 test inputs "
                                            "(minutes, labelled as such in the report).")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Training seeds per attractor reading, from --seed on [default: 3; 2 "
                   "with --quick]. The baseline always gets one (20 minutes a seed).")
@click.option("--readings", default=None,
              help=f"Comma-separated readings to run, in this order [default: all: "
                   f"{','.join(READINGS)}].")
@click.option("--reuse", type=click.Path(file_okay=False), default=None,
              help="A 'basin reproduce attractor-paper' folder: its attractor/ and baseline/ "
                   "runs are the literal reading's and the baseline's --seed cells when "
                   "their configs match.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="CPU threads for torch (0: torch's default).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Where the cells run (ray: a local or --ray-address "
                                      "cluster; needs the ray extra).")
@click.option("--ray-address", default=None, help="Ray cluster to join (executor ray).")
@seed_option
@device_option
@mirror_option
def attractor_ablation(out_dir: str, quick: bool, seeds: int | None, readings: str | None,
                       reuse: str | None, threads: int, executor: str,
                       ray_address: str | None, seed: int, device: str | None,
                       mirror: str | None) -> None:
    """Issue 14: the attractor paper's Tables 1/2 and accuracies under several readings."""
    from basin.cli.running import run_reproduction
    from basin.data import DatasetError
    from basin.distributed import GridError, StoreError
    from basin.reproductions.attractor_ablation import (
        AblationPlan,
        reproduce_attractor_ablation,
    )
    from basin.training.run import RunExistsError
    from basin.utils.io import CheckpointError

    plan = AblationPlan.make(quick, seeds=seeds, seed=seed, readings=_readings(readings))
    run_reproduction(
        lambda dev: reproduce_attractor_ablation(out_dir, plan=plan, mirror=mirror, device=dev,
                                                 reuse=reuse, executor=executor,
                                                 ray_address=ray_address),
        out_dir=out_dir, device=device, seed=seed, threads=threads,
        errors=(RunExistsError, CheckpointError, DatasetError, GridError, StoreError,
                ValueError))
