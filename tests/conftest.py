"""Shared fixtures: the real data mirror, for the tests marked ``integration``.

Integration tests run by default (no opt-in flag). Any test that uses ``mirror_dir`` is
marked ``integration`` automatically, so ``pytest -m "not integration"`` skips them all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

DEFAULT_MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def mirror_dir() -> Path:
    """The offline data mirror ($BASIN_DATA_MIRROR, else ../shared/data beside the repo).

    Missing mirror: the test fails on CI (CI=true), where the mirror must be present, and is
    skipped elsewhere.
    """
    path = Path(os.environ.get("BASIN_DATA_MIRROR") or DEFAULT_MIRROR)
    if not path.is_dir():
        message = f"data mirror {path} not found (set BASIN_DATA_MIRROR)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "mirror_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models train many times faster on one thread when the 2-core machine is shared
    (OpenMP overhead dominates such small matrices); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
