"""Attacks: FGSM against a hand computation, the threat model as a property, strength on a
small trained attractor network, gradient masking exposed by Square, no side effects."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from basin.attacks import (
    ATTACKS,
    FGSM,
    OBJECTIVES,
    PGD,
    BestSoFar,
    Objective,
    Square,
    build_attack,
    gradient_nonzero_fraction,
    make_objective,
    p_selection,
    parse_attack_spec,
)
from basin.attacks.square import window_side
from basin.detectors.base import Detector
from basin.models import AttractorNet

EPS = 0.1
# small budgets so every attack runs in well under a second here
SMALL = {"fgsm": "", "pgd": ":steps=10", "square": ":queries=100", "apgd": ":steps=10"}


def gaussian_problem(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes in [0, 1]^16, means 0.4 and 0.6, overlapping enough for eps=0.1 to bite."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.4 + 0.2 * y[:, None].float() + 0.15 * torch.randn(n, 16, generator=g)
    return x.clamp(0, 1), y


class ReconstructionDetector(Detector):
    """Stand-in detector: score = -MSE(G(x), x), differentiable."""

    name = "recon"

    def __init__(self, model: AttractorNet) -> None:
        super().__init__()
        self.model = model

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return -(self.model.reconstruct(x) - x).square().flatten(1).mean(1)


@pytest.fixture(scope="module")
def trained() -> AttractorNet:
    torch.manual_seed(0)
    # a sigmoid output: with so few units a ReLU output often dies and G collapses
    net = AttractorNet((16, 8, 4, 8, 16), n_classes=2, output_activation="sigmoid")
    x, y = gaussian_problem(256, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(200):
        recon, logits = net(x)
        loss = 5 * F.mse_loss(recon, x) + F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    net.zero_grad(set_to_none=True)
    return net


@pytest.fixture(scope="module")
def detector(trained: AttractorNet) -> ReconstructionDetector:
    det = ReconstructionDetector(trained)
    det.calibrate(gaussian_problem(256, seed=2)[0], acceptance=0.9)
    return det


def test_trained_model_is_usable(trained: AttractorNet) -> None:
    x, y = gaussian_problem(256, seed=3)
    with torch.no_grad():
        acc = (trained.logits(x).argmax(1) == y).float().mean().item()
    assert acc > 0.95
    with torch.no_grad():  # the loop objectives need a G that keeps the class
        looped = trained.reconstruct(trained.reconstruct(x))
        assert (trained.logits(looped).argmax(1) == y).float().mean() > 0.9


# -- FGSM ----------------------------------------------------------------------------------
def test_fgsm_equals_hand_computed_sign_gradient() -> None:
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(3, 6)), rng.normal(size=3)
    x, y = rng.uniform(size=(5, 6)), rng.integers(0, 3, size=5)
    # d CE / d x = (softmax(Wx + b) - onehot(y)) W, worked out by hand
    z = x @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(3)[y]) @ W
    expected = np.clip(x + 0.2 * np.sign(grad), 0, 1)

    linear = nn.Linear(6, 3).double()
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(W))
        linear.bias.copy_(torch.from_numpy(b))
    attack = FGSM(make_objective("ce", linear), 0.2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    first, second = attack(xt, yt), attack(xt, yt)
    assert torch.equal(first, second)
    np.testing.assert_allclose(first.numpy(), expected, rtol=0, atol=1e-12)


# -- the threat model ------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(sorted(ATTACKS)), eps=st.floats(0, 1),
       n=st.integers(1, 4), c=st.integers(1, 2), h=st.integers(1, 4), w=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_every_attack_stays_in_ball_and_box(name: str, eps: float, n: int, c: int, h: int,
                                            w: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 3))
    budget = {"fgsm": "", "pgd": ":steps=3", "square": ":queries=15", "apgd": ":steps=3"}[name]
    spec = parse_attack_spec(f"{name}:ce:{eps!r}{budget}")
    spec_params = spec.params
    attack = build_attack(spec, make_objective("ce", model), seed=seed)
    x_adv = attack(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    again = build_attack(spec, make_objective("ce", model), seed=seed)(x, y)
    assert torch.equal(x_adv, again), f"{name} {spec_params} is not reproducible"


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_epsilon_zero_returns_clean_exactly(name: str, trained: AttractorNet) -> None:
    x, y = gaussian_problem(32, seed=4)
    spec = parse_attack_spec(f"{name}:ce:0/255{SMALL[name]}")
    x_adv = build_attack(spec, make_objective("ce", trained), seed=0)(x, y)
    assert torch.equal(x_adv, x)


# -- strength on the trained model ------------------------------------------------------------
def _inputs_for(objective: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = gaussian_problem(48, seed=seed)
    if objective == "accept-ood":
        # OOD: a checkerboard the autoencoder never saw
        x = torch.tensor([0.05, 0.95] * 8).repeat(48, 1)
    return x, y


# dlr needs >= 3 classes, the trained model has 2 (tests/test_apgd.py covers it)
@pytest.mark.parametrize("objective", sorted(set(OBJECTIVES) - {"dlr"}))
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_raises_its_objective(name: str, objective: str, trained: AttractorNet,
                                     detector: ReconstructionDetector) -> None:
    obj = make_objective(objective, trained, detector=detector, steps=2)
    x, y = _inputs_for(objective, seed=5)
    spec = parse_attack_spec(f"{name}:{objective}:{EPS}{SMALL[name]}")
    x_adv = build_attack(spec, obj, seed=0)(x, y)
    with torch.no_grad():
        before, after = obj(x, y).mean().item(), obj(x_adv, y).mean().item()
    assert after > before + 1e-4, f"{name} did not raise {objective}: {before} -> {after}"


def _accuracy(model: AttractorNet, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model.logits(x).argmax(1) == y).float().mean().item()


def test_pgd_at_least_as_strong_as_fgsm(trained: AttractorNet) -> None:
    x, y = gaussian_problem(128, seed=6)
    objective = make_objective("ce", trained)
    acc_clean = _accuracy(trained, x, y)
    acc_fgsm = _accuracy(trained, FGSM(objective, EPS)(x, y), y)
    acc_pgd = _accuracy(trained, PGD(objective, EPS, steps=20, restarts=2)(x, y), y)
    assert acc_pgd <= acc_fgsm < acc_clean


def test_pgd_restarts_keep_the_best_per_sample(trained: AttractorNet) -> None:
    x, y = gaussian_problem(64, seed=7)
    ce = make_objective("ce", trained)
    no_success = Objective("ce", ce.loss_fn)  # selection by loss alone
    one = PGD(no_success, EPS, steps=3, restarts=1, seed=11)(x, y)
    three = PGD(no_success, EPS, steps=3, restarts=3, seed=11)(x, y)
    with torch.no_grad():
        assert (no_success(three, y) >= no_success(one, y)).all()
        assert (no_success(three, y) > no_success(one, y)).any()


def test_square_is_seeded(trained: AttractorNet) -> None:
    x, y = gaussian_problem(16, seed=8)
    objective = make_objective("ce", trained)
    a = Square(objective, EPS, queries=50, seed=1)(x, y)
    b = Square(objective, EPS, queries=50, seed=1)(x, y)
    c = Square(objective, EPS, queries=50, seed=2)(x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # every pixel of a Square perturbation sits on a face of the ball or of the box
    delta = (a - x).abs()
    assert torch.all(((delta - EPS).abs() < 1e-6) | (a == 0) | (a == 1))


def test_square_schedule_and_window() -> None:
    assert p_selection(0.8, 0, 10000) == 0.8
    assert p_selection(0.8, 10, 10000) == 0.8
    assert p_selection(0.8, 11, 10000) == 0.4
    assert p_selection(0.8, 50, 10000) == 0.4
    assert p_selection(0.8, 51, 10000) == 0.2
    assert p_selection(0.8, 9000, 10000) == 0.8 / 512
    assert p_selection(0.8, 2, 1000) == 0.4  # rescaled: iteration 20 of 10,000
    assert window_side(0.05, 28, 28) == round(math.sqrt(0.05 * 784)) == 6
    assert window_side(1.0, 5, 5) == 4 and window_side(0.001, 5, 5) == 1


class QuantisedLinear(nn.Module):
    """A good classifier of the Gaussian problem whose input gradient is zero everywhere
    (it rounds its input): gradients are masked, robustness is not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = (torch.round(x.flatten(1) * 4) / 4 - 0.5).sum(1)
        return torch.stack([-evidence, evidence], dim=1) * 4


