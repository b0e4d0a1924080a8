"""Speed of the attractor reproduction's hot paths, each ratio printed with its target (issue 16).

Usage: ``python benchmarks/speed.py [--threads 1] [--repeats 30] [--seeds 3] [--epochs 3]
[--train-size 2000] [--mirror DIR] [--reference-run runs/attractor-paper/baseline]
[--feature-recon] [--skip-metrics] [--json FILE] [--clock wall|cpu]``.

Everything is measured side by side in one process, the contenders interleaved round-robin
and the fastest repeat kept, so that load from other processes on a shared machine hits them
alike (the ratios are the numbers to read; absolute times are upper bounds):

1. A training step (``basin.training.step.train_step``: forward, loss, backward, Adam) of
   the 784-500-300-300-300-500-784 network at batch 64 against the machine's floor for the
   same work: the step's matmul FLOPs (counted by ``torch.utils.flop_counter``) divided by a
   plain 1024^3 fp32 matmul's FLOP/s (timed in the same round-robin). Target: within 2x. The
   same for each pretraining stage, and the reference kernels (per-tensor Adam) beside the
   fast ones. The step's own matrix products (shapes recorded by a dispatch mode) replayed
   alone give the floor for these shapes: how far the hardware's small-K products are from
   a large matmul's FLOP/s, and how much of the step is not matrix products.
2. The ``projection`` (k = 1) attractor step over the plain (baseline) step, both full
   training steps. Target: <= 2.0x. Forward + backward alone, and the reference kernels (the
   code before), are printed too.
3. Scoring with n iterations of G: ``PearsonDetector.score`` (n applications of G + Pearson)
   over n plain forwards of G, and the reject-option prediction (score + classification)
   over n + 1 plain forwards. Target: <= 1.2x.
4. Arithmetic-changing speed-ups (``basin.training.step``: fused Adam, forward and tangents
   in shared products): short MNIST trainings (the toy problem without a mirror) of the
   baseline and the projection attractor on the reference and the fast kernels over
   ``--seeds`` seeds, test metrics side by side with the seed spread.
5. (``--feature-recon``) the feature-recon attack stage, projected (not rerun) from the
   recorded fp32 stage and timed airbench input-gradient steps (NCHW; channels_last input,
   which the attacks now use; channels_last weights and input; bf16) and the fp32 matmul
   floor. ``benchmarks/attack_layout.py`` runs the attacks themselves in both layouts.

With ``--reference-run`` (a finished ``paper-baseline`` run) the measured step times are
multiplied by that run's steps per stage: the training time to expect for the same schedule.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from basin.detectors.pearson import PearsonDetector
from basin.detectors.reject import RejectOptionClassifier
from basin.models.airbench import AirbenchNet
from basin.training import PRESETS, TrainConfig, TrainData, build_model, load_train_data, train
from basin.training.stages import build_stage
from basin.training.step import make_optimizer, stage_loss, train_step
from basin.training.trainer import _loss_weights

BATCH = 64
MATMUL_SIZE = 1024
# interleaved()'s clock: wall, or (--clock cpu) this thread's CPU time, blind to time slices
CLOCK: list[Callable[[], float]] = [time.perf_counter]


class Timings(dict):
    """Fastest time of each contender (the dict), and ``ratio``: the median over rounds of
    the ratio of two contenders timed back to back in the same round, which follows the
    load of a shared machine better than a ratio of two minima taken at different moments."""

    def __init__(self, samples: dict[str, list[float]]) -> None:
        super().__init__({name: min(times) for name, times in samples.items()})
        self.samples = samples

    def ratio(self, a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(self.samples[a], self.samples[b],
                                                       strict=True))


def interleaved(steps: dict[str, Callable[[], Any]], repeats: int) -> Timings:
    """``repeats`` rounds of one call of each step (after two warm-up calls), round-robin."""
    for step in steps.values():
        step()
        step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = CLOCK[0]()
            step()
            samples[name].append(CLOCK[0]() - start)
    return Timings(samples)


def verdict(ratio: float, target: float) -> str:
    return f"{ratio:.2f}x (target <= {target:g}x: {'met' if ratio <= target else 'NOT met'})"


class StepBench:
    """A stage's training step on a fixed random MNIST-shaped batch, as the trainer runs it.
    ``fast=None``: the fast kernels before FastAdam and the unchecked loss (torch's fused
    ``Adam.step``, ``attractor_loss``), the same arithmetic (for stages without eigen term)."""

    def __init__(self, preset: str, stage_index: int, fast: bool | None,
                 seed: int = 0) -> None:
        self.config = PRESETS[preset].replace(seed=seed)
        net, heads = build_model(self.config)
        self.stage = build_stage(net, heads, stage_index, self.config.learning_rates)
        gen = torch.Generator().manual_seed(seed)
        x = torch.rand(BATCH, 784, generator=gen)
        self.h = self.stage.inputs(x, BATCH)
        self.y = torch.randint(0, 10, (BATCH,), generator=gen)
        self.weights = _loss_weights(self.config)
        self.fast, params = bool(fast), list(self.stage.parameters())  # None: checked loss
        self.optimizer = (torch.optim.Adam(params, lr=self.stage.lr, fused=True) if fast is None
                          else make_optimizer(params, self.stage.lr, fast=self.fast))
        self.noise = torch.Generator().manual_seed(seed + 1)

    def step(self) -> None:
        train_step(self.stage, self.h, self.y, self.optimizer, self.config, self.weights,
                   self.noise, fast=self.fast)

    def forward_backward(self) -> None:
        for p in self.stage.parameters():
            p.grad = None
        stage_loss(self.stage, self.h, self.y, self.config, self.weights, self.noise,
                   fast=self.fast).total.backward()

    def flops(self) -> int:
        with FlopCounterMode(display=False) as counter:
            self.step()
        return int(counter.get_total_flops())


_GEMMS = {"mm", "addmm", "bmm", "baddbmm"}


class _GemmRecorder(TorchDispatchMode):
    """Records the operand shapes of every matrix product a step dispatches."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[tuple[int, ...]]]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None
                           ) -> Any:
        name = func.overloadpacket.__name__
        if name in _GEMMS:
            self.calls.append((name, [tuple(a.shape) for a in args if isinstance(a, Tensor)]))
        return func(*args, **(kwargs or {}))


