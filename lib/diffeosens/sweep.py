"""Sweeps: parameterised notebooks executed by papermill over a grid, locally or on Dask.

A sweep is described by a YAML config (``configs/<experiment>.yaml``)::

    experiment: layers                 # results go to results/<profile>/layers/
    title: Sensitivity through the layers
    profiles:                          # variables, one set per profile (no sizes: see below)
      smoke: {archs: [LeNet]}
      quick: {archs: [LeNet, VGG11bn]}
      paper: {archs: [LeNet, VGG11bn, ResNet18]}
    stages:
      - name: train
        notebook: notebooks/train.ipynb
        shared: true                   # results/<profile>/runs/train/<cell-id>/, reused by every experiment
        outputs: [history.nc, best.pt]
        grid:
          arch: ${archs}
          seed: ${seeds}
        params:
          dataset: cifar10
          profile: ${profile}
      - name: sensitivity
        notebook: notebooks/sensitivity.ipynb
        needs: [{stage: train, match: [arch, seed], param: train_dir}]
        grid:
          arch: ${archs}
          seed: ${seeds}
          state: [init, trained]
        params:
          n_probe: ${n_probe}

``${name}`` is replaced by the profile's variable (``${profile}`` by the profile's name); a value
that is exactly ``${name}`` takes the variable's type (e.g. a list for a grid axis). Inside YAML
flow collections (``{...}``, ``[...]``) quote it: ``"${name}"``.

Sizes come from :mod:`diffeosens.profiles` only: ``${n_probe}``, ``${seeds}`` (the list of seeds)
and ``${recipe_overrides}`` are the experiment's sizes at the profile
(:func:`~diffeosens.profiles.experiment_sizes`, with its departures in
:data:`~diffeosens.profiles.EXPERIMENTS`), and training runs get theirs from ``profile``. A
config that sets a size itself (a profile variable named like one of
:data:`~diffeosens.profiles.SIZE_NAMES`, or a literal value for such a stage parameter) is a
:class:`SweepError`.

Every grid cell is one papermill execution. Its id is readable plus a hash of everything that
defines it (``arch=VGG11_seed=0-1a2b3c4d``). Papermill parameters are the stage's ``params``,
the cell's grid values, and injected paths: ``out_path`` (the ``.nc`` to write; non-shared
stages), ``out_dir`` (shared stages), ``grid`` (JSON of the grid values) and, for each of
``needs``, the output directory of the matching cell of that stage.

Guarantees:

* **idempotent**: a cell whose outputs exist and validate is skipped; a training run shared by
  several experiments (same parameters, same id) is executed once;
* **resumable**: outputs are written atomically (temporary file + rename) and a cell counts as
  done only when all its outputs validate, so after ``kill -9`` a re-run executes exactly the
  missing cells (training cells resume from their last checkpoint);
* **isolated failures**: a raising cell is reported at the end with the path of its executed
  notebook; the other cells finish (cells that depend on it are skipped and reported);
* **order**: a cell starts only after the cells it needs, with ``--jobs N`` threads locally or on
  a Dask cluster (``scheduler="tcp://..."`` or a local cluster of ``dask_workers`` processes).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import time
import traceback
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import profiles as _profiles
from .results import ResultsError, default_root, open_run

__all__ = ["Cell", "CellResult", "SweepError", "SweepReport", "is_done", "load_sweep", "output_is_valid", "profile_variables", "run_cell", "run_sweep"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class SweepError(ValueError):
    """A malformed sweep config (the message names the key and what is valid)."""


@dataclass(frozen=True)
class Cell:
    """One papermill execution of a sweep."""

    cell_id: str
    stage: str
    notebook: str  # template path
    params: dict[str, Any]  # every papermill parameter, injected paths included
    grid: dict[str, Any]
    out_dir: str
    outputs: tuple[str, ...]  # absolute paths that must exist and validate
    notebook_out: str
    deps: tuple[str, ...] = ()


@dataclass
class CellResult:
    cell_id: str
    status: str  # "ran" | "skipped" | "failed" | "blocked"
    notebook: str
    seconds: float = 0.0
    error: str = ""


@dataclass
class SweepReport:
    experiment: str
    profile: str
    results: list[CellResult] = field(default_factory=list)

    def by_status(self, status: str) -> list[CellResult]:
        return [r for r in self.results if r.status == status]

    @property
    def ok(self) -> bool:
        return not self.by_status("failed") and not self.by_status("blocked")

    def summary(self) -> str:
        lines = [
            f"sweep {self.experiment} [{self.profile}]: {len(self.by_status('ran'))} ran, "
            f"{len(self.by_status('skipped'))} skipped (up to date), {len(self.by_status('failed'))} failed, "
            f"{len(self.by_status('blocked'))} blocked"
        ]
        for r in self.by_status("failed"):
            lines.append(f"  FAILED {r.cell_id}: {r.error}\n    executed notebook: {r.notebook}")
        for r in self.by_status("blocked"):
            lines.append(f"  BLOCKED {r.cell_id}: {r.error}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------


def _substitute(value: Any, variables: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str):
        whole = _VAR.fullmatch(value.strip())
        if whole:
            name = whole.group(1)
            if name not in variables:
                raise SweepError(f"{where}: unknown variable ${{{name}}}; defined: {', '.join(sorted(variables))}")
            return variables[name]

        def repl(m: re.Match[str]) -> str:
            if m.group(1) not in variables:
                raise SweepError(f"{where}: unknown variable ${{{m.group(1)}}}; defined: {', '.join(sorted(variables))}")
            return str(variables[m.group(1)])

        return _VAR.sub(repl, value)
    if isinstance(value, list):
        return [_substitute(v, variables, where) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables, f"{where}.{k}") for k, v in value.items()}
    return value


def _is_reference(value: Any) -> bool:
    """``value`` is exactly one ``${name}`` (a reference to a variable, not a value of its own)."""
    return isinstance(value, str) and _VAR.fullmatch(value.strip()) is not None


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-")[:40] or "x"


def cell_id(grid: Mapping[str, Any], identity: Mapping[str, Any]) -> str:
    """Readable id from the grid values plus a hash of everything that defines the cell."""
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
    readable = "_".join(f"{k}={_slug(v)}" for k, v in grid.items())
    return f"{readable}-{digest}" if readable else digest


#: Parameters injected by the sweep: paths, not part of a cell's identity.
_INJECTED = {"out_dir", "out_path", "grid"}


def _notebook_defaults(path: Path) -> dict[str, Any]:
    """The defaults of a notebook's ``parameters`` cell (papermill's inspection), as values."""
    import ast

    import papermill as pm

    out = {}
    for name, info in pm.inspect_notebook(str(path)).items():
        try:
            out[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            out[name] = info["default"]
    return out


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _resolve_notebook(path: str, config_path: Path) -> Path:
    for base in (config_path.parent, config_path.parent.parent, _repo_root(), Path.cwd()):
        cand = (base / path).resolve()
        if cand.exists():
            return cand
    raise SweepError(f"notebook {path!r} not found (looked next to {config_path} and in {_repo_root()})")


def profile_variables(cfg: Mapping[str, Any], profile: str, *, where: str = "config") -> dict[str, Any]:
    """The variables of a parsed sweep config at ``profile``: its own (``profiles.<profile>``), the
    experiment's sizes from :func:`diffeosens.profiles.experiment_sizes` (``n_probe``, ``seeds``,
    ``recipe_overrides``) and ``profile``. A config that sets a size itself is a :class:`SweepError`.
    """
    if profile not in _profiles.PROFILES:
        raise SweepError(f"unknown profile {profile!r}; valid profiles: {', '.join(_profiles.PROFILES)}")
    experiment = str(cfg.get("experiment", ""))
    for prof, values in (cfg.get("profiles") or {}).items():
        sizes = sorted(set(values or {}) & _profiles.SIZE_NAMES)
        if sizes:
            raise SweepError(f"{where}: profiles.{prof} sets {', '.join(sizes)}, a size of diffeosens.profiles; sizes have one "
                             f"source: refer to ${{n_probe}}, ${{seeds}}, ${{recipe_overrides}} and set a departure of this "
                             f"experiment in diffeosens.profiles.EXPERIMENTS[{experiment!r}]")
    variables = dict((cfg.get("profiles") or {}).get(profile) or {})
    variables.update(_profiles.experiment_sizes(experiment, profile))
    variables["profile"] = profile
    return variables


def load_sweep(config: str | os.PathLike, *, profile: str = "quick", root: str | os.PathLike | None = None) -> tuple[dict[str, Any], list[Cell]]:
    """Parse a sweep config for ``profile``: returns the config and its cells in dependency order."""
    if profile not in _profiles.PROFILES:
        raise SweepError(f"unknown profile {profile!r}; valid profiles: {', '.join(_profiles.PROFILES)}")
    path = Path(config)
    if not path.exists():
        raise SweepError(f"no sweep config at {path}")
    if not path.is_file():
        raise SweepError(f"{path} is not a file; give one sweep config, e.g. configs/layers.yaml")
    try:
        cfg = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        raise SweepError(f"{path} is not a readable YAML file: {err}") from err
    if not isinstance(cfg, dict):
        raise SweepError(f"{path}: a sweep config is a mapping with keys experiment, profiles, stages")
    for key in ("experiment", "stages"):
        if key not in cfg:
            raise SweepError(f"{path}: missing key {key!r} (required: experiment, stages; optional: title, description, profiles)")
    experiment = str(cfg["experiment"])
    if not isinstance(cfg["stages"], list) or not all(isinstance(st, dict) for st in cfg["stages"]):
        raise SweepError(f"{path}: 'stages' must be a list of mappings (name, notebook, grid, ...), got {cfg['stages']!r}")
    if cfg.get("profiles") is not None and not isinstance(cfg["profiles"], dict):
        raise SweepError(f"{path}: 'profiles' must be a mapping profile -> variables, got {cfg['profiles']!r}")
    if cfg.get("profiles") and profile not in cfg["profiles"]:
        raise SweepError(f"{path}: no variables for profile {profile!r}; defined profiles: {', '.join(cfg['profiles'])}")
    variables = profile_variables(cfg, profile, where=str(path))
    base = (Path(root) if root is not None else default_root()) / profile

    cells: list[Cell] = []
    by_stage: dict[str, list[Cell]] = {}
    for i, stage in enumerate(cfg["stages"]):
        where = f"{path}: stages[{i}]"
        unknown = set(stage) - {"name", "notebook", "grid", "params", "needs", "shared", "outputs"}
        if unknown:
            raise SweepError(f"{where}: unknown key(s) {sorted(unknown)}; valid: name, notebook, grid, params, needs, shared, outputs")
        if "name" not in stage or "notebook" not in stage:
            raise SweepError(f"{where}: a stage needs 'name' and 'notebook'")
        name = stage["name"]
        nb = _resolve_notebook(stage["notebook"], path)
        for part in ("grid", "params"):
            typed = sorted(k for k, v in (stage.get(part) or {}).items() if k in _profiles.SIZE_NAMES and not _is_reference(v))
            if typed:
                raise SweepError(f"{where}.{part}: {', '.join(typed)} is a size of diffeosens.profiles; refer to it "
                                 f"(e.g. n_probe: ${{n_probe}}) instead of typing a value")
        grid = _substitute(stage.get("grid") or {}, variables, f"{where}.grid")
        params = _substitute(stage.get("params") or {}, variables, f"{where}.params")
        for k, v in grid.items():
            if not isinstance(v, list) or not v:
                raise SweepError(f"{where}.grid.{k}: a grid axis must be a non-empty list, got {v!r}")
        needs = stage.get("needs") or []
        if not isinstance(needs, list) or not all(isinstance(n, dict) for n in needs):
            raise SweepError(f"{where}.needs: a list of mappings {{stage, match, param}}, got {needs!r}")
        for need in needs:
            if need.get("stage") not in by_stage:
                raise SweepError(f"{where}.needs: stage {need.get('stage')!r} must be defined before {name!r}")
        shared = bool(stage.get("shared", False))
        defaults = _notebook_defaults(nb)
        unknown_params = sorted(set(params) - set(defaults))
        if unknown_params:
            raise SweepError(f"{where}: {nb.name} has no parameter(s) {unknown_params}; its parameters: {', '.join(defaults)}")
        cells_here = []
        for combo in itertools.product(*grid.values()):
            g = dict(zip(grid.keys(), combo))
            deps, injected = [], {}
            for need in needs:
                match = need.get("match", [])
                found = [c for c in by_stage[need["stage"]] if all(c.grid.get(k) == g.get(k) for k in match)]
                if len(found) != 1:
                    raise SweepError(f"{where}: {len(found)} cells of stage {need['stage']!r} match {dict((k, g.get(k)) for k in match)}; need exactly one")
                deps.append(found[0].cell_id)
                injected[need.get("param", f"{need['stage']}_dir")] = found[0].out_dir
            # identity: the notebook and the full parameter set (its defaults filled in), so that two
            # configs asking for the same run get the same id whichever defaults they spell out
            full = {k: v for k, v in {**defaults, **params, **g}.items() if k not in _INJECTED and k not in injected}
            identity = {"notebook": nb.name, "params": full, "needs": sorted(deps)}
            if shared:  # shared runs are named by what they are, not by the grid that asked for them
                label = {k: v for k, v in sorted(full.items()) if k != "profile" and v != defaults.get(k)}
                cid = cell_id(label, identity)
                out_dir = base / "runs" / name / cid
                outputs = tuple(str(out_dir / o) for o in stage.get("outputs", ["history.nc"]))
                notebook_out = out_dir / f"{name}.ipynb"
                injected["out_dir"] = str(out_dir)
            else:
                cid = cell_id(g, identity)
                out_dir = base / experiment
                out_path = out_dir / f"{cid}.nc"
                outputs = (str(out_path),) + tuple(str(out_dir / o.replace("{cell_id}", cid)) for o in stage.get("outputs", []))
                notebook_out = out_dir / f"{cid}.ipynb"
                injected["out_path"] = str(out_path)
            undeclared = sorted(k for k in injected if k not in defaults)
            if undeclared:
                raise SweepError(f"{where}: {nb.name} must declare parameter(s) {undeclared} in its parameters cell")
            passed = {k: v for k, v in {**params, **g}.items() if k in defaults}  # grid keys only used to match needs stay out
            if "grid" in defaults:
                passed["grid"] = json.dumps(g, sort_keys=True, default=str)
            passed.update(injected)
            cell = Cell(cid, name, str(nb), passed, g, str(out_dir), outputs, str(notebook_out), tuple(deps))
            cells_here.append(cell)
        by_stage[name] = cells_here
        cells.extend(cells_here)
    return cfg, cells


# ------------------------------------------------------------------------------------------------
# Execution
# ------------------------------------------------------------------------------------------------


def output_is_valid(path: str | os.PathLike) -> bool:
    """``path`` exists, is not empty and, for a ``.nc`` result or a ``.pt`` checkpoint, opens
    (schema-checked by :func:`~diffeosens.results.open_run`; a truncated checkpoint does not count)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return False
    if path.suffix == ".nc":
        try:
            open_run(path, load=False)
        except ResultsError:
            return False
    if path.suffix in (".pt", ".pth"):  # a checkpoint counts only if it loads (a truncated file does not)
        from .train import CheckpointError, check_checkpoint

        try:
            check_checkpoint(path)
        except CheckpointError:
            return False
    return True




