"""The acceptance threshold a robust training run aims its correct-or-reject terms at.

The evaluation accepts an input when its similarity is at least the threshold that accepts
95% of clean validation digits; a training that instead counts an attacked digit as accepted
only above a fixed margin (0.9) treats every input scoring between the two as rejected,
so it never learns to fix the wrong-but-accepted inputs there, which are exactly the
evaluation's silent failures (a quick conv run's calibrated threshold was 0.75). The running
estimate below follows the calibrated threshold from the training digits themselves (never
validation or test images): an exponential moving average of each batch's clean-score
quantile.
"""

from __future__ import annotations

import torch
from torch import Tensor


class AcceptanceThreshold:
    """Running ``1 - accept_fraction`` quantile of clean scores, smoothed over batches.

    ``value`` starts at ``initial``; ``update(scores)`` moves it by ``rate`` towards the
    quantile of one batch's scores and returns the new value. ``slack`` is subtracted in
    ``target()``: a training that aims slightly below the estimate treats borderline inputs
    as accepted (the conservative side for the attacker's success).
    """

    def __init__(self, initial: float, accept_fraction: float = 0.95, rate: float = 0.05,
                 slack: float = 0.0) -> None:
        if not 0.0 < accept_fraction < 1.0:
            raise ValueError(f"accept_fraction: must lie in (0, 1), got {accept_fraction}")
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"rate: must lie in (0, 1], got {rate}")
        if slack < 0:
            raise ValueError(f"slack: must be >= 0, got {slack}")
        self.value = float(initial)
        self.accept_fraction = accept_fraction
        self.rate = rate
        self.slack = slack

    def update(self, scores: Tensor) -> float:
        """Fold one batch of clean scores (1-D) into the estimate; returns ``value``."""
        if scores.dim() != 1 or scores.numel() == 0:
            raise ValueError(f"scores: need a non-empty 1-D tensor, got shape "
                             f"{tuple(scores.shape)}")
        q = float(torch.quantile(scores.detach().float(), 1.0 - self.accept_fraction))
        self.value += self.rate * (q - self.value)
        return self.value

    def target(self) -> float:
        """Where the training's soft acceptance sits: the estimate minus ``slack``."""
        return self.value - self.slack
