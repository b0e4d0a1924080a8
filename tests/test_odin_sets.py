"""ODIN's resized OOD sets (tiny-imagenet-resize, lsun-resize) on fake tarballs, and on the mirror.

The fakes have the mirror's layout (``odin/<Set>_resize.tar.gz``, a gzip of a tar of 32x32
JPEGs, verified by the sha256 of the *uncompressed* tar) with synthetic images: coloured
squares and one grayscale JPEG, so decoding, channel replication and ordering are checked
against known pixels.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from basin.cli import main
from basin.data import DatasetError, is_available, load_dataset, registry, sources, verify_dataset
from basin.data.checksums import SHA256

SETS = {"tiny-imagenet-resize": ("odin/Imagenet_resize.tar", "Imagenet_resize"),
        "lsun-resize": ("odin/LSUN_resize.tar", "LSUN_resize")}
COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250)]


def jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def fake_tar(folder: str, n_colour: int = 3) -> bytes:
    """An uncompressed tar: ``<folder>/<folder>/{0,1,2}.jpg`` in colours, ``10.jpg`` gray,
    plus members a loader must skip; written out of name order."""
    members = {f"{folder}/{folder}/{k}.jpg": jpeg(np.full((32, 32, 3), COLOURS[k], np.uint8))
               for k in reversed(range(n_colour))}
    members[f"{folder}/{folder}/10.jpg"] = jpeg(np.full((32, 32), 77, np.uint8))
    members[f"{folder}/{folder}/._0.jpg"] = b"macOS resource fork"
    members[f"{folder}/README.txt"] = b"not an image"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def install(root: Path, monkeypatch: pytest.MonkeyPatch, name: str, tar: bytes,
            n_images: int) -> Path:
    """Write ``tar`` gzipped under ``root`` as the mirror does and accept its sha256."""
    rel, _ = SETS[name]
    path = root / f"{rel}.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(tar, mtime=0))
    monkeypatch.setitem(SHA256, rel, hashlib.sha256(tar).hexdigest())
    info = registry.dataset_info(name)
    monkeypatch.setitem(registry._REGISTRY, name,
                        dataclasses.replace(info, sizes={"test": n_images}))
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["data", *args])


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)
    monkeypatch.delenv(sources.BASE_URL_ENV, raising=False)
    monkeypatch.setenv(sources.HOME_ENV, str(tmp_path / "home"))


@pytest.mark.parametrize("name", list(SETS))
def test_fake_tarball_decodes_to_known_pixels(name: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    install(tmp_path / "mirror", monkeypatch, name, fake_tar(SETS[name][1]), 4)
    data = load_dataset(name, "test", mirror=tmp_path / "mirror")
    assert data.images.shape == (4, 3, 32, 32) and data.images.dtype == torch.float32
    assert data.labels.tolist() == [0, 0, 0, 0] and data.classes == ("unlabelled",)
    # member-name order: 0.jpg, 1.jpg, 10.jpg (the gray one), 2.jpg
    means = data.images.mean(dim=(2, 3))
    expected = torch.tensor([COLOURS[0], COLOURS[1], (77, 77, 77), COLOURS[2]]) / 255
    assert torch.allclose(means, expected, atol=4 / 255)
    # the grayscale JPEG is replicated to three identical planes
    assert torch.equal(data.images[2, 0], data.images[2, 1])
    assert torch.equal(data.images[2, 1], data.images[2, 2])
    assert float(data.images.min()) >= 0.0 and float(data.images.max()) <= 1.0


def test_verify_reports_ok_and_a_corrupt_tar_fails(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "mirror"
    tar = fake_tar("LSUN_resize")
    install(root, monkeypatch, "lsun-resize", tar, 4)
    rel = SETS["lsun-resize"][0]
    assert verify_dataset("lsun-resize", mirror=root) == {rel: hashlib.sha256(tar).hexdigest()}
    result = run("verify", "--mirror", str(root), "lsun-resize")
    assert result.exit_code == 0 and result.output == "lsun-resize: OK (1 files)\n"
    broken = bytearray(tar)
    broken[700] ^= 0x01
    (root / f"{rel}.gz").write_bytes(gzip.compress(bytes(broken), mtime=0))
    result = run("verify", "--mirror", str(root), "lsun-resize")
    assert result.exit_code == 1
    assert re.match(r"lsun-resize: FAILED: .*LSUN_resize\.tar\.gz: checksum mismatch for "
                    r"odin/LSUN_resize\.tar \(sha256 of the uncompressed content", result.output)


def test_absent_sets_give_one_line_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not is_available("lsun-resize", empty)
    result = run("verify", "--mirror", str(empty), "tiny-imagenet-resize", "lsun-resize")
    assert result.exit_code == 0  # optional: reported, not failed
    assert result.output.splitlines()[1].startswith(
        "lsun-resize: absent (optional): odin/LSUN_resize.tar not in mirror")
    with pytest.raises(DatasetError) as caught:
        load_dataset("tiny-imagenet-resize", mirror=empty, download=False)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("odin/Imagenet_resize.tar: not found in mirror")
    # no official download can be verified against the mirror's repacked tar
    with pytest.raises(DatasetError, match=r"odin/LSUN_resize.tar: no official download URL "
                                           r"known; only a data mirror"):
        load_dataset("lsun-resize", mirror=empty, download=True)


def test_size_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(tmp_path / "m", monkeypatch, "tiny-imagenet-resize", fake_tar("Imagenet_resize"), 5)
    with pytest.raises(DatasetError, match=r"4 images, tiny-imagenet-resize test expects 5"):
        load_dataset("tiny-imagenet-resize", mirror=tmp_path / "m")


@pytest.mark.parametrize("name", list(SETS))
def test_mirror_sets(name: str, mirror_dir: Path) -> None:
    if not (mirror_dir / "odin").is_dir():
        pytest.skip(f"{mirror_dir}: no odin/ folder")
    data = load_dataset(name, "test", mirror=mirror_dir)
    assert data.images.shape == (10_000, 3, 32, 32) and data.images.dtype == torch.float32
    assert float(data.images.min()) == 0.0 and float(data.images.max()) == 1.0
    planes = data.images
    gray = ((planes[:, 0] == planes[:, 1]) & (planes[:, 1] == planes[:, 2])).flatten(1).all(1)
    if name == "tiny-imagenet-resize":  # 189 grayscale JPEGs (a few RGB ones are gray too)
        assert 189 <= int(gray.sum()) < 300
    assert 0.3 < float(data.images.mean()) < 0.6
