"""Where dataset files come from, and proof that they are the right files.

Each file (a path relative to the mirror root, e.g. ``mnist/train-images-idx3-ubyte``) is
looked for, in this order, in

1. the read-only *mirror* folder: the ``mirror`` argument, else ``$BASIN_DATA_MIRROR``;
2. the local *cache*: the ``cache_dir`` argument, else ``$BASIN_HOME/data`` (``BASIN_HOME``
   defaults to ``~/.cache/basin``), laid out like the mirror;
3. the official URL (or, with ``$BASIN_DATA_URL`` / ``base_url``, a web copy of the mirror
   laid out like it), when downloading is asked for (``download=True``, ``basin data fetch``)
   or, by default, whenever no mirror is configured; the download lands in the cache, shown
   with a progress bar on a terminal, and is renamed into place only once verified. Offline,
   it fails in one line saying to set ``$BASIN_DATA_MIRROR`` or to run online.

In the mirror and the cache a file may be stored as ``name`` or ``name.gz``. Every file is
verified against the sha256 of its uncompressed content (:mod:`basin.data.checksums`) before
use, or, for the few files with only a published MD5 (the Tiny-ImageNet zip), against the
MD5 of the archive as published; a ``.gz`` that is part of the file's own name (``x.tar.gz``)
is never decompressed for hashing. A passing result is memoised per (path, size, mtime) so a
process hashes a file once.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from basin.data.checksums import MD5, SHA256
from basin.data.errors import DatasetError
from basin.utils.io import atomic_path

MIRROR_ENV = "BASIN_DATA_MIRROR"
HOME_ENV = "BASIN_HOME"
BASE_URL_ENV = "BASIN_DATA_URL"
"""Base URL of a web copy of the mirror (``<base>/<relpath>`` or ``.gz``), for every file."""

_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
_NOTMNIST_URL = ("https://raw.githubusercontent.com/davidflanagan/notMNIST-to-MNIST/"
                 "17823f4d4a3acd8317c07866702d2eb2ac79c7a0/")
_OMNIGLOT_URL = ("https://raw.githubusercontent.com/brendenlake/omniglot/"
                 "057f034baf2ecb8530bc5710e5a23584d2a519cc/python/")
_TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


@dataclass(frozen=True)
class Remote:
    """Where the official copy of a file lives: a URL, optionally a member of a tarball."""

    url: str
    member: str | None = None  # path inside the (gzipped) tarball at ``url``

    @property
    def gzipped(self) -> bool:
        return self.member is None and self.url.endswith(".gz")


def _idx_remotes(folder: str, base: str, stems: Iterable[str]) -> dict[str, Remote]:
    return {f"{folder}/{s}": Remote(f"{base}{s}.gz") for s in stems}


_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
REMOTES: dict[str, Remote] = {
    **_idx_remotes("mnist", _MNIST_URL, _IDX),
    **_idx_remotes("fashion-mnist", _FASHION_URL, _IDX),
    **_idx_remotes("notmnist", _NOTMNIST_URL, _IDX[2:]),
    **{f"cifar-10-batches-bin/{b}": Remote(_CIFAR_URL, f"cifar-10-batches-bin/{b}")
       for b in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]},
    "omniglot/images_background_small1.zip": Remote(f"{_OMNIGLOT_URL}images_background_small1.zip"),
    "omniglot/images_background_small2.zip": Remote(f"{_OMNIGLOT_URL}images_background_small2.zip"),
    # the one-shot runs sit one folder deeper in the Omniglot repository
    "omniglot/all_runs.zip": Remote(f"{_OMNIGLOT_URL}one-shot-classification/all_runs.zip"),
    "tiny-imagenet-200.zip": Remote(_TINY_IMAGENET_URL),
}
"""Relative file path -> its official source.

ODIN's resized sets (``odin/*.tar``) have none: the official Dropbox archives hold the same
JPEGs in differently packed tars, which the mirror's sha256 cannot verify; they come from a
data mirror (or a web copy of one, ``$BASIN_DATA_URL``) only.
"""


def resolve_mirror(mirror: str | os.PathLike[str] | None) -> Path | None:
    """The mirror folder to use (argument, else ``$BASIN_DATA_MIRROR``), or None for none."""
    origin = "mirror"
    if mirror is None or str(mirror) == "":
        mirror = os.environ.get(MIRROR_ENV) or None
        origin = f"${MIRROR_ENV}"
    if mirror is None:
        return None
    path = Path(mirror).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{path}: {origin} folder does not exist or is not a folder")
    return path


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The data cache root: the argument, else ``$BASIN_HOME/data`` (~/.cache/basin/data)."""
    if cache_dir is not None and str(cache_dir) != "":
        return Path(cache_dir).expanduser()
    home = os.environ.get(HOME_ENV) or Path.home() / ".cache" / "basin"
    return Path(home).expanduser() / "data"


