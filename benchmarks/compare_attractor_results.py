"""Compare two ``basin reproduce attractor-paper`` results.json files number by number.

Usage: ``python benchmarks/compare_attractor_results.py OLD/results.json NEW/results.json``.

Records are matched on (network, section, epsilon of the sweep, condition, dataset, metric),
which both the old record layout ({condition, dataset, metric, value}) and the
``basin.robustness.records.Record`` layout carry. Prints how many are identical, the median
and largest difference of the others, and the conditions they come from.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from typing import Any

SECTIONS = ("adaptive", "loop_white_box", "paper", "sweep")


def _records(section: Any) -> list[dict[str, Any]]:
    return section["records"] if isinstance(section, dict) else section


def keyed(results: dict[str, Any]) -> dict[tuple[str, ...], float | None]:
    out: dict[tuple[str, ...], float | None] = {}
    for net, parts in results["records"].items():
        for part in SECTIONS:
            groups = parts[part].items() if part == "sweep" else [("", parts[part])]
            for eps, group in groups:
                for r in _records(group):
                    out.setdefault((net, part, eps, r["condition"], r["dataset"], r["metric"]),
                                   r["value"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    args = parser.parse_args()
    with open(args.old, encoding="utf-8") as f:
        old = keyed(json.load(f))
    with open(args.new, encoding="utf-8") as f:
        new = keyed(json.load(f))
    missing = [k for k in old if k not in new]
    differ = [(k, v, new[k]) for k, v in old.items() if k in new and v != new[k]
              and not (v is not None and new[k] is not None and abs(v - new[k]) < 1e-9)]
    print(f"records {len(old)}, identical {len(old) - len(differ) - len(missing)}, "
          f"different {len(differ)}, missing in new {len(missing)}")
    gaps = [abs(a - b) for _, a, b in differ if a is not None and b is not None]
    if gaps:
        print(f"difference: median {statistics.median(gaps):.4g}, largest {max(gaps):.4g}")
    for (net, part, _, condition, _, _), count in Counter(
            (k[0], k[1], k[2], k[3], "", "") for k, _, _ in differ).most_common(12):
        print(f"  {net} {part}: {condition} ({count} records)")


if __name__ == "__main__":
    main()
