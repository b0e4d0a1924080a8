"""What every ``basin reproduce`` command does around its run: device, threads, seed, a
one-line error instead of a traceback, the summary echoed.

Its own module so that the reproduce group (:mod:`basin.cli.reproduce`) and the commands
attached to it from other modules (:mod:`basin.cli.ablation`) share it without importing each
other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import torch


def run_reproduction(run: Callable[[torch.device], dict[str, Any]], *, out_dir: str,
                     device: str | None, seed: int, threads: int,
                     errors: tuple[type[Exception], ...], echo_sanity: bool = False) -> None:
    """What every ``reproduce`` command does around ``run(torch_device)``.

    A bad ``--device`` is a usage error (exit 2); ``errors`` raised by the run become a
    one-line message (exit 1) rather than a traceback. The summary (and with
    ``echo_sanity`` the sanity flags) is echoed, then where the report is.
    """
    import torch

    from basin.utils.device import resolve_device
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
        results = run(dev)
    except errors as exc:
        raise click.ClickException(str(exc)) from None
    for line in results["summary"]:
        click.echo(line.replace("**", ""))
    if echo_sanity:
        for line in results["sanity"]:
            click.echo(f"sanity: {line}")
    click.echo(f"report: {out_dir}/report.html ({time.perf_counter() - start:.0f} s)")
