"""The results store: one netCDF4 file per run, opened together as one xarray Dataset.

Layout (written by :mod:`diffeosens.sweep`)::

    results/<profile>/<experiment>/<cell-id>.nc     one run (e.g. a sensitivity measurement)
    results/<profile>/<experiment>/<cell-id>.ipynb  the executed notebook that wrote it
    results/<profile>/runs/<stage>/<cell-id>/       shared training runs (checkpoints, history.nc)

Every file carries ``attrs["schema"]`` (what it holds, e.g. ``"diffeosens.sensitivity/2"``) and
``attrs["grid"]``, a JSON dict of the sweep-grid values of its cell (e.g. ``{"arch": "VGG11",
"seed": 0, "state": "trained"}``). :func:`open_experiment` turns those values into dimensions
and combines every run of an experiment by coordinates.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .stats import geomean  # noqa: F401 - re-exported; seeds are aggregated with stats.seed_mean

__all__ = [
    "SCHEMAS",
    "ResultsError",
    "default_root",
    "geomean",
    "open_experiment",
    "open_run",
    "output_layer",
    "save",
    "validate",
]

#: Required content per schema: (dimensions, variables, attributes).
SCHEMAS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "diffeosens.sensitivity/2": (  # sensitivity.measure: delta is always a dimension
        ("delta", "layer"),
        ("D", "G", "R", "num_D", "num_G", "deno", "D_se", "G_se", "R_se", "T"),
        ("P", "estimator", "provenance"),
    ),
    "diffeosens.perturbed/1": (("layer",), ("deno",), ("P", "estimator", "provenance")),  # sensitivity.measure_perturbed
    "diffeosens.table/1": ((), (), ()),  # any small table (claims, summaries, test cells)
    "diffeosens.perturbations/1": (("cut", "delta"), ("original", "deformed", "noisy", "field", "perturbation_norm"), ("seed",)),
    "diffeosens.spectra/1": (("layer", "eigenvalue"), ("S", "S_norm", "homogeneous_fraction"), ()),
    "diffeosens.theory/1": (("depth",), ("D", "G", "R", "num_D", "num_G", "deno"), ()),
    "diffeosens.history/1": (("epoch",), ("train_loss", "train_acc", "test_loss", "test_acc", "lr"), ("recipe_name", "seed", "provenance")),
}

#: Coordinates along ``layer`` that become variables while runs are combined.
_LAYER_COORDS = ("layer_name", "layer_kind", "depth", "relative_depth")
#: Per-run scalar attributes that become variables of the combined dataset (e.g. to plot the
#: test error of each network against its sensitivity).
RUN_SCALARS = ("test_error", "best_test_acc", "model_params", "train_noise", "interpolation_epoch", "stopped_epoch", "interpolation_factor")


#: HDF5 (under netCDF4) is not thread-safe: every read and write of this module holds this lock,
#: so that threads of one process (e.g. a sweep with ``jobs > 1``) never touch files concurrently.
_NETCDF_LOCK = threading.RLock()


class ResultsError(ValueError):
    """A results file is missing, unreadable (corrupt) or not a diffeosens result (foreign)."""


def default_root() -> Path:
    """``$DIFFEOSENS_RESULTS`` if set, else ``results/`` in the repository (or the working directory)."""
    env = os.environ.get("DIFFEOSENS_RESULTS")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").exists():
        return repo / "results"
    return Path.cwd() / "results"


def save(ds: xr.Dataset, path: str | os.PathLike, *, schema: str | None = None, grid: dict[str, Any] | None = None) -> Path:
    """Write ``ds`` atomically (temporary file + rename) with ``engine="netcdf4"``.

    ``schema`` and ``grid`` are stored as attributes (``grid`` as JSON). String variables are
    written as variable-length strings; numeric variables with zlib compression.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.copy()
    if schema is not None:
        ds.attrs["schema"] = schema
    if grid is not None:
        ds.attrs["grid"] = json.dumps(grid, sort_keys=True, default=str)
    if "schema" in ds.attrs:
        validate(ds, path=str(path))
    encoding = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars if np.issubdtype(ds[v].dtype, np.number)}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        with _NETCDF_LOCK:
            ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def validate(ds: xr.Dataset, *, path: str = "<dataset>") -> xr.Dataset:
    """Check ``ds`` against its ``schema`` attribute; raise :class:`ResultsError` naming what is wrong."""
    schema = ds.attrs.get("schema")
    if schema is None:
        raise ResultsError(f"{path} is not a diffeosens result (no 'schema' attribute; known schemas: {', '.join(SCHEMAS)})")
    if schema not in SCHEMAS:
        raise ResultsError(f"{path} has unknown schema {schema!r}; known schemas: {', '.join(SCHEMAS)}")
    dims, variables, attrs = SCHEMAS[schema]
    missing = [d for d in dims if d not in ds.dims] + [v for v in variables if v not in ds.variables] + [a for a in attrs if a not in ds.attrs]
    if missing:
        raise ResultsError(f"{path} (schema {schema}) lacks {', '.join(repr(m) for m in missing)}")
    return ds


