"""Plain pixel-reconstruction autoencoder detector ("Simple Autoencoder" of Mulé & Shaner).

The baseline row of the reproduced paper's Table 1: a convolutional autoencoder trained with
mean squared error to reconstruct in-distribution images, scored by its reconstruction error.
basin's convention is higher = more in-distribution, so

    score(x) = -mean_{c,h,w} (x - AE(x))^2

The network is deliberately small (two stride-2 convolutions down to a 16 x H/4 x W/4 code,
two transposed convolutions back, sigmoid output for images in [0, 1]); H and W must be
divisible by 4 (CIFAR-10: 3 x 32 x 32 -> 16 x 8 x 8, a third of the input size). Training:
Adam, a few epochs, seeded. Known weakness, which the paper also reports: such autoencoders
often reconstruct simple OOD images well, so the score is a weak OOD detector.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from basin.detectors.base import Detector, DetectorError
from basin.models.attractor import check_images
from basin.utils.io import (
    CheckpointError,
    atomic_write_json,
    load_state_dict_strict,
    load_tensors,
    read_json,
    save_tensors,
)


class ConvAutoencoder(nn.Module):
    """Conv encoder (C -> 32 -> 64 -> code) and mirrored transposed-conv decoder."""

    def __init__(self, channels: int = 3, code_channels: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, code_channels, 3, padding=1))
        self.decoder = nn.Sequential(
            nn.Conv2d(code_channels, 64, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class PixelAutoencoderDetector(Detector):
    """Negative per-image reconstruction MSE of a small conv autoencoder.

    Args:
        channels: image channels (3 for CIFAR-10).
        code_channels: channels of the H/4 x W/4 bottleneck.
        epochs, batch_size, lr, seed: Adam training in :meth:`fit`.
        threshold: optional fixed acceptance threshold.
    """

    name: ClassVar[str] = "pixel_autoencoder"

    def __init__(self, channels: int = 3, code_channels: int = 16, epochs: int = 5,
                 batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                 threshold: float | None = None) -> None:
        super().__init__(threshold)
        if channels < 1 or code_channels < 1 or epochs < 1 or batch_size < 1 or not lr > 0:
            raise DetectorError(f"channels, code_channels, epochs, batch_size, lr: got "
                                f"{channels}, {code_channels}, {epochs}, {batch_size}, {lr}")
        self.channels, self.code_channels = channels, code_channels
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.autoencoder = ConvAutoencoder(channels, code_channels)
        self.loss_history: list[float] = []

    def _check(self, x: Tensor, name: str, full: bool) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[2] % 4 or x.shape[3] % 4:
            raise DetectorError(f"{name}: expected images (N, {self.channels}, H, W) with H, W "
                                f"divisible by 4, got {tuple(x.shape)}")
        if full:
            check_images(x, name)

    def fit(self, x: Tensor, y: Tensor | None = None) -> Self:
        """Train the autoencoder on ID training images ``x`` in [0, 1] (labels unused)."""
        self._check(x, "x", full=True)
        device = x.device
        ae = self.autoencoder.to(device).train()
        opt = torch.optim.Adam(ae.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        self.loss_history = []
        for _ in range(self.epochs):
            total = 0.0
            for idx in torch.randperm(len(x), generator=gen).split(self.batch_size):
                batch = x[idx.to(device)]
                loss = F.mse_loss(ae(batch), batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            self.loss_history.append(total / len(x))
        ae.eval().requires_grad_(False)
        return self

    def reconstruct(self, x: Tensor) -> Tensor:
        self._check(x, "x", full=False)
        return self.autoencoder.to(x.device)(x)

    def score(self, x: Tensor) -> Tensor:
        return -(x - self.reconstruct(x)).pow(2).flatten(1).mean(1)

    def save(self, folder: str | Path) -> None:
        """Write ``autoencoder.safetensors`` and ``pixel_autoencoder.json``."""
        folder = Path(folder)
        save_tensors(folder / "autoencoder.safetensors", self.autoencoder.state_dict())
        atomic_write_json(folder / "pixel_autoencoder.json", {
            "channels": self.channels, "code_channels": self.code_channels,
            "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
            "seed": self.seed, "loss_history": self.loss_history})

    @classmethod
    def load(cls, folder: str | Path) -> PixelAutoencoderDetector:
        folder = Path(folder)
        meta = read_json(folder / "pixel_autoencoder.json")
        try:
            history = meta.pop("loss_history", [])
            det = cls(**meta)
        except (TypeError, DetectorError) as exc:
            raise CheckpointError(f"{folder / 'pixel_autoencoder.json'}: malformed ({exc})"
                                  ) from exc
        load_state_dict_strict(det.autoencoder, load_tensors(folder / "autoencoder.safetensors"),
                               folder / "autoencoder.safetensors")
        det.autoencoder.eval().requires_grad_(False)
        det.loss_history = history
        return det
