"""basin.distributed on Ray: a local 2-CPU cluster, started once for the module.

Same records as the local executor; a task whose first attempt raises, or kills its worker
process, is retried and every cell appears exactly once; a resumed Ray run skips the cells
finished before; a shared object is deserialised once per worker, not once per cell.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from basin.distributed import Cell, GridError, RayExecutor, Resources, run_grid
from basin.reproductions.feature_recon.attack_grid import Execution, attack_detectors
from distributed_work import (
    audit_toy,
    fail_once,
    noisy_sum,
    toy_attack_stage,
    toy_audit_system,
)

if os.environ.get("CI") == "true":
    import ray  # CI installs the extra: a missing Ray is a failure there, not a skip
else:
    ray = pytest.importorskip("ray")

SHARED = {"x": np.arange(10, dtype=np.float64), "seed": 7}


@pytest.mark.slow  # starts its own Ray (its workers import torch)
def test_a_local_ray_is_started_and_shut_down_when_none_is_running(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # workers inherit the environment: they import this folder's work functions
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent))
    # first in the file, before the module's cluster exists
    assert not ray.is_initialized()
    executor = RayExecutor(num_cpus=1)
    records = run_grid(grid(2), noisy_sum, shared=SHARED, executor=executor)
    assert records == run_grid(grid(2), noisy_sum, shared=SHARED)
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A local Ray with 2 CPUs, the tests' directory importable by its workers."""
    here = str(Path(__file__).resolve().parent)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": here, "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def grid(n: int = 8) -> list[Cell]:
    return [Cell(model=f"m{i % 2}", condition=f"pgd:ce:{i}/255", attack="pgd",
                 epsilon=i / 255, params={"i": i}) for i in range(n)]


def test_ray_with_two_workers_gives_the_local_records(cluster: None) -> None:
    cells = grid()
    local = run_grid(cells, noisy_sum, shared=SHARED)
    on_ray = run_grid(cells, noisy_sum, shared=SHARED, executor="ray")
    assert on_ray == local
    assert ray.is_initialized()  # the executor joined the running Ray and left it running


@pytest.mark.parametrize("how", ["raise", pytest.param("exit", marks=pytest.mark.slow)])
def test_a_failed_task_is_retried_and_every_cell_appears_once(cluster: None, tmp_path: Path,
                                                              how: str) -> None:
    cells = grid(2)
    markers = tmp_path / "markers"
    markers.mkdir()
    shared = {**SHARED, "markers": str(markers), "how": how}
    executor = RayExecutor(resources=Resources(max_retries=2, retry_exceptions=how == "raise"))
    records = run_grid(cells, fail_once, shared=shared, executor=executor,
                       out_dir=tmp_path / "run")
    assert len(list(markers.iterdir())) == len(cells)  # every first attempt failed
    assert records == run_grid(cells, noisy_sum, shared=SHARED)
    lines = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["key"] for line in lines) == sorted(c.key() for c in cells)


def test_without_retries_the_failure_names_the_cell(cluster: None, tmp_path: Path) -> None:
    shared = {**SHARED, "markers": str(tmp_path), "how": "raise"}
    executor = RayExecutor(resources=Resources(max_retries=0))
    with pytest.raises(GridError, match="first attempt"):
        run_grid(grid(1), fail_once, shared=shared, executor=executor)


def test_a_resumed_ray_run_skips_finished_cells(cluster: None, tmp_path: Path) -> None:
    cells = grid(6)
    run_grid(cells[:4], noisy_sum, shared=SHARED, executor="ray", out_dir=tmp_path)
    log = tmp_path / "calls.log"
    records = run_grid(cells, noisy_sum, shared={**SHARED, "log": str(log)}, executor="ray",
                       out_dir=tmp_path)
    assert sorted(log.read_text().splitlines()) == sorted(c.key() for c in cells[4:])
    assert [r.value for r in records] == [r.value for r in run_grid(cells, noisy_sum,
                                                                    shared=SHARED)]




def test_an_audit_on_ray_has_the_local_records(cluster: None) -> None:
    system = toy_audit_system()
    local = audit_toy(system, epsilons=(8 / 255,))
    on_ray = audit_toy(system, epsilons=(8 / 255,), executor="ray", shard_size=8)
    assert on_ray.records == local.records
    for a, b in zip(on_ray.runs, local.runs, strict=True):
        assert a.spec == b.spec and (a.scores == b.scores).all()


def test_the_feature_recon_attack_stage_on_ray_has_the_local_records(cluster: None) -> None:
    stage = toy_attack_stage()
    local = attack_detectors(stage, model_id="toy")
    on_ray = attack_detectors(stage, model_id="toy", execution=Execution("ray"))
    assert {k: v.to_dict() for k, v in on_ray.items()} == \
        {k: v.to_dict() for k, v in local.items()}
