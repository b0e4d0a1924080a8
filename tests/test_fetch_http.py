"""A fresh machine without the mirror: datasets download over HTTP, verified, into the cache.

A threaded ``http.server`` on 127.0.0.1 serves a web copy of the mirror (tiny fake files whose
checksums are patched into the registry, and, in the integration test, copies of real mirror
files); ``$BASIN_DATA_URL`` points basin at it. Checks the download, its verification, the
refusal of a corrupted file (nothing left in the cache) and the one-line offline error.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from basin.cli import main
from basin.data import DatasetError, dataset_info, load_dataset, sources
from basin.data.checksums import SHA256
from basin.data.sources import Remote, download_files

CONTENT = b"official file content\n" * 100
REL = "fake/data.bin"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder) of a local web server running in a thread."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def no_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)
    monkeypatch.delenv(sources.BASE_URL_ENV, raising=False)
    monkeypatch.setenv(sources.HOME_ENV, str(tmp_path / "home"))


def serve(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def cached_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_download_from_a_web_copy_of_the_mirror_is_verified(
        server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, root = server
    monkeypatch.setitem(SHA256, REL, hashlib.sha256(CONTENT).hexdigest())
    serve(root, f"{REL}.gz", gzip.compress(CONTENT))
    cache = tmp_path / "cache"
    lines: list[str] = []
    assert download_files([REL], cache, base_url=url, log=lines.append) == \
        [cache / "fake" / "data.bin.gz"]
    assert gzip.decompress((cache / "fake" / "data.bin.gz").read_bytes()) == CONTENT
    assert lines == [f"downloading {url}/{REL}.gz -> {cache / 'fake' / 'data.bin.gz'}"]
    # a copy that stores the file uncompressed: the .gz is a 404, the plain name is used
    (root / f"{REL}.gz").unlink()
    serve(root, REL, CONTENT)
    monkeypatch.setenv(sources.BASE_URL_ENV, url)  # the environment variable works alike
    assert download_files([REL], tmp_path / "cache2") == [tmp_path / "cache2" / REL]
    assert (tmp_path / "cache2" / REL).read_bytes() == CONTENT


def test_a_corrupted_download_is_refused_and_leaves_nothing(
        server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, root = server
    monkeypatch.setitem(SHA256, REL, hashlib.sha256(CONTENT).hexdigest())
    damaged = bytearray(CONTENT)
    damaged[1000] ^= 0x01
    serve(root, f"{REL}.gz", gzip.compress(bytes(damaged)))
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=r"checksum mismatch for fake/data\.bin"):
        download_files([REL], cache, base_url=url)
    assert cached_files(cache) == []
    # the same through an official URL over HTTP (REMOTES entry pointed at the server)
    monkeypatch.setitem(sources.REMOTES, REL, Remote(f"{url}/{REL}.gz"))
    with pytest.raises(DatasetError, match="checksum mismatch"):
        download_files([REL], cache)
    assert cached_files(cache) == []


def test_offline_fails_in_one_line_saying_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port with nothing listening: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DatasetError) as info:
        download_files(["mnist/t10k-labels-idx1-ubyte"], tmp_path / "cache",
                       base_url=f"http://127.0.0.1:{port}", timeout=5)
    message = str(info.value)
    assert "\n" not in message and message.startswith("mnist/t10k-labels-idx1-ubyte: could not")
    assert f"127.0.0.1:{port}" in message
    assert message.endswith("set $BASIN_DATA_MIRROR (or --mirror DIR) to a data mirror, or run "
                            "online")
    assert cached_files(tmp_path / "cache") == []


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) \
        + array.tobytes()


def serve_fake_notmnist(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """notMNIST test files whose image i has pixel (0, 0) = i mod 256."""
    images = np.zeros((10_000, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(10_000) % 256
    files = {"notmnist/t10k-images-idx3-ubyte": idx_bytes(images),
             "notmnist/t10k-labels-idx1-ubyte": idx_bytes((np.arange(10_000) % 10)
                                                          .astype(np.uint8))}
    for rel, data in files.items():
        monkeypatch.setitem(SHA256, rel, hashlib.sha256(data).hexdigest())
        serve(root, f"{rel}.gz", gzip.compress(data, 1))


def test_loading_by_name_without_a_mirror_downloads(
        server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, root = server
    serve_fake_notmnist(root, monkeypatch)
    monkeypatch.setenv(sources.BASE_URL_ENV, url)
    data = load_dataset("notmnist")
    assert len(data) == 10_000
    assert float(data.images[300, 0, 0, 0]) == pytest.approx((300 % 256) / 255)
    cache = tmp_path / "home" / "data"
    assert [p.relative_to(cache).as_posix() for p in cached_files(cache)] == [
        "notmnist/t10k-images-idx3-ubyte.gz", "notmnist/t10k-labels-idx1-ubyte.gz"]


def test_cli_fetch_then_verify_without_a_mirror(
        server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, root = server
    serve_fake_notmnist(root, monkeypatch)
    runner = CliRunner()
    before = runner.invoke(main, ["data", "verify", "notmnist"])
    assert before.exit_code == 1 and "basin data fetch" in before.output
    fetched = runner.invoke(main, ["data", "fetch", "--base-url", url, "notmnist"])
    assert fetched.exit_code == 0, fetched.output
    assert "notmnist: OK (2 files downloaded)" in fetched.output
    after = runner.invoke(main, ["data", "verify", "notmnist"])
    assert after.exit_code == 0 and "notmnist: OK (2 files)" in after.output


def test_real_mirror_files_download_and_verify(
        mirror_dir: Path, server: tuple[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, root = server
    for rel in dataset_info("notmnist").files:  # copies of the real files, real checksums
        serve(root, f"{rel}.gz", (mirror_dir / f"{rel}.gz").read_bytes())
    monkeypatch.setenv(sources.BASE_URL_ENV, url)
    data = load_dataset("notmnist")
    assert len(data) == 10_000 and data.images.shape[1:] == (1, 28, 28)
    assert len(cached_files(tmp_path / "home" / "data")) == 2