def gemm_replay(step: Callable[[], Any]) -> Callable[[], Any]:
    """The matrix products of one ``step`` alone, same shapes and kinds, on fresh operands:
    the floor for this step's work on these shapes (small-K products of batch 64 do not
    reach a 1024^3 matmul's FLOP/s, whatever the code around them does)."""
    recorder = _GemmRecorder()
    with recorder:
        step()
    gen = torch.Generator().manual_seed(0)
    calls = [(getattr(torch, name), [torch.randn(shape, generator=gen) for shape in shapes])
             for name, shapes in recorder.calls]

    def replay() -> None:
        for func, operands in calls:
            func(*operands)
    return replay


def matmul_step() -> Callable[[], Any]:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=gen)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=gen)
    return lambda: a @ b


def section_step(repeats: int) -> dict[str, Any]:
    print("\n(1) training step vs the machine's fp32 matmul throughput, batch 64")
    benches = {(idx, fused): StepBench("paper-baseline", idx, fused)
               for idx in range(4) for fused in (True, None, False)}
    # the matmul takes its turn in the same round-robin, so it meets the same load
    gemms = {idx: gemm_replay(benches[idx, True].step) for idx in range(4)}
    # the optimizer's update alone (after a step, the gradients are in place): its memory
    # traffic (parameters, gradients and two moments) is the rest of the floor
    updates = {idx: benches[idx, True].optimizer.step for idx in range(4)}
    times = interleaved({"matmul": matmul_step(),
                         **{f"{k}": b.step for k, b in benches.items()},
                         **{f"gemms {idx}": g for idx, g in gemms.items()},
                         **{f"adam {idx}": u for idx, u in updates.items()}}, repeats)
    rate = 2 * MATMUL_SIZE ** 3 / times["matmul"]
    print(f"  plain {MATMUL_SIZE}^3 fp32 matmul: {rate / 1e9:.1f} GFLOP/s")
    out: dict[str, Any] = {"matmul_gflops": rate / 1e9, "stages": {}}
    for idx in range(4):
        bench = benches[idx, True]
        flops = bench.flops()
        floor = flops / rate
        fused_t, loop_t = times[str((idx, True))], times[str((idx, False))]
        # step / floor = (step / matmul time) * (matmul FLOPs / step FLOPs), paired per round
        scale = 2 * MATMUL_SIZE ** 3 / flops
        now = times.ratio(str((idx, True)), "matmul") * scale
        before = times.ratio(str((idx, False)), "matmul") * scale
        torch_adam = times.ratio(str((idx, None)), "matmul") * scale
        # the step's own products replayed alone, against the big matmul and the step
        gemm_floor = times.ratio(f"gemms {idx}", "matmul") * scale
        step_over_gemms = times.ratio(str((idx, True)), f"gemms {idx}")
        # floor of the work itself: the products plus the Adam update, each timed alone
        work = [g + a for g, a in zip(times.samples[f"gemms {idx}"],
                                      times.samples[f"adam {idx}"], strict=True)]
        step_over_work = statistics.median(
            s / w for s, w in zip(times.samples[str((idx, True))], work, strict=True))
        name = bench.stage.name
        print(f"  {name:<11} {flops / 1e6:6.1f} MFLOP  floor {floor * 1e3:5.2f} ms  "
              f"step {fused_t * 1e3:6.2f} ms (reference kernels {loop_t * 1e3:6.2f} ms)  "
              f"step/floor {verdict(now, 2.0)}; torch's fused Adam.step + checked loss "
              f"{torch_adam:.2f}x; reference kernels {before:.2f}x")
        print(f"  {'':<11} its own matrix products alone {times[f'gemms {idx}'] * 1e3:6.2f} ms"
              f" = {gemm_floor:.2f}x the floor (the shapes' hardware floor); step / its "
              f"products {step_over_gemms:.2f}x; Adam update alone "
              f"{times[f'adam {idx}'] * 1e3:5.2f} ms; step / (products + update) "
              f"{step_over_work:.2f}x")
        out["stages"][name] = {"mflop": flops / 1e6, "floor_ms": floor * 1e3,
                               "step_ms": fused_t * 1e3, "reference_kernels_ms": loop_t * 1e3,
                               "step_over_floor": now, "reference_over_floor": before,
                               "torch_adam_over_floor": torch_adam,
                               "gemms_ms": times[f"gemms {idx}"] * 1e3,
                               "gemms_over_floor": gemm_floor,
                               "step_over_gemms": step_over_gemms,
                               "adam_ms": times[f"adam {idx}"] * 1e3,
                               "step_over_gemms_and_adam": step_over_work}
    return out


