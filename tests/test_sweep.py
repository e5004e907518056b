"""Tests of the sweep runner and the results store: idempotence, stale results, kill -9 resume,
isolated failures, Dask, schema validation. Uses tiny notebooks (tests/notebooks/cell.ipynb)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from diffeosens import results, sweep
from diffeosens.sweep import SweepError, load_sweep, notebook_hash, run_sweep

REPO = Path(__file__).resolve().parents[1]
CELLS = REPO / "tests" / "configs" / "cells.yaml"
FAILING = REPO / "tests" / "configs" / "failing.yaml"


@pytest.fixture(autouse=True)
def _steady_library(monkeypatch):
    """The default stale policy, and the library's hash as at the start of the test: the library may
    be edited while the tests run (a change of it is tested by monkeypatching library_hash)."""
    monkeypatch.delenv("DIFFEOSENS_STALE", raising=False)
    current = sweep.library_hash()
    monkeypatch.setattr(sweep, "library_hash", lambda: current)


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
    # a cell is done when its record says so (written last, after its outputs and its executed
    # notebook: a .nc written before the kill interrupts the notebook's final save is run again)
    done_before = len([p for p in out.glob("*.cell.json") if json.loads(p.read_text())["status"] == "done"])
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
    # the records written on the Dask workers are those of this code: a local rerun skips every cell
    again = run_sweep(CELLS, profile="smoke", root=tmp_path / "dask", progress=False)
    assert len(again.by_status("skipped")) == 6 and not again.stale_kept
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


def test_combining_runs_with_different_spectra_keeps_per_layer_variables_per_layer(tmp_path):
    """Runs whose ``eigenvalue`` coordinates differ (3x3 vs 5x5 filters) are concatenated along it;
    a variable without that dimension (``homogeneous_fraction``) must not be broadcast along it."""
    def run(arch, eigenvalues, hf):
        n_l, n_e = len(hf), len(eigenvalues)
        S = np.arange(n_l * n_e, dtype=float).reshape(n_l, n_e) + (100 if arch == "B" else 0)
        ds = xr.Dataset(
            {"S": (("layer", "eigenvalue"), S), "S_norm": (("layer", "eigenvalue"), S / S.sum(1, keepdims=True)),
             "homogeneous_fraction": ("layer", np.asarray(hf, dtype=float)),
             "layer_name": ("layer", [f"{arch}{i}" for i in range(n_l)])},
            coords={"layer": np.arange(n_l), "eigenvalue": np.asarray(eigenvalues, dtype=float)},
        )
        results.save(ds, tmp_path / "spectra" / f"{arch}.nc", schema="diffeosens.spectra/1", grid={"arch": arch})

    run("A", [0.0, 1.0, 2.0], [0.2, 0.3])
    run("B", [0.0, 0.5, 1.0, 1.5], [0.4, 0.5, 0.6])
    ds = results.open_experiment("spectra", root=tmp_path.parent, files=sorted((tmp_path / "spectra").glob("*.nc")))
    assert ds.homogeneous_fraction.dims == ("arch", "layer")
    np.testing.assert_array_equal(ds.homogeneous_fraction.sel(arch="A").values, [0.2, 0.3, np.nan])
    np.testing.assert_array_equal(ds.homogeneous_fraction.sel(arch="B").values, [0.4, 0.5, 0.6])
    assert ds.S.dims == ("arch", "layer", "eigenvalue") and list(ds.eigenvalue.values) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert float(ds.S.sel(arch="A", layer=1, eigenvalue=2.0)) == 5.0 and np.isnan(float(ds.S.sel(arch="A", eigenvalue=0.5, layer=0)))
    assert ds.layer_name.dims == ("arch", "layer") and ds.layer_name.sel(arch="B", layer=2).item() == "B2"


# ------------------------------------------------------------------------------------------------
# Stale results: a changed notebook, library or upstream cell, or no record, reruns (#12.4)
# ------------------------------------------------------------------------------------------------

NOTEBOOK = REPO / "tests" / "notebooks" / "cell.ipynb"


def _small(tmp_path: Path) -> Path:
    """The cells sweep over values 1 and 2 only (four cells: first and second stage)."""
    cfg = tmp_path / "small.yaml"
    cfg.write_text(CELLS.read_text().replace("values: [1, 2, 3]", "values: [1, 2]").replace("tests/notebooks/cell.ipynb", str(NOTEBOOK)))
    return cfg


def _two_notebooks(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The small sweep with its stages on copies of the notebook: first on a.ipynb, second on b.ipynb."""
    a, b = tmp_path / "a.ipynb", tmp_path / "b.ipynb"
    shutil.copy(NOTEBOOK, a)
    shutil.copy(NOTEBOOK, b)
    cfg = tmp_path / "two.yaml"
    cfg.write_text(_small(tmp_path).read_text().replace(str(NOTEBOOK), str(a), 1).replace(str(NOTEBOOK), str(b), 1))
    return cfg, a, b