def test_square_exposes_gradient_masking() -> None:
    model = QuantisedLinear()
    x, y = gaussian_problem(64, seed=9)
    objective = make_objective("ce", model)
    assert gradient_nonzero_fraction(objective, x, y) == 0.0

    def accuracy(images: torch.Tensor) -> float:
        return (model(images).argmax(1) == y).float().mean().item()

    x_pgd = PGD(objective, 0.15, steps=10, random_start=False)(x, y)
    x_square = Square(objective, 0.15, queries=100, image_shape=(1, 4, 4))(x, y)
    assert torch.equal(x_pgd, x)  # the zero gradient gives PGD nowhere to go
    assert accuracy(x) > 0.9
    assert accuracy(x_square) < accuracy(x) - 0.5


# -- no side effects, devices and dtypes ------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("training", [False, True])
def test_attacks_leave_model_alone_and_keep_dtype(name: str, training: bool) -> None:
    torch.manual_seed(0)
    net = AttractorNet((16, 8, 4, 8, 16), n_classes=2).double().train(training)
    x, y = gaussian_problem(8, seed=10)
    x = x.double()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    spec = parse_attack_spec(f"{name}:ce:{EPS}{SMALL[name]}")
    with torch.no_grad():  # attacks must enable gradients themselves
        x_adv = build_attack(spec, make_objective("ce", net), seed=0)(x, y)
    assert x_adv.dtype == torch.float64 and not x_adv.requires_grad
    assert net.training is training
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def test_attack_rejects_bad_inputs(trained: AttractorNet) -> None:
    x, y = gaussian_problem(4, seed=11)
    attack = FGSM(make_objective("ce", trained), EPS)
    with pytest.raises(ValueError, match=r"x: values must lie in \[0, 1\]"):
        attack(x + 2, y)
    with pytest.raises(ValueError, match="y: objective 'ce' needs labels"):
        attack(x, None)
    with pytest.raises(ValueError, match=r"y: expected integer labels of shape \(4,\)"):
        attack(x, y[:2])
    with pytest.raises(ValueError, match=r"epsilon must lie in \[0, 1\]"):
        FGSM(make_objective("ce", trained), 1.5)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        PGD(make_objective("ce", trained), EPS, steps=0)
    with pytest.raises(ValueError, match="not square images; pass image_shape"):
        Square(make_objective("ce", trained), EPS, queries=5)(x[:, :15].clone(), y)


