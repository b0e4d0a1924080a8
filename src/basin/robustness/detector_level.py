"""Robustness of an OOD detector under attacks through its own score.

For one fitted, thresholded detector, :func:`detector_robustness` measures AUROC, FPR95 and
the acceptance rates clean and under attack, with the threat model of the evaluation issue:
L-infinity balls of radius ``epsilon`` around each input, images in [0, 1].

* **White-box**: PGD on ``reject-id`` (push in-distribution inputs below the threshold) and on
  ``accept-ood`` (push OOD inputs above it), following the gradient of the detector's whole
  score, so through ODIN's input preprocessing and Zhou's decoders, not around them. Each
  input keeps its highest-objective iterate: the objectives' success test is dropped, because
  with it PGD would stop at the first iterate that barely crosses the threshold and the
  threshold-free metrics (AUROC, FPR95) would not see the strongest perturbation found. The
  clean input lies in the ball too, so the attacked score is the worse (for the defender) of
  clean and attacked.
* **Black-box**: the Square attack on the same objectives, on a subset, at the largest
  epsilon. It reads scores only, so if it beats PGD the gradients are suspect (masking), and
  the sanity flags say so.

The result is a list of :class:`~basin.robustness.records.Record`: ``side`` says which inputs
were attacked (``"ood"``: OOD pushed to acceptance; ``"id"``: ID pushed to rejection;
``"both"``), ``dataset`` which set a number is about (OOD metrics such as AUROC are about the
OOD set, the ID rejection rate about the ID set), and ``condition`` spells the attack
(``"pgd:accept-ood:8/255:steps=40"``; ``...:first=100`` when restricted to the Square subset).

Reduced precision: the attack *steps* may run under bf16 autocast (``precision="bf16"``, about
1.5x faster on a CPU with AMX); every score that enters a metric is computed again in fp32,
so only the search direction is approximate. ``benchmarks/attack_precision.py`` measured the
bf16 search 0.3-1.7 AUROC points weaker than fp32 at 1/255 (equal at 8/255), so the full
reproduction attacks in fp32 and bf16 is for quick looks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from basin.attacks import PGD, Square, gradient_nonzero_fraction, make_objective, sanity_flags
from basin.detectors import Detector
from basin.metrics import ood_metrics
from basin.robustness.records import Record
from basin.training.backbone_aug import autocast

DETECTOR_ATTACKS = ("reject-id", "accept-ood")


@dataclass(frozen=True)
class RobustnessSettings:
    """What to attack with: PGD steps and radii, the Square subset, precision, seed."""

    epsilons: tuple[float, ...] = (1 / 255, 8 / 255)
    steps: int = 40
    square_n: int = 100               # inputs per side for the black-box check (0: none)
    square_queries: int = 300
    precision: str = "fp32"           # resolved: "bf16" or "fp32"
    seed: int = 0
    batch: int = 250


def attack_detector(det: Detector, objective_name: str, x: Tensor, eps: float, *,
                    steps: int, seed: int, precision: str = "fp32", batch: int = 250,
                    kind: str = "pgd", queries: int = 300) -> Tensor:
    """``x`` perturbed by PGD (or Square, ``kind="square"``) on a detector-aware objective.

    Args:
        det: a detector with a threshold (the objectives are margins to it).
        objective_name: ``"accept-ood"`` or ``"reject-id"``.
        x: inputs (N, C, H, W) in [0, 1].
        eps: L-infinity radius.
        steps: PGD steps (ignored by Square).
        seed: seed of the random starts; batch ``i`` uses ``seed + i``.
        precision: ``"bf16"`` runs the search under bf16 autocast, ``"fp32"`` does not.
        kind: ``"pgd"`` or ``"square"``.
        queries: Square's queries per input.
    """
    if objective_name not in DETECTOR_ATTACKS:
        raise ValueError(f"objective_name: expected one of {DETECTOR_ATTACKS}, "
                         f"got {objective_name!r}")
    # score objectives keep each input's strongest point (the clean input included)
    objective = make_objective(objective_name, detector=det)
    out = []
    for i in range(0, len(x), batch):
        if kind == "pgd":
            method: PGD | Square = PGD(objective, eps, steps=steps, seed=seed + i)
        elif kind == "square":
            method = Square(objective, eps, queries=queries, seed=seed + i)
        else:
            raise ValueError(f"kind: expected 'pgd' or 'square', got {kind!r}")
        with autocast(x.device, precision):
            out.append(method.perturb(x[i:i + batch]))
    return torch.cat(out) if out else x


@dataclass
class DetectorRobustness:
    """One detector's records (:mod:`basin.robustness.records`) and sanity flags."""

    detector: str
    n_id: int
    n_ood: int
    records: list[Record] = field(default_factory=list)
    sanity: list[str] = field(default_factory=list)   # "<epsilon>: <flag>"

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detector, "n_id": self.n_id, "n_ood": self.n_ood,
                "records": [r.to_dict() for r in self.records], "sanity": list(self.sanity)}


def epsilon_text(eps: float) -> str:
    """``8/255`` for multiples of 1/255 (how budgets are quoted), else ``%g``."""
    scaled = eps * 255
    return f"{round(scaled)}/255" if eps > 0 and abs(scaled - round(scaled)) < 1e-6 else f"{eps:g}"


def _correct(s_id: Tensor, s_ood: Tensor, t: float) -> float:
    """Fraction of right decisions: ID accepted, OOD rejected."""
    return float(((s_id >= t).sum() + (s_ood < t).sum()) / (len(s_id) + len(s_ood)))


