"""One optimisation step of a training stage, and the kernels it runs on.

``train_step`` is what the trainer repeats (and what ``benchmarks/speed.py`` times): the
stage's loss (Eq. 4), backward, Adam. Two of its kernels are faster than the plain PyTorch
code they replace and round differently in the last bits, so both are switched together by
``fast`` (``basin.training.train(fast_kernels=...)``, recorded in the run's config.json):

- Adam ``fused``: one pass over memory for all parameters instead of about ten elementwise
  passes per tensor (Adam is memory-bound on a CPU); updates differ by ~1e-8.
- for the ``projection`` estimator, ``run_stack_with_tangents``: the forward pass and the
  tangents ``J v`` share each layer's matrix product, so each weight gradient is one product
  instead of two and an add; values agree to ~1e-6 relative.

``fast=False`` runs the per-tensor Adam and the separate tangent recursion, reproducing runs
made before these kernels bit for bit (``tests/test_fast_paths.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from basin.losses import LossTerms, LossWeights, StackForward, attractor_loss, run_stack
from basin.losses.jacobian_projection import run_stack_with_tangents
from basin.training.config import TrainConfig
from basin.training.stages import Stage

KERNELS = {True: "fast", False: "reference"}


def make_optimizer(params: list[nn.Parameter], lr: float, *, fast: bool = True
                   ) -> torch.optim.Adam:
    """The stage's Adam: fused when ``fast``, else torch's CPU default (per-tensor loop)."""
    if fast:
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr)


def stage_loss(stage: Stage, h: Tensor, y: Tensor, config: TrainConfig, weights: LossWeights,
               generator: torch.Generator | None, *, fast: bool = True) -> LossTerms:
    """Eq. 4 on the batch (h, y), the encoder run once for reconstruction and head."""
    forward: StackForward
    if fast and config.jacobian == "projection" and weights.eigen > 0:
        forward = run_stack_with_tangents(stage.stack, h, config.projections, generator)
    else:
        forward = run_stack(stage.stack, h)
    return attractor_loss(stage.stack, h, h, stage.logits_from(forward.activations), y,
                          weights, jacobian=config.jacobian, projections=config.projections,
                          generator=generator, forward=forward,
                          mse_reduction=config.mse_reduction)


def train_step(stage: Stage, h: Tensor, y: Tensor, optimizer: torch.optim.Optimizer,
               config: TrainConfig, weights: LossWeights, generator: torch.Generator | None,
               *, fast: bool = True) -> Any:
    """One optimisation step of ``stage`` on the batch (h, y); returns its loss terms."""
    terms = stage_loss(stage, h, y, config, weights, generator, fast=fast)
    optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    optimizer.step()
    return terms
