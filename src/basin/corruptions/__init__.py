"""Seeded pixel-space corruptions with five severity levels each.

``corrupt(x, "gaussian-noise", 3, seed=0)`` or ``CORRUPTIONS["contrast"](x, 2)``; names and
severity tables in ``basin.corruptions.registry``, semantics in ``basin.corruptions.base``.
"""

from basin.corruptions.base import (
    DEFAULT_SEVERITY,
    SEVERITIES,
    Corruption,
    CorruptionError,
)
from basin.corruptions.registry import (
    CORRUPTIONS,
    corrupt,
    get_corruption,
    parse_corruption_spec,
)

__all__ = [
    "CORRUPTIONS",
    "DEFAULT_SEVERITY",
    "SEVERITIES",
    "Corruption",
    "CorruptionError",
    "corrupt",
    "get_corruption",
    "parse_corruption_spec",
]