def _edit(path: Path, change) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    change(nb)
    nbformat.write(nb, path)


def _add_code(nb) -> None:
    nb.cells[-1].source += "\nassert value > 0"


def _ids(report, status: str) -> set[str]:
    return {r.cell_id for r in report.by_status(status)}


def test_a_changed_notebook_reruns_exactly_its_cells_and_those_that_read_them(tmp_path, capsys):
    cfg, a, b = _two_notebooks(tmp_path)
    root = tmp_path / "results"
    assert len(run_sweep(cfg, profile="smoke", root=root, progress=False).by_status("ran")) == 4
    _, cells = load_sweep(cfg, profile="smoke", root=root)
    first = {c.cell_id for c in cells if c.stage == "first"}
    second = {c.cell_id for c in cells if c.stage == "second"}
    capsys.readouterr()
    _edit(b, _add_code)  # the second stage's notebook
    report = run_sweep(cfg, profile="smoke", root=root, progress=False)
    assert _ids(report, "ran") == second and _ids(report, "skipped") == first
    assert {r.stale for r in report.by_status("ran")} == {"notebook changed"}
    assert "2 ran (2 stale), 2 skipped (up to date), 0 failed" in report.summary()
    out = capsys.readouterr().out
    assert all(f"stale: {cid} [second] (notebook changed) -> rerun" in out for cid in second), out
    assert len(run_sweep(cfg, profile="smoke", root=root, progress=False).by_status("ran")) == 0
    # the first stage's notebook: its cells rerun, and so do the cells that read their results
    _edit(a, _add_code)
    report = run_sweep(cfg, profile="smoke", root=root, progress=False)
    assert _ids(report, "ran") == first | second
    why = {r.cell_id: r.stale for r in report.by_status("ran")}
    assert all(why[c] == "notebook changed" for c in first)
    assert all(why[c].startswith("upstream changed: value=") for c in second), why
    assert sorted(_values(root, "cells").values()) == [1, 1, 2, 2]


def test_saving_outputs_metadata_or_comments_does_not_change_a_notebook(tmp_path, capsys):
    import nbformat

    cfg, a, b = _two_notebooks(tmp_path)
    root = tmp_path / "results"
    assert len(run_sweep(cfg, profile="smoke", root=root, progress=False).by_status("ran")) == 4
    before = notebook_hash(b)

    def cosmetic(nb):  # what running and saving it in Jupyter does, plus comments, blank lines, prose
        nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
        for c in nb.cells:
            c.metadata["collapsed"] = True
            if c.cell_type == "code":
                c.execution_count = 7
                c.outputs = [nbformat.v4.new_output("stream", text="hello\n")]
                c.source = "# a comment\n\n" + c.source.replace("\n", "  # why\n", 1) + "\n\n"
            else:
                c.source += "\n\nMore prose."

    _edit(b, cosmetic)
    _edit(a, cosmetic)
    assert notebook_hash(b) == before
    capsys.readouterr()
    report = run_sweep(cfg, profile="smoke", root=root, progress=False)
    assert len(report.by_status("ran")) == 0 and len(report.by_status("skipped")) == 4 and not report.stale_kept
    assert "stale:" not in capsys.readouterr().out
    _edit(b, _add_code)  # whereas a change of code is one
    assert notebook_hash(b) != before


