"""Train (or reuse) and evaluate the attractor paper's two networks.

:func:`run_attractor_paper` trains the baseline and attractor networks in
``out_dir/baseline`` and ``out_dir/attractor`` (reusing a matching run), evaluates them under
the paper's protocol (T = 0.8, FGSM 20/255 on ID and OOD inputs) and the stronger attacks,
and returns the :class:`~.protocol.NetworkResults` with the run record; writing the report is
:mod:`.report`'s job, so this module never imports it.

Beside the paper's T = 0.8, the attractor network's Table 2 is also given at a threshold
calibrated on the MNIST *validation* split for 95% acceptance (``CALIBRATION_ACCEPTANCE``),
computed from the same test scores. The through-loop attacks differentiate F(G^n(x)); the
system the paper describes classifies F(x), so they are also run against a system that
classifies the iterate, for which they are white-box.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from basin.attacks import FGSM, make_objective
from basin.data import load_dataset, mirror_checksums
from basin.detectors import PearsonDetector, pearson_correlation
from basin.losses import LossWeights
from basin.models import AttractorNet
from basin.models.dynamics import attractor_report, iterate
from basin.reproductions.attractor.protocol import (
    CALIBRATION_ACCEPTANCE,
    EXTRA_OOD,
    FIG12_EPS,
    NETWORKS,
    PAPER_ATTACKS,
    PAPER_OOD,
    NetworkResults,
    ReproductionPlan,
)
from basin.robustness.evaluation import EvaluationSettings, evaluate_run
from basin.training import load_train_data, train
from basin.utils.runinfo import run_record


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


def run_attractor_paper(out_dir: str | os.PathLike[str], *, quick: bool = False,
                        seed: int = 0, plan: ReproductionPlan | None = None,
                        mirror: str | os.PathLike[str] | None = None,
                        device: torch.device | None = None, progress: bool = True
                        ) -> tuple[ReproductionPlan, dict[str, NetworkResults], dict[str, Any]]:
    """Train or reuse and evaluate both networks: ``(plan, {network: results}, run record)``."""
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
    return plan, networks, record
