"""The robust-attractor reproduction end to end on a tiny plan (real mirror, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from basin.models.attractor import AttractorNet
from basin.reproductions.robust_attractor.protocol import RobustPlan
from basin.reproductions.robust_attractor.report import reproduce_robust_attractor
from basin.reproductions.robust_attractor.suite import (
    RunOutcome,
    SideResult,
    System,
    id_worst_case,
    ood_worst_case,
)


@pytest.mark.slow
@pytest.mark.integration
def test_tiny_plan_writes_report_and_records(tmp_path: Path, mirror_dir: Path,
                                             one_torch_thread: None) -> None:
    out = tmp_path / "robust-attractor"
    plan = RobustPlan.tiny()
    result = reproduce_robust_attractor(out, mirror=mirror_dir, plan=plan)
    for name in ("report.html", "report.md", "results.json", "figures/silent_vs_epsilon.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "results.json").read_text())
    records = data["records"]
    systems = {r["extra"]["system"] for r in records}
    assert systems == set(plan.systems) == {"robust", "robust-conv", "baseline", "attractor"}
    for system in plan.systems:
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
    certified = {r["extra"]["system"] for r in records if r["condition"] == "certified"}
    assert certified == set(plan.systems)
    assert len(result["summary"]) == 5
    assert "Headline" in (out / "report.md").read_text()


def test_worst_case_combines_runs_per_input() -> None:
    y = torch.tensor([0, 1, 2, 3])
    every = torch.arange(4)
    side = SideResult([
        RunOutcome("clean", torch.tensor([0, 1, 2, 0]), torch.tensor([.9, .9, .9, .9]), every),
        # wrong on input 1 but rejected there; wrong and accepted on input 2
        RunOutcome("pgd-ce", torch.tensor([0, 0, 0, 3]), torch.tensor([.9, .1, .8, .9]),
                   every),
        # a label-free run: its classes never count, its scores do
        RunOutcome("pgd-reject", torch.tensor([9, 9, 9, 9]), torch.tensor([.2, .9, .9, .9]),
                   every),
        RunOutcome("square-e2e", torch.tensor([1]), torch.tensor([.95]), torch.tensor([0]))])
    worst = id_worst_case(side, y, threshold=0.5)
    assert worst["wrong"].tolist() == [True, True, True, True]
    assert worst["silent"].tolist() == [True, False, True, True]
    assert worst["min_score"].tolist() == pytest.approx([0.2, 0.1, 0.8, 0.9])
    assert ood_worst_case(side, 4).tolist() == pytest.approx([0.95, 0.9, 0.9, 0.9])
    torch.manual_seed(0)
    system = System("s", AttractorNet((784, 32, 16, 32, 784), 10, "clamp"), 0.5, 2)
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(system.score(x), system.score_bpda(x))