def is_done(cell: Cell) -> bool:
    """All outputs of the cell exist and validate."""
    return all(output_is_valid(o) for o in cell.outputs) and Path(cell.notebook_out).exists()


@contextlib.contextmanager
def _lock(directory: Path, name: str) -> Iterator[None]:
    """An exclusive lock per cell, so that concurrent sweeps never run the same cell twice."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(directory / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _retitle(path: Path, cell: Cell) -> None:
    """Give the executed notebook its own title (all runs of a template share the same H1)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        if c.cell_type == "markdown" and c.source.lstrip().startswith("# "):
            first, _, rest = c.source.lstrip().partition("\n")
            c.source = f"{first} — {cell.stage} {cell.cell_id}\n{rest}"
            break
    nbformat.write(nb, path)


def run_cell(cell: Cell | dict[str, Any], *dep_results: Any, force: bool = False) -> CellResult:
    """Execute one cell with papermill (or skip it when up to date). Never raises.

    ``dep_results`` are the :class:`CellResult` of the cells it needs (as Dask passes futures'
    values); if any failed, the cell is not run and is reported as ``blocked``.
    """
    if isinstance(cell, dict):
        cell = Cell(**{**cell, "outputs": tuple(cell["outputs"]), "deps": tuple(cell.get("deps", ()))})
    bad = [d for d in dep_results if isinstance(d, CellResult) and d.status in ("failed", "blocked")]
    if bad:
        return CellResult(cell.cell_id, "blocked", cell.notebook_out, error=f"needs {', '.join(d.cell_id for d in bad)}, which did not complete")
    import papermill as pm

    out_dir = Path(cell.out_dir)
    nb_out = Path(cell.notebook_out)
    with _lock(out_dir, cell.cell_id):
        if not force and is_done(cell):
            return CellResult(cell.cell_id, "skipped", str(nb_out))
        t0 = time.perf_counter()
        tmp = nb_out.with_name(f".{nb_out.stem}.tmp{os.getpid()}.ipynb")
        try:
            pm.execute_notebook(
                cell.notebook, str(tmp), parameters=cell.params, kernel_name="python3", cwd=str(out_dir),
                progress_bar=False, log_output=False, request_save_on_cell_execute=False,
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
            _retitle(tmp, cell)
            os.replace(tmp, nb_out)
        except Exception as err:  # noqa: BLE001 - a failing cell must not stop the sweep
            if tmp.exists():
                os.replace(tmp, nb_out)
            msg = str(err).strip().splitlines()
            short = next((ln for ln in reversed(msg) if ln.strip()), type(err).__name__) if msg else type(err).__name__
            return CellResult(cell.cell_id, "failed", str(nb_out), time.perf_counter() - t0, short[:500])
        missing = [o for o in cell.outputs if not output_is_valid(o)]
        if missing:
            return CellResult(cell.cell_id, "failed", str(nb_out), time.perf_counter() - t0,
                              f"the notebook finished but did not write valid {', '.join(missing)}")
        return CellResult(cell.cell_id, "ran", str(nb_out), time.perf_counter() - t0)


def _progress(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="cell")


def run_sweep(
    config: str | os.PathLike,
    *,
    profile: str = "quick",
    root: str | os.PathLike | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
    dask_workers: int | None = None,
    stages: list[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> SweepReport:
    """Run every cell of a sweep (see the module docstring) and report what happened.

    Args:
        config: the YAML config.
        profile: ``smoke``, ``quick`` or ``paper``.
        root: results root (default :func:`~diffeosens.results.default_root`).
        jobs: cells executed in parallel locally (threads driving papermill kernels; each kernel
            gets ``OMP_NUM_THREADS = cores // jobs``).
        scheduler: address of a running Dask scheduler (``tcp://host:8786``); the workers need this
            repository's environment and a shared filesystem for ``root``.
        dask_workers: start a local Dask cluster with this many single-threaded worker processes.
        stages: run only these stages (their needs must already be done).
        force: re-run cells even when their outputs are valid.
    """
    cfg, cells = load_sweep(config, profile=profile, root=root)
    if stages:
        unknown = set(stages) - {c.stage for c in cells}
        if unknown:
            raise SweepError(f"unknown stage(s) {sorted(unknown)}; stages of this sweep: {sorted({c.stage for c in cells})}")
        cells = [c for c in cells if c.stage in stages]
    report = SweepReport(str(cfg["experiment"]), profile)
    if jobs < 1:
        raise SweepError(f"jobs must be >= 1, got {jobs}")
    if scheduler or dask_workers:
        report.results = _run_dask(cells, scheduler, dask_workers, force, progress, report.experiment)
    else:
        report.results = _run_local(cells, jobs, force, progress, report.experiment)
    return report


def _run_local(cells: list[Cell], jobs: int, force: bool, progress: bool, name: str) -> list[CellResult]:
    cores = os.cpu_count() or 1
    if jobs > 1:
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // jobs))
    futures: dict[str, Future[CellResult]] = {}

    def task(cell: Cell) -> CellResult:
        deps = [futures[d].result() for d in cell.deps if d in futures]
        return run_cell(cell, *deps, force=force)

    results: list[CellResult] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool, _progress(len(cells), progress, name) as bar:
        for cell in cells:  # dependency order: a task only waits on earlier submissions
            futures[cell.cell_id] = pool.submit(task, cell)
        for cell in cells:
            results.append(futures[cell.cell_id].result())
            if bar is not None:
                bar.update(1)
    return results


def _run_dask(cells: list[Cell], scheduler: str | None, dask_workers: int | None, force: bool, progress: bool, name: str) -> list[CellResult]:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=dask_workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        futures = {}
        for cell in cells:
            deps = [futures[d] for d in cell.deps if d in futures]
            futures[cell.cell_id] = client.submit(run_cell, asdict(cell), *deps, force=force, key=f"cell-{cell.cell_id}", pure=False)
        done: dict[str, CellResult] = {}
        with _progress(len(cells), progress, name) as bar:
            for fut in as_completed(list(futures.values())):
                try:
                    res = fut.result()
                except Exception as err:  # noqa: BLE001 - e.g. a worker died
                    key = str(fut.key)[len("cell-"):]
                    res = CellResult(key, "failed", "", error=f"dask task failed: {err}\n{traceback.format_exc(limit=1)}")
                done[res.cell_id] = res
                if bar is not None:
                    bar.update(1)
        return [done[c.cell_id] for c in cells]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
