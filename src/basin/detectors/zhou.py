"""Zhou's feature-reconstruction OOD detector (Algorithm 1 of the reproduced paper).

Y. Zhou, "Rethinking Reconstruction Autoencoder-Based Out-of-Distribution Detection", CVPR
2022, as given in Algorithm 1 of Mulé & Shaner. The backbone M is frozen; v = M.features(x)
is its penultimate ("AV") feature. Trained on the ID training split, jointly:

    W  : nn.Linear(D, C)            logits  z = W v  (with a bias, as in Zhou's code)
    D1 : C -> h -> h -> D   (Swish)  reconstructs v          from z
    D2 : C -> h' -> h'' -> C (Swish) reconstructs z / T      from softmax(z / T),   T = 100
    L  = L1 + L2 + lambda * CE(z, y)

with the reconstruction losses taken as squared errors, mean over the batch:
L1 = ||v - D1(z)||^2 / ||v||^2 and L2 = ||z/T - D2(S(z/T))||^2. Algorithm 1 writes unsquared
norms and Zhou's code squared raw errors for both. L1 is divided by ||v||^2 so that it does
not depend on the backbone's feature scale; v is frozen, so this only reweights samples (it
is e1^2 below). L2 stays raw, as in Zhou's code: its target z/T moves with W, and dividing by
||z/T||^2 would reward W for inflating its logits instead of classifying (measured: the CE
regulariser then stalls above chance level). Adam, seeded.

The three scores of Algorithm 1, step 3 (the dividing norm is the *target's*, exactly as
written there and as Zhou's code computes it):

    msp = max_c softmax(z / T_msp)_c                          T_msp = T unless given
    e1  = ||v/||v|| - D1(z)/||v|| ||  = ||v - D1(z)|| / ||v||
    e2  = ||z/T - D2(S(z/T))|| / ||z/T||

Normal distributions (mean, MLE std, i.e. scipy's ``norm.fit``) of msp, e1 and e2 are fitted
on the *validation* split only; ``fit_record`` keeps its size, indices and a SHA-256 of its
features so one can check that no test data was used (Zhou's public code fits on test data).

Fused score, with s = ``sigma_scales`` (default (10, 1, 1): the widened MSP normal)::

    p = Phi((msp - mu0) / (s0 sigma0)) * (1 - Phi((e1 - mu1) / (s1 sigma1)))
                                       * (1 - Phi((e2 - mu2) / (s2 sigma2)))

``score`` returns ``log p`` (``log_space=True``, default), computed as a sum of
``torch.special.log_ndtr`` terms using 1 - Phi(t) = Phi(-t): ``log`` is increasing, so the
ranking (AUROC, accept/reject at matching thresholds) equals that of p, while far-OOD inputs
keep distinct, finite scores and non-zero gradients instead of underflowing to p = 0.
``log_space=False`` returns p itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from basin.detectors.base import Detector, DetectorError
from basin.models.feature_classifier import (
    FeatureClassifier,
    check_feature_classifier,
    extract_features,
)
from basin.utils.io import (
    CheckpointError,
    atomic_write_json,
    load_state_dict_strict,
    load_tensors,
    read_json,
    save_tensors,
)

PARTS = ("msp", "e1", "e2")


def mlp3(c_in: int, hidden: Sequence[int], c_out: int) -> nn.Sequential:
    """Three linear layers with Swish (SiLU) between them, Zhou's decoder shape."""
    h1, h2 = (int(h) for h in hidden)
    return nn.Sequential(nn.Linear(c_in, h1), nn.SiLU(), nn.Linear(h1, h2), nn.SiLU(),
                         nn.Linear(h2, c_out))


def fit_normal(t: Tensor) -> tuple[float, float]:
    """(mean, std) with the MLE std (ddof = 0), floored so that it is never 0."""
    t = t.detach().double()
    mu, sigma = float(t.mean()), float(t.std(correction=0))
    return mu, max(sigma, 1e-12 * max(1.0, abs(mu)))


def fingerprint(t: Tensor) -> str:
    """SHA-256 of a tensor's float32 bytes (records which data a fit used)."""
    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


class ZhouHeads(nn.Module):
    """The trainable parts W, D1, D2 on top of frozen D-dimensional features."""

    def __init__(self, feature_dim: int, n_classes: int, d1_hidden: Sequence[int] | None,
                 d2_hidden: Sequence[int]) -> None:
        super().__init__()
        self.W = nn.Linear(feature_dim, n_classes)
        self.D1 = mlp3(n_classes, d1_hidden or (feature_dim, feature_dim), feature_dim)
        self.D2 = mlp3(n_classes, d2_hidden, n_classes)