def section_projection(repeats: int) -> dict[str, float]:
    print("\n(2) projection (k = 1) attractor step vs the plain step, fine-tuning, batch 64")
    benches = {"plain": StepBench("paper-baseline", 3, True),
               "projection": StepBench("attractor-full", 3, True),
               "plain (reference kernels)": StepBench("paper-baseline", 3, False),
               "projection (reference kernels)": StepBench("attractor-full", 3, False)}
    steps: dict[str, Callable[[], Any]] = {k: b.step for k, b in benches.items()}
    steps.update({f"{k} fb": benches[k].forward_backward for k in ("plain", "projection")})
    times = interleaved(steps, repeats)
    ratio, fb = times.ratio("projection", "plain"), times.ratio("projection fb", "plain fb")
    before = times.ratio("projection (reference kernels)", "plain (reference kernels)")
    print(f"  training step: plain {times['plain'] * 1e3:.2f} ms, projection "
          f"{times['projection'] * 1e3:.2f} ms -> {verdict(ratio, 2.0)}")
    print(f"  forward + backward only: {times['plain fb'] * 1e3:.2f} ms vs "
          f"{times['projection fb'] * 1e3:.2f} ms -> {fb:.2f}x")
    print(f"  reference kernels (the code before): "
          f"{times['plain (reference kernels)'] * 1e3:.2f} ms vs "
          f"{times['projection (reference kernels)'] * 1e3:.2f} ms -> {before:.2f}x")
    return {"step_ratio": ratio, "forward_backward_ratio": fb, "reference_ratio": before,
            **{f"{k}_ms": v * 1e3 for k, v in times.items()}}


