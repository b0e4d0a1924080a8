"""Objectives (hand cases, BPDA, the paper's training cost), spec parsing and sanity flags."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from basin.attacks import (
    ATTACKS,
    DETECTOR_OBJECTIVES,
    OBJECTIVE_KEEPS,
    OBJECTIVE_KINDS,
    OBJECTIVES,
    PGD,
    AttackSpec,
    Objective,
    build_attack,
    gradient_nonzero_fraction,
    make_objective,
    parse_attack_spec,
    parse_epsilon,
    sanity_flags,
)
from basin.detectors.base import Detector
from basin.models import AttractorNet


class SumDetector(Detector):
    """score = -sum(x): hand-computable, differentiable."""

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return -x.flatten(1).sum(1)


class Identity2(nn.Module):
    """logits = x (two features, two classes)."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x


# -- objectives on hand cases ---------------------------------------------------------------
def test_end_to_end_loss_and_success_by_hand() -> None:
    x = torch.tensor([[0.75, 0.25], [0.75, 0.5], [0.25, 0.5], [0.5, 0.25]])
    y = torch.tensor([1, 1, 1, 0])
    objective = make_objective("end-to-end", Identity2(), detector=SumDetector(threshold=-1.0),
                               penalty=2.0, margin=0.125)
    ce = F.cross_entropy(x, y, reduction="none")
    # scores -1, -1.25, -0.75, -0.75; shortfall below T + margin = -0.875: 0.125, 0.375, 0, 0
    expected = ce - 2.0 * torch.tensor([0.125, 0.375, 0.0, 0.0])
    torch.testing.assert_close(objective(x, y), expected)
    # misclassified: rows 0, 1; accepted (score >= -1): rows 0, 2, 3
    assert objective.success(x, y).tolist() == [True, False, False, False]


def test_detector_objectives_by_hand() -> None:
    det = SumDetector(threshold=-1.0)
    x = torch.tensor([[0.75, 0.25], [0.75, 0.5]])
    reject, accept = make_objective("reject-id", detector=det), make_objective(
        "accept-ood", detector=det)
    assert not reject.needs_labels and not accept.needs_labels
    torch.testing.assert_close(reject(x), torch.tensor([1.0, 1.25]))
    torch.testing.assert_close(accept(x), torch.tensor([-1.0, -1.25]))
    assert reject.success(x).tolist() == [False, True]
    assert accept.success(x).tolist() == [True, False]
    # the threshold is read at call time: recalibrating is honoured
    det.threshold = -2.0
    assert reject.success(x).tolist() == [False, False]


def test_ce_objective_is_per_sample_cross_entropy() -> None:
    x, y = torch.tensor([[0.2, 0.9], [0.6, 0.1]]), torch.tensor([0, 0])
    objective = make_objective("ce", Identity2())
    expected = [math.log(1 + math.exp(0.7)), math.log(1 + math.exp(-0.5))]
    torch.testing.assert_close(objective(x, y), torch.tensor(expected))
    assert objective.success(x, y).tolist() == [True, False]


