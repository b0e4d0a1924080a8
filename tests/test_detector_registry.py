"""Every detector in ``DETECTORS`` honours the shared API contract on one toy problem.

Toy problem: 1x8x8 images of three classes (a bright square in one of three places plus
noise) as in-distribution, uniform noise as OOD. Each detector is built and fitted by a
factory below; a detector added to ``DETECTORS`` without a factory fails the first test.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from basin.detectors import (
    DETECTORS,
    CombinedDetector,
    Detector,
    EnergyDetector,
    KNNDetector,
    MahalanobisDetector,
    MSPDetector,
    ODINDetector,
    PearsonDetector,
    PixelAutoencoderDetector,
    RejectOptionClassifier,
    ZhouDetector,
    ZhouFaithfulDetector,
    detector_class,
)
from basin.models.feature_classifier import (
    LinearHeadClassifier,
    LogitsClassifier,
    as_feature_classifier,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_images(n_per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = 0.15 * torch.rand(len(y), 1, 8, 8, generator=gen)
    for c, (r, k) in enumerate([(0, 0), (0, 4), (4, 2)]):
        x[y == c, :, r:r + 4, k:k + 4] += 0.8
    return x.clamp(0, 1), y


def uniform_noise(n: int, seed: int) -> Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


class Projector(nn.Module):
    """G(x) = projection onto the mean + top principal directions of the ID training data."""

    def __init__(self, x: Tensor, k: int = 3) -> None:
        super().__init__()
        flat = x.flatten(1)
        self.register_buffer("mean", flat.mean(0))
        _, _, v = torch.linalg.svd(flat - flat.mean(0), full_matrices=False)
        self.register_buffer("basis", v[:k])

    def reconstruct(self, x: Tensor) -> Tensor:
        flat = x.flatten(1) - self.mean
        return ((flat @ self.basis.T) @ self.basis + self.mean).reshape(x.shape)


@pytest.fixture(scope="module")
def problem() -> dict[str, Tensor | nn.Module]:
    torch.manual_seed(0)
    x, y = toy_images(60, seed=1)
    net = LinearHeadClassifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh()),
                               nn.Linear(16, 3))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    x_val, _ = toy_images(30, seed=2)
    x_test, y_test = toy_images(20, seed=3)
    return {"x": x, "y": y, "net": net.eval().requires_grad_(False), "x_val": x_val,
            "x_test": x_test, "y_test": y_test, "ood": uniform_noise(60, seed=4)}


def _zhou(p: dict) -> ZhouDetector:
    return ZhouDetector(p["net"], epochs=100, d2_hidden=(16, 16), lr=1e-2,
                        w_init=p["net"].head).fit(p["x"], p["y"], x_val=p["x_val"])


def _zhou_faithful(p: dict) -> ZhouFaithfulDetector:
    return ZhouFaithfulDetector(p["net"], epochs=100, d2_hidden=(16, 16), lr=1e-2).fit(
        p["x"], p["y"], x_val=p["x_val"])


FACTORIES: dict[str, Callable[[dict], Detector]] = {
    "msp": lambda p: MSPDetector(p["net"]),
    "energy": lambda p: EnergyDetector(p["net"]),
    "odin": lambda p: ODINDetector(p["net"], temperature=10.0, epsilon=0.001),
    "mahalanobis": lambda p: MahalanobisDetector(p["net"]).fit(p["x"], p["y"]),
    "knn": lambda p: KNNDetector(p["net"], k=5).fit(p["x"]),
    "zhou": _zhou,
    "zhou_faithful": _zhou_faithful,
    "combined": lambda p: CombinedDetector(_zhou(p), MSPDetector(p["net"])).fit(
        p["x"], p["y"], x_val=p["x_val"]),
    "pixel_autoencoder": lambda p: PixelAutoencoderDetector(
        channels=1, code_channels=4, epochs=30, batch_size=32, lr=3e-3).fit(p["x"]),
    "pearson": lambda p: PearsonDetector(Projector(p["x"]), steps=1, threshold=None),
}


def test_every_registered_detector_has_a_factory_and_its_own_name() -> None:
    assert set(FACTORIES) == set(DETECTORS)
    for name, cls in DETECTORS.items():
        assert cls.name == name and issubclass(cls, Detector)
        assert detector_class(name) is cls
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        detector_class("nope")


@pytest.fixture(scope="module", params=sorted(DETECTORS))
def fitted(request: pytest.FixtureRequest, problem: dict) -> Detector:
    detector = FACTORIES[request.param](problem)
    assert isinstance(detector, DETECTORS[request.param])
    return detector


def test_score_shape_and_id_scores_higher(fitted: Detector, problem: dict) -> None:
    s_id = fitted.score(problem["x_test"]).detach()
    s_ood = fitted.score(problem["ood"]).detach()
    assert s_id.shape == (len(problem["x_test"]),) and s_ood.shape == (60,)
    assert torch.isfinite(s_id).all() and torch.isfinite(s_ood).all()
    labels = [1] * len(s_id) + [0] * len(s_ood)
    auroc = roc_auc_score(labels, torch.cat([s_id, s_ood]).double().numpy())
    assert auroc > 0.9, f"{fitted.name}: AUROC {auroc:.3f} on an easy toy problem"


def test_calibrate_gives_requested_acceptance_and_predict_matches(
        fitted: Detector, problem: dict) -> None:
    x_val = problem["x_val"]
    for acceptance in (0.8, 0.95):
        threshold = fitted.calibrate(x_val, acceptance, batch_size=17)
        # scored in the calibration's batches: the threshold *is* one input's score, and
        # another batching may round that input's score to the other side of it (seen for
        # the combined detector); batch independence is checked to tolerance below
        accepted = (fitted.score_batches(x_val, 17) >= threshold).double().mean().item()
        assert acceptance <= accepted < acceptance + 2 / len(x_val)
    x = torch.cat([problem["x_test"], problem["ood"]])
    scores = fitted.score_batches(x, batch_size=25)
    torch.testing.assert_close(scores, fitted.score(x).detach(), rtol=1e-5, atol=1e-6)
    assert torch.equal(fitted.predict(x), scores >= fitted.threshold)


def test_gradients_reach_the_input(fitted: Detector, problem: dict) -> None:
    x = problem["x_test"].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fitted.score(x).sum(), x)
    assert torch.isfinite(grad).all()
    assert (grad.flatten(1).abs().sum(1) > 0).double().mean() > 0.9


def test_logits_classifier_wraps_any_logits_model(problem: dict) -> None:
    plain = nn.Sequential(nn.Flatten(), problem["net"].feature_extractor[1:], problem["net"].head)
    wrapped = as_feature_classifier(plain)
    assert isinstance(wrapped, LogitsClassifier)
    assert as_feature_classifier(problem["net"]) is problem["net"]
    x = problem["x_test"]
    torch.testing.assert_close(wrapped.logits(x), problem["net"].logits(x))
    torch.testing.assert_close(wrapped.logits_from_features(wrapped.features(x)),
                               wrapped.logits(x))
    torch.testing.assert_close(MSPDetector(wrapped).score(x), MSPDetector(problem["net"]).score(x))
    with_features = LogitsClassifier(plain, features=problem["net"].features,
                                     head=problem["net"].head)
    assert with_features.features(x).shape == (len(x), 16)
    torch.testing.assert_close(with_features(x), problem["net"].logits(x))
    with pytest.raises(TypeError, match="features, head"):
        LogitsClassifier(plain, features=problem["net"].features)
    with pytest.raises(ValueError, match="logits of shape"):
        LogitsClassifier(nn.Identity()).logits(torch.rand(2, 1, 2, 2))


def test_reject_option_classifier_over_a_plain_logits_model(problem: dict) -> None:
    plain = nn.Sequential(nn.Flatten(), problem["net"].feature_extractor[1:], problem["net"].head)
    detector = MSPDetector(problem["net"])
    detector.calibrate(problem["x_val"], 0.9)
    x = torch.cat([problem["x_test"], problem["ood"]])
    result = RejectOptionClassifier(plain, detector).predict(x, batch_size=16)
    logits = problem["net"].logits(x)
    torch.testing.assert_close(result.probabilities, torch.softmax(logits, 1))
    assert torch.equal(result.predicted, logits.argmax(1))
    expected = torch.where(detector.score(x) >= detector.threshold, logits.argmax(1), -1)
    assert torch.equal(result.labels, expected)
