"""The attractor ablation: the new training reading (MSE reduction), the grid and its tables."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from basin.cli import main
from basin.cli.ablation import READINGS
from basin.losses import LossWeights, attractor_loss, run_stack
from basin.models import AttractorNet
from basin.reproductions.attractor.protocol import PAPER_ATTACKS, PAPER_OOD
from basin.reproductions.attractor_ablation import (
    READING_NAMES,
    AblationPlan,
    measure_network,
    reproduce_attractor_ablation,
)
from basin.reproductions.attractor_ablation.protocol import (
    BUDGET,
    objective_weights,
    reading,
    targets,
)
from basin.reproductions.attractor_ablation.tables import (
    ablation_table,
    best_fits,
    seeds_run,
    summarise,
    verdicts,
)
from basin.robustness.evaluation import EvaluationSettings, evaluate_run
from basin.robustness.records import Record
from basin.training import PRESETS, TrainConfig, TrainData, evaluate, toy_split, train
from basin.training.trainer import build_model


def _batch(seed: int = 0) -> tuple[AttractorNet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    net = AttractorNet((12, 8, 4, 8, 12), 3, "sigmoid")
    return net, torch.rand(5, 12), torch.tensor([0, 1, 2, 0, 1])


def test_sum_reduction_is_out_features_times_the_mean() -> None:
    net, x, y = _batch()
    stack = net.autoencoder_stack()
    weights = LossWeights(1.0, 0.5, 0.1)
    terms = {}
    for reduction in ("mean", "sum"):
        forward = run_stack(stack, x)
        terms[reduction] = attractor_loss(stack, x, x, net.logits(x), y, weights,
                                          forward=forward, mse_reduction=reduction)
    by_hand = ((net.reconstruct(x) - x) ** 2).sum(dim=1).mean()
    assert float(terms["sum"].reconstruction.detach()) == pytest.approx(float(by_hand.detach()),
                                                                        rel=1e-6)
    assert float(terms["sum"].reconstruction) == pytest.approx(
        12 * float(terms["mean"].reconstruction), rel=1e-6)
    # the other terms do not depend on the reduction
    assert float(terms["sum"].eigen) == pytest.approx(float(terms["mean"].eigen), rel=1e-6)
    assert float(terms["sum"].classification) == pytest.approx(
        float(terms["mean"].classification), rel=1e-6)


def test_mse_reduction_is_checked_and_defaults_to_mean() -> None:
    assert TrainConfig().mse_reduction == "mean"
    assert TrainConfig.from_dict({"mse_reduction": "sum"}).mse_reduction == "sum"
    with pytest.raises(ValueError, match="mse_reduction"):
        TrainConfig(mse_reduction="median")
    net, x, y = _batch()
    with pytest.raises(ValueError, match="mse_reduction"):
        attractor_loss(net.autoencoder_stack(), x, x, net.logits(x), y,
                       LossWeights(1.0, 0.0, 0.1), mse_reduction="max")


# -- the grid and its numbers (no data) ------------------------------------------------------

def test_glorot_init_is_keras_dense_default_and_recorded() -> None:
    config = PRESETS["paper-attractor"].replace(init="glorot", seed=3)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict({}).init == "torch"   # configs stored before the field
    with pytest.raises(ValueError, match="init"):
        TrainConfig(init="orthogonal")
    net, heads = build_model(config)
    torch_net, _ = build_model(config.replace(init="torch"))
    again, _ = build_model(config)
    net.requires_grad_(False)
    heads.requires_grad_(False)
    layers = [m for m in [*net.modules(), *heads.modules()] if isinstance(m, torch.nn.Linear)]
    assert layers and all(float(m.bias.abs().max()) == 0.0 for m in layers)
    for m in layers:   # Glorot-uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out))
        fan_out, fan_in = m.weight.shape
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert float(m.weight.abs().max()) <= bound
        assert float(m.weight.var()) == pytest.approx(bound ** 2 / 3, rel=0.1)
    assert torch.equal(net.encoder[0].weight, again.encoder[0].weight)      # seeded
    assert not torch.equal(net.encoder[0].weight, torch_net.encoder[0].weight)
    assert float(torch_net.encoder[0].bias.detach().abs().max()) > 0


def test_cli_reading_names_agree_with_the_protocol() -> None:
    assert READINGS == READING_NAMES


def test_plan_cells_give_costly_and_control_readings_one_seed() -> None:
    plan = AblationPlan.make(False, seeds=3, seed=4)
    cells = plan.cells()
    seeds: dict[str, list[int]] = {}
    for c in cells:
        seeds.setdefault(c.model, []).append(int(c.param("seed")))
    assert seeds["literal"] == [4, 5, 6] and seeds["sigmoid-joint"] == [4, 5, 6]
    assert seeds["baseline"] == [4] and seeds["literal-exact"] == [4]
    assert seeds["sigmoid-joint-exact"] == [4]
    assert seeds["sigmoid-joint-sum-glorot-exact"] == [4]
    assert len(cells) == 3 * (len(READING_NAMES) - 4) + 4
    # the budget override applies, except where the reading undoes it
    assert plan.train_config("sigmoid-joint-sum", 5).jacobian == "projection"
    exact = plan.train_config("literal-exact", 4)
    assert exact.jacobian == "exact-fast"
    assert not exact.differences(PRESETS["paper-attractor"].replace(seed=4))
    with pytest.raises(ValueError, match="readings"):
        AblationPlan.make(False, readings=["literal", "nonsense"])


def test_paper_objective_weights_follow_the_mse_reduction() -> None:
    mean = PRESETS["paper-attractor"]
    assert objective_weights(mean) == pytest.approx((0.988, 0.002, 0.01))
    assert objective_weights(mean.replace(mse_reduction="sum")) == pytest.approx(
        (0.988 * 784, 0.002, 0.01))


def _records(name: str, seed: int, values: dict[tuple[str, str, str], float],
             steps: int = 1) -> list[Record]:
    return [Record(c, "none" if c == "clean" else "fgsm", 0.0 if c == "clean" else 20 / 255,
                   d, "none" if c == "clean" else "id", m, v,
                   {"reading": name, "seed": seed, "steps": steps})
            for (c, d, m), v in values.items()]


def _paper_values(shift: float) -> dict[tuple[str, str, str], float]:
    return {(t.condition, t.dataset, t.metric): t.paper + shift for t in targets("attractor")}


def test_summary_fit_and_verdicts_by_hand() -> None:
    records = (_records("sigmoid-joint", 0, _paper_values(-0.01))
               + _records("sigmoid-joint", 1, _paper_values(-0.03))
               + _records("literal", 0, _paper_values(-0.30)))
    summary = summarise(records)
    s = summary[("sigmoid-joint", 1)][("clean", "mnist", "accuracy")]
    assert s.n == 2
    assert s.mean == pytest.approx(0.8873 - 0.02)
    assert s.std == pytest.approx(0.02 / 2 ** 0.5)  # sample std of (-0.01, -0.03)
    fits = best_fits(summary, "attractor")
    assert [f.reading for f in fits] == ["sigmoid-joint", "literal"]
    assert fits[0].worst == pytest.approx(0.02) and fits[0].within
    assert fits[1].worst == pytest.approx(0.30) and not fits[1].within
    claims = {v["claim"].split(" (")[0]: v["holds_under"] for v in verdicts(summary)
              if v["network"] == "attractor"}
    assert claims["clean accuracy"] == ["sigmoid-joint n=1"]
    # both readings lose the same 1.6 points under the paper's FGSM: robust in both
    assert claims["accuracy kept within 5 points under the paper's FGSM at 20/255"] == [
        "literal n=1", "sigmoid-joint n=1"]
    table = ablation_table(summary, AblationPlan.make(False), seeds_run(records))
    rows = {r[0]: r for r in table["rows"]}
    assert rows["sigmoid-joint"][2] == f"{100 * (0.8873 - 0.02):.2f} ± {100 * 0.02 / 2 ** 0.5:.2f}"
    assert rows["joint"][1] == "not run"


def test_summary_refuses_untagged_records() -> None:
    with pytest.raises(ValueError, match="reading or steps"):
        summarise([Record("clean", "none", 0.0, "mnist", "none", "accuracy", 0.5)])


# -- on the data mirror ----------------------------------------------------------------------

def test_measure_network_equals_the_evaluation_runner(mirror_dir: Path) -> None:
    """Attacked once, measured at every n: at n = 1 the records equal evaluate_run's."""
    torch.manual_seed(0)
    net = AttractorNet(output_activation="sigmoid").eval()
    weights = (0.988, 0.002, 0.01)
    ours = measure_network(net, loss_weights=weights, steps=(1, 3), limit=24,
                           mirror=mirror_dir, device=torch.device("cpu"))
    theirs = evaluate_run(net, ood=PAPER_OOD, attacks=PAPER_ATTACKS, mirror=mirror_dir,
                          settings=EvaluationSettings(limit=24, seed=0, loss_weights=weights),
                          progress=False, with_sanity=False)
    at_one = {(r.condition, r.dataset, r.metric, r.side): r.value for r in ours
              if r.extra["steps"] == 1}
    expected = {(r.condition, r.dataset, r.metric, r.side): r.value for r in theirs.records}
    assert at_one.keys() == expected.keys()
    for key, value in expected.items():
        assert at_one[key] == pytest.approx(value, abs=1e-9, nan_ok=True), key
    # n = 3 scores other iterates of the same inputs: classification is unchanged
    at_three = {(r.condition, r.dataset, r.metric): r.value for r in ours
                if r.extra["steps"] == 3}
    for cond in ("clean", PAPER_ATTACKS[0]):
        assert at_three[(cond, "mnist", "accuracy")] == at_one[(cond, "mnist", "accuracy",
                                                                "none" if cond == "clean"
                                                                else "id")]


