"""basin's PGD against torchattacks' PGD on the same model and images: time and strength.

Usage: ``python benchmarks/attacks.py [--n 1000] [--eps 20/255] [--steps 40] [--threads 1]
[--run DIR] [--repeats 3] [--mirror DIR]``.

The model is the AttractorNet of a basin run folder (``--run``, its classifier head attacked
through ``logits``) or, without ``--run``, a small MLP classifier (784-256-128-10, ReLU, the
size of the attractor paper's baseline) trained for ``--epochs`` epochs on MNIST from the
mirror and cached under ``--cache``. Both attacks run PGD with the same step size (basin's
default ``2.5 * eps / steps`` unless ``--step-size``), the same number of steps and a uniform
random start, in one process, alternating, ``--repeats`` times (repeat ``r`` seeds both
random starts with ``r``); the table shows the fastest and median time of each, their ratio (basin /
torchattacks, the target is at most 1.0) and the robust accuracy of each, mean and per seed
(basin keeps each input's first misclassified iterate; torchattacks returns its last
iterate).

torchattacks is not a basin dependency; install it next to basin for this benchmark only::

    .venv/bin/pip install --no-deps torchattacks==3.5.1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from basin.attacks import PGD, make_objective, parse_epsilon
from basin.data import load_dataset
from basin.training.run import load_run

INSTALL = ".venv/bin/pip install --no-deps torchattacks==3.5.1"


class Logits(nn.Module):
    """What torchattacks calls: ``forward(x) -> logits`` of a basin model."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net.logits(x) if hasattr(self.net, "logits") else self.net(x)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128),
                         nn.ReLU(), nn.Linear(128, 10))


def trained_mlp(mirror: str | None, epochs: int, cache: Path) -> nn.Module:
    """The MLP from ``cache`` if there, else trained on MNIST train (Adam, batch 128)."""
    net = mlp()
    if cache.is_file():
        net.load_state_dict(torch.load(cache, weights_only=True))
        return net.eval()
    train = load_dataset("mnist", "train", mirror=mirror)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for epoch in range(epochs):
        order = torch.randperm(len(train.labels), generator=generator)
        for i in range(0, len(order), 128):
            rows = order[i:i + 128]
            loss = F.cross_entropy(net(train.images[rows]), train.labels[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"trained epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.3f}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), cache)
    return net.eval()


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def timed(fn: Callable[[int], Tensor], seed: int) -> tuple[float, Tensor]:
    start = time.perf_counter()
    out = fn(seed)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="MNIST test images attacked")
    parser.add_argument("--eps", default="20/255", help="L-inf radius, e.g. 20/255")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--step-size", default=None, help="default 2.5 * eps / steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run", type=Path, default=None, help="a basin AttractorNet run folder")
    parser.add_argument("--epochs", type=int, default=2, help="MLP epochs (without --run)")
    parser.add_argument("--cache", type=Path, default=Path("runs/benchmarks/mnist-mlp.pt"),
                        help="where the trained MLP is kept (without --run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mirror", default=None, help="data mirror [default: "
                                                       "$BASIN_DATA_MIRROR]")
    args = parser.parse_args()
    if min(args.n, args.steps, args.threads, args.repeats, args.epochs) < 1:
        parser.error("--n, --steps, --threads, --repeats and --epochs must be >= 1")
    try:
        import torchattacks
    except ImportError:
        parser.error(f"torchattacks is not installed; for this benchmark only: {INSTALL}")
    torch.set_num_threads(args.threads)
    eps = parse_epsilon(args.eps)
    alpha = 2.5 * eps / args.steps if args.step_size is None else parse_epsilon(args.step_size)

    if args.run is not None:
        net: nn.Module = load_run(args.run).net
        source = f"AttractorNet run {args.run}"
    else:
        net = trained_mlp(args.mirror, args.epochs, args.cache)
        source = f"MLP 784-256-128-10, {args.epochs} epochs"
    model = Logits(net).eval()
    test = load_dataset("mnist", "test", mirror=args.mirror)
    x, y = test.images[:args.n].contiguous(), test.labels[:args.n]

    objective = make_objective("ce", net)
    ta_pgd = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=args.steps,
                              random_start=True)

    def basin_run(seed: int) -> Tensor:
        return PGD(objective, eps, steps=args.steps, step_size=alpha, seed=seed)(x, y)

    def torchattacks_run(seed: int) -> Tensor:
        torch.manual_seed(seed)  # its random start draws from the global generator
        return ta_pgd(x, y)

    PGD(objective, eps, steps=2, step_size=alpha)(x[:8], y[:8])  # warm-up of both paths
    ta_pgd(x[:8], y[:8])
    times: dict[str, list[float]] = {"basin": [], "torchattacks": []}
    robust: dict[str, list[float]] = {"basin": [], "torchattacks": []}
    for seed in range(args.repeats):  # alternating, each repeat with its own random starts
        for name, run in (("basin", basin_run), ("torchattacks", torchattacks_run)):
            seconds, x_adv = timed(run, seed)
            times[name].append(seconds)
            robust[name].append(accuracy(model, x_adv, y))
    best = {name: min(t) for name, t in times.items()}
    print(f"PGD-{args.steps}, eps {args.eps}, step size {alpha:.5f}, {args.n} MNIST test "
          f"images, {args.threads} thread(s), {args.repeats} repeats (seeds 0..."
          f"{args.repeats - 1}); model: {source}")
    print(f"clean accuracy {100 * accuracy(model, x, y):.1f}%")
    print(f"{'attack':<14} {'best s':>7} {'median s':>9} {'robust acc (mean)':>18}  per seed")
    for name in ("basin", "torchattacks"):
        accs = robust[name]
        print(f"{name:<14} {best[name]:>7.2f} {statistics.median(times[name]):>9.2f} "
              f"{100 * statistics.fmean(accs):>17.2f}%  "
              f"{' '.join(f'{100 * a:.1f}' for a in accs)}")
    print(f"ratio basin / torchattacks (best times): "
          f"{best['basin'] / best['torchattacks']:.2f} (target <= 1.0)")


if __name__ == "__main__":
    main()