class _Recorder:
    """Appends records of one detector: ``add(condition, attack, eps, side, dataset, ...)``."""

    def __init__(self, extra: dict[str, Any]) -> None:
        self.records: list[Record] = []
        self.extra = extra

    def add(self, condition: str, attack: str, eps: float, side: str, dataset: str,
            **metrics: float) -> None:
        self.records += [Record(condition, attack, eps, dataset, side, k, v, self.extra)
                         for k, v in metrics.items()]


def detector_robustness(det: Detector, x_id: Tensor, x_ood: Tensor,
                        settings: RobustnessSettings, *, id_name: str = "id",
                        ood_name: str = "ood") -> DetectorRobustness:
    """Clean and attacked records per epsilon, the black-box check and the sanity flags.

    ``det.threshold`` must be set (from validation data). Records hold AUROC and FPR95 clean,
    with only the OOD side attacked and with both sides attacked, the OOD acceptance and ID
    rejection rates, the right-decision rate, the fraction of inputs with a non-zero gradient
    and, at the largest epsilon, Square's result beside PGD's on the same inputs.
    """
    if det.threshold is None:
        raise ValueError(f"{det.name}: set a threshold (from validation data) before attacking")
    t, b, s = float(det.threshold), settings.batch, settings

    def scores(x: Tensor) -> Tensor:
        return det.score_batches(x, b).double().cpu()

    def attacked(side: str, x: Tensor, eps: float, kind: str = "pgd") -> Tensor:
        seed = s.seed + (0 if side == "reject-id" else 10_000)
        return scores(attack_detector(det, side, x, eps, steps=s.steps, seed=seed, batch=b,
                                      precision=s.precision, kind=kind,
                                      queries=s.square_queries))

    out = _Recorder({"detector": det.name, "steps": s.steps, "precision": s.precision})
    s_id, s_ood = scores(x_id), scores(x_ood)
    clean, correct_clean = ood_metrics(s_id, s_ood, t), _correct(s_id, s_ood, t)
    grad = min(gradient_nonzero_fraction(make_objective(o, detector=det), x[:64])
               for o, x in zip(DETECTOR_ATTACKS, (x_id, x_ood), strict=True))
    out.add("clean", "none", 0.0, "none", ood_name, auroc=clean["auroc"],
            fpr_at_95_tpr=clean["fpr_at_95_tpr"], ood_acceptance_rate=clean["fpr"],
            detection_accuracy=correct_clean)
    out.add("clean", "none", 0.0, "none", id_name, id_rejection_rate=1 - clean["recall"],
            grad_nonzero_fraction=grad)
    # eps = 0 must reproduce the clean decisions exactly (the attack plumbing adds nothing)
    eps0 = _correct(scores(attack_detector(det, "reject-id", x_id, 0.0, steps=1, seed=0)),
                    s_ood, t)
    sanity = []
    for eps in s.epsilons:
        e = epsilon_text(eps)
        pgd = f"pgd:reject-id+accept-ood:{e}:steps={s.steps}"
        # The attacks keep the clean input where it is stronger, but under bf16 autocast their
        # comparison is in bf16: the fp32 scores decide here.
        a_id = torch.minimum(s_id, attacked("reject-id", x_id, eps))
        a_ood = torch.maximum(s_ood, attacked("accept-ood", x_ood, eps))
        ood_only, both = ood_metrics(s_id, a_ood, t), ood_metrics(a_id, a_ood, t)
        out.add(f"pgd:accept-ood:{e}:steps={s.steps}", "pgd", eps, "ood", ood_name,
                auroc=ood_only["auroc"], fpr_at_95_tpr=ood_only["fpr_at_95_tpr"],
                ood_acceptance_rate=ood_only["fpr"])
        out.add(f"pgd:reject-id:{e}:steps={s.steps}", "pgd", eps, "id", id_name,
                id_rejection_rate=1 - both["recall"])
        out.add(pgd, "pgd", eps, "both", ood_name, auroc=both["auroc"],
                fpr_at_95_tpr=both["fpr_at_95_tpr"], detection_accuracy=_correct(a_id, a_ood, t))
        white = {"pgd": _correct(a_id, a_ood, t)}
        black: dict[str, float] = {}
        n_sq = min(s.square_n, len(x_id), len(x_ood))
        if n_sq and eps == max(s.epsilons):
            sq_id = torch.minimum(s_id[:n_sq], attacked("reject-id", x_id[:n_sq], eps, "square"))
            sq_ood = torch.maximum(s_ood[:n_sq],
                                   attacked("accept-ood", x_ood[:n_sq], eps, "square"))
            # compare on the same inputs: PGD's result restricted to the Square subset
            white = {"pgd": _correct(a_id[:n_sq], a_ood[:n_sq], t)}
            black = {"square": _correct(sq_id, sq_ood, t)}
            out.add(f"{pgd}:first={n_sq}", "pgd", eps, "both", ood_name,
                    detection_accuracy=white["pgd"])
            out.add(f"square:reject-id+accept-ood:{e}:queries={s.square_queries}:first={n_sq}",
                    "square", eps, "both", ood_name, detection_accuracy=black["square"],
                    auroc=ood_metrics(sq_id, sq_ood, t)["auroc"])
        sanity += [f"{e}: {flag}" for flag in sanity_flags(correct_clean, eps0, white, black,
                                                           grad)]
    return DetectorRobustness(det.name, len(x_id), len(x_ood), out.records, sanity)
