"""Which cheap CPU training regime shows the paper's phenomena? (issue: claims on a laptop CPU)

For each candidate regime (architecture, training-set size, epochs, augmentation, width, recipe)
this script trains one network with :func:`diffeosens.train.train_network`, then measures it
layer by layer with :func:`diffeosens.runs.measure_run` at initialisation, at the best-test
checkpoint and at the last epoch (P probes, delta = 1, cut = 3, as the paper). It records:

* wall time of training, final train accuracy, best test accuracy;
* ``G_out`` trained/init (C4, C5), ``R_out`` trained (C2, C5), for the best and last checkpoints;
* the slopes of ``log10 D_k`` and ``log10 G_k`` against relative depth, init and trained (C3, C4).

Each candidate's numbers are stored in ``bench/regimes/<name>.json`` as soon as they are measured,
so the study resumes where it stopped; ``--table`` rewrites ``docs/regimes.md`` from them.

    python bench/regimes.py                 # every candidate not yet measured, then the table
    python bench/regimes.py vgg_2k_noaug    # one candidate
    python bench/regimes.py --table         # the table only

Numbers are from one seed each and one machine; treat differences below ~20 % as noise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "regimes"
DOC = HERE.parent / "docs" / "regimes.md"


@dataclass(frozen=True)
class Candidate:
    name: str
    arch: str
    n_train: int | None
    epochs: int
    augment: bool = True
    width_factor: float | None = None  # None: the quick profile's (0.25; small nets keep full width)
    recipe: str = "auto"
    overrides: dict = field(default_factory=dict)
    note: str = ""


CANDIDATES = [
    # the old quick profile: partial training on more data
    Candidate("vgg_10k_6ep_aug", "VGG11", 10_000, 6, True, note="old quick profile"),
    # interpolation on a subset, no augmentation
    Candidate("vgg_2k_30ep_noaug", "VGG11", 2_000, 30, False),
    Candidate("vgg_5k_30ep_noaug", "VGG11", 5_000, 30, False),
    Candidate("vgg_5k_30ep_aug", "VGG11", 5_000, 30, True),
    Candidate("vgg_10k_20ep_noaug", "VGG11", 10_000, 20, False),
    Candidate("vgg_5k_30ep_noaug_lr0.02", "VGG11", 5_000, 30, False, overrides={"lr": 0.02}, note="lr 0.02"),
    Candidate("vgg_5k_30ep_noaug_lr0.005", "VGG11", 5_000, 30, False, overrides={"lr": 0.005}, note="lr 0.005"),
    Candidate("vggbn_5k_30ep_noaug", "VGG11bn", 5_000, 30, False),
    Candidate("vggbn_2k_100ep_noaug", "VGG11bn", 2_000, 100, False),
    Candidate("lenet_5k_150ep_noaug", "LeNet", 5_000, 150, False),
    Candidate("lenet_5k_150ep_noaug_lr0.02", "LeNet", 5_000, 150, False, overrides={"lr": 0.02}, note="lr 0.02"),
    Candidate("lenet_5k_30ep_noaug", "LeNet", 5_000, 30, False),
    Candidate("alexnet_5k_30ep_noaug", "AlexNet", 5_000, 30, False),
    Candidate("resnet_5k_30ep_noaug", "ResNet18", 5_000, 30, False),
    # the paper's recipe on the whole training set (crop + flip), as long as a laptop allows
    Candidate("lenet_50k_30ep_aug", "LeNet", 50_000, 30, True),
    Candidate("vgg_50k_20ep_aug", "VGG11", 50_000, 20, True, note="bench/train.py: 80 % at epoch 16"),
    Candidate("vggbn_50k_10ep_aug", "VGG11bn", 50_000, 10, True),
    # long training past interpolation (weight decay keeps shaping the filters, as in the 1D model)
    Candidate("lenet_2k_600ep_noaug", "LeNet", 2_000, 600, False),
    Candidate("lenet_5k_500ep_noaug", "LeNet", 5_000, 500, False),
    Candidate("lenet_50k_100ep_aug", "LeNet", 50_000, 100, True),
    # the chosen quick regime (paper recipe, whole training set, 8 epochs) per network family
    Candidate("fcn_50k_8ep_adam0.1", "DenseNetL2", 50_000, 8, True, recipe="fcn", note="Adam lr 0.1 (paper, O13)"),
    Candidate("fcn_50k_8ep_adam1e-3", "DenseNetL2", 50_000, 8, True, recipe="fcn", overrides={"lr": 1e-3}, note="Adam lr 1e-3"),
    Candidate("alexnet_50k_8ep_aug", "AlexNet", 50_000, 8, True),
    Candidate("vgg_50k_8ep_aug", "VGG11", 50_000, 8, True),
]
BY_NAME = {c.name: c for c in CANDIDATES}


def depth_slope(depth: np.ndarray, values: np.ndarray) -> float:
    """Slope of log10(values) against relative depth over the defined layers (NaN below 3 points)."""
    from diffeosens.stats import fit_exponent

    ok = np.isfinite(values) & (values > 0)
    if ok.sum() < 3:
        return math.nan
    return fit_exponent(depth[ok], values[ok], base="log2").slope * math.log10(2.0)


def run(c: Candidate, n_probe: int) -> dict:
    from diffeosens.diffeo import PAPER_CUT, PAPER_DELTA
    from diffeosens.results import output_layer
    from diffeosens.runs import TrainedRun, measure_run
    from diffeosens.train import train_network

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = train_network(c.arch, recipe=c.recipe, profile="quick", epochs=c.epochs, n_train=c.n_train, n_test=2_000,
                            width_factor=c.width_factor, recipe_overrides={"augment": c.augment, **c.overrides},
                            out_dir=tmp, progress=False, device="cpu")
        train_s = time.perf_counter() - t0
        h = res.history
        row: dict = {**asdict(c), "width_factor": float(h.attrs["width_factor"]), "steps": int(len(h.epoch)) * -(-int(h.attrs["n_train"]) // 128), "train_s": train_s, "train_acc": float(h.train_acc.values[-1]),
                     "best_test_acc": float(res.best_test_acc), "best_epoch": int(res.best_epoch),
                     "last_test_acc": float(h.test_acc.values[-1])}
        run_ = TrainedRun(Path(tmp))
        t1 = time.perf_counter()
        sens = {s: measure_run(run_, state=s, n_probe=n_probe, deltas=PAPER_DELTA, cut=PAPER_CUT).sel(delta=PAPER_DELTA)
                for s in ("init", "trained", "last")}
        row["measure_s"] = time.perf_counter() - t1
    for s, ds in sens.items():
        out = output_layer(ds)
        depth = ds.relative_depth.values.astype(float)
        row[s] = {"D_out": float(out.D), "G_out": float(out.G), "R_out": float(out.R),
                  "D_slope": depth_slope(depth, ds.D.values), "G_slope": depth_slope(depth, ds.G.values),
                  "G": ds.G.values.tolist(), "D": ds.D.values.tolist(), "layers": [str(n) for n in ds.layer_name.values]}
    return row


def _fmt(x: float, spec: str = ".3g") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def table(rows: list[dict]) -> str:
    head = ("| regime | net | train imgs | epochs | aug | train s | train acc | best test acc | G_out best/init | "
            "G_out last/init | R_out init | R_out best | R_out last | D slope init→best | G slope init→best |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        i, b, l = r["init"], r["trained"], r["last"]
        lines.append(
            f"| {r['name']} | {r['arch']} ×{r['width_factor']:g} | {r['n_train'] or 'all'} | {r['epochs']} | {'yes' if r['augment'] else 'no'} | "
            f"{r['train_s']:.0f} | {r['train_acc']:.3f} | {r['best_test_acc']:.3f} | {_fmt(b['G_out'] / i['G_out'])} | "
            f"{_fmt(l['G_out'] / i['G_out'])} | {_fmt(i['R_out'])} | {_fmt(b['R_out'])} | {_fmt(l['R_out'])} | "
            f"{_fmt(i['D_slope'], '+.2f')} → {_fmt(b['D_slope'], '+.2f')} | {_fmt(i['G_slope'], '+.2f')} → {_fmt(b['G_slope'], '+.2f')} |")
    return "\n".join(lines)


def replace_block(begin: str, end: str, text: str) -> None:
    """Put ``text`` between the markers ``begin`` and ``end`` of docs/regimes.md (appended if absent)."""
    body = DOC.read_text() if DOC.exists() else ""
    block = f"{begin}\n{text}\n{end}"
    body = body[: body.index(begin)] + block + body[body.index(end) + len(end):] if begin in body else body + "\n" + block + "\n"
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(body)


def write_doc(rows: list[dict]) -> None:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        model = cpu
    a, b = "<!-- regimes:begin -->", "<!-- regimes:end -->"
    replace_block(a, b, f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores ({model}), torch {torch.__version__}, "
                  f"with `python bench/regimes.py` (one seed each, P = {rows[0].get('n_probe', '?')} probes, δ = 1, c = 3):\n\n"
                  f"{table(rows)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help=f"candidates (default: all): {', '.join(BY_NAME)}")
    p.add_argument("--n-probe", type=int, default=200)
    p.add_argument("--table", action="store_true", help="only rewrite docs/regimes.md from the stored results")
    p.add_argument("--force", action="store_true", help="re-measure candidates already stored")
    a = p.parse_args(argv)
    unknown = [n for n in a.names if n not in BY_NAME]
    if unknown:
        p.error(f"unknown candidate(s) {unknown}; valid: {', '.join(BY_NAME)}")
    OUT.mkdir(exist_ok=True)
    if not a.table:
        for c in [BY_NAME[n] for n in a.names] or CANDIDATES:
            f = OUT / f"{c.name}.json"
            if f.exists() and not a.force:
                continue
            print(f"== {c.name}", flush=True)
            row = run(c, a.n_probe)
            row["n_probe"] = a.n_probe
            tmp = f.with_suffix(".tmp")
            tmp.write_text(json.dumps(row, indent=1))
            os.replace(tmp, f)
            i, b = row["init"], row["trained"]
            print(f"   {row['train_s']:.0f} s, train acc {row['train_acc']:.3f}, test {row['best_test_acc']:.3f}, "
                  f"G_out {i['G_out']:.3g} -> {b['G_out']:.3g} (last {row['last']['G_out']:.3g}), R_out {b['R_out']:.3g}, "
                  f"D slope {i['D_slope']:+.2f} -> {b['D_slope']:+.2f}, G slope {i['G_slope']:+.2f} -> {b['G_slope']:+.2f}", flush=True)
    order = {c.name: k for k, c in enumerate(CANDIDATES)}
    rows = sorted((json.loads(f.read_text()) for f in OUT.glob("*.json") if not f.name.startswith("scale1d_")), key=lambda r: order.get(r["name"], 1e9))
    if rows:
        write_doc(rows)
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
