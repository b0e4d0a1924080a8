"""Reproduce the attractor paper (Alipour & SeyyedSalehi) end to end: train, evaluate, report.

``reproduce_attractor_paper(out_dir)`` trains (or reuses) the paper's baseline and attractor
networks in ``out_dir/baseline`` and ``out_dir/attractor``, evaluates them under the paper's
protocol (T = 0.8, FGSM 20/255 on ID and OOD inputs) and under the stronger attacks, and
hands everything to :mod:`basin.experiments.attractor_report`, which writes ``report.html``,
``report.md`` and ``results.json``.

Beside the paper's T = 0.8, the attractor network's Table 2 is also given at a threshold
calibrated on the MNIST *validation* split for 95% acceptance (``CALIBRATION_ACCEPTANCE``),
computed from the same test scores. The through-loop attacks differentiate F(G^n(x)); the
system the paper describes classifies F(x), so they are also run against a system that
classifies the iterate, for which they are white-box.

``--quick`` shrinks every part (training images and epochs, test inputs, attack steps) so the
whole pipeline runs in minutes; its report says so at the top.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from basin.attacks import FGSM, make_objective
from basin.data import load_dataset, mirror_checksums
from basin.detectors import PearsonDetector
from basin.losses import LossWeights
from basin.models import AttractorNet
from basin.models.dynamics import attractor_report, iterate
from basin.robustness.evaluation import EvaluationResult, EvaluationSettings, evaluate_run
from basin.training import PRESETS, TrainConfig, load_train_data, train
from basin.utils.runinfo import run_record

NETWORKS = ("baseline", "attractor")
PAPER_OOD = ("fashion-mnist", "cifar10-bw")
EXTRA_OOD = ("notmnist", "omniglot")
PAPER_EPS = "20/255"
PAPER_ATTACKS = (f"fgsm:paper:{PAPER_EPS}", f"fgsm:ce:{PAPER_EPS}")
SWEEP_EPS = ("1/255", "2/255", "3/255", "4/255", "5/255", "6/255", "7/255", "8/255", "9/255",
             "10/255", "20/255")
QUICK_SWEEP_EPS = ("1/255", "5/255", "10/255", "20/255")
FIG12_EPS = (0.0, 5 / 255, 10 / 255, 20 / 255, 50 / 255, 100 / 255)
CALIBRATION_ACCEPTANCE = 0.95   # ID validation acceptance of the calibrated threshold
LOOP_OBJECTIVES = ("through-loop", "through-loop-bpda")

# The paper's numbers (section 3.2, Tables 1 and 2): accuracy, precision, recall at T = 0.8.
PAPER_RESULTS: dict[str, Any] = {
    "baseline": {"clean_accuracy": 0.9817, "fgsm_accuracy": 0.2784, "detection": {
        "fashion-mnist": {"clean": (0.9915, 0.9915, 0.9915), "fgsm": (0.8884, 0.9967, 0.7793)},
        "cifar10-bw": {"clean": (0.9950, 0.9984, 0.9915), "fgsm": (0.8893, 0.9991, 0.7793)}}},
    "attractor": {"clean_accuracy": 0.8873, "fgsm_accuracy": 0.8713, "detection": {
        "fashion-mnist": {"clean": (0.9884, 0.9867, 0.9901), "fgsm": (0.9848, 0.9890, 0.9804)},
        "cifar10-bw": {"clean": (0.9928, 0.9955, 0.9901), "fgsm": (0.9888, 0.9971, 0.9804)}}},
}


@dataclass
class ReproductionPlan:
    """Every size that ``--quick`` changes, recorded in results.json."""

    quick: bool
    seed: int = 0
    train: dict[str, dict[str, Any]] = field(default_factory=dict)   # network -> overrides
    eval_limit: int | None = None           # ID and OOD test inputs for the paper's tables
    adaptive_limit: int | None = 1000       # inputs per dataset for the adaptive attacks
    sweep_limit: int | None = 2000
    sweep_eps: Sequence[str] = SWEEP_EPS
    pgd_steps: int = 40
    square_queries: int = 1000
    loop_steps: int = 1                     # n of G^n(x) in the detector (the paper: n = 1)
    diagnostic_samples: int = 200           # training samples for the attractor statistics

    @classmethod
    def tiny(cls, seed: int = 0) -> ReproductionPlan:
        """Seconds, not minutes: for the integration test of the whole pipeline."""
        return cls(quick=True, seed=seed,
                   train={"baseline": {"seed": seed, "train_size": 500, "val_size": 300,
                                       "max_epochs": 1},
                          "attractor": {"seed": seed, "train_size": 200, "val_size": 300,
                                        "max_epochs": 1}},
                   eval_limit=48, adaptive_limit=24, sweep_limit=24,
                   sweep_eps=("5/255", "20/255"), pgd_steps=3, square_queries=30,
                   diagnostic_samples=4)

    @classmethod
    def make(cls, quick: bool, seed: int = 0) -> ReproductionPlan:
        if not quick:
            return cls(quick=False, seed=seed,
                       train={"baseline": {"seed": seed}, "attractor": {"seed": seed}})
        return cls(quick=True, seed=seed,
                   train={"baseline": {"seed": seed, "train_size": 5000, "val_size": 2000,
                                       "max_epochs": 3},
                          "attractor": {"seed": seed, "val_size": 2000, "max_epochs": 3}},
                   eval_limit=500, adaptive_limit=200, sweep_limit=300,
                   sweep_eps=QUICK_SWEEP_EPS, pgd_steps=10, square_queries=300,
                   diagnostic_samples=50)

    def train_config(self, network: str) -> TrainConfig:
        base = PRESETS["paper-baseline" if network == "baseline" else "paper-attractor"]
        return base.replace(**self.train[network])

    def adaptive_attacks(self) -> list[str]:
        eps, steps = PAPER_EPS, self.pgd_steps
        return [f"pgd:ce:{eps}:steps={steps}", f"pgd:through-loop:{eps}:steps={steps}",
                f"pgd:through-loop-bpda:{eps}:steps={steps}",
                f"square:ce:{eps}:queries={self.square_queries}",
                f"pgd:reject-id:{eps}:steps={steps}", f"pgd:end-to-end:{eps}:steps={steps}"]

    def loop_attacks(self) -> list[str]:
        """The adaptive attacks that differentiate F(G^n(x)), the iterate's classification."""
        return [a for a in self.adaptive_attacks() if a.split(":")[1] in LOOP_OBJECTIVES]


