"""Iterated inference ``x_{k+1} = G(x_k)`` and attractor diagnostics (attractor paper, §2.3).

At test time the attractor network feeds its reconstruction back to its input (Eq. 2, Fig.
4-b) so that a perturbed input can fall into the basin of a learned pattern. ``iterate`` runs
that loop for a fixed number of steps (differentiable, so attacks can unroll it) or until it
settles. A fixed point ``x* = G(x*)`` is an attractor when every eigenvalue of the Jacobian
``J = dG/dx`` at ``x*`` lies inside the unit circle (Eq. 3 for a vector map: spectral radius
``rho < 1``); ``jacobian_spectral_radius`` computes ``rho`` exactly and
``attractor_report`` summarises how many inputs are, or converge to, attractors.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from basin.models.attractor import AttractorNet, activation_derivative


@dataclass(frozen=True)
class IterationResult:
    """Outcome of ``iterate``.

    Attributes:
        final: the last iterate, same shape as the input.
        iterations: int64 (N,), how many times G was applied to each sample.
        converged: bool (N,), whether the sample's last update was below ``tol`` (with a
            fixed number of ``steps`` there is no tolerance: True only where the last step
            changed nothing at all; computed on first access, since the Pearson score, the
            hot caller, never reads it and it costs three passes over the batch).
        trajectory: ``[x_0, x_1, ...]`` (whole batch each, frozen samples repeat their value),
            or None unless ``keep_trajectory`` was set.
    """

    final: Tensor
    iterations: Tensor
    converged_when_read: Tensor | Callable[[], Tensor] = field(repr=False)
    trajectory: list[Tensor] | None = None

    @functools.cached_property
    def converged(self) -> Tensor:
        value = self.converged_when_read
        return value if isinstance(value, Tensor) else value()


def _max_abs_change(new: Tensor, old: Tensor) -> Tensor:
    """Per-sample infinity norm of ``new - old``, shape (N,)."""
    diff = _per_sample((new - old).detach())
    return diff.abs().amax(dim=1) if diff.shape[1] else diff.new_zeros(diff.shape[0])


def _per_sample(t: Tensor) -> Tensor:
    """``t`` as (N, features); unlike ``reshape(N, -1)`` this also works for N = 0."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))


