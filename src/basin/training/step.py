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

Two more savings of the fast path change no arithmetic (bit-identical to the plain calls,
tested): ``FastAdam`` calls the fused kernel on lists built once instead of regrouping every
parameter, gradient and moment each step (torch's ``Adam.step`` spends about twice the
kernel's own time in Python at these sizes), and ``stage_loss`` computes Eq. 4 with the
operations of ``attractor_loss`` minus its per-call argument checks, whose two label
reductions each wait for a host sync (the trainer checks its data once per run).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from basin.losses import LossTerms, LossWeights, StackForward, attractor_loss, run_stack
from basin.losses.jacobian import frobenius_sq_from_record
from basin.losses.jacobian_projection import run_stack_with_tangents
from basin.training.config import TrainConfig
from basin.training.stages import Stage

KERNELS = {True: "fast", False: "reference"}


class FastAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)`` whose steps call the fused kernel directly.

    The first step (and any step after ``load_state_dict``, or one where a parameter has no
    gradient) is torch's own, which creates the state; later steps reuse the lists of
    moments and step counters it made and run the same two kernels (``_foreach_add_`` on
    the counters, ``_fused_adam_``) with the same arguments, so the updates are bit-identical
    (``tests/test_speed_paths.py``); state_dict and load_state_dict are Adam's.
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float) -> None:
        super().__init__(params, lr=lr, fused=True)
        self._lists: tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]] | None = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._lists = None

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if closure is not None or len(self.param_groups) != 1:
            self._lists = None
            return super().step(closure)
        group = self.param_groups[0]
        grads = [p.grad for p in group["params"]]
        if self._lists is None or any(g is None for g in grads):
            self._lists = None
            super().step()
            if all(g is not None for g in grads):
                states = [self.state[p] for p in group["params"]]
                self._lists = (list(group["params"]), [s["exp_avg"] for s in states],
                               [s["exp_avg_sq"] for s in states], [s["step"] for s in states])
            return None
        params, exp_avgs, exp_avg_sqs, steps = self._lists
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps,
                           amsgrad=group["amsgrad"], lr=group["lr"], beta1=beta1,
                           beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                           maximize=group["maximize"], grad_scale=None, found_inf=None)
        return None


def make_optimizer(params: list[nn.Parameter], lr: float, *, fast: bool = True
                   ) -> torch.optim.Adam:
    """The stage's Adam: fused when ``fast``, else torch's CPU default (per-tensor loop)."""
    if fast:
        return FastAdam(params, lr=lr)
    return torch.optim.Adam(params, lr=lr)


def _eq4(stage: Stage, h: Tensor, y: Tensor, forward: StackForward, config: TrainConfig,
         weights: LossWeights, generator: torch.Generator | None) -> LossTerms:
    """``attractor_loss`` on a trainer batch, operation for operation, without its checks."""
    output = forward.output
    if config.mse_reduction == "mean":
        reconstruction = F.mse_loss(output, h)
    else:
        reconstruction = (output - h).square().sum(dim=1).mean()
    classification = F.cross_entropy(stage.logits_from(forward.activations), y.long())
    if weights.eigen > 0:
        values = frobenius_sq_from_record(forward, config.jacobian,
                                          projections=config.projections, generator=generator)
        eigen = 0.5 * values.mean()
        total = (weights.reconstruction * reconstruction + weights.eigen * eigen
                 + weights.classification * classification)
    else:
        # attractor_loss adds 0 * a zero tensor here: x + 0.0 is x, so the total is the same
        eigen = reconstruction.new_zeros(())
        total = (weights.reconstruction * reconstruction
                 + weights.classification * classification)
    return LossTerms(total, reconstruction, eigen, classification)


def stage_loss(stage: Stage, h: Tensor, y: Tensor, config: TrainConfig, weights: LossWeights,
               generator: torch.Generator | None, *, fast: bool = True) -> LossTerms:
    """Eq. 4 on the batch (h, y), the encoder run once for reconstruction and head."""
    forward: StackForward
    if fast and config.jacobian == "projection" and weights.eigen > 0:
        forward = run_stack_with_tangents(stage.stack, h, config.projections, generator)
    else:
        forward = run_stack(stage.stack, h)
    if fast:
        return _eq4(stage, h, y, forward, config, weights, generator)
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
