"""``basin data``: list, verify and fetch the datasets.

``verify`` is what ``make run`` calls first when a mirror exists (without one it calls
``fetch`` of the datasets the main job needs): one line per dataset, ``OK`` or ``FAILED`` with
the reason naming the file, exit status 1 if anything failed. An optional dataset (the
Tiny-ImageNet sets, which the offline mirror lacks) with none of its files on disk is reported
``absent (optional)`` and does not fail; once any of its files is present it is verified like
the others. Errors are printed, never raised as tracebacks.
"""

from __future__ import annotations

import sys

import click

from basin.cli.options import mirror_option
from basin.data import DatasetError, dataset_info, dataset_names, verify_dataset
from basin.data.sources import (
    BASE_URL_ENV,
    download_files,
    locate,
    resolve_cache_dir,
    resolve_mirror,
)

_NAMES = click.Choice(dataset_names())
_cache_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False), default=None,
    help="Download cache [default: $BASIN_HOME/data, BASIN_HOME defaulting to ~/.cache/basin].")


@click.group()
def data() -> None:
    """List, verify and download the datasets."""


def _source(name: str, mirror: str | None, cache_dir: str | None) -> str:
    info = dataset_info(name)
    if info.synthetic:
        return "generated"
    mirror_dir, cache = resolve_mirror(mirror), resolve_cache_dir(cache_dir)
    origins = {getattr(locate(f, mirror=mirror_dir, cache_dir=cache), "origin", "missing")
               for f in info.files}
    if "missing" in origins:
        return "absent (optional)" if info.optional else "missing"
    return "+".join(sorted(origins))


def _absent_optional(name: str, mirror: str | None, cache_dir: str | None) -> str | None:
    """For an optional dataset with no file on disk, where it was looked for; else None."""
    info = dataset_info(name)
    if not info.optional:
        return None
    mirror_dir, cache = resolve_mirror(mirror), resolve_cache_dir(cache_dir)
    if any(locate(f, mirror=mirror_dir, cache_dir=cache) is not None for f in info.files):
        return None
    where = f"mirror {mirror_dir} or cache {cache}" if mirror_dir is not None \
        else f"cache {cache}"
    return f"{', '.join(info.files)} not in {where}"


@data.command("list")
@mirror_option
@_cache_option
def list_(mirror: str | None, cache_dir: str | None) -> None:
    """Show every dataset: splits with sizes, image shape, and where its files were found."""
    width = max(map(len, dataset_names())) + 1
    for name in dataset_names():
        info = dataset_info(name)
        splits = " ".join(f"{s}={info.sizes[s]}" for s in info.splits)
        shape = "x".join(str(d) for d in info.shape)
        try:
            source = _source(name, mirror, cache_dir)
        except DatasetError as exc:
            source = f"error: {exc}"
        click.echo(f"{name:<{width}} {shape:<8} {info.n_classes:>4} classes  {splits:<33} {source}")


@data.command()
@mirror_option
@_cache_option
@click.argument("names", nargs=-1, type=_NAMES)
def verify(mirror: str | None, cache_dir: str | None, names: tuple[str, ...]) -> None:
    """Check every file of NAMES (default: all) against its sha256; exit 1 on any failure."""
    failed = False
    for name in names or dataset_names():
        if dataset_info(name).synthetic:
            click.echo(f"{name}: OK (generated)")
            continue
        try:
            absent = _absent_optional(name, mirror, cache_dir)
            if absent is not None:
                click.echo(f"{name}: absent (optional): {absent}; `basin data fetch {name}` "
                           "downloads it")
                continue
            checksums = verify_dataset(name, mirror=mirror, cache_dir=cache_dir,
                                       download=False)
        except DatasetError as exc:
            failed = True
            click.echo(f"{name}: FAILED: {exc}")
        else:
            click.echo(f"{name}: OK ({len(checksums)} files)")
    if failed:
        sys.exit(1)


@data.command()
@mirror_option
@_cache_option
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait on the network before giving up.")
@click.option("--base-url", default=None, metavar="URL",
              help=f"Fetch from a web copy of the mirror at URL [default: ${BASE_URL_ENV}, "
                   "else the official sources].")
@click.argument("names", nargs=-1, required=True, type=_NAMES)
def fetch(mirror: str | None, cache_dir: str | None, timeout: float, base_url: str | None,
          names: tuple[str, ...]) -> None:
    """Download NAMES' files missing from the mirror and cache into the cache, verified."""
    failed = False
    for name in names:
        info = dataset_info(name)
        if info.synthetic:
            click.echo(f"{name}: OK (generated)")
            continue
        try:
            mirror_dir, cache = resolve_mirror(mirror), resolve_cache_dir(cache_dir)
            missing = [f for f in info.files
                       if locate(f, mirror=mirror_dir, cache_dir=cache) is None]
            download_files(missing, cache, timeout=timeout, base_url=base_url,
                           log=lambda line: click.echo(line, err=True))
            verify_dataset(name, mirror=mirror_dir, cache_dir=cache, download=False)
        except DatasetError as exc:
            failed = True
            click.echo(f"{name}: FAILED: {exc}")
        else:
            click.echo(f"{name}: OK ({len(missing)} files downloaded)")
    if failed:
        sys.exit(1)