# -- keep: first success or strongest ---------------------------------------------------------
@pytest.mark.parametrize("objective", ["ce", "reject-id", "end-to-end"])
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_keep_strongest_is_never_worse_than_clean(name: str, objective: str,
                                                  trained: AttractorNet,
                                                  detector: ReconstructionDetector) -> None:
    obj = make_objective(objective, trained, detector=detector)
    x, y = gaussian_problem(48, seed=12)
    # a tiny step from a random start: many inputs end worse off than where they began
    params = {"fgsm": "", "pgd": ":steps=1:step_size=0.001", "square": ":queries=3",
              "apgd": ":steps=1"}[name]
    spec = parse_attack_spec(f"{name}:{objective}:{EPS}{params}:keep=strongest")
    x_adv = build_attack(spec, obj, seed=0)(x, y)
    with torch.no_grad():
        clean, attacked = obj(x, y), obj(x_adv, y)
    assert (attacked >= clean - 1e-6).all(), f"{name} keep=strongest lost to clean"
    assert (x_adv - x).abs().max() <= EPS + 1e-6


def test_random_start_alone_can_be_worse_than_clean(trained: AttractorNet) -> None:
    # why keep="strongest" seeds with the clean input: without it this attack helps the model
    x, y = gaussian_problem(48, seed=12)
    ce = Objective("ce", make_objective("ce", trained).loss_fn)  # no success test
    x_adv = PGD(ce, EPS, steps=1, step_size=0.001)(x, y)
    with torch.no_grad():
        assert (ce(x_adv, y) < ce(x, y) - 1e-4).float().mean() > 0.2