def section_scoring(repeats: int, n_images: int = 1000) -> dict[str, Any]:
    print(f"\n(3) scoring {n_images} images (batches of 500) with n iterations of G vs plain "
          "forwards of G")
    net, _ = build_model(PRESETS["paper-baseline"])
    net.eval()
    x = torch.rand(n_images, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out: dict[str, Any] = {}
    for n in (1, 5):
        detector = PearsonDetector(net, steps=n, threshold=0.8)
        classifier = RejectOptionClassifier(net, detector, steps=n)

        def forwards(k: int = n) -> None:
            with torch.no_grad():
                for batch in x.split(500):
                    for _ in range(k):
                        net.reconstruct(batch)

        times = interleaved({"score": lambda d=detector: d.score_batches(x, 500),
                             "predict": lambda c=classifier: c.predict(x, batch_size=500),
                             "n": forwards, "n+1": lambda k=n + 1: forwards(k)}, repeats)
        score, predict = times.ratio("score", "n"), times.ratio("predict", "n+1")
        print(f"  n = {n}: score {times['score'] * 1e3:.1f} ms / {n} forwards "
              f"{times['n'] * 1e3:.1f} ms = {verdict(score, 1.2)}; predict (score + class) "
              f"{times['predict'] * 1e3:.1f} ms / {n + 1} forwards "
              f"{times['n+1'] * 1e3:.1f} ms = {verdict(predict, 1.2)}")
        out[str(n)] = {"score_ratio": score, "predict_ratio": predict,
                       **{f"{k}_ms": v * 1e3 for k, v in times.items()}}
    return out


def short_run(preset: str, seed: int, fast: bool, data: TrainData, epochs: int,
              train_size: int) -> dict[str, Any]:
    config = PRESETS[preset].replace(seed=seed, train_size=train_size, val_size=1000,
                                     max_epochs=epochs)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = train(config, data, Path(tmp) / "run", fast_kernels=fast)
        wall = time.perf_counter() - start
    metrics = result.metrics
    return {"test_accuracy": metrics["test_accuracy"],
            "reconstruction": metrics["test_loss"]["reconstruction"],
            "eigen": metrics["test_loss"]["eigen"], "wall_s": wall}


def section_metrics(seeds: int, epochs: int, train_size: int,
                    mirror: str | None) -> dict[str, Any]:
    dataset = "mnist" if mirror else "toy"
    print(f"\n(4) fast (fused Adam, joint tangents) vs reference kernels: {dataset}, "
          f"{train_size} training images, {epochs} epochs per stage, seeds 0..{seeds - 1}, "
          "test metrics")
    out: dict[str, Any] = {}
    for preset in ("paper-baseline", "attractor-full"):
        runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        for seed in range(seeds):
            base = PRESETS[preset].replace(seed=seed, train_size=train_size, val_size=1000,
                                           dataset=dataset)
            data = load_train_data(base, mirror=mirror, verify=False)
            for fast in (False, True):
                runs[fast].append(short_run(preset, seed, fast, data, epochs, train_size)
                                  if dataset == "mnist" else
                                  short_run_toy(base, fast, data, epochs))
        out[preset] = {"fast": runs[True], "reference": runs[False]}
        for metric in ("test_accuracy", "reconstruction", "eigen"):
            a = [r[metric] for r in runs[False]]
            b = [r[metric] for r in runs[True]]
            spread = statistics.stdev(a) if len(a) > 1 else float("nan")
            # two standard errors of a difference of means over len(a) seeds each
            noise = 2 * math.sqrt((statistics.variance(a) + statistics.variance(b)) / len(a)) \
                if len(a) > 1 else float("nan")
            gap = abs(statistics.mean(b) - statistics.mean(a))
            worst = max(abs(x - y) for x, y in zip(a, b, strict=True))
            print(f"  {preset:<15} {metric:<14} reference {statistics.mean(a):.5f}  fast "
                  f"{statistics.mean(b):.5f}  |mean gap| {gap:.2e} (2 s.e. {noise:.2e})  "
                  f"same-seed gap <= {worst:.2e}  seed std {spread:.2e}  -> "
                  f"{'within' if gap <= noise or gap == 0 else 'BEYOND'} seed noise")
    return out


def short_run_toy(config: TrainConfig, fast: bool, data: TrainData,
                  epochs: int) -> dict[str, Any]:
    config = config.replace(widths=(784, 64, 32, 16, 32, 64, 784), max_epochs=epochs)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, data, Path(tmp) / "run", fast_kernels=fast)
    return {"test_accuracy": result.metrics["test_accuracy"],
            "reconstruction": result.metrics["test_loss"]["reconstruction"],
            "eigen": result.metrics["test_loss"]["eigen"]}


