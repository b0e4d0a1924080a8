"""The public API: what ``from basin import ...`` offers, and that importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import basin
from basin.detectors import Detector


def test_every_public_name_resolves_and_is_documented() -> None:
    assert len(basin.__all__) == len(set(basin.__all__)) >= 25
    assert set(basin.__all__) == {"__version__", *basin._EXPORTS}
    for name in basin.__all__:
        value = getattr(basin, name)
        assert value is not None, name
        if name != "__version__":
            documented = f"``{name}``" in basin.__doc__ or f"``{name}(" in basin.__doc__
            assert documented, f"{name} missing from the API overview"
    assert set(basin.__all__) <= set(dir(basin))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        basin.nope  # noqa: B018


def test_names_are_the_library_objects() -> None:
    from basin.attacks import PGD, make_objective
    from basin.data import load_dataset
    from basin.robustness.audit import audit

    assert basin.audit is audit and basin.PGD is PGD and basin.make_objective is make_objective
    assert basin.load_dataset is load_dataset
    exported = {getattr(basin, n) for n in basin.__all__ if n.endswith("Detector")}
    exported.discard(Detector)
    assert exported == set(basin.DETECTORS.values())


def test_import_basin_loads_nothing_heavy() -> None:
    code = ("import sys, basin; heavy = [m for m in ('torch', 'sklearn', 'matplotlib') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"
    code = "import sys, basin; basin.audit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.strip() == "True"
