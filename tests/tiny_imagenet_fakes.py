"""Fake Tiny-ImageNet archives with the official layout, and a way to accept them as official."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from basin.data import registry
from basin.data.checksums import MD5

ZIP = "tiny-imagenet-200.zip"
# a permutation of 200 fake wnids that is not sorted, so that labels must follow file order
WNIDS = tuple(f"n{(i * 73) % 200:08d}" for i in range(200))
LABELS = [5, 0, 199, 5, 42, 100]
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 200, 40), (128, 128, 128), (60, 0, 90)]


def jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def val_image(k: int) -> np.ndarray:
    """64x64: left half black, right half COLOURS[k]; image 4 is saved as grayscale."""
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[:, 32:] = COLOURS[k]
    return pixels[:, :, 0] if k == 4 else pixels


def annotation_lines(labels: list[int]) -> list[str]:
    return [f"val_{k}.JPEG\t{WNIDS[label]}\t{k}\t2\t60\t61" for k, label in enumerate(labels)]


def tiny_zip(wnids: tuple[str, ...] = WNIDS, lines: list[str] | None = None,
             images: int = len(LABELS)) -> bytes:
    lines = annotation_lines(LABELS) if lines is None else lines
    root = "tiny-imagenet-200/"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{root}wnids.txt", "".join(f"{w}\n" for w in wnids))
        archive.writestr(f"{root}val/val_annotations.txt", "".join(f"{x}\n" for x in lines))
        for k in range(images):
            archive.writestr(f"{root}val/images/val_{k}.JPEG", jpeg(val_image(k)))
        archive.writestr(f"{root}train/{WNIDS[0]}/images/{WNIDS[0]}_0.JPEG", jpeg(val_image(0)))
    return buffer.getvalue()


def register(monkeypatch: pytest.MonkeyPatch, name: str, rel: str, data: bytes,
             n_images: int | None) -> None:
    """Accept ``data`` as the official ``rel``; ``n_images`` shrinks the expected size."""
    monkeypatch.setitem(MD5, rel, hashlib.md5(data).hexdigest())
    if n_images is not None:
        info = registry.dataset_info(name)
        monkeypatch.setitem(registry._REGISTRY, name,
                            dataclasses.replace(info, sizes={"test": n_images}))
