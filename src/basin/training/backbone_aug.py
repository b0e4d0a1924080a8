"""Views of CIFAR images for backbone training and testing: augmentation, TTA, precision.

Training augmentation (airbench94's): a horizontal flip and a random translation of up to
``translate`` pixels with reflection padding. The flip *alternates*: each training image gets
one seeded random bit, and epoch ``e`` shows it flipped iff ``bit XOR (e odd)``, so every
image is seen in both orientations over any two consecutive epochs (Jordan 2024 measured
this to save ~10% of the epochs against independent random flips).

Test-time augmentation (TTA) averages logits over views: level 0 the image itself; level 1
the image and its mirror; level 2 (airbench94's) half level 1 on the image, and a quarter
each level 1 on the image translated by one pixel up-left and down-right (reflection
padding): six forward passes. The detectors use the plain forward (level 0).

Reduced precision: ``precision`` is ``"auto"``, ``"bf16"`` or ``"fp32"``; ``auto`` picks bf16
autocast where the hardware runs it natively (CUDA with bf16 support; CPUs with AVX-512 BF16
or AMX) and fp32 elsewhere. Weights and the loss stay fp32 either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

PRECISIONS = ("auto", "bf16", "fp32")
TTA_LEVELS = (0, 1, 2)


def cpu_has_fast_bf16() -> bool:
    """True when this CPU has bf16 instructions (AVX-512 BF16 or AMX) that oneDNN uses."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        check = getattr(torch.cpu, name, None)
        if check is not None and check():
            return True
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` means on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return "fp32"
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        supported = cpu_has_fast_bf16() or precision == "bf16"
    else:
        supported = False
    if precision == "bf16" and not supported:
        raise ValueError(f"precision: bf16 is not supported on device {device}; use fp32")
    return "bf16" if supported else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    """An autocast context for a *resolved* precision (``"bf16"`` or ``"fp32"``)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def flip_bits(n: int, generator: torch.Generator) -> Tensor:
    """One random bit per training image: its orientation in even epochs."""
    return torch.randint(0, 2, (n,), generator=generator, dtype=torch.bool)


def translate_batch(x: Tensor, translate: int, generator: torch.Generator) -> Tensor:
    """Each image shifted by its own random (dy, dx) in [-translate, translate]^2."""
    if translate == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (translate,) * 4, mode="reflect")
    offsets = torch.randint(0, 2 * translate + 1, (2, n), generator=generator).to(x.device)
    rows = offsets[0][:, None] + torch.arange(h, device=x.device)
    cols = offsets[1][:, None] + torch.arange(w, device=x.device)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def augment_batch(x: Tensor, flips: Tensor | None, epoch: int, translate: int,
                  generator: torch.Generator) -> Tensor:
    """Alternating flip (``flips``: the batch's bits; None: no flip), then translation."""
    if flips is not None:
        flip = flips.to(x.device) ^ bool(epoch % 2)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return translate_batch(x, translate, generator)


def _shift_one(x: Tensor, dy: int, dx: int) -> Tensor:
    """Translate by one pixel (content moves by -dy, -dx), reflection padding."""
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[-2:]
    return padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def tta_logits(logits_fn: Callable[[Tensor], Tensor], x: Tensor, level: int) -> Tensor:
    """Logits of ``x`` averaged over the TTA views of ``level`` (0, 1 or 2)."""
    if level not in TTA_LEVELS:
        raise ValueError(f"tta_level: expected one of {TTA_LEVELS}, got {level!r}")

    def mirror(v: Tensor) -> Tensor:
        return 0.5 * (logits_fn(v).float() + logits_fn(v.flip(-1)).float())

    if level == 0:
        return logits_fn(x).float()
    if level == 1:
        return mirror(x)
    shifted = 0.5 * (mirror(_shift_one(x, -1, -1)) + mirror(_shift_one(x, 1, 1)))
    return 0.5 * mirror(x) + 0.5 * shifted


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: Tensor, *, tta_level: int = 0,
                   batch_size: int = 1000, device: torch.device | None = None,
                   precision: str = "fp32", channels_last: bool = False) -> Tensor:
    """fp32 logits of ``images`` on CPU, in eval mode, in batches, with TTA ``tta_level``.

    ``precision`` must be resolved (:func:`resolve_precision`); the model's train/eval mode is
    restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                out.append(tta_logits(model, x, tta_level).cpu())
    finally:
        model.train(was_training)
    if not out:
        raise ValueError("images: cannot predict an empty set")
    return torch.cat(out)


def accuracy(model: torch.nn.Module, images: Tensor, labels: Tensor, **kwargs: object) -> float:
    """Fraction of ``images`` whose arg-max logit (:func:`predict_logits`) is the label."""
    logits = predict_logits(model, images, **kwargs)  # type: ignore[arg-type]
    return float((logits.argmax(1) == labels.cpu()).float().mean())
