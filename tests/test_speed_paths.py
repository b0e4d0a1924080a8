"""The trainer's fast path saves Python work without changing a single bit.

``FastAdam`` calls torch's fused Adam kernel directly on lists it keeps between steps; its
parameters and moments must equal ``torch.optim.Adam(fused=True)``'s exactly, also across a
``load_state_dict`` and a step where a parameter has no gradient. ``stage_loss`` on the fast
path computes Eq. 4 without ``attractor_loss``'s argument checks; its terms and gradients
must equal ``attractor_loss``'s exactly, for every stage, with and without the eigen term.
The attacks hand colour images to the model in channels_last order (a faster convolution on a
CPU) and find the same adversarial points as in NCHW order, up to rounding. The paper's FGSM
objective on a piecewise-linear network takes its step without computing the Jacobians whose
term has no input gradient: the same step, bit for bit. A fixed-step iteration computes its
``converged`` flags only when they are read (the Pearson score never reads them).
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from basin.attacks import (
    FGSM,
    PGD,
    Square,
    channels_last_inputs,
    make_objective,
    model_layout,
)
from basin.attacks import objectives as objectives_module
from basin.losses import LossWeights, attractor_loss, run_stack
from basin.models import dynamics
from basin.models.attractor import AttractorNet
from basin.training import TrainConfig, build_model
from basin.training.stages import build_stage
from basin.training.step import FastAdam, stage_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WIDTHS = (30, 20, 12, 8, 12, 20, 30)


def _params(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=gen))
            for shape in ((7, 5), (5,), (3, 7))]


def _set_grads(params: list[torch.nn.Parameter], step: int, skip: int | None = None) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        p.grad = None if i == skip else torch.randn(p.shape, generator=gen)


def test_fast_adam_equals_fused_adam_bit_for_bit() -> None:
    ours, theirs = _params(0), _params(0)
    fast = FastAdam(ours, lr=0.01)
    plain = torch.optim.Adam(theirs, lr=0.01, fused=True)
    for step in range(12):
        skip = 1 if step == 5 else None  # a parameter without a gradient is skipped
        for params, opt in ((ours, fast), (theirs, plain)):
            _set_grads(params, step, skip)
            opt.step()
        if step == 7:  # a resumed optimiser: its state replaced from a (copied) state dict
            fast.load_state_dict(copy.deepcopy(plain.state_dict()))
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b), step
    assert float((ours[0] - _params(0)[0]).detach().abs().max()) > 0.01  # the steps moved it
    for a, b in zip(ours, theirs, strict=True):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(fast.state[a][key], plain.state[b][key]), key


def test_fast_adam_state_dict_round_trips() -> None:
    params = _params(1)
    fast = FastAdam(params, lr=0.005)
    for step in range(3):
        _set_grads(params, step)
        fast.step()
    state = fast.state_dict()
    assert float(state["state"][0]["step"]) == 3.0
    other = FastAdam(_params(1), lr=0.005)
    other.load_state_dict(state)
    assert torch.equal(other.state_dict()["state"][2]["exp_avg"], state["state"][2]["exp_avg"])


@pytest.mark.parametrize("stage_index", [0, 1, 2, 3])
@pytest.mark.parametrize("weights,jacobian,reduction", [
    ((0.99, 0.0, 0.01), "exact-fast", "mean"),
    ((0.988, 0.002, 0.01), "exact-fast", "mean"),
    ((0.5, 0.1, 0.4), "exact-fast", "sum"),
])
def test_fast_stage_loss_equals_attractor_loss_bit_for_bit(stage_index, weights, jacobian,
                                                           reduction) -> None:
    config = TrainConfig(dataset="toy", widths=WIDTHS, n_classes=4, weights=weights,
                         jacobian=jacobian, mse_reduction=reduction)
    net, heads = build_model(config)
    stage = build_stage(net, heads, stage_index, config.learning_rates)
    gen = torch.Generator().manual_seed(stage_index)
    h = stage.inputs(torch.rand(16, WIDTHS[0], generator=gen), 16)
    y = torch.randint(0, 4, (16,), generator=gen)
    params = list(stage.parameters())
    lw = LossWeights(*weights)
    forward = run_stack(stage.stack, h)
    expected = attractor_loss(stage.stack, h, h, stage.logits_from(forward.activations), y,
                              lw, jacobian=jacobian, forward=forward,
                              mse_reduction=reduction)
    got = stage_loss(stage, h, y, config, lw, None, fast=True)
    for name in ("total", "reconstruction", "eigen", "classification"):
        assert torch.equal(getattr(got, name), getattr(expected, name)), name
    assert float(got.eigen) > 0 if weights[1] > 0 else float(got.eigen) == 0
    grads_expected = torch.autograd.grad(expected.total, params)
    grads_got = torch.autograd.grad(got.total, params)
    for a, b in zip(grads_got, grads_expected, strict=True):
        assert torch.equal(a, b)
    assert any(float(g.abs().max()) > 0 for g in grads_got)


class _LayoutSpy(torch.nn.Module):
    """A small convnet that records whether each batch it saw was channels_last."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.head = torch.nn.Linear(8 * 6 * 6, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.is_contiguous(memory_format=torch.channels_last)
                         and not x.is_contiguous())
        return self.head(torch.relu(self.conv(x)).flatten(1))


