"""Input conversion and validation shared by every metric.

Metrics take torch tensors or numpy arrays (anything ``numpy.asarray`` understands) and
convert them once to numpy here, so that each metric states its expectations in one line
and every bad input is reported with the argument's name and what was wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray


class MetricError(ValueError):
    """A metric was given unusable input (wrong shape, NaN, empty, wrong dtype)."""


def to_numpy(x: Any, name: str) -> NDArray[Any]:
    """``x`` as a numpy array; tensors are detached and moved to the CPU first."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise MetricError(f"{name}: cannot be read as an array ({err})") from err


def _nonempty_1d(x: Any, name: str, what: str) -> NDArray[Any]:
    """``x`` as a numpy array, or MetricError unless it is 1-D and non-empty."""
    arr = to_numpy(x, name)
    if arr.ndim != 1:
        raise MetricError(f"{name}: expected a 1-D {what}, got shape {arr.shape}")
    if arr.size == 0:
        raise MetricError(f"{name}: is empty")
    return arr


def scores_1d(x: Any, name: str) -> NDArray[np.float64]:
    """A non-empty, finite 1-D float64 score vector."""
    arr = _nonempty_1d(x, name, "array of scores")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise MetricError(f"{name}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise MetricError(f"{name}: contains NaN or infinite values")
    return arr


def mask_1d(x: Any, name: str) -> NDArray[np.bool_]:
    """A non-empty 1-D boolean mask; integer/float arrays must hold only 0 and 1."""
    arr = _nonempty_1d(x, name, "boolean array")
    if arr.dtype == np.bool_:
        return arr
    if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
        raise MetricError(f"{name}: expected booleans (or only 0/1 values), got dtype "
                          f"{arr.dtype} with other values")
    return arr.astype(bool)


def labels_1d(x: Any, name: str) -> NDArray[np.int64]:
    """A non-empty 1-D vector of non-negative integer class labels."""
    arr = _nonempty_1d(x, name, "array of class labels")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or not np.equal(np.round(arr), arr).all():
            raise MetricError(f"{name}: class labels must be whole numbers")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise MetricError(f"{name}: expected integer class labels, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if (arr < 0).any():
        raise MetricError(f"{name}: class labels must be >= 0, got {int(arr.min())}")
    return arr


def predictions_1d(x: Any, name: str) -> NDArray[np.int64]:
    """Class predictions: a 1-D label vector, or (N, C) scores/logits reduced by argmax."""
    arr = to_numpy(x, name)
    if arr.ndim == 2:
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise MetricError(f"{name}: is empty, shape {arr.shape}")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise MetricError(f"{name}: contains NaN or infinite values")
        return arr.argmax(axis=1).astype(np.int64)
    return labels_1d(arr, name)


def same_length(a: NDArray[Any], a_name: str, b: NDArray[Any], b_name: str) -> None:
    """Raise if two per-input arrays do not describe the same inputs."""
    if len(a) != len(b):
        raise MetricError(f"{a_name} and {b_name} must have the same length, got "
                          f"{len(a)} and {len(b)}")
