"""The optional Tiny-ImageNet sets on fake archives with the official layouts (no download)."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from basin.cli import main
from basin.data import DatasetError, is_available, load_dataset, registry, sources, verify_dataset
from basin.data.checksums import MD5
from basin.data.parsers import parse_tiny_imagenet_val
from basin.data.transforms import resize_bilinear, to_unit_float
from tiny_imagenet_fakes import (
    COLOURS,
    LABELS,
    WNIDS,
    ZIP,
    annotation_lines,
    jpeg,
    register,
    tiny_zip,
    val_image,
)

TARBALL = "odin/Imagenet_resize.tar"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["data", *args])


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No mirror from the environment, a private cache, and official URLs that cannot work."""
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)
    monkeypatch.setenv(sources.HOME_ENV, str(tmp_path / "home"))
    monkeypatch.setitem(sources.REMOTES, ZIP, sources.Remote((tmp_path / "offline" / ZIP).as_uri()))


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "mirror"
    root.mkdir()
    data = tiny_zip()
    (root / ZIP).write_bytes(data)
    register(monkeypatch, "tiny-imagenet", ZIP, data, len(LABELS))
    return root


def test_val_images_labels_and_resampling(mirror: Path) -> None:
    test = load_dataset("tiny-imagenet", "test", mirror=mirror)
    assert test.images.shape == (6, 3, 32, 32) and test.images.dtype == torch.float32
    assert float(test.images.min()) >= 0.0 and float(test.images.max()) <= 1.0
    assert test.classes == WNIDS
    # labels follow val_annotations.txt through the order of wnids.txt
    assert test.labels.tolist() == LABELS
    assert torch.equal(test.indices, torch.arange(6))
    # black left half, coloured right half; the blended seam is columns 15-16
    assert float(test.images[:, :, :, :15].max()) < 0.03
    colours = torch.tensor(COLOURS, dtype=torch.float32) / 255
    colours[4] = colours[4].mean()  # the grayscale JPEG: three equal planes
    right = test.images[:, :, :, 17:].mean(dim=(2, 3))
    assert torch.allclose(right, colours, atol=3 / 255)
    assert torch.equal(test.images[4, 0], test.images[4, 1])
    # Pillow's bilinear resize agrees with basin's antialiased torch resize up to uint8 rounding
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(jpeg(val_image(k)))).convert("RGB"))
                        for k in range(6)]).transpose(0, 3, 1, 2)
    reference = resize_bilinear(to_unit_float(decoded), (32, 32))
    assert float((test.images - reference).abs().max()) <= 0.6 / 255


def test_size_and_class_count_are_checked(tmp_path: Path, mirror: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._REGISTRY, "tiny-imagenet",
                        dataclasses.replace(registry.dataset_info("tiny-imagenet"),
                                            sizes={"test": 10_000}))
    with pytest.raises(DatasetError, match=r"6 images, tiny-imagenet test expects 10000"):
        load_dataset("tiny-imagenet", mirror=mirror)
    other = tmp_path / "other"
    other.mkdir()
    data = tiny_zip(wnids=WNIDS[:-1], lines=annotation_lines(LABELS[:2]), images=2)
    (other / ZIP).write_bytes(data)
    register(monkeypatch, "tiny-imagenet", ZIP, data, 2)
    with pytest.raises(DatasetError, match=r"wnids.txt lists 199 classes, Tiny-ImageNet has 200"):
        load_dataset("tiny-imagenet", mirror=other)


