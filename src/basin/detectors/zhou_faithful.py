"""Zhou's detector as his official PyTorch re-implementation computes it (an ablation).

:class:`~basin.detectors.zhou.ZhouDetector` follows the reproduced paper's reading (Mulé &
Shaner's Algorithm 1, with basin's documented choices). This variant follows Zhou's own code
(repository SDret/Pytorch-implementation-for-Rethinking-Reconstruction-Autoencoder-Based-Out-
of-Distribution-Detection: ``models/base_block.py``, ``losses/ILCEloss.py``,
``batch_engine.py``, ``metrics/ood_metrics.py``), so that a reproduction can tell a
shortcoming of the method from one of a reading. Differences from the default variant:

=====================  ==============================  ====================================
part                   default (``zhou``)              official code (``zhou_faithful``)
=====================  ==============================  ====================================
L1 (training)          ||v - D1(z)||^2 / ||v||^2       ||v - D1(z)||^2 (raw, summed)
L2 (training)          ||z/T - D2(S(z/T))||^2          same
W at the start         Xavier-uniform                  the backbone's trained head
Adam lr                1e-3 constant                   1e-4, cosine-annealed to 0
e1, e2 (scores)        norms of the errors of the      *squared* norms of the errors of
                       L2-normalised vectors           the L2-normalised vectors
msp temperature        T = 100                         1000
sigma widening         (10, 1, 1)                      (10, 10, 10) (``EPSILON`` = 10 on
                                                       all three normal fits)
=====================  ==============================  ====================================

Shared: T = 100, decoders of three linear layers with Swish (D1: C -> D -> D -> D, D2:
C -> 512 -> 256 -> C), cross-entropy weight lambda = 1, batch 128, the fused score
``Phi(msp) (1 - Phi(e1)) (1 - Phi(e2))`` in log space. Zhou's code trains 300 epochs and fits
the normals on the *test* set; basin fits them on the validation split only (as Algorithm 1
says) and the epoch count is the caller's (CPU budget), recorded with the detector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from basin.detectors.base import DetectorError
from basin.detectors.zhou import ZhouDetector
from basin.models.feature_classifier import FeatureClassifier

OFFICIAL_EPOCHS = 300


def head_as_linear(model: FeatureClassifier) -> nn.Linear | None:
    """The model's logits map ``f -> logits`` as one ``nn.Linear`` (its ``head`` times its
    ``logit_scale``), or None when the model has no linear head."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        return None
    scale = float(getattr(model, "logit_scale", 1.0))
    layer = nn.Linear(head.in_features, head.out_features)
    with torch.no_grad():
        layer.weight.copy_(head.weight * scale)
        layer.bias.copy_(head.bias * scale if head.bias is not None else torch.zeros(
            head.out_features))
    return layer


class ZhouFaithfulDetector(ZhouDetector):
    """Zhou's official re-implementation (see the module docstring's table).

    Same arguments as :class:`ZhouDetector`, with the official defaults; ``w_init`` defaults
    to the backbone's own head (:func:`head_as_linear`) when the model has one.
    """

    name: ClassVar[str] = "zhou_faithful"
    lr_schedule: ClassVar[str] = "cosine"

    def __init__(self, model: FeatureClassifier, *, n_classes: int | None = None,
                 temperature: float = 100.0, msp_temperature: float | None = 1000.0,
                 lam: float = 1.0, sigma_scales: Sequence[float] = (10.0, 10.0, 10.0),
                 epochs: int = OFFICIAL_EPOCHS, batch_size: int = 128, lr: float = 1e-4,
                 seed: int = 0, d1_hidden: Sequence[int] | None = None,
                 d2_hidden: Sequence[int] = (512, 256), w_init: nn.Linear | None = None,
                 log_space: bool = True, threshold: float | None = None) -> None:
        super().__init__(model, n_classes=n_classes, temperature=temperature,
                         msp_temperature=msp_temperature, lam=lam, sigma_scales=sigma_scales,
                         epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                         d1_hidden=d1_hidden, d2_hidden=d2_hidden,
                         w_init=w_init if w_init is not None else head_as_linear(model),
                         log_space=log_space, threshold=threshold)

    def training_losses(self, v: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """ILCE_loss: raw squared errors of v and of z / T, summed over features."""
        if self.heads is None:
            raise DetectorError("zhou_faithful: heads not built")
        zt = z / self.temperature
        l1 = (v - self.heads.D1(z)).pow(2).sum(1)
        l2 = (zt - self.heads.D2(torch.softmax(zt, 1))).pow(2).sum(1)
        return l1, l2

    def errors(self, v: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """``sum((a/||a|| - rec/||a||)^2)`` for a = v and a = z / T (squared, no root)."""
        if self.heads is None:
            raise DetectorError("zhou_faithful: not fitted")
        zt = z / self.temperature
        norm_v = v.norm(dim=1, keepdim=True).clamp_min(1e-12)
        norm_z = zt.norm(dim=1, keepdim=True).clamp_min(1e-12)
        e1 = (v / norm_v - self.heads.D1(z) / norm_v).pow(2).sum(1)
        e2 = (zt / norm_z - self.heads.D2(torch.softmax(zt, 1)) / norm_z).pow(2).sum(1)
        return e1, e2
