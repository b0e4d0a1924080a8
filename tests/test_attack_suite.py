"""The strongest suite (worst case per input over its members) and AutoAttack's sanity flags."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from basin.attacks import (
    PGD,
    Objective,
    Square,
    WorstCase,
    autoattack_flags,
    blackbox_flag,
    flag_ok,
    make_objective,
    probability_output_flag,
    randomness_flag,
    resolve_attacks,
    strongest_specs,
    strongest_suite,
    zero_gradient_flag,
)
from basin.detectors.base import Detector

EPS = 0.04
BUDGET = {"apgd_steps": 8, "pgd_steps": 6, "pgd_restarts": 2, "square_queries": 30}


def bands(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform [0, 1]^16 (a 4x4 image), class = argmax of three fixed random projections."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 16, generator=g)
    w = torch.randn(16, 3, generator=torch.Generator().manual_seed(99))
    return x, ((x - 0.5) @ w).argmax(1)


class Net(nn.Module):
    n_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 48), nn.Tanh(), nn.Linear(48, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture(scope="module")
def model() -> Net:
    torch.manual_seed(0)
    net = Net()
    x, y = bands(1024, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


class Energy(Detector):
    """score = logsumexp of the logits (higher = in-distribution), differentiable."""

    def __init__(self, net: nn.Module, threshold: float) -> None:
        super().__init__(threshold=threshold)
        self.net = net

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.net(x), dim=1)


def test_strongest_specs_name_the_members() -> None:
    assert strongest_specs("ce", 0.1, n_classes=10) == [
        "apgd:ce:0.1:steps=100", "apgd:dlr:0.1:steps=100", "pgd:ce:0.1:steps=40:restarts=2",
        "square:ce:0.1:queries=5000"]
    assert strongest_specs("ce", 0.1, n_classes=2)[1] == "apgd:margin:0.1:steps=100"
    assert [s.split(":")[0] for s in strongest_specs("reject-id", 0.1)] == ["apgd", "pgd",
                                                                            "square"]
    assert resolve_attacks("strongest", "end-to-end", 0.1, n_classes=5)[1] == \
        "apgd:dlr:0.1:steps=100"
    assert resolve_attacks("pgd:ce:0.1", "ce", 0.1) == ["pgd:ce:0.1"]
    with pytest.raises(ValueError, match="n_classes is needed for objective 'ce'"):
        strongest_specs("ce", 0.1)
    with pytest.raises(ValueError, match="attacks: unknown set 'strongst'; choose from"):
        resolve_attacks("strongst", "ce", 0.1)


def test_worst_case_dominates_every_member_per_input(model: Net) -> None:
    x, _ = bands(96, seed=2)
    det = Energy(model, threshold=0.0)
    suite = strongest_suite("reject-id", model, EPS, detector=det, seed=3, **BUDGET)
    assert suite.keep == "strongest" and len(suite.members) == 3
    result = suite.run(x)
    objective = suite.objective
    with torch.no_grad():
        clean = objective(x).double()
        assert (result.loss >= clean - 1e-9).all()
        for label, member in suite.members:
            alone = objective(member.perturb(x)).double()
            torch.testing.assert_close(result.member_loss[label], alone)
            assert (result.loss >= alone - 1e-9).all(), label
        torch.testing.assert_close(objective(result.x_adv).double(), result.loss)
    # several members win somewhere (measured: APGD 63, PGD 15, Square 18 of the 96 inputs)
    counts = {label: result.winner.count(label) for label, _ in suite.members}
    assert sum(counts.values()) + result.winner.count("clean") == 96
    assert sum(c > 0 for c in counts.values()) >= 2, counts
    assert (result.x_adv - x).abs().max() <= EPS + 1e-6


def test_first_success_suite_attacks_only_the_survivors(model: Net) -> None:
    x, y = bands(128, seed=4)
    suite = strongest_suite("ce", model, EPS, seed=0, **BUDGET)
    assert [label.split(":")[1] for label, _ in suite.members] == ["ce", "dlr", "ce", "ce"]
    result = suite.run(x, y)
    _, first = suite.members[0]
    with torch.no_grad():
        wrong = model(result.x_adv).argmax(1) != y
        alone = model(first.perturb(x, y)).argmax(1) != y
    assert torch.equal(wrong, result.success)
    assert (wrong | ~alone).all()  # whatever the first member breaks stays broken
    later = result.member_loss[suite.members[1][0]]
    assert torch.isnan(later[alone]).all()  # finished inputs are not attacked again
    assert wrong.float().mean() >= alone.float().mean()
    assert set(result.winner) <= {"clean", *(label for label, _ in suite.members)}
    torch.testing.assert_close(suite.perturb(x, y), result.x_adv)


def test_worst_case_checks_its_members(model: Net) -> None:
    ce = make_objective("ce", model)
    with pytest.raises(ValueError, match="members: expected at least one"):
        WorstCase(ce, [], EPS)
    with pytest.raises(ValueError, match=r"epsilon 0\.1 exceeds the suite's 0\.04"):
        WorstCase(ce, [("pgd", PGD(ce, 0.1))], EPS)
    with pytest.raises(ValueError, match="labels must be unique"):
        WorstCase(ce, [("a", PGD(ce, EPS)), ("a", Square(ce, EPS))], EPS)


# -- sanity flags -----------------------------------------------------------------------------
class Noisy(nn.Module):
    """A randomised defence: Gaussian noise on the input at every forward."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + 0.05 * torch.randn_like(x))