def test_a_changed_library_reruns_under_rerun_and_not_under_ignore(tmp_path, capsys, monkeypatch):
    root, small = tmp_path / "results", _small(tmp_path)
    assert len(run_sweep(small, profile="smoke", root=root, progress=False).by_status("ran")) == 4
    monkeypatch.setattr(sweep, "library_hash", lambda: "0123456789abcdef")
    capsys.readouterr()
    ignored = run_sweep(small, profile="smoke", root=root, progress=False, stale="ignore")
    assert len(ignored.by_status("ran")) == 0 and len(ignored.by_status("skipped")) == 4 and not ignored.stale_kept
    monkeypatch.setenv("DIFFEOSENS_STALE", "ignore")
    assert len(run_sweep(small, profile="smoke", root=root, progress=False).by_status("ran")) == 0
    assert "stale:" not in capsys.readouterr().out
    monkeypatch.setenv("DIFFEOSENS_STALE", "warn")
    warned = run_sweep(small, profile="smoke", root=root, progress=False)
    assert len(warned.by_status("ran")) == 0 and len(warned.stale_kept) == 4
    assert "0 ran (0 stale), 0 skipped (up to date), 4 stale kept" in warned.summary()
    assert capsys.readouterr().out.count("(library changed) -> kept (DIFFEOSENS_STALE=warn)") == 2  # the first stage
    monkeypatch.delenv("DIFFEOSENS_STALE")  # the default: rerun
    rerun = run_sweep(small, profile="smoke", root=root, progress=False)
    assert len(rerun.by_status("ran")) == 4 and all("library changed" in r.stale for r in rerun.by_status("ran"))
    assert "4 ran (4 stale), 0 skipped (up to date)" in rerun.summary()
    assert capsys.readouterr().out.count("library changed") == 4
    assert len(run_sweep(small, profile="smoke", root=root, progress=False).by_status("ran")) == 0
    # accept: kept and recorded as computed by this library (no retraining after a refactor)
    monkeypatch.setattr(sweep, "library_hash", lambda: "fedcba9876543210")
    accepted = run_sweep(small, profile="smoke", root=root, progress=False, stale="accept")
    assert len(accepted.by_status("ran")) == 0 and len(accepted.stale_kept) == 4
    after = run_sweep(small, profile="smoke", root=root, progress=False)
    assert len(after.by_status("skipped")) == 4 and not after.stale_kept
    monkeypatch.setenv("DIFFEOSENS_STALE", "sometimes")
    with pytest.raises(SweepError, match="DIFFEOSENS_STALE='sometimes': valid values are rerun, warn, accept, ignore"):
        run_sweep(small, profile="smoke", root=root, progress=False)


def test_outputs_without_a_record_are_of_unknown_provenance_and_rerun(tmp_path, capsys):
    root, small = tmp_path / "results", _small(tmp_path)
    assert len(run_sweep(small, profile="smoke", root=root, progress=False).by_status("ran")) == 4
    records = sorted((root / "smoke" / "cells").glob("*.cell.json"))
    assert len(records) == 4 and all(json.loads(p.read_text())["status"] == "done" for p in records)
    for p in records:  # results as computed before records existed
        p.unlink()
    capsys.readouterr()
    report = run_sweep(small, profile="smoke", root=root, progress=False)
    assert len(report.by_status("ran")) == 4 and {r.stale for r in report.by_status("ran")} == {"unknown code version: no record"}
    assert capsys.readouterr().out.count("(unknown code version: no record) -> rerun") == 4
    for p in records:
        p.unlink()
    adopted = run_sweep(small, profile="smoke", root=root, progress=False, stale="accept")
    assert len(adopted.by_status("ran")) == 0 and len(adopted.stale_kept) == 4 and all(p.exists() for p in records)
    assert len(run_sweep(small, profile="smoke", root=root, progress=False).by_status("ran")) == 0


