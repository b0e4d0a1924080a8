"""Decoders for the raw dataset formats, working on ``bytes`` so that they can be fuzzed.

* IDX (MNIST, Fashion-MNIST, notMNIST), gzipped or raw;
* CIFAR-10 binary batches (records of 1 label byte + 3072 pixel bytes, R then G then B planes);
* the Omniglot zips of 105x105 1-bit PNG drawings;
* the validation images of the official ``tiny-imagenet-200.zip`` (64x64 JPEGs labelled by
  ``val/val_annotations.txt``) and image tarballs such as ODIN's ``Imagenet_resize.tar.gz``
  and ``LSUN_resize.tar.gz``.

Every problem (truncation, wrong magic number, declared sizes that disagree with the bytes,
undecodable members) raises :class:`DatasetError` naming ``source`` and what was wrong. Declared
sizes are checked against the actual byte length *before* anything is allocated, so a header
claiming a huge array cannot exhaust memory. Returned arrays are read-only views where possible.
"""

from __future__ import annotations

import gzip
import io
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image

from basin.data.errors import DatasetError

GZIP_MAGIC = b"\x1f\x8b"

# IDX type byte -> big-endian numpy dtype (the format's full table, though basin needs only u1)
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8",
}

CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_CLASSES = 10

# members larger than this are not Omniglot drawings (the real PNGs are < 1 KB) nor
# Tiny-ImageNet JPEGs (< 10 KB); refusing them before decompression keeps a hostile archive
# from inflating gigabytes
_MAX_ZIP_MEMBER = 8 * 1024 * 1024

