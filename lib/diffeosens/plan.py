r"""What a profile will cost before it starts: trainings, measurements, hours and disk.

``diffeosens plan --profile paper`` (or ``diffeosens sweep CONFIG --plan``) reads the sweep configs,
lists every cell the profile would run, and prices it from *measured* unit costs of this device:

* a training cell costs :math:`E\,(N_\text{train}\,t_\text{step} + N_\text{test}\,t_\text{eval})`
  seconds, with :math:`E` epochs and :math:`t_\text{step}`, :math:`t_\text{eval}` the seconds per
  image of one SGD step and of one evaluation forward of *that* network (architecture, width,
  activation, input size) at the recipe's batch size, timed here (:func:`time_training`); for the
  1D task :math:`E` is the most epochs (the run stops earlier, at its interpolation rule), so the
  price is an upper bound, marked ``≤``;
* a measurement cell costs :math:`P\,t_\text{meas}\,(1 + 2\,n_\delta\,n_\text{draws})/3` (times the
  number of shuffles for a shuffled variant), with :math:`t_\text{meas}` the seconds per probe image
  of one measurement at one :math:`\delta` (a clean, a deformed and a noisy forward through every
  probe point, timed on a few images, :func:`time_measurement`);
* every cell pays :data:`CELL_OVERHEAD_S` of notebook execution (a warm kernel's reset, data
  loading, plots, writing; ``bench/sweep_startup.py``).

A training reused by several experiments (a shared run) is priced once, under the first
experiment that asks for it. Unit costs are cached per device in ``results/costs/<device>.json``
(:func:`device_label`); a device with no measured costs (e.g. a GPU this machine does not have)
gets an *estimate* from the networks' FLOPs (:func:`count_flops`) at an assumed sustained
throughput, labelled as such. Disk: every training keeps ``init.pt``, ``best.pt`` and ``last.pt``
(weights, plus SGD momentum in ``last.pt``: about 16 bytes per parameter in float32) and its
notebook; every measurement its netCDF file and executed notebook (:data:`RESULT_BYTES`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["CELL_OVERHEAD_S", "RESULT_BYTES", "CellPrice", "Plan", "count_flops", "device_label", "plan_profile", "time_measurement", "time_training"]

#: Seconds of notebook execution every cell pays besides its own work (a warm kernel reset, data
#: loading, plots, writing the notebook and results): the warm-kernel cell of bench/sweep_startup.py.
CELL_OVERHEAD_S = 5.0

#: Bytes on disk per cell besides checkpoints: executed notebook (with its figures) and netCDF
#: results, by notebook (measured on the dry run's files, bench/RESULTS.md).
RESULT_BYTES = {"train": 150_000, "default": 120_000}

#: Assumed sustained throughput (FLOP/s) of a device without measured costs (an H100 at ~40 % of its
#: float32 peak); the estimate it gives is a lower bound for small networks, whose steps are bound by latency.
ASSUMED_FLOPS = 25e12

#: Per-step latency floor (seconds) of the FLOP-based estimate.
STEP_FLOOR_S = 2e-3

_SPLITS = {"cifar10": (50_000, 10_000), "mnist": (60_000, 10_000), "fashionmnist": (60_000, 10_000)}


def device_label(device: torch.device | str = "cpu") -> str:
    """A file-name-safe label of the device the costs are measured on (CPU model and threads, or GPU name)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"cuda-not-present-assumed-{ASSUMED_FLOPS / 1e12:g}TFLOPs"
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        name = f"{name}-{torch.get_num_threads()}threads"
    return "".join(c if c.isalnum() or c in "-." else "-" for c in f"{dev.type}-{name}").strip("-")


def _input_shape(dataset: str, task: dict[str, Any]) -> tuple[int, ...]:
    """Input shape of one example of ``dataset`` (from one real batch of a tiny loader)."""
    from .train import make_loaders

    loaders = make_loaders(dataset, n_train=16, n_test=16, batch_size=8, seed=0, **task)
    return tuple(next(iter(loaders.train))[0].shape[1:])


def _build(key: dict[str, Any]) -> torch.nn.Module:
    from .train import build_model

    return build_model(key["arch"], seed=0, dataset=key["dataset"], recipe=key["recipe"], width_factor=key["width_factor"], **key["options"])


