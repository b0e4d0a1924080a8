"""``basin data list / verify / fetch`` through click's CliRunner."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from basin.cli import main
from basin.data import dataset_info, dataset_names, sources

LABELS = "notmnist/t10k-labels-idx1-ubyte"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)
    monkeypatch.setenv(sources.HOME_ENV, str(tmp_path / "home"))


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["data", *args])


def mirror_copy(mirror_dir: Path, tmp_path: Path) -> Path:
    """The mirror with notmnist copied for real and everything else linked."""
    copy = tmp_path / "mirror"
    copy.mkdir()
    for entry in mirror_dir.iterdir():
        if entry.name == "notmnist":
            shutil.copytree(entry, copy / entry.name)
        else:
            (copy / entry.name).symlink_to(entry)
    return copy


def test_verify_intact_mirror(mirror_dir: Path) -> None:
    result = run("verify", "--mirror", str(mirror_dir))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split(":")[0] for line in lines] == dataset_names()
    # the mirror lacks the optional Tiny-ImageNet zip (reported, not failed) but holds ODIN's
    # optional resized sets, which are verified like the required ones
    optional = {n for n in dataset_names() if dataset_info(n).optional}
    assert optional == {"tiny-imagenet", "tiny-imagenet-resize", "lsun-resize"}
    assert any(line.startswith("tiny-imagenet: absent (optional): ") for line in lines)
    assert all(": OK (" in line for line in lines if line.split(":")[0] != "tiny-imagenet")
    assert "uniform-noise: OK (generated)" in lines


@pytest.mark.parametrize("damage", ["uncompressed byte", "gzip byte"])
def test_verify_reports_a_flipped_byte(mirror_dir: Path, tmp_path: Path, damage: str) -> None:
    copy = mirror_copy(mirror_dir, tmp_path)
    packed = copy / f"{LABELS}.gz"
    if damage == "uncompressed byte":
        content = bytearray(gzip.decompress(packed.read_bytes()))
        content[5000] ^= 0x01
        packed.write_bytes(gzip.compress(bytes(content)))
        problem = "checksum mismatch"
    else:
        content = bytearray(packed.read_bytes())
        content[len(content) // 2] ^= 0xFF
        packed.write_bytes(bytes(content))
        problem = "corrupt"
    result = run("verify", "--mirror", str(copy))
    assert result.exit_code == 1
    failed = [line for line in result.output.splitlines() if "FAILED" in line]
    assert len(failed) == 1, result.output
    assert failed[0].startswith("notmnist: FAILED: ")
    assert str(packed) in failed[0] and problem in failed[0]
    assert "mnist: OK (4 files)" in result.output.splitlines()


def test_verify_missing_files_and_names(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("verify", "--mirror", str(empty), "mnist", "gaussian-noise")
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith(
        "mnist: FAILED: mnist/train-images-idx3-ubyte: not found")
    assert result.output.splitlines()[1] == "gaussian-noise: OK (generated)"
    assert run("verify", "no-such-set").exit_code == 2


def test_list_shows_sources(tmp_path: Path) -> None:
    result = run("list", "--mirror", str(tmp_path))
    assert result.exit_code == 0
    rows = {line.split()[0]: line for line in result.output.splitlines()}
    assert list(rows) == dataset_names()
    assert rows["mnist"].endswith("missing") and "train=50000 val=10000" in rows["mnist"]
    assert rows["cifar10"].split()[1] == "3x32x32"
    assert rows["uniform-noise"].endswith("generated")


def test_list_finds_the_mirror(mirror_dir: Path) -> None:
    result = run("list", "--mirror", str(mirror_dir))
    assert result.output.splitlines()[0].endswith("mirror")


def test_fetch_offline_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for rel in sources.REMOTES:
        unreachable = (tmp_path / "offline" / Path(rel).name).as_uri()
        monkeypatch.setitem(sources.REMOTES, rel, sources.Remote(unreachable))
    result = run("fetch", "notmnist")
    assert result.exit_code == 1
    assert "notmnist: FAILED: notmnist/t10k-images-idx3-ubyte: could not download" \
        in result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    assert not [p for p in (tmp_path / "home").rglob("*") if p.is_file()]


def test_fetch_downloads_into_the_cache(mirror_dir: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for rel in ("notmnist/t10k-images-idx3-ubyte", LABELS):
        served = (mirror_dir / f"{rel}.gz").as_uri()
        monkeypatch.setitem(sources.REMOTES, rel, sources.Remote(served))
    result = run("fetch", "notmnist", "uniform-noise")
    assert result.exit_code == 0, result.output
    assert "notmnist: OK (2 files downloaded)" in result.output
    assert (tmp_path / "home" / "data" / f"{LABELS}.gz").is_file()
    assert "notmnist: OK (0 files downloaded)" in run("fetch", "notmnist").output