def test_paper_objective_averages_to_the_training_loss() -> None:
    losses = pytest.importorskip("basin.losses")
    torch.manual_seed(0)
    net = AttractorNet((9, 5, 3, 5, 9), n_classes=3, output_activation="sigmoid")
    x, y = torch.rand(6, 1, 3, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    weights = losses.LossWeights(0.5, 0.3, 0.2)
    objective = make_objective("paper", net, weights=weights, jacobian="exact")
    per_sample = objective(x, y)
    flat = x.flatten(1)
    reference = losses.attractor_loss(net.autoencoder_stack(), flat, flat, net.logits(x), y,
                                      weights, jacobian="exact").total
    assert per_sample.shape == (6,)
    torch.testing.assert_close(per_sample.mean(), reference)
    # one sample alone gives the training loss of a batch of one
    alone = losses.attractor_loss(net.autoencoder_stack(), flat[2:3], flat[2:3],
                                  net.logits(x[2:3]), y[2:3], weights, jacobian="exact").total
    torch.testing.assert_close(per_sample[2], alone)


def _dead_loop_net() -> AttractorNet:
    """G(x) = relu(0 * h - 1) = 0 for every x: a constant reconstruction (dead ReLUs)."""
    torch.manual_seed(0)
    net = AttractorNet((4, 3, 4), n_classes=2)
    with torch.no_grad():
        net.decoder[0].weight.zero_()
        net.decoder[0].bias.fill_(-1.0)
        net.encoder[0].bias.fill_(0.5)  # live units at G(x) = 0, so F has a gradient there
    return net


def test_bpda_gives_gradients_where_the_loop_gradient_vanishes() -> None:
    net = _dead_loop_net()
    x, y = torch.rand(8, 4), torch.randint(0, 2, (8,))
    assert torch.equal(net.reconstruct(x), torch.zeros(8, 4))
    exact = make_objective("through-loop", net, steps=3)
    bpda = make_objective("through-loop-bpda", net, steps=3)
    torch.testing.assert_close(exact(x, y), bpda(x, y))  # same forward value
    assert gradient_nonzero_fraction(exact, x, y) == 0.0
    assert gradient_nonzero_fraction(bpda, x, y) == 1.0


def test_through_loop_differentiates_through_every_iteration() -> None:
    # G(x) = x / 2 exactly (linear output), so F(G^n(x)) = F(x / 2^n)
    net = AttractorNet((2, 2, 2), n_classes=2, output_activation="linear")
    with torch.no_grad():
        net.encoder[0].weight.copy_(torch.eye(2))
        net.encoder[0].bias.zero_()
        net.decoder[0].weight.copy_(torch.eye(2) / 2)
        net.decoder[0].bias.zero_()
    x, y = torch.tensor([[0.8, 0.4]], requires_grad=True), torch.tensor([1])
    loss = make_objective("through-loop", net, steps=2)(x, y)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    z = x.detach() / 4
    torch.testing.assert_close(loss, F.cross_entropy(net.head(z), y, reduction="none"))
    zv = z.clone().requires_grad_(True)
    (grad_z,) = torch.autograd.grad(F.cross_entropy(net.head(zv), y), zv)
    torch.testing.assert_close(grad, grad_z / 4)  # the chain rule through two halvings


def test_objective_checks_its_output_shape() -> None:
    bad = Objective("bad", lambda x, y: x.sum())
    with pytest.raises(ValueError, match=r"per-sample loss of shape \(3,\), got \(\)"):
        bad(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "hinge"}, "unknown objective 'hinge'"),
    ({"name": "reject-id"}, "needs a detector"),
    ({"name": "end-to-end", "model": Identity2(), "detector": SumDetector()}, "no threshold"),
    ({"name": "accept-ood", "detector": object()}, "has no score"),
    ({"name": "through-loop", "model": Identity2()}, r"reconstruct\(\)"),
    ({"name": "through-loop", "model": _dead_loop_net(), "steps": 0}, "steps"),
    ({"name": "paper", "model": Identity2()}, r"reconstruct\(\)"),
    ({"name": "ce"}, "needs a model"),
    ({"name": "end-to-end", "model": Identity2(), "detector": SumDetector(threshold=0.0),
      "penalty": -1.0}, "penalty"),
])
def test_make_objective_errors(kwargs: dict, message: str) -> None:
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        make_objective(name, **kwargs)


def test_every_registered_objective_builds() -> None:
    det = SumDetector(threshold=-8.0)
    x, y = torch.rand(3, 4), torch.tensor([0, 1, 0])
    for name in OBJECTIVES:
        if name == "dlr":  # needs >= 3 classes; the dead-loop net has 2
            with pytest.raises(ValueError, match="'dlr' needs at least 3 classes"):
                make_objective(name, _dead_loop_net(), detector=det)
            continue
        objective = make_objective(name, _dead_loop_net(), detector=det)
        assert objective.name == name
        assert objective(x, y).shape == (3,) and objective.success(x, y).shape == (3,)


# -- epsilon and spec parsing ---------------------------------------------------------------
@pytest.mark.parametrize(("text", "value"), [
    ("20/255", 20 / 255), ("8/255", 8 / 255), ("0.1", 0.1), ("255/255", 1.0), ("0", 0.0),
    (" 4 / 255 ", 4 / 255), (0.25, 0.25), (1, 1.0)])
def test_parse_epsilon_accepts(text: str | float, value: float) -> None:
    assert parse_epsilon(text) == value


@pytest.mark.parametrize(("text", "message"), [
    ("256/255", "must lie in"), ("-0.1", "must lie in"), ("1.5", "must lie in"),
    ("abc", "expected a number"), ("", "expected a number"), ("1/0", "denominator"),
    ("8/255/2", "at most one"), ("nan", "must lie in"), ("inf", "must lie in"),
    (True, "expected a number")])
