"""Device selection: CUDA when available, else CPU; the same code runs on both."""

from __future__ import annotations

import torch


def resolve_device(name: str | None = None) -> torch.device:
    """Return ``torch.device(name)``, or CUDA when available and ``name`` is None/"auto"."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name!r}: not a device name ({exc})") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: CUDA is not available on this machine")
    return device
