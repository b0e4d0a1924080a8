"""The byte-level decoders: hand-built IDX, CIFAR-10 and Omniglot files, and fuzzing."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from basin.data import DatasetError
from basin.data.parsers import (
    decode_png,
    omniglot_class_keys,
    parse_cifar_batch,
    parse_idx,
    parse_omniglot_zip,
)


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def png_bytes(pixels: np.ndarray) -> bytes:
    """A 1-bit PNG like Omniglot's: True = white paper, False = black ink."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(bool)).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def drawing(ink_at: tuple[int, int], size: int = 105) -> np.ndarray:
    paper = np.ones((size, size), dtype=bool)
    paper[ink_at] = False
    return paper


IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
SMALL_IDX = idx_bytes(IMAGES)
SMALL_CIFAR = bytes([3]) + bytes(range(256)) * 12 + bytes([9]) + bytes(3072)
SMALL_ZIP = zip_bytes({
    "images_background_small1/Greek/character01/0394_01.png": png_bytes(drawing((0, 0))),
    "images_background_small1/Greek/character02/0395_01.png": png_bytes(drawing((5, 7))),
    "images_background_small1/Greek/": b"",
})


def test_idx_round_trip_raw_and_gzipped() -> None:
    for data in (SMALL_IDX, gzip.compress(SMALL_IDX)):
        decoded = parse_idx(data, source="x")
        assert decoded.dtype == np.uint8
        np.testing.assert_array_equal(decoded, IMAGES)


def test_idx_big_endian_int16() -> None:
    values = np.array([[1, -2], [300, -32768]], dtype=">i2")
    decoded = parse_idx(idx_bytes(values, type_code=0x0B))
    assert decoded.tolist() == [[1, -2], [300, -32768]]


@pytest.mark.parametrize(("data", "problem"), [
    (SMALL_IDX[:-1], "truncated"),
    (SMALL_IDX + b"\0", "trailing bytes"),
    (SMALL_IDX[:3], "truncated IDX header"),
    (b"\x01" + SMALL_IDX[1:], "magic number"),
    (SMALL_IDX[:2] + b"\x07" + SMALL_IDX[3:], "element type"),
    (b"\0\0\x08\0", "zero dimensions"),
    (b"\0\0\x08\x03" + struct.pack(">2I", 1, 2), "truncated IDX header"),
    (gzip.compress(SMALL_IDX)[:-5], "corrupt gzip"),
])
def test_idx_bad_input_names_file_and_problem(data: bytes, problem: str) -> None:
    with pytest.raises(DatasetError, match=problem) as info:
        parse_idx(data, source="some/file-idx3-ubyte")
    assert "some/file-idx3-ubyte" in str(info.value)


def test_idx_huge_declared_size_is_refused_before_allocating() -> None:
    header = b"\0\0\x0e\x04" + struct.pack(">4I", 2**32 - 1, 2**32 - 1, 2**32 - 1, 60000)
    with pytest.raises(DatasetError, match="truncated"):
        parse_idx(header + bytes(100), source="huge")


def test_cifar_batch_layout_label_then_r_g_b_planes() -> None:
    images, labels = parse_cifar_batch(SMALL_CIFAR, source="batch")
    assert images.shape == (2, 3, 32, 32)
    assert labels.tolist() == [3, 9]
    # record 0 pixel bytes are 0..255 repeated: the R plane is bytes 0..1023, row-major
    assert images[0, 0, 0, :4].tolist() == [0, 1, 2, 3]
    assert images[0, 0, 8, 0] == (8 * 32) % 256
    assert images[0, 1, 0, 0] == 1024 % 256 and images[0, 2, 31, 31] == 3071 % 256
    assert images[1].sum() == 0


@pytest.mark.parametrize(("data", "problem"), [
    (b"", "multiple"),
    (SMALL_CIFAR[:-1], "multiple"),
    (bytes([10]) + bytes(3072), "label 10"),
])
def test_cifar_bad_input(data: bytes, problem: str) -> None:
    with pytest.raises(DatasetError, match=problem):
        parse_cifar_batch(data, source="data_batch_1.bin")