def test_parse_epsilon_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_epsilon(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("pgd:ce:20/255:steps=40", AttackSpec("pgd", "ce", 20 / 255, {"steps": 40})),
    ("fgsm:paper:20/255", AttackSpec("fgsm", "paper", 20 / 255, {})),
    ("square:ce:8/255:queries=1000", AttackSpec("square", "ce", 8 / 255, {"queries": 1000})),
    ("pgd:end-to-end:8/255:steps=40:restarts=2",
     AttackSpec("pgd", "end-to-end", 8 / 255, {"steps": 40, "restarts": 2})),
    ("pgd:through-loop-bpda:0.1:loop=5:step_size=1/255:random_start=false",
     AttackSpec("pgd", "through-loop-bpda", 0.1,
                {"loop": 5, "step_size": 1 / 255, "random_start": False})),
    ("square:end-to-end:0.3:penalty=5:margin=0.1:p_init=0.8",
     AttackSpec("square", "end-to-end", 0.3, {"penalty": 5.0, "margin": 0.1, "p_init": 0.8})),
])
def test_parse_attack_spec_accepts(text: str, expected: AttackSpec) -> None:
    assert parse_attack_spec(text) == expected


def test_spec_splits_attack_and_objective_parameters() -> None:
    spec = parse_attack_spec("pgd:through-loop:0.1:loop=5:steps=7")
    assert spec.attack_params() == {"steps": 7}
    assert spec.objective_kwargs() == {"steps": 5}
    objective = make_objective(spec.objective, _dead_loop_net(), **spec.objective_kwargs())
    attack = build_attack(spec, objective, seed=3)
    assert isinstance(attack, PGD) and attack.steps == 7 and attack.seed == 3
    assert attack.step_size == pytest.approx(2.5 * 0.1 / 7)


@pytest.mark.parametrize(("text", "message"), [
    ("bim:ce:8/255", "unknown attack 'bim'"),
    ("pgd:hinge:8/255", "unknown objective 'hinge'"),
    ("pgd:ce:300/255", r"bad epsilon '300/255': must lie in \[0, 1\]"),
    ("pgd:ce:eight", "bad epsilon 'eight'"),
    ("pgd:ce", "expected 'attack:objective:epsilon"),
    ("pgd:ce:8/255:stepz=40", "unknown parameter 'stepz' for attack 'pgd'"),
    ("fgsm:ce:8/255:steps=40", "unknown parameter 'steps' for attack 'fgsm'"),
    ("pgd:ce:8/255:loop=3", "unknown parameter 'loop'"),
    ("pgd:ce:8/255:steps=-4", "bad value for parameter steps='-4'"),
    ("pgd:ce:8/255:steps=4.5", "bad value for parameter steps='4.5'"),
    ("square:ce:8/255:p_init=2", "bad value for parameter p_init='2'"),
    ("pgd:ce:8/255:random_start=maybe", "bad value for parameter random_start"),
    ("pgd:ce:8/255:steps", "parameter 'steps' is not key=value"),
    ("pgd:ce:8/255:steps=3:steps=4", "'steps' given twice"),
])
def test_parse_attack_spec_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_attack_spec(text)


def test_build_attack_checks_the_objective_matches() -> None:
    spec = parse_attack_spec("pgd:ce:8/255")
    with pytest.raises(ValueError, match="names objective 'ce' but the objective given is"):
        build_attack(spec, make_objective("reject-id", detector=SumDetector(threshold=0.0)))
    assert set(ATTACKS) == {"fgsm", "pgd", "square", "apgd"}


# -- sanity helpers -------------------------------------------------------------------------
def test_gradient_nonzero_fraction_by_hand() -> None:
    weights = torch.tensor([1.0, 0.0, float("nan"), -2.0])
    objective = Objective("hand", lambda x, y: x[:, 0] * weights, needs_labels=False)
    # gradients: (1, 0), (0, 0), (NaN, 0), (-2, 0): two of four are usable
    assert gradient_nonzero_fraction(objective, torch.rand(4, 2)) == 0.5
    constant = Objective("const", lambda x, y: torch.ones(x.shape[0]), needs_labels=False)
    assert gradient_nonzero_fraction(constant, torch.rand(3, 2)) == 0.0


def test_sanity_flags_all_ok() -> None:
    flags = sanity_flags(0.9, 0.9, {"fgsm": 0.5, "pgd": 0.3}, {"square": 0.4}, 1.0)
    assert flags == ["eps=0 reproduces clean: OK",
                     "gradients non-zero on 100.0% of inputs",
                     "black-box (square) does not beat white-box: OK"]


