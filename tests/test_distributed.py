"""basin.distributed with the local executor: cells, seeds, the run folder, resume, shards.

The Ray executor's tests are in test_distributed_ray.py; these need no Ray.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from basin.distributed import (
    Cell,
    GridStore,
    StoreError,
    make_executor,
    run_cells,
    run_grid,
    shard_cells,
    shard_ranges,
)
from basin.robustness.records import Record
from distributed_work import noisy_sum, shard_means

SHARED = {"x": np.arange(10, dtype=np.float64), "seed": 7}


def grid() -> list[Cell]:
    return [Cell(model=m, condition=f"pgd:ce:{k}/255", attack="pgd", epsilon=k / 255,
                 params={"goal": g})
            for m in ("a", "b") for k in (1, 8) for g in ("ce", "reject-id")]


def test_cell_key_is_canonical_and_seed_depends_on_the_cell_only() -> None:
    one = Cell(model="m", epsilon=8 / 255, params={"b": [1, 2], "a": 0.1})
    two = Cell(model="m", epsilon=8 / 255, params=(("a", 0.1), ("b", (1, 2))))
    assert one == two and hash(one) == hash(two) and one.key() == two.key()
    assert one.seed(3) == two.seed(3)
    assert Cell.from_dict(json.loads(json.dumps(one.to_dict()))) == one
    # a different cell, or another base seed, gives another seed; 31 bits
    assert Cell(model="m", epsilon=1 / 255).seed(3) != one.seed(3) != one.seed(4)
    assert 0 <= one.seed(0) < 2**31
    assert one.param("b") == (1, 2) and one.param("missing", 5) == 5


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"shard": (3, 3)}, "shard"), ({"shard": (-1, 2)}, "shard"), ({"epsilon": -0.1}, "epsilon"),
    ({"epsilon": float("nan")}, "epsilon"), ({"model": 3}, "model"),
    ({"params": {"x": object()}}, "params"), ({"params": 5}, "params")])
def test_cell_rejects_bad_fields(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Cell(**kwargs)


def test_shard_ranges_cover_the_inputs_once() -> None:
    assert shard_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert shard_ranges(10, None) == [(0, 10)]
    assert shard_ranges(0, 4) == []
    assert [c.shard for c in shard_cells(Cell(model="m"), 5, 2)] == [(0, 2), (2, 4), (4, 5)]
    with pytest.raises(ValueError, match="size"):
        shard_ranges(10, 0)


def test_results_come_in_cell_order_and_do_not_depend_on_the_order_run() -> None:
    cells = grid()
    records = run_grid(cells, noisy_sum, shared=SHARED)
    assert len(records) == 2 * len(cells)
    assert [r.dataset for r in records[::2]] == [c.model for c in cells]
    shuffled = cells[:]
    random.Random(0).shuffle(shuffled)
    again = run_cells(shuffled, noisy_sum, shared=SHARED)
    by_cell = dict(zip(shuffled, again, strict=True))
    assert [r for c in cells for r in by_cell[c]] == records
    # a cell computed alone (no other cells in the grid) gets the same numbers
    assert run_grid(cells[5:6], noisy_sum, shared=SHARED) == records[10:12]
    # the noise really is seeded by the cell: different cells differ
    noises = {r.value for r in records if r.metric == "noise"}
    assert len(noises) == len(cells)


def test_sharded_and_merged_equals_unsharded() -> None:
    whole = Cell(condition="pgd:ce:8/255", epsilon=8 / 255)
    (unsharded,) = run_grid([whole], shard_means, shared=SHARED)
    parts = run_grid(shard_cells(whole, 10, 3), shard_means, shared=SHARED)
    merged = [v for r in sorted(parts, key=lambda r: r.extra["start"]) for v in r.extra["values"]]
    assert len(parts) == 4
    assert merged == unsharded.extra["values"]


def test_run_folder_streams_records_and_a_rerun_skips_finished_cells(tmp_path: Path) -> None:
    cells = grid()
    log = tmp_path / "calls.log"
    shared = {**SHARED, "log": str(log), "stop_after": 3}
    with pytest.raises(KeyboardInterrupt):
        run_grid(cells, noisy_sum, shared=shared, out_dir=tmp_path / "run", config={"v": 1})
    lines = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
    assert len(lines) == 3  # the three finished cells, the fourth interrupted
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["total"] == len(cells)
    log.unlink()
    resumed = run_grid(cells, noisy_sum, shared={**shared, "stop_after": None},
                       out_dir=tmp_path / "run", config={"v": 1})
    assert len(log.read_text().splitlines()) == len(cells) - 3  # only the missing cells ran
    fresh = run_grid(cells, noisy_sum, shared=SHARED)
    assert [r.value for r in resumed] == [r.value for r in fresh]
    assert [(r.condition, r.dataset, r.metric) for r in resumed] == \
        [(r.condition, r.dataset, r.metric) for r in fresh]
    stored = [json.loads(line) for line in
              (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert sorted(e["key"] for e in stored) == sorted(c.key() for c in cells)  # each once
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["done"] == len(cells)
    # a third run computes nothing
    log.unlink()
    run_grid(cells, noisy_sum, shared=shared, out_dir=tmp_path / "run", config={"v": 1})
    assert not log.exists()


def test_a_torn_last_line_is_dropped_and_recomputed(tmp_path: Path) -> None:
    cells = grid()[:3]
    run_grid(cells, noisy_sum, shared=SHARED, out_dir=tmp_path)
    path = tmp_path / "records.jsonl"
    data = path.read_bytes()
    last = data[:-1].rfind(b"\n") + 1
    path.write_bytes(data[:last + 40])  # a crash in the middle of the last cell's line
    store = GridStore(tmp_path)
    assert len(store.done) == 2 and path.read_bytes() == data[:last]
    log = tmp_path / "calls.log"
    again = run_grid(cells, noisy_sum, shared={**SHARED, "log": str(log)}, out_dir=tmp_path)
    assert log.read_text().splitlines() == [cells[2].key()]
    assert [r.value for r in again] == [r.value for r in run_grid(cells, noisy_sum,
                                                                  shared=SHARED)]


def test_a_folder_of_another_grid_is_refused(tmp_path: Path) -> None:
    run_grid(grid()[:1], noisy_sum, shared=SHARED, out_dir=tmp_path, config={"seed": 7})
    with pytest.raises(StoreError, match="another grid"):
        run_grid(grid()[:1], noisy_sum, shared=SHARED, out_dir=tmp_path, config={"seed": 8})
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(StoreError, match="manifest"):
        GridStore(tmp_path)


def test_bad_arguments_fail_naming_them() -> None:
    cell = Cell(model="m")
    with pytest.raises(ValueError, match="appears twice"):
        run_grid([cell, Cell(model="m")], noisy_sum, shared=SHARED)
    with pytest.raises(ValueError, match="executor"):
        run_grid([cell], noisy_sum, shared=SHARED, executor="threads")
    with pytest.raises(ValueError, match="ray_address"):
        run_grid([cell], noisy_sum, shared=SHARED, ray_address="auto")
    with pytest.raises(RuntimeError, match="list of"):
        run_grid([cell], lambda c, s: Record("clean", "none", 0, "m", "id", "x", 1.0))


def test_without_ray_the_ray_executor_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(RuntimeError, match=r"pip install 'basin\[ray\]'") as info:
        make_executor("ray")
    assert "\n" not in str(info.value)
