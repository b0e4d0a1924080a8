"""The fast paths do the arithmetic of the plain PyTorch code they replace.

``train`` indexes a pre-shuffled tensor instead of using a DataLoader, runs the encoder once per
step for loss and head, and runs the fast kernels of ``basin.training.step``. These tests pin
it to a hand-written loop (``randperm`` from the same derived seed, ``net(x)``, MSE +
cross-entropy, ``torch.optim.Adam``): bit-identical weights with the per-tensor Adam,
bit-identical with the fused one when the reference uses it too, and fast and reference
kernels within float rounding of each other, with and without the eigen term. The projection
estimator's
tangent recursion equals ``torch.func.jvp`` of the stack along the same directions, and the
joint forward + tangent pass of training (``run_stack_with_tangents``) equals the separate
forward and recursion, value and gradients, to float rounding.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from basin.losses import run_stack
from basin.losses.jacobian_projection import (
    frobenius_sq_projection,
    random_unit_directions,
    run_stack_with_tangents,
)
from basin.models.attractor import AttractorNet
from basin.training import TrainConfig, TrainData, build_model, toy_split, train
from basin.training.trainer import derive_seed

WIDTHS = (12, 10, 8, 6, 8, 10, 12)
EPOCHS = 3

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def finetune_config(**changes) -> TrainConfig:
    # Fine-tuning only, the baseline's loss (no eigen term), every epoch run (no early stop).
    return TrainConfig(dataset="toy", widths=WIDTHS, n_classes=3, weights=(0.99, 0.0, 0.01),
                       batch_size=16, max_epochs=EPOCHS, patience=EPOCHS + 1, pretrain=False,
                       learning_rates=(0.02, 0.02, 0.02, 0.01), eval_batch_size=50
                       ).replace(**changes)


def toy_data() -> TrainData:
    return TrainData(*toy_split("train", WIDTHS[0], 3, 200), *toy_split("val", WIDTHS[0], 3, 60))


def trainer_epochs(tmp_path, fused: bool, **changes) -> list[dict[str, torch.Tensor]]:
    """The network's weights after each epoch of ``train``."""
    seen: list[dict[str, torch.Tensor]] = []

    def keep(info) -> None:
        seen.append({k: v.detach().clone() for k, v in info.stage.net.state_dict().items()})

    train(finetune_config(**changes), toy_data(), tmp_path / f"run-{fused}",
          on_epoch_end=keep, fast_kernels=fused)
    return seen


def reference_epochs(fused: bool) -> list[dict[str, torch.Tensor]]:
    """The plain loop the trainer must equal."""
    config, data = finetune_config(), toy_data()
    net, _ = build_model(config)
    stage = net.n_stages
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rates[stage],
                                 **({"fused": True} if fused else {}))
    a1, _, a3 = config.weights
    out = []
    for epoch in range(EPOCHS):
        gen = torch.Generator().manual_seed(derive_seed(config.seed, stage, epoch, 0))
        for idx in torch.randperm(len(data.train_x), generator=gen).split(config.batch_size):
            x, y = data.train_x[idx], data.train_y[idx]
            reconstruction, logits = net(x)
            loss = a1 * F.mse_loss(reconstruction, x) + a3 * F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        out.append({k: v.detach().clone() for k, v in net.state_dict().items()})
    return out


@pytest.mark.parametrize("fused", [False, True])
def test_trainer_steps_equal_the_plain_loop_bit_for_bit(tmp_path, fused):
    ours, reference = trainer_epochs(tmp_path, fused), reference_epochs(fused)
    assert len(ours) == len(reference) == EPOCHS
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert torch.equal(mine[key], theirs[key]), key


@pytest.mark.parametrize("changes", [{}, {"weights": (0.9, 0.05, 0.05),
                                          "jacobian": "projection"}])