# The recorded fp32 attack stages of the full feature-recon run (README: --threads 2, partly
# shared with other jobs), 10-class and 6-class backbone, and the rest of that run.
FR_RECORDED_ATTACK_S = (1981.0, 1689.0)
FR_RECORDED_TOTAL_S = 89 * 60.0


def section_feature_recon(repeats: int, batch: int = 64) -> dict[str, Any]:
    """Projected, not rerun: the recorded attack stage scaled by timed step ratios."""
    print(f"\n(5) feature-recon attack stage, PROJECTED (not rerun): the recorded fp32 stage "
          f"scaled by step-time ratios (airbench input-gradient step, batch {batch})")
    model = AirbenchNet().eval().requires_grad_(False)  # an attack needs the input's gradient
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def attack_step(xin: Tensor, bf16: bool) -> Callable[[], Any]:
        def step() -> None:
            xs = xin.clone().requires_grad_(True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(xs).float().logsumexp(1).sum()
            loss.backward()

        return step

    relative: dict[str, float] = {}  # step time / matmul time, paired within each block
    times: dict[str, float] = {}
    # the weights follow the input's layout (as backbone training does): one block per layout
    for layout_name, layout in (("NCHW", torch.contiguous_format),
                                ("channels_last", torch.channels_last)):
        model.to(memory_format=layout)  # type: ignore[call-overload]
        xin = x.contiguous(memory_format=layout)
        block = {f"fp32 {layout_name}": attack_step(xin, False), "matmul": matmul_step()}
        if layout_name == "channels_last":
            block["bf16 channels_last"] = attack_step(xin, True)
        else:  # what basin.attacks does now: NCHW weights, channels_last input (model_layout)
            block["fp32 channels_last input"] = attack_step(
                x.contiguous(memory_format=torch.channels_last), False)
        measured = interleaved(block, repeats)
        relative.update({k: measured.ratio(k, "matmul") for k in block if k != "matmul"})
        times.update({k: v for k, v in measured.items() if k != "matmul"})
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    with FlopCounterMode(display=False) as counter:
        attack_step(x, False)()
    flops = counter.get_total_flops()
    floor_relative = flops / (2 * MATMUL_SIZE ** 3)  # floor time / matmul time
    floor = floor_relative * times["fp32 NCHW"] / relative["fp32 NCHW"]
    recorded, base = sum(FR_RECORDED_ATTACK_S), relative["fp32 NCHW"]
    rest = FR_RECORDED_TOTAL_S - recorded
    out: dict[str, Any] = {"gflop_per_step": flops / 1e9, "floor_ms": floor * 1e3}
    print(f"  step {flops / 1e9:.1f} GFLOP; fp32 matmul floor {floor * 1e3:.0f} ms; recorded "
          f"attack stages {recorded / 60:.1f} min, the rest of the run {rest / 60:.1f} min")
    for name in ("fp32 NCHW", "fp32 channels_last input", "fp32 channels_last",
                 "bf16 channels_last"):
        projected = recorded * relative[name] / base
        out[name] = {"step_ms": times[name] * 1e3, "projected_attack_s": projected}
        print(f"  {name:<19} {times[name] * 1e3:7.0f} ms/step ({relative[name] / base:.2f}x) -> "
              f"attacks ~{projected / 60:5.1f} min, run ~{(rest + projected) / 60:5.1f} min "
              f"(target 45 min with fp32 attacks)")
    at_floor = recorded * floor_relative / base
    print(f"  fp32 at the matmul floor: attacks ~{at_floor / 60:.1f} min, run "
          f"~{(rest + at_floor) / 60:.1f} min")
    out["floor_projected_attack_s"] = at_floor
    return out


def expected_training(reference: Path, step: dict[str, Any]) -> None:
    history = json.loads((reference / "history.json").read_text())
    metrics = json.loads((reference / "metrics.json").read_text())
    steps_per_epoch = math.ceil(metrics["n_train"] / BATCH)
    total = 0.0
    print(f"\nExpected training time for the schedule of {reference} "
          f"({steps_per_epoch} steps per epoch):")
    for stage in history["stages"]:
        n_steps = len(stage["epochs"]) * steps_per_epoch
        seconds = n_steps * step["stages"][stage["name"]]["step_ms"] / 1e3
        total += seconds
        print(f"  {stage['name']:<11} {len(stage['epochs']):3d} epochs  {seconds:6.0f} s")
    print(f"  total {total:.0f} s of steps ({total / 60:.1f} min; validation and checkpoints "
          f"extra); that run's recorded wall time: {metrics['wall_s']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per stage in (4)")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--mirror", default=os.environ.get("BASIN_DATA_MIRROR"))
    parser.add_argument("--reference-run", type=Path, default=None)
    parser.add_argument("--skip-metrics", action="store_true")
    parser.add_argument("--feature-recon", action="store_true", help="section (5)")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--sections", default="step,projection,scoring",
                        help="comma-separated subset of step,projection,scoring to run")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    if not sections <= {"step", "projection", "scoring"}:
        parser.error(f"--sections: unknown {sorted(sections - {'step', 'projection', 'scoring'})}")
    if args.reference_run is not None and "step" not in sections:
        parser.error("--reference-run needs the step section")
    for name in ("threads", "repeats", "seeds", "epochs", "train_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.clock == "cpu" and args.threads != 1:  # thread_time sees the calling thread only
        parser.error("--clock cpu needs --threads 1")
    torch.set_num_threads(args.threads)
    CLOCK[0] = time.thread_time if args.clock == "cpu" else time.perf_counter
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32, CPU; "
          f"fastest of {args.repeats} interleaved repeats, {args.clock} clock; load "
          f"{os.getloadavg()[0]:.1f}")
    results: dict[str, Any] = {"threads": args.threads, "load_start": os.getloadavg()[0]}
    if "step" in sections:
        results["step"] = section_step(args.repeats)
    if "projection" in sections:
        results["projection"] = section_projection(args.repeats)
    if "scoring" in sections:
        results["scoring"] = section_scoring(max(3, args.repeats // 3))
    if args.feature_recon:
        results["feature_recon"] = section_feature_recon(max(3, args.repeats // 6))
    if args.reference_run is not None:
        expected_training(args.reference_run, results["step"])
    if not args.skip_metrics:
        results["metrics"] = section_metrics(args.seeds, args.epochs, args.train_size,
                                             args.mirror)
    results["load_end"] = os.getloadavg()[0]
    print(f"\nload average at the end: {results['load_end']:.1f}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
