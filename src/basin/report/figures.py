"""The standard figures of the reproduction reports (attractor paper Figs. 7, 8, 10-13 and more).

Every function builds a :class:`matplotlib.figure.Figure` directly, never through pyplot, so
no global figure registry or GUI backend is involved and nothing leaks between calls; hand the
result to :meth:`basin.report.Report.figure`, which renders and releases it.
Inputs may be numpy arrays or torch tensors. Images are NCHW (or NHW, or flat vectors whose
length is a square or three times a square) with values in [0, 1]; display clips to [0, 1],
so an adversarial image that overshoots slightly still shows correctly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from numpy.typing import NDArray

from basin.metrics import auroc, roc_curve_arrays

MAX_SCATTER_POINTS = 2000
_ID_COLOUR, _OOD_COLOUR, _BAD_COLOUR = "tab:blue", "tab:red", "tab:red"


def as_array(x: Any, name: str) -> NDArray[Any]:
    """``x`` as a numpy array (tensors detached and moved to the CPU), naming ``name`` on error."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:  # numpy has no bfloat16
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: cannot be read as an array ({err})") from err


def _scores(x: Any, name: str) -> NDArray[np.float64]:
    arr = as_array(x, name)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array of scores, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def _unflatten(arr: NDArray[Any], name: str) -> NDArray[Any]:
    """(N, D) -> (N, H, W) or (N, 3, H, W) when D is a square or three times a square."""
    d = arr.shape[1]
    side = math.isqrt(d)
    if side * side == d:
        return arr.reshape(len(arr), side, side)
    side = math.isqrt(d // 3)
    if d % 3 == 0 and 3 * side * side == d:
        return arr.reshape(len(arr), 3, side, side)
    raise ValueError(f"{name}: flat images of length {d} are neither square nor 3 x square")


def images_for_display(x: Any, name: str) -> NDArray[np.float64]:
    """A batch of images as (N, H, W) grey or (N, H, W, 3) colour floats clipped to [0, 1]."""
    arr = as_array(x, name)
    if arr.ndim == 2:
        arr = _unflatten(arr, name)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 4 and arr.shape[1] == 3:
        arr = arr.transpose(0, 2, 3, 1)
    elif arr.ndim != 3:
        raise ValueError(f"{name}: expected images shaped (N, C, H, W) with C in (1, 3), (N, H, W)"
                         f" or (N, D), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: contains no images")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}")
    return np.clip(np.nan_to_num(arr.astype(np.float64)), 0.0, 1.0)


def _stack_images(items: Sequence[Any], name: str) -> NDArray[np.float64]:
    """A sequence of single images (C,H,W), (H,W) or (D,) as a display batch."""
    if isinstance(items, np.ndarray) or hasattr(items, "detach"):
        return images_for_display(items, name)
    if len(items) == 0:
        raise ValueError(f"{name}: contains no images")
    try:
        stacked = np.stack([as_array(item, f"{name}[{i}]") for i, item in enumerate(items)])
    except ValueError as err:
        raise ValueError(f"{name}: images differ in shape ({err})") from err
    return images_for_display(stacked, name)


def _show(ax: Any, image: NDArray[np.float64]) -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _same_length(n: int, n_name: str, other: Sequence[Any] | NDArray[Any], name: str) -> None:
    if len(other) != n:
        raise ValueError(f"{name}: has {len(other)} entries, {n_name} has {n}")


def _label_text(value: Any) -> str:
    value = value.item() if hasattr(value, "item") else value
    return format(value, ".3f") if isinstance(value, float) else str(value)


def format_epsilon(eps: float) -> str:
    """``8/255`` style for multiples of 1/255 (how the papers quote budgets), else ``%g``."""
    scaled = eps * 255
    if eps > 0 and abs(scaled - round(scaled)) < 1e-6:
        return f"{round(scaled)}/255"
    return f"{eps:g}"