@dataclass
class NetworkResults:
    name: str
    net: AttractorNet
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: Any
    paper: EvaluationResult          # clean + the paper's FGSM, all OOD sets
    adaptive: EvaluationResult       # stronger attacks on a subset
    sweep: dict[str, EvaluationResult]   # epsilon -> FGSM (paper, ce) and PGD (ce)
    diagnostics: dict[str, Any]
    train_seconds: float
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # the through-loop attacks against a system that classifies F(G^n(x)) (white-box there)
    loop_white_box: EvaluationResult | None = None
    # threshold fitted on MNIST validation images: threshold, acceptance, n_val
    calibration: dict[str, Any] = field(default_factory=dict)


class PhaseTimer:
    """Wall time per phase, echoed as it goes (long runs should say where they are)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[phase] = now - self._last
        self._last = now
        tqdm.write(f"[{self.label}] {phase}: {self.laps[phase]:.0f} s")


def train_or_reuse(network: str, plan: ReproductionPlan, out_dir: Path, *,
                   mirror: str | os.PathLike[str] | None, device: torch.device,
                   progress: bool) -> tuple[Any, float]:
    """Train ``network`` into ``out_dir/network``, or load it when a matching run is there."""
    config = plan.train_config(network)
    start = time.perf_counter()
    data = load_train_data(config, mirror=mirror)
    result = train(config, data, out_dir / network, device=device, resume=True,
                   progress=progress)
    return result, time.perf_counter() - start


def perturbation_series(net: AttractorNet, x: torch.Tensor, y: torch.Tensor,
                        weights: LossWeights, epsilons: Sequence[float]) -> dict[str, list]:
    """Fig. 12: one training sample under the paper's FGSM at growing epsilon."""
    from basin.detectors import pearson_correlation

    out: dict[str, list] = {"inputs": [], "reconstructions": [], "predicted": [], "scores": []}
    objective = make_objective("paper", net, weights=weights)
    for eps in epsilons:
        x_adv = FGSM(objective, eps).perturb(x, y) if eps > 0 else x
        with torch.no_grad():
            recon = net.reconstruct(x_adv)
            out["inputs"].append(x_adv[0])
            out["reconstructions"].append(recon[0])
            out["predicted"].append(int(net.logits(x_adv).argmax(1)[0]))
            out["scores"].append(float(pearson_correlation(x_adv, recon)[0]))
    return out


def network_diagnostics(net: AttractorNet, weights: LossWeights, *, mirror: Any, seed: int,
                        n_samples: int) -> dict[str, Any]:
    """Attractor statistics on training samples and the Fig. 11 / Fig. 12 series."""
    train_set = load_dataset("mnist", "train", mirror=mirror).subset(n_samples, seed=seed)
    report = attractor_report(net, train_set.images, tol=1e-3, max_iter=100)
    x, y = train_set.images[:1], train_set.labels[:1]
    x_adv = FGSM(make_objective("paper", net, weights=weights), 1.0).perturb(x, y)
    with torch.no_grad():
        strip = iterate(net.reconstruct, x_adv, steps=5, keep_trajectory=True).trajectory
    return {"attractors": report.summary(),
            "fig11": [t[0] for t in strip or []],
            "fig12": perturbation_series(net, x, y, weights, FIG12_EPS),
            "fig12_label": int(y[0])}


