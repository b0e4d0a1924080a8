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

N = 64
SPECS = ("pgd:ce:0.1:steps=5", "fgsm:ce:0.1", "pgd:reject-id:0.1:steps=5")


def _images(name: str, x: torch.Tensor, y: torch.Tensor) -> ImageDataset:
    return ImageDataset(name, "test", x.reshape(-1, 1, 4, 4).float(), y, ("a", "b", "c"), None)


@pytest.fixture(scope="module")
def system(one_torch_thread: None) -> tuple[AttractorNet, ImageDataset, ImageDataset, float]:
    generator = torch.Generator().manual_seed(1)
    prototypes = torch.rand(3, 16, generator=generator)
    y = torch.randint(0, 3, (2 * N,), generator=generator)
    x = (prototypes[y] + 0.15 * torch.randn(2 * N, 16, generator=generator)).clamp(0, 1)
    torch.manual_seed(1)
    net = AttractorNet((16, 12, 6, 12, 16), n_classes=3, output_activation="sigmoid")
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(200):
        optimiser.zero_grad()
        loss = (net.reconstruct(x[N:]) - x[N:]).square().mean() + \
            torch.nn.functional.cross_entropy(net.logits(x[N:]), y[N:])
        loss.backward()
        optimiser.step()
    net.eval()
    id_data = _images("id", x[:N], y[:N])
    ood_data = _images("ood", torch.rand(N, 16, generator=generator),
                       torch.zeros(N, dtype=torch.int64))
    threshold = float(PearsonDetector(net).score_batches(x[N:].reshape(-1, 1, 4, 4)).median())
    return net, id_data, ood_data, threshold


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
