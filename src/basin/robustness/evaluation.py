"""The evaluation runner: clean, attacked and corrupted conditions for ID and OOD data.

For a trained attractor network (a run folder written by ``basin train``) and the paper's
Pearson detector, every *condition* (``clean``, an attack spec, a corruption spec) is applied
to the in-distribution test set *and* to every OOD set, and the result is one flat list of
:class:`~basin.robustness.records.Record` (condition, attack, epsilon, dataset, side, metric,
value): ID metrics have side ``"id"``, OOD metrics (both sides perturbed) ``"both"``, clean
ones ``"none"``.

How each condition treats the two sides:

* classification objectives (``ce``, ``paper``, ``through-loop``, ``through-loop-bpda``) attack
  ID inputs with their true labels and OOD inputs with the system's own clean prediction (of
  the input or the iterate, as ``classify`` says) as the label (an untargeted push away from
  what the system says; OOD inputs have no true digit);
* detector-aware objectives attack each side towards the failure that hurts: ID inputs with
  the spec's objective (``reject-id`` or ``end-to-end``; ``accept-ood`` becomes ``reject-id``),
  OOD inputs with ``accept-ood``;
* the score-only objectives (``reject-id``, ``accept-ood``) are run without their success test,
  so each input keeps its highest-objective iterate rather than the first one that crosses the
  threshold, and the clean input wins where it scores better for the attacker (it lies in the
  ball too): the attacked scores, hence AUROC and FPR95, are the strongest found, never better
  for the defender than clean ones. Objectives whose success is the measured outcome (``ce``
  and the other classification objectives, ``end-to-end``) keep their success test;
* corruptions are applied to both sides with the same seed.

Thresholds are the paper's T = 0.8 or calibrated on the ID *validation* split, never on test
data. Sanity checks (epsilon 0 reproduces clean, non-zero gradients, the black-box attack does
not beat the white-box ones) are computed on a subset and reported with the records.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from basin.attacks import (
    DETECTOR_OBJECTIVES,
    AttackSpec,
    gradient_nonzero_fraction,
    make_objective,
    sanity_flags,
)
from basin.corruptions import corrupt
from basin.data import ImageDataset, load_dataset
from basin.detectors import PearsonDetector, RejectOptionClassifier
from basin.losses import LossWeights
from basin.metrics import ece, ood_metrics, reject_option_metrics
from basin.models import AttractorNet
from basin.robustness.audit_attacks import run_attack
from basin.robustness.conditions import Condition, check_dataset_names, parse_conditions
from basin.robustness.records import Record, value_of
from basin.robustness.system import Data

CLASSIFICATION_OBJECTIVES = ("ce", "paper", "through-loop", "through-loop-bpda")
SANITY_SUBSET = 256


@dataclass
class EvaluationSettings:
    """How the network is used at test time (recorded next to the results)."""

    steps: int = 1                     # n in G^n(x) for the similarity score
    threshold: float | None = 0.8      # None: calibrate on the ID validation split
    acceptance: float = 0.95           # ID validation acceptance when calibrating
    classify: Literal["input", "iterate"] = "input"  # F(x) or F(G^n(x))
    limit: int | None = None           # inputs per dataset (seeded subset)
    batch_size: int = 500
    seed: int = 0
    # (a1, a2, a3) of the run's training cost, for the paper's FGSM objective
    loss_weights: tuple[float, float, float] = (0.988, 0.002, 0.01)


@dataclass
class EvaluationResult:
    records: list[Record]
    sanity: list[str]
    settings: dict[str, Any]
    threshold: float
    # (condition text, dataset) -> raw arrays, for figures; not serialised
    scores: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    images: dict[tuple[str, str], Tensor] = field(default_factory=dict)

    def value(self, condition: str, dataset: str, metric: str) -> float | None:
        """The recorded number; KeyError when no record (or several) match."""
        return value_of(self.records, condition=condition, dataset=dataset, metric=metric)

    def conditions(self) -> list[str]:
        """The condition texts in the order they were measured, ``clean`` first."""
        return list(dict.fromkeys(r.condition for r in self.records))

    def to_json(self) -> dict[str, Any]:
        return {"records": [r.to_dict() for r in self.records], "sanity": self.sanity,
                "settings": self.settings, "threshold": self.threshold}


class Evaluator:
    """Applies conditions to datasets and measures one attractor network with its detector."""

    def __init__(self, net: AttractorNet, settings: EvaluationSettings,
                 device: torch.device, *, progress: bool = True) -> None:
        self.net = net.to(device).eval()
        self.settings = settings
        self.device = device
        self.progress = progress
        self.detector = PearsonDetector(self.net, steps=settings.steps,
                                        threshold=settings.threshold)
        self.classifier = RejectOptionClassifier(self.net, self.detector,
                                                 classify=settings.classify,
                                                 steps=settings.steps)

    # -- applying a condition --------------------------------------------------------
    def objective_for(self, spec: AttackSpec, side: str) -> Any:
        name = spec.objective
        if name in DETECTOR_OBJECTIVES:
            name = "accept-ood" if side == "ood" else (
                "reject-id" if name == "accept-ood" else name)
        kwargs = spec.objective_kwargs() if name == spec.objective else {}
        kwargs.setdefault("steps", self.settings.steps)
        a1, a2, a3 = self.settings.loss_weights
        weights = LossWeights(reconstruction=a1, eigen=a2, classification=a3)
        # Score objectives (reject-id, accept-ood) keep each input's strongest point by
        # default, the clean input included: threshold-free metrics need the lowest/highest
        # score, not the first one that crosses T.
        return make_objective(name, self.net, detector=self.detector,
                              seed=self.settings.seed, weights=weights, **kwargs)

    def labels_for(self, x: Tensor, y: Tensor, side: str) -> Tensor:
        if side == "id":
            return y
        return self.predict_labels(x)

    def predict_labels(self, x: Tensor) -> Tensor:
        """The system's own prediction, of F(x) or F(G^n(x)) as ``classify`` says."""
        return self.classifier.predict(x, batch_size=self.settings.batch_size).predicted

    def apply(self, condition: Condition, data: ImageDataset, side: str) -> Tensor:
        x = data.images
        if condition.kind == "clean":
            return x
        if condition.kind == "corruption":
            name, severity = condition.corruption  # type: ignore[misc]
            return corrupt(x, name, severity, seed=self.settings.seed)
        spec = condition.attack
        assert spec is not None
        objective = self.objective_for(spec, side)
        y = self.labels_for(x, data.labels, side)
        # The same batching and per-batch seeds as basin.audit, so an audit of this network
        # with the same attack specs finds the same adversarial inputs.
        return run_attack(_spec_for(spec, objective.name), objective,
                          Data(data.name, x, y), seed=self.settings.seed,
                          batch_size=self.settings.batch_size, device=self.device)

    # -- measuring -------------------------------------------------------------------
    def measure(self, condition: Condition, id_data: ImageDataset,
                ood_sets: Sequence[ImageDataset], result: EvaluationResult) -> None:
        x_id = self.apply(condition, id_data, "id")
        id_res = self.classifier.predict(x_id, batch_size=self.settings.batch_size)
        labels = id_data.labels
        records = result.records

        def add(dataset: str, about: str, metrics: dict[str, float]) -> None:
            records.extend(Record(condition.text, condition.attack_name, condition.epsilon,
                                  dataset, condition.side(about), k, v)
                           for k, v in metrics.items())

        accepted = id_res.accepted
        add(id_data.name, "id", {
            "accuracy": float((id_res.predicted == labels).double().mean()),
            "ece": ece(id_res.probabilities, labels),
            "acceptance_rate": float(accepted.double().mean()),
            "accuracy_accepted": _safe_mean(id_res.predicted[accepted] == labels[accepted]),
            "mean_score": float(id_res.scores.double().mean()),
        })
        result.scores[(condition.text, id_data.name)] = id_res.scores.numpy()
        result.images[(condition.text, id_data.name)] = x_id[:16]
        for ood in ood_sets:
            x_ood = self.apply(condition, ood, "ood")
            ood_res = self.classifier.predict(x_ood, batch_size=self.settings.batch_size)
            metrics = ood_metrics(id_res.scores, ood_res.scores, result.threshold)
            reject = reject_option_metrics(id_res.predicted, labels, accepted, ood_res.accepted)
            metrics.update({k: reject[k] for k in ("silent_failure_rate", "ood_acceptance_rate",
                                                   "id_silent_failure_rate", "coverage")})
            add(ood.name, "ood", metrics)
            result.scores[(condition.text, ood.name)] = ood_res.scores.numpy()
            result.images[(condition.text, ood.name)] = x_ood[:16]

    def sanity(self, conditions: Sequence[Condition], id_data: ImageDataset,
               result: EvaluationResult) -> list[str]:
        """Gradient-masking checks on a subset of ID inputs, per epsilon."""
        subset = id_data.subset(min(SANITY_SUBSET, len(id_data)), seed=self.settings.seed)
        clean = self._accuracy(subset.images, subset.labels)
        attacks = [c.attack for c in conditions if c.attack is not None
                   and c.attack.objective in CLASSIFICATION_OBJECTIVES]
        flags: list[str] = []
        for eps in sorted({a.epsilon for a in attacks}):
            group = [a for a in attacks if a.epsilon == eps]
            white = {a.text: self._attacked_accuracy(a, subset) for a in group
                     if a.attack != "square"}
            black = {a.text: self._attacked_accuracy(a, subset) for a in group
                     if a.attack == "square"}
            probe = next((a for a in group if a.attack != "square"), group[0])
            eps0 = self._attacked_accuracy(dataclasses.replace(probe, epsilon=0.0), subset)
            grad = gradient_nonzero_fraction(self.objective_for(probe, "id"),
                                             subset.images.to(self.device),
                                             subset.labels.to(self.device))
            flags += [f"[eps={eps:.4g}, {len(subset)} ID inputs] {f}"
                      for f in sanity_flags(clean, eps0, white, black, grad)]
        return flags

    def _accuracy(self, x: Tensor, y: Tensor) -> float:
        return float((self.classifier.predict(x).predicted == y).double().mean())

    def _attacked_accuracy(self, spec: AttackSpec, data: ImageDataset) -> float:
        x_adv = self.apply(Condition("attack", spec.text, attack=spec), data, "id")
        return self._accuracy(x_adv, data.labels)


