"""The standard report figures: layout (axes, artists, labels) on tiny inputs, and clear errors."""

from __future__ import annotations

import matplotlib.colors as mcolors
import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from basin.report import figures as F


def _image_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images]


def test_reconstruction_grid_pairs_inputs_with_reconstructions() -> None:
    inputs = torch.rand(4, 1, 6, 6)
    recon = inputs.flatten(1).numpy()  # flat 36-vectors are unflattened to 6x6
    fig = F.reconstruction_grid(inputs, recon, [7, 1, 3, 9], np.array([0.9, 0.2, 0.85, 0.95]),
                                title="Fig 7", threshold=0.8, max_items=3)
    axes = _image_axes(fig)
    assert len(axes) == 6
    top = [ax for ax in axes if ax.get_title()]
    assert [ax.get_title() for ax in top] == ["pred 7", "pred 1", "pred 3"]
    bottom = [ax for ax in axes if ax.get_xlabel()]
    assert [ax.xaxis.label.get_text() for ax in bottom] == ["0.900", "0.200", "0.850"]
    colours = [mcolors.to_hex(ax.xaxis.label.get_color()) for ax in bottom]
    assert colours == ["#000000", mcolors.to_hex("tab:red"), "#000000"]
    np.testing.assert_allclose(bottom[1].images[0].get_array(), inputs[1, 0].numpy(), rtol=1e-6)
    assert fig.get_suptitle() == "Fig 7"


def test_score_scatter_subsamples_and_draws_threshold() -> None:
    rng = np.random.default_rng(0)
    fig = F.score_scatter(rng.normal(1, 0.1, 5000), torch.zeros(30), 0.8, title="Fig 8",
                          id_label="MNIST", ood_label="Fashion")
    (ax,) = fig.axes
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert [len(c.get_offsets()) for c in scatters] == [F.MAX_SCATTER_POINTS, 30]
    assert scatters[0].get_offsets()[:, 0].max() == 4999  # x keeps the original index
    assert [line.get_ydata()[0] for line in ax.get_lines()] == [0.8]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["MNIST (n=5000)", "Fashion (n=30)", "threshold 0.8"]


def test_score_histograms_share_bins_and_normalise() -> None:
    fig = F.score_histograms({"ID": np.linspace(0.5, 1.0, 100), "OOD": np.linspace(0, 0.6, 40)},
                             threshold=0.55, title="h", xlabel="similarity")
    (ax,) = fig.axes
    assert len(ax.patches) == 2
    areas = []
    for patch in ax.patches:
        xy = patch.get_path().vertices
        # Polygon area by the shoelace formula: density histograms integrate to 1.
        areas.append(0.5 * abs(np.dot(xy[:, 0], np.roll(xy[:, 1], 1))
                               - np.dot(xy[:, 1], np.roll(xy[:, 0], 1))))
    np.testing.assert_allclose(areas, [1.0, 1.0], rtol=1e-6)
    assert ax.get_xlabel() == "similarity"
    assert ax.get_lines()[0].get_xdata()[0] == 0.55


def test_iteration_strip_labels_each_iterate() -> None:
    trajectory = [torch.rand(1, 5, 5) for _ in range(4)]
    fig = F.iteration_strip(trajectory, title="Fig 11")
    assert [ax.get_title() for ax in _image_axes(fig)] == [
        "input", "iteration 1", "iteration 2", "iteration 3"]
    with pytest.raises(ValueError, match="labels: has 2 entries, trajectory has 4"):
        F.iteration_strip(trajectory, title="t", labels=["a", "b"])


def test_perturbation_panel_has_two_rows_per_network() -> None:
    eps = [0.0, 8 / 255, 0.5]
    row = {"inputs": torch.rand(3, 1, 4, 4), "reconstructions": np.random.rand(3, 16),
           "predicted": [5, 5, 3], "scores": [0.99, 0.9, 0.4]}
    fig = F.perturbation_panel({"baseline": row, "attractor": row}, eps, title="Fig 12")
    axes = _image_axes(fig)
    assert len(axes) == 12
    titles = [ax.get_title() for ax in axes if ax.get_title()]
    assert titles[:3] == ["ε=0\npred 5", "ε=8/255\npred 5", "ε=0.5\npred 3"]
    assert [ax.get_xlabel() for ax in axes if ax.get_xlabel()][:3] == [
        "r = 0.990", "r = 0.900", "r = 0.400"]
    assert axes[3 * 2].get_ylabel() == "attractor\ninput"
    bad = dict(row, scores=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"rows\['attractor'\]\['scores'\]: has 2 entries"):
        F.perturbation_panel({"baseline": row, "attractor": bad}, eps, title="t")
    with pytest.raises(ValueError, match=r"rows\['baseline'\]: missing \['predicted'\]"):
        F.perturbation_panel({"baseline": {k: v for k, v in row.items() if k != "predicted"}},
                             eps, title="t")


