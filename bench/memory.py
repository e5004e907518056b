"""Peak memory at the paper's sizes: measurement (float64, the paper's probe points) and training (batch 128).

For each of the largest networks of the paper grid (ResNet50, EfficientNetB0, VGG19bn, full
width, CIFAR-10 input), in a fresh subprocess per case:

* **measurement**: ``measure(..., compute_dtype=float64, batch_size="auto", memory_budget=BUDGET)``
  at initialisation (BatchNorm with the whole probe set's statistics) on ``P = 2B + 1`` images, so
  that the chosen batch ``B`` runs twice and a remainder once (memory depends on ``B``, not on
  ``P``: at the paper's P = 500 only the time grows). Reported: the estimate of
  :mod:`diffeosens.sensitivity.memory` (bytes per image, chosen ``B``, estimated peak) and the
  measured peak (CPU: growth of the resident set over the process's state before the call, from
  ``ru_maxrss``; CUDA: ``torch.cuda.max_memory_allocated``), and their ratio (≤ 1: the bound holds).
* **training**: two SGD steps at batch 128 (float32, channels-last on CPU as ``fit``): the peak.

    python bench/memory.py                       # CPU, budget 2 GiB
    python bench/memory.py --device cuda --budget-gib 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

NETS = ("ResNet50", "EfficientNetB0", "VGG19bn")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def case(kind: str, arch: str, device: str, budget: int) -> dict:
    import torch

    from diffeosens.sensitivity import measure
    from diffeosens.train import build_model

    torch.manual_seed(0)
    net = build_model(arch, seed=0, dataset="cifar10", recipe="cifar").to(device)
    cuda = device.startswith("cuda")
    out: dict = {"kind": kind, "arch": arch, "device": device, "params": sum(p.numel() for p in net.parameters())}
    if kind == "measure":
        from diffeosens.sensitivity.capture import build_probe
        from diffeosens.sensitivity.memory import auto_batch_size

        x2 = torch.randn(2, 3, 32, 32, device=device)
        _, probe = build_probe(net, x2, None, torch.device(device), torch.float64, "batch")
        plan = auto_batch_size(probe, x2.double(), 10**9, budget=budget, device=device)
        del probe
        P = 2 * plan["batch_size"] + 1
        x = torch.randn(P, 3, 32, 32, device=device)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = _rss()
            if _peak_rss() > base:  # ru_maxrss only grows: record from a fresh high-water mark
                out["note"] = "peak measured above an earlier high-water mark"
        t0 = time.perf_counter()
        ds = measure(net, x, compute_dtype=torch.float64, init_bn="batch", batch_size="auto", memory_budget=budget, device=device)
        seconds = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() if cuda else _peak_rss()) - base
        memory = ds.attrs["memory"]
        memory = json.loads(memory) if isinstance(memory, str) else memory
        out.update(P=P, batch_size=int(ds.attrs["batch_size"]), layers=int(ds.sizes["layer"]), seconds=seconds, peak_bytes=peak,
                   bytes_per_image=memory["bytes_per_image"], estimated_peak_bytes=memory["estimated_peak_bytes"], budget_bytes=budget)
    else:
        net = net.to(memory_format=torch.channels_last) if not cuda else net
        x = torch.randn(128, 3, 32, 32, device=device)
        x = x.contiguous(memory_format=torch.channels_last) if not cuda else x
        y = torch.randint(0, 10, (128,), device=device)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        base = torch.cuda.memory_allocated() if cuda else _rss()
        t0 = time.perf_counter()
        for _ in range(2):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        if cuda:
            torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() if cuda else _peak_rss()) - base
        out.update(batch_size=128, seconds=(time.perf_counter() - t0) / 2, peak_bytes=peak)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--budget-gib", type=float, default=2.0)
    p.add_argument("--nets", nargs="*", default=list(NETS))
    p.add_argument("--case", nargs=4, metavar=("KIND", "ARCH", "DEVICE", "BUDGET"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.case:
        print(json.dumps(case(a.case[0], a.case[1], a.case[2], int(a.case[3]))))
        return 0
    import torch

    budget = int(a.budget_gib * 2**30)
    rows = []
    for arch in a.nets:
        for kind in ("measure", "train"):
            cmd = [sys.executable, __file__, "--case", kind, arch, a.device, str(budget)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                rows.append({"kind": kind, "arch": arch, "error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"rc {r.returncode}"})
            else:
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    gib = 2**30
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, device {a.device}, measurement budget {a.budget_gib:g} GiB\n")
    print("| net | case | P or batch | batch size | probe points | estimate per image (MiB) | estimated peak (GiB) | measured peak (GiB) | measured / estimated | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['arch']} | {r['kind']} | – | – | – | – | – | error: {r['error']} | – | – |")
        elif r["kind"] == "measure":
            print(f"| {r['arch']} | measure float64, init, auto batch | P = {r['P']} | {r['batch_size']} | {r['layers']} | "
                  f"{r['bytes_per_image'] / 2**20:.1f} | {r['estimated_peak_bytes'] / gib:.2f} | {r['peak_bytes'] / gib:.2f} | "
                  f"{r['peak_bytes'] / r['estimated_peak_bytes']:.2f} | {r['seconds']:.0f} |")
        else:
            print(f"| {r['arch']} | train float32, SGD step | 128 | 128 | – | – | – | {r['peak_bytes'] / gib:.2f} | – | {r['seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