def test_sanity_flags_all_failing() -> None:
    flags = sanity_flags(0.9, 0.85, {"fgsm": 0.5, "pgd": 0.3}, {"square": 0.2}, 0.25)
    assert flags == ["eps=0 reproduces clean: FAILED (0.8500 vs clean 0.9000)",
                     "gradients non-zero on 25.0% of inputs: suspected gradient masking",
                     "suspected gradient masking: square attack beats the best white-box "
                     "attack (0.2000 vs 0.3000 for pgd)"]


def test_sanity_flags_edges() -> None:
    # a tie is not a win for the black-box attack; exactly half is not masking
    flags = sanity_flags(0.5, 0.5, {"pgd": 0.3}, {"square": 0.3}, 0.5)
    assert flags[1:] == ["gradients non-zero on 50.0% of inputs",
                         "black-box (square) does not beat white-box: OK"]
    assert sanity_flags(0.5, 0.5, {}, {"square": 0.3}, 1.0)[2].endswith("not checked "
                                                                        "(needs both kinds "
                                                                        "of attack)")
    with pytest.raises(ValueError, match=r"whitebox_accs\['pgd'\] must be an accuracy"):
        sanity_flags(0.5, 0.5, {"pgd": 1.3}, {}, 1.0)
    with pytest.raises(ValueError, match="clean_acc must be an accuracy"):
        sanity_flags(float("nan"), 0.5, {}, {}, 1.0)


# -- kinds, default keeps, one-forward evaluation ------------------------------------------
def test_objectives_declare_kind_and_keep() -> None:
    assert OBJECTIVE_KINDS == {
        "ce": "classifier", "dlr": "classifier", "margin": "classifier",
        "paper": "classifier", "through-loop": "classifier",
        "through-loop-bpda": "classifier", "reject-id": "detector",
        "accept-ood": "detector", "end-to-end": "joint"}
    assert {n for n, k in OBJECTIVE_KEEPS.items() if k == "strongest"} == {"reject-id",
                                                                          "accept-ood"}
    assert {"reject-id", "accept-ood", "end-to-end"} == DETECTOR_OBJECTIVES
    det = SumDetector(threshold=-8.0)
    for name in OBJECTIVES:
        net = _dead_loop_net() if name != "dlr" else nn.Linear(4, 3)
        objective = make_objective(name, net, detector=det)
        assert (objective.kind, objective.keep) == (OBJECTIVE_KINDS[name],
                                                    OBJECTIVE_KEEPS[name])
    with pytest.raises(ValueError, match="kind must be one of"):
        Objective("x", lambda x, y: x.sum(1), kind="model")
    with pytest.raises(ValueError, match="keep must be one of"):
        Objective("x", lambda x, y: x.sum(1), keep="best")


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_one_forward_evaluation_agrees_with_loss_and_success(name: str) -> None:
    torch.manual_seed(1)
    net = AttractorNet((4, 6, 4), n_classes=3, output_activation="sigmoid")
    x, y = torch.rand(16, 4), torch.randint(0, 3, (16,))
    det = SumDetector(threshold=-2.0)
    objective = make_objective(name, net, detector=det)
    calls = {"n": 0}
    forward = net.logits

    def counted(z: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return forward(z)

    net.logits = counted  # type: ignore[method-assign]
    loss, success = objective.evaluate(x, y)
    assert calls["n"] <= 1, f"{name}: evaluate ran the classifier {calls['n']} times"
    torch.testing.assert_close(loss, objective(x, y))
    assert torch.equal(success, objective.success(x, y)) and success.dtype == torch.bool
    # detector objectives: score -sum(x) in [-4, 0] against T = -2 both ways
    assert 0.0 < success.float().mean() < 1.0


def test_keep_in_specs() -> None:
    spec = parse_attack_spec("pgd:reject-id:8/255:keep=first-success:steps=5")
    assert spec.attack_params() == {"keep": "first-success", "steps": 5}
    attack = build_attack(spec, make_objective("reject-id", detector=SumDetector(threshold=0.)))
    assert attack.keep == "first-success"
    assert build_attack(parse_attack_spec("square:reject-id:0.1"),
                        make_objective("reject-id", detector=SumDetector(threshold=0.))
                        ).keep == "strongest"
    with pytest.raises(ValueError, match="bad value for parameter keep='best'"):
        parse_attack_spec("fgsm:ce:0.1:keep=best")