class ZhouDetector(Detector):
    """Algorithm 1 on a frozen :class:`FeatureClassifier` backbone (see module docstring).

    Args:
        model: the backbone (in eval mode); only ``model.features`` is used.
        n_classes: number of ID classes C (default: from the training labels).
        temperature: T of D2's input and target (Zhou: 100).
        msp_temperature: temperature of the msp score (default T, as in Algorithm 1; Zhou's
            code scores with 1000).
        lam: weight lambda of the cross-entropy regulariser (Zhou: 1).
        sigma_scales: widening factors (s0, s1, s2) of the fitted standard deviations.
        epochs, batch_size, lr, seed: Adam training of W, D1, D2.
        d1_hidden, d2_hidden: decoder widths (default D1 (D, D), D2 (512, 256), as Zhou's).
        w_init: optional linear layer to start W from (Zhou's code starts from the
            backbone's own head); default Xavier-uniform like Zhou's fresh layers.
        log_space: return log p (default) or p from ``score``.
    """

    name: ClassVar[str] = "zhou"
    lr_schedule: ClassVar[str] = "constant"  # Adam at a fixed lr; "cosine": annealed to 0

    def __init__(self, model: FeatureClassifier, *, n_classes: int | None = None,
                 temperature: float = 100.0, msp_temperature: float | None = None,
                 lam: float = 1.0, sigma_scales: Sequence[float] = (10.0, 1.0, 1.0),
                 epochs: int = 30, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                 d1_hidden: Sequence[int] | None = None, d2_hidden: Sequence[int] = (512, 256),
                 w_init: nn.Linear | None = None, log_space: bool = True,
                 threshold: float | None = None) -> None:
        super().__init__(threshold)
        self.model = check_feature_classifier(model)
        if not (temperature > 0 and (msp_temperature is None or msp_temperature > 0)):
            raise DetectorError(f"temperature, msp_temperature: must be > 0, got "
                                f"{temperature}, {msp_temperature}")
        if len(sigma_scales) != 3 or min(sigma_scales) <= 0:
            raise DetectorError(f"sigma_scales: need 3 positive values, got {sigma_scales}")
        if epochs < 1 or batch_size < 1 or not lr > 0 or lam < 0:
            raise DetectorError(f"epochs, batch_size, lr, lam: got {epochs}, {batch_size}, "
                                f"{lr}, {lam}; need >= 1, >= 1, > 0, >= 0")
        self.n_classes = n_classes
        self.temperature = float(temperature)
        self.msp_temperature = float(msp_temperature or temperature)
        self.lam, self.sigma_scales = float(lam), tuple(float(s) for s in sigma_scales)
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed
        self.d1_hidden, self.d2_hidden = d1_hidden, tuple(d2_hidden)
        self.w_init, self.log_space = w_init, log_space
        self.heads: ZhouHeads | None = None
        self.normals: dict[str, tuple[float, float]] | None = None
        self.fit_record: dict[str, Any] | None = None

    # ---- fitting -------------------------------------------------------------------------
    def fit(self, x: Tensor, y: Tensor | None = None, x_val: Tensor | None = None,
            val_fraction: float = 0.1, batch_size: int = 512) -> Self:
        """Train on ``(x, y)`` and fit the normals on ``x_val``.

        Without ``x_val``, a seeded random ``val_fraction`` of ``x`` is held out as the
        validation split ({k+1..n} of Algorithm 1) and the rest is the training split.
        """
        if y is None:
            raise DetectorError("y: Zhou's detector needs the labels of the training data")
        if len(y) != len(x):
            raise DetectorError(f"y: {len(y)} labels for {len(x)} inputs")
        f = extract_features(self.model, x, batch_size)
        if x_val is not None:
            return self.fit_features(f, y, extract_features(self.model, x_val, batch_size))
        if not 0 < val_fraction < 1:
            raise DetectorError(f"val_fraction: must be in (0, 1), got {val_fraction}")
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        n_val = max(1, round(val_fraction * len(x)))
        val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
        return self.fit_features(f[train_idx], y[train_idx], f[val_idx],
                                 val_indices=val_idx, train_indices=train_idx)

    def fit_features(self, f_train: Tensor, y_train: Tensor, f_val: Tensor, *,
                     val_indices: Tensor | None = None,
                     train_indices: Tensor | None = None) -> Self:
        """Train W, D1, D2 on cached training features; fit the normals on ``f_val``.

        ``val_indices``/``train_indices`` (positions in the caller's data) are only
        recorded, for provenance.
        """
        if f_train.dim() != 2 or f_val.dim() != 2 or f_train.shape[1] != f_val.shape[1]:
            raise DetectorError(f"f_train, f_val: need (N, D) features of equal D, got "
                                f"{tuple(f_train.shape)} and {tuple(f_val.shape)}")
        if y_train.shape != (len(f_train),):
            raise DetectorError(f"y_train: expected shape ({len(f_train)},), got "
                                f"{tuple(y_train.shape)}")
        if len(f_val) < 2:
            raise DetectorError("f_val: need at least 2 validation samples to fit normals")
        y_train = y_train.long().to(f_train.device)
        n_classes = self.n_classes or int(y_train.max()) + 1
        if y_train.min() < 0 or y_train.max() >= n_classes or n_classes < 2:
            raise DetectorError(f"y_train: labels must lie in [0, {n_classes}), n_classes >= 2")
        self.n_classes = n_classes
        history = self._train(f_train.detach(), y_train, n_classes)
        with torch.no_grad():
            parts = self.components(f_val.detach())
        self.normals = {k: fit_normal(parts[k]) for k in PARTS}
        self.fit_record = {
            "n_train": len(f_train), "n_val": len(f_val),
            "val_source": "held out from x" if val_indices is not None else "given",
            "val_indices": None if val_indices is None else val_indices.tolist(),
            "train_indices": None if train_indices is None else train_indices.tolist(),
            "val_sha256": fingerprint(f_val), "train_sha256": fingerprint(f_train),
            "loss_history": history}
        return self

    def _train(self, f: Tensor, y: Tensor, n_classes: int) -> list[float]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            heads = ZhouHeads(f.shape[1], n_classes, self.d1_hidden, self.d2_hidden)
            for layer in heads.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight)
        if self.w_init is not None:
            if self.w_init.weight.shape != heads.W.weight.shape:
                raise DetectorError(f"w_init: weight shape {tuple(self.w_init.weight.shape)}"
                                    f", expected {tuple(heads.W.weight.shape)}")
            with torch.no_grad():
                heads.W.weight.copy_(self.w_init.weight)
                if self.w_init.bias is not None:
                    heads.W.bias.copy_(self.w_init.bias)
        heads = heads.to(f.device)
        self.heads = heads
        opt = torch.optim.Adam(heads.parameters(), lr=self.lr)
        steps = self.epochs * -(-len(f) // self.batch_size)
        schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
                    if self.lr_schedule == "cosine" else None)
        gen = torch.Generator().manual_seed(self.seed)
        history = []
        for _ in range(self.epochs):
            total = 0.0
            for idx in torch.randperm(len(f), generator=gen).split(self.batch_size):
                v, target = f[idx.to(f.device)], y[idx.to(f.device)]
                z = heads.W(v)
                l1, l2 = self.training_losses(v, z)
                loss = (l1.mean() + l2.mean()
                        + self.lam * F.cross_entropy(z, target))
                opt.zero_grad()
                loss.backward()
                opt.step()
                if schedule is not None:
                    schedule.step()
                total += loss.item() * len(idx)
            history.append(total / len(f))
        heads.requires_grad_(False)
        return history

    def training_losses(self, v: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample L1, L2 of a batch (features ``v``, logits ``z = W v``): see the module
        docstring (L1 relative to ||v||^2, L2 raw, both squared)."""
        assert self.heads is not None
        zt = z / self.temperature
        l1 = (v - self.heads.D1(z)).pow(2).sum(1) / v.pow(2).sum(1).clamp_min(1e-12)
        l2 = (zt - self.heads.D2(torch.softmax(zt, 1))).pow(2).sum(1)
        return l1, l2

    def errors(self, v: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """The scores' e1, e2 (each (N,)): norms of the reconstruction errors, each relative
        to its target's norm (Algorithm 1, step 3)."""
        assert self.heads is not None
        zt = z / self.temperature
        e1 = (v - self.heads.D1(z)).pow(2).sum(1) / v.pow(2).sum(1).clamp_min(1e-12)
        e2 = ((zt - self.heads.D2(torch.softmax(zt, 1))).pow(2).sum(1)
              / zt.pow(2).sum(1).clamp_min(1e-12))
        # the floor keeps sqrt's gradient finite at a perfect reconstruction
        return e1.clamp_min(1e-30).sqrt(), e2.clamp_min(1e-30).sqrt()

    # ---- scoring -------------------------------------------------------------------------
    def components(self, v: Tensor) -> dict[str, Tensor]:
        """msp, e1, e2 (each (N,)) of features ``v``; differentiable in ``v``."""
        if self.heads is None:
            raise DetectorError("zhou: not fitted; call fit() or fit_features() first")
        if v.dim() != 2 or v.shape[1] != self.heads.W.in_features:
            raise DetectorError(f"features: expected shape (N, {self.heads.W.in_features}), "
                                f"got {tuple(v.shape)}")
        if self.heads.W.weight.device != v.device:
            self.heads.to(v.device)
        z = self.heads.W(v)
        e1, e2 = self.errors(v, z)
        return {"msp": torch.softmax(z / self.msp_temperature, 1).max(1).values,
                "e1": e1, "e2": e2}

    def log_terms(self, v: Tensor) -> dict[str, Tensor]:
        """The raw parts plus the three log-CDF terms and their sum ``log_p``."""
        if self.normals is None:
            raise DetectorError("zhou: normals not fitted; call fit() or fit_features() first")
        parts = self.components(v)
        out = dict(parts)
        for i, k in enumerate(PARTS):
            mu, sigma = self.normals[k]
            # float64: msp and sigma can both be tiny, and x - mu cancels in float32
            t = (parts[k].double() - mu) / (self.sigma_scales[i] * sigma)
            # msp is high for ID (lower tail is OOD); errors are low for ID (upper tail is OOD)
            out[f"log_phi_{k}"] = torch.special.log_ndtr(t if k == "msp" else -t).to(v.dtype)
        # the first term as sum's start (not 0), so the result is typed (and is) a Tensor
        out["log_p"] = sum((out[f"log_phi_{k}"] for k in PARTS[1:]), out[f"log_phi_{PARTS[0]}"])
        return out

    def score_features(self, v: Tensor) -> Tensor:
        """The fused score (``log p`` or ``p``) of precomputed features ``v`` (N, D)."""
        log_p = self.log_terms(v)["log_p"]
        return log_p if self.log_space else log_p.exp()

    def score(self, x: Tensor) -> Tensor:
        return self.score_features(self.model.features(x))

    def score_parts(self, x: Tensor) -> dict[str, Tensor]:
        """Every intermediate of the score for inputs ``x`` (for reports and ablations)."""
        return self.log_terms(self.model.features(x))

    @property
    def is_fitted(self) -> bool:
        return self.heads is not None and self.normals is not None

    # ---- checkpoints ---------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"n_classes": self.n_classes, "temperature": self.temperature,
                "msp_temperature": self.msp_temperature, "lam": self.lam,
                "sigma_scales": list(self.sigma_scales), "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed,
                "d1_hidden": None if self.d1_hidden is None else list(self.d1_hidden),
                "d2_hidden": list(self.d2_hidden), "log_space": self.log_space}

    def save(self, folder: str | Path) -> None:
        """Write ``heads.safetensors`` and ``zhou.json`` (config, normals, fit record)."""
        if self.heads is None or self.normals is None:  # not is_fitted, spelled out to narrow
            raise DetectorError("zhou: nothing to save; fit first")
        folder = Path(folder)
        save_tensors(folder / "heads.safetensors", self.heads.state_dict())
        atomic_write_json(folder / "zhou.json", {
            "config": self.config(), "feature_dim": self.heads.W.in_features,
            "normals": self.normals, "fit_record": self.fit_record})

    @classmethod
    def load(cls, folder: str | Path, model: FeatureClassifier) -> ZhouDetector:
        """Rebuild a fitted detector from :meth:`save`'s folder on top of ``model``."""
        folder = Path(folder)
        meta = read_json(folder / "zhou.json")
        try:
            det = cls(model, **meta["config"])
            if det.n_classes is None:
                raise ValueError("config.n_classes: missing (a fitted detector records it)")
            heads = ZhouHeads(int(meta["feature_dim"]), det.n_classes, det.d1_hidden,
                              det.d2_hidden)
            normals = {k: (float(meta["normals"][k][0]), float(meta["normals"][k][1]))
                       for k in PARTS}
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{folder / 'zhou.json'}: malformed ({exc!r})") from exc
        load_state_dict_strict(heads, load_tensors(folder / "heads.safetensors"),
                               folder / "heads.safetensors")
        det.heads = heads.requires_grad_(False)
        det.normals, det.fit_record = normals, meta.get("fit_record")
        return det
