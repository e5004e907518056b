"""Tests of the sweep runner and the results store: idempotence, kill -9 resume, isolated
failures, Dask, schema validation. Uses tiny notebooks (tests/notebooks/cell.ipynb)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from diffeosens import results
from diffeosens.sweep import SweepError, load_sweep, run_sweep

REPO = Path(__file__).resolve().parents[1]
CELLS = REPO / "tests" / "configs" / "cells.yaml"
FAILING = REPO / "tests" / "configs" / "failing.yaml"


def _values(root: Path, experiment: str) -> dict[str, float]:
    out = {}
    for p in sorted((root / "smoke" / experiment).glob("*.nc")):
        ds = results.open_run(p)
        out[p.name] = float(ds["value"])
    return out


def test_load_sweep_ids_dependencies_and_parameters(tmp_path):
    cfg, cells = load_sweep(CELLS, profile="smoke", root=tmp_path)
    assert cfg["experiment"] == "cells" and len(cells) == 6
    first, second = cells[:3], cells[3:]
    assert [c.stage for c in cells] == ["first"] * 3 + ["second"] * 3
    for a, b in zip(first, second):
        assert b.deps == (a.cell_id,) and b.params["upstream"] == a.out_dir
        assert a.cell_id.startswith(f"value={a.grid['value']}-") and a.cell_id != b.cell_id
        assert json.loads(a.params["grid"]) == {"value": a.grid["value"]}
        assert a.params["out_path"].endswith(f"{a.cell_id}.nc")
    # ids are stable and depend on every parameter (defaults filled in)
    _, again = load_sweep(CELLS, profile="smoke", root=tmp_path / "other")
    assert [c.cell_id for c in again] == [c.cell_id for c in cells]


def test_sweep_runs_then_reruns_nothing(tmp_path):
    report = run_sweep(CELLS, profile="smoke", root=tmp_path, progress=False)
    assert report.ok and len(report.by_status("ran")) == 6
    vals = _values(tmp_path, "cells")
    assert sorted(vals.values()) == [1, 1, 2, 2, 3, 3]
    for nb in (tmp_path / "smoke" / "cells").glob("*.ipynb"):
        assert "— first" in nb.read_text() or "— second" in nb.read_text()  # retitled
    again = run_sweep(CELLS, profile="smoke", root=tmp_path, progress=False)
    assert len(again.by_status("ran")) == 0 and len(again.by_status("skipped")) == 6
    # a deleted output is recomputed, and only it
    victim = next((tmp_path / "smoke" / "cells").glob("value=3-*.nc"))
    victim.unlink()
    third = run_sweep(CELLS, profile="smoke", root=tmp_path, progress=False)
    assert len(third.by_status("ran")) == 1


def test_sweep_killed_mid_cell_resumes_only_the_missing_cells(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cfg = tmp_path / "slow.yaml"
    cfg.write_text(CELLS.read_text().replace("sleep: 0.0", "sleep: 2.0").replace("tests/notebooks", str(REPO / "tests" / "notebooks")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffeosens", "sweep", str(cfg), "--profile", "smoke", "--root", str(tmp_path), "--no-progress"],
        cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    out = tmp_path / "smoke" / "cells"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.glob("*.nc"))) < 2:
        time.sleep(0.2)
    time.sleep(1.0)  # the third cell is now running (its notebook sleeps 2 s)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # a cell is done when its outputs and its executed notebook exist (the .nc may be written
    # before the kill interrupts the notebook's final save: such a cell is run again)
    done_before = len([p for p in out.glob("*.nc") if p.with_suffix(".ipynb").exists()])
    assert 1 <= done_before < 6
    report = run_sweep(cfg, profile="smoke", root=tmp_path, progress=False)
    assert report.ok
    assert len(report.by_status("ran")) == 6 - done_before
    assert len(report.by_status("skipped")) == done_before
    for p in out.glob("*.nc"):  # every file opens and validates
        results.open_run(p)
    assert not [p for p in out.glob("*.nc") if p.name.startswith(".")]


def test_a_failing_cell_is_reported_and_the_others_finish(tmp_path):
    report = run_sweep(FAILING, profile="smoke", root=tmp_path, progress=False)
    assert not report.ok
    failed, blocked = report.by_status("failed"), report.by_status("blocked")
    assert len(failed) == 1 and failed[0].cell_id.startswith("value=2-")
    assert "fails on purpose" in failed[0].error and Path(failed[0].notebook).exists()
    assert "fails on purpose" in Path(failed[0].notebook).read_text()
    assert len(blocked) == 1 and failed[0].cell_id in blocked[0].error
    assert len(report.by_status("ran")) == 3  # first: 1 and 3; second: 1
    summary = report.summary()
    assert "FAILED value=2-" in summary and failed[0].notebook in summary
    rc = subprocess.run([sys.executable, "-m", "diffeosens", "sweep", str(FAILING), "--profile", "smoke", "--root", str(tmp_path),
                         "--no-progress"], cwd=REPO, capture_output=True, text=True)
    assert rc.returncode == 1 and "executed notebook:" in rc.stdout


def test_parallel_jobs_and_dask_give_the_same_results(tmp_path):
    local = run_sweep(CELLS, profile="smoke", root=tmp_path / "local", jobs=2, progress=False)
    dask = run_sweep(CELLS, profile="smoke", root=tmp_path / "dask", dask_workers=2, progress=False)
    assert local.ok and dask.ok and len(dask.by_status("ran")) == 6
    a, b = _values(tmp_path / "local", "cells"), _values(tmp_path / "dask", "cells")
    assert a == b and len(a) == 6
    for name in a:
        da = results.open_run(tmp_path / "local" / "smoke" / "cells" / name)
        db = results.open_run(tmp_path / "dask" / "smoke" / "cells" / name)
        xr.testing.assert_identical(da, db)


def test_bad_configs_raise_clear_errors(tmp_path):
    with pytest.raises(SweepError, match="unknown profile 'huge'"):
        load_sweep(CELLS, profile="huge")
    with pytest.raises(SweepError, match="no sweep config"):
        load_sweep(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: x\nstages:\n  - name: a\n    notebook: tests/notebooks/cell.ipynb\n    grid: {value: \"${nope}\"}\n")
    with pytest.raises(SweepError, match=r"unknown variable \$\{nope\}"):
        load_sweep(bad, profile="smoke")
    bad.write_text("experiment: x\nstages:\n  - name: a\n    notebook: tests/notebooks/cell.ipynb\n    params: {colour: red}\n")
    with pytest.raises(SweepError, match=r"has no parameter\(s\) \['colour'\]"):
        load_sweep(bad, profile="smoke")
    bad.write_text("experiment: x\nstages:\n  - name: a\n    notebook: tests/notebooks/cell.ipynb\n    grid: {value: 3}\n")
    with pytest.raises(SweepError, match="grid axis must be a non-empty list"):
        load_sweep(bad, profile="smoke")


def test_results_store_rejects_corrupt_and_foreign_files(tmp_path):
    good = xr.Dataset({"value": ((), 1.0)})
    results.save(good, tmp_path / "e" / "a.nc", schema="diffeosens.table/1", grid={"k": 1})
    results.save(xr.Dataset({"value": ((), 2.0)}), tmp_path / "e" / "b.nc", schema="diffeosens.table/1", grid={"k": 2})
    ds = results.open_experiment("e", root=tmp_path.parent, files=sorted((tmp_path / "e").glob("*.nc")))
    np.testing.assert_array_equal(ds.value.values, [1.0, 2.0]) and list(ds.k.values) == [1, 2]
    (tmp_path / "corrupt.nc").write_bytes(b"CDF\x01 this is not a netCDF file")
    with pytest.raises(results.ResultsError, match="not a readable netCDF4 file"):
        results.open_run(tmp_path / "corrupt.nc")
    xr.Dataset({"x": ((), 1.0)}).to_netcdf(tmp_path / "foreign.nc", engine="netcdf4")
    with pytest.raises(results.ResultsError, match="not a diffeosens result"):
        results.open_run(tmp_path / "foreign.nc")
    with pytest.raises(results.ResultsError, match="lacks 'delta'"):
        results.save(xr.Dataset({"x": ("layer", [1.0])}), tmp_path / "s.nc", schema="diffeosens.sensitivity/2")
    # a result of an older schema (sensitivity/1 had no delta dimension) is not valid: its cell reruns
    old = tmp_path / "old.nc"
    xr.Dataset({"x": ("layer", [1.0])}, attrs={"schema": "diffeosens.sensitivity/1"}).to_netcdf(old, engine="netcdf4")
    with pytest.raises(results.ResultsError, match="unknown schema 'diffeosens.sensitivity/1'"):
        results.open_run(old)
    with pytest.raises(results.ResultsError, match="no results for experiment 'nothing'"):
        results.open_experiment("nothing", root=tmp_path)


# ------------------------------------------------------------------------------------------------
# Sizes have one source, diffeosens.profiles
# ------------------------------------------------------------------------------------------------

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _typed_sizes(node, where: str) -> list[str]:
    """Every place of a config that gives a size of diffeosens.profiles a value of its own."""
    from diffeosens.profiles import SIZE_NAMES

    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}"
            if key in SIZE_NAMES and not (isinstance(value, str) and value.strip() == f"${{{key}}}"):
                out.append(f"{here} = {value!r}")
            if key == "seed" and where.endswith(".grid") and value != "${seeds}":  # the seeds of a run are a size
                out.append(f"{here} = {value!r} (use ${{seeds}})")
            out += _typed_sizes(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _typed_sizes(value, f"{where}[{i}]")
    return out


def test_no_config_or_notebook_repeats_a_size_of_profiles():
    import ast

    import nbformat
    import yaml

    from diffeosens.profiles import SIZE_NAMES

    typed = []
    for path in CONFIGS:
        typed += _typed_sizes(yaml.safe_load(path.read_text()), path.name)
    for path in NOTEBOOKS:  # a parameters cell may declare a size, with no value of its own (None or {})
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if "parameters" not in cell.metadata.get("tags", []):
                continue
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in SIZE_NAMES for t in node.targets):
                    value = ast.literal_eval(node.value)
                    if value not in (None, {}):
                        typed.append(f"{path.name}: {ast.unparse(node)}")
    assert not typed, "sizes typed outside diffeosens.profiles (set them there, refer to them here):\n  " + "\n  ".join(typed)


def test_experiment_departures_name_real_experiments_and_reach_the_cells(tmp_path):
    import yaml

    from diffeosens import profiles

    experiments = {yaml.safe_load(p.read_text())["experiment"] for p in CONFIGS}
    assert set(profiles.EXPERIMENTS) <= experiments, set(profiles.EXPERIMENTS) - experiments
    # the sizes each sweep runs at (the values the configs carried before they moved to profiles.py)
    expected = {  # experiment -> profile -> (P, seeds)
        "layers": {"smoke": (16, [0]), "quick": (200, [0]), "paper": (500, [0, 1, 2, 3])},
        "architectures": {"smoke": (16, [0]), "quick": (500, [0]), "paper": (500, [0, 1, 2, 3])},
        "noisy": {"smoke": (16, [0]), "quick": (300, [0]), "paper": (500, [0, 1, 2, 3])},
        "scale2d": {"smoke": (32, [0]), "quick": (300, [0]), "paper": (500, list(range(10)))},
        "scale1d": {"smoke": (64, [0]), "quick": (400, [0]), "paper": (812, list(range(1, 11)))},
    }
    for experiment, by_profile in expected.items():
        for profile, (n_probe, seeds) in by_profile.items():
            _, cells = load_sweep(REPO / "configs" / f"{experiment}.yaml", profile=profile, root=tmp_path)
            measured = [c for c in cells if "n_probe" in c.params]
            assert measured and {c.params["n_probe"] for c in measured} == {n_probe}, (experiment, profile)
            assert sorted({c.grid["seed"] for c in cells}) == seeds, (experiment, profile)
    # what the book's table of experiments reads (book/reproduce.md)
    from diffeosens.sweep import profile_variables

    scale1d = yaml.safe_load((REPO / "configs" / "scale1d.yaml").read_text())
    assert profile_variables(scale1d, "paper")["seeds"] == list(range(1, 11)) and profile_variables(scale1d, "paper")["n_probe"] == 812
    _, cells = load_sweep(REPO / "configs" / "scale1d.yaml", profile="quick", root=tmp_path)
    train = [c for c in cells if c.stage == "train"]
    assert train and all(c.params["recipe_overrides"] == {"monitor_every": 10, "interpolation_factor": 30} for c in train)


def test_a_config_that_sets_a_size_is_rejected(tmp_path):
    bad = tmp_path / "sized.yaml"
    stage = "stages:\n  - name: a\n    notebook: tests/notebooks/cell.ipynb\n    grid: {value: [1]}\n"
    bad.write_text("experiment: x\nprofiles:\n  smoke: {n_probe: 16}\n" + stage)
    with pytest.raises(SweepError, match=r"profiles.smoke sets n_probe, a size of diffeosens.profiles.*EXPERIMENTS\['x'\]"):
        load_sweep(bad, profile="smoke")
    bad.write_text("experiment: x\nprofiles:\n  smoke: {}\n  paper: {seeds: [0, 1]}\n" + stage)
    with pytest.raises(SweepError, match="profiles.paper sets seeds"):
        load_sweep(bad, profile="smoke")
    bad.write_text("experiment: x\n" + stage + "    params: {epochs: 3}\n")
    with pytest.raises(SweepError, match=r"params: epochs is a size of diffeosens.profiles; refer to it"):
        load_sweep(bad, profile="smoke")