def open_run(path: str | os.PathLike, *, load: bool = True) -> xr.Dataset:
    """Open and validate one result file (``engine="netcdf4"``)."""
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"no results file at {path}")
    try:
        with _NETCDF_LOCK:
            ds = xr.open_dataset(path, engine="netcdf4")
            if load:
                ds = ds.load()
            ds.close()
    except (OSError, ValueError, RuntimeError, AttributeError) as err:
        raise ResultsError(f"{path} is not a readable netCDF4 file (corrupt or truncated?): {err}") from err
    return validate(ds, path=str(path))


def _grid(ds: xr.Dataset, path: Path) -> dict[str, Any]:
    try:
        return json.loads(ds.attrs.get("grid", "{}"))
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path} has a malformed 'grid' attribute: {err}") from err


def _expand(ds: xr.Dataset, grid: dict[str, Any], dims: Sequence[str]) -> xr.Dataset:
    present = [c for c in _LAYER_COORDS if c in ds.coords and c not in ds.dims]
    ds = ds.reset_coords(present)
    for k in RUN_SCALARS:
        if k in ds.attrs and k not in ds.variables:
            try:
                ds[k] = float(ds.attrs[k])
            except (TypeError, ValueError):
                pass
    for c in present:  # strings as object arrays, so that outer joins can pad them
        if ds[c].dtype.kind in "US":
            ds[c] = ds[c].astype(object)
    # dimensions without a coordinate get 0..n-1, so that runs of different sizes can be padded
    ds = ds.assign_coords({d: np.arange(n) for d, n in ds.sizes.items() if d not in ds.coords})
    ds = ds.expand_dims({d: [grid[d]] for d in dims})
    ds.attrs = {}
    return ds


def _collapse(da: xr.DataArray, dim: str) -> xr.DataArray | None:
    """``da`` without ``dim`` if all its non-missing values agree along ``dim`` (first non-missing kept)."""
    arr = np.moveaxis(np.asarray(da.values, dtype=object), da.get_axis_num(dim), 0)
    missing = np.vectorize(lambda x: x is None or (isinstance(x, float) and np.isnan(x)))(arr) if arr.size else arr
    first = arr[0].copy()
    have = ~missing[0]
    for i in range(1, arr.shape[0]):
        take = ~have & ~missing[i]
        first[take] = arr[i][take]
        have |= ~missing[i]
        both = ~missing[i] & (first != None)  # noqa: E711
        if bool((both & (arr[i] != first)).any()):
            return None
    out = xr.DataArray(first, dims=[x for x in da.dims if x != dim], coords={k: v for k, v in da.coords.items() if dim not in v.dims and k != dim})
    if da.dtype != object:
        out = out.astype(da.dtype)
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(np.all(a == b))
    except (TypeError, ValueError):
        return False


