"""Training-step throughput of a VGG-class net on this device: eager, channels-last, torch.compile, threads.

Every variant runs the same training step as :func:`diffeosens.train.fit` (SGD with momentum and
weight decay on the weights, cross-entropy, batch 128 of 32x32 inputs) on the quick-profile
VGG11 (width x0.25, or ``--arch``/``--width``), from the same initial weights. They are timed
side by side, round-robin (one step batch of each variant in turn, ``--rounds`` rounds; the best
round of each counts), so that the shared machine's noise hits all of them alike. Before timing,
each variant's gradients after one step from the same weights and batch are compared with the
eager step's: a variant is only adoptable if they agree to float32 tolerance (the printed
``max rel. grad diff``).

Usage: ``python bench/train_throughput.py [--steps 10] [--rounds 3] [--no-compile] [--device cpu]``
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, markdown_table  # noqa: E402

from diffeosens.train import build_model, param_groups  # noqa: E402


class Variant:
    def __init__(self, name: str, base: nn.Module, *, channels_last: bool = False, compile: bool = False, threads: int | None = None):
        self.name, self.channels_last, self.threads = name, channels_last, threads
        self.net = copy.deepcopy(base).train()
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(param_groups(self.net, 5e-4), lr=0.05, momentum=0.9)
        self.fwd: Callable[[torch.Tensor], torch.Tensor] = torch.compile(self.net) if compile else self.net

    def _x(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        loss = nn.functional.cross_entropy(self.fwd(self._x(x)), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def grads(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        self.net.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(self.fwd(self._x(x)), y).backward()
        return [p.grad.detach().clone().contiguous() for p in self.net.parameters()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="VGG11")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="training steps per round and variant")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    dev = torch.device(a.device)
    default_threads = torch.get_num_threads()
    print(header(dev))
    print("command: python bench/train_throughput.py " + " ".join(sys.argv[1:]))
    base = build_model(a.arch, seed=0, width_factor=a.width).to(dev)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(a.batch, 3, 32, 32, generator=g).to(dev) for _ in range(a.steps)]
    ys = [torch.randint(0, 10, (a.batch,), generator=g).to(dev) for _ in range(a.steps)]
    variants = [Variant("eager (today's loop)", base), Variant("eager, channels-last", base, channels_last=True)]
    if dev.type == "cpu" and default_threads > 1:
        variants.append(Variant("eager, 1 thread", base, threads=1))
    if not a.no_compile:
        variants.append(Variant("torch.compile", base, compile=True))
        variants.append(Variant("torch.compile, channels-last", base, compile=True, channels_last=True))
    # correctness: one gradient from the same weights and batch
    ref = variants[0].grads(xs[0], ys[0])
    diffs, compile_s = {}, {}
    for v in variants:
        torch.set_num_threads(v.threads or default_threads)
        t0 = time.perf_counter()
        gr = v.grads(xs[0], ys[0])  # the first call of a compiled variant compiles
        compile_s[v.name] = time.perf_counter() - t0
        diffs[v.name] = max(float((a_ - b_).abs().max() / b_.abs().max().clamp_min(1e-30)) for a_, b_ in zip(gr, ref))
        v.step(xs[0], ys[0])  # warm-up step (compiles the backward/optimizer path too)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    best = {v.name: float("inf") for v in variants}
    for _ in range(a.rounds):
        for v in variants:
            torch.set_num_threads(v.threads or default_threads)
            sync()
            t0 = time.perf_counter()
            for x, y in zip(xs, ys):
                v.step(x, y)
            sync()
            best[v.name] = min(best[v.name], time.perf_counter() - t0)
    torch.set_num_threads(default_threads)
    ref_t = best[variants[0].name]
    rows = [{"variant": v.name, "images/s": f"{a.steps * a.batch / best[v.name]:,.0f}", "speed-up vs eager": f"{ref_t / best[v.name]:.2f}x",
             "first call s (compile)": f"{compile_s[v.name]:.1f}", "max rel. grad diff": f"{diffs[v.name]:.1e}"} for v in variants]
    print(f"\n{a.arch} (width x{a.width:g}), batch {a.batch}, {a.steps} steps per round, best of {a.rounds} rounds (round-robin)\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
