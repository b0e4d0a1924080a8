"""The "combined" detector of Mulé & Shaner: Zhou's fused score with the backbone's MSP.

The paper combines Zhou's feature-reconstruction detector (its Algorithm 1, here
:class:`~basin.detectors.zhou.ZhouDetector`) with Hendrycks & Gimpel's maximum softmax
probability of the pretrained backbone (its Algorithm 2, :class:`~basin.detectors.msp.
MSPDetector`), but gives no formula for the combination. basin offers two documented rules;
every normalisation is fitted on the *validation* split only.

``rule="product"`` (default): Zhou's fused score p is a product of normal-CDF factors; the
backbone MSP m enters as one more factor of the same kind, with (mu_m, sigma_m) the normal
fitted to the validation MSP and s = ``msp_scale``, default 10 like the widening Zhou applies
to his own MSP factor (a confident backbone's validation MSP has a tiny sigma, so s = 1 would
let any slightly unconfident input's MSP factor overwhelm the reconstruction terms)::

    combined = p * Phi((m - mu_m) / (s * sigma_m))
    score    = log p + log_ndtr((m - mu_m) / (s * sigma_m))        (returned, log space)

The log is increasing, so ``score`` ranks inputs exactly as the product does.

``rule="zsum"``: the sum of validation-standardised scores,
``score = (log p - a_z) / b_z + (m - a_m) / b_m`` with (a, b) the validation mean and std of
Zhou's log score and of the MSP: each part counts equally, whatever its scale.

``score_parts`` returns Zhou's log score, the MSP and the combined score side by side, so
reports can compare each part alone with the combination.
"""

from __future__ import annotations

from typing import ClassVar, Self

import torch
from torch import Tensor

from basin.detectors.base import Detector, DetectorError
from basin.detectors.msp import MSPDetector
from basin.detectors.zhou import ZhouDetector, fit_normal

RULES = ("product", "zsum")


class CombinedDetector(Detector):
    """Zhou's detector fused with the backbone MSP (see the module docstring).

    Args:
        zhou: a :class:`ZhouDetector` (fitted, or fitted by :meth:`fit`).
        msp: an :class:`MSPDetector` on the backbone.
        rule: ``"product"`` or ``"zsum"``.
        msp_scale: widening factor s of the MSP normal for the product rule (default 10).
        threshold: optional fixed acceptance threshold.
    """

    name: ClassVar[str] = "combined"

    def __init__(self, zhou: ZhouDetector, msp: MSPDetector, rule: str = "product",
                 msp_scale: float = 10.0, threshold: float | None = None) -> None:
        super().__init__(threshold)
        if not isinstance(zhou, ZhouDetector):
            raise DetectorError(f"zhou: expected a ZhouDetector, got {type(zhou).__name__}")
        if not isinstance(msp, MSPDetector):
            raise DetectorError(f"msp: expected an MSPDetector, got {type(msp).__name__}")
        if rule not in RULES:
            raise DetectorError(f"rule: expected one of {RULES}, got {rule!r}")
        if not msp_scale > 0:
            raise DetectorError(f"msp_scale: must be > 0, got {msp_scale}")
        self.zhou, self.msp, self.rule, self.msp_scale = zhou, msp, rule, float(msp_scale)
        self.normals: dict[str, tuple[float, float]] | None = None
        self.n_val: int | None = None

    def fit(self, x: Tensor, y: Tensor | None = None, x_val: Tensor | None = None,
            batch_size: int = 512) -> Self:
        """Fit Zhou's detector if needed, then the normalisations on the validation split.

        The validation split is ``x_val`` when given, else the part of ``x`` that Zhou's
        detector held out (its ``fit_record["val_indices"]``).
        """
        if not self.zhou.is_fitted:
            self.zhou.fit(x, y, x_val=x_val, batch_size=batch_size)
        if x_val is None:
            record = self.zhou.fit_record or {}
            if record.get("val_indices") is None:
                raise DetectorError("x_val: needed (Zhou's detector was fitted on a separate "
                                    "validation set, which this detector cannot recover)")
            x_val = x[torch.as_tensor(record["val_indices"], device=x.device)]
        self.fit_validation(self.zhou.score_batches(x_val, batch_size),
                            self.msp.score_batches(x_val, batch_size))
        return self

    def fit_features(self, f_val: Tensor) -> Self:
        """Fit the normalisations from cached *validation* features (Zhou already fitted).

        Needs Zhou's backbone and the MSP detector's model to be the same object.
        """
        self._check_same_model()
        with torch.no_grad():
            return self.fit_validation(self.zhou.score_features(f_val),
                                       self.msp.score_features(f_val))

    def fit_validation(self, zhou_val: Tensor, msp_val: Tensor) -> Self:
        """Fit the normalisations from validation scores: Zhou's (as ``zhou.score``) and MSP."""
        if len(zhou_val) != len(msp_val) or len(msp_val) < 2:
            raise DetectorError(f"zhou_val, msp_val: need equal lengths >= 2, got "
                                f"{len(zhou_val)} and {len(msp_val)}")
        zhou_log = zhou_val if self.zhou.log_space else zhou_val.log()
        self.normals = {"zhou": fit_normal(zhou_log), "msp": fit_normal(msp_val)}
        self.n_val = len(msp_val)
        return self

    def _combine(self, zhou_log: Tensor, m: Tensor) -> Tensor:
        if self.normals is None:
            raise DetectorError("combined: not fitted; call fit() or fit_validation() first")
        mu_m, sd_m = self.normals["msp"]
        # float64: a confident backbone's MSP sits within 1e-4 of 1, where float32 cancels
        zd, md = zhou_log.double(), m.double()
        if self.rule == "product":
            out = zd + torch.special.log_ndtr((md - mu_m) / (self.msp_scale * sd_m))
        else:
            mu_z, sd_z = self.normals["zhou"]
            out = (zd - mu_z) / sd_z + (md - mu_m) / sd_m
        return out.to(m.dtype)

    def _zhou_log(self, x: Tensor) -> Tensor:
        return self.zhou.score_parts(x)["log_p"]

    def score(self, x: Tensor) -> Tensor:
        if self.zhou.model is self.msp.model:
            # one backbone pass serves both parts (half the cost under attack)
            return self.score_features(self.zhou.model.features(x))
        return self._combine(self._zhou_log(x), self.msp.score(x))

    def score_features(self, f: Tensor) -> Tensor:
        """The combined score of cached features (same-model case only)."""
        self._check_same_model()
        return self._combine(self.zhou.log_terms(f)["log_p"], self.msp.score_features(f))

    def score_parts(self, x: Tensor) -> dict[str, Tensor]:
        """``{"zhou": log p, "msp": m, "combined": score}`` for inputs ``x``."""
        zhou_log, m = self._zhou_log(x), self.msp.score(x)
        return {"zhou": zhou_log, "msp": m, "combined": self._combine(zhou_log, m)}

    def _check_same_model(self) -> None:
        if self.zhou.model is not self.msp.model:
            raise DetectorError("features: Zhou's backbone and the MSP model differ, so one "
                                "feature tensor cannot serve both; use inputs instead")
