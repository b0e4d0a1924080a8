"""Square attack: score-based, gradient-free random search with square-shaped updates.

Paper: Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020 (the L-infinity version, Algorithms 1-2).

Threat model: L-infinity, ``|x_adv - x|_inf <= epsilon``, images in [0, 1]; black-box: it
only reads objective values, never gradients, which is why it exposes gradient masking: a
defence that only breaks gradients (a non-differentiable loop, saturated units) still loses to
it. The perturbation starts as vertical stripes of ``±epsilon``; each iteration redraws one
square window of side ``s`` (a ``±epsilon`` value per channel, constant over the window) and
keeps the change where the objective rises (or the objective's success test passes). The
window covers a fraction ``p`` of the image, ``p`` following the paper's schedule from
``p_init`` (:func:`p_selection`). Samples stop once successful. Seeded, so reproducible.

Arguments:
    objective: :class:`~basin.attacks.objectives.Objective` to maximise (values only).
    epsilon: perturbation budget in [0, 1].
    queries: objective evaluations per sample, the initialisation included (default 5000;
        the paper uses 10000).
    p_init: initial fraction of pixels per window (default 0.05, the paper's L-infinity value).
    image_shape: ``(C, H, W)`` for flat ``(N, D)`` inputs; default ``(1, r, r)`` when
        ``D = r * r``.
    seed: seed of every random draw.
    keep: ``"first-success"`` (stop an input at its first success) or ``"strongest"``
        (ignore the success test, spend every query, return the clean input where it beats
        the search); default: the objective's ``keep``.

Shapes: ``x`` (N, C, H, W) or (N, D) in [0, 1]; ``y`` (N,) integer labels or None for
label-free objectives; returns ``x_adv`` with the shape, dtype and device of ``x``.

Example::

    >>> from basin.attacks import Square, make_objective
    >>> attack = Square(make_objective("ce", model), 8 / 255, queries=1000, seed=0)
    >>> x_adv = attack(x, y)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from basin.attacks.base import Attack
from basin.attacks.objectives import Objective

# Schedule of the paper for a 10,000-query budget: p is halved after these iterations.
_HALVING_POINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_RESAMPLES = 10


def p_selection(p_init: float, iteration: int, queries: int) -> float:
    """Window fraction at ``iteration`` of ``queries``, the schedule rescaled to 10,000."""
    it = int(iteration / queries * 10000)
    halvings = sum(it > point for point in _HALVING_POINTS)
    return p_init / 2 ** halvings


def window_side(p: float, height: int, width: int) -> int:
    """Side of a square covering a fraction ``p`` of an ``height x width`` image."""
    side = round(math.sqrt(p * height * width))
    return max(1, min(side, min(height, width) - 1))


class Square(Attack):
    """L-infinity Square attack (random search over square-shaped ``±epsilon`` patches)."""

    name = "square"

    def __init__(self, objective: Objective, epsilon: float, *, queries: int = 5000,
                 p_init: float = 0.05, image_shape: Sequence[int] | None = None,
                 seed: int = 0, keep: str | None = None) -> None:
        super().__init__(objective, epsilon, seed=seed, keep=keep)
        if isinstance(queries, bool) or not isinstance(queries, int) or queries < 1:
            raise ValueError(f"queries must be an integer >= 1, got {queries!r}")
        if isinstance(p_init, bool) or not isinstance(p_init, int | float) or not (
                0.0 < p_init <= 1.0):
            raise ValueError(f"p_init must be in (0, 1], got {p_init!r}")
        if image_shape is not None and (len(image_shape) != 3 or min(image_shape) < 1):
            raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got "
                             f"{image_shape!r}")
        self.queries = queries
        self.p_init = float(p_init)
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape else None

    def _shape(self, x: Tensor) -> tuple[int, int, int]:
        if x.dim() == 4 and self.image_shape is None:
            c, h, w = x.shape[1:]
            return int(c), int(h), int(w)
        features = math.prod(x.shape[1:])
        if self.image_shape is not None:
            if math.prod(self.image_shape) != features:
                raise ValueError(f"image_shape {self.image_shape} does not match the "
                                 f"{features} features of x (shape {tuple(x.shape)})")
            c, h, w = self.image_shape
            return c, h, w
        side = math.isqrt(features)
        if side * side != features:
            raise ValueError(f"x: flat inputs with {features} features are not square "
                             "images; pass image_shape=(C, H, W)")
        return 1, side, side

    def _signs(self, shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
        draw = torch.randint(0, 2, shape, generator=generator) * 2 - 1
        return draw.to(device=like.device, dtype=like.dtype)

    def _perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        n = x.shape[0]
        c, h, w = self._shape(x)
        eps = self.epsilon
        generator = self._generator()
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)

        def evaluate(images: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
            flat = images.reshape(len(idx), *x.shape[1:])
            loss, success = self.evaluate(flat, None if y is None else y[idx])
            loss = loss.to(torch.float64)
            loss = torch.where(torch.isnan(loss), torch.full_like(loss, -math.inf), loss)
            return loss, success

        with torch.no_grad():
            x_img = x.reshape(n, c, h, w)
            everyone = torch.arange(n, device=x.device)
            best = torch.clamp(x_img + eps * self._signs((n, c, 1, w), generator, x), 0, 1)
            best_loss, done = evaluate(best, everyone)
            for iteration in range(1, self.queries):
                idx = everyone[~done]
                if len(idx) == 0:
                    break
                k = len(idx)
                side = window_side(p_selection(self.p_init, iteration, self.queries), h, w)
                top = torch.randint(0, h - side + 1, (k,), generator=generator).to(x.device)
                left = torch.randint(0, w - side + 1, (k,), generator=generator).to(x.device)
                in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
                in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
                window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
                clean, current = x_img[idx], best[idx]
                delta = current - clean
                signs = self._signs((k, c, 1, 1), generator, x)
                for _ in range(_RESAMPLES):
                    candidate = torch.clamp(
                        clean + torch.where(window, eps * signs, delta), 0, 1)
                    same = (candidate == current).flatten(1).all(dim=1)
                    if not bool(same.any()):
                        break
                    # a window that changes nothing wastes a query: redraw its signs
                    redraw = self._signs((k, c, 1, 1), generator, x)
                    signs = torch.where(same[:, None, None, None], redraw, signs)
                loss, success = evaluate(candidate, idx)
                accept = (loss > best_loss[idx]) | success
                chosen = idx[accept]
                best[chosen] = candidate[accept]
                best_loss[chosen] = loss[accept]
                done[chosen] = success[accept]
            if self.strongest:
                clean_loss, _ = evaluate(x_img, everyone)
                best = torch.where((clean_loss > best_loss)[:, None, None, None], x_img, best)
        return best.reshape(x.shape)