def test_a_stale_shared_run_restarts_from_scratch_and_an_interrupted_one_resumes(tmp_path):
    """A training-like shared stage: a resume point of older code is not reused; one of this code is."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('value = 1.0\nout_dir = "run"\ngrid = "{}"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import json, os\nimport xarray as xr\nfrom diffeosens import results\nfactor = 1\n"
        "state = os.path.join(out_dir, 'state.json')  # a resume point, like train_network's last.pt\n"
        "if not os.path.exists(state):\n    json.dump(value * factor, open(state, 'w'))\n"
        "ds = xr.Dataset({'value': ((), float(json.load(open(state))))}, attrs={'schema': 'diffeosens.table/1'})\n"
        "results.save(ds, os.path.join(out_dir, 'history.nc'), grid=json.loads(grid))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "train.ipynb"
    nbformat.write(nb, path)
    cfg = tmp_path / "shared.yaml"
    cfg.write_text(f"experiment: shared\nprofiles:\n  smoke: {{}}\nstages:\n  - name: train\n    notebook: {path}\n"
                   "    shared: true\n    outputs: [history.nc]\n    grid:\n      value: [2, 3]\n")
    root = tmp_path / "results"

    def values():
        return sorted(float(results.open_run(p)["value"]) for p in (root / "smoke" / "runs" / "train").glob("*/history.nc"))

    assert len(run_sweep(cfg, profile="smoke", root=root, progress=False).by_status("ran")) == 2 and values() == [2, 3]
    _edit(path, lambda nb: setattr(nb.cells[1], "source", nb.cells[1].source.replace("factor = 1", "factor = 10")))
    report = run_sweep(cfg, profile="smoke", root=root, progress=False)
    assert len(report.by_status("ran")) == 2 and values() == [20, 30]  # not resumed from the state of factor = 1
    # killed mid-run by this code: the resume point is kept
    run_dir = next((root / "smoke" / "runs" / "train").glob("value=2-*"))
    record = json.loads((run_dir / "train.cell.json").read_text())
    (run_dir / "train.cell.json").write_text(json.dumps({**record, "status": "running"}))
    (run_dir / "history.nc").unlink()
    (run_dir / "state.json").write_text("77")
    report = run_sweep(cfg, profile="smoke", root=root, progress=False)
    assert len(report.by_status("ran")) == 1 and not report.stale_reruns and values() == [30, 77]
    # warn: stale results are kept, untouched
    _edit(path, lambda nb: setattr(nb.cells[1], "source", nb.cells[1].source.replace("factor = 10", "factor = 100")))
    report = run_sweep(cfg, profile="smoke", root=root, progress=False, stale="warn")
    assert len(report.stale_kept) == 2 and values() == [30, 77]


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


def test_progress_lines_count_cells_and_estimate_the_time_left(capsys):
    from diffeosens.sweep import CellResult, SweepError, _advance, _progress

    with _progress(4, "lines", "demo") as bar:
        _advance(bar, CellResult("a", "ran", "a.ipynb", seconds=10.0))
        _advance(bar, CellResult("b", "skipped", "b.ipynb", seconds=0.0))
        _advance(bar, CellResult("c", "ran", "c.ipynb", seconds=30.0))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[demo] 1/4 cells: a ran in 10 s;") and lines[0].endswith("ETA 0:00:30")  # 3 left x 10 s
    assert lines[2].startswith("[demo] 3/4 cells: c ran in 30 s;") and lines[2].endswith("ETA 0:00:20")  # 1 left x mean 20 s
    with pytest.raises(SweepError, match="progress must be one of"):
        _progress(1, "loud", "demo")


# ------------------------------------------------------------------------------------------------
# Warm kernels: one kernel per worker, reset between cells; --fresh-kernels restores one per cell
# ------------------------------------------------------------------------------------------------

LEAK = REPO / "tests" / "configs" / "leak.yaml"


def _leak_config(tmp_path: Path, **variables) -> Path:
    """The leak sweep with other profile variables (values, fail_on, die_on)."""
    cfg = tmp_path / "leak.yaml"
    smoke = {"values": [1, 2, 3], "fail_on": -1, "die_on": -1, **variables}
    cfg.write_text(LEAK.read_text().replace("tests/notebooks/leak.ipynb", str(REPO / "tests" / "notebooks" / "leak.ipynb"))
                   .replace("{values: [1, 2, 3], fail_on: -1, die_on: -1}", json.dumps(smoke)))
    return cfg


def _probes(root: Path) -> dict[int, xr.Dataset]:
    return {int(ds["value"]): ds for ds in (results.open_run(p) for p in (root / "smoke" / "leak").glob("*.nc"))}


def test_a_warm_kernel_runs_every_cell_in_a_fresh_namespace(tmp_path):
    report = run_sweep(_leak_config(tmp_path), profile="smoke", root=tmp_path, progress=False)
    assert report.ok and len(report.by_status("ran")) == 3
    probes = _probes(tmp_path)
    assert sorted(probes) == [1, 2, 3]
    assert len({int(ds["pid"]) for ds in probes.values()}) == 1  # one kernel for the three cells
    assert [int(probes[v]["warm"]) for v in (1, 2, 3)] == [0, 1, 1]  # whose imports stay warm
    for ds in probes.values():  # but no variable and no figure of the cell before
        assert int(ds["inherited"]) == 0 and int(ds["figures"]) == 0
        assert ds.attrs["cwd"] == str(tmp_path / "smoke" / "leak")
    for nb in (tmp_path / "smoke" / "leak").glob("*.ipynb"):  # each executed notebook counts from 1, as in a fresh kernel
        counts = [c.get("execution_count") for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        assert counts == [1, 2, 3, 4], (nb.name, counts)


def test_warm_and_fresh_kernels_give_the_same_results(tmp_path, monkeypatch):
    small = _small(tmp_path)
    warm = run_sweep(small, profile="smoke", root=tmp_path / "warm", progress=False)
    monkeypatch.setenv("DIFFEOSENS_FRESH_KERNEL", "1")
    fresh = run_sweep(small, profile="smoke", root=tmp_path / "fresh", progress=False)
    assert warm.ok and fresh.ok and len(warm.by_status("ran")) == len(fresh.by_status("ran")) == 4
    names = sorted(p.name for p in (tmp_path / "warm" / "smoke" / "cells").glob("*.nc"))
    assert names == sorted(p.name for p in (tmp_path / "fresh" / "smoke" / "cells").glob("*.nc")) and len(names) == 4
    for name in names:
        xr.testing.assert_identical(results.open_run(tmp_path / "warm" / "smoke" / "cells" / name),
                                    results.open_run(tmp_path / "fresh" / "smoke" / "cells" / name))
        a, b = (json.loads((tmp_path / kind / "smoke" / "cells" / name).with_suffix(".cell.json").read_text()) for kind in ("warm", "fresh"))
        assert {k: v for k, v in a.items() if k != "written"} == {k: v for k, v in b.items() if k != "written"}
    # the records are those of the same code: warm skips what fresh ran, and the other way round
    assert len(run_sweep(small, profile="smoke", root=tmp_path / "warm", progress=False).by_status("skipped")) == 4
    monkeypatch.delenv("DIFFEOSENS_FRESH_KERNEL")
    assert len(run_sweep(small, profile="smoke", root=tmp_path / "fresh", progress=False).by_status("skipped")) == 4
    monkeypatch.setenv("DIFFEOSENS_FRESH_KERNEL", "sometimes")
    with pytest.raises(SweepError, match="DIFFEOSENS_FRESH_KERNEL='sometimes'"):
        run_sweep(small, profile="smoke", root=tmp_path / "fresh", progress=False)
    from diffeosens.cli import build_parser

    assert build_parser().parse_args(["sweep", str(small), "--fresh-kernels"]).fresh_kernels is True


def test_a_raising_or_dying_cell_does_not_poison_the_next_ones(tmp_path):
    report = run_sweep(_leak_config(tmp_path, values=[1, 2, 3, 4, 5], fail_on=2, die_on=4), profile="smoke", root=tmp_path,
                       progress=False)
    failed = {r.cell_id.split("-")[0]: r for r in report.by_status("failed")}
    assert sorted(failed) == ["value=2", "value=4"] and len(report.by_status("ran")) == 3
    assert "fails on purpose" in failed["value=2"].error and "fails on purpose" in Path(failed["value=2"].notebook).read_text()
    assert "kernel died" in failed["value=4"].error.lower(), failed["value=4"].error
    probes = _probes(tmp_path)
    assert sorted(probes) == [1, 3, 5]
    for ds in probes.values():
        assert int(ds["inherited"]) == 0 and int(ds["figures"]) == 0
    # after a failed cell, the next one runs in a fresh kernel
    assert int(probes[1]["pid"]) != int(probes[3]["pid"]) != int(probes[5]["pid"])
    assert int(probes[3]["warm"]) == 0 and int(probes[5]["warm"]) == 0
