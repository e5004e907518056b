"""Benchmark of ``diffeosens.deform`` against a reference-style baseline (issue: perturbations core).

Usage::

    python bench/diffeo.py                 # CPU, the full table (a few minutes on 2 cores)
    python bench/diffeo.py --quick         # fewer shapes
    python bench/diffeo.py --device cuda   # adds the GPU bandwidth-floor comparison
    python bench/diffeo.py --quick --against 75b1f67~1   # also times deform of another commit, side by side

``--against REV`` checks ``REV`` out into a temporary git worktree and times *its* ``deform`` on
the same cases in a child process, alternating with ours (``--pairs`` times, best of each), so a
change can be told from the machine: the ratio ours/REV is measured in one run on one machine.

The baseline follows the reference implementation's algorithm and calling pattern (methods §2,
written here from the spec): one ``deform`` call per image in a Python loop; each call builds
the sine tables, draws a ``cut x cut`` standard-normal matrix per component, masks the modes,
synthesises the field, and remaps with a gather-based bilinear interpolation from the floor
and ceiling neighbours with clamped indices. The Gaussian baseline is the reference's
``n^4`` formulation (an ``[n, n, n, n]`` weight tensor per image).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, header, markdown_table  # noqa: E402

from diffeosens import deform, temperature_for  # noqa: E402

SIGMA = 0.4715


# ---------------------------------------------------------------- reference-style baseline


def ref_scalar_field(n: int, cut: float, gen: torch.Generator) -> torch.Tensor:
    """One sine-series scalar field on an n x n grid (unit variance per mode times 1/sqrt(i^2+j^2))."""
    x = torch.linspace(0, 1, n)
    k = torch.arange(1, int(cut) + 1)
    i, j = torch.meshgrid(k, k, indexing="ij")
    r = (i.pow(2) + j.pow(2)).sqrt()
    e = (r < cut + 0.5) / r
    s = torch.sin(math.pi * x[:, None] * k[None, :])  # [n, K]
    c = torch.randn(int(cut), int(cut), generator=gen) * e
    return torch.einsum("ij,xi,yj->yx", c, s, s)


def ref_remap(a: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    n = a.shape[-1]
    y, x = torch.meshgrid(torch.arange(n, dtype=dx.dtype), torch.arange(n, dtype=dx.dtype), indexing="ij")
    xn = (x - dx).clamp(0, n - 1)
    yn = (y - dy).clamp(0, n - 1)
    xf = xn.floor().long()
    yf = yn.floor().long()
    xc = xn.ceil().long()
    yc = yn.ceil().long()
    xv = xn - xf
    yv = yn - yf
    return (
        (1 - yv) * (1 - xv) * a[..., yf, xf]
        + (1 - yv) * xv * a[..., yf, xc]
        + yv * (1 - xv) * a[..., yc, xf]
        + yv * xv * a[..., yc, xc]
    )


def ref_gaussian_remap(a: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    n = a.shape[-1]
    y, x = torch.meshgrid(torch.arange(n, dtype=dx.dtype), torch.arange(n, dtype=dx.dtype), indexing="ij")
    xn = (x - dx).clamp(0, n - 1)
    yn = (y - dy).clamp(0, n - 1)
    q = torch.arange(n, dtype=dx.dtype)
    # [n, n, n, n] weights: output (y, x) against input (qy, qx)
    w = torch.exp(
        -((yn[:, :, None, None] - q[None, None, :, None]) ** 2 + (xn[:, :, None, None] - q[None, None, None, :]) ** 2)
        / (2 * SIGMA**2)
    )
    w = w / w.sum((2, 3), keepdim=True)
    return torch.einsum("yxab,cab->cyx", w, a)


def ref_deform(image: torch.Tensor, T: float, cut: float, gen: torch.Generator, interp: str) -> torch.Tensor:
    n = image.shape[-1]
    u = ref_scalar_field(n, cut, gen)
    v = ref_scalar_field(n, cut, gen)
    dx = T**0.5 * u * n
    dy = T**0.5 * v * n
    if interp == "gaussian":
        return ref_gaussian_remap(image, dx, dy)
    return ref_remap(image, dx, dy)


def ref_batch(images: torch.Tensor, T: float, cut: float, gen: torch.Generator, interp: str) -> torch.Tensor:
    return torch.stack([ref_deform(img, T, cut, gen, interp) for img in images])


# ---------------------------------------------------------------- benchmark


def cases_for(quick: bool) -> list[tuple[int, int, int, str]]:
    cases = []
    for n in (32, 224):
        for b in (64, 256, 1024):
            for cut in (3, 15):
                for interp in ("linear", "gaussian"):
                    if quick and (b != 256 or cut != 3):
                        continue
                    cases.append((n, b, cut, interp))
    return cases


def case_inputs(temperature_fn, device: torch.device, case: tuple[int, int, int, str]) -> tuple[torch.Tensor, float]:
    """The images and temperature of ``case = (n, B, cut, interp)``, the same for every version."""
    n, b, cut, _ = case
    torch.manual_seed(0)
    x = torch.rand(b, 3, n, n, device=device)
    delta = 1.0 if cut == 3 else 0.5  # cut 15 at n=32 has T_max below delta = 1
    return x, float(temperature_fn(delta, cut, n))


def time_deform(deform_fn, temperature_fn, device: torch.device, case: tuple[int, int, int, str], rounds: int) -> float:
    """Best seconds per ``deform`` call of ``case = (n, B, cut, interp)``."""
    _, _, cut, interp = case
    x, T = case_inputs(temperature_fn, device, case)
    gen = torch.Generator(device=device).manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    return best_time(lambda: deform_fn(x, T=T, cut=cut, interp=interp, generator=gen), rounds=rounds, sync=sync)


_CHILD = """
import json, sys
import torch
sys.path[:0] = [{lib!r}, {bench!r}]
torch.set_num_threads({threads})
from diffeosens import deform, temperature_for
from diffeo import time_deform
cases = [tuple(c) for c in json.loads({cases!r})]
print(json.dumps([time_deform(deform, temperature_for, torch.device({device!r}), c, {rounds}) for c in cases]))
"""


class OtherVersion:
    """``deform`` of another commit, checked out in a temporary worktree and timed in a child process."""

    def __init__(self, rev: str) -> None:
        repo = Path(__file__).resolve().parent.parent
        self.rev = rev
        self._tmp = tempfile.TemporaryDirectory(prefix="diffeo-against-")
        self.path = Path(self._tmp.name) / "tree"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "--quiet", str(self.path), rev], check=True)
        self._repo = repo

    def times(self, cases: list[tuple[int, int, int, str]], device: torch.device, rounds: int) -> list[float]:
        code = _CHILD.format(lib=str(self.path / "lib"), bench=str(Path(__file__).resolve().parent), threads=torch.get_num_threads(),
                             cases=json.dumps(cases), device=str(device), rounds=rounds)
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def close(self) -> None:
        subprocess.run(["git", "-C", str(self._repo), "worktree", "remove", "--force", str(self.path)], check=False)
        self._tmp.cleanup()


def run(device: torch.device, quick: bool, rounds: int, against: str | None = None, pairs: int = 2) -> list[dict[str, object]]:
    rows = []
    cases = cases_for(quick)
    other_times: list[float] = [math.inf] * len(cases)
    ours_first: list[float] = [math.inf] * len(cases)
    if against:
        other = OtherVersion(against)
        try:
            for _ in range(pairs):  # alternate the two versions; keep the best of each
                ours_first = [min(a, time_deform(deform, temperature_for, device, c, rounds)) for a, c in zip(ours_first, cases)]
                other_times = [min(a, t) for a, t in zip(other_times, other.times(cases, device, rounds))]
        finally:
            other.close()
    for i, (n, b, cut, interp) in enumerate(cases):
        x, T = case_inputs(temperature_for, device, (n, b, cut, interp))
        t_ours = min(ours_first[i], time_deform(deform, temperature_for, device, (n, b, cut, interp), rounds))
        row = {"n": n, "B": b, "cut": cut, "interp": interp, "ours img/s": f"{b / t_ours:,.0f}"}
        if against:
            row[f"{against} img/s"] = f"{b / other_times[i]:,.0f}"
            row[f"ours / {against}"] = f"{other_times[i] / t_ours:.2f}x"
        baseline_ok = device.type == "cpu" and not (interp == "gaussian" and n > 32)
        if baseline_ok:
            xb = x if interp == "linear" else x[: min(b, 64)]  # the n^4 baseline is slow: time fewer images
            cpu_gen = torch.Generator().manual_seed(0)
            t_ref = best_time(lambda: ref_batch(xb, T, cut, cpu_gen, interp), rounds=max(2, rounds // 2), min_time=0.0)
            ref_rate = len(xb) / t_ref
            row["baseline img/s"] = f"{ref_rate:,.0f}"
            row["ratio"] = f"{(b / t_ours) / ref_rate:.1f}x"
        else:
            row["baseline img/s"] = "n/a (n^4 infeasible)" if interp == "gaussian" else "n/a"
            row["ratio"] = "-"
        rows.append(row)
        print(row, flush=True)
    return rows


def bandwidth_floor(device: torch.device, rounds: int) -> str:
    """CUDA: deform at 224x224, B=1024 against the bytes moved at the measured copy bandwidth."""
    n, b = 224, 1024
    x = torch.rand(b, 3, n, n, device=device)
    T = float(temperature_for(1.0, 3, n))
    gen = torch.Generator(device=device).manual_seed(0)
    t = best_time(lambda: deform(x, T=T, cut=3, generator=gen), rounds=rounds, sync=torch.cuda.synchronize)
    big = torch.empty(1 << 28, dtype=torch.uint8, device=device)
    dst = torch.empty_like(big)
    t_copy = best_time(lambda: dst.copy_(big), rounds=rounds, sync=torch.cuda.synchronize)
    bw = 2 * big.numel() / t_copy  # bytes read + written per second
    moved = 2 * x.numel() * x.element_size() + b * n * n * 2 * 4  # image in + out, plus the grid
    floor = moved / bw
    return (
        f"CUDA 224x224 B=1024 linear: {b / t:,.0f} img/s; copy bandwidth {bw / 1e9:,.0f} GB/s; "
        f"bandwidth floor {b / floor:,.0f} img/s; deform at {100 * floor / t:.0f}% of the floor"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--against", metavar="REV", help="also time deform of this git revision, side by side")
    p.add_argument("--pairs", type=int, default=2, help="with --against: alternations of the two versions")
    args = p.parse_args()
    device = torch.device(args.device)
    print(header(device))
    print("command: python bench/diffeo.py " + " ".join(sys.argv[1:]))
    rows = run(device, args.quick, args.rounds, args.against, args.pairs)
    print()
    print(markdown_table(rows))
    if device.type == "cuda":
        print()
        print(bandwidth_floor(device, args.rounds))


if __name__ == "__main__":
    main()
