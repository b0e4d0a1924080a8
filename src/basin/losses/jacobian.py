"""The eigen loss of the attractor paper: ``L_eigen = 1/2 ||dG/dx||_F^2`` (Eq. 5).

Eq. 5 sums the squared entries ``a_ij`` of the Jacobian of the autoencoder G at a training
sample; ``eigen_loss`` averages it over the batch. Because the spectral radius is bounded by
the Frobenius norm, a small value makes the sample an attractor of G (Eq. 3, Theorem 1).

Three interchangeable ways to compute the per-sample ``||J||_F^2`` (``JACOBIAN_METHODS``):

* ``"exact"``: the full Jacobian by automatic differentiation
  (``torch.func.vmap(torch.func.jacrev(G))``), chunked over the batch. The reference; it costs
  one backward pass per output pixel.
* ``"exact-fast"``: the same number from the MLP structure (products of masked weight
  matrices routed through the narrowest layer, ``basin.losses.jacobian_fast``). Agrees with
  ``"exact"`` to rounding, gradients included.
* ``"projection"``: an unbiased random-projection estimate with ``projections`` directions
  (``basin.losses.jacobian_projection``): about the price of one extra forward pass per
  direction, which is what makes 50,000 training images affordable on a CPU.

All three are differentiable w.r.t. the stack's parameters (``L_eigen`` is a training loss).
"""

from __future__ import annotations

import torch
from torch import Tensor

from basin.losses.forward import StackForward, check_stack_input, run_stack
from basin.losses.jacobian_fast import frobenius_sq_structured
from basin.losses.jacobian_projection import frobenius_sq_projection
from basin.models.layer_stack import LayerStack

JACOBIAN_METHODS = ("exact", "exact-fast", "projection")


def check_jacobian_options(method: str, projections: int, chunk_size: int) -> None:
    """Raise ValueError naming the bad argument."""
    if method not in JACOBIAN_METHODS:
        raise ValueError(f"method: unknown Jacobian method {method!r}; "
                         f"choose from {JACOBIAN_METHODS}")
    if isinstance(projections, bool) or not isinstance(projections, int) or projections < 1:
        raise ValueError(f"projections: expected an integer >= 1, got {projections!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")


def frobenius_sq_autograd(stack: LayerStack, h: Tensor, chunk_size: int) -> Tensor:
    """Reference: ``||J||_F^2`` per sample from the full autograd Jacobian."""

    def single(x: Tensor) -> Tensor:
        return stack(x.unsqueeze(0)).squeeze(0)

    per_sample_jacobian = torch.func.vmap(torch.func.jacrev(single))
    pieces = [per_sample_jacobian(chunk).square().sum((1, 2)) for chunk in h.split(chunk_size)]
    return torch.cat(pieces) if pieces else h.new_zeros(0)


def frobenius_sq_from_record(record: StackForward, method: str = "exact-fast", *,
                             projections: int = 1, generator: torch.Generator | None = None,
                             chunk_size: int = 64) -> Tensor:
    """``jacobian_frobenius_sq`` on a forward record (``run_stack``), so that a loss that
    already ran the stack does not run it again (``"exact"`` always recomputes)."""
    check_jacobian_options(method, projections, chunk_size)
    if method == "exact":
        return frobenius_sq_autograd(record.stack, record.input, chunk_size)
    if method == "exact-fast":
        return frobenius_sq_structured(record, chunk_size)
    return frobenius_sq_projection(record, projections, generator)


def jacobian_frobenius_sq(stack: LayerStack, h: Tensor, method: str = "exact-fast", *,
                          projections: int = 1, generator: torch.Generator | None = None,
                          chunk_size: int = 64) -> Tensor:
    """Squared Frobenius norm of ``d stack(h) / dh`` for every sample, shape ``(N,)``.

    Args:
        stack: the map G (``net.autoencoder_stack()`` or ``net.stage_stack(k)``).
        h: flat inputs ``(N, stack.in_features)`` (``net.stage_input(x, k)`` for a stage).
        method: one of ``JACOBIAN_METHODS``.
        projections: directions per sample for ``"projection"`` (ignored otherwise).
        generator: source of the directions for ``"projection"``, for reproducibility.
        chunk_size: samples per chunk for the exact methods (bounds their memory).

    Differentiable w.r.t. the stack's parameters; ``"projection"`` is an unbiased estimate.
    """
    check_jacobian_options(method, projections, chunk_size)
    check_stack_input(stack, h)
    if method == "exact":
        return frobenius_sq_autograd(stack, h, chunk_size)
    return frobenius_sq_from_record(run_stack(stack, h), method, projections=projections,
                                    generator=generator, chunk_size=chunk_size)


def eigen_loss(stack: LayerStack, h: Tensor, method: str = "exact-fast", *,
               projections: int = 1, generator: torch.Generator | None = None,
               chunk_size: int = 64) -> Tensor:
    """``L_eigen`` (Eq. 5): the batch mean of ``1/2 ||J||_F^2``, a scalar."""
    values = jacobian_frobenius_sq(stack, h, method, projections=projections,
                                   generator=generator, chunk_size=chunk_size)
    if values.numel() == 0:
        raise ValueError("h: empty batch, the eigen loss is a mean over samples")
    return 0.5 * values.mean()
