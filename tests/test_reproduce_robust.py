"""The robust-attractor reproduction end to end on a tiny plan (real mirror, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from basin.reproductions.robust_attractor.protocol import SYSTEMS, RobustPlan
from basin.reproductions.robust_attractor.report import reproduce_robust_attractor


@pytest.mark.slow
@pytest.mark.integration
def test_tiny_plan_writes_report_and_records(tmp_path: Path, mirror_dir: Path,
                                             one_torch_thread: None) -> None:
    out = tmp_path / "robust-attractor"
    result = reproduce_robust_attractor(out, mirror=mirror_dir, plan=RobustPlan.tiny())
    for name in ("report.html", "report.md", "results.json", "figures/silent_vs_epsilon.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "results.json").read_text())
    records = data["records"]
    systems = {r["extra"]["system"] for r in records}
    assert systems == set(SYSTEMS)
    for system in SYSTEMS:
        worst = [r for r in records if r["extra"]["system"] == system
                 and r["condition"] == "worst-case" and r["metric"] == "silent_failure_rate"]
        clean = [r for r in records if r["extra"]["system"] == system
                 and r["condition"] == "clean" and r["dataset"] == "mnist"
                 and r["metric"] == "silent_failure_rate"]
        # the clean input is in every ball: the worst case is never below the clean rate
        assert worst[0]["value"] >= clean[0]["value"] - 1e-12
        acceptance = [r for r in records if r["extra"]["system"] == system
                      and r["condition"] == "clean" and r["metric"] == "acceptance_rate"
                      and r["dataset"] == "mnist"]
        assert 0.5 <= acceptance[0]["value"] <= 1.0
    assert any(r["condition"] == "certified" for r in records)
    assert len(result["summary"]) == 5
    assert "Headline" in (out / "report.md").read_text()