def open_experiment(
    experiment: str,
    *,
    profile: str = "quick",
    root: str | os.PathLike | None = None,
    files: Iterable[str | os.PathLike] | None = None,
    dims: Sequence[str] | None = None,
) -> xr.Dataset:
    """Every run of ``experiment`` at ``profile`` as one Dataset, combined by coordinates.

    Each run's grid values (``attrs["grid"]``) become dimensions (``dims``: all grid keys by
    default), so e.g. ``ds.D.sel(arch="VGG11", state="trained")`` picks one curve. Runs with
    different numbers of layers are padded with NaN along ``layer``; the per-layer coordinates
    (``layer_name``, ``depth``, ...) then depend on the grid dimensions too.

    Raises:
        ResultsError: no runs, a corrupt or foreign file, or runs that cannot be combined.
    """
    base = Path(root) if root is not None else default_root()
    paths = sorted(Path(f) for f in files) if files is not None else sorted((base / profile / experiment).glob("*.nc"))
    if not paths:
        raise ResultsError(
            f"no results for experiment {experiment!r} at profile {profile!r} in {base / profile / experiment}; "
            f"run `diffeosens sweep configs/{experiment}.yaml --profile {profile}` first"
        )
    runs = []
    for p in paths:
        ds = open_run(p)
        runs.append((ds, _grid(ds, p), p))
    keys = list(dims) if dims is not None else sorted({k for _, g, _ in runs for k in g})
    for ds, g, p in runs:
        missing = [k for k in keys if k not in g]
        if missing:
            raise ResultsError(f"{p} has no grid value for {missing}; it does not belong to the same sweep")
    first = runs[0][0].attrs
    attrs = {k: v for k, v in first.items()  # only what all runs share
             if k not in ("grid", "provenance", "params") and all(_same(r.attrs.get(k), v) for r, _, _ in runs)}
    expanded = [_expand(ds, g, keys) for ds, g, _ in runs]
    for dim in {d for e in expanded for d in e.dims if d not in keys}:  # pad every run to the longest one
        if all(dim in e.dims and np.issubdtype(e[dim].dtype, np.integer) for e in expanded):
            union = np.unique(np.concatenate([e[dim].values for e in expanded]))
            expanded = [e.reindex({dim: union}) for e in expanded]
    try:
        combined = xr.combine_by_coords(expanded, join="outer", combine_attrs="drop", data_vars="all", coords="different", compat="no_conflicts")
    except (ValueError, TypeError) as err:
        raise ResultsError(f"cannot combine the runs of {experiment!r} by coordinates {keys}: {err}") from err
    own: dict[str, set[str]] = {}  # the dims each variable has in some run
    for e in expanded:
        for name, var in e.variables.items():
            own.setdefault(str(name), set()).update(var.dims)
    for name in list(combined.data_vars):  # combining concatenates every variable along a dim that
        for d in [d for d in combined[name].dims if d not in own.get(str(name), set(combined[name].dims))]:
            collapsed = _collapse(combined[name], d)  # differs between runs (e.g. spectra's eigenvalue):
            if collapsed is not None:  # undo that broadcast for variables that never had it
                combined[name] = collapsed
    present = [c for c in _LAYER_COORDS if c in combined.data_vars]
    for c in present:  # a per-layer coordinate depends only on the grid dims it varies along (e.g. arch)
        for d in keys:
            if d in combined[c].dims:
                collapsed = _collapse(combined[c], d)
                if collapsed is not None:
                    combined[c] = collapsed
    combined = combined.set_coords(present)
    combined.attrs = {**attrs, "experiment": experiment, "profile": profile, "runs": len(runs)}
    return combined


def output_layer(ds: xr.Dataset) -> xr.Dataset:
    """The output probe point of every network: the first layer of kind ``"output"`` (drops ``layer``)."""
    return ds.isel(layer=(ds.layer_kind == "output").argmax("layer"))