def _spec_for(spec: AttackSpec, objective_name: str) -> AttackSpec:
    if objective_name == spec.objective:
        return spec
    params = {k: v for k, v in spec.params.items() if k in spec.attack_params()}
    return dataclasses.replace(spec, objective=objective_name, params=params)


def _safe_mean(mask: Tensor) -> float:
    return float(mask.double().mean()) if mask.numel() else float("nan")


def evaluate_run(net: AttractorNet, *, id_name: str = "mnist", ood: Sequence[str],
                 attacks: Sequence[str] = (), corruptions: Sequence[str] = (),
                 settings: EvaluationSettings | None = None,
                 mirror: str | os.PathLike[str] | None = None,
                 device: torch.device | None = None, progress: bool = True,
                 with_sanity: bool = True,
                 on_condition: Callable[[str], None] | None = None) -> EvaluationResult:
    """Evaluate ``net`` under every condition on ``id_name`` test data and each OOD set."""
    settings = settings or EvaluationSettings()
    conditions = parse_conditions(attacks, corruptions)
    check_dataset_names([id_name], "--id")
    check_dataset_names(list(ood))
    device = device or torch.device("cpu")
    evaluator = Evaluator(net, settings, device, progress=progress)

    def limited(data: ImageDataset) -> ImageDataset:
        return data.subset(settings.limit, seed=settings.seed) if settings.limit else data

    id_test = limited(load_dataset(id_name, "test", mirror=mirror))
    ood_sets = [limited(load_dataset(name, "test", mirror=mirror, seed=settings.seed))
                for name in ood]
    if settings.threshold is None:
        val = limited(load_dataset(id_name, "val", mirror=mirror))
        threshold = evaluator.detector.calibrate(val.images, settings.acceptance)
    else:
        threshold = settings.threshold
    result = EvaluationResult(records=[], sanity=[], threshold=threshold,
                              settings={**dataclasses.asdict(settings), "id": id_name,
                                        "ood": list(ood), "threshold_used": threshold})
    for condition in tqdm(conditions, desc="conditions", disable=not progress):
        if on_condition:
            on_condition(condition.text)
        evaluator.measure(condition, id_test, ood_sets, result)
    if with_sanity and any(c.attack is not None for c in conditions):
        result.sanity = evaluator.sanity(conditions, id_test, result)
    return result
