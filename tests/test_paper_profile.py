"""The paper profile made safe to start: its dry run, its cost plan, measurement memory bounds.

The dry run (the ``dry`` profile) must run the paper's grid, not a smaller one; a few paper-only
code paths (cells no other profile runs) are executed here through the real notebooks; the plan's
prices are checked against its formula with injected unit costs; ``batch_size="auto"`` against an
explicit batch size (identical results) and against its budget.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import xarray as xr

from diffeosens import plan as plan_mod
from diffeosens import profiles
from diffeosens.sensitivity import measure
from diffeosens.sensitivity.memory import auto_batch_size
from diffeosens.sweep import BOOK_EXPERIMENTS, SweepError, book_configs, load_sweep, run_sweep, select_cells
from diffeosens.train import build_model, training_spec

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# the dry profile is the paper's grid
# ------------------------------------------------------------------------------------------------


def _axes(cells, drop=("seed",)):
    return {(c.stage, k, json.dumps(v, sort_keys=True, default=str)) for c in cells for k, v in c.grid.items() if k not in drop}


@pytest.mark.parametrize("config", book_configs(), ids=lambda p: p.stem)
def test_dry_run_covers_every_paper_grid_cell(config, tmp_path):
    _, paper = load_sweep(config, profile="paper", root=tmp_path)
    _, dry = load_sweep(config, profile="dry", root=tmp_path)
    # every architecture, activation, noise level, task, variant, delta, state and seed: the same grid
    assert _axes(dry, drop=()) == _axes(paper, drop=())
    assert sorted(json.dumps(c.grid, sort_keys=True, default=str) for c in dry) == sorted(
        json.dumps(c.grid, sort_keys=True, default=str) for c in paper)
    assert [c.stage for c in dry] == [c.stage for c in paper]
    for c in dry:
        if Path(c.notebook).stem == "train":
            assert c.params["profile"] == "dry"
        assert "/dry/" in c.out_dir + "/"


def test_dry_sizes_are_tiny_and_keep_the_paper_recipes():
    for recipe in profiles.TRAINING:
        dry, paper = profiles.training(recipe, "dry"), profiles.training(recipe, "paper")
        assert dry.epochs < paper.epochs and dry.n_train is not None and dry.n_train <= 256
        assert profiles.recipe_departures(recipe, "dry") == profiles.recipe_departures(recipe, "paper") == {}
    spec = training_spec("VGG11bn", dataset="cifar10", recipe="auto", profile="dry", activation="tanh")
    assert spec.recipe.name == "cifar" and spec.model_options == {"activation": "tanh"} and spec.epochs == 1
    assert profiles.grid_profile("dry") == "paper" and profiles.grid_profile("quick") == "quick"


def test_makefile_runs_the_book_experiments_in_order_at_the_default_profile():
    lines = (REPO / "Makefile").read_text().splitlines()
    line = next(l for l in lines if l.startswith("EXPERIMENTS ?="))
    assert tuple(line.split("=", 1)[1].split()) == BOOK_EXPERIMENTS
    assert next(l for l in lines if l.startswith("PROFILE ?=")).split("=", 1)[1].strip() == profiles.DEFAULT


def test_select_cells_keeps_what_the_selection_needs(tmp_path):
    _, cells = load_sweep(REPO / "configs" / "noisy.yaml", profile="dry", root=tmp_path)
    chosen = select_cells(cells, {"arch": ["LeNet"], "train_noise": ["0.01", "30.0"], "seed": [0]})
    stages = sorted(c.stage for c in chosen)
    assert stages == ["output"] * 4 + ["train"] * 2  # init and trained at two levels, and their two trainings
    ids = {c.cell_id for c in chosen}
    assert all(set(c.deps) <= ids for c in chosen)
    with pytest.raises(SweepError, match="unknown grid axis.*axes of this sweep: arch"):
        select_cells(cells, {"model": ["LeNet"]})
    with pytest.raises(SweepError, match="no cell has .*ResNet1000.*values of the selected axes"):
        select_cells(cells, {"arch": ["ResNet1000"]})
    # a typo in an axis that the trainings lack is an error, not a selection of trainings only
    with pytest.raises(SweepError, match="no cell has .*'state': \\['inti'\\]"):
        select_cells(cells, {"arch": ["LeNet"], "state": ["inti"]})
    # numbers are compared as numbers: "30" and "1e-2" select the grid's 30.0 and 0.01
    assert select_cells(cells, {"arch": ["LeNet"], "train_noise": ["1e-2", "30"], "seed": [0]}) == chosen


def test_cli_dry_run_goes_with_the_paper_profile_only(tmp_path):
    r = subprocess.run([sys.executable, "-m", "diffeosens", "sweep", str(REPO / "configs" / "theory.yaml"), "--dry-run",
                        "--profile", "quick", "--root", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "--dry-run" in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "diffeosens", "sweep", str(REPO / "configs" / "theory.yaml"), "--select", "depth",
                        "--root", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "axis=value" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "diffeosens", "sweep", str(REPO / "configs" / "theory.yaml"), "--no-measure",
                        "--root", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "go with --plan only" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "laptop").exists()  # nothing ran


# ------------------------------------------------------------------------------------------------
# paper-only code paths through the real notebooks, at the dry profile's sizes
# ------------------------------------------------------------------------------------------------

PAPER_ONLY = [
    ("activations", {"arch": ["VGG11bn"], "activation": ["tanh"], "seed": [0], "state": ["trained"]}),
    ("scale2d", {"arch": ["ResNet50"], "seed": [0], "state": ["trained"], "variant": ["original"]}),
    ("scale1d", {"stride": [1], "activation": ["relu"], "seed": [1], "state": ["trained"], "protocol": ["1d"]}),
    ("noisy", {"arch": ["LeNet"], "train_noise": ["0.01", "30.0"], "seed": [0], "state": ["trained"]}),
]


@pytest.mark.parametrize("experiment,select", PAPER_ONLY, ids=[e for e, _ in PAPER_ONLY])
def test_paper_only_cells_run_in_the_dry_profile(experiment, select, tmp_path):
    _, quick = load_sweep(REPO / "configs" / f"{experiment}.yaml", profile="quick", root=tmp_path)
    in_quick = {(k, str(c.grid[k])) for c in quick for k in select if k in c.grid}
    only_paper = [(k, v) for k, vs in select.items() for v in vs if (k, v) not in in_quick]
    assert only_paper, "the selection must hold a grid value that only the paper profile has"
    report = run_sweep(REPO / "configs" / f"{experiment}.yaml", profile="dry", root=tmp_path, select=select, progress="none")
    assert report.ok, report.summary()
    ran = report.by_status("ran")
    assert ran and all(r.status == "ran" for r in report.results)
    written = sorted((tmp_path / "dry" / experiment).glob("*.nc"))
    measured = [r for r in ran if Path(r.notebook).parent == tmp_path / "dry" / experiment]  # trainings write under runs/
    assert measured and len(written) == len(measured), (written, [r.notebook for r in ran])
    for nc in written:
        ds = xr.open_dataset(nc, engine="netcdf4")
        assert all(bool(ds[v].notnull().all()) for v in ("D", "G") if v in ds), nc


def test_resnet50_at_p500_in_float64_fits_a_budget():
    """P = 500 probe images in float64 through ResNet50 (reduced width: the code path, not the
    paper's cost) with a memory budget that forces several mini-batches and BN statistics of the
    whole probe set: the batch size is chosen, recorded, and the result is finite."""
    net = build_model("ResNet50", seed=0, dataset="cifar10", recipe="cifar", width_factor=0.0625)
    x = torch.randn(500, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    budget = 48 * 2**20
    ds = measure(net, x, layers="output", compute_dtype=torch.float64, init_bn="batch", batch_size="auto", memory_budget=budget)
    plan = json.loads(ds.attrs["memory"]) if isinstance(ds.attrs["memory"], str) else ds.attrs["memory"]
    assert 1 <= plan["batch_size"] < 500 and ds.attrs["batch_size"] == plan["batch_size"]
    assert plan["estimated_peak_bytes"] <= budget and plan["budget_bytes"] == budget
    assert ds.attrs["compute_dtype"] == "float64" and ds.attrs["P"] == 500
    assert math.isfinite(float(ds.D.squeeze())) and math.isfinite(float(ds.G.squeeze()))


# ------------------------------------------------------------------------------------------------
# batch_size="auto"
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("init_bn", ["running", "batch"])
def test_auto_batch_size_changes_memory_not_numbers(init_bn):
    net = build_model("VGG11bn", seed=0, dataset="cifar10", recipe="cifar", width_factor=0.125)
    x = torch.randn(23, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    whole = measure(net, x, init_bn=init_bn, compute_dtype=torch.float64, batch_size=23)
    free = measure(net, x, init_bn=init_bn, compute_dtype=torch.float64, batch_size="auto")
    big = json.loads(free.attrs["memory"])
    assert big["batch_size"] == 23  # half of this machine's free memory holds the whole (small) probe set
    budget = big["fixed_bytes"] + 5 * big["bytes_per_image"] + 7  # room for 5 images beside the fixed costs
    auto = measure(net, x, init_bn=init_bn, compute_dtype=torch.float64, batch_size="auto", memory_budget=budget)
    plan = json.loads(auto.attrs["memory"])
    assert plan["batch_size"] == 5 and plan["fixed_bytes"] == big["fixed_bytes"]  # several batches: the budget binds
    for v in ("D", "G", "R"):
        for other in (auto, free):
            torch.testing.assert_close(torch.from_numpy(other[v].values), torch.from_numpy(whole[v].values), rtol=1e-10, atol=0)


def test_auto_batch_size_bounds_and_errors():
    from diffeosens.sensitivity.capture import build_probe

    net = build_model("VGG11", seed=0, dataset="cifar10", recipe="cifar", width_factor=0.125)
    x = torch.randn(8, 3, 32, 32)
    _, probe = build_probe(net, x, "all", torch.device("cpu"), torch.float64, "running")
    plan = auto_batch_size(probe, x[:2].double(), 10_000, budget=2**30)
    assert plan["estimated_peak_bytes"] <= 2**30 < plan["estimated_peak_bytes"] + plan["bytes_per_image"]
    # the probed representations: one float64 number per unit of every probe point, kept clean and perturbed
    units = sum(t.shape[1] for t in probe(x[:1].double()).values())
    assert plan["bytes_per_image"] >= 2 * 8 * units
    params = sum(t.numel() * 8 for t in (*probe.module.parameters(), *probe.module.buffers()))
    assert plan["fixed_bytes"] == params + 20 * 8 * units  # the float64 model copy and 20 groups' float64 means
    with pytest.raises(MemoryError, match="one image needs about .* more than the memory budget"):
        auto_batch_size(probe, x[:2].double(), 10_000, budget=plan["fixed_bytes"] + plan["bytes_per_image"] // 2)
    with pytest.raises(MemoryError, match=r"fixed costs .*the model .*float64.*jackknife groups.*use compute_dtype=torch.float32"):
        auto_batch_size(probe, x[:2].double(), 10, budget=1000)
    _, probe32 = build_probe(net, x, "all", torch.device("cpu"), torch.float32, "running")
    with pytest.raises(MemoryError) as err:  # already float32: no advice to switch to it
        auto_batch_size(probe32, x[:2].float(), 10, budget=1000)
    assert "n_jackknife" in str(err.value) and "float32" not in str(err.value).split(";")[1]
    with pytest.raises(MemoryError, match="median estimator's stored representations of P = 1000000 .* use estimator='mean'"):
        auto_batch_size(probe, x[:2].double(), 10**6, budget=2**30, estimator="median")
    with pytest.raises(ValueError, match="memory_budget applies to batch_size='auto' only"):
        measure(net, x, batch_size=4, memory_budget=2**20)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, None or 'auto'"):
        measure(net, x, batch_size="big")


def test_memory_fraction_from_the_environment_and_the_sweep(monkeypatch):
    from diffeosens.sensitivity import memory

    monkeypatch.delenv(memory.MEMORY_FRACTION_ENV, raising=False)
    assert memory.memory_fraction() == memory.DEFAULT_FRACTION
    monkeypatch.setenv(memory.MEMORY_FRACTION_ENV, "0.125")
    assert memory.memory_fraction() == 0.125
    for bad in ("0", "1.5", "half", "nan"):
        monkeypatch.setenv(memory.MEMORY_FRACTION_ENV, bad)
        with pytest.raises(ValueError, match="DIFFEOSENS_MEMORY_FRACTION must be a number in \\(0, 1\\]"):
            memory.memory_fraction()


# ------------------------------------------------------------------------------------------------
# the plan
# ------------------------------------------------------------------------------------------------


def test_plan_prices_each_cell_by_its_formula(tmp_path, monkeypatch):
    a, b, m = 1e-3, 2e-4, 5e-2  # seconds per image: SGD step, evaluation, measurement at one delta
    timed = []
    monkeypatch.setattr(plan_mod, "time_training", lambda key, device: timed.append(key) or
                        {"step_per_image": a, "eval_per_image": b, "params": 1000.0})
    monkeypatch.setattr(plan_mod, "time_measurement", lambda key, device: timed.append(key) or {"measure_per_image": m})
    configs = [REPO / "configs" / "layers.yaml", REPO / "configs" / "architectures.yaml"]
    plan = plan_mod.plan_profile(configs, "smoke", root=tmp_path, progress=False)
    size = profiles.training("cifar", "smoke")
    n_probe = profiles.experiment_sizes("layers", "smoke")["n_probe"]
    trainings = [c for c in plan.cells if c.kind == "training"]
    vgg = next(c for c in trainings if c.experiment == "layers")
    assert vgg.seconds == pytest.approx(plan_mod.CELL_OVERHEAD_S + size.epochs * (size.n_train * a + size.n_test * b))
    assert vgg.disk_bytes == pytest.approx(16 * 1000 + plan_mod.RESULT_BYTES["train"])
    meas = next(c for c in plan.cells if c.kind == "measurement" and c.experiment == "layers")
    _, cells = load_sweep(configs[0], profile="smoke", root=tmp_path)
    n_delta = len(next(c for c in cells if c.stage == meas.stage).params["deltas"])
    # a clean, a deformed and a noisy forward per delta: (1 + 2 n_delta) / 3 times the one-delta cost
    assert meas.seconds == pytest.approx(plan_mod.CELL_OVERHEAD_S + n_probe * m * (1 + 2 * n_delta) / 3)
    reused = [c for c in trainings if c.reused]
    assert reused and all(c.experiment == "architectures" for c in reused)  # layers' nets are reused by architectures
    rows = {r["experiment"]: r for r in plan.rows()}
    assert rows["total"]["trainings"] == len(trainings) - len(reused)
    assert rows["total"]["hours"] == pytest.approx(sum(c.seconds for c in plan.cells if not c.reused) / 3600)
    assert "| **total** |" in plan.table() and "measured on this device" in plan.table()
    # the unit costs are cached: a second plan times nothing
    n = len(timed)
    plan_mod.plan_profile(configs, "smoke", root=tmp_path, progress=False)
    assert len(timed) == n


def test_plan_of_a_cpu_without_timed_costs_is_refused(tmp_path):
    """The FLOP estimate assumes a GPU's throughput: on a CPU it would be about 100 times too cheap."""
    with pytest.raises(SweepError, match="not timed on this CPU.*drop --no-measure"):
        plan_mod.plan_profile([REPO / "configs" / "layers.yaml"], "smoke", root=tmp_path, measure=False, progress=False)


def test_plan_of_a_selection_prices_what_the_sweep_would_run(tmp_path, monkeypatch):
    monkeypatch.setattr(plan_mod, "time_training", lambda key, device: {"step_per_image": 1e-3, "eval_per_image": 1e-4, "params": 10.0})
    monkeypatch.setattr(plan_mod, "time_measurement", lambda key, device: {"measure_per_image": 1e-2})
    noisy = [REPO / "configs" / "noisy.yaml"]
    sel = {"arch": ["LeNet"], "train_noise": ["30"], "seed": ["0"]}
    plan = plan_mod.plan_profile(noisy, "dry", root=tmp_path, progress=False, select=sel)
    _, cells = load_sweep(noisy[0], profile="dry", root=tmp_path)
    assert [c.kind for c in plan.cells] == ["training", "measurement", "measurement"]  # the training, at init and trained
    assert len(plan.cells) == len(select_cells(cells, sel))
    outputs = plan_mod.plan_profile(noisy, "dry", root=tmp_path, progress=False, select=sel, stages=["output"])
    # the measurements alone, still priced from the network their training makes
    assert [c.kind for c in outputs.cells] == ["measurement", "measurement"]
    assert [c.seconds for c in outputs.cells] == [c.seconds for c in plan.cells[1:]]
    with pytest.raises(SweepError, match="unknown stage"):
        plan_mod.plan_profile(noisy, "dry", root=tmp_path, progress=False, stages=["measure"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="prices a GPU that is not here")
def test_plan_of_a_device_that_is_not_here_is_an_estimate(tmp_path):
    plan = plan_mod.plan_profile([REPO / "configs" / "layers.yaml"], "smoke", device="cuda", root=tmp_path, progress=False)
    assert not plan.measured and plan.device.startswith("cuda-not-present") and "ESTIMATED from FLOPs" in plan.table()
    assert all(c.seconds > plan_mod.CELL_OVERHEAD_S for c in plan.cells if c.kind != "other")
    assert not list((tmp_path / "costs").glob("*.json"))  # nothing was timed, nothing cached
    r = subprocess.run([sys.executable, "-m", "diffeosens", "plan", str(REPO / "configs" / "theory.yaml"), "--profile", "smoke",
                        "--device", "cuda", "--root", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr  # timing on an absent GPU is refused in one line


def test_cellsside_by_side_share_the_memory_budget(monkeypatch):
    """--jobs N (and a local Dask cluster of N workers) divide the memory fraction of
    batch_size='auto' by N for the kernels they start, and give the environment back after."""
    from diffeosens.sensitivity import memory
    from diffeosens.sweep import side_by_side

    monkeypatch.delenv(memory.MEMORY_FRACTION_ENV, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    with side_by_side(1) as env:
        assert env == {} and memory.memory_fraction() == memory.DEFAULT_FRACTION
    with side_by_side(4):
        assert memory.memory_fraction() == memory.DEFAULT_FRACTION / 4
        assert os.environ["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 4))
    assert memory.MEMORY_FRACTION_ENV not in os.environ and os.environ["OMP_NUM_THREADS"] == "7"
    monkeypatch.setenv(memory.MEMORY_FRACTION_ENV, "0.8")  # a user's own fraction is divided too
    with side_by_side(2, threads=False):
        assert memory.memory_fraction() == 0.4 and os.environ["OMP_NUM_THREADS"] == "7"
    assert os.environ[memory.MEMORY_FRACTION_ENV] == "0.8"