@dataclass(frozen=True)
class Located:
    """A file found on disk: its relative name, actual path and where it was found."""

    relpath: str
    path: Path
    origin: str  # "mirror" or "cache"


def locate(relpath: str, *, mirror: Path | None, cache_dir: Path) -> Located | None:
    """Find ``relpath`` (as itself or ``.gz``) in the mirror, then the cache; None if absent."""
    for origin, root in (("mirror", mirror), ("cache", cache_dir)):
        if root is None:
            continue
        for candidate in (root / relpath, root / f"{relpath}.gz"):
            if candidate.is_file():
                return Located(relpath, candidate, origin)
    return None


def missing_message(relpath: str, mirror: Path | None, cache_dir: Path) -> str:
    """The error text for a file found nowhere, saying where it was looked for."""
    where = f"mirror {mirror} or cache {cache_dir}" if mirror is not None \
        else f"cache {cache_dir} (no mirror given)"
    return (f"{relpath}: not found in {where}, as the file or .gz; pass --mirror DIR / set "
            f"${MIRROR_ENV}, or run `basin data fetch` to download it")


_verified: dict[tuple[str, int, int], str] = {}


def _memo_key(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from exc
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def expected_digest(relpath: str) -> str | None:
    """``relpath``'s known checksum: sha256 hex, or ``md5:`` + hex for MD5-only files."""
    if relpath in SHA256:
        return SHA256[relpath]
    if relpath in MD5:
        return f"md5:{MD5[relpath]}"
    return None


def _already_verified(key: tuple[str, int, int], relpath: str) -> bool:
    expected = expected_digest(relpath)
    return expected is not None and _verified.get(key) == expected


def _algorithm(relpath: str, path: Path) -> str:
    """The hashlib name of ``relpath``'s checksum; an unknown file is an error."""
    if relpath in SHA256:
        return "sha256"
    if relpath in MD5:
        return "md5"
    raise DatasetError(f"{path}: no checksum known for {relpath}")


def _tagged(algorithm: str, hexdigest: str) -> str:
    return hexdigest if algorithm == "sha256" else f"{algorithm}:{hexdigest}"


def _stored_gzipped(relpath: str, path: Path) -> bool:
    """Whether ``path`` is ``relpath`` wrapped in gzip (``x.tar.gz`` itself is not)."""
    name, own = path.name, Path(relpath).name
    return name == f"{own}.gz" or (name.endswith(".gz") and not own.endswith(".gz"))


def _open_content(path: Path, gzipped: bool) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if gzipped else path.open("rb")


def _check_digest(relpath: str, path: Path, digest: str) -> str:
    expected = expected_digest(relpath)
    if expected is None:
        raise DatasetError(f"{path}: no checksum known for {relpath}")
    if digest != expected:
        what = ("md5 of the file" if relpath in MD5
                else "sha256 of the uncompressed content")
        raise DatasetError(f"{path}: checksum mismatch for {relpath} ({what} is "
                           f"{digest.removeprefix('md5:')}, expected "
                           f"{expected.removeprefix('md5:')})")
    return digest


def verify_file(relpath: str, path: Path, *, gzipped: bool | None = None) -> str:
    """Hash ``path``'s uncompressed content and check it against ``relpath``'s checksum.

    ``gzipped`` defaults to whether ``path`` is ``relpath`` plus ``.gz``. Returns the digest:
    sha256 hex, or ``md5:`` + hex for the files with only a published MD5.
    """
    key = _memo_key(path)
    if _already_verified(key, relpath):
        return _verified[key]
    algorithm = _algorithm(relpath, path)
    hasher = hashlib.new(algorithm, usedforsecurity=False)
    try:
        with _open_content(path, _stored_gzipped(relpath, path) if gzipped is None
                           else gzipped) as stream:
            while chunk := stream.read(1 << 20):
                hasher.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: unreadable or corrupt ({exc})") from exc
    _verified[key] = _check_digest(relpath, path, _tagged(algorithm, hasher.hexdigest()))
    return _verified[key]


def read_verified(relpath: str, path: Path) -> bytes:
    """The uncompressed content of ``path``, after checking it against ``relpath``'s checksum."""
    key = _memo_key(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from exc
    if _stored_gzipped(relpath, path):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt gzip data ({exc})") from exc
    if not _already_verified(key, relpath):
        algorithm = _algorithm(relpath, path)
        digest = hashlib.new(algorithm, data, usedforsecurity=False).hexdigest()
        _verified[key] = _check_digest(relpath, path, _tagged(algorithm, digest))
    return data


def _download(url: str, dest: Path, timeout: float, label: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, dest.open("wb") as out:
            length = response.headers.get("Content-Length") if response.headers else None
            total = int(length) if length and length.isdigit() else None
            # disable=None: a bar on a terminal, nothing in logs and tests
            with tqdm.wrapattr(out, "write", total=total, desc=Path(label).name, unit="B",
                               unit_scale=True, unit_divisor=1024, leave=False,
                               disable=None) as progress:
                shutil.copyfileobj(response, progress, 1 << 20)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DatasetError(f"{label}: could not download {url} ({reason}): set "
                           f"${MIRROR_ENV} (or --mirror DIR) to a data mirror, or run "
                           "online") from exc


def _download_from_copy(relpath: str, base_url: str, cache_dir: Path, timeout: float,
                        log: Callable[[str], None] | None) -> Path:
    """Fetch ``relpath`` from a web copy of the mirror: ``<base>/<relpath>.gz``, else as is."""

    def fetch(name: str) -> Path:
        url, target = f"{base_url.rstrip('/')}/{name}", cache_dir / name
        if log:
            log(f"downloading {url} -> {target}")
        with atomic_path(target) as tmp:
            _download(url, tmp, timeout, relpath)
            verify_file(relpath, tmp, gzipped=name != relpath)
        return target

    if not relpath.endswith(".gz"):  # the mirror stores most files gzipped
        try:
            return fetch(f"{relpath}.gz")
        except DatasetError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, urllib.error.HTTPError) and cause.code == 404):
                raise
    return fetch(relpath)


def _extract_members(archive: Path, url: str, wanted: dict[str, str], cache_dir: Path) -> None:
    """Copy tarball members (``member -> relpath``) into the cache, each verified first."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member, relpath in wanted.items():
                stream = tar.extractfile(member)
                if stream is None:
                    raise DatasetError(f"{url}: archive has no file {member}")
                with atomic_path(cache_dir / relpath) as tmp:
                    with tmp.open("wb") as out:
                        shutil.copyfileobj(stream, out, 1 << 20)
                    verify_file(relpath, tmp, gzipped=False)
    except KeyError as exc:
        raise DatasetError(f"{url}: archive lacks a member ({exc})") from exc
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{url}: corrupt or truncated archive ({exc})") from exc


def download_files(relpaths: Iterable[str], cache_dir: Path, *, timeout: float = 60.0,
                   log: Callable[[str], None] | None = None,
                   base_url: str | None = None) -> list[Path]:
    """Download ``relpaths`` into ``cache_dir``, verified; returns the paths written.

    From the official URLs, or from ``base_url`` (else ``$BASIN_DATA_URL``), a web copy of
    the mirror. Each file goes to a temporary name first and is renamed only after its checksum
    passes, so a failure or Ctrl-C never leaves a partial or wrong file in the cache.
    """
    relpaths = list(dict.fromkeys(relpaths))
    base_url = base_url or os.environ.get(BASE_URL_ENV) or None
    if base_url is not None:
        return [_download_from_copy(r, base_url, cache_dir, timeout, log) for r in relpaths]
    unknown = [r for r in relpaths if r not in REMOTES]
    if unknown:
        raise DatasetError(f"{unknown[0]}: no official download URL known; only a data mirror "
                           f"(${MIRROR_ENV}) or a web copy of one (${BASE_URL_ENV}) has it")
    by_archive: dict[str, dict[str, str]] = {}
    written = []
    for relpath in relpaths:
        remote = REMOTES[relpath]
        if remote.member is not None:
            by_archive.setdefault(remote.url, {})[remote.member] = relpath
            continue
        # an archive named .gz (x.tar.gz) is the file itself, not a gzip wrapper around it
        gzipped = remote.gzipped and not relpath.endswith(".gz")
        target = cache_dir / (f"{relpath}.gz" if gzipped else relpath)
        if log:
            log(f"downloading {remote.url} -> {target}")
        with atomic_path(target) as tmp:
            _download(remote.url, tmp, timeout, relpath)
            verify_file(relpath, tmp, gzipped=gzipped)
        written.append(target)
    for url, wanted in by_archive.items():
        if log:
            log(f"downloading {url} and extracting {len(wanted)} files into {cache_dir}")
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download.", dir=cache_dir) as tmpdir:
            archive = Path(tmpdir) / Path(url).name
            _download(url, archive, timeout, ", ".join(wanted.values()))
            _extract_members(archive, url, wanted, cache_dir)
        written.extend(cache_dir / r for r in wanted.values())
    return written
