"""Reproduce the feature-reconstruction + MSP paper (Mulé & Shaner) on CIFAR-10, end to end.

:func:`run_feature_recon_paper` trains (or reuses) two backbones, fits every detector on
each, scores every OOD and anomaly set and attacks every detector through its own score
(:mod:`basin.robustness.detector_level`); :mod:`.report` writes the results (this module never
imports it). Sets and protocol:

* **far-OOD** (10-class backbone, ID = CIFAR-10 test): MNIST, Fashion-MNIST, notMNIST and
  Omniglot upsampled to 3x32x32, uniform and Gaussian noise, and Tiny-ImageNet (the paper's
  OOD set) when its files are present; see :mod:`basin.data.cifar_sets`.
* **near-OOD** (open-set split): a second backbone trained on the 6 animal classes; the 4
  vehicle classes of the CIFAR-10 test file are its OOD set, the animal test images its ID set.
* **anomalies** (10-class backbone): CIFAR-10 test images under Gaussian noise,
  salt-and-pepper, brightness, contrast and pixel dropout at severity 3, and FGSM 8/255 with
  the cross-entropy of the trained backbone itself.

Everything learned comes from the training split (backbones, pixel autoencoder, Mahalanobis,
Zhou's W/D1/D2); everything tuned or calibrated from the validation split only (ODIN's T and
eps, with seeded uniform noise of the noise *val* split as its OOD proxy; Zhou's and the
combined detector's normal fits; every threshold, at 95% validation acceptance). Test data is
only scored. Backbones live in ``out/backbone`` (or ``--backbone``) and ``out/backbone6``;
fitted detectors are cached in ``out/detectors/<backbone>`` (safetensors + JSON) and reused
while the backbone file and the plan are unchanged.

Plans: ``full`` (the default recipe), ``quick`` (minutes; fewer PGD steps, labelled) and
``tiny`` (the integration test's, seconds).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from basin.attacks import FGSM, make_objective
from basin.corruptions import corrupt
from basin.data import ImageDataset, mirror_checksums
from basin.data.cifar_outliers import KINDS as OUTLIER_KINDS
from basin.data.cifar_outliers import cifar_outliers
from basin.data.cifar_sets import (
    ANIMALS,
    VEHICLES,
    far_ood_names,
    far_ood_set,
    limit,
    load_splits,
    natural_ood_names,
)
from basin.data.registry import CIFAR10_CLASSES
from basin.detectors import (
    CombinedDetector,
    Detector,
    EnergyDetector,
    KNNDetector,
    MahalanobisDetector,
    MSPDetector,
    ODINDetector,
    PixelAutoencoderDetector,
    ZhouDetector,
    ZhouFaithfulDetector,
    threshold_for_acceptance,
)
from basin.metrics import ece
from basin.models.cifar import build_backbone, load_backbone
from basin.models.feature_classifier import extract_features
from basin.reproductions.feature_recon.attack_grid import (
    LOCAL,
    AttackStage,
    Execution,
    attack_detectors,
)
from basin.reproductions.feature_recon.protocol import (
    ACCEPTANCE,
    ATTACK_FIELDS,
    BATCH,
    CORRUPTIONS,
    FGSM_EPS,
    MAHALANOBIS_VARIANTS,
    ROBUST_FAR,
    SEVERITY,
    BackboneRun,
    Plan,
)
from basin.reproductions.feature_recon.zhou_fit import fit_zhou
from basin.robustness.detector_level import RobustnessSettings
from basin.training.backbone import default_backbone_config, train_backbone
from basin.training.backbone_aug import resolve_precision
from basin.utils.io import atomic_write_json, read_json
from basin.utils.runinfo import run_record


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- backbones ------------------------------------------------------------------------------
def backbone(key: str, plan: Plan, folder: Path, data: dict[str, ImageDataset], *,
             device: torch.device, progress: bool, given: bool) -> tuple[Any, dict[str, Any]]:
    """Load the backbone in ``folder`` (given, or trained there earlier) or train it there."""
    n_classes = len(data["train"].classes)
    epochs = plan.epochs if key == "cifar10" else plan.epochs6
    expected = {"plan": plan.name, "key": key, "n_classes": n_classes,
                "n_train": len(data["train"]), "epochs": epochs, "seed": plan.seed}
    if plan.label_smoothing is not None:  # absent from older folders' keys: the default
        expected["label_smoothing"] = plan.label_smoothing
    start = time.perf_counter()
    info: dict[str, Any] = {"folder": str(folder), "given": given}
    if given or (folder / "config.json").is_file():
        found = read_json(folder / "config.json").get("reproduce") if not given else None
        if not given and found != expected:
            raise ValueError(f"{folder}: holds a backbone trained for {found}, this run needs "
                             f"{expected}; use another --out or delete the folder")
        info["reused"] = True
    else:
        changes: dict[str, Any] = {"seed": plan.seed, "epochs": epochs}
        if plan.batch_size:
            changes["batch_size"] = plan.batch_size
        if plan.label_smoothing is not None:
            changes["label_smoothing"] = plan.label_smoothing
        config = default_backbone_config("airbench", **changes)
        kwargs = {"n_classes": n_classes} | ({"widths": plan.widths} if plan.widths else {})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(plan.seed)
            model = build_backbone("airbench", **kwargs)
        result = train_backbone(model, data["train"], data["val"], config, device=device,
                                out_dir=folder, progress=progress, resume=True,
                                extra_config={"reproduce": expected})
        info.update(reused=False, val_accuracy=result["val_accuracy"],
                    train_seconds=result["train_seconds"], precision=result["precision"])
    # always the saved copy, so a rerun that reuses the folder computes the same floats
    model = load_backbone(folder, device=device).eval().requires_grad_(False)
    if getattr(model, "n_classes", n_classes) != n_classes:
        raise ValueError(f"{folder}: backbone has {model.n_classes} classes, {key} needs "
                         f"{n_classes}")
    if given:  # trained elsewhere: its own record says on what
        metrics = folder / "metrics.json"
        found = read_json(metrics) if metrics.is_file() else {}
        expected.update(n_train=found.get("n_train"), epochs=found.get("epochs"))
    saved = read_json(folder / "config.json")
    info.update(seconds=time.perf_counter() - start, n_train=expected["n_train"],
                epochs=expected["epochs"], sha256=file_sha256(folder / "model.safetensors"),
                config=saved.get("model"),
                label_smoothing=(saved.get("training") or {}).get("label_smoothing"))
    return model, info


# ---- detectors ------------------------------------------------------------------------------
def build_detectors(run: BackboneRun, plan: Plan, data: dict[str, ImageDataset],
                    feats: dict[str, Tensor]) -> None:
    """Fit (or load from the cache folder) every detector; set thresholds on validation."""
    model, cache = run.model, run.folder
    # the attack settings do not change what is fitted, so they stay out of the cache key
    # the detector list too: a cache without a newer detector's file is refitted, not read
    key = {"backbone_sha256": run.info["sha256"], "fitted": list(MAHALANOBIS_VARIANTS),
           "plan": {k: v for k, v in asdict(plan).items() if k not in ATTACK_FIELDS}}
    cached = (cache / "key.json").is_file() and read_json(cache / "key.json") == \
        _jsonable(key)
    fitted = _load_detectors(run, plan) if cached else _fit_detectors(run, plan, data, feats)
    if not cached:
        atomic_write_json(cache / "key.json", _jsonable(key))
    msp = MSPDetector(model)
    zhou, faithful = fitted.pop("zhou"), fitted.pop("zhou_faithful")
    assert isinstance(zhou, ZhouDetector) and isinstance(faithful, ZhouFaithfulDetector)
    run.detectors = {
        "msp": msp, "odin": fitted["odin"], "energy": EnergyDetector(model),
        **{name: fitted[name] for name in MAHALANOBIS_VARIANTS}, "knn": fitted["knn"],
        "pixel_autoencoder": fitted["pixel_autoencoder"], "zhou": zhou,
        "combined": CombinedDetector(zhou, msp).fit_features(feats["val"]),
        "zhou_faithful": faithful,
        "combined_faithful": CombinedDetector(faithful, msp).fit_features(feats["val"])}
    run.zhou_fit = {k: v for k, v in (zhou.fit_record or {}).items() if k != "train_indices"}
    run.zhou_fit["cached"] = cached
    run.zhou_fit["faithful_loss_history"] = (faithful.fit_record or {}).get("loss_history")


def _load_detectors(run: BackboneRun, plan: Plan) -> dict[str, Detector]:
    model, cache = run.model, run.folder
    run.odin_tuning = read_json(cache / "odin.json")
    return {**{name: MahalanobisDetector(model, **options).load(cache / f"{name}.safetensors")
               for name, options in MAHALANOBIS_VARIANTS.items()},
            "knn": KNNDetector(model, k=plan.knn_k).load(cache / "knn.safetensors"),
            "pixel_autoencoder": PixelAutoencoderDetector.load(cache / "pixel_autoencoder"),
            "zhou": ZhouDetector.load(cache / "zhou", model),
            "zhou_faithful": ZhouFaithfulDetector.load(cache / "zhou_faithful", model),
            "odin": ODINDetector(model, temperature=run.odin_tuning["temperature"],
                                 epsilon=run.odin_tuning["epsilon"])}


def _fit_detectors(run: BackboneRun, plan: Plan, data: dict[str, ImageDataset],
                   feats: dict[str, Tensor]) -> dict[str, Detector]:
    """Every detector that learns, fitted on training features (validation for the normals
    and ODIN's tuning), and saved to the cache folder."""
    model, cache = run.model, run.folder
    train, val = data["train"], data["val"]
    device = feats["train"].device
    out: dict[str, Detector] = {
        **{name: MahalanobisDetector(model, **options).fit_features(feats["train"], train.labels)
           for name, options in MAHALANOBIS_VARIANTS.items()},
        "knn": KNNDetector(model, k=plan.knn_k).fit_features(feats["train"]),
        "pixel_autoencoder": PixelAutoencoderDetector(epochs=plan.ae_epochs,
                                                      seed=plan.seed).fit(
            train.images.to(device))}
    for name in ("zhou", "zhou_faithful"):
        out[name] = fit_zhou(name, run.model, plan, data, feats)
    # the OOD proxy: synthetic outliers of *training* images (neither a test set nor as
    # easy as uniform noise, on which every ODIN setting scored FPR95 = 0)
    proxy, _ = cifar_outliers(train.images, train.labels, plan.odin_n, seed=plan.seed)
    odin = ODINDetector(model)
    tuning = odin.tune(val.subset(plan.odin_n, seed=plan.seed).images.to(device),
                       proxy.to(device), temperatures=plan.odin_temperatures,
                       epsilons=plan.odin_epsilons)
    run.odin_tuning = {**tuning, "ood_source": "synthetic outliers of CIFAR-10 train images "
                                               f"({', '.join(OUTLIER_KINDS)})"}
    out["odin"] = odin
    for name, det in out.items():
        if isinstance(det, MahalanobisDetector | KNNDetector):
            det.save(cache / f"{name}.safetensors")
        elif isinstance(det, PixelAutoencoderDetector | ZhouDetector):
            det.save(cache / name)
    atomic_write_json(cache / "odin.json", run.odin_tuning)
    return out


def _jsonable(obj: Any) -> Any:
    """Tuples as lists, as they come back from JSON (so cache keys compare equal)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


@runtime_checkable
class FeatureScorer(Protocol):
    """A detector that scores precomputed backbone features (Mahalanobis, Zhou, combined,
    the logit scores): the run extracts features once per set and scores all of them."""

    def score_features(self, f: Tensor) -> Tensor: ...


def score_set(run: BackboneRun, x: Tensor, f: Tensor) -> dict[str, np.ndarray]:
    """Every detector's scores; feature-based ones from the cached features ``f``."""
    out = {}
    for name, det in run.detectors.items():
        if name in ("odin", "pixel_autoencoder"):
            s = det.score_batches(x.to(f.device), BATCH)
        elif not isinstance(det, FeatureScorer):
            raise TypeError(f"detector {name!r}: scored from cached features, but it has no "
                            "score_features()")
        else:
            with torch.no_grad():
                s = torch.cat([det.score_features(f[i:i + BATCH]) for i in range(0, len(f),
                                                                                  BATCH)])
        out[name] = s.double().cpu().numpy()
    return out


def add_set(run: BackboneRun, name: str, kind: str, x: Tensor) -> None:
    x = x.to(next(run.model.parameters()).device)
    run.scores[name] = (kind, score_set(run, x, extract_features(run.model, x, BATCH)))
    run.examples[name] = x[:8].cpu()


# ---- robustness -----------------------------------------------------------------------------
def robustness(run: BackboneRun, plan: Plan, x_id: Tensor, x_ood: Tensor, ood_name: str, *,
               progress: bool = False, execution: Execution = LOCAL,
               cells_dir: Path | None = None) -> None:
    """PGD (and Square) through every detector's own score: ID to rejection, OOD to acceptance;
    one cell per detector (:mod:`.attack_grid`), locally or on Ray, resumable from
    ``cells_dir``."""
    device = x_id.device
    settings = RobustnessSettings(
        epsilons=plan.robust_eps, steps=plan.pgd_steps, square_n=plan.square_n,
        square_queries=plan.square_queries,
        precision=resolve_precision(plan.attack_precision, device), seed=plan.seed, batch=BATCH)
    stage = AttackStage(run.detectors, x_id, x_ood, settings, run.key, ood_name)
    run.robustness.update(attack_detectors(stage, model_id=run.info["sha256"],
                                           execution=execution, cells_dir=cells_dir,
                                           progress=progress))


# ---- the pipeline ---------------------------------------------------------------------------
def evaluate_backbone_run(key: str, plan: Plan, out: Path, *, backbone_dir: Path | None,
                          mirror: Any, device: torch.device, progress: bool,
                          execution: Execution = LOCAL) -> BackboneRun:
    data = load_splits(key, mirror, seed=plan.seed, train_limit=plan.train_limit,
                       val_limit=plan.val_limit, test_limit=plan.test_limit,
                       near_limit=plan.near_limit)
    folder = backbone_dir or out / ("backbone" if key == "cifar10" else "backbone6")
    model, info = backbone(key, plan, folder, data, device=device, progress=progress,
                           given=backbone_dir is not None)
    run = BackboneRun(key, out / "detectors" / key, model, data["train"].classes, info)
    clock = {"backbone": info["seconds"], "_": time.perf_counter()}

    def lap(stage: str) -> None:
        now = time.perf_counter()
        clock[stage], clock["_"] = now - clock["_"], now

    feats = {s: extract_features(model, data[s].images.to(device), BATCH)
             for s in ("train", "val", "test")}
    lap("features")
    build_detectors(run, plan, data, feats)
    lap("detectors")
    run.scores["validation"] = ("id-val", score_set(run, data["val"].images, feats["val"]))
    for name, det in run.detectors.items():
        det.threshold = threshold_for_acceptance(
            torch.from_numpy(run.scores["validation"][1][name]), ACCEPTANCE)
    run.info["thresholds"] = {name: det.threshold for name, det in run.detectors.items()}
    test = data["test"]
    run.scores[key] = ("id", score_set(run, test.images.to(device), feats["test"]))
    run.examples[key] = test.images[:8]
    with torch.no_grad():
        logits = run.model.logits_from_features(feats["test"]).cpu()
    run.info.update(test_accuracy=float((logits.argmax(1) == test.labels).double().mean()),
                    test_ece=ece(torch.softmax(logits.double(), 1), test.labels),
                    n_test=len(test), n_val=len(data["val"]))
    if key == "cifar6":
        add_set(run, "cifar4-vehicles", "near-ood", data["near"].images)
        robust_ood = data["near"].images
    else:
        far = {name: far_ood_set(name, mirror, seed=plan.seed, n=plan.ood_limit)
               for name in far_ood_names(mirror)}
        for name, x in far.items():
            add_set(run, name, "far-ood", x)
        for name in natural_ood_names(mirror):
            add_set(run, name, "natural-ood",
                    far_ood_set(name, mirror, seed=plan.seed, n=plan.ood_limit))
        robust_ood = far[ROBUST_FAR]
        anomalies = limit(test, plan.anomaly_limit, plan.seed)
        for c in CORRUPTIONS:
            add_set(run, f"{c}:{SEVERITY}", "anomaly",
                    corrupt(anomalies.images, c, SEVERITY, seed=plan.seed))
        fgsm = FGSM(make_objective("ce", run.model), FGSM_EPS)
        x_adv = torch.cat([fgsm.perturb(anomalies.images[i:i + BATCH].to(device),
                                        anomalies.labels[i:i + BATCH].to(device)).cpu()
                           for i in range(0, len(anomalies), BATCH)])
        add_set(run, "fgsm:8/255", "anomaly", x_adv)
    lap("scoring")
    if plan.attacks:
        x_id = test.subset(plan.robust_n, seed=plan.seed).images.to(device)
        x_ood = robust_ood[:plan.robust_n].to(device)
        robustness(run, plan, x_id, x_ood, "cifar4-vehicles" if key == "cifar6" else ROBUST_FAR,
                   progress=progress, execution=execution, cells_dir=out / "attack_cells")
        lap("attacks")
    run.info["timings_s"] = {k: round(v, 1) for k, v in clock.items() if k != "_"}
    return run


def run_feature_recon_paper(out_dir: str | os.PathLike[str], *, plan: str = "full",
                            seed: int = 0, mirror: str | os.PathLike[str] | None = None,
                            device: torch.device | None = None,
                            backbone_dir: str | os.PathLike[str] | None = None,
                            attack_precision: str | None = None, progress: bool = True,
                            changes: dict[str, Any] | None = None,
                            execution: Execution = LOCAL
                            ) -> tuple[Plan, dict[str, BackboneRun], dict[str, Any]]:
    """Both backbones end to end (``plan``: full, quick, tiny): ``(plan, runs, run record)``.

    ``attack_precision`` (``auto``, ``bf16``, ``fp32``) overrides the plan's precision of the
    PGD and Square search steps; metrics are always scored in fp32. ``changes`` overrides
    other :class:`Plan` fields (``label_smoothing=0.0``: plain cross-entropy backbones;
    ``attacks=False``: the detector stage only; ``keys=("cifar10",)``: no near-OOD backbone).
    ``execution``: the attack stage's cells locally (default) or on Ray (same records).
    """
    the_plan = replace(Plan.make(plan, seed), **(changes or {}))
    if attack_precision is not None:
        the_plan = replace(the_plan, attack_precision=attack_precision)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    given = Path(backbone_dir) if backbone_dir is not None else None
    if given is not None and not (given / "model.safetensors").is_file():
        raise ValueError(f"--backbone {given}: no model.safetensors (a folder written by "
                         "basin train-backbone)")
    out.mkdir(parents=True, exist_ok=True)
    device = device or torch.device("cpu")
    precision = resolve_precision(the_plan.attack_precision, device)  # bad values fail early
    start = time.perf_counter()
    runs = {key: evaluate_backbone_run(key, the_plan, out, mirror=mirror, device=device,
                                       progress=progress, execution=execution,
                                       backbone_dir=given if key == "cifar10" else None)
            for key in the_plan.keys}
    record = run_record({"plan": asdict(the_plan), "device": str(device),
                         "attack_precision": precision, "execution": asdict(execution),
                         "backbone": str(given) if given else None,
                         "near_ood_split": {"id": [CIFAR10_CLASSES[k] for k in ANIMALS],
                                            "ood": [CIFAR10_CLASSES[k] for k in VEHICLES]}},
                        seed, mirror_checksums(
                            ("cifar10", *(n for n in far_ood_names(mirror) if "noise" not in n),
                             *natural_ood_names(mirror)), mirror=mirror))
    record["wall_time_s"] = time.perf_counter() - start
    return the_plan, runs, record
