"""Measure the robust attractor system beside the paper's two networks (issue 13).

``measure`` gets the networks (trains each robust system's into ``out_dir/<system>``
unless given a finished run; reuses the paper's from a ``basin reproduce
attractor-paper`` folder, or trains small ones with ``--quick``), calibrates each system's
threshold on MNIST validation images (95% accepted), runs the suite of :mod:`.suite` at
every epsilon on the same test inputs, certifies by IBP (:mod:`basin.robustness.certify`),
and returns records in the library's schema plus the arrays the figures need.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from basin.attacks import PGD, make_objective
from basin.data import load_dataset
from basin.data.outliers import omniglot_parts
from basin.detectors.base import threshold_for_acceptance
from basin.metrics import auroc
from basin.models.factory import AnyAttractor
from basin.reproductions.robust_attractor.protocol import ACCEPTANCE, OOD_SETS, RobustPlan
from basin.reproductions.robust_attractor.suite import (
    System,
    attack_id,
    attack_ood,
    gradient_checks,
    id_worst_case,
    ood_worst_case,
)
from basin.robustness.certify import certified_metrics, certify
from basin.robustness.records import Record
from basin.robustness.system import Data
from basin.training import PRESETS, load_train_data, train
from basin.training.robust_config import ROBUST_PRESETS
from basin.training.robust_run import run_robust
from basin.training.run import load_run

PathArg = str | os.PathLike[str] | None


def load_sets(plan: RobustPlan, mirror: PathArg) -> dict[str, Any]:
    """MNIST validation (calibration), the MNIST test subset and the four OOD test sets."""
    val = load_dataset("mnist", "val", mirror=mirror)
    test = load_dataset("mnist", "test", mirror=mirror)
    chosen = Data("mnist", test.images, test.labels).subset(plan.n_id, plan.seed)
    ood: dict[str, Tensor] = {}
    for name in OOD_SETS:
        images = (omniglot_parts(mirror)[1] if name == "omniglot-evaluation"
                  else load_dataset(name, "test", mirror=mirror).images)
        ood[name] = Data(name, images, None).subset(plan.n_ood, plan.seed).x
    return {"val_x": val.images, "x": chosen.x, "y": chosen.y, "ood": ood}


def get_networks(plan: RobustPlan, out_dir: Path, *, reuse: PathArg,
                 robust_runs: Mapping[str, PathArg] | None, mirror: PathArg,
                 device: torch.device) -> tuple[dict[str, AnyAttractor], dict[str, str]]:
    """Every system's network (CPU, eval mode) and where each came from.

    ``robust_runs`` maps a robust system name to a finished run to evaluate; the others are
    trained into ``out_dir/<name>`` from their preset (a finished run there is reused)."""
    nets: dict[str, AnyAttractor] = {}
    where: dict[str, str] = {}
    given = dict(robust_runs or {})
    unknown = sorted(set(given) - set(plan.robust_presets))
    if unknown:
        raise ValueError(f"robust_runs: unknown system(s) {unknown}; the plan's robust "
                         f"systems are {sorted(plan.robust_presets)}")
    for name, preset in plan.robust_presets.items():
        run_dir = given.get(name)
        if run_dir is None:
            robust_config = ROBUST_PRESETS[preset].replace(
                **{"seed": plan.seed, **plan.robust_changes})
            run_dir = out_dir / name
            run_robust(robust_config, run_dir, resume=True, mirror=mirror, quiet=False)
        where[name] = str(run_dir)
        nets[name] = load_run(where[name]).net
    for name, preset_name in (("baseline", "paper-baseline"), ("attractor", "paper-attractor")):
        if name not in plan.paper_systems and name != "baseline":  # baseline: transfer source
            continue
        if reuse is not None:
            where[name] = str(Path(reuse) / name)
        else:
            paper_config = PRESETS[preset_name].replace(**plan.paper_changes.get(name, {}))
            where[name] = str(out_dir / name)
            train(paper_config, load_train_data(paper_config, mirror=mirror), where[name],
                  device=device, resume=True)
        nets[name] = load_run(where[name]).net
    return nets, where


def calibrate(net: AnyAttractor, name: str, val_x: Tensor, score_steps: int) -> System:
    system = System(name, net, 0.0, score_steps)
    _, scores = system.answer(val_x)
    system.threshold = threshold_for_acceptance(scores, ACCEPTANCE)
    return system


def _rec(system: str, condition: str, attack: str, eps: float, dataset: str, side: str,
         metric: str, value: float | None, **extra: Any) -> Record:
    return Record(condition, attack, eps, dataset, side, metric, value,
                  {"system": system, **extra})


def _clean_records(system: System, sets: dict[str, Any]) -> tuple[list[Record], dict]:
    pred, score = system.answer(sets["x"])
    y = sets["y"]
    ok, acc = pred == y, score >= system.threshold
    name, n = system.name, len(y)
    recs = [_rec(name, "clean", "none", 0.0, "mnist", "none", m, v, n=n) for m, v in (
        ("accuracy", float(ok.float().mean())),
        ("acceptance_rate", float(acc.float().mean())),
        ("accepted_accuracy", float(ok[acc].float().mean()) if acc.any() else None),
        ("silent_failure_rate", float((~ok & acc).float().mean())),
        ("threshold", system.threshold))]
    ood_scores = {}
    for ood_name, x_ood in sets["ood"].items():
        _, s = system.answer(x_ood)
        ood_scores[ood_name] = s
        recs.append(_rec(name, "clean", "none", 0.0, ood_name, "none", "auroc",
                         auroc(score, s), n=len(s)))
        recs.append(_rec(name, "clean", "none", 0.0, ood_name, "none", "acceptance_rate",
                         float((s >= system.threshold).float().mean()), n=len(s)))
    return recs, {"id": score, "ood": ood_scores}


def _run_records(system: System, eps: float, side: str, dataset: str, runs: list,
                 y: Tensor | None, clean_id: Tensor) -> list[Record]:
    recs = []
    for run in runs:
        if run.name == "clean":
            continue
        extra = {"n": len(run.rows)}
        accepted = run.score >= system.threshold
        if side == "id" and run.name != "pgd-reject":
            if y is None:
                raise ValueError("y: the ID side needs labels, got None")
            wrong = run.pred != y[run.rows]
            recs.append(_rec(system.name, run.name, run.name, eps, dataset, "id", "accuracy",
                             float((~wrong).float().mean()), **extra))
            recs.append(_rec(system.name, run.name, run.name, eps, dataset, "id",
                             "silent_failure_rate", float((wrong & accepted).float().mean()),
                             **extra))
        elif side == "ood":
            recs.append(_rec(system.name, run.name, run.name, eps, dataset, "ood",
                             "acceptance_rate", float(accepted.float().mean()), **extra))
            recs.append(_rec(system.name, run.name, run.name, eps, dataset, "ood", "auroc",
                             auroc(clean_id, run.score), **extra))
    return recs


def _sanity(system: System, eps: float, id_side: Any, y: Tensor,
            ood_sides: dict[str, Any]) -> list[Record]:
    """Does a gradient-free or BPDA run beat every true-gradient run on some input?"""
    def silent_rows(names: set[str]) -> Tensor:
        hit = torch.zeros(len(y), dtype=torch.bool)
        for run in id_side.runs:
            if run.name in names:
                hit[run.rows] |= (run.pred != y[run.rows]) & (run.score >= system.threshold)
        return hit

    names = {r.name for r in id_side.runs}
    white = {n for n in names if "bpda" not in n and not n.startswith(("square", "transfer"))}
    square = next(r for r in id_side.runs if r.name.startswith("square"))
    sq_only = silent_rows({square.name}) & ~silent_rows(white)
    bpda_only = silent_rows({n for n in names if "bpda" in n}) & ~silent_rows(white)
    recs = [_rec(system.name, "sanity", "square", eps, "mnist", "id",
                 "square_beats_white_box", float(sq_only[square.rows].float().mean()),
                 n=len(square.rows)),
            _rec(system.name, "sanity", "bpda", eps, "mnist", "id",
                 "bpda_beats_true_gradient", float(bpda_only.float().mean()), n=len(y))]
    for ood_name, side in ood_sides.items():
        runs = {r.name: r for r in side.runs}
        sq = runs["square-accept"]
        best_white = torch.stack([r.score[sq.rows] for k, r in runs.items()
                                  if k not in ("square-accept", "pgd-accept-bpda")]).amax(0)
        recs.append(_rec(system.name, "sanity", "square", eps, ood_name, "ood",
                         "square_beats_white_box",
                         float((sq.score > best_white + 1e-4).float().mean()), n=len(sq.rows)))
    return recs


def evaluate_system(system: System, sets: dict[str, Any], plan: RobustPlan,
                    transfer: dict[float, Tensor], log: Any) -> tuple[list[Record], dict]:
    """Clean, worst-case, per-run, sanity and certified records of one system."""
    recs, clean = _clean_records(system, sets)
    arrays: dict[str, Any] = {"clean": clean, "worst": {}}
    x, y = sets["x"], sets["y"]
    recs += [_rec(system.name, "sanity", "gradient", 0.0, "mnist", "id", k, v, n=len(y))
             for k, v in gradient_checks(system, x[:100], y[:100]).items()]
    nested: dict[str, Any] = {}
    for eps in sorted(plan.epsilons):
        start = time.perf_counter()
        id_side = attack_id(system, x, y, eps, plan, transfer=transfer.get(eps),
                            seed=plan.seed)
        worst = _nest(nested, "id", id_worst_case(id_side, y, system.threshold))
        recs.append(_rec(system.name, "worst-case", "worst-case", eps, "mnist", "id",
                         "accuracy", float((~worst["wrong"]).float().mean()), n=len(y)))
        recs.append(_rec(system.name, "worst-case", "worst-case", eps, "mnist", "id",
                         "silent_failure_rate", float(worst["silent"].float().mean()),
                         n=len(y)))
        recs += _run_records(system, eps, "id", "mnist", id_side.runs, y, clean["id"])
        ood_sides, high = {}, {}
        for ood_name, x_ood in sets["ood"].items():
            ood_sides[ood_name] = attack_ood(system, x_ood, eps, plan, seed=plan.seed)
            high[ood_name] = _nest(nested, ood_name,
                                   {"max_score": ood_worst_case(ood_sides[ood_name],
                                                                len(x_ood))})["max_score"]
            recs += _run_records(system, eps, "ood", ood_name, ood_sides[ood_name].runs,
                                 None, clean["id"])
            for side, id_scores in (("ood", clean["id"]), ("both", worst["min_score"])):
                recs.append(_rec(system.name, "worst-case", "worst-case", eps, ood_name, side,
                                 "auroc", auroc(id_scores, high[ood_name]), n=len(x_ood)))
            recs.append(_rec(system.name, "worst-case", "worst-case", eps, ood_name, "ood",
                             "acceptance_rate",
                             float((high[ood_name] >= system.threshold).float().mean()),
                             n=len(x_ood)))
        recs += _sanity(system, eps, id_side, y, ood_sides)
        arrays["worst"][eps] = {"id_min": worst["min_score"], "ood_max": high,
                                "example": _example(id_side)}
        log(f"[{system.name}] eps {eps:g}: {time.perf_counter() - start:.0f} s")
    recs += certify_system(system, sets, plan)
    return recs, arrays


def _nest(state: dict[str, Any], key: str, worst: dict[str, Tensor]) -> dict[str, Tensor]:
    """Fold this epsilon's per-input worst case into those of the smaller epsilons: the
    balls nest, so an input broken at 0.1 is broken at 0.3 (epsilons go in ascending
    order). Flags are or-ed, ``min_score`` minimised, ``max_score`` maximised."""
    if key in state:
        previous = state[key]
        worst = {k: (v | previous[k] if v.dtype == torch.bool else
                     torch.minimum(v, previous[k]) if k == "min_score" else
                     torch.maximum(v, previous[k])) for k, v in worst.items()}
    state[key] = worst
    return worst


def _example(id_side: Any) -> Tensor | None:
    for run in id_side.runs:
        if run.x_adv is not None:
            return run.x_adv
    return None


def certify_system(system: System, sets: dict[str, Any], plan: RobustPlan) -> list[Record]:
    """IBP certificates of the system's classification and acceptance at each radius."""
    recs = []
    for eps in plan.certify_epsilons:
        cert = certify(system.net, sets["x"], eps, y=sets["y"], score_steps=system.score_steps)
        oods = {k: certify(system.net, v, eps, score_steps=system.score_steps)
                for k, v in sets["ood"].items()}
        for key, value in certified_metrics(cert, system.threshold, oods).items():
            dataset, metric = key.split(":") if ":" in key else ("mnist", key)
            side = "id" if dataset == "mnist" else "both"
            recs.append(_rec(system.name, "certified", "none", eps, dataset, side, metric,
                             value, n=len(sets["x"])))
    return recs


