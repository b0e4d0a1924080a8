"""Atomic file writes and verified safetensors + JSON checkpoints.

Every file basin writes goes through a temporary file in the same folder followed by
``os.replace``, so an interrupted run never leaves a half-written checkpoint, cache or report.

Every safetensors file ``X.safetensors`` that :func:`save_tensors` writes gets a record
``X.safetensors.json`` beside it (``{"file", "format", "sha256", "size"}``) and
:func:`load_tensors` refuses a file whose bytes do not hash to it, naming the file: a flipped
byte anywhere (header or tensor data) loads silently otherwise. Saving is canonical (sorted
header keys), so equal tensors and metadata give byte-identical files and equal digests.

Files written by an older basin have neither the record nor the ``basin.digest`` metadata
marker: they load with a warning that says how to record their digest (:func:`record_digest`),
so existing runs keep working. A file that carries the marker but has lost its record is an
error, since that only happens when the record was deleted or the save interrupted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, truncated or does not match its config."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; results are meant to be shared like any other file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc


DIGEST_SUFFIX = ".json"
"""The sha256 record of ``X.safetensors`` is ``X.safetensors.json`` beside it."""
_DIGEST_FORMAT = "basin.sha256/1"
_DIGEST_MARKER = "basin.digest"
"""Metadata key written into every file basin saves: a missing record is then an error."""


def digest_path(path: str | os.PathLike[str]) -> Path:
    """Where the sha256 record of the safetensors file ``path`` lives."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def canonical_safetensors(tensors: Mapping[str, torch.Tensor],
                          metadata: Mapping[str, str] | None = None) -> bytes:
    """The safetensors bytes of ``tensors``, equal for equal tensors and metadata.

    safetensors writes its metadata from a Rust hash map, so the key order changes from one
    process to the next (a resumed run wrote other bytes than an uninterrupted one). The
    header is re-serialised here with sorted keys and no spaces, padded to 8 bytes as the
    format asks; the tensor data and offsets are left exactly as safetensors laid them out
    (sorted by dtype and name, so independent of the dict's insertion order).
    """
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    raw = save(contiguous, metadata={**dict(metadata or {}), _DIGEST_MARKER: "sha256"})
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + size:]


def save_tensors(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None) -> str:
    """Write tensors as safetensors (never pickle) plus their sha256 record; returns the digest.

    Both files are written atomically, tensors first: a crash between the two leaves a
    record that does not match, which :func:`load_tensors` reports instead of loading.
    """
    data = canonical_safetensors(tensors, metadata)
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(path, data)
    target = Path(path)
    atomic_write_json(digest_path(target), {"file": target.name, "format": _DIGEST_FORMAT,
                                            "sha256": digest, "size": len(data)})
    return digest


def record_digest(path: str | os.PathLike[str]) -> str:
    """Record the sha256 of an existing safetensors file (one written before basin 0.2).

    Only for a file you trust: from then on :func:`load_tensors` verifies it.
    """
    path = Path(path)
    data = _read_bytes(path)
    _parse_header(path, data)
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_json(digest_path(path), {"file": path.name, "format": _DIGEST_FORMAT,
                                          "sha256": digest, "size": len(data)})
    return digest


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a safetensors file after checking its sha256 record; CheckpointError naming it."""
    return read_tensors(path)[0]


def read_tensors(path: str | os.PathLike[str]
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a verified safetensors file (one read, so one version).

    A file with a record must match it byte for byte. A file without one is an error if basin
    wrote it (its metadata says so: the record was deleted or the save interrupted); an older
    file without the marker loads with a warning saying how to record its digest.
    """
    path = Path(path)
    data = _read_bytes(path)
    _verify(path, data)
    metadata = _parse_header(path, data)
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from exc
    metadata.pop(_DIGEST_MARKER, None)
    return tensors, metadata


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from exc


def _verify(path: Path, data: bytes) -> None:
    record_path = digest_path(path)
    if not record_path.is_file():
        if _DIGEST_MARKER in _parse_header(path, data):
            raise CheckpointError(
                f"{path}: its sha256 record {record_path.name} is missing (deleted, or the "
                "save was interrupted); save the checkpoint again")
        warnings.warn(
            f"{path}: no sha256 record (written by an older basin); loaded unverified. "
            f"To verify it from now on: python -c \"from basin.utils.io import record_digest;"
            f" record_digest('{path}')\"", UserWarning, stacklevel=3)
        return
    record = read_json(record_path)
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        raise CheckpointError(f"{record_path}: not a sha256 record (expected a 'sha256' "
                              "entry)")
    actual = hashlib.sha256(data).hexdigest()
    if actual != record["sha256"]:
        raise CheckpointError(
            f"{path}: sha256 {actual[:12]}... does not match {record['sha256'][:12]}... "
            f"recorded in {record_path.name} (the file is corrupted or was replaced); "
            "restore it or save the checkpoint again")


def _parse_header(path: Path, data: bytes) -> dict[str, str]:
    """The metadata dict of a safetensors blob; CheckpointError if the header is malformed."""
    size = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if size < 2 or 8 + size > len(data):
        raise CheckpointError(f"{path}: unreadable safetensors file (truncated header)")
    try:
        header = json.loads(data[8:8 + size])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from exc
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if metadata is not None and not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: unreadable safetensors file (bad __metadata__)")
    return {str(k): str(v) for k, v in (metadata or {}).items()}


def load_state_dict_strict(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor],
                           source: str | os.PathLike[str]) -> None:
    """Load ``tensors`` into ``module``, naming ``source`` if keys or shapes disagree."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: tensors do not match the model (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})")
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(
                f"{source}: tensor {key!r} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(expected[key].shape)}")
    module.load_state_dict(dict(tensors))