def _check_iterate_args(x: Tensor, steps: int | None, tol: float | None, max_iter: int) -> None:
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise ValueError(f"x must be a batched tensor (N, ...), got {type(x).__name__} "
                         f"with shape {tuple(getattr(x, 'shape', ()))}")
    if (steps is None) == (tol is None):
        raise ValueError("give exactly one of steps (a fixed number of iterations) or tol "
                         f"(iterate until converged), got steps={steps}, tol={tol}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or steps < 0):
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if tol is not None and not (isinstance(tol, int | float) and 0 < tol < float("inf")):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")


def iterate(g: Callable[[Tensor], Tensor], x: Tensor, *, steps: int | None = None,
            tol: float | None = None, max_iter: int = 100,
            keep_trajectory: bool = False) -> IterationResult:
    """Apply ``g`` repeatedly to ``x`` (Eq. 2): ``x_{k+1} = g(x_k)``.

    Exactly one of:
        steps: apply ``g`` exactly this many times to every sample (``steps=1`` is a plain
            reconstruction, ``steps=0`` returns ``x``). Differentiable when grad is enabled:
            attacks unroll through the loop.
        tol: iterate until ``max|x_{k+1} - x_k| < tol`` per sample, at most ``max_iter``
            times. A sample that converged is frozen at ``x_{k+1}`` (G is no longer applied
            to it; only the still-moving samples go through ``g``), so its ``iterations``
            count is the first ``k+1`` that met the test. Gradients flow here too, but the
            stopping rule itself is not differentiable.

    ``g`` must map a batch ``(M, ...)`` to a batch of the same shape, sample by sample.
    """
    _check_iterate_args(x, steps, tol, max_iter)
    n = x.shape[0]
    trajectory = [x] if keep_trajectory else None
    if steps is not None:
        current, previous = x, x
        for _ in range(steps):
            previous, current = current, g(current)
            if trajectory is not None:
                trajectory.append(current)
        last, before_last = current, previous

        def settled() -> Tensor:
            return (_max_abs_change(last, before_last) == 0) if steps else \
                torch.zeros(n, dtype=torch.bool, device=x.device)

        iterations = torch.full((n,), steps, dtype=torch.int64, device=x.device)
        return IterationResult(current, iterations, settled, trajectory)

    assert tol is not None
    current = x
    iterations = torch.zeros(n, dtype=torch.int64, device=x.device)
    converged = torch.zeros(n, dtype=torch.bool, device=x.device)
    for _ in range(max_iter):
        active = torch.nonzero(~converged).flatten()
        if active.numel() == 0:
            break
        before = current[active]
        after = g(before)
        if after.shape != before.shape:
            raise ValueError(f"g changed the batch shape from {tuple(before.shape)} to "
                             f"{tuple(after.shape)}; iterate needs a map from images to images")
        # Out-of-place index_put keeps the graph intact for callers that need gradients.
        current = current.index_put((active,), after)
        iterations[active] += 1
        converged[active] = _max_abs_change(after, before) < tol
        if trajectory is not None:
            trajectory.append(current)
    return IterationResult(current, iterations, converged, trajectory)


@torch.no_grad()
def is_fixed_point(g: Callable[[Tensor], Tensor], x: Tensor, tol: float) -> Tensor:
    """Bool (N,): True where ``max|g(x) - x| < tol`` (a numerical fixed point of ``g``)."""
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise ValueError(f"x must be a batched tensor (N, ...), got {type(x).__name__}")
    if not (isinstance(tol, int | float) and tol > 0):
        raise ValueError(f"tol must be a number > 0, got {tol!r}")
    return _max_abs_change(g(x), x) < tol


@torch.no_grad()
def jacobian_spectral_radius(net: AttractorNet, x: Tensor, *, batch_size: int = 64) -> Tensor:
    """Spectral radius of ``J = dG/dx`` at each sample of ``x``, shape (N,), exact.

    G is a chain of layers, so ``J = P_L ... P_1`` with ``P_i = diag(act_i'(z_i)) W_i``. The
    non-zero eigenvalues of a product do not change under cyclic rotation (those of ``A B``
    equal those of ``B A``), so the chain is rotated to start and end at the narrowest layer
    of width r: one r x r eigenvalue problem per sample (300 x 300 for the paper's net
    instead of 784 x 784), solved in float64. Not differentiable (a diagnostic).
    """
    if not isinstance(net, AttractorNet):
        raise ValueError(f"net must be an AttractorNet, got {type(net).__name__}")
    if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
        what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a float batch (N, C, H, W) or (N, D), got {what}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    flat = _per_sample(x)
    if flat.shape[1] != net.input_dim:
        raise ValueError(f"x has {flat.shape[1]} features per sample, the net expects "
                         f"{net.input_dim}")
    stack = net.autoencoder_stack()
    layers, acts = list(stack.layers), list(stack.activations)
    widths = [layer.out_features for layer in layers]
    narrowest = min(range(len(layers)), key=lambda i: widths[i])
    # Layers in product order after the rotation: P_narrowest ... P_1 P_L ... P_{narrowest+1}.
    order = [(narrowest + 1 + i) % len(layers) for i in range(len(layers))]
    flat = flat.to(layers[0].weight.dtype)
    out = []
    for start in range(0, len(flat), batch_size):
        slopes = [activation_derivative(a, z)
                  for a, z in zip(acts, stack.pre_activations(flat[start:start + batch_size]),
                                  strict=True)]
        first = order[0]
        product = slopes[first][:, :, None] * layers[first].weight
        for i in order[1:]:
            product = slopes[i][:, :, None] * torch.matmul(layers[i].weight, product)
        eig = torch.linalg.eigvals(product.double())
        out.append(eig.abs().amax(dim=1))
    if not out:
        return torch.empty(0, dtype=x.dtype, device=x.device)
    return torch.cat(out).to(x.dtype)


@dataclass(frozen=True)
class AttractorReport:
    """Per-sample attractor diagnostics of G on a batch, with ``summary()`` for reports.

    Definitions (``x`` an input, ``x_inf`` the point reached by ``iterate(G, x, tol=tol,
    max_iter=max_iter)``, distances are RMS per pixel, ``||a - b||_2 / sqrt(D)``):

    - ``fixed_point``: ``max|G(x) - x| < tol``, x itself is a numerical fixed point.
    - ``attractor``: a fixed point with ``rho(J(x)) < 1`` (Eq. 3). Training never makes a
      sample an exact fixed point, so with a small ``tol`` this fraction is usually low.
    - ``converged``: the iteration from x settled (last update below ``tol``).
    - ``stable``: converged and ``rho(J(x_inf)) < 1``, x lies in the basin of an attractor.
    - ``near_attractor``: stable and ``distance(x, x_inf) <= radius``, x converges to an
      attractor close to itself (the practical reading of "the sample is an attractor").

    ``rho_limit`` and ``distance`` are NaN where the iteration did not converge; the
    summary's means and medians of them are over converged samples only.
    """

    fixed_point: Tensor
    rho_input: Tensor
    converged: Tensor
    iterations: Tensor
    rho_limit: Tensor
    distance: Tensor
    tol: float
    max_iter: int
    radius: float

    @property
    def attractor(self) -> Tensor:
        return self.fixed_point & (self.rho_input < 1)

    @property
    def stable(self) -> Tensor:
        return self.converged & (self.rho_limit < 1)

    @property
    def near_attractor(self) -> Tensor:
        return self.stable & (self.distance <= self.radius)

    def summary(self) -> dict[str, float | int | None]:
        """JSON-ready numbers (None where a statistic has no sample to average)."""
        def frac(mask: Tensor) -> float:
            return float(mask.double().mean()) if mask.numel() else float("nan")

        def stat(values: Tensor, how: str) -> float | None:
            values = values[~torch.isnan(values)].double() if values.is_floating_point() \
                else values.double()
            if values.numel() == 0:
                return None
            return float(values.mean() if how == "mean" else values.median())

        iters = self.iterations[self.converged]
        return {
            "n": int(self.fixed_point.numel()), "tol": self.tol, "max_iter": self.max_iter,
            "radius": self.radius,
            "fixed_point_fraction": frac(self.fixed_point),
            "attractor_fraction": frac(self.attractor),
            "converged_fraction": frac(self.converged),
            "stable_fraction": frac(self.stable),
            "near_attractor_fraction": frac(self.near_attractor),
            "rho_input_mean": stat(self.rho_input, "mean"),
            "rho_input_median": stat(self.rho_input, "median"),
            "rho_limit_mean": stat(self.rho_limit, "mean"),
            "rho_limit_median": stat(self.rho_limit, "median"),
            "distance_mean": stat(self.distance, "mean"),
            "distance_median": stat(self.distance, "median"),
            "iterations_mean": stat(iters, "mean"),
            "iterations_median": stat(iters, "median"),
        }


@torch.no_grad()
def attractor_report(net: AttractorNet, x: Tensor, *, tol: float = 1e-3, max_iter: int = 200,
                     radius: float = 0.1, batch_size: int = 64) -> AttractorReport:
    """Which inputs are attractors of ``G = net.reconstruct``, and where iteration leads.

    Defaults: ``tol = 1e-3`` (max pixel change, on the [0, 1] scale, that counts as "not
    moving"), ``max_iter = 200``, ``radius = 0.1`` RMS per pixel (a mean squared distance of
    0.01) for ``near_attractor``. See ``AttractorReport`` for the definitions.
    """
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (N, C, H, W) or (N, D), got "
                         f"{tuple(getattr(x, 'shape', ()))}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    if not (isinstance(radius, int | float) and radius >= 0):
        raise ValueError(f"radius must be a number >= 0, got {radius!r}")
    fixed = is_fixed_point(net.reconstruct, x, tol)
    rho_input = jacobian_spectral_radius(net, x, batch_size=batch_size)
    result = iterate(net.reconstruct, x, tol=tol, max_iter=max_iter)
    rho_limit = torch.full_like(rho_input, float("nan"))
    done = result.converged
    if done.any():
        rho_limit[done] = jacobian_spectral_radius(net, result.final[done],
                                                   batch_size=batch_size)
    dist = _per_sample(result.final - x).double().norm(dim=1) / math.sqrt(_per_sample(x).shape[1])
    distance = torch.where(done, dist, torch.full_like(dist, float("nan"))).to(x.dtype)
    return AttractorReport(fixed_point=fixed, rho_input=rho_input, converged=done,
                           iterations=result.iterations, rho_limit=rho_limit,
                           distance=distance, tol=float(tol), max_iter=max_iter,
                           radius=float(radius))
