"""Where cells run: in this process (:class:`LocalExecutor`) or on Ray (:class:`RayExecutor`).

Both yield ``(index, records)`` pairs as cells finish; :func:`basin.distributed.run_grid`
puts them back in cell order, so results never depend on scheduling.

* ``local`` (the default): the cells one after the other in this process, exactly the loop
  an unsharded program would run, with no serialisation: today's behaviour and speed.
* ``ray``: one Ray core task per cell, with per-cell resource requests (``num_cpus``, a GPU
  fraction where the cluster has GPUs) and Ray's retries (``max_retries``: a task whose
  worker died, or whose node was preempted, runs again; ``retry_exceptions`` also retries a
  task that raised). The work function and the shared objects (models, detectors, data) are
  put in Ray's object store once, and each worker process deserialises them once, not once
  per cell. ``address="auto"`` or ``"ray://HOST:PORT"`` joins an existing cluster; without
  an address a local Ray is started for the grid and shut down after it.

Ray is an optional extra (``pip install 'basin[ray]'``), imported only when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from basin.distributed.cells import Cell
from basin.robustness.records import Record

WorkFn = Callable[[Cell, Any], list[Record]]
RAY_INSTALL = "pip install 'basin[ray]'"
EXECUTORS = ("local", "ray")


class GridError(RuntimeError):
    """A cell failed (after its retries) or returned something other than records."""


def import_ray() -> Any:
    """The ``ray`` module, or a one-line RuntimeError saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise RuntimeError(f"executor 'ray' needs Ray, which is not installed: "
                           f"{RAY_INSTALL}") from None


def checked_records(result: Any, cell: Cell) -> list[Record]:
    """``result`` as a list of Records; GridError naming the cell otherwise."""
    if not isinstance(result, list | tuple) or not all(isinstance(r, Record) for r in result):
        raise GridError(f"cell {cell.key()}: work_fn must return a list of "
                        f"basin.robustness.records.Record, got {type(result).__name__}")
    return list(result)


