"""``basin reproduce feature-recon-paper``: helpers on synthetic data, then one tiny run.

The integration part runs the whole pipeline once with the ``tiny`` plan (256 training
images, one epoch, 64 test and 32 OOD images per set, 3 PGD steps), on a mirror that also
holds a fake Tiny-ImageNet and with a given 10-class backbone (trained beforehand by the
pipeline's own backbone step), then once more in the same folder to check that a rerun
reuses everything. Every test shares those two runs, as each costs about a minute.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from basin.cli import main
from basin.data import ImageDataset, load_dataset, split_indices
from basin.data.cifar_sets import (
    ANIMALS,
    FAR_OOD,
    class_subset,
    far_ood_names,
    far_ood_set,
    load_splits,
    natural_ood_names,
    to_cifar_shape,
)
from basin.detectors import MSPDetector
from basin.detectors.zhou import fingerprint
from basin.models.cifar import load_backbone
from basin.models.feature_classifier import LinearHeadClassifier, extract_features
from basin.report.builder import _inline_markdown, format_cell
from basin.reproductions.feature_recon import (
    DETECTORS,
    Plan,
    reproduce_feature_recon_paper,
)
from basin.reproductions.feature_recon.feature_only import DETECTORS as FEATURE_ONLY
from basin.reproductions.feature_recon.feature_only import run_feature_only
from basin.reproductions.feature_recon.protocol import BATCH, TABLE_IDS, TINY, TINY_RESIZE
from basin.reproductions.feature_recon.run import backbone, file_sha256
from basin.reproductions.feature_recon.tables import pct, zhou_checks
from basin.reproductions.feature_recon.zhou_terms import analyse_run
from basin.robustness.detector_level import attack_detector
from basin.robustness.records import Record, value_of
from tiny_imagenet_fakes import LABELS as TINY_LABELS
from tiny_imagenet_fakes import ZIP as TINY_ZIP
from tiny_imagenet_fakes import register, tiny_zip


# ---- helpers ------------------------------------------------------------------------------
def test_to_cifar_shape_upsamples_and_repeats_the_channel() -> None:
    grey = torch.zeros(2, 1, 28, 28)
    grey[0] = 0.25                     # a constant image stays constant under bilinear resize
    grey[1, :, :, 14:] = 1.0           # left half black, right half white
    out = to_cifar_shape(grey)
    assert out.shape == (2, 3, 32, 32)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert torch.allclose(out[0], torch.full((3, 32, 32), 0.25))
    assert out[1, 0, :, 0].max() == 0 and out[1, 0, :, -1].min() == 1
    colour = torch.rand(1, 3, 32, 32)
    assert torch.equal(to_cifar_shape(colour), colour)
    with pytest.raises(ValueError, match="images"):
        to_cifar_shape(torch.zeros(2, 28, 28))


def test_class_subset_keeps_the_animals_and_relabels_them() -> None:
    labels = torch.tensor([2, 0, 7, 9, 3, 5])
    data = ImageDataset("cifar10", "val", torch.arange(6.0).view(6, 1, 1, 1).expand(6, 3, 2, 2)
                        .contiguous(), labels, tuple(str(i) for i in range(10)),
                        torch.tensor([10, 11, 12, 13, 14, 15]))
    sub = class_subset(data, ANIMALS, "cifar6")
    # ANIMALS = (2, 3, 4, 5, 6, 7): 2 -> 0, 7 -> 5, 3 -> 1, 5 -> 3
    assert sub.labels.tolist() == [0, 5, 1, 3]
    assert sub.indices.tolist() == [10, 12, 14, 15]
    assert sub.images[:, 0, 0, 0].tolist() == [0.0, 2.0, 4.0, 5.0]
    assert sub.classes == ("2", "3", "4", "5", "6", "7")


def test_plans_shrink_from_full_to_tiny() -> None:
    full, quick, tiny = (Plan.make(n) for n in ("full", "quick", "tiny"))
    assert full.pgd_steps == 40 and full.train_limit is None and full.epochs == 12
    assert tiny.train_limit < quick.train_limit
    assert tiny.pgd_steps < quick.pgd_steps < full.pgd_steps
    assert tiny.robust_n < quick.robust_n < full.robust_n
    with pytest.raises(ValueError, match="plan"):
        Plan.make("huge")


def test_plan_changes_are_checked() -> None:
    plan = Plan.make("tiny")
    assert plan.label_smoothing is None and plan.attacks and plan.keys == ("cifar10", "cifar6")
    assert "knn" in DETECTORS and "zhou_faithful" in DETECTORS
    with pytest.raises(ValueError, match="keys: must hold 'cifar10'"):
        Plan("x", keys=("cifar6",))
    with pytest.raises(ValueError, match=r"label_smoothing: must be in \[0, 1\)"):
        Plan("x", label_smoothing=1.0)


def test_pct_and_zhou_checks() -> None:
    assert pct(0.95944) == 95.94 and pct(None) is None and pct(float("nan")) is None
    val = split_indices("cifar10", "val")[:5].tolist()
    train = split_indices("cifar10", "train")[:1].tolist()
    assert zhou_checks({"val_indices": val}) == ["True", "False", "False"]
    assert zhou_checks({"val_indices": val + train})[:2] == ["False", "True"]
    assert zhou_checks({}) == ["unknown"] * 3


def test_accept_ood_attack_raises_the_msp_within_the_ball() -> None:
    torch.manual_seed(0)
    model = LinearHeadClassifier(nn.Flatten(), nn.Linear(3 * 32 * 32, 4)).eval()
    det = MSPDetector(model, threshold=0.99)
    x = torch.rand(8, 3, 32, 32)
    eps = 4 / 255
    x_adv = attack_detector(det, "accept-ood", x, eps, steps=5, seed=0)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    before, after = det.score_batches(x), det.score_batches(x_adv)
    assert (after > before).all()
    x_rej = attack_detector(det, "reject-id", x, eps, steps=5, seed=0)
    assert (det.score_batches(x_rej) < before).all()


def test_cli_lists_the_command_and_rejects_a_missing_backbone(tmp_path: Path) -> None:
    runner = CliRunner()
    help_text = runner.invoke(main, ["reproduce", "--help"]).output
    assert "feature-recon-paper" in help_text
    result = runner.invoke(main, ["reproduce", "feature-recon-paper", "--out",
                                  str(tmp_path / "out"), "--backbone", str(tmp_path / "none")])
    assert result.exit_code != 0
    assert "--backbone" in result.output and "model.safetensors" in result.output


def test_cli_plan_overrides_reach_the_plan() -> None:
    from basin.cli.reproduce import plan_changes

    assert plan_changes(None, False, False) == {}
    changes = plan_changes(0.0, True, True)
    assert changes == {"label_smoothing": 0.0, "attacks": False, "keys": ("cifar10",)}
    plan = Plan(**{"name": "x", **changes})  # type: ignore[arg-type]
    assert plan.label_smoothing == 0.0 and not plan.attacks and plan.keys == ("cifar10",)
    help_text = CliRunner().invoke(main, ["reproduce", "feature-recon-paper", "--help"]).output
    assert all(flag in help_text for flag in ("--label-smoothing", "--no-attacks",
                                              "--no-near-ood"))


# ---- one tiny run, end to end -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_mirror(mirror_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every real mirror file plus a fake tiny-imagenet-200.zip of 6 images, accepted as the
    official archive for the whole module (both runs read it)."""
    mirror = tmp_path_factory.mktemp("mirror")
    for entry in mirror_dir.iterdir():
        (mirror / entry.name).symlink_to(entry)
    archive = tiny_zip()
    (mirror / TINY_ZIP).write_bytes(archive)
    with pytest.MonkeyPatch.context() as patch:
        register(patch, "tiny-imagenet", TINY_ZIP, archive, len(TINY_LABELS))
        yield mirror


