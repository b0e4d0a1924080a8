"""Options shared by every command that trains or evaluates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

F = Callable[..., Any]


def seed_option(f: F) -> F:
    return click.option("--seed", type=int, default=0, show_default=True,
                        help="Random seed (data order, initialisation, attacks).")(f)


def device_option(f: F) -> F:
    return click.option("--device", default=None,
                        help="torch device, e.g. cpu or cuda:0 [default: cuda if available, "
                             "else cpu].")(f)


def mirror_option(f: F) -> F:
    return click.option("--mirror", type=click.Path(file_okay=False), default=None,
                        envvar="BASIN_DATA_MIRROR",
                        help="Read-only data mirror folder (layout of ../shared/data); "
                             "also $BASIN_DATA_MIRROR.")(f)


def executor_options(f: F) -> F:
    """``--executor local|ray`` and ``--ray-address`` (basin.distributed): where the cells of
    a grid run; the records are the same either way."""
    f = click.option("--ray-address", default=None,
                     help="Join a running Ray cluster: auto (this machine's) or "
                          "ray://HOST:PORT; without it --executor ray starts a local Ray "
                          "and shuts it down after the run.")(f)
    return click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
                        show_default=True,
                        help="Run the grid's cells in this process (local) or as Ray tasks "
                             "(ray; pip install 'basin[ray]').")(f)
