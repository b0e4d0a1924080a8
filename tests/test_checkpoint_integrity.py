"""Verified checkpoints: every safetensors file basin writes is checked against its sha256.

A flipped byte anywhere in a checkpoint (header length, header JSON, tensor data) must be
refused with a CheckpointError naming the file, through the plain loader and through the
real callers (attractor runs and their per-epoch checkpoint, backbones, fitted detectors).
Saving is canonical, so equal tensors give byte-identical files whatever the dict order.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from basin.detectors.mahalanobis import MahalanobisDetector
from basin.models.cifar import build_backbone, load_backbone, save_backbone
from basin.training import TrainConfig, TrainData, load_run, toy_split, train
from basin.training.checkpoint import TENSORS_FILE, load_checkpoint
from basin.training.run import CHECKPOINT_DIR, MODEL_FILE
from basin.utils.io import (
    CheckpointError,
    digest_path,
    load_tensors,
    read_tensors,
    record_digest,
    save_tensors,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WIDTHS = (12, 10, 8, 6, 8, 10, 12)


def small_tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"w": torch.randn(6, 5, generator=gen), "b": torch.randn(5, generator=gen),
            "steps": torch.arange(4, dtype=torch.int64),
            "half": torch.randn(3, generator=gen).to(torch.float16)}


def flip(path: Path, offset: int, mask: int) -> bytes:
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[offset] ^= mask
    path.write_bytes(bytes(damaged))
    return original


def detection_rate(path: Path, offsets: list[int], load: Callable[[], object],
                   masks: tuple[int, ...] = (0x01, 0x80, 0xFF)) -> tuple[int, int]:
    """(detected, tried) over single-byte flips; detected = CheckpointError naming ``path``.

    Bytes are flipped in place through one open descriptor (reopening a file for writing
    thousands of times is slow on some file systems) and restored after each try.
    """
    detected = tried = 0
    fd = os.open(path, os.O_RDWR)
    try:
        for offset in offsets:
            original = os.pread(fd, 1, offset)
            for mask in masks:
                os.pwrite(fd, bytes([original[0] ^ mask]), offset)
                tried += 1
                try:
                    load()
                except CheckpointError as exc:
                    detected += path.name in str(exc)
                finally:
                    os.pwrite(fd, original, offset)
    finally:
        os.close(fd)
    return detected, tried


def header_size(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def spread_offsets(path: Path, n_header: int, n_data: int, seed: int = 0) -> list[int]:
    """The 8 length bytes, ``n_header`` header offsets spread evenly, ``n_data`` data offsets."""
    size, head = path.stat().st_size, header_size(path)
    rng = random.Random(seed)
    header = sorted(rng.sample(range(8, head), min(n_header, head - 8)))
    data = sorted(rng.sample(range(head, size), min(n_data, size - head)))
    return list(range(8)) + header + data


def test_every_single_byte_flip_of_a_small_checkpoint_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "small.safetensors"
    save_tensors(path, small_tensors(), metadata={"epoch": "3", "note": "x"})
    size = path.stat().st_size
    detected, tried = detection_rate(path, list(range(size)), lambda: load_tensors(path))
    assert size > 300 and header_size(path) > 200
    assert tried == 3 * size and detected == tried  # 100% of every offset, three masks each
    assert read_tensors(path)[1] == {"epoch": "3", "note": "x"}  # restored file still loads


def test_damaged_record_is_detected_and_names_the_files(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_tensors(path, small_tensors())
    record = digest_path(path)
    assert record.name == "m.safetensors.json"
    entry = json.loads(record.read_text())
    entry["sha256"] = "0" * 64
    record.write_text(json.dumps(entry))
    with pytest.raises(CheckpointError, match=r"m\.safetensors: sha256 .* does not match"):
        load_tensors(path)
    record.write_text("{not json")
    with pytest.raises(CheckpointError, match=re.escape(record.name)):
        load_tensors(path)
    record.unlink()  # basin wrote the file (marker in its metadata): a lost record is an error
    with pytest.raises(CheckpointError, match=r"m\.safetensors: its sha256 record .* missing"):
        load_tensors(path)


def test_an_old_checkpoint_without_a_record_loads_with_a_warning(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "old.safetensors"
    save_file(small_tensors(), str(path))
    with pytest.warns(UserWarning, match=r"old\.safetensors: no sha256 record.*record_digest"):
        loaded = load_tensors(path)
    assert torch.equal(loaded["w"], small_tensors()["w"])
    digest = record_digest(path)
    assert json.loads(digest_path(path).read_text())["sha256"] == digest
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_tensors(path)
    flip(path, path.stat().st_size - 1, 0x01)
    with pytest.raises(CheckpointError, match=r"old\.safetensors: sha256"):
        load_tensors(path)


def test_equal_tensors_give_identical_bytes_whatever_the_order(tmp_path: Path) -> None:
    tensors, meta = small_tensors(), {f"k{i}": str(i) for i in range(12)}
    digests, blobs = set(), set()
    for trial in range(6):
        keys, names = list(meta), list(tensors)
        random.Random(trial).shuffle(keys)
        random.Random(trial + 100).shuffle(names)
        path = tmp_path / f"{trial}.safetensors"
        digests.add(save_tensors(path, {n: tensors[n] for n in names},
                                 metadata={k: meta[k] for k in keys}))
        blobs.add(path.read_bytes())
    assert len(blobs) == 1 and len(digests) == 1


@pytest.mark.slow
def test_equal_saves_in_separate_processes_are_byte_identical(tmp_path: Path) -> None:
    # safetensors' own writer orders metadata by a hash seed that differs between processes
    code = ("import sys, torch; from basin.utils.io import save_tensors; "
            "save_tensors(sys.argv[1], {'a': torch.arange(3.)}, "
            "metadata={k: k for k in 'abcdefghij'})")
    for name in ("one", "two"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True)
    blobs = {(tmp_path / name).read_bytes() for name in ("one", "two")}
    assert len(blobs) == 1


def tiny_config(**changes: object) -> TrainConfig:
    base = TrainConfig(dataset="toy", widths=WIDTHS, n_classes=3, weights=(0.5, 0.01, 0.49),
                       jacobian="projection", batch_size=16, max_epochs=2, patience=2,
                       learning_rates=(0.02, 0.02, 0.02, 0.01), eval_batch_size=50)
    return base.replace(**changes)


def tiny_data() -> TrainData:
    return TrainData(*toy_split("train", WIDTHS[0], 3, 120), *toy_split("val", WIDTHS[0], 3, 30),
                     *toy_split("test", WIDTHS[0], 3, 30))


class StopAfter:
    def __init__(self, after: int) -> None:
        self.after, self.count = after, 0

    def __call__(self, info: object) -> None:
        self.count += 1
        if self.count == self.after:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole tiny run and the same run interrupted after 3 epochs and resumed."""
    root = tmp_path_factory.mktemp("runs")
    train(tiny_config(), tiny_data(), root / "whole")
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), tiny_data(), root / "cut", on_epoch_end=StopAfter(3))
    (root / "checkpoint-copy").mkdir()
    for item in (root / "cut" / CHECKPOINT_DIR).iterdir():
        (root / "checkpoint-copy" / item.name).write_bytes(item.read_bytes())
    train(tiny_config(), tiny_data(), root / "cut", resume=True)
    return root


