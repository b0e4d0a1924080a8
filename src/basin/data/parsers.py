"""Decoders for the raw dataset formats, working on ``bytes`` so that they can be fuzzed.

* IDX (MNIST, Fashion-MNIST, notMNIST), gzipped or raw;
* CIFAR-10 binary batches (records of 1 label byte + 3072 pixel bytes, R then G then B planes);
* the Omniglot zips of 105x105 1-bit PNG drawings.

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
import zipfile
import zlib
from dataclasses import dataclass

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

# members larger than this are not Omniglot drawings (the real PNGs are < 1 KB); refusing them
# before decompression keeps a hostile zip from inflating gigabytes
_MAX_ZIP_MEMBER = 8 * 1024 * 1024


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
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
            Image.DecompressionBombError) as exc:
        raise DatasetError(f"{source}: undecodable PNG ({exc})") from exc


@dataclass(frozen=True)
class ZipImages:
    """The PNG drawings of one zip, in member-name order, and its small text members."""

    names: tuple[str, ...]
    images: np.ndarray  # uint8 (N, H, W), 0 = black ink, 255 = white paper
    texts: dict[str, str]


def parse_omniglot_zip(data: bytes, *, source: str = "<bytes>",
                       size: tuple[int, int] = (105, 105)) -> ZipImages:
    """Decode every ``*.png`` member of an Omniglot zip (each must be ``size``) and ``*.txt``."""
    try:
        return _walk_zip(data, source, size)
    except DatasetError:
        raise
    except Exception as exc:
        # zipfile documents no exception set for malformed archives; fuzzing finds IndexError,
        # NotImplementedError, struct.error, ... so every failure is reported the same way
        raise DatasetError(f"{source}: not a readable zip file "
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