def time_training(key: dict[str, Any], *, device: torch.device | str = "cpu", steps: int = 2) -> dict[str, float]:
    """Seconds per image of one SGD step (forward, backward, update; channels-last on CPU as
    :func:`~diffeosens.train.fit`) and of one evaluation forward, at the recipe's batch size: best of ``steps``."""
    shape = key["shape"]
    net = _build(key).to(device)
    x = torch.randn(key["batch_size"], *shape, device=device)
    if x.ndim == 4 and torch.device(device).type == "cpu":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    out_dim = net(x[:2]).reshape(2, -1).shape[1]
    y = torch.randint(0, max(out_dim, 1), (x.shape[0],), device=device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    net.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = net(x).reshape(x.shape[0], -1)
        loss = torch.nn.functional.cross_entropy(out, y) if out.shape[1] > 1 else out.square().mean()
        loss.backward()
        opt.step()

    step()  # warm-up
    best = _best_of(step, steps, device)
    net.eval()
    with torch.no_grad():
        t_eval = _best_of(lambda: net(x), 1, device)
    return {"step_per_image": best / x.shape[0], "eval_per_image": t_eval / x.shape[0],
            "params": float(sum(p.numel() for p in net.parameters()))}


def time_measurement(key: dict[str, Any], *, device: torch.device | str = "cpu", n: int = 8) -> dict[str, float]:
    """Seconds per probe image of one measurement at one delta through ``key["layers"]`` (best of two)."""
    from .sensitivity import measure

    net = _build(key).to(device)
    x = torch.randn(n, *key["shape"], device=device)
    if x.ndim != 4:  # the 1D and other tasks: a clean and two perturbed forwards, as measure_perturbed
        from .sensitivity import measure_perturbed

        def run() -> None:
            measure_perturbed(net, x, {"D": x.roll(1, -1), "G": x + 0.01}, layers=key["layers"], device=device, n_jackknife=2, n_boot=2)
    else:
        def run() -> None:
            measure(net, x, layers=key["layers"], device=device, n_jackknife=2, n_boot=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer than 10 probe images: NaN standard errors, irrelevant to timing
        best = _best_of(run, 2, device)
    return {"measure_per_image": best / n}


def count_flops(key: dict[str, Any]) -> float:
    """FLOPs of one forward of one image through the network of ``key`` (``torch.utils.flop_counter``)."""
    return _flops_and_params(key)[0]


def _flops_and_params(key: dict[str, Any]) -> tuple[float, float]:
    """FLOPs of one forward of one image and the parameter count, from one build of the network."""
    from torch.utils.flop_counter import FlopCounterMode

    net = _build(key).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.randn(2, *key["shape"]))
    return counter.get_total_flops() / 2, float(sum(p.numel() for p in net.parameters()))


def _best_of(fn: Any, repeats: int, device: torch.device | str) -> float:
    """The shortest wall time of ``repeats`` calls of ``fn`` (synchronising a CUDA device around each)."""
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@dataclass
class CellPrice:
    """One cell of the plan: what it is and what it costs."""

    experiment: str
    stage: str
    kind: str  # "training" | "measurement" | "other"
    seconds: float
    disk_bytes: float
    upper_bound: bool = False
    reused: bool = False  # a training an earlier experiment already runs


@dataclass
class Plan:
    """The priced cells of a profile and how their prices were obtained."""

    profile: str
    device: str
    measured: bool  # unit costs timed on this device (else estimated from FLOPs)
    cells: list[CellPrice] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """Per experiment: trainings (new), measurements, other cells, hours, disk (GiB)."""
        out: dict[str, dict[str, Any]] = {}
        for c in self.cells:
            r = out.setdefault(c.experiment, {"experiment": c.experiment, "trainings": 0, "reused": 0, "measurements": 0, "other": 0,
                                              "hours": 0.0, "upper_bound": False, "disk_gib": 0.0})
            if c.kind == "training" and c.reused:
                r["reused"] += 1
                continue
            r[{"training": "trainings", "measurement": "measurements"}.get(c.kind, "other")] += 1
            r["hours"] += c.seconds / 3600
            r["upper_bound"] |= c.upper_bound
            r["disk_gib"] += c.disk_bytes / 2**30
        rows = list(out.values())
        total = {"experiment": "total", "trainings": sum(r["trainings"] for r in rows), "reused": sum(r["reused"] for r in rows),
                 "measurements": sum(r["measurements"] for r in rows), "other": sum(r["other"] for r in rows),
                 "hours": sum(r["hours"] for r in rows), "upper_bound": any(r["upper_bound"] for r in rows),
                 "disk_gib": sum(r["disk_gib"] for r in rows)}
        return rows + [total]

    def table(self) -> str:
        """The plan as a Markdown table with its notes."""
        how = "measured on this device" if self.measured else "ESTIMATED from FLOPs (no costs measured on this device)"
        lines = [f"Plan of the `{self.profile}` profile on {self.device} ({how}):", "",
                 "| experiment | trainings | reused trainings | measurements | other cells | hours | disk (GiB) |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows():
            hours = ("≤ " if r["upper_bound"] else "") + f"{r['hours']:,.1f}"
            name = f"**{r['experiment']}**" if r["experiment"] == "total" else r["experiment"]
            lines.append(f"| {name} | {r['trainings']:,} | {r['reused']:,} | {r['measurements']:,} | {r['other']:,} | {hours} | {r['disk_gib']:,.2f} |")
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes])