@dataclass(frozen=True)
class Resources:
    """What each Ray task asks for, and how often it is retried.

    ``num_gpus=None`` asks for ``gpu_fraction`` of a GPU when the cluster has GPUs (several
    small cells share one) and for none otherwise; the local executor ignores all of this.
    """

    num_cpus: float = 1.0
    num_gpus: float | None = None
    gpu_fraction: float = 0.25
    max_retries: int = 3
    retry_exceptions: bool = False

    def __post_init__(self) -> None:
        if not self.num_cpus > 0:
            raise ValueError(f"num_cpus: expected a number > 0, got {self.num_cpus!r}")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise ValueError(f"num_gpus: expected a number >= 0 or None, got {self.num_gpus!r}")
        if not 0 < self.gpu_fraction <= 1:
            raise ValueError(f"gpu_fraction: expected a fraction in (0, 1], got "
                             f"{self.gpu_fraction!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or \
                self.max_retries < 0:
            raise ValueError(f"max_retries: expected an integer >= 0, got {self.max_retries!r}")

    @classmethod
    def for_device(cls, device: str | torch.device | None, **changes: Any) -> Resources:
        """No GPU request for a CPU device; a GPU fraction (where there are GPUs) otherwise."""
        if device is not None and torch.device(device).type == "cpu":
            changes.setdefault("num_gpus", 0.0)
        return cls(**changes)


class Executor(Protocol):
    """Runs cells; yields ``(index into cells, records)`` as each one finishes."""

    name: str

    def run(self, cells: Sequence[Cell], work_fn: WorkFn, shared: Any
            ) -> Iterator[tuple[int, list[Record]]]: ...


class LocalExecutor:
    """The cells in order, in this process: no copies, no serialisation."""

    name = "local"

    def run(self, cells: Sequence[Cell], work_fn: WorkFn, shared: Any
            ) -> Iterator[tuple[int, list[Record]]]:
        for i, cell in enumerate(cells):
            yield i, checked_records(work_fn(cell, shared), cell)


# per worker process: the last shared object it deserialised, by object id
_WORKER_SHARED: dict[str, Any] = {}


def _shared_in_worker(ray: Any, boxed: list[Any]) -> tuple[WorkFn, Any]:
    """The (work_fn, shared) pair behind the boxed object ref, fetched once per worker."""
    ref = boxed[0]
    key = ref.hex()
    if key not in _WORKER_SHARED:
        _WORKER_SHARED.clear()  # one grid at a time: do not keep an old model alive
        _WORKER_SHARED[key] = ray.get(ref)
    work_fn, shared = _WORKER_SHARED[key]
    return work_fn, shared


def _ray_cell(cell: Cell, boxed: list[Any], threads: int) -> list[Record]:
    """One cell on a Ray worker. The ref comes boxed in a list so that Ray hands the worker
    the ref, not the value: the worker then deserialises the model once for all its cells."""
    ray = import_ray()
    torch.set_num_threads(threads)  # the task's CPU share; results must not depend on it
    work_fn, shared = _shared_in_worker(ray, boxed)
    return checked_records(work_fn(cell, shared), cell)


def check_work_fn(work_fn: Any) -> None:
    """A callable Ray can import by name in another process (module level, no lambda)."""
    if not callable(work_fn):
        raise ValueError(f"work_fn: expected a callable, got {type(work_fn).__name__}")
    qualname = getattr(work_fn, "__qualname__", "")
    if "<" in qualname or not getattr(work_fn, "__module__", None):
        raise ValueError(f"work_fn: expected a module-level function (Ray runs it in other "
                         f"processes), got {qualname or work_fn!r}")


class RayExecutor:
    """Cells as Ray core tasks, on a cluster (``address``) or a local Ray started for them.

    Args:
        address: ``"auto"`` (the cluster this machine belongs to), ``"ray://HOST:PORT"``
            (Ray client) or None: use the Ray already initialised in this process, else start
            a local one with ``num_cpus`` CPUs and shut it down afterwards.
        resources: per-task requests and retries (:class:`Resources`).
        num_cpus: CPUs of a local Ray started here (None: all of this machine's).
    """

    name = "ray"

    def __init__(self, address: str | None = None, resources: Resources | None = None,
                 num_cpus: int | None = None) -> None:
        if address is not None and (not isinstance(address, str) or not address):
            raise ValueError(f"ray_address: expected 'auto' or 'ray://HOST:PORT', got "
                             f"{address!r}")
        self.address = address
        self.resources = resources or Resources()
        self.num_cpus = num_cpus

    def _start(self, ray: Any) -> bool:
        """Connect or start Ray; True when this executor started it (and shuts it down)."""
        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                                  "ignore_reinit_error": True}
        if self.address is not None:
            ray.init(address=self.address, **kwargs)
        else:
            ray.init(num_cpus=self.num_cpus, **kwargs)
        return True

    def _options(self, ray: Any) -> dict[str, Any]:
        res = self.resources
        gpus = res.num_gpus
        if gpus is None:
            gpus = res.gpu_fraction if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        opts = {"num_cpus": res.num_cpus, "num_gpus": gpus, "max_retries": res.max_retries,
                "retry_exceptions": res.retry_exceptions}
        return opts

    def run(self, cells: Sequence[Cell], work_fn: WorkFn, shared: Any
            ) -> Iterator[tuple[int, list[Record]]]:
        ray = import_ray()
        check_work_fn(work_fn)
        started = self._start(ray)
        pending: dict[Any, int] = {}
        try:
            boxed = [ray.put((work_fn, shared))]  # once for the whole grid
            task = ray.remote(_ray_cell).options(**self._options(ray))
            threads = max(1, int(self.resources.num_cpus))
            pending = {task.remote(cell, boxed, threads): i for i, cell in enumerate(cells)}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(ready[0])
                try:
                    records = ray.get(ready[0])
                except ray.exceptions.RayError as exc:
                    raise GridError(f"cell {cells[i].key()}: failed on Ray after "
                                    f"{self.resources.max_retries} retries: {exc}") from exc
                yield i, records
        finally:
            for ref in pending:  # an error or an interrupted consumer: stop what is left
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()


def make_executor(executor: str | Executor, *, ray_address: str | None = None,
                  resources: Resources | None = None) -> Executor:
    """``"local"``, ``"ray"`` or an executor instance (returned as is)."""
    if not isinstance(executor, str):
        if ray_address is not None:
            raise ValueError("ray_address: give it to the RayExecutor itself")
        return executor
    if executor == "local":
        if ray_address is not None:
            raise ValueError(f"ray_address: only with executor='ray' (got {ray_address!r} "
                             "with executor='local')")
        return LocalExecutor()
    if executor == "ray":
        import_ray()  # fail before any work when Ray is missing
        return RayExecutor(ray_address, resources)
    raise ValueError(f"executor: expected one of {EXECUTORS}, got {executor!r}")
