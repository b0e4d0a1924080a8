"""Which attacks an audit runs, and running one of them over a data set in batches.

Every attack is a ``basin.attacks`` spec whose objective says which side it perturbs:
``accept-ood`` pushes OOD inputs to be accepted (side ``ood``); every other objective
(``ce``, ``end-to-end``, ``reject-id``, ...) perturbs the labelled ID inputs (side ``id``).
The audit then keeps, per input, the worst case over every run on its side, so adding an
attack can only make the reported numbers worse for the defender, never better.

Suites are templates over epsilon: ``"fast"`` (PGD-10 on each goal, for tests and quick
looks) and ``"strongest"`` (the members of :func:`basin.attacks.suite.strongest_specs` on
each goal, AutoAttack's composition: APGD on the objective and on DLR or the margin, PGD with
restarts and the Square black-box attack, whose job is also to expose gradient masking; the
end-to-end objective at several weights of its acceptance term).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from basin.attacks import (
    OBJECTIVE_KINDS,
    AttackSpec,
    Objective,
    build_attack,
    make_objective,
    parse_attack_spec,
)
from basin.attacks.objectives import classifier_logits
from basin.attacks.suite import strongest_specs
from basin.distributed.cells import Cell, shard_cells
from basin.robustness.records import Record
from basin.robustness.system import Data, derive_seed, format_epsilon

# objectives on the detector score alone; they keep each input's strongest point by default
# (lowest ID score, highest OOD score, never worse than clean), which AUROC and FPR95 need
SCORE_OBJECTIVES = frozenset(n for n, kind in OBJECTIVE_KINDS.items() if kind == "detector")
OOD_OBJECTIVES = frozenset({"accept-ood"})
BLACK_BOX = frozenset({"square"})

STRONGEST = "strongest"
# the goals of the strongest plan: objective and its extra spec parameters
STRONGEST_GOALS = (("ce", ""), ("end-to-end", "penalty=1"), ("end-to-end", "penalty=10"),
                   ("end-to-end", "penalty=100"), ("reject-id", ""), ("accept-ood", ""))
SMALL_STEP_PENALTY = "penalty=100"

SUITES: dict[str, tuple[str, ...]] = {
    "fast": (
        "pgd:ce:{eps}:steps=10",
        "pgd:end-to-end:{eps}:steps=10:penalty=1",
        "pgd:end-to-end:{eps}:steps=10:penalty=10",
        "pgd:reject-id:{eps}:steps=10",
        "pgd:accept-ood:{eps}:steps=10",
    ),
    # basin.attacks.suite's strongest members on every goal (see strongest_plan)
    "strongest": (STRONGEST,),
}


def strongest_plan(epsilon: float, n_classes: int | None) -> list[str]:
    """``basin.attacks.suite.strongest_specs`` of every goal (APGD on the objective, APGD-DLR
    or the margin for classifier goals, PGD with restarts, Square), the end-to-end goal at
    three weights of its acceptance term; the same member is run once. Plus a small-step
    end-to-end PGD from the clean input (80 steps of eps/40, the largest penalty): at large
    epsilon, large steps overshoot into rejection and the acceptance term cannot bring them
    back (measured on the paper baseline at 0.3: 21% silent failures found by PGD-40 against
    86.6% by the small-step variant)."""
    out: list[str] = []
    for objective, extra in STRONGEST_GOALS:
        for text in strongest_specs(objective, epsilon, n_classes=n_classes or 10):
            if extra and text.split(":")[1] == objective:
                text = f"{text}:{extra}"
            if text not in out:
                out.append(text)
    if epsilon > 0:
        out.append(f"pgd:end-to-end:{float(epsilon)!r}:steps=80:step_size={epsilon / 40!r}"
                   f":random_start=false:{SMALL_STEP_PENALTY}")
    return out


def _at_epsilon(text: str, epsilon: float) -> AttackSpec:
    parts = text.strip().split(":")
    if len(parts) < 3:
        return parse_attack_spec(text)  # raises with the spec's own message
    parts[2] = format_epsilon(epsilon)
    spec = parse_attack_spec(":".join(parts))
    return dataclasses.replace(spec, epsilon=epsilon)


def check_attacks(attacks: str | Sequence[str]) -> list[str]:
    """The spec templates of ``attacks`` (a suite name or spec strings), all validated."""
    if isinstance(attacks, str):
        if attacks not in SUITES:
            raise ValueError(f"attacks: expected one of {sorted(SUITES)} or a list of attack "
                             f"specs such as 'pgd:ce:8/255:steps=40', got {attacks!r}")
        templates = list(SUITES[attacks])
    else:
        templates = list(attacks)
        if not templates or not all(isinstance(t, str) for t in templates):
            raise ValueError(f"attacks: expected a non-empty list of spec strings, got "
                             f"{attacks!r}")
    plan_attacks(templates, 0.0)
    return templates


def plan_attacks(templates: Sequence[str], epsilon: float,
                 n_classes: int | None = None) -> list[AttackSpec]:
    """Each template at ``epsilon`` (a spec's own epsilon is a placeholder, replaced);
    ``"strongest"`` expands to :func:`strongest_plan` for ``n_classes``."""
    texts: list[str] = []
    for t in templates:
        texts += strongest_plan(epsilon, n_classes) if t == STRONGEST else [t]
    return [_at_epsilon(t.replace("{eps}", "0"), epsilon) for t in texts]


def side_of(spec: AttackSpec) -> str:
    """``"ood"`` for objectives that attack OOD inputs, else ``"id"``."""
    return "ood" if spec.objective in OOD_OBJECTIVES else "id"


def build_objective(spec: AttackSpec, model: Any, detector: Any) -> Objective:
    """The spec's objective on ``model`` and ``detector`` (its ``keep`` rule is the attack's
    default unless the spec sets ``keep=``)."""
    return make_objective(spec.objective, model, detector=detector, **spec.objective_kwargs())


def run_attack(spec: AttackSpec, objective: Objective, data: Data, *, seed: int,
               batch_size: int, device: torch.device, start: int = 0,
               stop: int | None = None) -> Tensor:
    """Adversarial versions of the inputs ``start:stop`` of ``data`` (all by default; on the
    CPU), batch seeds derived from (seed, epsilon, spec, data set, batch index). The batch
    index counts from the first input of ``data``, so a shard that starts on a batch boundary
    gets exactly the batches, seeds and adversarial points of the unsharded run."""
    stop = len(data) if stop is None else stop
    if start % batch_size or not 0 <= start <= stop <= len(data):
        raise ValueError(f"start, stop: expected a range of {data.name} (n={len(data)}) that "
                         f"starts on a multiple of batch_size={batch_size}, got "
                         f"{start}:{stop}")
    out = []
    for begin in range(start, stop, batch_size):
        end = min(begin + batch_size, stop)
        attack = build_attack(spec, objective, seed=derive_seed(
            seed, spec.epsilon, spec.text, data.name, begin // batch_size))
        xb = data.x[begin:end].to(device)
        yb = None if data.y is None else data.y[begin:end].to(device)
        if not objective.needs_labels:
            yb = None
        x_adv = attack.perturb(xb, yb)
        out.append(x_adv.detach().cpu())
    return torch.cat(out) if out else data.x[:0].clone()


@dataclass
class AttackGrid:
    """What every attack cell of an audit reads (put in Ray's object store once): the system,
    the data sets by name, the specs by (epsilon, text), the seed and batching."""

    model: Any
    detector: Any
    sets: dict[str, Data]
    specs: dict[tuple[float, str], AttackSpec]
    seed: int
    batch_size: int
    device: torch.device

    def cells(self, shard_size: int) -> list[Cell]:
        """One cell per epsilon x spec x data set of its side x shard of ``shard_size``
        inputs, in the order the audit merges them."""
        id_name = next(name for name, d in self.sets.items() if d.y is not None)
        out = []
        for (eps, text), spec in self.specs.items():
            side = side_of(spec)
            targets = [id_name] if side == "id" else [n for n in self.sets if n != id_name]
            for name in targets:
                cell = Cell(condition=text, attack=spec.attack, epsilon=eps,
                            params={"dataset": name, "side": side})
                out += shard_cells(cell, len(self.sets[name]), shard_size)
        return out


PER_INPUT = "per_input"
"""The metric of an attack cell's record: per input of its shard, the prediction and score."""


def attack_cell(cell: Cell, grid: AttackGrid) -> list[Record]:
    """One attack on one shard of one data set: the adversarial inputs' predictions and
    detector scores (exact floats in ``extra``), as one record for the audit to merge."""
    spec = grid.specs[(cell.epsilon, cell.condition)]
    data = grid.sets[cell.param("dataset")]
    start, stop = cell.shard or (0, len(data))
    objective = build_objective(spec, grid.model, grid.detector)
    x_adv = run_attack(spec, objective, data, seed=grid.seed, batch_size=grid.batch_size,
                       device=grid.device, start=start, stop=stop)
    pred, score = predict_and_score(grid.model, grid.detector, x_adv,
                                    batch_size=grid.batch_size, device=grid.device)
    return [Record(spec.text, spec.attack, spec.epsilon, data.name, side_of(spec), PER_INPUT,
                   None, {"start": start, "stop": stop, "predicted": pred.tolist(),
                          "scores": score.tolist()})]


@torch.no_grad()
def predict_and_score(model: Any, detector: Any, x: Tensor, *, batch_size: int,
                      device: torch.device) -> tuple[Tensor, Tensor]:
    """Predicted classes (int64) and detector scores (float64) of ``x``, on the CPU."""
    preds, scores = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        preds.append(classifier_logits(model, xb).argmax(dim=1).cpu())
        scores.append(detector.score(xb).detach().double().cpu())
    return torch.cat(preds), torch.cat(scores)
