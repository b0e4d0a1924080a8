"""APGD (Croce & Hein 2020): checkpoints, step-size rule, DLR and margin losses by hand,
strength against PGD on a tiny trained model, threat model and seeding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from basin.attacks import (
    APGD,
    PGD,
    apgd_checkpoints,
    dlr_loss,
    make_objective,
    margin_loss,
    parse_attack_spec,
)
from basin.attacks.apgd import _State

EPS = 0.04


def three_class_problem(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform points of [0, 1]^8, class = floor(3 * sum of the first 4 features) mod 3:
    bands that a small tanh network fits with a curved loss surface (a near-linear model
    would send every attack to the same corner of the ball)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 8, generator=g)
    return x, (x[:, :4].sum(1) * 3).floor().long() % 3


@pytest.fixture(scope="module")
def model(one_torch_thread: None) -> nn.Module:
    # one thread: the measured values in the tests below hold for this thread count only
    # (with 2 threads the reductions round differently and APGD-10 / PGD-10 swap by a digit)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                        nn.Linear(64, 3))
    x, y = three_class_problem(2048, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(400):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return net


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_checkpoints_follow_the_paper() -> None:
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (then 1.05 > 1)
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]  # ceil, duplicates merged
    assert apgd_checkpoints(1) == [1]
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        apgd_checkpoints(0)


def test_dlr_and_margin_by_hand() -> None:
    logits = torch.tensor([[2.0, 5.0, 1.0, 3.0], [2.0, 5.0, 1.0, 3.0]])
    y = torch.tensor([0, 1])
    # sorted 5 > 3 > 2 > 1: z_pi1 - z_pi3 = 5 - 2 = 3
    # y=0: -(2 - 5) / 3 = 1;  y=1: -(5 - 3) / 3 = -2/3
    torch.testing.assert_close(dlr_loss(logits, y), torch.tensor([1.0, -2.0 / 3.0]))
    torch.testing.assert_close(margin_loss(logits, y), torch.tensor([3.0, -2.0]))
    # shift and scale invariance of DLR, which the margin lacks
    torch.testing.assert_close(dlr_loss(7 * logits - 4, y), dlr_loss(logits, y))
    torch.testing.assert_close(margin_loss(2 * logits, y), 2 * margin_loss(logits, y))


def test_dlr_needs_three_classes() -> None:
    with pytest.raises(ValueError, match="'dlr' needs at least 3 classes, the logits have 2"):
        dlr_loss(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    two = nn.Linear(3, 2)
    two.n_classes = 2  # type: ignore[assignment]
    with pytest.raises(ValueError, match="'dlr' needs at least 3 classes, the model has 2"):
        make_objective("dlr", two)
    objective = make_objective("dlr", nn.Linear(3, 2))  # unknown class count: fails on use
    with pytest.raises(ValueError, match="use 'margin' instead"):
        objective(torch.rand(4, 3), torch.zeros(4, dtype=torch.long))


def test_apgd_at_least_as_strong_as_pgd_with_the_same_budget(model: nn.Module) -> None:
    x, y = three_class_problem(256, seed=2)
    assert _accuracy(model, x, y) > 0.85
    ce = make_objective("ce", model)
    kwargs = {"steps": 10, "seed": 0, "keep": "strongest"}
    with torch.no_grad():
        clean = ce(x, y).mean().item()
        pgd = ce(PGD(ce, EPS, **kwargs)(x, y), y).mean().item()
        apgd = ce(APGD(ce, EPS, **kwargs)(x, y), y).mean().item()
    # measured: mean CE clean 0.250, PGD-10 3.514, APGD-10 3.533
    assert clean + 3 < pgd < apgd, (clean, pgd, apgd)
    acc_pgd = _accuracy(model, PGD(ce, EPS, steps=10, seed=0)(x, y), y)
    acc_apgd = _accuracy(model, APGD(ce, EPS, steps=10, seed=0)(x, y), y)
    # measured: 0.195 and 0.1875 (clean 0.89)
    assert acc_apgd <= acc_pgd < _accuracy(model, x, y)


@pytest.mark.parametrize("objective", ["ce", "dlr", "margin"])
@pytest.mark.parametrize("keep", ["first-success", "strongest"])
def test_apgd_stays_in_ball_and_is_seeded(model: nn.Module, objective: str, keep: str) -> None:
    x, y = three_class_problem(64, seed=3)
    obj = make_objective(objective, model)
    a = APGD(obj, EPS, steps=15, restarts=2, seed=4, keep=keep)(x, y)
    b = APGD(obj, EPS, steps=15, restarts=2, seed=4, keep=keep)(x, y)
    c = APGD(obj, EPS, steps=15, restarts=2, seed=5, keep=keep)(x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a - x).abs().max() <= EPS + 1e-6 and a.min() >= 0 and a.max() <= 1
    assert torch.equal(APGD(obj, 0.0, steps=15)(x, y), x)


def test_apgd_raises_dlr_and_margin(model: nn.Module) -> None:
    x, y = three_class_problem(128, seed=6)
    for name in ("dlr", "margin"):
        obj = make_objective(name, model)
        x_adv = APGD(obj, EPS, steps=20, keep="strongest")(x, y)
        with torch.no_grad():
            before, after = obj(x, y), obj(x_adv, y)
        assert (after >= before - 1e-6).all()
        assert after.mean() > before.mean() + 0.1, (name, before.mean(), after.mean())


def _state(n: int, rises: list[int], eta: list[float], eta_check: list[float],
           top_loss: list[float], top_check: list[float]) -> _State:
    x = torch.zeros(n, 2)
    f64 = torch.float64
    return _State(x=x, y=None, idx=torch.arange(n), cur=x + 0.5, prev=x + 0.375, grad=x + 1,
                  loss=torch.zeros(n, dtype=f64), eta=torch.tensor(eta, dtype=f64),
                  top=x + 0.25, top_grad=x - 1, top_loss=torch.tensor(top_loss, dtype=f64),
                  rises=torch.tensor(rises), eta_check=torch.tensor(eta_check, dtype=f64),
                  top_check=torch.tensor(top_check, dtype=f64))


def test_checkpoint_halves_on_either_condition() -> None:
    attack = APGD(make_objective("ce", nn.Linear(2, 3)), 0.1, steps=100)
    # 0: 20 of 22 steps rose, f_max improved -> keep; 1: 16 < 0.75 * 22 = 16.5 -> halve;
    # 2: rose often, but neither eta nor f_max changed since the last checkpoint -> halve
    state = _state(3, rises=[20, 16, 20], eta=[0.2, 0.2, 0.1], eta_check=[0.2, 0.2, 0.1],
                   top_loss=[1.0, 1.0, 1.0], top_check=[0.5, 0.5, 1.0])
    attack._checkpoint(state, 22)
    assert state.eta.tolist() == [0.2, 0.1, 0.05]
    assert state.cur[:, 0].tolist() == [0.5, 0.25, 0.25]  # halved inputs restart at the best
    assert state.prev[:, 0].tolist() == [0.375, 0.25, 0.25]
    assert state.grad[:, 0].tolist() == [1.0, -1.0, -1.0]
    assert state.rises.tolist() == [0, 0, 0]
    assert state.eta_check.tolist() == [0.2, 0.1, 0.05] and state.top_check.tolist() == [1.0] * 3


def test_apgd_spec_and_errors(model: nn.Module) -> None:
    spec = parse_attack_spec("apgd:dlr:8/255:steps=100:restarts=2")
    assert spec.attack_params() == {"steps": 100, "restarts": 2}
    with pytest.raises(ValueError, match="unknown parameter 'step_size' for attack 'apgd'"):
        parse_attack_spec("apgd:ce:8/255:step_size=1/255")
    ce = make_objective("ce", model)
    with pytest.raises(ValueError, match="restarts must be an integer >= 1"):
        APGD(ce, EPS, restarts=0)
    with pytest.raises(ValueError, match=r"rho must be a number in \[0, 1\]"):
        APGD(ce, EPS, rho=1.5)
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\]"):
        APGD(ce, EPS, alpha=0.0)
    with pytest.raises(ValueError, match="keep must be one of"):
        APGD(ce, EPS, keep="best")