def test_model_layout_changes_strides_only_for_colour_cpu_images() -> None:
    colour, grey = torch.rand(2, 3, 5, 5), torch.rand(2, 1, 5, 5)
    moved = model_layout(colour)
    assert moved.is_contiguous(memory_format=torch.channels_last) and not moved.is_contiguous()
    assert torch.equal(moved, colour)
    assert model_layout(grey) is grey and model_layout(colour.flatten(1)).dim() == 2
    with channels_last_inputs(False):
        assert model_layout(colour) is colour


def test_attacks_hand_channels_last_to_the_model_with_the_same_outcome() -> None:
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    model = _LayoutSpy()
    y = model(x).argmax(1)
    results = {}
    for enabled in (True, False):
        model.seen.clear()
        with channels_last_inputs(enabled):
            objective = make_objective("ce", model)
            x_adv = PGD(objective, 8 / 255, steps=10, seed=0).perturb(x, y)
            x_sq = Square(objective, 8 / 255, queries=30, seed=0).perturb(x, y)
        assert model.seen and all(model.seen) is enabled and any(model.seen) is enabled
        assert x_adv.is_contiguous() and x_sq.is_contiguous()  # the caller's layout back
        assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-7
        with torch.no_grad():
            results[enabled] = (x_adv, torch.nn.functional.cross_entropy(
                model(x_adv), y, reduction="none"), x_sq)
    (a, loss_a, sq_a), (b, loss_b, sq_b) = results[True], results[False]
    # the attack raised the loss, and both layouts found the same points up to rounding
    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
    assert float((loss_b - clean).mean()) > 0.05
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-4, atol=1e-5)
    assert float((a != b).float().mean()) < 0.01
    assert float((sq_a != sq_b).float().mean()) < 0.01


def test_paper_fgsm_takes_the_same_step_without_the_jacobians(monkeypatch) -> None:
    torch.manual_seed(0)
    net = AttractorNet((784, 24, 12, 24, 784))
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(3))
    objective = make_objective("paper", net, weights=LossWeights(0.988, 0.002, 0.01))
    assert objective.gradient_fn is not None
    x_var = x.clone().requires_grad_(True)
    (full,) = torch.autograd.grad(objective(x_var, y).sum(), x_var)
    (cheap,) = torch.autograd.grad(objective.gradient_fn(x_var, y).sum(), x_var)
    assert torch.equal(cheap, full) and float(full.abs().max()) > 0
    reference = FGSM(dataclasses.replace(objective, gradient_fn=None), 20 / 255).perturb(x, y)
    calls = []
    real = objectives_module.jacobian_frobenius_sq
    monkeypatch.setattr(objectives_module, "jacobian_frobenius_sq",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    x_adv = FGSM(objective, 20 / 255).perturb(x, y)
    assert torch.equal(x_adv, reference) and not torch.equal(x_adv, x)
    assert calls == []  # no per-sample Jacobian was computed for the step
    objective(x, y)
    assert calls == [1]  # ... though the loss value still has its eigen term
    # a sigmoid output makes the Jacobian depend on x: no shortcut there
    sigmoid = AttractorNet((784, 24, 12, 24, 784), output_activation="sigmoid")
    assert make_objective("paper", sigmoid, weights=LossWeights(0.988, 0.002, 0.01)
                          ).gradient_fn is None


def test_fixed_step_iteration_computes_convergence_only_when_read(monkeypatch) -> None:
    calls = []
    real = dynamics._max_abs_change
    monkeypatch.setattr(dynamics, "_max_abs_change",
                        lambda new, old: calls.append(1) or real(new, old))
    x = torch.tensor([[0.5, 0.5], [0.2, 0.9]])
    result = dynamics.iterate(lambda t: t.clamp(0.3, 1.0), x, steps=2)  # row 0 is fixed
    assert torch.equal(result.final, torch.tensor([[0.5, 0.5], [0.3, 0.9]]))
    assert calls == []  # the score reads only .final
    assert result.converged.tolist() == [True, True] and calls == [1]
    assert result.converged.tolist() == [True, True] and calls == [1]  # computed once
    once = dynamics.iterate(lambda t: t.clamp(0.3, 1.0), x, steps=1)
    assert once.converged.tolist() == [True, False]