def test_a_killed_and_resumed_run_writes_the_same_bytes(runs: Path) -> None:
    whole, cut = runs / "whole" / MODEL_FILE, runs / "cut" / MODEL_FILE
    assert whole.read_bytes() == cut.read_bytes()
    assert digest_path(whole).read_bytes() == digest_path(cut).read_bytes()


def test_flips_in_an_attractor_run_and_its_checkpoint_are_detected(runs: Path) -> None:
    model = runs / "whole" / MODEL_FILE
    detected, tried = detection_rate(model, spread_offsets(model, 100, 100),
                                     lambda: load_run(runs / "whole"), masks=(0x01,))
    assert tried == 208 and detected == tried
    state = runs / "checkpoint-copy" / TENSORS_FILE
    detected, tried = detection_rate(state, spread_offsets(state, 50, 50),
                                     lambda: load_checkpoint(runs / "checkpoint-copy"),
                                     masks=(0x10,))
    assert tried == 108 and detected == tried


def test_flips_in_a_backbone_and_a_fitted_detector_are_detected(tmp_path: Path) -> None:
    save_backbone(build_backbone("airbench", widths=(8, 16, 16), n_classes=2), tmp_path / "bb")
    weights = tmp_path / "bb" / "model.safetensors"
    detected, tried = detection_rate(weights, spread_offsets(weights, 30, 30),
                                     lambda: load_backbone(tmp_path / "bb"), masks=(0x04,))
    assert tried == 68 and detected == tried

    model = load_backbone(tmp_path / "bb")
    gen = torch.Generator().manual_seed(1)
    det = MahalanobisDetector(model).fit(torch.rand(40, 3, 32, 32, generator=gen),
                                         torch.arange(40) % 2)
    det.save(tmp_path / "maha.safetensors")
    path = tmp_path / "maha.safetensors"
    detected, tried = detection_rate(path, spread_offsets(path, 20, 20),
                                     lambda: MahalanobisDetector(model).load(path),
                                     masks=(0x02,))
    assert tried == 48 and detected == tried
