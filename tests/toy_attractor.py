"""A small attractor network trained for a second on synthetic 4x4 "digits", for the tests of
the evaluation runner and the audit: three prototypes plus noise, against uniform-noise OOD
images. Returns the network, the ID and OOD test sets and the median clean ID score."""

from __future__ import annotations

import torch

from basin.data import ImageDataset
from basin.detectors import PearsonDetector
from basin.models import AttractorNet
from basin.training.data import TrainData, toy_split


def toy_train_data(n: int = 300) -> TrainData:
    """The built-in 784-pixel toy problem as train (``n`` points) / val / test splits, for
    the robust-training tests."""
    return TrainData(*toy_split("train", 784, 10, n=n), *toy_split("val", 784, 10),
                     *toy_split("test", 784, 10))


def images(name: str, x: torch.Tensor, y: torch.Tensor) -> ImageDataset:
    return ImageDataset(name, "test", x.reshape(-1, 1, 4, 4).float(), y, ("a", "b", "c"), None)


def toy_attractor_system(n: int, *, seed: int, noise: float, steps: int, threshold_on: str
                         ) -> tuple[AttractorNet, ImageDataset, ImageDataset, float]:
    """``n`` ID and ``n`` OOD test inputs; the network trains on ``n`` further ID inputs.

    ``threshold_on``: ``"test"`` or ``"train"``, the ID inputs whose median score is the
    threshold (the honesty tests want many test inputs near it).
    """
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(3, 16, generator=generator)
    y = torch.randint(0, 3, (2 * n,), generator=generator)
    x = (prototypes[y] + noise * torch.randn(2 * n, 16, generator=generator)).clamp(0, 1)
    torch.manual_seed(seed)
    net = AttractorNet((16, 12, 6, 12, 16), n_classes=3, output_activation="sigmoid")
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = (net.reconstruct(x[n:]) - x[n:]).square().mean() + \
            torch.nn.functional.cross_entropy(net.logits(x[n:]), y[n:])
        loss.backward()
        optimiser.step()
    net.eval()
    id_data = images("id", x[:n], y[:n])
    ood_data = images("ood", torch.rand(n, 16, generator=generator),
                      torch.zeros(n, dtype=torch.int64))
    reference = x[:n] if threshold_on == "test" else x[n:]
    threshold = float(PearsonDetector(net).score_batches(reference.reshape(-1, 1, 4, 4))
                      .median())
    return net, id_data, ood_data, threshold