@pytest.mark.parametrize("name", ["pgd", "apgd"])
def test_strongest_dominates_first_success_on_the_same_trajectories(
        name: str, trained: AttractorNet, detector: ReconstructionDetector) -> None:
    obj = make_objective("reject-id", trained, detector=detector)
    assert obj.keep == "strongest" and obj.kind == "detector"
    x, _ = gaussian_problem(64, seed=13)
    cls = ATTACKS[name]
    first = cls(obj, EPS, steps=10, seed=2, keep="first-success")(x)
    strongest = cls(obj, EPS, steps=10, seed=2)(x)  # the objective's default
    with torch.no_grad():
        s_first, s_best = obj(first), obj(strongest)
        assert (s_best >= s_first - 1e-6).all()
        assert (s_best > s_first + 1e-4).float().mean() > 0.2  # measured: pgd 0.98, apgd 0.25
        assert obj.success(first).float().mean() > 0.8  # stopped just past the threshold


def test_fgsm_strongest_falls_back_to_clean() -> None:
    # loss -|x1 + x2 - 1|: the sign step of 0.2 per feature overshoots a sum of 1.01 to 0.61
    objective = Objective("hand", lambda x, y: -(x.sum(1) - 1.0).abs(), needs_labels=False)
    x = torch.tensor([[0.505, 0.505], [0.2, 0.2]])
    plain = FGSM(objective, 0.2)(x)
    kept = FGSM(objective, 0.2, keep="strongest")(x)
    torch.testing.assert_close(plain, torch.tensor([[0.305, 0.305], [0.4, 0.4]]))
    # row 0: -|0.61 - 1| = -0.39 < -0.01 at clean: keep clean; row 1: -0.2 > -0.6: keep step
    torch.testing.assert_close(kept, torch.tensor([[0.505, 0.505], [0.4, 0.4]]))


def test_first_success_drops_finished_inputs_without_changing_the_rest(
        trained: AttractorNet) -> None:
    x, y = gaussian_problem(64, seed=14)
    ce = make_objective("ce", trained)
    whole = PGD(ce, EPS, steps=10, restarts=2, seed=5)(x, y)
    # the same attack on a row alone: the random start of that row is the same draw
    for row in (0, 17, 63):
        alone = PGD(ce, EPS, steps=10, restarts=2, seed=5)(x, y)[row]
        torch.testing.assert_close(whole[row], alone)
    with torch.no_grad():
        wrong = trained.logits(whole).argmax(1) != y
    assert (wrong == ce.success(whole, y)).all() and wrong.float().mean() > 0.3


def test_best_so_far_never_writes_into_a_held_candidate() -> None:
    x = torch.zeros(3, 2)
    best = BestSoFar(x, torch.zeros(3))
    first = torch.full((3, 2), 0.5)
    best.update(first, torch.ones(3), torch.zeros(3, dtype=torch.bool), torch.arange(3))
    assert best.x.data_ptr() == first.data_ptr()  # every row improved: held, not copied
    second = torch.full((3, 2), 0.75)
    best.update(second, torch.tensor([2.0, 0.0, 2.0]), torch.tensor([False, False, True]),
                torch.arange(3))
    assert torch.equal(first, torch.full((3, 2), 0.5))  # the attack's iterate is untouched
    assert best.x[:, 0].tolist() == [0.75, 0.5, 0.75]
    assert best.loss.tolist() == [2.0, 1.0, 2.0] and best.success.tolist() == [False, False,
                                                                                True]
    assert not torch.equal(x, best.x) and torch.equal(x, torch.zeros(3, 2))