@pytest.mark.slow
def test_tiny_ablation_end_to_end_and_resume(mirror_dir: Path, tmp_path: Path) -> None:
    plan = AblationPlan.tiny()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = reproduce_attractor_ablation(tmp_path, plan=plan, mirror=mirror_dir,
                                             progress=False)
        # a rerun finds every cell in grid/ and retrains nothing
        mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("cells/*/*/model.safetensors")}
        second = reproduce_attractor_ablation(tmp_path, plan=plan, mirror=mirror_dir,
                                              progress=False)
    finally:
        torch.set_num_threads(threads)
    assert len(mtimes) == len(plan.cells()) == 5
    assert mtimes == {p: p.stat().st_mtime_ns for p in mtimes}
    assert first["records"] == second["records"]
    assert (tmp_path / "report.html").exists() and (tmp_path / "report.md").exists()
    assert (tmp_path / "figures" / "ablation-readings.png").exists()
    assert first["seeds"] == {"literal": [0, 1], "sigmoid-joint-sum": [0, 1], "baseline": [0]}
    # per cell: 3 conditions x (ID + 2 OOD sets) measured at each n, plus the full test set
    per_cell = {}
    for r in first["records"]:
        key = (r["extra"]["reading"], r["extra"]["seed"])
        per_cell[key] = per_cell.get(key, 0) + 1
    assert len(set(per_cell.values())) == 1
    rows = {r[0]: r for r in first["tables"]["ablation"]["rows"]}
    assert set(rows) == set(plan.readings)
    acc = [r for r in first["records"] if r["metric"] == "accuracy_all_test"]
    assert len(acc) == 5 and all(0.0 <= r["value"] <= 1.0 for r in acc)
    assert "QUICK RUN" in (tmp_path / "report.md").read_text()