_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                 Image.DecompressionBombError)
_TINY_ROOT = "tiny-imagenet-200/"
TINY_IMAGENET_SIZE = (64, 64)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def gunzip(data: bytes, *, source: str) -> bytes:
    """Decompress gzip ``data``; a corrupt or truncated stream raises :class:`DatasetError`."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{source}: corrupt gzip data ({exc})") from exc


def parse_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Decode an IDX file (gzipped or raw) into an array of its declared type and shape."""
    if data[:2] == GZIP_MAGIC:
        data = gunzip(data, source=source)
    if len(data) < 4:
        raise DatasetError(f"{source}: truncated IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{source}: wrong IDX magic number {data[:4].hex()} "
                           "(expected 0000 followed by type and rank bytes)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise DatasetError(f"{source}: unknown IDX element type 0x{type_code:02x}")
    if ndim == 0:
        raise DatasetError(f"{source}: IDX file declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{source}: truncated IDX header: {ndim} dimensions need {header} "
                           f"bytes, file has {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    count = 1
    for d in dims:  # Python ints: a hostile header cannot overflow the product
        count *= d
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DatasetError(f"{source}: IDX data {problem}: dimensions {list(dims)} need "
                           f"{expected} bytes, file has {len(data)}")
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)


def parse_cifar_batch(data: bytes, *, source: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Decode a CIFAR-10 binary batch into uint8 images ``(N, 3, 32, 32)`` and labels ``(N,)``."""
    if data[:2] == GZIP_MAGIC:
        data = gunzip(data, source=source)
    if len(data) == 0 or len(data) % CIFAR_RECORD:
        raise DatasetError(f"{source}: CIFAR-10 batch size {len(data)} bytes is not a positive "
                           f"multiple of the {CIFAR_RECORD}-byte record (truncated file?)")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = records[:, 0]
    bad = np.flatnonzero(labels >= CIFAR_CLASSES)
    if bad.size:
        raise DatasetError(f"{source}: record {int(bad[0])} has label {int(labels[bad[0]])}, "
                           f"CIFAR-10 labels are 0..{CIFAR_CLASSES - 1}")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def decode_png(data: bytes, *, source: str, size: tuple[int, int]) -> np.ndarray:
    """Decode a PNG into a uint8 grayscale ``(H, W)`` array; it must be ``size`` = (W, H)."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            # the header alone gives the size: refuse before decoding any pixels
            if image.size != size:
                raise DatasetError(f"{source}: image is {image.size[0]}x{image.size[1]}, "
                                   f"expected {size[0]}x{size[1]}")
            return np.asarray(image.convert("L"))
    except DatasetError:
        raise
    except _IMAGE_ERRORS as exc:
        raise DatasetError(f"{source}: undecodable PNG ({exc})") from exc


def decode_rgb(data: bytes, *, source: str, size: tuple[int, int],
               resize: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a JPEG or PNG into uint8 RGB ``(3, H, W)``; it must be ``size`` = (W, H).

    Grayscale images get three equal planes. ``resize`` = (W, H) then resamples with Pillow's
    ``Image.resize(resize, Image.BILINEAR)``: on downscaling Pillow widens the triangle
    filter by the scale factor (antialiased, like basin's other resizes), and the result is
    rounded back to uint8 as in any pipeline that resizes the PIL image before ``ToTensor``.
    """
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG", "PNG"]) as image:
            if image.size != size:
                raise DatasetError(f"{source}: image is {image.size[0]}x{image.size[1]}, "
                                   f"expected {size[0]}x{size[1]}")
            rgb = image.convert("RGB")
            if resize is not None and resize != size:
                rgb = rgb.resize(resize, Image.Resampling.BILINEAR)
            return np.asarray(rgb).transpose(2, 0, 1)
    except DatasetError:
        raise
    except _IMAGE_ERRORS as exc:
        raise DatasetError(f"{source}: undecodable image ({exc})") from exc


@dataclass(frozen=True)
class ZipImages:
    """The PNG drawings of one zip, in member-name order, and its small text members."""

    names: tuple[str, ...]
    images: np.ndarray  # uint8 (N, H, W), 0 = black ink, 255 = white paper
    texts: dict[str, str]


def parse_omniglot_zip(data: bytes, *, source: str = "<bytes>",
                       size: tuple[int, int] = (105, 105)) -> ZipImages:
    """Decode every ``*.png`` member of an Omniglot zip (each must be ``size``) and ``*.txt``."""
    with unreadable_as_dataset_error(source, "zip file"):
        return _walk_zip(data, source, size)


@contextmanager
def unreadable_as_dataset_error(source: str, what: str) -> Iterator[None]:
    """Re-raise any failure inside as ``DatasetError("<source>: not a readable <what>")``.

    zipfile, tarfile and gzip document no exception set for malformed archives; fuzzing finds
    IndexError, NotImplementedError, struct.error, EOFError, ... so every failure is reported
    the same way. DatasetErrors raised inside (naming a member) pass through unchanged.
    """
    try:
        yield
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"{source}: not a readable {what} "
                           f"({type(exc).__name__}: {exc})") from exc


def _walk_zip(data: bytes, source: str, size: tuple[int, int]) -> ZipImages:
    names: list[str] = []
    images: list[np.ndarray] = []
    texts: dict[str, str] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            name = info.filename
            if name.endswith("/") or not name.endswith((".png", ".txt")):
                continue
            member = f"{source}:{name}"
            if info.file_size > _MAX_ZIP_MEMBER:
                raise DatasetError(f"{member}: declares {info.file_size} bytes, too large for "
                                   "a drawing")
            raw = archive.read(info)
            if name.endswith(".txt"):
                try:
                    texts[name] = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DatasetError(f"{member}: text member is not UTF-8 ({exc})") from exc
            else:
                names.append(name)
                images.append(decode_png(raw, source=member, size=size))
    stacked = (np.stack(images) if images
               else np.zeros((0, size[1], size[0]), dtype=np.uint8))
    return ZipImages(tuple(names), stacked, texts)


_BACKGROUND = re.compile(r"^([^/]+/[^/]+/[^/]+)/[^/]+\.png$")  # root/alphabet/character/x.png
_RUN_TRAINING = re.compile(r"^(run\d+)/training/(class\d+)\.png$")
_RUN_TEST = re.compile(r"^(run\d+)/test/(item\d+)\.png$")


def omniglot_class_keys(parsed: ZipImages, *, source: str, stem: str) -> list[str]:
    """One class key per drawing: ``root/alphabet/characterNN`` for the background zips.

    For the one-shot runs (``all_runs.zip``) a key is ``{stem}/runNN/classMM``; a test item's
    class is read from its run's ``class_labels.txt``. Runs are separate 20-way problems, so
    the same character appearing in two runs gets two keys (the zip does not say otherwise).
    """
    test_classes: dict[str, str] = {}
    for text_name, text in parsed.texts.items():
        if not text_name.endswith("class_labels.txt"):
            continue
        for line in text.split("\n"):
            fields = line.split()
            if not fields:
                continue
            match = (_RUN_TRAINING.match(fields[1]) if len(fields) == 2 else None)
            if match is None:
                raise DatasetError(f"{source}:{text_name}: bad line {line.strip()!r}, expected "
                                   "'runNN/test/itemKK.png runNN/training/classMM.png'")
            test_classes[fields[0]] = f"{stem}/{match[1]}/{match[2]}"
    keys = []
    for name in parsed.names:
        if (m := _RUN_TRAINING.match(name)) is not None:
            keys.append(f"{stem}/{m[1]}/{m[2]}")
        elif _RUN_TEST.match(name) is not None:
            if name not in test_classes:
                raise DatasetError(f"{source}: no class_labels.txt line for member {name}")
            keys.append(test_classes[name])
        elif (m := _BACKGROUND.match(name)) is not None:
            keys.append(m[1])
        else:
            raise DatasetError(f"{source}: cannot derive a character class from member {name}")
    return keys


@dataclass(frozen=True)
class ArchiveImages:
    """RGB images read from one archive, with their member names, labels and class names."""

    names: tuple[str, ...]
    images: np.ndarray  # uint8 (N, 3, H, W)
    labels: np.ndarray  # int64 (N,), indices into ``classes`` (all 0 when unlabelled)
    classes: tuple[str, ...]


def parse_tiny_imagenet_val(archive: bytes | BinaryIO, *, source: str = "<bytes>",
                            size: tuple[int, int] = (32, 32)) -> ArchiveImages:
    """Decode the validation split of the official ``tiny-imagenet-200.zip``.

    Classes are the wnids of ``tiny-imagenet-200/wnids.txt`` in file order; images are the
    64x64 JPEGs of ``val/images/`` in the order of ``val/val_annotations.txt`` (one
    tab-separated line per image: file name, wnid, bounding box), each labelled with its
    wnid's index and resized to ``size`` = (W, H) as :func:`decode_rgb` describes.
    """
    stream = io.BytesIO(archive) if isinstance(archive, bytes) else archive
    with unreadable_as_dataset_error(source, "zip file"), zipfile.ZipFile(stream) as opened:
        return _tiny_imagenet_val(opened, source, size)


def _zip_member(archive: zipfile.ZipFile, name: str, source: str) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise DatasetError(f"{source}: no member {name} (not the official "
                           "tiny-imagenet-200.zip layout?)") from None
    if info.file_size > _MAX_ZIP_MEMBER:
        raise DatasetError(f"{source}:{name}: declares {info.file_size} bytes, too large")
    return archive.read(info)


def _zip_lines(archive: zipfile.ZipFile, name: str, source: str) -> list[str]:
    try:
        return _zip_member(archive, name, source).decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{source}:{name}: not UTF-8 text ({exc})") from exc


def _tiny_imagenet_val(archive: zipfile.ZipFile, source: str,
                       size: tuple[int, int]) -> ArchiveImages:
    wnids_name = f"{_TINY_ROOT}wnids.txt"
    wnids = tuple(line.strip() for line in _zip_lines(archive, wnids_name, source)
                  if line.strip())
    if len(set(wnids)) != len(wnids):
        raise DatasetError(f"{source}:{wnids_name}: lists a wnid twice")
    lookup = {wnid: i for i, wnid in enumerate(wnids)}
    annotations = f"{_TINY_ROOT}val/val_annotations.txt"
    names: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(_zip_lines(archive, annotations, source), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0] or "/" in fields[0]:
            raise DatasetError(f"{source}:{annotations}: line {number} is {line!r}, expected "
                               "'FILE<tab>WNID<tab>x0<tab>y0<tab>x1<tab>y1'")
        if fields[1] not in lookup:
            raise DatasetError(f"{source}:{annotations}: line {number}: wnid {fields[1]!r} is "
                               f"not in {wnids_name}")
        names.append(fields[0])
        labels.append(lookup[fields[1]])
    if len(set(names)) != len(names):
        raise DatasetError(f"{source}:{annotations}: annotates an image twice")
    images = []
    for name in names:
        member = f"{_TINY_ROOT}val/images/{name}"
        images.append(decode_rgb(_zip_member(archive, member, source),
                                 source=f"{source}:{member}", size=TINY_IMAGENET_SIZE,
                                 resize=size))
    stacked = (np.stack(images) if images
               else np.zeros((0, 3, size[1], size[0]), dtype=np.uint8))
    return ArchiveImages(tuple(names), stacked, np.array(labels, dtype=np.int64), wnids)


def parse_image_tarball(archive: bytes | BinaryIO, *, source: str = "<bytes>",
                        size: tuple[int, int] = (32, 32)) -> ArchiveImages:
    """Decode every JPEG/PNG member of a (gzipped) tarball, each ``size`` = (W, H), unlabelled.

    Images are returned in member-name order. macOS resource forks (``._name``) and members
    of other types are skipped.
    """
    stream = io.BytesIO(archive) if isinstance(archive, bytes) else archive
    found: list[tuple[str, np.ndarray]] = []
    with (unreadable_as_dataset_error(source, "tar archive"),
          tarfile.open(fileobj=stream, mode="r:*") as opened):
        for info in opened:
            base = info.name.rsplit("/", 1)[-1]
            if (not info.isfile() or base.startswith("._")
                    or not base.lower().endswith(_IMAGE_SUFFIXES)):
                continue
            member = f"{source}:{info.name}"
            if info.size > _MAX_ZIP_MEMBER:
                raise DatasetError(f"{member}: declares {info.size} bytes, too large")
            handle = opened.extractfile(info)
            if handle is None:
                raise DatasetError(f"{member}: cannot be read")
            found.append((info.name, decode_rgb(handle.read(), source=member, size=size)))
    found.sort(key=lambda pair: pair[0])
    stacked = (np.stack([image for _, image in found]) if found
               else np.zeros((0, 3, size[1], size[0]), dtype=np.uint8))
    return ArchiveImages(tuple(name for name, _ in found), stacked,
                         np.zeros(len(found), dtype=np.int64), ())
