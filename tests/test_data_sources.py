"""Finding files (mirror, cache, download), checksum verification and its memo."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from basin.data import DatasetError, sources
from basin.data.checksums import SHA256
from basin.data.sources import (
    Remote,
    download_files,
    locate,
    read_verified,
    resolve_cache_dir,
    resolve_mirror,
    verify_file,
)

CONTENT = b"official file content\n" * 100
REL = "fake/data.bin"


@pytest.fixture
def fake_checksum(monkeypatch: pytest.MonkeyPatch) -> str:
    digest = hashlib.sha256(CONTENT).hexdigest()
    monkeypatch.setitem(SHA256, REL, digest)
    return digest


def test_checksum_table_matches_the_mirror_list(mirror_dir: Path) -> None:
    listed = {}
    for line in (mirror_dir / "SHA256SUMS.uncompressed").read_text().splitlines():
        digest, name = line.split()
        listed[name.removeprefix("./")] = digest
    del listed["cifar-10-batches-bin/batches.meta.txt"]  # differs from the official copy
    assert listed == SHA256


def test_mirror_argument_then_environment(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)
    assert resolve_mirror(None) is None
    monkeypatch.setenv(sources.MIRROR_ENV, str(tmp_path))
    assert resolve_mirror(None) == tmp_path
    other = tmp_path / "other"
    other.mkdir()
    assert resolve_mirror(other) == other
    with pytest.raises(DatasetError, match=r"missing: mirror folder does not exist"):
        resolve_mirror(tmp_path / "missing")
    monkeypatch.setenv(sources.MIRROR_ENV, str(tmp_path / "gone"))
    with pytest.raises(DatasetError, match=r"gone: \$BASIN_DATA_MIRROR folder does not exist"):
        resolve_mirror(None)


def test_cache_dir_from_basin_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sources.HOME_ENV, str(tmp_path / "home"))
    assert resolve_cache_dir(None) == tmp_path / "home" / "data"
    assert resolve_cache_dir(tmp_path / "c") == tmp_path / "c"
    monkeypatch.delenv(sources.HOME_ENV)
    assert resolve_cache_dir(None) == Path.home() / ".cache" / "basin" / "data"


def test_locate_prefers_mirror_then_plain_then_gz(tmp_path: Path) -> None:
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    (cache / "fake").mkdir(parents=True)
    (cache / "fake" / "data.bin.gz").write_bytes(gzip.compress(CONTENT))
    assert locate(REL, mirror=None, cache_dir=cache).origin == "cache"
    (mirror / "fake").mkdir(parents=True)
    (mirror / "fake" / "data.bin.gz").write_bytes(gzip.compress(CONTENT))
    hit = locate(REL, mirror=mirror, cache_dir=cache)
    assert (hit.origin, hit.path.name) == ("mirror", "data.bin.gz")
    (mirror / "fake" / "data.bin").write_bytes(CONTENT)
    assert locate(REL, mirror=mirror, cache_dir=cache).path.name == "data.bin"
    assert locate("fake/absent.bin", mirror=mirror, cache_dir=cache) is None


def test_plain_and_gzipped_copies_verify_against_one_checksum(tmp_path: Path,
                                                              fake_checksum: str) -> None:
    plain, packed = tmp_path / "data.bin", tmp_path / "data.bin.gz"
    plain.write_bytes(CONTENT)
    packed.write_bytes(gzip.compress(CONTENT))
    assert verify_file(REL, plain) == verify_file(REL, packed) == fake_checksum
    assert read_verified(REL, packed) == CONTENT


def test_corruption_is_reported_with_file_and_problem(tmp_path: Path,
                                                      fake_checksum: str) -> None:
    flipped = tmp_path / "flipped.bin"
    flipped.write_bytes(b"X" + CONTENT[1:])
    for check in (verify_file, read_verified):
        with pytest.raises(DatasetError, match=rf"{flipped}: checksum mismatch for {REL}"):
            check(REL, flipped)
    broken = tmp_path / "broken.bin.gz"
    broken.write_bytes(gzip.compress(CONTENT)[:-10])
    with pytest.raises(DatasetError, match=rf"{broken}: unreadable or corrupt"):
        verify_file(REL, broken)
    with pytest.raises(DatasetError, match=rf"{broken}: corrupt gzip"):
        read_verified(REL, broken)
    with pytest.raises(DatasetError, match="no checksum known for fake/unknown"):
        verify_file("fake/unknown", flipped)


def test_verification_memo_is_keyed_on_size_and_mtime(tmp_path: Path,
                                                      fake_checksum: str) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(CONTENT)
    verify_file(REL, path)
    stat = path.stat()
    # same size and mtime: the memo answers without re-reading
    path.write_bytes(b"X" + CONTENT[1:])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert verify_file(REL, path) == fake_checksum
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(DatasetError, match="checksum mismatch"):
        verify_file(REL, path)


def _serve(tmp_path: Path, name: str, data: bytes) -> str:
    served = tmp_path / "served" / name
    served.parent.mkdir(parents=True, exist_ok=True)
    served.write_bytes(data)
    return served.as_uri()


def test_download_lands_verified_in_cache(tmp_path: Path, fake_checksum: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url = _serve(tmp_path, "data.bin.gz", gzip.compress(CONTENT))
    monkeypatch.setitem(sources.REMOTES, REL, Remote(url))
    cache = tmp_path / "cache"
    assert download_files([REL], cache) == [cache / "fake" / "data.bin.gz"]
    assert read_verified(REL, cache / "fake" / "data.bin.gz") == CONTENT


def test_download_extracts_tarball_members(tmp_path: Path, fake_checksum: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("archive-root/data.bin")
        info.size = len(CONTENT)
        tar.addfile(info, io.BytesIO(CONTENT))
    url = _serve(tmp_path, "archive.tar.gz", buffer.getvalue())
    monkeypatch.setitem(sources.REMOTES, REL, Remote(url, "archive-root/data.bin"))
    cache = tmp_path / "cache"
    download_files([REL], cache)
    assert (cache / REL).read_bytes() == CONTENT
    assert sorted(p.name for p in cache.rglob("*")) == ["data.bin", "fake"]


def test_failed_downloads_leave_nothing_behind(tmp_path: Path, fake_checksum: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    wrong = _serve(tmp_path, "wrong.bin", b"not the official content")
    monkeypatch.setitem(sources.REMOTES, REL, Remote(wrong))
    with pytest.raises(DatasetError, match="checksum mismatch"):
        download_files([REL], cache)
    offline = (tmp_path / "nowhere" / "data.bin").as_uri()
    monkeypatch.setitem(sources.REMOTES, REL, Remote(offline))
    with pytest.raises(DatasetError, match=rf"{REL}: could not download {offline}"):
        download_files([REL], cache)

    def interrupted(src: object, dst: io.BufferedWriter, length: int = 0) -> None:
        dst.write(CONTENT[:10])
        raise KeyboardInterrupt

    monkeypatch.setitem(sources.REMOTES, REL, Remote(_serve(tmp_path, "ok.bin", CONTENT)))
    monkeypatch.setattr(sources.shutil, "copyfileobj", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download_files([REL], cache)
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_unknown_remote_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="fake/nothing: no official download URL"):
        download_files(["fake/nothing"], tmp_path)