def test_omniglot_zip_decodes_ink_as_zero_in_member_order() -> None:
    parsed = parse_omniglot_zip(SMALL_ZIP, source="z.zip")
    assert parsed.names == ("images_background_small1/Greek/character01/0394_01.png",
                            "images_background_small1/Greek/character02/0395_01.png")
    assert parsed.images.shape == (2, 105, 105) and parsed.images.dtype == np.uint8
    assert parsed.images[0, 0, 0] == 0 and parsed.images[1, 5, 7] == 0
    assert int((parsed.images == 0).sum()) == 2  # one ink pixel each, the rest white (255)
    assert set(np.unique(parsed.images).tolist()) == {0, 255}


def test_omniglot_class_keys_for_background_and_runs() -> None:
    runs = zip_bytes({
        "run01/class_labels.txt": b"run01/test/item01.png run01/training/class02.png\n"
                                  b"run01/test/item02.png run01/training/class01.png\n",
        "run01/test/item01.png": png_bytes(drawing((1, 1))),
        "run01/test/item02.png": png_bytes(drawing((2, 2))),
        "run01/training/class01.png": png_bytes(drawing((3, 3))),
        "run01/training/class02.png": png_bytes(drawing((4, 4))),
    })
    parsed = parse_omniglot_zip(runs, source="all_runs.zip")
    assert omniglot_class_keys(parsed, source="all_runs.zip", stem="all_runs") == [
        "all_runs/run01/class02", "all_runs/run01/class01",
        "all_runs/run01/class01", "all_runs/run01/class02"]
    background = parse_omniglot_zip(SMALL_ZIP, source="bg.zip")
    assert omniglot_class_keys(background, source="bg.zip", stem="bg") == [
        "images_background_small1/Greek/character01",
        "images_background_small1/Greek/character02"]


def test_omniglot_wrong_size_and_unlabelled_members() -> None:
    with pytest.raises(DatasetError, match=r"z.zip:a/b/c/d.png: image is 28x28"):
        parse_omniglot_zip(zip_bytes({"a/b/c/d.png": png_bytes(drawing((0, 0), 28))}),
                           source="z.zip")
    stray = parse_omniglot_zip(zip_bytes({"stray.png": png_bytes(drawing((0, 0)))}),
                               source="z.zip")
    with pytest.raises(DatasetError, match="cannot derive a character class from member stray"):
        omniglot_class_keys(stray, source="z.zip", stem="z")
    with pytest.raises(DatasetError, match="not a readable zip"):
        parse_omniglot_zip(b"PK\x03\x04 not really", source="z.zip")
    with pytest.raises(DatasetError, match="undecodable PNG"):
        decode_png(b"\x89PNG\r\n\x1a\n" + bytes(20), source="p.png", size=(105, 105))


def _mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """Truncations and single-byte changes of a valid file, plus unrelated random bytes."""
    truncated = st.integers(0, len(valid) - 1).map(lambda n: valid[:n])
    flipped = st.tuples(st.integers(0, len(valid) - 1), st.integers(1, 255)).map(
        lambda p: valid[:p[0]] + bytes([valid[p[0]] ^ p[1]]) + valid[p[0] + 1:])
    return st.one_of(truncated, flipped, st.binary(max_size=4096))


FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(_mutations(SMALL_IDX) | _mutations(gzip.compress(SMALL_IDX)))
def test_fuzz_idx(data: bytes) -> None:
    try:
        result = parse_idx(data, source="fuzz")
    except DatasetError:
        return
    assert isinstance(result, np.ndarray)


@FUZZ
@given(_mutations(SMALL_CIFAR))
def test_fuzz_cifar(data: bytes) -> None:
    try:
        images, labels = parse_cifar_batch(data, source="fuzz")
    except DatasetError:
        return
    assert images.shape == (labels.shape[0], 3, 32, 32) and int(labels.max()) < 10


@FUZZ
@given(_mutations(SMALL_ZIP))
def test_fuzz_omniglot_zip(data: bytes) -> None:
    try:
        parsed = parse_omniglot_zip(data, source="fuzz")
    except DatasetError:
        return
    assert parsed.images.shape == (len(parsed.names), 105, 105)


SMALL_PNG = png_bytes(drawing((3, 4)))


@FUZZ
@given(_mutations(SMALL_PNG))
def test_fuzz_png(data: bytes) -> None:
    try:
        pixels = decode_png(data, source="fuzz", size=(105, 105))
    except DatasetError:
        return
    assert pixels.shape == (105, 105) and pixels.dtype == np.uint8
