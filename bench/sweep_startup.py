"""Sweep cell start-up: one fresh Jupyter kernel per cell against one warm kernel per worker.

Every cell of a sweep is a papermill run of a notebook. With fresh kernels (``--fresh-kernels``,
``DIFFEOSENS_FRESH_KERNEL=1``) each cell pays the start of a kernel and the imports of its notebook
(torch, xarray, matplotlib, ...); a warm kernel (the default) pays them once per worker and resets
the kernel between cells (:class:`diffeosens.sweep.WarmKernel`). This script runs the same small
sweep stage both ways, side by side, best of ``--rounds``, checks that both give the same numbers,
and prints a Markdown table for ``bench/RESULTS.md``: wall time, and CPU time (this process plus
the kernels it started, which are all shut down and reaped by the end of each run), the number
that stays meaningful on a machine shared with other jobs.

    python bench/sweep_startup.py                                # layers, smoke, stage sensitivity
    python bench/sweep_startup.py --config configs/theory.yaml   # every stage of the theory sweep

The stages a timed stage needs (training) run once first, untimed, into the same temporary
results root; the timed runs re-execute their cells with ``force=True``. No round starts that would
end past ``--max-seconds`` of timed runs (default 270: the whole script stays within ~5 minutes).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from common import cpu_model

from diffeosens import results
from diffeosens.sweep import load_sweep, run_sweep

REPO = Path(__file__).resolve().parents[1]


def _values(root: Path, experiment: str, profile: str) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for path in sorted((root / profile / experiment).glob("*.nc")):
        ds = results.open_run(path)
        out[path.name] = {name: np.asarray(ds[name].values) for name in ds.data_vars}
    return out


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that ended (the kernels, once shut down)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "layers.yaml"))
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--stage", action="append", help="timed stage(s) (default: sensitivity for layers, else every stage)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--root", default=None, help="results root (default: a temporary folder)")
    ap.add_argument("--max-seconds", type=float, default=270.0,
                    help="start no round that would end after this many seconds of timed runs (at least one round runs)")
    args = ap.parse_args()

    cfg, cells = load_sweep(args.config, profile=args.profile, root=args.root or "/nonexistent")
    experiment = str(cfg["experiment"])
    stages = args.stage or (["sensitivity"] if experiment == "layers" else None)
    timed = [c for c in cells if not stages or c.stage in stages]
    with tempfile.TemporaryDirectory(prefix="sweep-startup-") as tmp:
        root = Path(args.root or tmp)
        needed = sorted({c.stage for c in cells} - {c.stage for c in timed})
        if needed:  # what the timed stages read (training), once, untimed
            t0 = time.perf_counter()
            report = run_sweep(args.config, profile=args.profile, root=root, stages=needed, progress=False)
            assert report.ok, report.summary()
            print(f"untimed set-up: stages {', '.join(needed)} in {time.perf_counter() - t0:.0f} s", flush=True)
        best = {"fresh kernel per cell": float("inf"), "warm kernel": float("inf")}
        cpu = dict.fromkeys(best, float("inf"))
        values: dict[str, dict] = {}
        spent, rounds = 0.0, 0
        for r in range(args.rounds):
            if r and spent * (r + 1) / r > args.max_seconds:
                print(f"stopping after {r} round(s): another would pass --max-seconds {args.max_seconds:.0f}", flush=True)
                break
            rounds += 1
            order = list(best) if r % 2 == 0 else list(best)[::-1]  # alternate, against drift of the machine's load
            for mode in order:
                t0, c0 = time.perf_counter(), _cpu_seconds()
                report = run_sweep(args.config, profile=args.profile, root=root, stages=stages, force=True, progress=False,
                                   stale="ignore", fresh_kernels=mode.startswith("fresh"))
                seconds, cpu_seconds = time.perf_counter() - t0, _cpu_seconds() - c0
                cpu[mode] = min(cpu[mode], cpu_seconds)
                spent += seconds
                assert report.ok and len(report.by_status("ran")) == len(timed), report.summary()
                best[mode] = min(best[mode], seconds)
                values[mode] = _values(root, experiment, args.profile)
                print(f"round {r + 1}, {mode}: {len(timed)} cells in {seconds:.1f} s ({cpu_seconds:.1f} CPU s)", flush=True)
        a, b = values.values()
        same = a.keys() == b.keys() and all(
            a[f].keys() == b[f].keys() and all(np.array_equal(a[f][v], b[f][v], equal_nan=True) for v in a[f]) for f in a)

    n = len(timed)
    fresh, warm = best["fresh kernel per cell"], best["warm kernel"]
    print()
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"- machine: {os.cpu_count()} CPU cores ({cpu_model()}), Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    stage_args = "".join(f" --stage {s}" for s in stages or [])
    print(f"- command: `python bench/sweep_startup.py --config {os.path.relpath(args.config, REPO)} --profile {args.profile}"
          f"{stage_args} --rounds {args.rounds}` (best of {rounds})")
    print(f"- same netCDF values with both: {'yes' if same else 'NO'}")
    print()
    cf, cw = cpu["fresh kernel per cell"], cpu["warm kernel"]
    print("| kernels | cells | total s | s per cell | ratio | CPU s | CPU s per cell | CPU ratio |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| fresh kernel per cell (`--fresh-kernels`) | {n} | {fresh:.1f} | {fresh / n:.1f} | 1.00x | {cf:.1f} | {cf / n:.1f} | 1.00x |")
    print(f"| one warm kernel, reset between cells (default) | {n} | {warm:.1f} | {warm / n:.1f} | {fresh / warm:.2f}x "
          f"| {cw:.1f} | {cw / n:.1f} | {cf / cw:.2f}x |")
    print()
    print(f"saved per cell: {(fresh - warm) / n:.1f} s of wall time, {(cf - cw) / n:.1f} CPU s "
          "(CPU: this process and the kernels it started, all reaped by the end of each run)")
    if not same:
        raise SystemExit("the two runs gave different numbers")


if __name__ == "__main__":
    main()
