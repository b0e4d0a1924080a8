"""The reject-option classifier: rejected inputs get -1, accepted ones the classifier's argmax."""

from __future__ import annotations

import pytest
import torch

from basin.detectors import (
    Detector,
    DetectorError,
    PearsonDetector,
    RejectOptionClassifier,
    pearson_correlation,
)
from basin.models.attractor import AttractorNet


class FirstPixel(Detector):
    """Score = the first pixel: which inputs are accepted is known by construction."""

    name = "first-pixel"

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), -1)[:, 0]


class ToyModel:
    """F(x) = softmax(x W) on 4 pixels and 3 classes; G reverses the pixel order."""

    input_dim = 4

    def __init__(self) -> None:
        self.weight = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0],
                                    [0.0, 0.0, 3.0], [0.0, 0.0, 0.0]])

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x.reshape(len(x), -1) @ self.weight, dim=1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)


def toy_inputs() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(40, 4, generator=gen)


def test_rejects_exactly_the_inputs_below_the_threshold():
    x = toy_inputs()
    model = ToyModel()
    result = RejectOptionClassifier(model, FirstPixel(threshold=0.5)).predict(x, batch_size=7)
    accepted = x[:, 0] >= 0.5
    assert 5 < accepted.sum() < 35  # both outcomes occur
    assert torch.equal(result.accepted, accepted)
    assert torch.equal(result.scores, x[:, 0])
    argmax = (x @ model.weight).argmax(dim=1)
    assert torch.equal(result.predicted, argmax)
    assert torch.equal(result.labels, torch.where(accepted, argmax, torch.tensor(-1)))
    assert result.labels.dtype == torch.int64
    torch.testing.assert_close(result.probabilities, model.probabilities(x))
    assert result.coverage == pytest.approx(accepted.double().mean().item())
    assert result.threshold == 0.5


def test_iterate_mode_classifies_the_reconstruction():
    x = toy_inputs()
    model = ToyModel()
    one = RejectOptionClassifier(model, FirstPixel(threshold=0.5), classify="iterate",
                                 steps=1).predict(x)
    # G reverses the pixels, so F(G(x)) looks at x[:, 3], x[:, 2], x[:, 1] for the 3 classes.
    flipped = (x.flip(-1) @ model.weight).argmax(dim=1)
    assert not torch.equal(flipped, (x @ model.weight).argmax(dim=1))
    assert torch.equal(one.predicted, flipped)
    assert torch.equal(one.labels, torch.where(x[:, 0] >= 0.5, flipped, torch.tensor(-1)))
    # The detector still scores the input itself, not its reconstruction.
    assert torch.equal(one.scores, x[:, 0])
    two = RejectOptionClassifier(model, FirstPixel(threshold=0.5), classify="iterate",
                                 steps=2).predict(x)
    assert torch.equal(two.predicted, (x @ model.weight).argmax(dim=1))


def test_with_an_attractor_net_and_the_pearson_detector():
    torch.manual_seed(1)
    net = AttractorNet((16, 12, 6, 12, 16), n_classes=3, output_activation="clamp")
    x = torch.rand(30, 1, 4, 4)
    detector = PearsonDetector(net, steps=2, threshold=None)
    detector.calibrate(x, acceptance=0.6)
    for classify in ("input", "iterate"):
        result = RejectOptionClassifier(net, detector, classify=classify, steps=3).predict(x)
        with torch.no_grad():
            scores = pearson_correlation(x, net.reconstruct(net.reconstruct(x)))
            seen = x
            if classify == "iterate":
                for _ in range(3):
                    seen = net.reconstruct(seen)
            argmax = net.logits(seen).argmax(dim=1)
        torch.testing.assert_close(result.scores, scores)
        assert result.accepted.sum().item() == 18
        assert torch.equal(result.labels, torch.where(scores >= detector.threshold, argmax,
                                                      torch.tensor(-1)))


@pytest.mark.parametrize("bad, message", [
    (torch.rand(3, 5), "features"),
    (torch.rand(3, 1, 2, 3), "features"),
    (torch.tensor([[0.1, float("nan"), 0.2, 0.3]]), "NaN"),
    (torch.tensor([[0.1, 1.5, 0.2, 0.3]]), r"\[0, 1\]"),
    (torch.tensor([[-0.1, 0.5, 0.2, 0.3]]), r"\[0, 1\]"),
    (torch.rand(3, 2, 2), "shape"),
    (torch.ones(3, 4, dtype=torch.int64), "floating"),
    (torch.rand(0, 4), "empty"),
])
def test_bad_inputs_raise(bad, message):
    classifier = RejectOptionClassifier(ToyModel(), FirstPixel(threshold=0.5))
    with pytest.raises(ValueError, match=message):
        classifier.predict(bad)


def test_bad_configuration_raises():
    model, detector = ToyModel(), FirstPixel(threshold=0.5)
    with pytest.raises(ValueError, match="classify"):
        RejectOptionClassifier(model, detector, classify="output")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        RejectOptionClassifier(model, detector, classify="iterate", steps=-1)
    with pytest.raises(ValueError, match="Detector"):
        RejectOptionClassifier(model, object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="probabilities"):
        RejectOptionClassifier(object(), detector)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        RejectOptionClassifier(model, detector).predict(toy_inputs(), batch_size=0)
    with pytest.raises(DetectorError, match="threshold"):
        RejectOptionClassifier(model, FirstPixel()).predict(toy_inputs())
