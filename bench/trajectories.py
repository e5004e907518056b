"""Per-epoch trajectories of the claims' quantities during one training run (issue: all ten claims).

A training run (:func:`diffeosens.train.train_network`) is observed with its ``on_epoch`` hook: at
the epochs of a schedule the network is measured on the run's probe set exactly as the book's
notebooks measure it (delta = 1, c = 3 for CIFAR-10; one-pixel moves for the two-points task), and
these quantities are stored:

* test and train accuracy, learning rate;
* ``G_out``/``G_out`` at init (C4, C5), ``R_out`` (C2, C5), ``D_out``;
* slopes of ``log10 D_k`` and ``log10 G_k`` against relative depth (C3, C4, C8), per the claims'
  own fit (:func:`diffeosens.stats.fit_exponent`);
* the channel-shuffling effect (C6, C8): the mean natural log-ratio ``D_shuf/D_orig`` (and ``R``)
  over the first and the second half of the net (one shuffle);
* the mean homogeneous fraction of the filters (C7) over the first and second half of the layers.

Each snapshot is appended to ``bench/trajectories/<name>.json`` as soon as it is measured; the
training itself resumes from its ``last.pt`` (a stopped study loses only the current epoch's work).
``--table`` writes the Markdown tables into ``docs/regimes.md``.

    python bench/trajectories.py vgg11_w025_250ep     # one candidate (resumes)
    python bench/trajectories.py --table              # tables only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "trajectories"
RUNS = Path(os.environ.get("DIFFEOSENS_TRAJ_RUNS", "/tmp/diffeosens-trajectories"))
sys.path.insert(0, str(HERE))
from regimes import depth_slope, replace_block  # noqa: E402


@dataclass(frozen=True)
class Candidate:
    name: str
    arch: str
    epochs: int
    dataset: str = "cifar10"
    width_factor: float = 0.25
    activation: str = "default"
    every: int = 10  # measure every this many epochs (and at the first ones, see schedule())
    n_probe: int = 200
    overrides: dict = field(default_factory=dict)
    profile: str = "quick"  # the profile whose recipe departures apply (the quick warm-up)
    note: str = ""

    def schedule(self) -> set[int]:
        first = {1, 2, 3, 5} | set(range(self.every, self.epochs + 1, self.every)) | {self.epochs}
        return {e for e in first if e <= self.epochs}


CANDIDATES = [
    # the paper's CIFAR recipe at full length (250 epochs, cosine), quarter width
    Candidate("vgg11_w025_250ep", "VGG11", 250, every=10, note="paper recipe, 250 epochs"),
    Candidate("vgg11bn_w025_60ep", "VGG11bn", 60, every=5, note="paper recipe compressed to 60 epochs"),
    Candidate("vgg11_w025_60ep", "VGG11", 60, every=5, note="paper recipe compressed to 60 epochs"),
    # the 2D scale-detection task at the paper's 300 epochs
    Candidate("scale2d_vgg11_w025_300ep", "VGG11", 300, dataset="twopoints", every=10, n_probe=300),
    Candidate("scale2d_vgg11bn_w025_300ep", "VGG11bn", 300, dataset="twopoints", every=10, n_probe=300),
    Candidate("scale2d_vgg13bn_w025_300ep", "VGG13bn", 300, dataset="twopoints", every=10, n_probe=300),
    Candidate("scale2d_vgg11_w05_300ep", "VGG11", 300, dataset="twopoints", width_factor=0.5, every=10, n_probe=300),
    # tanh variants of the scale-detection nets (C10's trained half, methods O18)
    # at 60 epochs (the 300-epoch VGG11 run above is flat from epoch ~60 on: zero hinge loss)
    Candidate("scale2d_vgg11_w025_60ep", "VGG11", 60, dataset="twopoints", every=5, n_probe=300),
    Candidate("scale2d_vgg11bn_w025_60ep", "VGG11bn", 60, dataset="twopoints", every=5, n_probe=300),
    Candidate("scale2d_vgg16bn_w025_60ep", "VGG16bn", 60, dataset="twopoints", every=5, n_probe=300),
    # tanh variants of the scale-detection nets (C10's trained half, methods O18)
    Candidate("scale2d_vgg11_tanh_w025_60ep", "VGG11", 60, dataset="twopoints", activation="tanh", every=5, n_probe=300),
    Candidate("scale2d_vgg11bn_tanh_w025_60ep", "VGG11bn", 60, dataset="twopoints", activation="tanh", every=5, n_probe=300),
]
BY_NAME = {c.name: c for c in CANDIDATES}


def _half_means(depth: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    def m(mask: np.ndarray) -> float:
        v = values[mask & np.isfinite(values)]
        return float(v.mean()) if v.size else math.nan

    return m(depth <= 0.5), m(depth > 0.5)


class Observer:
    """The ``on_epoch`` hook: measures the snapshots of one candidate and appends them to its JSON."""

    def __init__(self, c: Candidate, path: Path, rows: list[dict], seed: int = 0):
        from diffeosens.diffeo import PAPER_CUT, PAPER_DELTA

        self.c, self.path, self.rows, self.seed = c, path, rows, seed
        self.done = {r["epoch"] for r in rows}
        self.delta, self.cut = PAPER_DELTA, PAPER_CUT
        if c.dataset == "cifar10":
            from diffeosens.data import probe_images

            self.x = probe_images("cifar10", c.n_probe, seed=0)[0]
            self.moved = None
        else:
            from diffeosens.tasks import twopoints_probes

            # the probes of the run's task (twopoints_probes reads the run's attributes only)
            fake = types.SimpleNamespace(attrs={"n_train": 1024, "seed": seed, "task": "{}"})
            self.x, self.moved = twopoints_probes(fake, c.n_probe, seed=0)

    def measure(self, model: torch.nn.Module, *, init: bool, shuffled: bool = False):
        from diffeosens.noise import matched_noise
        from diffeosens.pooling import shuffle_channels
        from diffeosens.sensitivity import measure, measure_perturbed

        net = shuffle_channels(model, seed=0) if shuffled else model
        bn = "batch" if init else "running"
        if self.moved is None:
            return measure(net, self.x, delta=self.delta, cut=self.cut, init_bn=bn).sel(delta=self.delta)
        noisy = self.x + matched_noise(self.x, self.moved, generator=torch.Generator().manual_seed(2))
        return measure_perturbed(net, self.x, {"D": self.moved, "G": noisy}, init_bn=bn)

    def snapshot(self, epoch: int, model: torch.nn.Module, hist: dict | None) -> dict:
        from diffeosens.results import output_layer
        from diffeosens.spectra import model_spectra

        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        ds = self.measure(model, init=epoch == 0)
        sh = self.measure(model, init=epoch == 0, shuffled=True)
        depth = ds.relative_depth.values.astype(float)
        out = output_layer(ds)
        with np.errstate(divide="ignore", invalid="ignore"):
            lr_d = np.log(sh.D.values / ds.D.values)
            lr_r = np.log(sh.R.values / ds.R.values)
        spec = model_spectra(model)
        hf = spec.homogeneous_fraction.values.astype(float)
        hdepth = np.linspace(0, 1, len(hf)) if len(hf) > 1 else np.zeros(1)
        row = {
            "epoch": epoch,
            "test_acc": float(hist["test_acc"][-1]) if hist else math.nan,
            "train_acc": float(hist["train_acc"][-1]) if hist else math.nan,
            "train_loss": float(hist["train_loss"][-1]) if hist else math.nan,
            "lr": float(hist["lr"][-1]) if hist else math.nan,
            "time_s": float(hist["time_s"][-1]) if hist else 0.0,
            "D_out": float(out.D), "G_out": float(out.G), "R_out": float(out.R),
            "D_slope": depth_slope(depth, ds.D.values), "G_slope": depth_slope(depth, ds.G.values), "R_slope": depth_slope(depth, ds.R.values),
            "shuffle_D_halves": _half_means(depth, lr_d), "shuffle_R_halves": _half_means(depth, lr_r),
            "homogeneous_halves": _half_means(hdepth, hf), "homogeneous_mean": float(np.mean(hf)),
            "D": ds.D.values.tolist(), "G": ds.G.values.tolist(), "D_shuf": sh.D.values.tolist(),
            "relative_depth": depth.tolist(), "layers": [str(n) for n in ds.layer_name.values],
            "measure_s": time.perf_counter() - t0,
        }
        model.train(was_training)
        return row

    def __call__(self, epoch: int, model: torch.nn.Module, hist: dict) -> None:
        if epoch in self.done or epoch not in self.c.schedule():
            return
        row = self.snapshot(epoch, model, hist)
        self.rows.append(row)
        self.done.add(epoch)
        _write(self.path, self.c, self.rows)
        init = next(r for r in self.rows if r["epoch"] == 0)
        print(f"  epoch {epoch:4d}: test {row['test_acc']:.3f} train {row['train_acc']:.3f} | G_out/init {row['G_out'] / init['G_out']:.3g} "
              f"R_out {row['R_out']:.3g} | slopes D {row['D_slope']:+.2f} G {row['G_slope']:+.2f} | shuffle D "
              f"{math.exp(row['shuffle_D_halves'][0]):.2f}->{math.exp(row['shuffle_D_halves'][1]):.2f} | hom "
              f"{row['homogeneous_halves'][0]:.3f}/{row['homogeneous_halves'][1]:.3f} ({row['measure_s']:.0f} s)", flush=True)


def _write(path: Path, c: Candidate, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"candidate": asdict(c), "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "rows": sorted(rows, key=lambda r: r["epoch"])}, indent=1))
    os.replace(tmp, path)


def run(c: Candidate) -> None:
    from diffeosens.train import build_model, train_network

    OUT.mkdir(exist_ok=True)
    path = OUT / f"{c.name}.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    obs = Observer(c, path, rows)
    if not any(r["epoch"] == 0 for r in rows):
        net = build_model(c.arch, seed=0, dataset=c.dataset, recipe="scale2d" if c.dataset == "twopoints" else "cifar",
                          width_factor=c.width_factor, **({"activation": c.activation} if c.activation != "default" else {}))
        rows.append(obs.snapshot(0, net, None))
        _write(path, c, rows)
    print(f"== {c.name}: {c.arch} x{c.width_factor:g} on {c.dataset}, {c.epochs} epochs", flush=True)
    train_network(c.arch, dataset=c.dataset, recipe="auto", profile=c.profile, activation=c.activation, epochs=c.epochs,
                  n_train=1024 if c.dataset == "twopoints" else None, n_test=2048 if c.dataset == "twopoints" else None,
                  width_factor=c.width_factor, recipe_overrides=c.overrides or None, out_dir=RUNS / c.name,
                  progress=False, device="cpu", on_epoch=obs)


def _f(x: float, spec: str = ".2g") -> str:
    return "–" if x is None or not math.isfinite(x) else format(x, spec)


def table(data: dict) -> str:
    rows = data["rows"]
    init = next(r for r in rows if r["epoch"] == 0)
    head = ("| epoch | test acc | train acc | G_out/init | R_out | D slope | G slope | shuffle D ratio (1st → 2nd half) | "
            "homogeneous fraction (1st / 2nd half) | s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        sd = r["shuffle_D_halves"]
        lines.append(f"| {r['epoch']} | {_f(r['test_acc'], '.3f')} | {_f(r['train_acc'], '.3f')} | {_f(r['G_out'] / init['G_out'])} | "
                     f"{_f(r['R_out'])} | {_f(r['D_slope'], '+.2f')} | {_f(r['G_slope'], '+.2f')} | "
                     f"{_f(math.exp(sd[0]))} → {_f(math.exp(sd[1]))} | {_f(r['homogeneous_halves'][0], '.3f')} / "
                     f"{_f(r['homogeneous_halves'][1], '.3f')} | {r['time_s']:.0f} |")
    return "\n".join(lines)


def write_doc() -> None:
    for f in sorted(OUT.glob("*.json")):
        data = json.loads(f.read_text())
        c = data["candidate"]
        text = (f"`{c['name']}`: {c['arch']} ×{c['width_factor']:g} on {c['dataset']}, {c['epochs']} epochs ({c['note'] or 'paper recipe'}), "
                f"P = {c['n_probe']}, torch {data['torch']}, {data['threads']} threads (`python bench/trajectories.py {c['name']}`); "
                f"epoch 0 is the initialisation; s = training wall time so far:\n\n{table(data)}")
        replace_block(f"<!-- traj:{c['name']}:begin -->", f"<!-- traj:{c['name']}:end -->", text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help=f"candidates: {', '.join(BY_NAME)}")
    p.add_argument("--table", action="store_true", help="only write the tables into docs/regimes.md")
    a = p.parse_args(argv)
    unknown = [n for n in a.names if n not in BY_NAME]
    if unknown:
        p.error(f"unknown candidate(s) {unknown}; valid: {', '.join(BY_NAME)}")
    torch.set_num_threads(max(1, int(os.environ.get("TRAJ_THREADS", os.cpu_count() or 1))))
    if not a.table:
        for n in a.names:
            run(BY_NAME[n])
    write_doc()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