@pytest.fixture(scope="module")
def given_backbone(tiny_mirror: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[Path, dict[str, Any]]:
    """The tiny plan's 10-class backbone, trained by the pipeline's own backbone step into a
    folder laid out as a run's ``out/backbone``: (folder, the step's info)."""
    plan = Plan.make("tiny")
    data = load_splits("cifar10", tiny_mirror, seed=plan.seed, train_limit=plan.train_limit,
                       val_limit=plan.val_limit, test_limit=plan.test_limit)
    folder = tmp_path_factory.mktemp("trained") / "backbone"
    _, info = one_thread(backbone, "cifar10", plan, folder, data, device=torch.device("cpu"),
                         progress=False, given=False)
    return folder, info


@pytest.fixture(scope="module")
def tiny_run(tiny_mirror: Path, given_backbone: tuple[Path, dict[str, Any]],
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("feature_recon")
    return out, run_tiny(out, tiny_mirror, backbone_dir=given_backbone[0])


def one_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    threads = torch.get_num_threads()
    # one thread: the tiny run is thousands of small ops, which lose more to thread
    # synchronisation than they gain from a second core (badly so on a shared machine)
    torch.set_num_threads(1)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def run_tiny(out: Path, mirror: Path, **kwargs: Any) -> dict[str, Any]:
    return one_thread(reproduce_feature_recon_paper, out, plan="tiny", seed=0, mirror=mirror,
                      progress=False, **kwargs)


def _markdown_row(cells: list[Any]) -> str:
    # exactly how Report renders a Markdown table row (escapes included)
    return "| " + " | ".join(_inline_markdown(format_cell(c), in_table=True)
                             for c in cells) + " |"


@pytest.mark.slow
def test_report_holds_every_table_and_figure(tiny_run: tuple[Path, dict[str, Any]],
                                             tiny_mirror: Path) -> None:
    out, results = tiny_run
    html = (out / "report.html").read_text()
    markdown = (out / "report.md").read_text()
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["tables"] == json.loads(json.dumps(results["tables"]))
    assert set(on_disk["tables"]) == set(TABLE_IDS)
    for table_id, table in on_disk["tables"].items():
        assert f'<table id="{table_id}">' in html
        lines = set(markdown.splitlines())
        assert _markdown_row(table["header"]) in lines, table_id
        for row in table["rows"]:
            assert _markdown_row(row) in lines, (table_id, row)
    expected = {"roc-far", "roc-near", "roc-anomaly", "examples-cifar10", "examples-cifar6"}
    if natural_ood_names(tiny_mirror):  # the mirror holds ODIN's sets (odin/)
        expected.add("roc-natural")
    expected |= {f"hist-{b}-{d}" for b in ("cifar10", "cifar6") for d in DETECTORS}
    assert set(on_disk["figures"]) == expected
    for name in expected:
        assert f'<figure id="{name}">' in html
        assert f"(figures/{name}.png)" in markdown
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    assert "TINY RUN" in markdown and "Tiny-ImageNet" in markdown
    assert on_disk["run"]["seed"] == 0 and on_disk["run"]["wall_time_s"] > 0
    assert any(k.startswith("cifar-10-batches-bin") for k in on_disk["run"]["data_checksums"])


@pytest.mark.slow
def test_every_detector_is_measured_on_every_set(tiny_run: tuple[Path, dict[str, Any]],
                                                 tiny_mirror: Path) -> None:
    _, results = tiny_run
    seen = {(r["backbone"], r["detector"], r["set"]) for r in results["metrics"]}
    natural = natural_ood_names(tiny_mirror)
    sets10 = {*FAR_OOD, TINY, *natural, "fgsm:8/255", "far-ood (all)", "anomaly (all)",
              *(f"{c}:3" for c in ("gaussian-noise", "salt-and-pepper", "brightness",
                                   "contrast", "pixel-dropout"))}
    assert seen == ({("cifar10", d, s) for d in DETECTORS for s in sets10}
                    | {("cifar6", d, "cifar4-vehicles") for d in DETECTORS})
    table1 = results["tables"]["table1"]["rows"]
    assert len(table1) == len(DETECTORS)
    paper = {row[0]: row[1:3] for row in table1}
    assert paper["Combined Method (combined)"] == [99.90, 95.94]
    assert paper["Simple Autoencoder (pixel_autoencoder)"] == [15.89, 70.84]
    # 32 images per set (6 in the fake Tiny-ImageNet); pooled: the 6 far-OOD sets plus
    # Tiny-ImageNet, or the 6 anomaly sets
    n_ood = {TINY: len(TINY_LABELS), "far-ood (all)": 32 * 6 + len(TINY_LABELS),
             "anomaly (all)": 32 * 6}
    for r in results["metrics"]:
        assert 0 <= r["auroc"] <= 1 and 0 <= r["tnr"] <= 1
        assert r["n_ood"] == n_ood.get(r["set"], 32), r["set"]
        assert r["pooled"] == r["set"].endswith("(all)")


def _number(records: list[Record], **where: Any) -> float:
    value = value_of(records, **where)
    assert value is not None, where
    return value


@pytest.mark.slow
def test_attacks_only_ever_hurt_the_detectors(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = tiny_run
    rob = results["robustness"]
    assert set(rob) == {"cifar10", "cifar6"}
    assert all(set(per) == set(DETECTORS) for per in rob.values())
    strong_drops = 0
    for backbone_key, per in rob.items():
        for det, res in per.items():
            recs = [Record.from_dict(r) for r in res["records"]]
            assert {round(r.epsilon * 255) for r in recs if r.attack == "pgd"} == {1, 8}
            v = partial(_number, recs)

            clean = v(condition="clean", metric="auroc")
            for eps in (1 / 255, 8 / 255):
                # ID scores can only fall and OOD scores only rise, so AUROC cannot improve
                both = v(attack="pgd", epsilon=eps, side="both", metric="auroc")
                assert both <= clean + 1e-12, (backbone_key, det)
                assert v(attack="pgd", epsilon=eps, side="ood", metric="auroc") <= clean + 1e-12
                assert v(attack="pgd", epsilon=eps, side="ood", metric="ood_acceptance_rate") \
                    >= v(condition="clean", metric="ood_acceptance_rate")
                strong_drops += eps > 4 / 255 and both < clean - 0.01
            assert v(condition="clean", metric="grad_nonzero_fraction") > 0.5
            assert any("eps=0 reproduces clean: OK" in f for f in res["sanity"])
    assert strong_drops >= 7


@pytest.mark.slow
def test_zhou_normal_fits_use_validation_images_only(
        tiny_run: tuple[Path, dict[str, Any]], given_backbone: tuple[Path, dict[str, Any]],
        mirror_dir: Path) -> None:
    out, results = tiny_run
    val_split = split_indices("cifar10", "val")
    train_split = set(split_indices("cifar10", "train").tolist())
    val = load_dataset("cifar10", "val", mirror=mirror_dir)
    position = {int(i): p for p, i in enumerate(val.indices.tolist())}
    for key, folder in (("cifar10", given_backbone[0]), ("cifar6", out / "backbone6")):
        fit = results["zhou_fit"][key]
        saved = json.loads((out / "detectors" / key / "zhou" / "zhou.json").read_text())
        assert saved["fit_record"]["val_indices"] == fit["val_indices"]
        idx = fit["val_indices"]
        assert len(idx) == fit["n_val"] == 64 and len(set(idx)) == 64
        assert set(idx) <= set(val_split.tolist()) and not set(idx) & train_split
        # the fingerprint proves which images the features came from
        model = load_backbone(folder)
        images = val.images[[position[i] for i in idx]]
        assert fingerprint(extract_features(model, images)) == fit["val_sha256"]
        if key == "cifar6":
            assert all(int(val.labels[position[i]]) in ANIMALS for i in idx)
    row = {r[0]: r for r in results["tables"]["zhou-fit"]["rows"]}
    assert row["cifar10"][3:6] == ["True", "False", "False"]


@pytest.mark.slow
def test_a_folder_of_another_plan_is_refused(given_backbone: tuple[Path, dict[str, Any]],
                                             mirror_dir: Path) -> None:
    # the given backbone's parent is laid out as a tiny run's --out (backbone/ inside)
    with pytest.raises(ValueError, match="use another --out"):
        reproduce_feature_recon_paper(given_backbone[0].parent, plan="quick",
                                      mirror=mirror_dir, progress=False)


@pytest.mark.slow
def test_a_given_backbone_is_used_as_is(tiny_run: tuple[Path, dict[str, Any]],
                                        given_backbone: tuple[Path, dict[str, Any]],
                                        tiny_mirror: Path) -> None:
    out, results = tiny_run
    folder, trained = given_backbone
    info = results["backbones"]["cifar10"]
    assert info["given"] and not trained["given"] and not trained["reused"]
    assert info["sha256"] == trained["sha256"] == file_sha256(folder / "model.safetensors")
    assert info["folder"] == str(folder)
    assert not (out / "backbone").exists()
    # used as is: the run's test accuracy is the given weights' own, on the same 64 images
    plan = Plan.make("tiny")
    test = load_splits("cifar10", tiny_mirror, seed=plan.seed, test_limit=plan.test_limit)["test"]
    model = load_backbone(folder)
    with torch.no_grad():
        logits = model.logits_from_features(extract_features(model, test.images, BATCH))
    accuracy = float((logits.argmax(1) == test.labels).double().mean())
    assert len(test) == 64 and info["test_accuracy"] == accuracy


@pytest.mark.slow
def test_tiny_imagenet_joins_when_present(tiny_run: tuple[Path, dict[str, Any]],
                                          tiny_mirror: Path, mirror_dir: Path) -> None:
    out, results = tiny_run
    tiny = [r for r in results["metrics"] if r["set"] == TINY]
    assert {r["detector"] for r in tiny} == set(DETECTORS)
    assert all(r["backbone"] == "cifar10" and r["n_ood"] == len(TINY_LABELS) for r in tiny)
    header = results["tables"]["table1"]["header"]
    assert "basin Tiny-ImageNet (val zip) acc." in header
    columns = {TINY: "basin Tiny-ImageNet (val zip) AUROC"}
    if TINY_RESIZE in natural_ood_names(tiny_mirror):  # ODIN's sets, from the real mirror
        columns.update({TINY_RESIZE: "basin Tiny-ImageNet (resize) AUROC",
                        "lsun-resize": "basin LSUN (resize) AUROC"})
    for name, title in columns.items():
        col = header.index(title)
        by_det = {r["detector"]: r for r in results["metrics"] if r["set"] == name}
        for det, row in zip(DETECTORS, results["tables"]["table1"]["rows"], strict=True):
            assert row[col] == pct(by_det[det]["auroc"]), (name, det)
    assert any(k.startswith(TINY_ZIP) for k in results["run"]["data_checksums"])
    markdown = (out / "report.md").read_text()
    assert "is not in the data mirror" not in markdown
    # the other sets are the very images a run without it scores (so, as the detectors are
    # fitted and calibrated on CIFAR-10 alone, they are scored exactly as without it)
    assert far_ood_names(tiny_mirror) == (*FAR_OOD, TINY) and far_ood_names(mirror_dir) == FAR_OOD
    for name in FAR_OOD:
        assert torch.equal(far_ood_set(name, tiny_mirror, seed=0, n=32),
                           far_ood_set(name, mirror_dir, seed=0, n=32)), name


@pytest.mark.slow
def test_a_rerun_reuses_everything_and_gives_the_same_tables(
        tiny_run: tuple[Path, dict[str, Any]], given_backbone: tuple[Path, dict[str, Any]],
        tiny_mirror: Path) -> None:
    # last: it rewrites the report files that the tests above read
    out, first = tiny_run
    again = run_tiny(out, tiny_mirror, backbone_dir=given_backbone[0])
    assert all(again["backbones"][k]["reused"] for k in ("cifar10", "cifar6"))
    assert all(again["zhou_fit"][k]["cached"] for k in ("cifar10", "cifar6"))
    assert not any(first["zhou_fit"][k]["cached"] for k in ("cifar10", "cifar6"))
    for table in ("table1", "metrics", "robustness", "odin", "zhou-fit", "sets"):
        assert again["tables"][table] == first["tables"][table], table
    # the detectors loaded from the cache score exactly as the freshly fitted ones
    assert [(r["backbone"], r["detector"], r["set"], r["auroc"], r["tnr"])
            for r in again["metrics"]] == [
        (r["backbone"], r["detector"], r["set"], r["auroc"], r["tnr"]) for r in first["metrics"]]


@pytest.mark.slow
def test_zhou_terms_rebuild_the_runs_own_scores(tiny_run: tuple[Path, dict[str, Any]],
                                                 tiny_mirror: Path) -> None:
    """The term-by-term analysis reloads the run's backbones, detectors and seeded sets: its
    fused and backbone-MSP AUROCs are the run's own, to the last reported digit."""
    out, results = tiny_run
    reported = {(r["backbone"], r["detector"], r["set"]): pct(r["auroc"])
                for r in results["metrics"]}
    for key in ("cifar10", "cifar6"):
        tables = one_thread(analyse_run, out, key, tiny_mirror)
        assert set(tables) == {"zhou", "zhou_faithful"}
        for det, rows in tables.items():
            sets = {r["set"] for r in rows}
            expected = ({"cifar4-vehicles"} if key == "cifar6" else
                        {*far_ood_names(tiny_mirror), *natural_ood_names(tiny_mirror),
                         "far-ood (all)"})
            assert sets == expected
            for r in rows:
                assert r["auroc log_p"] == reported[(key, det, r["set"])], (key, det, r)
                assert r["auroc backbone msp"] == reported[(key, "msp", r["set"])]
                assert 0 <= r["auroc -e1"] <= 100 and 0 <= r["auroc log_p-msp"] <= 100


@pytest.mark.slow
def test_feature_only_equals_the_full_run(tiny_run: tuple[Path, dict[str, Any]],
                                          tiny_mirror: Path,
                                          given_backbone: tuple[Path, dict[str, Any]]) -> None:
    """The feature detectors alone, on the run's backbone and plan: the same records."""
    _, results = tiny_run
    lean = one_thread(run_feature_only, given_backbone[0], plan="tiny", seed=0,
                      mirror=tiny_mirror)
    full = {(r["detector"], r["set"]): r for r in results["metrics"]
            if r["backbone"] == "cifar10"}
    sets = {*far_ood_names(tiny_mirror), *natural_ood_names(tiny_mirror), "far-ood (all)"}
    assert {(r["detector"], r["set"]) for r in lean["metrics"]} == \
        {(d, s) for d in FEATURE_ONLY for s in sets}
    for r in lean["metrics"]:
        ref = full[(r["detector"], r["set"])]
        for k in ("auroc", "fpr_at_95_tpr", "tnr", "threshold"):
            assert r[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12), (r["detector"], k)
    # without Zhou's fits: the other detectors' records unchanged, and the feature norms
    lite = one_thread(run_feature_only, given_backbone[0], plan="tiny", seed=0,
                      mirror=tiny_mirror, zhou=False)
    zhous = {"zhou", "combined", "zhou_faithful", "combined_faithful"}
    assert {r["detector"] for r in lite["metrics"]} == set(FEATURE_ONLY) - zhous
    same = {(r["detector"], r["set"]): r["auroc"] for r in lean["metrics"]}
    assert all(r["auroc"] == same[(r["detector"], r["set"])] for r in lite["metrics"])
    assert lite["zhou_terms"] == {} and lite["feature_norms"] == lean["feature_norms"]
    assert set(lite["feature_norms"]) == {"cifar10 test", *sets - {"far-ood (all)"}}
    assert all(v > 0 for v in lite["feature_norms"].values())
    for variant in ("zhou", "zhou_faithful"):
        terms = {r["set"]: r for r in lean["zhou_terms"][variant]}
        assert set(terms) == sets
        assert terms["far-ood (all)"]["auroc log_p"] == \
            pct(full[(variant, "far-ood (all)")]["auroc"])
