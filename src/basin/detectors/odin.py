"""ODIN: temperature scaling plus input preprocessing.

Liang, Li & Srikant, "Enhancing the Reliability of Out-of-distribution Image Detection in
Neural Networks", ICLR 2018. With logits z = model.logits(x), temperature T and step eps:

    S(x; T)  = max_c softmax(z(x) / T)_c
    x'       = x - eps * sign(-grad_x log S(x; T))         (a step that *raises* S)
    score(x) = S(x'; T)

Differentiability for attacks. ``sign`` is piecewise constant, so the exact derivative of
the perturbation ``eps * sign(g(x))`` is zero almost everywhere. The preprocessing gradient
``g`` is therefore computed with ``create_graph=False`` and the perturbation enters the
graph as a constant: ``d score / d x = grad S(x'; T)`` evaluated at x', i.e. the attack
differentiates through everything except the (flat) sign step. This is the exact
almost-everywhere gradient, not an approximation.

The gradient of the batch sum gives each input its own gradient only when inputs do not
interact, so the model must be in eval mode (no batch-norm batch statistics).

Tuning (``tune``) picks T and eps on *validation* data only. Liang et al. tune on an OOD
validation set; without one, ``tune`` uses a synthetic OOD proxy, uniform noise over the
value range of the ID validation inputs (seeded). Choosing by ID data alone cannot select T
(the ID score falls monotonically with T), which is why a proxy set is needed; a noise proxy
may pick settings that are poorer for natural OOD data, so pass real OOD validation data
when there is some.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from basin.detectors.base import Detector, DetectorError, threshold_for_acceptance
from basin.models.feature_classifier import FeatureClassifier, check_feature_classifier

DEFAULT_TEMPERATURES = (1.0, 10.0, 100.0, 1000.0)
DEFAULT_EPSILONS = (0.0, 0.0005, 0.001, 0.0014, 0.002, 0.003, 0.004)


def gradient_sign_step(x: Tensor, objective: Callable[[Tensor], Tensor], epsilon: float,
                       clip: tuple[float, float] | None = None) -> Tensor:
    """``x + epsilon * sign(grad_x objective(x))`` with the step treated as a constant.

    ``objective`` maps a batch to per-input values (N,). The returned tensor stays attached
    to ``x``'s graph through the identity term only (see the module docstring).
    """
    if epsilon == 0:
        return x
    with torch.enable_grad():
        probe = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(probe).sum(), probe, create_graph=False)
    moved = x + epsilon * grad.sign()
    return moved.clamp(*clip) if clip is not None else moved


class ODINDetector(Detector):
    """ODIN score of a :class:`FeatureClassifier`.

    Args:
        model: the classifier (in eval mode).
        temperature: softmax temperature T > 0 (Liang et al.: 1000).
        epsilon: preprocessing step size >= 0 in input units (Liang et al.: 0.0014).
        clip: optional (low, high) range to clamp preprocessed inputs to; None (default)
            follows Liang et al., who do not clamp.
        threshold: optional fixed acceptance threshold.
    """

    name: ClassVar[str] = "odin"

    def __init__(self, model: FeatureClassifier, temperature: float = 1000.0,
                 epsilon: float = 0.0014, clip: tuple[float, float] | None = None,
                 threshold: float | None = None) -> None:
        super().__init__(threshold)
        self.model = check_feature_classifier(model)
        self._set(temperature, epsilon)
        self.clip = clip
        self.tuning: dict[str, Any] | None = None

    def _set(self, temperature: float, epsilon: float) -> None:
        if not temperature > 0:
            raise DetectorError(f"temperature: must be > 0, got {temperature}")
        if not epsilon >= 0:
            raise DetectorError(f"epsilon: must be >= 0, got {epsilon}")
        self.temperature, self.epsilon = float(temperature), float(epsilon)

    def _log_msp(self, x: Tensor) -> Tensor:
        return torch.log_softmax(self.model.logits(x) / self.temperature, dim=1).max(1).values

    def preprocess(self, x: Tensor) -> Tensor:
        """The preprocessed input x' (equal to ``x`` when epsilon = 0)."""
        return gradient_sign_step(x, self._log_msp, self.epsilon, self.clip)

    def score(self, x: Tensor) -> Tensor:
        return self._log_msp(self.preprocess(x)).exp()

    def tune(self, x_val_id: Tensor, x_val_ood: Tensor | None = None,
             temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
             epsilons: Sequence[float] = DEFAULT_EPSILONS, criterion: str = "fpr95",
             seed: int = 0, batch_size: int = 256) -> dict[str, Any]:
        """Grid-search (T, eps) on validation data; set and return the best.

        ``criterion``: ``"fpr95"`` (Liang et al.: the OOD acceptance rate at 95% ID
        acceptance, lower is better, ties broken by AUROC) or ``"auroc"`` (higher is
        better). Returns a record with the chosen values, the whole grid and where the OOD
        validation data came from (``tuning`` keeps it).
        """
        from sklearn.metrics import roc_auc_score  # imported here: sklearn loads slowly

        if criterion not in ("fpr95", "auroc"):
            raise DetectorError(f"criterion: expected 'fpr95' or 'auroc', got {criterion!r}")
        if len(x_val_id) == 0:
            raise DetectorError("x_val_id: empty")
        if not temperatures or not epsilons:
            raise DetectorError("temperatures and epsilons: need at least one value each")
        source = "given"
        if x_val_ood is None:
            gen = torch.Generator().manual_seed(seed)
            lo, hi = float(x_val_id.min()), float(x_val_id.max())
            x_val_ood = lo + (hi - lo) * torch.rand(x_val_id.shape, generator=gen)
            x_val_ood = x_val_ood.to(x_val_id.device, x_val_id.dtype)
            source = "uniform noise"
        elif len(x_val_ood) == 0:
            raise DetectorError("x_val_ood: empty")
        labels = [1] * len(x_val_id) + [0] * len(x_val_ood)
        grid = []
        for t in temperatures:
            for e in epsilons:
                self._set(t, e)
                s_id = self.score_batches(x_val_id, batch_size)
                s_ood = self.score_batches(x_val_ood, batch_size)
                thr = threshold_for_acceptance(s_id, 0.95)
                grid.append({"temperature": float(t), "epsilon": float(e),
                             "fpr95": float((s_ood >= thr).double().mean()),
                             "auroc": float(roc_auc_score(labels, torch.cat([s_id, s_ood])
                                                          .double().cpu().numpy()))})
        if criterion == "fpr95":
            best = min(grid, key=lambda r: (r["fpr95"], -r["auroc"]))
        else:
            best = max(grid, key=lambda r: r["auroc"])
        self._set(best["temperature"], best["epsilon"])
        self.tuning = {"temperature": best["temperature"], "epsilon": best["epsilon"],
                       "criterion": criterion, "ood_source": source,
                       "n_val_id": len(x_val_id), "n_val_ood": len(x_val_ood), "grid": grid}
        return self.tuning
