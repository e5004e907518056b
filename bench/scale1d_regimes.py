"""How long must the 1D stride-2 ReLU cell train past interpolation for the C9 power laws?

Trains ConvGAP1d (f = s = 2, ReLU, task T2) with the ``scale1d`` recipe at the quick width for
each candidate stopping rule (``interpolation_factor``: stop at the first monitored epoch
e >= factor * e0 with zero training loss and validation error, e0 the interpolation epoch; an
epoch cap), measures it with the 1D protocol (channel-averaged, methods §4.10) at init and
trained, and fits the log2 slopes of D_k and G_k over the blocks C9 uses (all but the last two).

    python bench/scale1d_regimes.py           # every candidate not yet stored, then the table
    python bench/scale1d_regimes.py --table   # the table only (into docs/regimes.md)

Results: ``bench/regimes/scale1d_<name>.json``; the table goes into ``docs/regimes.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "regimes"
sys.path.insert(0, str(HERE))

#: name -> (recipe overrides, epoch cap, width)
CANDIDATES: dict[str, tuple[dict, int, int]] = {
    "factor2_cap120": ({"monitor_every": 5, "interpolation_factor": 2}, 120, 64),
    "factor10_cap600": ({"monitor_every": 5, "interpolation_factor": 10}, 600, 64),
    "factor30_cap2000": ({"monitor_every": 10, "interpolation_factor": 30}, 2000, 64),
    "factor10_cap600_ridge0.1": ({"monitor_every": 5, "interpolation_factor": 10, "ridge": 0.1}, 600, 64),
}


def _slopes(ds) -> tuple[float, float]:
    """log2 slopes of D_k and G_k over the blocks claim C9 fits (all but the last two), as C9 fits them."""
    from diffeosens.claims import block_curve
    from diffeosens.stats import fit_exponent

    k, d = block_curve(ds, "D", drop_last=2)
    _, g = block_curve(ds, "G", drop_last=2)
    return fit_exponent(k, d, base="log2").slope, fit_exponent(k, g, base="log2").slope


def run(name: str, n_probe: int) -> dict:
    from diffeosens.runs import TrainedRun
    from diffeosens.tasks import measure_scale1d
    from diffeosens.train import train_network

    overrides, cap, width = CANDIDATES[name]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = train_network("ConvGAP1d", dataset="scale1d", recipe="scale1d", profile="quick", epochs=cap, seed=0,
                            model_options={"filter_size": 2, "stride": 2, "activation": "relu", "width": width},
                            recipe_overrides=overrides, out_dir=tmp, progress=False, device="cpu")
        train_s = time.perf_counter() - t0
        h = res.history
        r = TrainedRun(Path(tmp))
        row = {"name": name, "overrides": overrides, "cap": cap, "width": width, "train_s": train_s,
               "stopped_epoch": int(h.attrs["stopped_epoch"]), "interpolation_epoch": int(h.attrs["interpolation_epoch"]),
               "test_error": float(r.test_error)}
        for state in ("init", "trained"):
            ds = measure_scale1d(r, state=state, protocol="1d", n_probe=n_probe, probe_seed=0)
            row[f"D_slope_{state}"], row[f"G_slope_{state}"] = _slopes(ds)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| stopping rule | ridge | e0 | stopped at | train s | test error | D slope init → trained | G slope init → trained |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| stop at ≥ {r['overrides'].get('interpolation_factor', 500):g}·e0 (cap {r['cap']}) | {r['overrides'].get('ridge', 0.01):g} | "
                     f"{r['interpolation_epoch']} | {r['stopped_epoch']} | {r['train_s']:.0f} | {r['test_error']:.3f} | "
                     f"{r['D_slope_init']:+.2f} → {r['D_slope_trained']:+.2f} | {r['G_slope_init']:+.2f} → {r['G_slope_trained']:+.2f} |")
    return "\n".join(lines)


def write_doc(rows: list[dict], n_probe: int) -> None:
    from regimes import replace_block  # bench/regimes.py, beside this script

    replace_block("<!-- scale1d:begin -->", "<!-- scale1d:end -->",
                  f"Measured {time.strftime('%Y-%m-%d')} with `python bench/scale1d_regimes.py` (ConvGAP1d, f = s = 2, ReLU, "
                  f"width {rows[0]['width']}, task T2, seed 0, 1D protocol with {n_probe} probes; log2 slopes over blocks 1–5; "
                  f"theory: D −1, G +1):\n\n{table(rows)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help=f"candidates (default: all): {', '.join(CANDIDATES)}")
    p.add_argument("--n-probe", type=int, default=400)
    p.add_argument("--table", action="store_true")
    a = p.parse_args(argv)
    bad = [n for n in a.names if n not in CANDIDATES]
    if bad:
        p.error(f"unknown candidate(s) {bad}; valid: {', '.join(CANDIDATES)}")
    OUT.mkdir(exist_ok=True)
    if not a.table:
        for name in a.names or CANDIDATES:
            f = OUT / f"scale1d_{name}.json"
            if f.exists():
                continue
            print(f"== {name}", flush=True)
            row = run(name, a.n_probe)
            tmp = f.with_suffix(".tmp")
            tmp.write_text(json.dumps(row, indent=1))
            os.replace(tmp, f)
            print("  ", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    rows = [json.loads((OUT / f"scale1d_{n}.json").read_text()) for n in CANDIDATES if (OUT / f"scale1d_{n}.json").exists()]
    if rows:
        write_doc(rows, a.n_probe)
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