class Rounded(nn.Module):
    """Zero input gradient everywhere: the input is quantised before the network."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 8) / 8)


def test_sanity_flags_fire_on_broken_models_only(model: Net) -> None:
    x, y = bands(32, seed=5)
    plain = autoattack_flags(model, make_objective("ce", model), x, y,
                             whitebox_accs={"apgd": 0.3}, blackbox_accs={"square": 0.5})
    assert plain == ["deterministic forward: OK", "model outputs logits: OK",
                     "zero gradients on 0.0% of inputs: OK",
                     "black-box (square) does not beat white-box: OK"]
    assert all(flag_ok(f) for f in plain)

    noisy = randomness_flag(Noisy(model), x)
    assert noisy.startswith("randomised defence: two forwards of the same input differ")
    rounded = zero_gradient_flag(make_objective("ce", Rounded(model)), x, y)
    assert rounded.startswith("zero gradients on 100.0% of inputs: suspected gradient masking")
    softmax = nn.Sequential(model, nn.Softmax(dim=1))
    assert probability_output_flag(softmax, x).startswith("model outputs probabilities")
    assert blackbox_flag({"apgd": 0.4}, {"square": 0.2}).startswith(
        "suspected gradient masking: square attack beats")
    assert not any(flag_ok(f) for f in (noisy, rounded, probability_output_flag(softmax, x)))
    # a model in eval mode with dropout is deterministic; in train mode it is randomised
    dropout = nn.Sequential(nn.Dropout(0.5), model)
    assert flag_ok(randomness_flag(dropout.eval(), x))
    assert not flag_ok(randomness_flag(dropout.train(), x))


def test_zero_gradient_flag_counts_partial_masking() -> None:
    weights = torch.tensor([1.0, 0.0, 2.0, 0.0])
    objective = Objective("hand", lambda x, y: x[:, 0] * weights, needs_labels=False)
    assert zero_gradient_flag(objective, torch.rand(4, 2)).startswith(
        "zero gradients on 50.0% of inputs: suspected")


def test_joint_suite_success_means_wrong_and_accepted(model: Net) -> None:
    x, y = bands(64, seed=6)
    with torch.no_grad():
        threshold = float(torch.logsumexp(model(x), 1).quantile(0.3))
    det = Energy(model, threshold=threshold)
    suite = strongest_suite("end-to-end", model, 0.1, detector=det, **BUDGET)
    assert suite.keep == "first-success" and suite.objective.kind == "joint"
    result = suite.run(x, y)
    with torch.no_grad():
        wrong = model(result.x_adv).argmax(1) != y
        accepted = det.score(result.x_adv) >= threshold
        clean_hits = (model(x).argmax(1) != y) & (det.score(x) >= threshold)
    assert torch.equal(result.success, wrong & accepted)
    # measured: 0.75 of the inputs wrong and accepted, none before the attack
    assert result.success.float().mean() > clean_hits.float().mean() + 0.5
