"""``run_grid``: run cells with an executor, stream results into a run folder, resume.

The one entry point of :mod:`basin.distributed`::

    records = run_grid(cells, work_fn, shared=(model, data), executor="ray",
                       out_dir="runs/audit/cells", config={"model_sha256": digest})

``work_fn(cell, shared) -> list[Record]`` must be a module-level function (Ray imports it by
name in its workers) and must compute the cell from the cell and ``shared`` alone (seed it
with ``cell.seed(base)``), so that the records do not depend on the executor, the order or
the worker. Results come back in cell order whatever the completion order. With ``out_dir``
every finished cell is appended to ``out_dir/records.jsonl`` at once, and a rerun with the
same ``config`` computes only the cells not there yet.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from basin.distributed.cells import Cell, check_unique
from basin.distributed.executors import Executor, Resources, WorkFn, make_executor
from basin.distributed.progress import GridProgress
from basin.distributed.store import GridStore
from basin.robustness.records import Record


def run_cells(cells: Sequence[Cell], work_fn: WorkFn, *, shared: Any = None,
              executor: str | Executor = "local", out_dir: str | os.PathLike[str] | None = None,
              ray_address: str | None = None, resources: Resources | None = None,
              config: Mapping[str, Any] | None = None, progress: bool = False,
              desc: str = "cells") -> list[list[Record]]:
    """Every cell's records, aligned with ``cells`` (see :func:`run_grid` for the arguments)."""
    cells = check_unique(cells)
    runner = make_executor(executor, ray_address=ray_address, resources=resources)
    store = GridStore(out_dir, config) if out_dir is not None else None
    results: list[list[Record] | None] = [None] * len(cells)
    todo: list[int] = []
    for i, cell in enumerate(cells):
        if store is not None and store.has(cell):
            results[i] = store.get(cell)
        else:
            todo.append(i)
    if store is not None:
        store.write_manifest(cells, "running")
    with GridProgress(len(cells), len(cells) - len(todo), desc, enabled=progress) as bar:
        if todo:
            for j, records in runner.run([cells[i] for i in todo], work_fn, shared):
                i = todo[j]
                if store is not None:
                    store.add(cells[i], records)
                    records = store.get(cells[i])
                results[i] = records
                bar.cell_done()
    if store is not None:
        store.write_manifest(cells, "complete")
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def run_grid(cells: Sequence[Cell], work_fn: WorkFn, *, shared: Any = None,
             executor: str | Executor = "local", out_dir: str | os.PathLike[str] | None = None,
             ray_address: str | None = None, resources: Resources | None = None,
             config: Mapping[str, Any] | None = None, progress: bool = False,
             desc: str = "cells") -> list[Record]:
    """Run ``work_fn`` on every cell; all records, in cell order.

    Args:
        cells: distinct :class:`Cell` keys.
        work_fn: module-level ``work_fn(cell, shared) -> list[Record]``.
        shared: what every cell reads (models, detectors, data): passed as is locally, put in
            Ray's object store once with ``executor="ray"``.
        executor: ``"local"`` (default: in this process, in order), ``"ray"`` or an executor
            instance (:class:`LocalExecutor`, :class:`RayExecutor`).
        out_dir: run folder for ``records.jsonl`` and ``manifest.json``; cells already there
            are not computed again (resume). None: nothing is written.
        ray_address: ``"auto"`` or ``"ray://HOST:PORT"`` to join a cluster (executor "ray");
            None starts a local Ray and shuts it down afterwards.
        resources: per-task CPUs, GPU fraction and retries on Ray.
        config: what the cell keys do not say (model digests, base seed, data): written to
            the manifest, and a rerun into the same ``out_dir`` with another config fails.
        progress: show cells done / total with an ETA.
        desc: the progress bar's label.
    """
    per_cell = run_cells(cells, work_fn, shared=shared, executor=executor, out_dir=out_dir,
                         ray_address=ray_address, resources=resources, config=config,
                         progress=progress, desc=desc)
    return [r for records in per_cell for r in records]