def _costs_path(label: str, root: str | os.PathLike | None) -> Path:
    from .results import default_root

    return Path(root if root is not None else default_root()) / "costs" / f"{label}.json"


def _key_id(key: dict[str, Any], fields: Sequence[str]) -> str:
    return json.dumps({k: key[k] for k in fields}, sort_keys=True, default=str)


_TRAIN_FIELDS = ("arch", "dataset", "recipe", "width_factor", "options", "shape", "batch_size")
_MEASURE_FIELDS = ("arch", "dataset", "recipe", "width_factor", "options", "shape", "layers")


def plan_profile(configs: Iterable[str | os.PathLike], profile: str = "paper", *, device: torch.device | str = "cpu",
                 root: str | os.PathLike | None = None, measure: bool = True, progress: bool = True,
                 select: dict[str, list[str]] | None = None, stages: Sequence[str] | None = None) -> Plan:
    """Price every cell of ``configs`` at ``profile`` on ``device`` (module docstring), or only the
    cells of ``stages`` and those ``select`` picks with the trainings they need (as
    :func:`~.sweep.run_sweep` would run them).

    Unit costs come from the device's cache (``<results root>/costs/<device>.json``); missing ones
    are timed now when ``measure`` (and the device is this machine's), else estimated from FLOPs
    at a GPU's throughput, which a CPU is refused (it would come out about 100 times too cheap).

    Raises:
        SweepError: a bad config, stage or selection, or a CPU with missing unit costs and ``measure=False``.
    """
    from .sweep import SweepError, choose_cells, load_sweep
    from .train import training_spec

    dev = torch.device(device)
    label = device_label(dev)
    if dev.type == "cuda" and not torch.cuda.is_available():
        measure = False  # nothing to time here: the FLOP-based estimate
    path = _costs_path(label, root)
    cache: dict[str, dict[str, float]] = json.loads(path.read_text()) if path.exists() else {}
    shapes: dict[str, tuple[int, ...]] = {}
    seen_trainings: set[str] = set()
    runs: dict[str, dict[str, Any]] = {}  # a training cell's out_dir -> its key (for the measurements that need it)
    pending: list[tuple[Any, str, dict[str, Any]]] = []
    for config in configs:
        _cfg, cells = load_sweep(config, profile=profile, root=root)
        experiment = str(_cfg["experiment"])
        priced = {c.cell_id for c in choose_cells(cells, stages=stages, select=select)}
        for cell in cells:  # every training gives its key to the measurements that need it; only the chosen cells are priced
            nb = Path(cell.notebook).stem
            p = cell.params
            if cell.cell_id not in priced and nb != "train":
                continue
            if nb == "train":
                dataset = str(p.get("dataset", "cifar10"))
                spec = training_spec(str(p["arch"]), dataset=dataset, recipe=p.get("recipe", "auto"), profile=str(p.get("profile", profile)),
                                     activation=p.get("activation"), epochs=p.get("epochs"), n_train=p.get("n_train"), n_test=p.get("n_test"),
                                     width_factor=p.get("width_factor"), model_options=_options(p), recipe_overrides=p.get("recipe_overrides"))
                task = dict(p.get("task") or {})
                tkey = json.dumps([dataset, task], sort_keys=True)
                if tkey not in shapes:
                    shapes[tkey] = _input_shape(dataset, task)
                n_train, n_test = _sizes(dataset, spec.n_train, spec.n_test)
                key = {"arch": str(p["arch"]), "dataset": dataset, "recipe": spec.recipe.name, "width_factor": spec.width_factor,
                       "options": spec.model_options, "shape": list(shapes[tkey]),
                       "batch_size": spec.recipe.batch_size, "epochs": spec.epochs, "n_train": n_train, "n_test": n_test,
                       "upper_bound": spec.recipe.name == "scale1d"}
                runs[cell.out_dir] = key
                if cell.cell_id not in priced:
                    continue
                reused = cell.out_dir in seen_trainings
                seen_trainings.add(cell.out_dir)
                pending.append((CellPrice(experiment, cell.stage, "training", 0.0, 0.0, key["upper_bound"], reused), "train", key))
            elif nb in ("sensitivity", "pooling", "scale"):
                base = next((runs[d] for d in (str(v) for k, v in p.items() if k.endswith("_dir")) if d in runs), None)
                if base is None:
                    pending.append((CellPrice(experiment, cell.stage, "other", CELL_OVERHEAD_S, RESULT_BYTES["default"]), "", {}))
                    continue
                n_delta = len(p.get("deltas") or [p.get("delta", 1.0)])
                n_draws = int(p.get("n_draws", 1) or 1)
                repeat = int(p.get("n_shuffles", 1) or 1) if p.get("variant") == "shuffled" else 1
                key = dict(base, layers=p.get("layers", "default"), n_probe=int(p.get("n_probe") or 500),
                           factor=repeat * (1 + 2 * n_delta * n_draws) / 3)
                pending.append((CellPrice(experiment, cell.stage, "measurement", 0.0, RESULT_BYTES["default"]), "measure", key))
            else:
                pending.append((CellPrice(experiment, cell.stage, "other", CELL_OVERHEAD_S, RESULT_BYTES["default"]), "", {}))
    todo = {("train", _key_id(k, _TRAIN_FIELDS)): k for _, kind, k in pending if kind == "train" and _key_id(k, _TRAIN_FIELDS) not in cache}
    todo.update({("measure", _key_id(k, _MEASURE_FIELDS)): k for _, kind, k in pending
                 if kind == "measure" and _key_id(k, _MEASURE_FIELDS) not in cache})
    if todo and not measure and dev.type == "cpu":
        raise SweepError(f"{len(todo)} unit costs of this plan are not timed on this CPU, and the estimate from FLOPs assumes a "
                         f"GPU's {ASSUMED_FLOPS / 1e12:g} TFLOP/s: drop --no-measure (measure=False) to time them here "
                         f"(cached in {path})")
    if todo and measure:
        for i, ((kind, kid), key) in enumerate(todo.items(), 1):
            if progress:
                print(f"timing {kind} {i}/{len(todo)}: {key['arch']} x{key['width_factor']:g} {key['dataset']} {key.get('layers', '')}", flush=True)
            cache[kid] = time_training(key, device=dev) if kind == "train" else time_measurement(key, device=dev)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
            os.replace(tmp, path)
    estimates: dict[str, tuple[float, float]] = {}  # key -> (FLOPs, parameters), for keys without timed costs

    def estimate(kid: str, key: dict[str, Any]) -> tuple[float, float]:
        if kid not in estimates:
            estimates[kid] = _flops_and_params(key)
        return estimates[kid]

    for price, kind, key in pending:
        if kind == "train":
            kid = _key_id(key, _TRAIN_FIELDS)
            if kid in cache:
                params = cache[kid]["params"]
                t_step, t_eval = cache[kid]["step_per_image"], cache[kid]["eval_per_image"]
            else:
                f, params = estimate(kid, key)
                t_step = max(3 * f / ASSUMED_FLOPS, STEP_FLOOR_S / key["batch_size"])
                t_eval = max(f / ASSUMED_FLOPS, STEP_FLOOR_S / key["batch_size"])
            price.seconds = CELL_OVERHEAD_S + key["epochs"] * (key["n_train"] * t_step + key["n_test"] * t_eval)
            price.disk_bytes = 16 * params + RESULT_BYTES["train"]
        elif kind == "measure":
            kid = _key_id(key, _MEASURE_FIELDS)
            if kid in cache:
                t = cache[kid]["measure_per_image"]
            else:
                t = max(3 * estimate(kid, key)[0] / ASSUMED_FLOPS, STEP_FLOOR_S / 128)
            price.seconds = CELL_OVERHEAD_S + key["n_probe"] * t * key["factor"]
    plan = Plan(profile, label, measured=measure or not todo, cells=[price for price, _, _ in pending])
    plan.notes = [
        f"unit costs: {path}" + ("" if plan.measured else f"; missing ones estimated from FLOPs at {ASSUMED_FLOPS / 1e12:g} TFLOP/s "
                                 f"(at least {STEP_FLOOR_S * 1e3:g} ms per step): a lower bound for small networks"),
        f"every cell adds {CELL_OVERHEAD_S:g} s of notebook execution; a training reused by a later experiment is priced once",
        "≤: the 1D-task trainings stop at their interpolation rule; priced at their most epochs",
        "disk: init.pt, best.pt and last.pt per training (about 16 bytes per parameter) plus notebooks and results",
        "not priced: a measurement at initialisation of a BatchNorm net whose probe set does not fit one batch (batch_size='auto' "
        "below P) adds about n_BN/2 partial forwards per input kind to recover whole-probe-set statistics (ProbeSetNorm)",
    ]
    return plan


def _options(p: dict[str, Any]) -> dict[str, Any]:
    options = dict(p.get("model_options") or {})
    options.update({k: p[k] for k in ("filter_size", "stride", "depth") if p.get(k) is not None})
    return options


def _sizes(dataset: str, n_train: int | None, n_test: int | None) -> tuple[int, int]:
    full = _SPLITS.get(dataset, (n_train or 0, n_test or 0))
    return (n_train if n_train is not None else full[0]), (n_test if n_test is not None else full[1])

