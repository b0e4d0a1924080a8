"""What the audit is given, brought to one form: labelled data sets and a thresholded detector.

Users arrive with tensors, ``(x, y)`` tuples, basin :class:`~basin.data.ImageDataset` objects
or ``{name: data}`` dicts, and with a basin :class:`~basin.detectors.Detector` or a bare
callable ``x -> score``. Normalising them here keeps :mod:`basin.robustness.audit` about the
measurement, and wrapping every detector in :class:`ScoreDetector` lets the audit set its
own threshold without touching the user's detector object.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from basin.data import ImageDataset
from basin.detectors import Detector
from basin.models.attractor import check_images


@dataclass(frozen=True)
class Data:
    """One named data set: images ``x`` in [0, 1] and integer labels ``y`` (None for OOD)."""

    name: str
    x: Tensor
    y: Tensor | None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, n: int | None, seed: int) -> Data:
        """The first ``n`` of a ``seed``-ed permutation in original order, as
        :meth:`ImageDataset.subset` picks them (so audits and reproductions share inputs)."""
        if n is None or n >= len(self):
            return self
        chosen = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        chosen = chosen[:n].sort().values
        return Data(self.name, self.x[chosen], None if self.y is None else self.y[chosen])


def as_data(obj: Any, name: str | None, arg: str, *, need_labels: bool,
            default: str = "data") -> Data:
    """One data set from a tensor, an ``(x,)``/``(x, y)`` tuple or an ImageDataset, called
    ``name`` (a dict key), else the ImageDataset's own name, else ``default``."""
    y: Tensor | None
    if isinstance(obj, ImageDataset):
        x, y, name = obj.images, obj.labels, name or obj.name
    elif isinstance(obj, Tensor):
        x, y = obj, None
    elif isinstance(obj, tuple | list) and len(obj) in (1, 2):
        x, y = obj[0], (obj[1] if len(obj) == 2 else None)
    else:
        raise ValueError(f"{arg}: expected a tensor, an (x, y) tuple, a basin ImageDataset or "
                         f"a {{name: data}} dict, got {type(obj).__name__}")
    if not isinstance(x, Tensor):
        raise ValueError(f"{arg}: images must be a torch.Tensor, got {type(x).__name__}")
    check_images(x, arg)
    if x.shape[0] == 0:
        raise ValueError(f"{arg}: is empty")
    if y is not None:
        if not isinstance(y, Tensor) or y.is_floating_point() or y.shape != (x.shape[0],):
            got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"{arg}: labels must be an integer tensor of shape "
                             f"({x.shape[0]},), got {got}")
        y = y.long()
    elif need_labels:
        raise ValueError(f"{arg}: in-distribution data needs labels; pass (x, y)")
    return Data(name or default, x.detach(), y)


def as_data_sets(obj: Any, default_name: str, arg: str, *, need_labels: bool) -> list[Data]:
    """Every data set in ``obj`` (a ``{name: data}`` dict or a single data set)."""
    if isinstance(obj, Mapping):
        if not obj:
            raise ValueError(f"{arg}: the dict is empty")
        return [as_data(v, str(k), f"{arg}[{k!r}]", need_labels=need_labels)
                for k, v in obj.items()]
    return [as_data(obj, None, arg, need_labels=need_labels, default=default_name)]


class ScoreDetector(Detector):
    """A detector given as any ``x -> score`` callable (or a basin Detector), with its own
    threshold, so that calibrating in the audit never changes the caller's detector."""

    name: ClassVar[str] = "score"

    def __init__(self, score_fn: Callable[[Tensor], Tensor], threshold: float | None = None,
                 label: str = "score") -> None:
        super().__init__(threshold)
        if not callable(score_fn):
            raise ValueError(f"detector: expected a basin Detector or a callable x -> score, "
                             f"got {type(score_fn).__name__}")
        self.score_fn = score_fn
        self.label = label

    def score(self, x: Tensor) -> Tensor:
        score = self.score_fn(x)
        if not isinstance(score, Tensor) or score.shape != (x.shape[0],):
            got = tuple(score.shape) if isinstance(score, Tensor) else type(score).__name__
            raise ValueError(f"detector {self.label}: score must have shape ({x.shape[0]},), "
                             f"got {got}")
        return score


def as_score_detector(detector: Any) -> ScoreDetector:
    """Wrap a basin Detector (its ``score``) or a callable in a :class:`ScoreDetector`."""
    if isinstance(detector, Detector):
        return ScoreDetector(detector.score, label=detector.name)
    if callable(detector):
        return ScoreDetector(detector, label=getattr(detector, "__name__", "callable"))
    raise ValueError(f"detector: expected a basin Detector or a callable x -> score, got "
                     f"{type(detector).__name__}")


def derive_seed(seed: int, *parts: Any) -> int:
    """A 31-bit seed from ``seed`` and ``parts`` (epsilon, attack, data set, batch), stable
    across runs and independent of the order in which the batches are processed."""
    text = "|".join([str(int(seed))] + [repr(p) for p in parts])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def format_epsilon(epsilon: float) -> str:
    """``8/255`` when epsilon is a whole number of 1/255 steps, else ``repr``-exact text."""
    k = epsilon * 255
    return f"{round(k)}/255" if math.isclose(k, round(k), abs_tol=1e-9) else repr(epsilon)