def validation_threshold(net: AttractorNet, plan: ReproductionPlan, *, mirror: Any,
                         device: torch.device) -> dict[str, Any]:
    """The Pearson detector's T accepting ``CALIBRATION_ACCEPTANCE`` of MNIST *validation*
    images (the ``eval_limit`` subset when set), never test images."""
    val = load_dataset("mnist", "val", mirror=mirror)
    if plan.eval_limit:
        val = val.subset(plan.eval_limit, seed=plan.seed)
    detector = PearsonDetector(net, steps=plan.loop_steps, threshold=None)
    threshold = detector.calibrate(val.images.to(device), CALIBRATION_ACCEPTANCE)
    return {"threshold": threshold, "acceptance": CALIBRATION_ACCEPTANCE, "n_val": len(val)}


def evaluate_network(name: str, plan: ReproductionPlan, out_dir: Path, *, mirror: Any,
                     device: torch.device, progress: bool) -> NetworkResults:
    result, seconds = train_or_reuse(name, plan, out_dir, mirror=mirror, device=device,
                                     progress=progress)
    tqdm.write(f"[{name}] training or reuse: {seconds:.0f} s")
    net = result.net.to(device).eval()
    weights = tuple(plan.train_config(name).weights)

    def settings(limit: int | None) -> EvaluationSettings:
        return EvaluationSettings(steps=plan.loop_steps, threshold=0.8, limit=limit,
                                  seed=plan.seed, loss_weights=weights)  # type: ignore[arg-type]

    common = {"mirror": mirror, "device": device, "progress": progress}
    timer = PhaseTimer(name)
    paper = evaluate_run(net, ood=PAPER_OOD + EXTRA_OOD, attacks=PAPER_ATTACKS,
                         settings=settings(plan.eval_limit), **common)
    calibration = validation_threshold(net, plan, mirror=mirror, device=device)
    timer.lap("paper protocol")
    adaptive = evaluate_run(net, ood=("fashion-mnist",), attacks=plan.adaptive_attacks(),
                            settings=settings(plan.adaptive_limit), **common)
    timer.lap("adaptive attacks")
    # Same inputs as the adaptive section; no sanity pass: the objectives (and so their
    # gradients) are those already checked there, only the classified point differs.
    loop_white_box = evaluate_run(
        net, ood=("fashion-mnist",), attacks=plan.loop_attacks(),
        settings=dataclasses.replace(settings(plan.adaptive_limit), classify="iterate"),
        with_sanity=False, **common)
    timer.lap("through-loop attacks, classifying the iterate")
    sweep = {eps: evaluate_run(net, ood=("fashion-mnist",),
                               attacks=(f"fgsm:paper:{eps}", f"fgsm:ce:{eps}",
                                        f"pgd:ce:{eps}:steps={plan.pgd_steps}"),
                               settings=settings(plan.sweep_limit), with_sanity=False, **common)
             for eps in plan.sweep_eps}
    timer.lap("epsilon sweep")
    a1, a2, a3 = weights
    diagnostics = network_diagnostics(
        net.cpu(), LossWeights(a1, a2, a3), mirror=mirror, seed=plan.seed,
        n_samples=plan.diagnostic_samples)
    timer.lap("diagnostics and figure series")
    net.to(device)
    config = {"train": plan.train_config(name).to_dict(), "model": net.config()}
    return NetworkResults(name, net, config, result.metrics, result.history, paper, adaptive,
                          sweep, diagnostics, seconds, timer.laps,
                          loop_white_box=loop_white_box, calibration=calibration)


def reproduce_attractor_paper(out_dir: str | os.PathLike[str], *, quick: bool = False,
                              seed: int = 0, plan: ReproductionPlan | None = None,
                              mirror: str | os.PathLike[str] | None = None,
                              device: torch.device | None = None,
                              progress: bool = True) -> dict[str, Any]:
    """Run the whole reproduction; returns the results dict also written to results.json."""
    from basin.experiments.attractor_report import write_attractor_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = device or torch.device("cpu")
    plan = plan or ReproductionPlan.make(quick, seed)
    start = time.perf_counter()
    networks = {name: evaluate_network(name, plan, out, mirror=mirror, device=device,
                                       progress=progress) for name in NETWORKS}
    # the CLI sets the thread count (--threads); record what was actually in effect
    record = run_record({"plan": asdict(plan), "device": str(device),
                         "threads": torch.get_num_threads()}, seed,
                        mirror_checksums(("mnist", *PAPER_OOD, *EXTRA_OOD), mirror=mirror))
    record["wall_time_s"] = time.perf_counter() - start
    return write_attractor_report(out, plan, networks, record)