def reconstruction_grid(inputs: Any, reconstructions: Any, predicted: Any,
                        scores: Any, *, title: str, threshold: float | None = None,
                        max_items: int = 10) -> Figure:
    """Figs. 7/10: inputs (top row) above their reconstructions, one column per item.

    The predicted class is written above each input and the similarity below each
    reconstruction, in red when it falls under ``threshold`` (the item would be rejected).
    """
    x = images_for_display(inputs, "inputs")
    r = images_for_display(reconstructions, "reconstructions")
    s = _scores(scores, "scores")
    predicted = list(as_array(predicted, "predicted").reshape(-1))
    for other, name in ((r, "reconstructions"), (predicted, "predicted"), (s, "scores")):
        _same_length(len(x), "inputs", other, name)
    if max_items < 1:
        raise ValueError(f"max_items: expected at least 1, got {max_items}")
    n = min(len(x), max_items)
    fig = Figure(figsize=(1.15 * n + 0.6, 3.0), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        _show(axes[0, i], x[i])
        _show(axes[1, i], r[i])
        axes[0, i].set_title(f"pred {_label_text(predicted[i])}", fontsize=9)
        rejected = threshold is not None and s[i] < threshold
        axes[1, i].set_xlabel(f"{s[i]:.3f}", fontsize=9,
                              color=_BAD_COLOUR if rejected else "black")
    axes[0, 0].set_ylabel("input", fontsize=9)
    axes[1, 0].set_ylabel("reconstruction", fontsize=9)
    fig.suptitle(title, fontsize=11)
    return fig


def _subsample(values: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Evenly spaced indices (deterministic) keeping at most ``MAX_SCATTER_POINTS`` points."""
    idx = np.arange(len(values))
    if len(values) > MAX_SCATTER_POINTS:
        idx = np.unique(np.linspace(0, len(values) - 1, MAX_SCATTER_POINTS).round().astype(int))
    return idx, values[idx]


def score_scatter(id_scores: Any, ood_scores: Any, threshold: float | None, *, title: str,
                  id_label: str = "ID", ood_label: str = "OOD") -> Figure:
    """Figs. 8/13: similarity score against sample index, ID blue, OOD red, threshold black."""
    sets = ((_scores(id_scores, "id_scores"), id_label, _ID_COLOUR),
            (_scores(ood_scores, "ood_scores"), ood_label, _OOD_COLOUR))
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.subplots()
    for values, label, colour in sets:
        idx, shown = _subsample(values)
        ax.scatter(idx, shown, s=4, c=colour, alpha=0.6, linewidths=0,
                   label=f"{label} (n={len(values)})")
    if threshold is not None:
        ax.axhline(threshold, color="black", linewidth=1.5, label=f"threshold {threshold:.3g}")
    ax.set_xlabel("sample index")
    ax.set_ylabel("similarity score")
    ax.set_title(title)
    ax.legend(loc="best", markerscale=3, fontsize=9)
    return fig


def score_histograms(scores: Mapping[str, Any], threshold: float | None = None, *, title: str,
                     xlabel: str = "score") -> Figure:
    """Overlaid, density-normalised histograms on shared bins (sets may differ in size)."""
    if not scores:
        raise ValueError("scores: expected at least one named score set")
    arrays = {name: _scores(v, f"scores[{name!r}]") for name, v in scores.items()}
    pooled = np.concatenate(list(arrays.values()))
    edges = np.histogram_bin_edges(pooled, bins=min(50, max(10, int(np.sqrt(len(pooled))))))
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.subplots()
    for name, values in arrays.items():
        ax.hist(values, bins=list(edges), density=True, alpha=0.45, histtype="stepfilled",
                label=f"{name} (n={len(values)})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linewidth=1.5, label=f"threshold {threshold:.3g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=9)
    return fig


def iteration_strip(trajectory: Sequence[Any], *, title: str,
                    labels: Sequence[str] | None = None) -> Figure:
    """Fig. 11: one image and its successive iterates through the network, left to right."""
    images = _stack_images(trajectory, "trajectory")
    if labels is None:
        labels = ["input", *(f"iteration {i}" for i in range(1, len(images)))]
    _same_length(len(images), "trajectory", labels, "labels")
    fig = Figure(figsize=(1.4 * len(images) + 0.4, 2.2), layout="constrained")
    for i, (ax, image) in enumerate(zip(fig.subplots(1, len(images), squeeze=False)[0], images,
                                        strict=True)):
        _show(ax, image)
        ax.set_title(str(labels[i]), fontsize=9)
    fig.suptitle(title, fontsize=11)
    return fig


_PANEL_KEYS = ("inputs", "reconstructions", "predicted", "scores")


def perturbation_panel(rows: Mapping[str, Mapping[str, Any]], epsilons: Sequence[float], *,
                       title: str) -> Figure:
    """Fig. 12: per network, the perturbed input and its reconstruction at every epsilon.

    ``rows`` maps a network name (e.g. ``"baseline"``, ``"attractor"``) to a dict with one
    entry per epsilon under each of ``inputs`` (images), ``reconstructions`` (images),
    ``predicted`` (classes) and ``scores`` (input/reconstruction correlation).
    """
    if not rows:
        raise ValueError("rows: expected at least one network")
    eps = [float(e) for e in epsilons]
    if not eps:
        raise ValueError("epsilons: expected at least one value")
    fig = Figure(figsize=(1.3 * len(eps) + 1.2, 2.6 * len(rows)), layout="constrained")
    axes = fig.subplots(2 * len(rows), len(eps), squeeze=False)
    for g, (network, data) in enumerate(rows.items()):
        missing = [k for k in _PANEL_KEYS if k not in data]
        if missing:
            raise ValueError(f"rows[{network!r}]: missing {missing} (needs {list(_PANEL_KEYS)})")
        x = _stack_images(data["inputs"], f"rows[{network!r}]['inputs']")
        r = _stack_images(data["reconstructions"], f"rows[{network!r}]['reconstructions']")
        predicted = list(as_array(data["predicted"], f"rows[{network!r}]['predicted']")
                         .reshape(-1))
        s = _scores(data["scores"], f"rows[{network!r}]['scores']")
        panels: tuple[Sequence[Any] | NDArray[Any], ...] = (x, r, predicted, s)
        for key, values in zip(_PANEL_KEYS, panels, strict=True):
            _same_length(len(eps), "epsilons", values, f"rows[{network!r}][{key!r}]")
        for j, e in enumerate(eps):
            top, bottom = axes[2 * g, j], axes[2 * g + 1, j]
            _show(top, x[j])
            _show(bottom, r[j])
            top.set_title(f"ε={format_epsilon(e)}\npred {_label_text(predicted[j])}",
                          fontsize=8)
            bottom.set_xlabel(f"r = {s[j]:.3f}", fontsize=8)
        axes[2 * g, 0].set_ylabel(f"{network}\ninput", fontsize=9)
        axes[2 * g + 1, 0].set_ylabel(f"{network}\nreconstruction", fontsize=9)
    fig.suptitle(title, fontsize=11)
    return fig


def roc_curves(curves: Mapping[str, tuple[Any, Any]], *, title: str) -> Figure:
    """ROC curves (ID positive), one per named detector, with the AUROC in the legend."""
    if not curves:
        raise ValueError("curves: expected at least one named (id_scores, ood_scores) pair")
    fig = Figure(figsize=(5.5, 5.0), layout="constrained")
    ax = fig.subplots()
    for name, pair in curves.items():
        if len(pair) != 2:
            raise ValueError(f"curves[{name!r}]: expected an (id_scores, ood_scores) pair")
        id_s = _scores(pair[0], f"curves[{name!r}][0] (id_scores)")
        ood_s = _scores(pair[1], f"curves[{name!r}][1] (ood_scores)")
        fpr, tpr, _ = roc_curve_arrays(id_s, ood_s)
        ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} (AUROC={auroc(id_s, ood_s):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (OOD accepted)")
    ax.set_ylabel("true positive rate (ID accepted)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=9)
    return fig


def line_plot(x: Sequence[float], series: Mapping[str, Sequence[float]], *, title: str,
              xlabel: str, ylabel: str, percent: bool = False,
              xticklabels: Sequence[str] | None = None) -> Figure:
    """Named series against ``x`` (e.g. accuracy vs epsilon); NaN leaves a gap.

    ``percent=True`` means the values are fractions in [0, 1], shown as percentages.
    """
    xs = _scores(x, "x")
    if not series:
        raise ValueError("series: expected at least one named series")
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.subplots()
    for name, values in series.items():
        ys = as_array(values, f"series[{name!r}]").astype(np.float64).reshape(-1)
        _same_length(len(xs), "x", ys, f"series[{name!r}]")
        ax.plot(xs, ys, marker="o", linewidth=1.5, label=str(name))
    if xticklabels is not None:
        _same_length(len(xs), "x", xticklabels, "xticklabels")
        ax.set_xticks(xs, [str(label) for label in xticklabels])
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return fig


def image_grid(images: Any, labels: Sequence[Any] | None = None, *, title: str,
               ncols: int = 8, max_items: int = 64) -> Figure:
    """Example images (grey or colour) with an optional label each, e.g. their scores."""
    imgs = images_for_display(images, "images")
    if labels is not None:
        _same_length(len(imgs), "images", labels, "labels")
    if ncols < 1 or max_items < 1:
        raise ValueError(f"ncols/max_items: expected at least 1, got {ncols}/{max_items}")
    n = min(len(imgs), max_items)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(1.25 * ncols + 0.3, 1.4 * nrows + 0.5), layout="constrained")
    for i in range(n):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        _show(ax, imgs[i])
        if labels is not None:
            ax.set_title(_label_text(labels[i]), fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig
