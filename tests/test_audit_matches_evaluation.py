"""``basin.audit`` of an attractor network gives the reproduction runner's numbers.

The reproductions' runner (``basin.robustness.evaluation``) and ``basin.audit`` attack through
one code path (``basin.robustness.audit_attacks.run_attack``: the same batching and per-batch
seeds), so on the same network, detector, threshold, data and attack specs they find the same
adversarial inputs and report the same accuracy, acceptance and AUROC.
"""

from __future__ import annotations

import pytest
import torch

import basin
from basin.data import ImageDataset
from basin.detectors import PearsonDetector
from basin.models import AttractorNet
from basin.robustness.evaluation import (
    EvaluationResult,
    EvaluationSettings,
    Evaluator,
    parse_conditions,
)
from toy_attractor import toy_attractor_system

N = 64
SPECS = ("pgd:ce:0.1:steps=5", "fgsm:ce:0.1", "pgd:reject-id:0.1:steps=5")


@pytest.fixture(scope="module")
def system(one_torch_thread: None) -> tuple[AttractorNet, ImageDataset, ImageDataset, float]:
    return toy_attractor_system(N, seed=1, noise=0.15, steps=200, threshold_on="train")


@pytest.mark.parametrize("spec", SPECS)
def test_audit_reports_the_runners_numbers(system: tuple, spec: str) -> None:
    net, id_data, ood_data, threshold = system
    settings = EvaluationSettings(threshold=threshold, batch_size=32, seed=0)
    evaluator = Evaluator(net, settings, torch.device("cpu"), progress=False)
    ours = EvaluationResult(records=[], sanity=[], settings={}, threshold=threshold)
    for condition in parse_conditions([spec]):
        evaluator.measure(condition, id_data, [ood_data], ours)

    report = basin.audit(net, PearsonDetector(net), id_data, ood_data, epsilons=(0.1,),
                         attacks=[spec], n=None, seed=0, threshold=threshold, batch_size=32)
    run = report.select(condition=spec, dataset="id", side="id")
    assert run, [r.condition for r in report.records]
    audited = {r.metric: r.value for r in run}
    assert audited["accuracy"] == pytest.approx(ours.value(spec, "id", "accuracy"), abs=1e-12)
    assert audited["acceptance_rate"] == pytest.approx(
        ours.value(spec, "id", "acceptance_rate"), abs=1e-12)
    # the attack did something, so equality is not the trivial clean == clean
    clean = ours.value("clean", "id", "accuracy" if "ce" in spec else "acceptance_rate")
    attacked = audited["accuracy" if "ce" in spec else "acceptance_rate"]
    assert attacked < clean
