"""``load_dataset``: verified files -> decoded arrays -> an :class:`ImageDataset` split.

Decoding is memoised per process (``functools.lru_cache`` keyed on the loader kind and each
file's path, size and mtime), keeping the official files' pixels as read-only uint8 arrays;
each call then converts only the requested split to float32, so repeated loads are cheap and
callers may modify what they get back.

The optional sets (the Tiny-ImageNet zip, which the offline mirror lacks, and ODIN's resized
Tiny-ImageNet and LSUN, which it holds) may be absent; :func:`is_available` says, without
downloading, whether their files are on disk.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from basin.data.errors import DatasetError
from basin.data.parsers import (
    omniglot_class_keys,
    parse_cifar_batch,
    parse_idx,
    parse_image_tarball,
    parse_omniglot_zip,
    parse_tiny_imagenet_val,
)
from basin.data.registry import CIFAR_SHAPE, dataset_info
from basin.data.sources import (
    download_files,
    locate,
    missing_message,
    read_verified,
    resolve_cache_dir,
    resolve_mirror,
    verify_file,
)
from basin.data.splits import split_indices
from basin.data.synthetic import check_shape, noise_images
from basin.data.transforms import cifar_to_bw, resize_bilinear, to_unit_float

PathArg = str | os.PathLike[str] | None
# (relative path, actual path, size, mtime_ns) per file: changes to a file miss the cache
_FileKey = tuple[tuple[str, str, int, int], ...]


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """One split of a dataset: float32 NCHW images in [0, 1] and int64 labels.

    ``indices`` locate each image in the official file its split comes from (the training
    file for train and val, the test file for test), so that anyone can check which official
    images a run touched; it is None for synthetic sets.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    indices: torch.Tensor | None

    def __post_init__(self) -> None:
        n = self.images.shape[0] if self.images.ndim == 4 else -1
        if n < 0 or self.images.dtype != torch.float32:
            raise ValueError(f"{self.name}/{self.split}: images must be float32 (N, C, H, W), "
                             f"got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or tuple(self.labels.shape) != (n,):
            raise ValueError(f"{self.name}/{self.split}: labels must be int64 ({n},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")
        if self.indices is not None and tuple(self.indices.shape) != (n,):
            raise ValueError(f"{self.name}/{self.split}: indices must have shape ({n},), got "
                             f"{tuple(self.indices.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int, seed: int = 0) -> ImageDataset:
        """The first ``n`` images of a ``seed``-ed permutation, kept in their original order.

        Subsets of one seed are nested (``subset(100)`` lies inside ``subset(1000)``);
        ``n >= len(self)`` returns ``self``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if n >= len(self):
            return self
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(len(self), generator=generator)[:n].sort().values
        return ImageDataset(
            self.name, self.split, self.images[chosen], self.labels[chosen], self.classes,
            None if self.indices is None else self.indices[chosen])


def load_dataset(name: str, split: str = "test", *, mirror: PathArg = None,
                 cache_dir: PathArg = None, download: bool | None = None, seed: int = 0,
                 shape: tuple[int, int, int] | None = None) -> ImageDataset:
    """Load split ``split`` of dataset ``name`` (see :func:`dataset_names`), verified.

    Files come from ``mirror`` (else ``$BASIN_DATA_MIRROR``), then ``cache_dir`` (else
    ``$BASIN_HOME/data``), then the official URLs: with ``download=None`` (the default) only
    when no mirror is configured, so a fresh online machine needs no set-up while a mirror
    user never touches the network; ``True`` always, ``False`` never. ``seed`` and
    ``shape`` (C, H, W) apply only to the synthetic noise sets; the real datasets' splits are
    fixed and ignore the seed. ``tiny-imagenet`` is the official zip's 10,000 validation
    images, each 64x64 JPEG resized to 32x32 by Pillow's ``Image.resize((32, 32),
    Image.BILINEAR)`` (antialiased on downscaling, rounded to uint8, as ODIN's "resize" set).
    """
    info = dataset_info(name)
    if split not in info.splits:
        raise DatasetError(f"{name}: no split {split!r}; available: {', '.join(info.splits)}")
    if info.synthetic:
        dims = info.shape if shape is None else check_shape(shape)
        images = noise_images(info.kind, info.sizes[split], dims, split=split, seed=seed)
        labels = torch.zeros(images.shape[0], dtype=torch.int64)
        return ImageDataset(name, split, images, labels, info.classes, None)
    if shape is not None and tuple(shape) != info.shape:
        raise DatasetError(f"{name}: shape {tuple(shape)} requested, but {name} images are "
                           f"{info.shape}; shape applies to the synthetic noise sets only")
    located = _locate_all(info.split_files[split], mirror, cache_dir, download)
    # cifar10 and cifar10-bw share one decoded copy of the batches
    decoder = "cifar" if info.kind == "cifar-bw" else info.kind
    pixels, raw_labels, classes = _decode(decoder, _file_key(located), info.n_classes)
    # train and val are carved from one official file, whose size is their sum
    expected = (info.sizes["test"] if split == "test"
                else info.sizes["train"] + info.sizes["val"])
    if pixels.shape[0] != expected:
        files = ", ".join(str(p) for _, p in located)
        raise DatasetError(f"{files}: {pixels.shape[0]} images, {name} {split} expects "
                           f"{expected} in the official file(s)")
    indices = split_indices(name, split)
    chosen = indices.numpy()
    if info.kind == "omniglot":
        images = torch.from_numpy(pixels[chosen])
    elif info.kind == "cifar-bw":
        # the R plane alone: converting all three planes of 50,000 images would cost 600 MB
        images = cifar_to_bw(to_unit_float(pixels[chosen, :1]))
    else:
        images = to_unit_float(pixels[chosen])
    labels = torch.from_numpy(raw_labels[chosen].astype(np.int64))
    return ImageDataset(name, split, images.contiguous(), labels,
                        classes or info.classes, indices)


def verify_dataset(name: str, *, mirror: PathArg = None, cache_dir: PathArg = None,
                   download: bool | None = None) -> dict[str, str]:
    """Check every file of ``name``; ``{relative file: sha256 of uncompressed content}``.

    Files with only a published MD5 map to ``"md5:"`` + its hex digest. Synthetic sets have
    no files and return ``{}``. Any missing or corrupt file raises :class:`DatasetError`
    naming it. Missing files are downloaded first as :func:`load_dataset` does (``download``
    None: only when no mirror is configured); ``basin data verify`` passes False.
    """
    info = dataset_info(name)
    return {rel: verify_file(rel, path)
            for rel, path in _locate_all(info.files, mirror, cache_dir, download)}


def is_available(name: str, mirror: PathArg = None, *, cache_dir: PathArg = None) -> bool:
    """Whether every file of dataset ``name`` is already on disk; never downloads.

    Looks where :func:`load_dataset` looks (``mirror``, else ``$BASIN_DATA_MIRROR``, then
    ``cache_dir``, else ``$BASIN_HOME/data``); synthetic sets are always available. Only
    presence is checked: :func:`load_dataset` still verifies checksums, so a corrupt file
    fails loudly there instead of being skipped quietly here. An unknown name, or a ``mirror``
    that is not a folder, raises :class:`DatasetError`.
    """
    info = dataset_info(name)
    if info.synthetic:
        return True
    mirror_dir, cache = resolve_mirror(mirror), resolve_cache_dir(cache_dir)
    return all(locate(rel, mirror=mirror_dir, cache_dir=cache) is not None
               for rel in info.files)


def mirror_checksums(names: Iterable[str], *, mirror: PathArg = None,
                     cache_dir: PathArg = None, download: bool | None = None
                     ) -> dict[str, str]:
    """The verified checksums of every file behind ``names``, to record next to results."""
    checksums: dict[str, str] = {}
    for name in names:
        checksums.update(verify_dataset(name, mirror=mirror, cache_dir=cache_dir,
                                        download=download))
    return dict(sorted(checksums.items()))


def _locate_all(relpaths: Iterable[str], mirror: PathArg, cache_dir: PathArg,
                download: bool | None) -> list[tuple[str, Path]]:
    """Each file's path on disk, downloading the missing ones if ``download`` (None: auto)."""
    mirror_dir, cache = resolve_mirror(mirror), resolve_cache_dir(cache_dir)
    relpaths = list(relpaths)
    missing = [r for r in relpaths if locate(r, mirror=mirror_dir, cache_dir=cache) is None]
    if missing and (mirror_dir is None if download is None else download):
        download_files(missing, cache, log=lambda line: print(line, file=sys.stderr))
    found = []
    for rel in relpaths:
        hit = locate(rel, mirror=mirror_dir, cache_dir=cache)
        if hit is None:
            raise DatasetError(missing_message(rel, mirror_dir, cache))
        found.append((rel, hit.path))
    return found


def _file_key(located: list[tuple[str, Path]]) -> _FileKey:
    key = []
    for rel, path in located:
        try:
            st = path.stat()
        except OSError as exc:
            raise DatasetError(f"{path}: unreadable ({exc})") from exc
        key.append((rel, str(path), st.st_size, st.st_mtime_ns))
    return tuple(key)


@functools.lru_cache(maxsize=8)
def _decode(kind: str, files: _FileKey, n_classes: int
            ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Pixels (uint8, or float32 for Omniglot), uint8/int64 labels and class names (or ())."""
    if kind in ("tiny-imagenet", "image-tarball"):
        return _decode_archive(kind, files, n_classes)
    blobs = [(rel, path, read_verified(rel, Path(path))) for rel, path, _, _ in files]
    if kind == "idx":
        return (*_decode_idx(blobs, n_classes), ())
    if kind == "cifar":
        parsed = [parse_cifar_batch(data, source=path) for _, path, data in blobs]
        pixels = np.concatenate([p for p, _ in parsed])
        labels = np.concatenate([lab for _, lab in parsed])
        return _readonly(pixels), _readonly(labels), ()
    if kind == "omniglot":
        return _decode_omniglot(blobs)
    raise DatasetError(f"internal: no decoder for dataset kind {kind!r}")


def _decode_idx(blobs: list[tuple[str, str, bytes]], n_classes: int
                ) -> tuple[np.ndarray, np.ndarray]:
    (_, image_path, image_data), (_, label_path, label_data) = blobs
    images = parse_idx(image_data, source=image_path)
    labels = parse_idx(label_data, source=label_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DatasetError(f"{image_path}: expected uint8 images (N, 28, 28), got "
                           f"{images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype != np.uint8:
        raise DatasetError(f"{label_path}: expected {images.shape[0]} uint8 labels to match "
                           f"{image_path}, got {labels.dtype} {labels.shape}")
    if labels.size and int(labels.max()) >= n_classes:
        raise DatasetError(f"{label_path}: label {int(labels.max())} out of range "
                           f"0..{n_classes - 1}")
    return images[:, None], labels


def _decode_omniglot(blobs: list[tuple[str, str, bytes]]
                     ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    chunks, keys = [], []
    for rel, path, data in blobs:
        parsed = parse_omniglot_zip(data, source=path)
        keys += omniglot_class_keys(parsed, source=path, stem=Path(rel).stem)
        # in slices: a float copy of all 105x105 drawings at once would need ~300 MB
        for start in range(0, parsed.images.shape[0], 1024):
            ink = 1.0 - to_unit_float(parsed.images[start:start + 1024, None])
            chunks.append(resize_bilinear(ink, (28, 28)).numpy())
    classes = tuple(sorted(set(keys)))
    lookup = {key: i for i, key in enumerate(classes)}
    labels = np.array([lookup[k] for k in keys], dtype=np.int64)
    pixels = np.concatenate(chunks) if chunks else np.zeros((0, 1, 28, 28), np.float32)
    return _readonly(pixels), _readonly(labels), classes


def _decode_archive(kind: str, files: _FileKey, n_classes: int
                    ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The optional Tiny-ImageNet sets: one archive each, decoded and resized to 32x32."""
    ((rel, path, _, _),) = files
    # hashed by streaming, then parsed from disk: the 248 MB zip never sits in memory whole
    verify_file(rel, Path(path))
    parse = parse_tiny_imagenet_val if kind == "tiny-imagenet" else parse_image_tarball
    try:
        with open(path, "rb") as stream:
            parsed = parse(stream, source=path, size=(CIFAR_SHAPE[2], CIFAR_SHAPE[1]))
    except OSError as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from exc
    if kind == "tiny-imagenet" and len(parsed.classes) != n_classes:
        raise DatasetError(f"{path}: wnids.txt lists {len(parsed.classes)} classes, "
                           f"Tiny-ImageNet has {n_classes}")
    return _readonly(parsed.images), _readonly(parsed.labels), parsed.classes


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # cached for the whole process: nobody may modify it
    return array
