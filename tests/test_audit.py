"""basin.audit on tiny synthetic problems whose answers are known in closed form.

A two-class linear model ``logits = (f, -f)``, ``f = w.x + b``, on inputs that stay inside
[0, 1] under the perturbation: the worst case of an L-infinity ball of radius eps moves ``f``
by exactly ``eps * ||w||_1``, so the robust accuracy is a count; a linear detector score
``v.x`` likewise reaches exactly ``v.x -/+ eps * ||v||_1``. PGD with sign steps reaches those
corners, so the audit must match them to float precision.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from basin.attacks.suite import strongest_specs
from basin.detectors import MSPDetector
from basin.models.feature_classifier import LogitsClassifier
from basin.robustness import audit_attacks
from basin.robustness.audit import audit
from basin.robustness.records import Record

pytestmark = pytest.mark.usefixtures("one_torch_thread")
EPS = 0.05


class TwoClassLinear(nn.Module):
    def __init__(self, w: Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = b

    def forward(self, x: Tensor) -> Tensor:
        f = x.flatten(1) @ self.w + self.b
        return torch.stack([f, -f], dim=1)


class LinearScore:
    """Detector score v.x (higher = ID), a plain callable."""

    def __init__(self, v: Tensor) -> None:
        self.v = v

    def __call__(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.v


def interior(n: int, seed: int) -> Tensor:
    """Images in [0.3, 0.7]: an eps = 0.05 ball never touches the box [0, 1]."""
    return 0.3 + 0.4 * torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def problem() -> dict:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=gen)
    v = torch.randn(16, generator=gen)
    model = TwoClassLinear(w, b=-0.5 * float(w.sum()))
    x = interior(80, seed=1)
    f = (x.flatten(1) @ w - 0.5 * float(w.sum())).detach()
    y = (f < 0).long()                     # the model's own side of the boundary...
    flip = torch.rand(80, generator=gen) < 0.15
    y = torch.where(flip, 1 - y, y)        # ...with 15% label noise, so some are wrong clean
    return {"model": model, "w": w, "v": v, "x": x, "y": y, "f": f,
            "ood": interior(60, seed=2),
            "val": interior(50, seed=3)}


def run(problem: dict, **kwargs) -> object:
    options = {"epsilons": (0.0, EPS), "attacks": "fast", "n": None, "seed": 0,
               "calibration": problem["val"], "acceptance": 0.8, "batch_size": 32}
    options.update(kwargs)
    return audit(problem["model"], LinearScore(problem["v"]), (problem["x"], problem["y"]),
                 {"noise": problem["ood"]}, **options)


@pytest.fixture(scope="module")
def report(problem: dict) -> object:
    return run(problem)


def test_worst_case_accuracy_is_the_exact_linear_answer(problem: dict) -> None:
    # accept everything: a constant score, threshold 0; silent failures are then all errors
    rep = audit(problem["model"], lambda x: torch.zeros(x.shape[0]),
                (problem["x"], problem["y"]), problem["ood"], epsilons=(0.02,),
                attacks=["pgd:ce:1/255:steps=10"], n=None, threshold=0.0)
    sign = 1 - 2 * problem["y"].double()           # +1 where the true class is 0
    margin = sign * problem["f"].double()
    robust = float((margin > 0.02 * problem["w"].abs().sum()).double().mean())
    clean = float((margin > 0).double().mean())
    assert 0.2 < robust < clean < 0.9              # the problem is not degenerate
    assert rep.value(condition="clean", dataset="id", metric="accuracy") == pytest.approx(clean)
    got = rep.value(condition="worst-case", epsilon=0.02, dataset="id", metric="accuracy")
    assert got == pytest.approx(robust, abs=1e-12)
    sf = rep.value(condition="worst-case", epsilon=0.02, dataset="id",
                   metric="silent_failure_rate")
    assert sf == pytest.approx(1 - robust, abs=1e-12)


def test_worst_case_scores_reach_the_exact_linear_extremes(problem: dict, report) -> None:
    v, radius = problem["v"].double(), EPS * float(problem["v"].abs().sum())
    clean_id = (problem["x"].flatten(1).double() @ v).numpy()
    clean_ood = (problem["ood"].flatten(1).double() @ v).numpy()
    np.testing.assert_allclose(report.scores("id"), clean_id, atol=1e-5)
    np.testing.assert_allclose(report.scores("noise", EPS), clean_ood + radius, atol=1e-5)
    np.testing.assert_allclose(report.scores("id", EPS), clean_id - radius, atol=1e-5)


def test_strongest_suite_reaches_the_exact_answer_and_checks_black_box(
        problem: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    # the suite's own members, on smaller budgets (Square's 5000 queries dominate otherwise)
    monkeypatch.setattr(audit_attacks, "strongest_specs", functools.partial(
        strongest_specs, apgd_steps=30, pgd_steps=10, square_queries=300))
    x, y = problem["x"][:24], problem["y"][:24]
    rep = audit(problem["model"], LinearScore(problem["v"]), (x, y),
                {"noise": problem["ood"][:16]}, epsilons=(0.02,), attacks="strongest", n=None,
                calibration=problem["val"])
    specs = {r.spec for r in rep.runs}
    assert "apgd:margin:0.02:steps=30" in specs        # DLR needs 3 classes: margin instead
    assert any(s.startswith("square:accept-ood") for s in specs)
    assert {f"apgd:end-to-end:0.02:steps=30:penalty={p}" for p in (1, 10, 100)} <= specs
    margin = (1 - 2 * y.double()) * problem["f"][:24].double()
    robust = float((margin > 0.02 * problem["w"].abs().sum()).double().mean())
    assert rep.value(condition="worst-case", epsilon=0.02, dataset="id",
                     metric="accuracy") == pytest.approx(robust, abs=1e-12)
    radius = 0.02 * float(problem["v"].abs().sum())
    clean_ood = (problem["ood"][:16].flatten(1).double() @ problem["v"].double()).numpy()
    np.testing.assert_allclose(rep.scores("noise", 0.02), clean_ood + radius, atol=1e-5)
    assert any("black-box (" in f and "OK" in f for f in rep.flags)
    assert not rep.suspicious


def test_eps0_records_equal_clean(report) -> None:
    clean_id = {r.metric: r.value for r in report.select(condition="clean", dataset="id")}
    at0 = {r.metric: r.value for r in report.select(condition="worst-case", epsilon=0.0,
                                                    dataset="id")}
    for metric in ("accuracy", "acceptance_rate", "silent_failure_rate", "mean_score"):
        assert at0[metric] == pytest.approx(clean_id[metric], abs=1e-12), metric
    clean_ood = {r.metric: r.value for r in report.select(condition="clean", dataset="noise")}
    for side in ("id", "ood", "both"):
        for r in report.select(condition="worst-case", epsilon=0.0, dataset="noise", side=side):
            assert r.value == pytest.approx(clean_ood[r.metric], abs=1e-12), (side, r.metric)
    assert not report.suspicious


def test_silent_failure_rate_equals_a_direct_count(problem: dict, report) -> None:
    t = report.threshold
    y = problem["y"].numpy()
    score = LinearScore(problem["v"])(problem["x"]).numpy()
    pred = problem["model"](problem["x"]).argmax(1).numpy()
    clean_silent = (pred != y) & (score >= t)
    assert report.value(condition="clean", dataset="id", metric="silent_failure_rate") == \
        pytest.approx(clean_silent.mean())
    silent = clean_silent.copy()
    for run_ in report.runs:
        if run_.epsilon == EPS and run_.side == "id":
            silent |= (run_.predicted != y) & (run_.scores >= t)
    assert silent.mean() > clean_silent.mean()      # the attack found new silent failures
    assert np.array_equal(report.worst[EPS].silent, silent)
    assert report.value(condition="worst-case", epsilon=EPS, dataset="id",
                        metric="silent_failure_rate") == pytest.approx(silent.mean())
    ood_accepted = report.scores("noise", EPS) >= t
    system = (silent.sum() + ood_accepted.sum()) / (len(silent) + len(ood_accepted))
    assert report.value(condition="worst-case", epsilon=EPS, dataset="noise", side="both",
                        metric="silent_failure_rate") == pytest.approx(system)


def test_auroc_equals_sklearn_on_the_same_scores(report) -> None:
    def sk(a: np.ndarray, b: np.ndarray) -> float:
        return roc_auc_score(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b])

    id_c, ood_c = report.scores("id"), report.scores("noise")
    id_w, ood_w = report.scores("id", EPS), report.scores("noise", EPS)
    cases = {("clean", 0.0, "none"): (id_c, ood_c), ("worst-case", EPS, "id"): (id_w, ood_c),
             ("worst-case", EPS, "ood"): (id_c, ood_w), ("worst-case", EPS, "both"): (id_w, ood_w)}
    for (condition, eps, side), (a, b) in cases.items():
        got = report.value(condition=condition, epsilon=eps, dataset="noise", side=side,
                           metric="auroc")
        assert got == pytest.approx(sk(a, b), abs=1e-12)
    assert sk(id_w, ood_w) < sk(id_c, ood_c) - 0.2   # the attacks really moved the scores


def test_threshold_calibrated_on_validation_data_only(problem: dict, report) -> None:
    val_scores = LinearScore(problem["v"])(problem["val"]).numpy()
    assert (val_scores >= report.threshold).mean() >= 0.8
    assert (val_scores > report.threshold).mean() < 0.8
    with pytest.raises(ValueError, match="calibration: give ID validation data"):
        run(problem, calibration=None)
    with pytest.raises(ValueError, match="not both"):
        run(problem, threshold=0.5)
    fixed = run(problem, calibration=None, threshold=0.5, epsilons=(0.0,))
    assert fixed.threshold == 0.5


def test_deterministic_and_the_linear_answer_survives_other_seeds_and_batches(
        problem: dict, report) -> None:
    again = run(problem)
    assert [r.to_dict() for r in again.records] == [r.to_dict() for r in report.records]
    for other in (run(problem, seed=1), run(problem, batch_size=7)):
        for dataset in ("id", "noise"):
            np.testing.assert_allclose(other.scores(dataset, EPS), report.scores(dataset, EPS),
                                       atol=1e-5)
        assert np.array_equal(other.worst[EPS].wrong, report.worst[EPS].wrong)


def test_basin_detector_is_used_but_never_modified(problem: dict) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    detector = MSPDetector(LogitsClassifier(net), threshold=0.123)
    net.train()
    x, y = interior(20, 5), torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(0))
    rep = audit(net, detector, {"digits": (x, y)}, {"a": interior(10, 6), "b": interior(12, 7)},
                epsilons=(EPS,), attacks="fast", calibration=interior(30, 8), n=15)
    assert detector.threshold == 0.123 and net.training
    assert rep.id_name == "digits" and rep.ood_names == ["a", "b"]
    assert rep.config["n_id"] == 15 and rep.config["n_ood"] == {"a": 10, "b": 12}
    assert rep.value(condition="clean", dataset="digits", metric="mean_score") == \
        pytest.approx(float(detector.score(x[rep_subset(20, 15)]).detach().mean()), rel=1e-6)


def rep_subset(total: int, n: int, seed: int = 0) -> Tensor:
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


@pytest.mark.parametrize("kwargs, message", [
    ({"epsilons": (1.5,)}, "epsilons"),
    ({"attacks": "strongestt"}, "attacks: expected one of"),
    ({"attacks": ["pgd:nope:8/255"]}, "unknown objective"),
    ({"n": 0}, "n: expected"),
    ({"acceptance": 0.0}, "acceptance"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_options_fail_before_any_work(problem: dict, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(problem, **kwargs)


def test_bad_data_and_detector_name_the_argument(problem: dict) -> None:
    model, x = problem["model"], problem["x"]
    with pytest.raises(ValueError, match="id_data: in-distribution data needs labels"):
        audit(model, LinearScore(problem["v"]), x, x, threshold=0.0)
    with pytest.raises(ValueError, match="ood_data"):
        audit(model, LinearScore(problem["v"]), (x, problem["y"]), "noise", threshold=0.0)
    with pytest.raises(ValueError, match="detector"):
        audit(model, 3, (x, problem["y"]), x, threshold=0.0)
    with pytest.raises(ValueError, match=r"labels span \[0, 5\] but the model returns 2"):
        audit(model, LinearScore(problem["v"]), (x, problem["y"] * 5), x, threshold=0.0)
    with pytest.raises(ValueError, match="distinct"):
        audit(model, LinearScore(problem["v"]), {"a": (x, problem["y"])}, {"a": x},
              threshold=0.0)


def test_serialisations(report, tmp_path) -> None:
    payload = json.loads(report.to_json())
    records = [Record.from_dict(r) for r in payload["records"]]
    assert records == report.records
    assert payload["config"]["threshold"] == report.threshold
    markdown = report.to_markdown()
    assert "| epsilon | ID accuracy |" in markdown and "pgd:end-to-end" in markdown
    html = report.to_html()
    assert html.count("data:image/png;base64") == 1 + 2   # one ROC, two histograms
    paths = report.write(tmp_path / "out", run_info={"seed": 0})
    assert json.loads(paths["json"].read_text())["run"] == {"seed": 0}
    assert paths["html"].exists() and paths["markdown"].read_text() .startswith("# Robustness")


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_strongest_plan_has_a_small_step_end_to_end_member(eps: float) -> None:
    specs = audit_attacks.plan_attacks(["strongest"], eps, 10)
    fine = [s for s in specs if s.attack == "pgd" and s.objective == "end-to-end"
            and s.params.get("random_start") is False]
    assert len(fine) == 1
    assert fine[0].params["step_size"] == pytest.approx(eps / 40)
    assert fine[0].params["steps"] * fine[0].params["step_size"] >= 2 * eps  # crosses the ball
    assert not any(s.params.get("random_start") is False
                   for s in audit_attacks.plan_attacks(["strongest"], 0.0, 10))


def test_worst_case_nests_over_epsilons(problem: dict) -> None:
    # random starts only: the two radii draw different points, so an input can be broken at
    # the smaller radius by a point the larger radius's own run does not find
    rep = run(problem, epsilons=(0.02, 0.05), calibration=None, threshold=0.0,
              attacks=["pgd:ce:0.1:steps=1:step_size=0", "pgd:reject-id:0.1:steps=1:step_size=0"])
    small, large = rep.worst[0.02], rep.worst[0.05]
    assert (large.wrong >= small.wrong).all() and (large.silent >= small.silent).all()
    assert (large.id_scores <= small.id_scores).all()
    assert (large.ood_scores["noise"] >= small.ood_scores["noise"]).all()
    own = [r for r in rep.runs if r.epsilon == 0.05 and r.side == "id"
           and r.objective == "reject-id"]
    assert (own[0].scores > small.id_scores + 1e-9).any()  # nesting did real work