def test_fast_kernels_move_weights_only_by_rounding(tmp_path, changes):
    fused = trainer_epochs(tmp_path, True, **changes)[-1]
    plain = trainer_epochs(tmp_path, False, **changes)[-1]
    start, _ = build_model(finetune_config())
    initial = start.state_dict()
    for key in fused:
        moved = (plain[key] - initial[key]).abs().max()
        gap = (fused[key] - plain[key]).abs().max()
        assert moved > 1e-3, key  # training did move the weights ...
        assert gap < 1e-5, key  # ... and the two Adams agree far below that


def test_resume_refuses_another_adam(tmp_path):
    class StopError(Exception):
        pass

    def stop(info) -> None:
        raise StopError

    with pytest.raises(StopError):
        train(finetune_config(), toy_data(), tmp_path / "run", on_epoch_end=stop,
              fast_kernels=True)
    with pytest.raises(ValueError, match="fast_kernels"):
        train(finetune_config(), toy_data(), tmp_path / "run", resume=True,
              fast_kernels=False)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "clamp", "linear"])
@pytest.mark.parametrize("projections", [1, 3])
def test_projection_recursion_equals_jvp_along_the_same_directions(activation, projections):
    torch.manual_seed(0)
    net = AttractorNet((20, 16, 8, 16, 20), n_classes=3, output_activation=activation)
    stack = net.autoencoder_stack()
    x = torch.rand(7, 20)
    ours = frobenius_sq_projection(run_stack(stack, x), projections,
                                   torch.Generator().manual_seed(3))
    v = random_unit_directions((projections, 7), 20, like=x,
                               generator=torch.Generator().manual_seed(3))
    tangents = torch.stack([torch.func.jvp(stack, (x,), (vi,))[1] for vi in v])
    expected = (20 / projections) * tangents.square().sum(-1).sum(0)
    assert expected.min() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "linear"])
@pytest.mark.parametrize("projections", [1, 3])
def test_joint_tangent_pass_equals_the_separate_one(activation, projections):
    torch.manual_seed(1)
    net = AttractorNet((20, 16, 8, 16, 20), n_classes=3, output_activation=activation)
    stack = net.autoencoder_stack()
    params = [p for layer in stack.layers for p in layer.parameters()]
    x = torch.rand(9, 20)
    results = []
    for joint in (False, True):
        gen = torch.Generator().manual_seed(5)
        record = (run_stack_with_tangents(stack, x, projections, gen) if joint
                  else run_stack(stack, x))
        values = frobenius_sq_projection(record, projections, gen)
        loss = values.mean() + record.output.square().mean()
        grads = torch.autograd.grad(loss, params)
        results.append((record.output.detach(), values.detach(), grads))
    (out_a, val_a, grad_a), (out_b, val_b, grad_b) = results
    assert val_a.min() > 0
    torch.testing.assert_close(out_b, out_a, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(val_b, val_a, rtol=1e-5, atol=1e-6)
    for ga, gb in zip(grad_a, grad_b, strict=True):
        assert ga.abs().max() > 0
        torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6)


def test_joint_record_refuses_another_number_of_directions():
    net = AttractorNet((20, 16, 8, 16, 20), n_classes=3)
    record = run_stack_with_tangents(net.autoencoder_stack(), torch.rand(4, 20), 2)
    with pytest.raises(ValueError, match="projections"):
        frobenius_sq_projection(record, 1)


def test_resume_reads_the_older_name_of_the_fast_kernels(tmp_path):
    class StopError(Exception):
        pass

    def stop(info) -> None:
        raise StopError

    with pytest.raises(StopError):
        train(finetune_config(), toy_data(), tmp_path / "run", on_epoch_end=stop)
    config_file = tmp_path / "run" / "config.json"
    stored = json.loads(config_file.read_text())
    del stored["run"]["kernels"]
    stored["run"]["optimizer"] = "adam-fused"
    config_file.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="fast_kernels"):
        train(finetune_config(), toy_data(), tmp_path / "run", resume=True, fast_kernels=False)
    result = train(finetune_config(), toy_data(), tmp_path / "run", resume=True)
    assert len(result.history[-1]["epochs"]) == EPOCHS