def test_malformed_archives_name_the_member() -> None:
    bad_wnid = annotation_lines(LABELS)
    bad_wnid[1] = "val_1.JPEG\tn99999999\t0\t0\t1\t1"
    with pytest.raises(DatasetError, match=r"z.zip:tiny-imagenet-200/val/val_annotations.txt: "
                                           r"line 2: wnid 'n99999999' is not in"):
        parse_tiny_imagenet_val(tiny_zip(lines=bad_wnid), source="z.zip")
    with pytest.raises(DatasetError, match=r"line 3 is 'val_2.JPEG', expected"):
        parse_tiny_imagenet_val(tiny_zip(lines=[*annotation_lines(LABELS)[:2], "val_2.JPEG"]),
                                source="z.zip")
    with pytest.raises(DatasetError, match=r"no member tiny-imagenet-200/val/images/val_5.JPEG"):
        parse_tiny_imagenet_val(tiny_zip(images=5), source="z.zip")
    with pytest.raises(DatasetError, match=r"z.zip: not a readable zip file"):
        parse_tiny_imagenet_val(tiny_zip()[:5000], source="z.zip")


def test_is_available_looks_but_never_downloads(tmp_path: Path, mirror: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cache = tmp_path / "cache"
    assert not is_available("tiny-imagenet", empty, cache_dir=cache)
    assert not is_available("tiny-imagenet", cache_dir=cache)
    assert not cache.exists() and not (tmp_path / "home").exists()
    assert is_available("tiny-imagenet", mirror, cache_dir=cache)
    assert not is_available("tiny-imagenet-resize", mirror, cache_dir=cache)
    (cache).mkdir()
    (cache / ZIP).write_bytes((mirror / ZIP).read_bytes())
    assert is_available("tiny-imagenet", empty, cache_dir=cache)
    assert is_available("gaussian-noise", empty, cache_dir=cache)
    assert is_available("notmnist", empty) is False
    with pytest.raises(DatasetError, match="unknown dataset 'tiny'"):
        is_available("tiny")
    with pytest.raises(DatasetError, match="nowhere: mirror folder does not exist"):
        is_available("tiny-imagenet", tmp_path / "nowhere")


def test_corrupt_zip_is_named(tmp_path: Path, mirror: Path) -> None:
    digest = MD5[ZIP]
    assert verify_dataset("tiny-imagenet", mirror=mirror) == {ZIP: f"md5:{digest}"}
    broken = tmp_path / "broken"
    broken.mkdir()
    data = bytearray((mirror / ZIP).read_bytes())
    data[len(data) // 2] ^= 0x01
    (broken / ZIP).write_bytes(bytes(data))
    path = re.escape(str(broken / ZIP))
    with pytest.raises(DatasetError, match=rf"{path}: checksum mismatch for {ZIP} \(md5 of the "
                                           rf"file is [0-9a-f]{{32}}, expected {digest}\)"):
        load_dataset("tiny-imagenet", mirror=broken)
    result = run("verify", "--mirror", str(broken), "tiny-imagenet", "uniform-noise")
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith(f"tiny-imagenet: FAILED: {broken / ZIP}: "
                                                    "checksum mismatch")


def test_verify_and_list_report_absent_optional_sets(tmp_path: Path, mirror: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("verify", "--mirror", str(empty), "tiny-imagenet", "tiny-imagenet-resize",
                 "uniform-noise")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"tiny-imagenet: absent (optional): {ZIP} not in mirror {empty}")
    assert lines[1].startswith(f"tiny-imagenet-resize: absent (optional): {TARBALL} not in")
    assert lines[2] == "uniform-noise: OK (generated)"
    # a required set in the same empty mirror still fails
    assert run("verify", "--mirror", str(empty), "notmnist").exit_code == 1
    assert run("verify", "--mirror", str(mirror), "tiny-imagenet").output == \
        "tiny-imagenet: OK (1 files)\n"
    rows = {line.split()[0]: line for line in run("list", "--mirror", str(empty)).output
            .splitlines()}
    assert rows["tiny-imagenet"].split()[1:3] == ["3x32x32", "200"]
    assert rows["tiny-imagenet"].endswith("absent (optional)")
    assert rows["notmnist"].endswith("missing")
    listed = run("list", "--mirror", str(mirror)).output
    assert next(r for r in listed.splitlines() if r.startswith("tiny-imagenet ")).endswith("mirror")