def test_cli_lists_the_command_and_names_a_bad_reading() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["reproduce", "attractor-ablation", "--help"])
    assert result.exit_code == 0 and "--readings" in result.output
    bad = runner.invoke(main, ["reproduce", "attractor-ablation", "--out", "unused",
                               "--readings", "literal,relu6"])
    assert bad.exit_code == 2 and "relu6" in bad.output and "--readings" in bad.output


def test_best_reading_preset_is_that_reading_with_the_exact_jacobian() -> None:
    best = PRESETS["paper-attractor-sigmoid-sum"]
    grid = reading("sigmoid-joint-sum").config(0, BUDGET)
    assert best.differences(grid) == {"jacobian": ("exact-fast", "projection")}
    assert (best.output_activation, best.pretrain, best.mse_reduction, best.train_size) == (
        "sigmoid", False, "sum", 1000)
    assert PRESETS["paper-attractor"].mse_reduction == "mean"  # the literal one is kept
    glorot = PRESETS["paper-attractor-sigmoid-sum-glorot"]
    assert glorot.differences(reading("sigmoid-joint-sum-glorot").config(0, BUDGET)) == {
        "jacobian": ("exact-fast", "projection")}
    assert glorot.differences(reading("sigmoid-joint-sum-glorot-exact").config(0, BUDGET)) == {}
    assert glorot.differences(best) == {"init": ("glorot", "torch")}


def test_best_reading_preset_trains_with_the_summed_reconstruction(tmp_path: Path) -> None:
    config = PRESETS["paper-attractor-sigmoid-sum"].replace(
        dataset="toy", widths=(16, 12, 8, 12, 16), n_classes=3, train_size=48, val_size=24,
        max_epochs=2, learning_rates=(0.001, 0.005, 0.0005))
    parts = {s: toy_split(s, 16, 3) for s in ("train", "val", "test")}
    data = TrainData(parts["train"][0][:48], parts["train"][1][:48], parts["val"][0][:24],
                     parts["val"][1][:24], *parts["test"])
    result = train(config, data, tmp_path / "run")
    x = data.test_x
    measured = evaluate(result.net, x, data.test_y, config)["loss"]["reconstruction"]
    with torch.no_grad():
        by_hand = float(((result.net.reconstruct(x) - x) ** 2).sum(dim=1).mean())
    assert measured == pytest.approx(by_hand, rel=1e-5)
    assert measured > 2 * by_hand / 16  # not the per-element mean
