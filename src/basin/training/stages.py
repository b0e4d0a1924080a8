"""The four training stages of the attractor paper as one uniform interface.

Stages ``0 .. n-1`` are the layer-wise pretraining stages (section 2.4): stage k is the
single-hidden-layer autoencoder ``net.stage_stack(k)`` (encoder layer k and its mirrored
decoder layer) fed with ``net.stage_input(x, k)``, the frozen activations of the layers below,
and reconstructing them; a stage-own head ``nn.Linear(widths[k+1], n_classes)`` classifies its
hidden activations, so all three losses apply in every stage (section 2.5.2). Stage ``n`` is
fine-tuning: the whole autoencoder ``net.autoencoder_stack()`` on flat images with the
network's own head. Because the layers below stage k are frozen, its inputs are computed once
per stage (``inputs``) instead of once per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from basin.models.attractor import AttractorNet
from basin.models.layer_stack import LayerStack


@dataclass
class Stage:
    """One stage: what it trains, on which inputs, with which head and learning rate."""

    index: int
    name: str
    lr: float
    net: AttractorNet
    stack: LayerStack
    head: nn.Linear
    modules: tuple[nn.Module, ...]
    bottleneck: int  # position of the head's input among the stack's activations

    @property
    def is_finetune(self) -> bool:
        return self.index == self.net.n_stages

    def parameters(self) -> Iterator[nn.Parameter]:
        """The parameters this stage trains (everything else is frozen)."""
        for module in self.modules:
            yield from module.parameters()

    @torch.no_grad()
    def inputs(self, x: Tensor, batch_size: int) -> Tensor:
        """Flat stage inputs of images ``x`` (no gradient: the layers below are frozen)."""
        if self.is_finetune or self.index == 0:
            return x.reshape(len(x), -1)
        return torch.cat([self.net.stage_input(chunk, self.index)
                          for chunk in x.split(batch_size)])

    def logits(self, h: Tensor) -> Tensor:
        """Class logits of flat stage inputs ``h``."""
        if self.is_finetune:
            return self.net.logits(h)
        encoder_layer = self.stack.layers[0]
        return self.head(torch.relu(encoder_layer(h)))

    def logits_from(self, activations: list[Tensor]) -> Tensor:
        """Class logits from a forward record of ``stack`` (``activations[0]`` the input),
        so a training step runs the encoder once for both the loss and the head."""
        return self.head(activations[self.bottleneck])

    @torch.no_grad()
    def accuracy(self, h: Tensor, labels: Tensor, batch_size: int) -> float:
        """Fraction of ``h`` (flat stage inputs) that this stage's head classifies right."""
        correct = 0
        for hb, yb in zip(h.split(batch_size), labels.split(batch_size), strict=True):
            correct += int((self.logits(hb).argmax(dim=1) == yb).sum())
        return correct / len(labels)


def make_stage_heads(net: AttractorNet) -> nn.ModuleList:
    """One classification head per pretraining stage, on that stage's hidden width."""
    return nn.ModuleList(nn.Linear(net.widths[k + 1], net.n_classes)
                         for k in range(net.n_stages))


def stage_name(index: int, n_stages: int) -> str:
    return "finetune" if index == n_stages else f"pretrain-{index + 1}"


def build_stage(net: AttractorNet, heads: nn.ModuleList, index: int,
                learning_rates: tuple[float, ...]) -> Stage:
    """Stage ``index`` of ``net`` (``net.n_stages`` is fine-tuning)."""
    n = net.n_stages
    if not 0 <= index <= n:
        raise ValueError(f"stage: must be in [0, {n}], got {index}")
    if len(learning_rates) != n + 1:
        raise ValueError(f"learning_rates: need {n + 1} rates, got {len(learning_rates)}")
    if index == n:
        return Stage(index, stage_name(index, n), learning_rates[index], net,
                     net.autoencoder_stack(), net.head, (net,), bottleneck=n)
    encoder_layer, decoder_layer = net.stage_layers(index)
    head = heads[index]
    if not isinstance(head, nn.Linear):
        raise TypeError(f"heads[{index}]: expected an nn.Linear, got {type(head).__name__}")
    return Stage(index, stage_name(index, n), learning_rates[index], net,
                 net.stage_stack(index), head, (encoder_layer, decoder_layer, head),
                 bottleneck=1)


def stage_order(n_stages: int, pretrain: bool) -> list[int]:
    """Stage indices a run goes through: all of them, or fine-tuning only."""
    return list(range(n_stages + 1)) if pretrain else [n_stages]
