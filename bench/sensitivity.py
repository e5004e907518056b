"""Benchmark of ``diffeosens.sensitivity.measure`` (issue: sensitivity engine).

VGG11 at initialisation, P = 500 CIFAR-10 test images (from ../shared/data), all default probe
points, one diffeo and one noise draw per image. Side by side in one run:

* ``measure`` (float32, streaming, batch 128);
* the bare forward passes it needs: clean + deformed + noisy, P images each, same batch size;
* the reference procedure, written here from methods §4: three full-batch float64 forwards
  keeping every node's activations (torchvision feature extractor), one diffeomorphism per image
  in a Python loop, and the O(P^2) pairwise (``cdist``) denominator computed for D and again for G.

Also: peak RSS of ``measure`` at P = 500 and P = 5000 (fresh subprocesses), and the float32 vs
float64 relative difference of D and G per layer.

Usage: ``python bench/sensitivity.py [--rounds 3] [--device cpu]``
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, header, markdown_table  # noqa: E402

from diffeosens import deform, matched_noise, models  # noqa: E402
from diffeosens.data import probe_images  # noqa: E402
from diffeosens.sensitivity import measure  # noqa: E402


def reference_procedure(net: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    net = net.double().eval()
    x = x.double()
    nodes = [n for n in get_graph_node_names(net)[0] if n not in {"x", "size", "view", "squeeze", "dropout"}
             and not any(s in n for s in ("size", "sub", "floordiv", "numel", "pow"))]
    ext = create_feature_extractor(net, return_nodes=nodes)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        tx = torch.stack([deform(img, delta=1.0, cut=3, generator=g) for img in x])  # one field per call
        eta = matched_noise(x, tx, generator=g)
        fa, fb, fg = ext(x), ext(tx), ext(x + eta)  # three full-batch forwards, every activation kept
        out = {"D": [], "G": []}
        for n in nodes:
            a, b, c = fa[n].flatten(1), fb[n].flatten(1), fg[n].flatten(1)
            deno_d = torch.cdist(a, a).square().mean() + 1e-10
            out["D"].append(float((b - a).square().sum(1).mean() / deno_d))
            deno_g = torch.cdist(a, a).square().mean() + 1e-10
            out["G"].append(float((c - a).square().sum(1).mean() / deno_g))
    return {k: np.array(v) for k, v in out.items()}


def child_rss(p: int) -> None:
    torch.manual_seed(0)
    net = models.build("VGG11")
    x, _, _ = probe_images("cifar10", p, seed=0)
    measure(net, x, batch_size=128)
    # VmHWM is this process's own peak (ru_maxrss would include the parent's peak at fork time)
    with open("/proc/self/status") as f:
        hwm_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    print(hwm_kib / 1024)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--child-rss", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_rss:
        child_rss(args.child_rss)
        return
    device = torch.device(args.device)
    print(header(device))
    print("command: python bench/sensitivity.py " + " ".join(sys.argv[1:]))
    torch.manual_seed(0)
    net = models.build("VGG11").to(device)
    P = 500
    x, _, _ = probe_images("cifar10", P, seed=0)
    x = x.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    t_measure = best_time(lambda: measure(net, x, batch_size=128), rounds=args.rounds, min_time=0.0, sync=sync)

    net32 = copy.deepcopy(net).eval()
    g = torch.Generator(device=device).manual_seed(0)
    tx_all = deform(x, delta=1.0, generator=g)
    noisy_all = x + matched_noise(x, tx_all, generator=g)

    def bare() -> None:
        with torch.no_grad():
            for s in range(0, P, 128):
                net32(x[s : s + 128])
                net32(tx_all[s : s + 128])
                net32(noisy_all[s : s + 128])

    t_bare = best_time(bare, rounds=args.rounds, min_time=0.0, sync=sync)
    rows = [
        {"procedure": "measure (float32, streaming, batch 128)", "seconds": f"{t_measure:.2f}", "vs bare forwards": f"{t_measure / t_bare:.2f}x"},
        {"procedure": "bare forwards: clean + diffeo + noise (float32, batch 128)", "seconds": f"{t_bare:.2f}", "vs bare forwards": "1.00x"},
    ]
    if device.type == "cpu":
        t0 = time.perf_counter()
        ref = reference_procedure(copy.deepcopy(net).cpu(), x.cpu())
        t_ref = time.perf_counter() - t0
        rows.append({"procedure": "reference procedure (float64, full batch, all activations, cdist)", "seconds": f"{t_ref:.2f}",
                     "vs bare forwards": f"{t_ref / t_bare:.2f}x"})
    print()
    print(markdown_table(rows))
    if device.type == "cpu":
        print(f"\nmeasure is {t_ref / t_measure:.1f}x faster than the reference procedure")

    # float32 vs float64
    d32 = measure(net, x, batch_size=128).isel(delta=0)  # one delta: measure always returns the dimension
    d64 = measure(net, x, batch_size=128, compute_dtype=torch.float64).isel(delta=0)
    rel = lambda v: np.abs(d32[v].values / d64[v].values - 1)  # noqa: E731
    prec = [{"layer": n, "kind": k, "D f64": f"{d:.4g}", "rel diff D": f"{rd:.1e}", "rel diff G": f"{rg:.1e}"}
            for n, k, d, rd, rg in zip(d64.layer_name.values, d64.layer_kind.values, d64.D.values, rel("D"), rel("G"))]
    print("\nfloat32 vs float64 (same seed, same probes):\n")
    print(markdown_table(prec))
    print(f"\nmax relative difference: D {rel('D').max():.1e}, G {rel('G').max():.1e}; at the output: D {rel('D')[-1]:.1e}, G {rel('G')[-1]:.1e}")
    if device.type == "cpu":
        print(f"reference vs measure (float64; different random draws): output D {ref['D'][-1]:.4g} vs {d64.D.values[-1]:.4g}")

    # peak memory vs P
    mem = []
    for p_ in (500, 5000):
        out = subprocess.run([sys.executable, __file__, "--child-rss", str(p_)], capture_output=True, text=True, check=True)
        mem.append({"P": p_, "peak RSS (MiB)": f"{float(out.stdout.strip().splitlines()[-1]):.0f}"})
    print("\npeak RSS of a process running measure (VGG11, batch 128):\n")
    print(markdown_table(mem))


if __name__ == "__main__":
    main()
