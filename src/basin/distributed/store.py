"""The run folder of a grid: append-only ``records.jsonl`` plus ``manifest.json``.

Results stream into the folder as cells finish, so a crash, a preempted node or Ctrl-C loses
only the cells in flight, and a rerun of the same command skips every finished cell:

* ``records.jsonl``: one line per finished cell, ``{"key", "cell", "records"}``, written
  with a single ``write`` of the whole line, flushed and fsynced. A cell's records are thus
  all there or not at all: a line cut short by a crash has no newline (or is not JSON) and is
  dropped when the file is read, and cut off before the next append. A cell already in the
  file is never written again, so a retried task cannot duplicate records; should a line
  still appear twice (two drivers on one folder), the first one wins.
* ``manifest.json`` (atomic rename): the grid's format, its ``config`` (what the cell keys do
  not say: model digests, seeds, data; a rerun with another config is refused instead of
  mixing results), the planned cells and how many are done.

Only the driver writes; workers return their records to it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from basin.distributed.cells import Cell
from basin.robustness.records import Record
from basin.utils.io import atomic_write_json, read_json

MANIFEST_FORMAT = "basin.grid/1"
RECORDS_FILE = "records.jsonl"
MANIFEST_FILE = "manifest.json"


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, tensors
        return obj.tolist()
    raise TypeError(f"record extra: cannot write {type(obj).__name__} as JSON")


class StoreError(ValueError):
    """The run folder holds another grid, or its files are not a grid's."""


def _canonical(obj: Any) -> Any:
    """``obj`` as it comes back from JSON (tuples as lists), for comparing configs."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class GridStore:
    """Finished cells of one grid in ``folder`` (created when missing)."""

    def __init__(self, folder: str | os.PathLike[str], config: Mapping[str, Any] | None = None
                 ) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise StoreError(f"out_dir {self.folder}: exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.records_path = self.folder / RECORDS_FILE
        self.manifest_path = self.folder / MANIFEST_FILE
        self.config = _canonical(dict(config or {}))
        self._check_manifest()
        self.done: dict[str, list[Record]] = self._read()

    def _check_manifest(self) -> None:
        if not self.manifest_path.is_file():
            if self.records_path.is_file() and self.records_path.stat().st_size:
                raise StoreError(f"{self.records_path}: records without a {MANIFEST_FILE}; "
                                 "not a basin grid folder (use another out_dir)")
            return
        found = read_json(self.manifest_path)
        if not isinstance(found, dict) or found.get("format") != MANIFEST_FORMAT:
            raise StoreError(f"{self.manifest_path}: not a basin grid manifest (format "
                             f"{MANIFEST_FORMAT})")
        if found.get("config") != self.config:
            raise StoreError(f"{self.folder}: holds results of another grid (config "
                             f"{found.get('config')!r}, this run {self.config!r}); use "
                             "another out_dir or delete the folder")

    def _read(self) -> dict[str, list[Record]]:
        """Finished cells by key; a torn last line (a crash mid-write) is cut off."""
        done: dict[str, list[Record]] = {}
        if not self.records_path.is_file():
            return done
        data = self.records_path.read_bytes()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                entry = json.loads(line)
                key = str(entry["key"])
                records = [Record.from_dict(r) for r in entry["records"]]
            except (ValueError, KeyError, TypeError):
                break  # a torn or foreign line: everything after it is unreliable
            done.setdefault(key, records)
            good += len(line)
        if good < len(data):
            with open(self.records_path, "r+b") as fh:
                fh.truncate(good)
        return done

    def write_manifest(self, cells: Iterable[Cell], status: str) -> None:
        keys = [c.key() for c in cells]
        atomic_write_json(self.manifest_path, {
            "format": MANIFEST_FORMAT, "config": self.config, "status": status,
            "cells": [json.loads(k) for k in keys], "total": len(keys),
            "done": sum(k in self.done for k in keys), "records_file": RECORDS_FILE,
            "updated_unix": round(time.time(), 3)})

    def has(self, cell: Cell) -> bool:
        return cell.key() in self.done

    def get(self, cell: Cell) -> list[Record]:
        return self.done[cell.key()]

    def add(self, cell: Cell, records: list[Record]) -> None:
        """Append the cell's records as one line (once: a cell already stored is skipped)."""
        key = cell.key()
        if key in self.done:
            return
        entry = {"key": key, "cell": cell.to_dict(), "records": [r.to_dict() for r in records]}
        line = json.dumps(entry, sort_keys=True, separators=(",", ":"), default=_json_default)
        data = (line + "\n").encode("utf-8")
        fd = os.open(self.records_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        # kept as a rerun reads them back, so a resumed grid returns the same objects
        self.done[key] = [Record.from_dict(r) for r in json.loads(line)["records"]]