def transfer_examples(baseline: AnyAttractor, x: Tensor, y: Tensor,
                      plan: RobustPlan) -> dict[float, Tensor]:
    """PGD examples crafted on the paper baseline's F, once per epsilon (transfer attack)."""
    return {eps: PGD(make_objective("ce", baseline), eps, steps=plan.pgd_steps,
                     seed=plan.seed)(x, y) for eps in plan.epsilons}


@torch.no_grad()
def flow_back(system: System, x_clean: Tensor, x_adv: Tensor, steps: int = 8) -> dict:
    """Iterates ``G^k(x')`` of one attacked input: distance to the clean input, score of
    each iterate against the attacked input, and F's class of each iterate."""
    traj = [x_adv]
    for _ in range(steps):
        traj.append(system.net.reconstruct(traj[-1]))
    stack = torch.cat(traj)
    dist = (stack - x_clean).flatten(1).norm(dim=1) / (x_clean.numel() ** 0.5)
    return {"trajectory": stack, "rms_to_clean": dist.tolist(),
            "class": system.net.logits(stack).argmax(1).tolist(),
            "score": float(system.score(x_adv))}


def measure(out_dir: str | os.PathLike[str], plan: RobustPlan, *, mirror: PathArg = None,
            device: torch.device | None = None, reuse: PathArg = None,
            robust_runs: Mapping[str, PathArg] | None = None, log: Any = print
            ) -> dict[str, Any]:
    """Everything the report shows: records, arrays for the figures, timings, provenance."""
    out = Path(out_dir)
    times: dict[str, float] = {}
    start = time.perf_counter()
    nets, where = get_networks(plan, out, reuse=reuse, robust_runs=robust_runs, mirror=mirror,
                               device=device or torch.device("cpu"))
    times["networks"] = time.perf_counter() - start
    sets = load_sets(plan, mirror)
    transfer = transfer_examples(nets["baseline"], sets["x"], sets["y"], plan)
    records: list[Record] = []
    arrays: dict[str, Any] = {}
    for name in plan.systems:
        t0 = time.perf_counter()
        system = calibrate(nets[name], name, sets["val_x"], plan.score_steps)
        recs, arrays[name] = evaluate_system(system, sets, plan, transfer, log)
        records += recs
        eps = max(plan.epsilons)
        example = arrays[name]["worst"][eps]["example"]
        if example is not None:
            arrays[name]["flow"] = flow_back(system, sets["x"][:1], example[:1])
        arrays[name]["threshold"] = system.threshold
        times[f"evaluate_{name}"] = time.perf_counter() - t0
        log(f"[{name}] evaluated in {times[f'evaluate_{name}']:.0f} s")
    times["total"] = time.perf_counter() - start
    return {"records": records, "arrays": arrays, "where": where, "times": times,
            "sets": {"n_id": len(sets["y"]), "n_ood": {k: len(v) for k, v in
                                                      sets["ood"].items()}},
            "x_example": sets["x"][:1]}
