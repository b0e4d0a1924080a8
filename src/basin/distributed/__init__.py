"""How work is executed: grids of independent cells, run locally or on a Ray cluster.

:func:`run_grid` runs ``work_fn(cell, shared) -> list[Record]`` on every :class:`Cell` with
an executor (``"local"``, the default, or ``"ray"``), streams each finished cell into a run
folder (:class:`GridStore`) so that a rerun resumes, and returns the records in cell order.
Imports only :mod:`basin.robustness.records` and :mod:`basin.utils`; the robustness and
reproduction code imports this package, never the other way round.
"""

from basin.distributed.cells import Cell, check_unique, shard_cells, shard_ranges
from basin.distributed.executors import (
    EXECUTORS,
    RAY_INSTALL,
    Executor,
    GridError,
    LocalExecutor,
    RayExecutor,
    Resources,
    import_ray,
    make_executor,
)
from basin.distributed.grid import run_cells, run_grid
from basin.distributed.progress import GridProgress
from basin.distributed.store import GridStore, StoreError

__all__ = ["EXECUTORS", "RAY_INSTALL", "Cell", "Executor", "GridError", "GridProgress",
           "GridStore", "LocalExecutor", "RayExecutor", "Resources", "StoreError",
           "check_unique", "import_ray", "make_executor", "run_cells", "run_grid",
           "shard_cells", "shard_ranges"]
