"""Certified bounds for the attractor system: interval bound propagation (IBP) through G, F
and the Pearson acceptance score over an L-inf ball.

For an input ``x`` and radius eps the ball is the box ``[max(x - eps, 0), min(x + eps, 1)]``.
IBP (Gowal et al. 2018) carries a box through each layer: a linear (or convolutional) layer
maps centre ``c`` and radius ``r`` to ``W c + b`` and ``|W| r``; ReLU, clamp and sigmoid are
monotone and map the box ends. Everything below is *sound* (every point of the ball lies
inside the bounds), and loose: nothing here is tightened by the dependencies between the boxes.

- **Classification**: the logit differences ``z_y - z_j`` are bounded through the head as one
  linear map ``(W_y - W_j)`` of the bottleneck box (tighter than subtracting two logit
  boxes); the class is certified when every lower bound is > 0.
- **Pearson score** ``r(x', G^n(x'))``: ``x'`` lies in the input box and ``G^n(x')`` in the
  IBP box of the iterate (treated as independent of ``x'``, which is sound). Each centred
  pixel ``x_i - mean(x)`` is bounded with ``x_i`` counted once, then the centred cross sum
  and the two sums of squares by interval arithmetic, and the ratio by its monotonicity in
  each of them. Where a box admits a (near-)constant image the detector's rule scores 0,
  so 0 is included in the bounds.

``certify`` returns per-input bounds; ``certified_metrics`` turns them into certified
accuracy (certified correct *and* certified accepted) and GOOD's certified AUROC ("GAUC":
ID inputs at their score's lower bound against OOD inputs at their upper bound).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from basin.metrics import auroc
from basin.models.attractor import apply_activation
from basin.models.conv_attractor import IMAGE_SHAPE, ConvAttractorNet
from basin.models.factory import AnyAttractor

Box = tuple[Tensor, Tensor]


def input_box(x: Tensor, epsilon: float) -> Box:
    """The L-inf ball of radius ``epsilon`` around flat ``x``, intersected with [0, 1]."""
    if not (isinstance(epsilon, int | float) and 0 <= epsilon <= 1):
        raise ValueError(f"epsilon: must be a number in [0, 1], got {epsilon!r}")
    flat = x.reshape(x.shape[0], -1)
    return (flat - epsilon).clamp(0.0, 1.0), (flat + epsilon).clamp(0.0, 1.0)


def _as_linear(layer: torch.nn.Module) -> torch.nn.Linear:
    """The encoder and decoder ModuleLists are typed as Module; IBP here handles Linear only."""
    if not isinstance(layer, torch.nn.Linear):
        raise TypeError(f"layer: IBP supports torch.nn.Linear layers, got {type(layer).__name__}")
    return layer


def linear_box(layer: torch.nn.Linear, box: Box) -> Box:
    """IBP through ``layer``: centre and radius form."""
    lo, hi = box
    centre, radius = (hi + lo) / 2, (hi - lo) / 2
    mid = centre @ layer.weight.T + layer.bias
    rad = radius @ layer.weight.abs().T
    return mid - rad, mid + rad


def activation_box(name: str, box: Box) -> Box:
    """A monotone activation maps a box to the box of its ends."""
    if name not in ("relu", "clamp", "sigmoid", "linear"):
        raise ValueError(f"activation: IBP supports monotone activations, got {name!r}")
    return apply_activation(name, box[0]), apply_activation(name, box[1])


def module_box(module: nn.Module, box: Box) -> Box:
    """IBP through one layer of a convolutional network (boxes in the layer's own shapes):
    an affine layer maps the centre through itself and the radius through its ``|W|``
    without bias; ReLU maps the ends; reshapes reshape both ends."""
    lo, hi = box
    if isinstance(module, nn.Linear):
        return linear_box(module, box)
    if isinstance(module, nn.ReLU):
        return activation_box("relu", box)
    if isinstance(module, nn.Flatten | nn.Unflatten):
        return module(lo), module(hi)
    centre, radius = (hi + lo) / 2, (hi - lo) / 2
    if isinstance(module, nn.Conv2d):
        mid = module(centre)
        rad = F.conv2d(radius, module.weight.abs(), None, module.stride, module.padding,
                       module.dilation, module.groups)
    elif isinstance(module, nn.ConvTranspose2d):
        mid = module(centre)
        # ConvTranspose2d's padding is typed str | tuple (the str form is Conv2d's only)
        padding = cast(tuple[int, ...], module.padding)
        rad = F.conv_transpose2d(radius, module.weight.abs(), None, module.stride, padding,
                                 module.output_padding, module.groups, module.dilation)
    else:
        raise TypeError(f"module: IBP supports Linear, Conv2d, ConvTranspose2d, ReLU, "
                        f"Flatten and Unflatten, got {type(module).__name__}")
    return mid - rad, mid + rad


def encoder_box(net: AnyAttractor, box: Box) -> Box:
    """Bounds of the bottleneck code over a flat input box."""
    if isinstance(net, ConvAttractorNet):
        shape = (box[0].shape[0], *IMAGE_SHAPE)
        box = box[0].reshape(shape), box[1].reshape(shape)
        for module in net.encoder:
            box = module_box(module, box)
        return box
    for layer in net.encoder:
        box = activation_box("relu", linear_box(_as_linear(layer), box))
    return box


def decoder_box(net: AnyAttractor, box: Box) -> Box:
    """Bounds of the flat reconstruction over a code box."""
    if isinstance(net, ConvAttractorNet):
        for module in net.decoder:
            box = module_box(module, box)
        lo, hi = activation_box(net.output_activation, box)
        return lo.flatten(1), hi.flatten(1)
    last = len(net.decoder) - 1
    for i, layer in enumerate(net.decoder):
        box = activation_box(net.output_activation if i == last else "relu",
                             linear_box(_as_linear(layer), box))
    return box


def margin_lower_bounds(net: AnyAttractor, code_box: Box, y: Tensor) -> Tensor:
    """Lower bounds of ``z_y - z_j`` over the bottleneck box, (N, K), +inf at j = y."""
    lo, hi = code_box
    centre, radius = (hi + lo) / 2, (hi - lo) / 2
    w, b = net.head.weight, net.head.bias
    diff_w = w[y][:, None, :] - w[None, :, :]          # (N, K, H)
    diff_b = b[y][:, None] - b[None, :]                # (N, K)
    mid = (diff_w * centre[:, None, :]).sum(-1) + diff_b
    rad = (diff_w.abs() * radius[:, None, :]).sum(-1)
    out = mid - rad
    out[torch.arange(len(y)), y] = math.inf
    return out


def _centred_box(box: Box) -> Box:
    """Bounds of ``v_i - mean(v)`` over the box, with ``v_i`` counted once."""
    lo, hi = box
    n = lo.shape[1]
    sum_lo, sum_hi = lo.sum(1, keepdim=True), hi.sum(1, keepdim=True)
    c_lo = lo * (1 - 1 / n) - (sum_hi - hi) / n
    c_hi = hi * (1 - 1 / n) - (sum_lo - lo) / n
    return c_lo, c_hi


def _product_box(a: Box, b: Box) -> Box:
    cands = torch.stack([a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]])
    return cands.amin(0), cands.amax(0)


def _square_box(a: Box) -> Box:
    lo, hi = a
    sq_hi = torch.maximum(lo.square(), hi.square())
    sq_lo = torch.where((lo <= 0) & (hi >= 0), torch.zeros_like(lo),
                        torch.minimum(lo.square(), hi.square()))
    return sq_lo, sq_hi


def pearson_bounds(x_box: Box, y_box: Box, eps: float = 1e-10) -> Box:
    """Sound (lower, upper) bounds of ``pearson_correlation(x, y)`` for x, y in the boxes,
    including its rule that a (near-)constant image scores 0."""
    n = x_box[0].shape[1]
    xc, yc = _centred_box(x_box), _centred_box(y_box)
    sxy_lo, sxy_hi = (t.sum(1) for t in _product_box(xc, yc))
    sxx_lo, sxx_hi = (t.sum(1) for t in _square_box(xc))
    syy_lo, syy_hi = (t.sum(1) for t in _square_box(yc))
    # the exact variance can only be smaller than the box's upper bound; the lower bound
    # uses the tighter of the interval bound and 0
    den_hi = torch.sqrt(sxx_hi * syy_hi)
    den_lo = torch.sqrt(sxx_lo.clamp_min(0) * syy_lo.clamp_min(0))
    safe = lambda t: torch.where(t > 0, t, torch.ones_like(t))  # noqa: E731
    lower = torch.where(sxy_lo >= 0, sxy_lo / safe(den_hi),
                        torch.where(den_lo > 0, sxy_lo / safe(den_lo),
                                    torch.full_like(sxy_lo, -1.0)))
    upper = torch.where(sxy_hi <= 0, sxy_hi / safe(den_hi),
                        torch.where(den_lo > 0, sxy_hi / safe(den_lo),
                                    torch.ones_like(sxy_hi)))
    lower, upper = lower.clamp(-1.0, 1.0), upper.clamp(-1.0, 1.0)
    degenerate = (sxx_lo <= eps * n) | (syy_lo <= eps * n)
    zero = torch.zeros_like(lower)
    lower = torch.where(degenerate, torch.minimum(lower, zero), lower)
    upper = torch.where(degenerate, torch.maximum(upper, zero), upper)
    return lower, upper


@dataclass(frozen=True)
class Certificate:
    """Per-input certified facts over the ball: (N,) tensors."""

    epsilon: float
    margin_lower: Tensor      # min over j != y of the lower bound of z_y - z_j
    score_lower: Tensor
    score_upper: Tensor

    @property
    def certified_correct(self) -> Tensor:
        return self.margin_lower > 0


@torch.no_grad()
def certify(net: AnyAttractor, x: Tensor, epsilon: float, *, y: Tensor | None = None,
            score_steps: int = 1, batch_size: int = 500) -> Certificate:
    """IBP bounds of the classifier ``F(x)`` (if labels ``y`` are given) and of
    ``r(x, G^score_steps(x))`` over the ball of radius ``epsilon`` around each input."""
    if score_steps < 1:
        raise ValueError(f"score_steps: must be >= 1, got {score_steps}")
    if y is not None and y.shape != (x.shape[0],):
        raise ValueError(f"y: expected shape ({x.shape[0]},), got {tuple(y.shape)}")
    # float64 so that rounding cannot make a bound unsound at float32's last digit
    net = copy.deepcopy(net).double().eval()
    x = x.double()
    margins, lows, highs = [], [], []
    for start in range(0, x.shape[0], batch_size):
        box = input_box(x[start:start + batch_size], epsilon)
        code = encoder_box(net, box)
        if y is not None:
            margins.append(margin_lower_bounds(net, code, y[start:start + batch_size])
                           .amin(1))
        it = decoder_box(net, code)
        for _ in range(score_steps - 1):
            it = decoder_box(net, encoder_box(net, it))
        lo, hi = pearson_bounds(box, it)
        lows.append(lo)
        highs.append(hi)
    margin = (torch.cat(margins) if margins
              else torch.full((x.shape[0],), -math.inf))
    return Certificate(float(epsilon), margin.float(), torch.cat(lows).float(),
                       torch.cat(highs).float())


def certified_metrics(id_cert: Certificate, threshold: float,
                      ood_certs: dict[str, Certificate] | None = None) -> dict[str, float]:
    """Certified accuracy / acceptance of the ID inputs at ``threshold`` and, per OOD set,
    the certified rejection rate and certified AUROC (GAUC, in [0, 1])."""
    accepted = id_cert.score_lower >= threshold
    out = {"certified_accuracy": float((accepted & id_cert.certified_correct)
                                       .float().mean()),
           "certified_correct": float(id_cert.certified_correct.float().mean()),
           "certified_accepted": float(accepted.float().mean())}
    for name, cert in (ood_certs or {}).items():
        out[f"{name}:certified_rejected"] = float((cert.score_upper < threshold)
                                                  .float().mean())
        out[f"{name}:certified_auroc"] = auroc(id_cert.score_lower, cert.score_upper)
    return out