def test_roc_curves_report_auroc_in_legend() -> None:
    fig = F.roc_curves({"separated": (np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.2])),
                        "reversed": (torch.tensor([0.0, 0.1]), torch.tensor([0.5, 0.6]))},
                       title="ROC")
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["separated (AUROC=1.000)", "reversed (AUROC=0.000)", "chance"]
    fpr, tpr = ax.get_lines()[0].get_data()
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"curves\['x'\]\[1\] \(ood_scores\)"):
        F.roc_curves({"x": (np.ones(3), np.array([np.nan]))}, title="t")


def test_line_plot_series_ticks_and_percent() -> None:
    x = [0.0, 8 / 255, 20 / 255]
    fig = F.line_plot(x, {"baseline": [0.98, 0.5, 0.27], "attractor": [0.97, 0.9, 0.87]},
                      title="sweep", xlabel="epsilon", ylabel="accuracy", percent=True,
                      xticklabels=["0", "8/255", "20/255"])
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == ["baseline", "attractor"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [0.97, 0.9, 0.87])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "8/255", "20/255"]
    assert ax.yaxis.get_major_formatter()(0.5, 0) == "50%"
    with pytest.raises(ValueError, match=r"series\['attractor'\]: has 2 entries, x has 3"):
        F.line_plot(x, {"attractor": [0.1, 0.2]}, title="t", xlabel="x", ylabel="y")
    with pytest.raises(ValueError, match="xticklabels: has 1 entries"):
        F.line_plot(x, {"a": [1, 2, 3]}, title="t", xlabel="x", ylabel="y", xticklabels=["0"])


def test_image_grid_handles_grey_and_colour() -> None:
    grey = F.image_grid(torch.rand(5, 1, 4, 4), [0.123, 0.5, 0.9, 0.1, 0.2], title="g", ncols=2)
    axes = _image_axes(grey)
    assert len(axes) == 5 and len(grey.axes) == 5
    assert axes[0].get_title() == "0.123"
    assert axes[0].images[0].get_array().shape == (4, 4)
    colour = np.zeros((2, 3, 4, 5))
    colour[:, 0] = 1.0  # pure red, channels-first in, channels-last for display
    axes = _image_axes(F.image_grid(colour, title="c"))
    np.testing.assert_array_equal(axes[1].images[0].get_array()[0, 0], [1.0, 0.0, 0.0])
    assert len(F.image_grid(torch.rand(20, 1, 2, 2), title="cap", max_items=6).axes) == 6


@pytest.mark.parametrize(("call", "message"), [
    (lambda: F.reconstruction_grid(np.zeros((3, 4, 4)), np.zeros((2, 4, 4)), [1, 2, 3],
                                   [0.1, 0.2, 0.3], title="t"),
     "reconstructions: has 2 entries, inputs has 3"),
    (lambda: F.reconstruction_grid(np.zeros((3, 4, 4)), np.zeros((3, 4, 4)), [1, 2],
                                   [0.1, 0.2, 0.3], title="t"),
     "predicted: has 2 entries, inputs has 3"),
    (lambda: F.score_scatter([], [1.0], 0.5, title="t"), "id_scores: expected a non-empty"),
    (lambda: F.score_histograms({}, title="t"), "scores: expected at least one"),
    (lambda: F.image_grid(np.zeros((2, 2, 4, 4)), title="t"), r"images: expected images shaped"),
    (lambda: F.image_grid(np.zeros((2, 10)), title="t"), "images: flat images of length 10"),
    (lambda: F.image_grid(np.zeros((2, 4, 4)), ["a"], title="t"), "labels: has 1 entries"),
])
def test_bad_inputs_raise_value_error_naming_the_argument(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_format_epsilon() -> None:
    assert [F.format_epsilon(e) for e in (0.0, 8 / 255, 1.0, 0.1)] == [
        "0", "8/255", "255/255", "0.1"]
