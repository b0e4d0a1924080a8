"""What every run records next to its results: config, seed, versions, data checksums."""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Mapping
from importlib import metadata
from typing import Any

_PACKAGES = ("basin", "torch", "numpy", "scikit-learn", "scipy", "safetensors", "matplotlib")


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run_record(config: Mapping[str, Any], seed: int,
               data_checksums: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "config": dict(config),
        "seed": seed,
        "versions": package_versions(),
        "data_checksums": dict(data_checksums or {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
