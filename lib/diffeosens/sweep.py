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

Every grid cell is one papermill execution, with its own executed notebook (in a warm kernel by
default: see *Warm kernels*). Its id is readable plus a hash of everything that defines it
(``arch=VGG11_seed=0-1a2b3c4d``). Papermill parameters are the stage's ``params``,
the cell's grid values, and injected paths: ``out_path`` (the ``.nc`` to write; non-shared
stages), ``out_dir`` (shared stages), ``grid`` (JSON of the grid values) and, for each of
``needs``, the output directory of the matching cell of that stage.

Guarantees:

* **idempotent**: a cell whose outputs exist, validate and were computed by the current code (see
  below) is skipped; a training run shared by several experiments (same parameters, same id) is
  executed once;
* **current**: results computed by older code are not silently reused (see *Stale results*);
* **resumable**: outputs are written atomically (temporary file + rename) and a cell counts as
  done only when all its outputs validate and its record says it finished, so after ``kill -9`` a
  re-run executes exactly the missing cells (training cells resume from their last checkpoint,
  whose SHA-256 is verified; a cell with a result or checkpoint that does not validate starts
  from scratch, and temporary files a killed write left are deleted), on any node that shares
  the results folder (tested with two Dask workers killed mid-sweep, ``tests/test_sweep_cluster.py``);
* **isolated failures**: a raising cell is reported at the end with the path of its executed
  notebook; the other cells finish (cells that depend on it are skipped and reported);
* **order**: a cell starts only after the cells it needs, with ``--jobs N`` threads locally or on
  a Dask cluster (``scheduler="tcp://..."`` or a local cluster of ``dask_workers`` processes).

Stale results
-------------

Each cell keeps a *record* next to its executed notebook, ``<notebook_out stem>.cell.json``
(``results/<profile>/<experiment>/<cell-id>.cell.json``, or ``train.cell.json`` in a shared run's
folder), written atomically (temporary file + rename). It holds what the cell's results were
computed by (:func:`cell_stamp`):

* ``notebook_hash``: :func:`notebook_hash` of the template notebook: its code cells only, each
  normalised by the Python parser (comments, blank lines and layout do not count), so re-saving a
  notebook with outputs, execution counts, metadata or edited Markdown changes nothing;
* ``library_hash``: :func:`library_hash`, the source of ``lib/diffeosens/**/*.py`` parsed with
  docstrings and comments dropped (a documentation fix does not count), computed once per
  process in the process that loads the sweep (Dask workers must run the same checkout);
* ``params`` (every parameter, defaults filled in) and ``needs``: the record digests of the cells
  it reads, so a cell whose upstream cell is recomputed by changed code is stale too (a cell
  recomputed by the *same* code, e.g. after its output was deleted, does not propagate).

A cell is written ``status: running`` before its notebook starts and ``status: done`` after its
outputs validate: a cell is up to date only with a ``done`` record that matches the current
stamp. A cell whose record differs, or whose outputs exist with no record at all (computed before
records existed, or by hand: unknown provenance), is *stale*. What happens to stale cells is the
``stale`` argument of :func:`run_sweep`, by default the environment variable
``DIFFEOSENS_STALE``, by default ``rerun``:

* ``rerun``: the cell is recomputed from scratch: its outputs (for a shared run: every file of its
  folder, checkpoints included, so that training does not resume from a checkpoint of older code)
  are deleted first;
* ``warn``: complete stale outputs are kept (and reported as such); a cell with missing outputs
  runs (resuming whatever it finds);
* ``accept``: like ``warn``, and the kept cells are recorded as computed by the current code, so
  they are up to date from then on (e.g. after a refactor known not to change results, instead of
  retraining every network);
* ``ignore``: records are not checked (the behaviour before records existed): outputs that exist
  and validate are reused.

Each stale cell is announced before the sweep starts, e.g. ``stale: value=1-1a2b3c4d [first]
(notebook changed) -> rerun``, and :meth:`SweepReport.summary` counts the stale reruns and the
stale cells kept.

Warm kernels
------------

Starting a Jupyter kernel and importing what a notebook needs (torch, xarray, matplotlib, the
library) takes seconds per cell, often more than a smoke or quick measurement itself. A local sweep
therefore keeps one kernel per worker (one with ``jobs=1``, one per thread with ``--jobs N``),
started when its first cell runs and shut down when the sweep ends, and papermill executes each
cell's notebook in it (:class:`WarmKernel`; papermill passes ``km=`` to nbclient, which neither
starts nor shuts down the kernel of a manager it was given). Each cell still has its own executed
notebook, outputs, record and result exactly as with a fresh kernel. Before each cell the kernel is
brought back to the state of a fresh one:

* the user namespace is emptied and the execution count restarts at 1 (IPython's
  ``reset(new_session=True)``, i.e. ``%reset -f`` plus a new history session);
* matplotlib figures are closed and its rcParams restored (``rc_file_defaults``);
* environment variables the kernel started with get their values back; the working directory is
  the cell's (``out_dir``);
* warnings shown once per place are shown again (the filters' version is bumped);
* Python's, NumPy's and torch's global random generators are re-seeded from entropy (as in a new
  process), torch's grad mode, default dtype and deterministic-algorithms flag are reset, the
  cached git commit of :mod:`~diffeosens.provenance` is dropped, garbage is collected and torch's
  CUDA cache emptied.

What stays is what a fresh kernel would rebuild identically: imported modules (``sys.modules``,
where the time goes), with the warning filters and environment variables their import added, and
the caches of library functions, which are keyed on all their arguments (``lru_cache`` of sine
tables, temperatures, spectra modes; no dataset is cached). Not undone, because a library's import
may have done the same: a cell's own changes to ``sys.path``, to the state of an imported module (an
attribute, a registry) or a new environment variable it sets; the project's notebooks make none.
After a cell that failed (raised, timed out, or killed its kernel), the kernel is shut down and the
next cell gets a fresh one, so a half-done cell leaves nothing behind; a kernel that dies between
cells or cannot be reset is replaced the same way.

``run_sweep(fresh_kernels=True)``, ``diffeosens sweep --fresh-kernels`` or
``DIFFEOSENS_FRESH_KERNEL=1`` run each cell in a fresh kernel instead (the behaviour before warm
kernels). Dask workers always do. The library is imported once per warm kernel: a library edited
during a sweep is seen by the cells of a fresh kernel only (records hash the library once per sweep
either way). ``bench/sweep_startup.py`` measures the difference.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as _dt
import hashlib
import itertools
import json
import os
import re
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import profiles as _profiles
from .results import ResultsError, default_root, open_run

__all__ = [
    "FRESH_KERNEL_ENV", "STALE_POLICIES", "Cell", "CellResult", "SweepError", "SweepReport", "WarmKernel", "cell_stamp", "is_done",
    "library_hash", "load_sweep", "notebook_hash", "output_is_valid", "profile_variables", "record_path", "run_cell", "run_sweep",
    "choose_cells", "select_cells", "side_by_side", "stale_reasons",
]

#: What a sweep does with stale cells (see the module docstring); the default is ``rerun``.
STALE_POLICIES = ("rerun", "warn", "accept", "ignore")
#: The environment variable that sets the policy when :func:`run_sweep` is not given one.
STALE_ENV = "DIFFEOSENS_STALE"

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
    stamp: dict[str, Any] = field(default_factory=dict)  # what its results must be computed by (cell_stamp)
    shared: bool = False  # a shared run: out_dir is the cell's own folder


@dataclass
class CellResult:
    cell_id: str
    status: str  # "ran" | "skipped" | "failed" | "blocked"
    notebook: str
    seconds: float = 0.0
    error: str = ""
    stale: str = ""  # why the cell's previous results were stale ("" if they were not, or there were none)


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

    @property
    def stale_reruns(self) -> list[CellResult]:
        """Cells that ran because their previous results were stale."""
        return [r for r in self.by_status("ran") if r.stale]

    @property
    def stale_kept(self) -> list[CellResult]:
        """Stale cells whose results were kept (``warn`` or ``accept``)."""
        return [r for r in self.by_status("skipped") if r.stale]

    def summary(self) -> str:
        skipped = len(self.by_status("skipped")) - len(self.stale_kept)
        kept = f", {len(self.stale_kept)} stale kept" if self.stale_kept else ""
        lines = [
            f"sweep {self.experiment} [{self.profile}]: {len(self.by_status('ran'))} ran ({len(self.stale_reruns)} stale), "
            f"{skipped} skipped (up to date){kept}, {len(self.by_status('failed'))} failed, "
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


#: The sweep configs of the book, in the order of its chapters (later ones reuse earlier trainings;
#: the Makefile's EXPERIMENTS lists the same).
BOOK_EXPERIMENTS = ("perturbations", "layers", "architectures", "noisy", "pooling", "spectra", "activations", "custom",
                    "scale2d", "scale1d", "theory")


def book_configs() -> list[Path]:
    """The paths of the book's sweep configs (``configs/<experiment>.yaml``), in :data:`BOOK_EXPERIMENTS` order."""
    return [_repo_root() / "configs" / f"{e}.yaml" for e in BOOK_EXPERIMENTS]


def _resolve_notebook(path: str, config_path: Path) -> Path:
    for base in (config_path.parent, config_path.parent.parent, _repo_root(), Path.cwd()):
        cand = (base / path).resolve()
        if cand.exists():
            return cand
    raise SweepError(f"notebook {path!r} not found (looked next to {config_path} and in {_repo_root()})")


# ------------------------------------------------------------------------------------------------
# What a cell's results are computed by: notebook code, library code, parameters, upstream cells
# ------------------------------------------------------------------------------------------------


def _drop_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def _normalised_code(source: str, *, docstrings: bool) -> str:
    """``source`` as the parser sees it (no comments, blank lines or layout; without docstrings
    unless ``docstrings``); source that does not parse (e.g. IPython magics) with its lines stripped."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return "\n".join(line.rstrip() for line in source.strip().splitlines() if line.strip())
    return ast.unparse(tree if docstrings else _drop_docstrings(tree))


def notebook_hash(path: str | os.PathLike) -> str:
    """A hash of a notebook's code: the source of its code cells in order (papermill's injected
    parameters cell excluded), each normalised by the Python parser. Outputs, execution counts,
    metadata, Markdown cells, comments and layout do not count."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    code = [_normalised_code(c.source, docstrings=True) for c in nb.cells
            if c.cell_type == "code" and "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    return hashlib.sha256(json.dumps(code).encode()).hexdigest()[:16]


def _library_files() -> list[Path]:
    package = Path(__file__).resolve().parent
    return [p for p in sorted(package.rglob("*.py"))
            if not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(package).parts)]


_LIBRARY_HASH: dict[Any, str] = {}


def library_hash() -> str:
    """A hash of the library's code, ``lib/diffeosens/**/*.py`` (relative paths and sources parsed
    with docstrings and comments dropped: a documentation fix does not count). Computed once per
    process (a fraction of a second), again only if a file's size or modification time changes
    (a long-lived process, e.g. a Jupyter session, sees the library edited under it)."""
    package = Path(__file__).resolve().parent
    files = _library_files()
    key = tuple((p.as_posix(), (st := p.stat()).st_mtime_ns, st.st_size) for p in files)
    cached = _LIBRARY_HASH.get(key)
    if cached is None:
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0")
            digest.update(_normalised_code(path.read_text(encoding="utf-8", errors="replace"), docstrings=False).encode() + b"\0")
        cached = digest.hexdigest()[:16]
        _LIBRARY_HASH.clear()
        _LIBRARY_HASH[key] = cached
    return cached


def _digest(stamp: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(stamp, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cell_stamp(notebook_hash: str, params: Mapping[str, Any], needs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What a cell's results are computed by: its notebook's code, the library's code
    (:func:`library_hash`), its parameters and the stamps of the cells it needs (as digests), in
    the JSON form its record stores."""
    stamp = {"notebook_hash": notebook_hash, "library_hash": library_hash(), "params": dict(params),
             "needs": {cid: _digest(s) for cid, s in sorted(needs.items())}}
    return json.loads(json.dumps(stamp, sort_keys=True, default=str))


def profile_variables(cfg: Mapping[str, Any], profile: str, *, where: str = "config") -> dict[str, Any]:
    """The variables of a parsed sweep config at ``profile``: its own (``profiles.<grid>``, where
    ``<grid>`` is :func:`diffeosens.profiles.grid_profile` of ``profile``: ``paper`` for ``dry``,
    ``quick`` for ``laptop`` unless the config lists a ``laptop`` grid), the
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
    variables = dict((cfg.get("profiles") or {}).get(_profiles.grid_profile(profile, cfg.get("profiles") or {})) or {})
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
    unknown_keys = sorted(str(k) for k in set(cfg) - set(_CONFIG_KEYS))
    if unknown_keys:
        raise SweepError(f"{path}: unknown top-level key(s) {unknown_keys}; valid: {', '.join(_CONFIG_KEYS)}")
    experiment = str(cfg["experiment"])
    if not isinstance(cfg["stages"], list) or not all(isinstance(st, dict) for st in cfg["stages"]):
        raise SweepError(f"{path}: 'stages' must be a list of mappings (name, notebook, grid, ...), got {cfg['stages']!r}")
    if cfg.get("profiles") is not None and not isinstance(cfg["profiles"], dict):
        raise SweepError(f"{path}: 'profiles' must be a mapping profile -> variables, got {cfg['profiles']!r}")
    grid_of = _profiles.grid_profile(profile, cfg.get("profiles") or {})
    if cfg.get("profiles") and grid_of not in cfg["profiles"]:
        raise SweepError(f"{path}: no variables for profile {grid_of!r}{' (the grid of ' + repr(profile) + ')' if grid_of != profile else ''}; "
                         f"defined profiles: {', '.join(cfg['profiles'])}")
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
        nb_hash = notebook_hash(nb)
        unknown_params = sorted(set(params) - set(defaults))
        if unknown_params:
            raise SweepError(f"{where}: {nb.name} has no parameter(s) {unknown_params}; its parameters: {', '.join(defaults)}")
        cells_here = []
        for combo in itertools.product(*grid.values()):
            g = dict(zip(grid.keys(), combo))
            deps, injected, dep_stamps = [], {}, {}
            for need in needs:
                match = need.get("match", [])
                found = [c for c in by_stage[need["stage"]] if all(c.grid.get(k) == g.get(k) for k in match)]
                if len(found) != 1:
                    raise SweepError(f"{where}: {len(found)} cells of stage {need['stage']!r} match {dict((k, g.get(k)) for k in match)}; need exactly one")
                deps.append(found[0].cell_id)
                dep_stamps[found[0].cell_id] = found[0].stamp
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
            stamp = cell_stamp(nb_hash, full, dep_stamps)
            cell = Cell(cid, name, str(nb), passed, g, str(out_dir), outputs, str(notebook_out), tuple(deps), stamp, shared)
            cells_here.append(cell)
        _check_architectures(cells_here, where)
        by_stage[name] = cells_here
        cells.extend(cells_here)
    return cfg, cells


#: The top-level keys of a sweep config.
_CONFIG_KEYS = ("experiment", "title", "description", "profiles", "stages")


def _check_architectures(cells: list[Cell], where: str) -> None:
    """An ``arch`` a stage passes to its notebook must be in the model zoo: found when the config is
    read, not when a cell that builds it has run for minutes."""
    archs = sorted({str(c.params["arch"]) for c in cells if isinstance(c.params.get("arch"), str)})
    if not archs:
        return
    from .models import available

    known = set(available())
    unknown = [a for a in archs if a not in known]
    if unknown:
        raise SweepError(f"{where}: unknown architecture(s) {unknown}; the zoo has: {', '.join(sorted(known))}")


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

def record_path(cell: Cell) -> Path:
    """The cell's record (``<executed notebook stem>.cell.json``): what its results were computed by."""
    return Path(cell.notebook_out).with_suffix(".cell.json")


def _read_record(cell: Cell) -> dict[str, Any] | None:
    try:
        record = json.loads(record_path(cell).read_text())
    except (OSError, ValueError):  # none, or unreadable (records are written atomically: not by a kill)
        return None
    return record if isinstance(record, dict) else None


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_record(cell: Cell, status: str) -> None:
    try:
        from importlib.metadata import version

        lib_version = version("diffeosens")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        lib_version = "unknown"
    _write_json_atomic(record_path(cell), {
        **cell.stamp, "status": status, "cell_id": cell.cell_id, "stage": cell.stage, "notebook": cell.notebook,
        "diffeosens_version": lib_version, "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })


def _cell_files(cell: Cell) -> list[Path]:
    """Files that hold (part of) a cell's results: its outputs and, for a shared run, its folder."""
    files = [Path(o) for o in cell.outputs] + [Path(cell.notebook_out)]
    if cell.shared and Path(cell.out_dir).is_dir():
        files += [p for p in Path(cell.out_dir).iterdir() if p.is_file() and not p.name.endswith(".lock")]
    return [p for p in dict.fromkeys(files) if p.exists() and p != record_path(cell)]


def _check(cell: Cell) -> tuple[str, list[str]]:
    """The state of a cell's results against the current code, from its record (outputs are not
    validated here): ``new`` (nothing there), ``running`` (started by the current code, not
    finished), ``current`` (finished by the current code) or ``stale`` (with the reasons)."""
    record = _read_record(cell)
    if record is None:
        return ("stale", ["unknown code version: no record"]) if _cell_files(cell) else ("new", [])
    reasons = []
    if record.get("notebook_hash") != cell.stamp.get("notebook_hash"):
        reasons.append("notebook changed")
    if record.get("library_hash") != cell.stamp.get("library_hash"):
        reasons.append("library changed")
    if record.get("params") != cell.stamp.get("params"):
        reasons.append("parameters changed")
    old, new = record.get("needs") or {}, cell.stamp.get("needs") or {}
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        reasons.append(f"upstream changed: {', '.join(changed)}")
    if reasons:
        return "stale", reasons
    return ("current" if record.get("status") == "done" else "running"), []


def stale_reasons(cell: Cell) -> list[str]:
    """Why the cell's existing results were not computed by the current code (``[]`` if they
    were, or if there are none): ``notebook changed``, ``library changed``, ``parameters
    changed``, ``upstream changed: <cell ids>`` or ``unknown code version: no record``."""
    return _check(cell)[1]


def is_done(cell: Cell) -> bool:
    """All outputs of the cell exist and validate, its executed notebook exists and its record says
    it was finished by the current code (notebook, library, parameters, upstream cells)."""
    return (_check(cell)[0] == "current" and all(output_is_valid(o) for o in cell.outputs)
            and Path(cell.notebook_out).exists())


def _complete(cell: Cell) -> bool:
    return all(output_is_valid(o) for o in cell.outputs) and Path(cell.notebook_out).exists()


#: Files whose content :func:`output_is_valid` checks (a result, a checkpoint): one that exists
#: and does not validate was corrupted on disk, since they are written atomically.
_VALIDATED_SUFFIXES = (".nc", ".pt", ".pth")
#: The mark of a temporary file of an atomic write (``.best.pt.tmp1234``, ``.x.nc.tmp1234-5678``).
_TEMPORARY = re.compile(r"\.tmp\d")


def _leftovers(cell: Cell) -> list[Path]:
    """Temporary files of the cell (``.<name>.tmp<pid>...``, written before an atomic rename) left
    by an attempt that was killed: never read, only deleted. A shared run's folder is the cell's
    own; in an experiment's folder the cell's files start with its id. Lock files are not."""
    folder = Path(cell.out_dir)
    if not folder.is_dir():
        return []
    prefix = "." if cell.shared else f".{cell.cell_id}."
    return [p for p in folder.iterdir()
            if p.name.startswith(prefix) and _TEMPORARY.search(p.name[len(prefix):]) and not p.name.endswith(".lock")
            and p.is_file()]


def _corrupt(cell: Cell) -> list[Path]:
    """The cell's results and checkpoints that exist but do not validate (:func:`output_is_valid`:
    truncated, or not matching their recorded SHA-256): its notebook must not resume from them."""
    return [p for p in _cell_files(cell) if p.suffix in _VALIDATED_SUFFIXES and not output_is_valid(p)]


def _clear(cell: Cell) -> None:
    """Delete a cell's results (a shared run: its whole folder, checkpoints included) so that its
    rerun starts from scratch instead of resuming from the state of older code or from a corrupt
    file. The record goes first: a clear that is killed midway leaves files without a record,
    which the next sweep treats as stale (and clears again), never as a run to resume."""
    for path in [record_path(cell), *_cell_files(cell), *_leftovers(cell)]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _stale_policy(stale: str | None) -> str:
    policy = (stale if stale is not None else os.environ.get(STALE_ENV) or "rerun").strip().lower()
    if policy not in STALE_POLICIES:
        where = "stale" if stale is not None else STALE_ENV
        raise SweepError(f"{where}={policy!r}: valid values are {', '.join(STALE_POLICIES)} (default rerun)")
    return policy


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


# ------------------------------------------------------------------------------------------------
# Warm kernels: one Jupyter kernel per worker, reused from cell to cell
# ------------------------------------------------------------------------------------------------

#: The environment variable that turns warm kernels off (one fresh kernel per cell, ``1``, ``true``,
#: ``yes`` or ``on``) when :func:`run_sweep` is not given ``fresh_kernels``.
FRESH_KERNEL_ENV = "DIFFEOSENS_FRESH_KERNEL"
_KERNEL_NAME = "python3"
_KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]
#: What nbclient adds when it starts a kernel itself: the kernel's history stays in memory.
_KERNEL_HISTORY = "--HistoryManager.hist_file=:memory:"
_KERNEL_TIMEOUT = 120.0  # seconds for a kernel to start and be reset (papermill gives 60 s to start alone)

#: Run silently in a warm kernel before each cell (``__CWD__``: the cell's working directory). The
#: first time, in a kernel that has run nothing yet, it records the environment; each time, it
#: brings the kernel back to the state of a fresh one, keeping the modules already imported
#: (``sys.modules``, where the start-up time goes) and the caches of their functions. What a
#: library changes when it is imported (warning filters, new environment variables) is kept too:
#: a fresh kernel that imported it would have it.
_KERNEL_RESET = r'''
import sys as __dfs_sys
if "_diffeosens_warm_kernel" not in __dfs_sys.modules:
    def __dfs_setup():
        import os, sys, types
        state = types.ModuleType("_diffeosens_warm_kernel")
        state.environ = dict(os.environ)

        def reset(cwd):
            import gc, importlib, os, random, sys, warnings
            from IPython import get_ipython
            # the user namespace, In/Out/_ and the execution count (back to 1): a new session
            get_ipython().reset(new_session=True)
            if "matplotlib.pyplot" in sys.modules:
                sys.modules["matplotlib.pyplot"].close("all")
            if "matplotlib" in sys.modules:  # the inline backend sets no rcParams of its own
                sys.modules["matplotlib"].rc_file_defaults()
            # variables the kernel started with get their values back
            os.environ.update({k: v for k, v in state.environ.items() if os.environ.get(k) != v})
            # a warning shown once per place (the default) is shown again: a new filters version
            # clears the registries of the places that warned
            warnings.onceregistry.clear()
            bump = getattr(warnings, "_filters_mutated", None)
            if bump is not None:
                bump()
            else:  # appending the default action changes no outcome, and bumps the version too
                warnings.simplefilter(warnings.defaultaction, append=True)
            importlib.invalidate_caches()
            # global random generators: seeded from entropy, as in a fresh process
            random.seed()
            if "numpy" in sys.modules:
                sys.modules["numpy"].random.seed()
            torch = sys.modules.get("torch")
            if torch is not None:
                torch.seed()
                torch.set_grad_enabled(True)
                torch.set_default_dtype(torch.float32)
                torch.use_deterministic_algorithms(False)
            # facts a cell records that may change during a sweep (a commit): read afresh
            provenance = sys.modules.get("diffeosens.provenance")
            if provenance is not None:
                provenance.git_commit.cache_clear()
            gc.collect()
            if torch is not None and torch.cuda.is_initialized():
                torch.cuda.empty_cache()
            os.chdir(cwd)

        state.reset = reset
        sys.modules[state.__name__] = state

    __dfs_setup()
__dfs_sys.modules["_diffeosens_warm_kernel"].reset(__CWD__)
'''


def _fresh_kernels(fresh_kernels: bool | None) -> bool:
    """One fresh kernel per cell? ``fresh_kernels`` if given, else ``$DIFFEOSENS_FRESH_KERNEL``."""
    if fresh_kernels is not None:
        return bool(fresh_kernels)
    value = (os.environ.get(FRESH_KERNEL_ENV) or "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SweepError(f"{FRESH_KERNEL_ENV}={value!r}: use 1 (one fresh kernel per cell) or 0 (warm kernels, the default)")


def _lending_kernel_manager(kernel_name: str) -> Any:
    """nbclient's default kernel manager, remembering the clients it makes: nbclient leaves the
    channels of its client open when it does not own the kernel; :class:`WarmKernel` closes them."""
    from jupyter_client.manager import AsyncKernelManager

    class LendingKernelManager(AsyncKernelManager):
        def client(self, **kwargs: Any) -> Any:
            kc = super().client(**kwargs)
            self.__dict__.setdefault("_lent_clients", []).append(kc)
            return kc

    return LendingKernelManager(kernel_name=kernel_name)


class WarmKernel:
    """A Jupyter kernel kept running from one cell to the next, by one sweep worker (one thread).

    :meth:`prepare` starts it if needed (or if it died) and brings it back to the state of a fresh
    kernel (see the module docstring, *Warm kernels*); papermill then executes the cell's notebook
    in it: ``km=`` reaches nbclient, which starts no kernel for a manager that has one and does not
    shut down a kernel it does not own. :meth:`release` after each cell closes nbclient's client;
    :meth:`discard` shuts the kernel down (after a failed cell, so that the next one gets a fresh
    kernel, and at the end of the sweep).
    """

    def __init__(self, kernel_name: str = _KERNEL_NAME) -> None:
        self.kernel_name = kernel_name
        self.km: Any = None
        self._kc: Any = None  # our own client, shell channel only
        self.starts = 0  # kernels started

    def _alive(self) -> bool:
        from jupyter_core.utils import run_sync

        try:
            return self.km is not None and bool(run_sync(self.km.is_alive)())
        except Exception:  # noqa: BLE001 - a manager in a bad state holds no usable kernel
            return False

    def _start(self, cwd: str) -> None:
        from jupyter_client.blocking import BlockingKernelClient
        from jupyter_core.utils import run_sync

        km = _lending_kernel_manager(self.kernel_name)
        run_sync(km.start_kernel)(extra_arguments=[*_KERNEL_ARGS, _KERNEL_HISTORY], cwd=cwd)
        self.km = km
        self.starts += 1
        self._kc = BlockingKernelClient()
        self._kc.load_connection_info(km.get_connection_info())
        self._kc.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)

    def _execute(self, code: str) -> dict[str, Any]:
        """Run ``code`` silently (no history, no execution count) and return its reply's content."""
        import queue

        msg_id = self._kc.execute(code, silent=True, store_history=False, allow_stdin=False, stop_on_error=False)
        deadline = time.monotonic() + _KERNEL_TIMEOUT
        while time.monotonic() < deadline:
            try:
                reply = self._kc.get_shell_msg(timeout=1.0)
            except queue.Empty:
                if not self._alive():
                    raise RuntimeError("the kernel died") from None
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                return reply["content"]
        raise TimeoutError(f"the kernel did not answer within {_KERNEL_TIMEOUT:.0f} s")

    def prepare(self, cwd: str | os.PathLike) -> Any:
        """The kernel manager of a kernel ready to run a new cell in ``cwd``. Raises if no kernel
        can be started and reset (the cell then fails, as when papermill cannot start one)."""
        cwd = str(cwd)
        problem = ""
        for _ in range(3):
            if not self._alive():
                self.discard()
                self._start(cwd)
            try:
                content = self._execute(_KERNEL_RESET.replace("__CWD__", repr(cwd)))
            except Exception as err:  # noqa: BLE001 - a kernel that does not answer is replaced
                problem = str(err) or type(err).__name__
                self.discard()
                continue
            if content.get("status") == "ok":
                return self.km
            if content.get("status") == "aborted":  # the tail of the queue abort after an error
                problem = "the reset request was aborted"
                continue
            problem = f"{content.get('ename')}: {content.get('evalue')}"
            self.discard()
        raise RuntimeError(f"could not prepare a warm kernel: {problem}")

    def release(self) -> None:
        """Close the channels of the clients nbclient made to run the last cell."""
        lent = self.km.__dict__.get("_lent_clients", []) if self.km is not None else []
        while lent:
            with contextlib.suppress(Exception):
                lent.pop().stop_channels()

    def discard(self, *, now: bool = True) -> None:
        """Shut the kernel down (killed if ``now``); the next :meth:`prepare` starts a fresh one."""
        from jupyter_core.utils import run_sync

        if self.km is None:
            return
        self.release()
        km, self.km = self.km, None
        if self._kc is not None:
            with contextlib.suppress(Exception):
                self._kc.stop_channels()
            self._kc = None
        with contextlib.suppress(Exception):
            if run_sync(km.is_alive)():
                run_sync(km.shutdown_kernel)(now=now)
        with contextlib.suppress(Exception):
            run_sync(km.cleanup_resources)()


class _KernelPool:
    """One :class:`WarmKernel` per thread of a local sweep; :meth:`close` shuts them all down."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._kernels: list[WarmKernel] = []
        self._lock = threading.Lock()

    def get(self) -> WarmKernel:
        kernel = getattr(self._local, "kernel", None)
        if kernel is None:
            kernel = self._local.kernel = WarmKernel()
            with self._lock:
                self._kernels.append(kernel)
        return kernel

    def close(self) -> None:
        """Shut every kernel down (gracefully, as nbclient does after a cell, and side by side)."""
        with self._lock:
            kernels = [k for k in self._kernels if k.km is not None]

        def discard(kernel: WarmKernel) -> None:
            with contextlib.suppress(Exception):
                kernel.discard(now=False)

        if len(kernels) == 1:
            discard(kernels[0])
        elif kernels:
            with ThreadPoolExecutor(max_workers=len(kernels)) as pool:
                list(pool.map(discard, kernels))


def run_cell(cell: Cell | dict[str, Any], *dep_results: Any, force: bool = False, stale: str = "rerun",
             kernel: WarmKernel | None = None) -> CellResult:
    """Execute one cell with papermill (or skip it when up to date). Never raises.

    ``dep_results`` are the :class:`CellResult` of the cells it needs (as Dask passes futures'
    values); if any failed, the cell is not run and is reported as ``blocked``. ``stale`` is what
    to do with results computed by other code (one of :data:`STALE_POLICIES`, see the module
    docstring). ``kernel``: run the notebook in this :class:`WarmKernel` (reset first; shut down
    if the cell fails) instead of a fresh kernel.
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
        state, reasons = _check(cell) if stale != "ignore" else ("ignore", [])
        why = "; ".join(reasons) if state == "stale" else ""
        keep = state in ("current", "ignore") or (state == "stale" and stale in ("warn", "accept"))
        if not force and keep and _complete(cell):
            if state == "stale" and stale == "accept":
                _write_record(cell, "done")  # adopted: computed by the current code from now on
            return CellResult(cell.cell_id, "skipped", str(nb_out), stale=why)
        # from scratch when stale, or when a result or checkpoint is corrupt (it cannot be resumed
        # from); else the notebook resumes from what an interrupted run left, less the temporary
        # files it was writing when killed (never read; a paper run's may be hundreds of MB)
        if (state == "stale" and stale == "rerun") or _corrupt(cell):
            _clear(cell)
        else:
            for path in _leftovers(cell):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        _write_record(cell, "running")  # a cell killed from now on resumes (its state is of the current code)
        t0 = time.perf_counter()
        tmp = nb_out.with_name(f".{nb_out.stem}.tmp{os.getpid()}.ipynb")
        try:
            warm = {"km": kernel.prepare(out_dir)} if kernel is not None else {}
            try:
                pm.execute_notebook(
                    cell.notebook, str(tmp), parameters=cell.params, kernel_name=_KERNEL_NAME, cwd=str(out_dir),
                    progress_bar=False, log_output=False, request_save_on_cell_execute=False,
                    extra_arguments=list(_KERNEL_ARGS), **warm,
                )
            finally:
                if kernel is not None:
                    kernel.release()
            _retitle(tmp, cell)
            os.replace(tmp, nb_out)
        except Exception as err:  # noqa: BLE001 - a failing cell must not stop the sweep
            if kernel is not None:  # whatever the cell left half-done, the next one gets a fresh kernel
                kernel.discard()
            if tmp.exists():
                os.replace(tmp, nb_out)
            msg = str(err).strip().splitlines()
            short = next((ln for ln in reversed(msg) if ln.strip()), type(err).__name__) if msg else type(err).__name__
            return CellResult(cell.cell_id, "failed", str(nb_out), time.perf_counter() - t0, short[:500], stale=why)
        missing = [o for o in cell.outputs if not output_is_valid(o)]
        if missing:
            return CellResult(cell.cell_id, "failed", str(nb_out), time.perf_counter() - t0,
                              f"the notebook finished but did not write valid {', '.join(missing)}", stale=why)
        _write_record(cell, "done")  # last: the cell counts as done only from here
        return CellResult(cell.cell_id, "ran", str(nb_out), time.perf_counter() - t0, stale=why)


class _ProgressLines:
    """One line per finished cell, for logs (``progress="lines"``): counts, the cell's time, the
    elapsed time and an ETA (mean time of the cells that ran so far, times the cells left)."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done, self.ran, self.ran_seconds = total, desc, 0, 0, 0.0
        self.t0 = time.monotonic()

    def __enter__(self) -> _ProgressLines:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    @staticmethod
    def _clock(seconds: float) -> str:
        seconds = int(round(seconds))
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def update(self, n: int = 1, result: CellResult | None = None) -> None:
        self.done += n
        if result is not None and result.status == "ran":
            self.ran += 1
            self.ran_seconds += result.seconds
        left = self.total - self.done
        eta = self._clock(left * self.ran_seconds / self.ran) if self.ran and left else ("0:00:00" if not left else "?")
        what = f"{result.cell_id} {result.status} in {result.seconds:.0f} s; " if result is not None else ""
        print(f"[{self.desc}] {self.done}/{self.total} cells: {what}elapsed {self._clock(time.monotonic() - self.t0)}, ETA {eta}",
              flush=True)


#: How a sweep reports progress: a tqdm bar, one line per cell (for logs), or nothing.
PROGRESS_MODES = ("bar", "lines", "none")


def _progress_mode(mode: bool | str) -> str:
    """The progress mode named by ``mode`` (``True`` is ``"bar"``, ``False`` is ``"none"``); checked."""
    mode = {True: "bar", False: "none"}[mode] if isinstance(mode, bool) else mode
    if mode not in PROGRESS_MODES:
        raise SweepError(f"progress must be one of {', '.join(PROGRESS_MODES)} (or a bool), got {mode!r}")
    return mode


def _progress(total: int, mode: bool | str, desc: str) -> Any:
    mode = _progress_mode(mode)
    if mode == "none":
        return contextlib.nullcontext(None)
    if mode == "lines":
        return _ProgressLines(total, desc)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="cell")


def _advance(bar: Any, result: CellResult) -> None:
    if isinstance(bar, _ProgressLines):
        bar.update(1, result)
    elif bar is not None:
        bar.update(1)


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
    progress: bool | str = True,
    stale: str | None = None,
    fresh_kernels: bool | None = None,
    select: Mapping[str, Sequence[Any]] | None = None,
) -> SweepReport:
    """Run every cell of a sweep (see the module docstring) and report what happened.

    Args:
        config: the YAML config.
        profile: ``smoke``, ``quick`` or ``paper``.
        root: results root (default :func:`~diffeosens.results.default_root`); a relative one is
            made absolute here (cells run in their own folders, Dask workers anywhere).
        jobs: cells executed in parallel locally (threads driving papermill kernels; each kernel
            gets ``OMP_NUM_THREADS = cores // jobs``).
        scheduler: address of a running Dask scheduler (``tcp://host:8786``); the workers need this
            repository's environment and a shared filesystem for ``root``.
        dask_workers: start a local Dask cluster with this many single-threaded worker processes.
        stages: run only these stages (their needs must already be done).
        force: re-run cells even when their outputs are valid.
        progress: ``"bar"`` (or ``True``) a tqdm bar; ``"lines"`` one line per finished cell with
            the count, the cell's time, the elapsed time and an ETA (what ``make book`` prints);
            ``"none"`` (or ``False``) nothing.
        stale: what to do with cells whose results were computed by other code (a changed notebook
            or library, a recomputed upstream cell, or no record): ``rerun``, ``warn``, ``accept``
            or ``ignore`` (see the module docstring); default: ``$DIFFEOSENS_STALE``, else ``rerun``.
            Each stale cell is announced on standard output before the sweep starts.
        fresh_kernels: run each cell in a fresh Jupyter kernel (as before warm kernels) instead of
            one warm kernel per local worker, reset between cells (see the module docstring,
            *Warm kernels*); default: ``$DIFFEOSENS_FRESH_KERNEL``, else ``False``. Dask workers
            always start a fresh kernel per cell.
        select: run only the cells whose grid matches, ``{axis: [values]}`` (a cell matches when,
            for every axis, its value is one of the values, compared as text or as numbers), and the cells they
            need (:func:`select_cells`), e.g. ``{"arch": ["ResNet50"], "seed": [0]}``.
    """
    policy = _stale_policy(stale)
    fresh = _fresh_kernels(fresh_kernels)
    _progress_mode(progress)  # check the mode before any work (and before a bar is drawn)
    root = Path(root if root is not None else default_root()).absolute()  # the same folder from every working directory
    cfg, cells = load_sweep(config, profile=profile, root=root)
    cells = choose_cells(cells, stages=stages, select=select)
    report = SweepReport(str(cfg["experiment"]), profile)
    if jobs < 1:
        raise SweepError(f"jobs must be >= 1, got {jobs}")
    _announce_stale(cells, policy, force)
    if scheduler or dask_workers:
        report.results = _run_dask(cells, scheduler, dask_workers, force, progress, report.experiment, policy)
    else:
        report.results = _run_local(cells, jobs, force, progress, report.experiment, policy, fresh)
    return report


def _grid_value_matches(value: Any, wanted: str) -> bool:
    """A grid value equals a selected value (text from the command line): as text, or as numbers
    when both read as numbers (``30`` selects the grid's ``30.0``)."""
    if str(value) == wanted:
        return True
    try:
        return float(str(value)) == float(wanted)
    except ValueError:
        return False


def choose_cells(cells: Sequence[Cell], *, stages: Sequence[str] | None = None,
                 select: Mapping[str, Sequence[Any]] | None = None) -> list[Cell]:
    """The cells a sweep runs: those of ``stages`` (all when empty), then those ``select`` picks
    (:func:`select_cells`) with the cells they need.

    Raises:
        SweepError: a stage the sweep does not have, or a bad selection.
    """
    chosen = list(cells)
    if stages:
        unknown = set(stages) - {c.stage for c in chosen}
        if unknown:
            raise SweepError(f"unknown stage(s) {sorted(unknown)}; stages of this sweep: {sorted({c.stage for c in chosen})}")
        chosen = [c for c in chosen if c.stage in stages]
    return select_cells(chosen, select) if select else chosen


def select_cells(cells: Sequence[Cell], select: Mapping[str, Sequence[Any]]) -> list[Cell]:
    """The cells whose grid matches ``select`` (``{axis: [values]}``; values compared as text, or as
    numbers when both read as numbers), with every cell they need, in the original (dependency) order.

    A cell matches when, for every selected axis it has, its value is one of the selected values
    (a stage without that axis, e.g. a training for ``state=``, is not filtered by it). An axis that
    no stage of the sweep has, a value that no cell has, or a selection that matches no cell, is a
    :class:`SweepError` naming the valid axes and values.
    """
    wanted = {str(k): [str(v) for v in (vals if isinstance(vals, (list, tuple, set)) else [vals])] for k, vals in select.items()}
    axes = {k for c in cells for k in c.grid}
    unknown = sorted(set(wanted) - axes)
    if unknown:
        raise SweepError(f"unknown grid axis/axes {unknown} in the selection; axes of this sweep: {', '.join(sorted(axes))}")
    values = {k: sorted({str(c.grid[k]) for c in cells if k in c.grid}) for k in wanted}
    absent = {k: [v for v in vs if not any(_grid_value_matches(g, v) for g in values[k])] for k, vs in wanted.items()}
    absent = {k: vs for k, vs in absent.items() if vs}
    if absent:
        raise SweepError(f"no cell has {absent} in this sweep; values of the selected axes: {values}")
    chosen = {c.cell_id for c in cells
              if all(k not in c.grid or any(_grid_value_matches(c.grid[k], v) for v in vs) for k, vs in wanted.items())
              and any(k in c.grid for k in wanted)}
    if not chosen:
        raise SweepError(f"no cell matches the selection {wanted}; values in this sweep: {values}")
    by_id = {c.cell_id: c for c in cells}
    todo = list(chosen)
    while todo:  # the dependency closure
        for dep in by_id[todo.pop()].deps:
            if dep in by_id and dep not in chosen:
                chosen.add(dep)
                todo.append(dep)
    return [c for c in cells if c.cell_id in chosen]


def _announce_stale(cells: list[Cell], policy: str, force: bool) -> None:
    """One line per stale cell: ``stale: <cell-id> [<stage>] (<reasons>) -> <what happens>``."""
    if policy == "ignore":
        return
    for cell in cells:
        state, reasons = _check(cell)
        if state != "stale":
            continue
        if policy == "rerun" or force:
            action = "rerun"
        elif not _complete(cell):
            action = f"run (incomplete; {STALE_ENV}={policy}: resumes from what is there)"
        elif policy == "warn":
            action = f"kept ({STALE_ENV}=warn)"
        else:
            action = f"accepted as current ({STALE_ENV}=accept)"
        print(f"stale: {cell.cell_id} [{cell.stage}] ({'; '.join(reasons)}) -> {action}", flush=True)


@contextlib.contextmanager
def side_by_side(n: int, *, threads: bool = True) -> Iterator[dict[str, str]]:
    """The environment of ``n`` cells running at once on this machine, for the kernels started
    inside the block: ``OMP_NUM_THREADS = cores // n`` (``threads``) and the memory fraction of
    ``batch_size="auto"`` divided by ``n`` (:data:`~.sensitivity.memory.MEMORY_FRACTION_ENV`), so
    that ``n`` measurements planned at once on one device fit together. Restored afterwards.
    Nothing changes for ``n = 1``."""
    new: dict[str, str] = {}
    if n > 1:
        from .sensitivity.memory import MEMORY_FRACTION_ENV, memory_fraction  # imports torch: only when needed

        if threads:
            new["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
        new[MEMORY_FRACTION_ENV] = repr(memory_fraction() / n)
    old = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    try:
        yield new
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_local(cells: list[Cell], jobs: int, force: bool, progress: bool | str, name: str, stale: str = "rerun",
               fresh_kernels: bool = False) -> list[CellResult]:
    futures: dict[str, Future[CellResult]] = {}
    kernels = None if fresh_kernels else _KernelPool()  # one warm kernel per worker thread

    def task(cell: Cell) -> CellResult:
        deps = [futures[d].result() for d in cell.deps if d in futures]
        return run_cell(cell, *deps, force=force, stale=stale, kernel=kernels.get() if kernels is not None else None)

    results: list[CellResult] = []
    try:
        with side_by_side(jobs), ThreadPoolExecutor(max_workers=jobs) as pool, _progress(len(cells), progress, name) as bar:
            for cell in cells:  # dependency order: a task only waits on earlier submissions
                futures[cell.cell_id] = pool.submit(task, cell)
            for cell in cells:
                results.append(futures[cell.cell_id].result())
                _advance(bar, results[-1])
    finally:
        if kernels is not None:
            kernels.close()
    return results


def _run_dask(cells: list[Cell], scheduler: str | None, dask_workers: int | None, force: bool, progress: bool | str, name: str,
              stale: str = "rerun") -> list[CellResult]:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        with side_by_side(dask_workers or 1, threads=False):  # the worker processes inherit the memory fraction
            cluster = LocalCluster(n_workers=dask_workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        futures = {}
        for cell in cells:
            deps = [futures[d] for d in cell.deps if d in futures]
            futures[cell.cell_id] = client.submit(run_cell, asdict(cell), *deps, force=force, stale=stale, key=f"cell-{cell.cell_id}",
                                                   pure=False)
        done: dict[str, CellResult] = {}
        with _progress(len(cells), progress, name) as bar:
            for fut in as_completed(list(futures.values())):
                try:
                    res = fut.result()
                except Exception as err:  # noqa: BLE001 - e.g. a worker died
                    key = str(fut.key)[len("cell-"):]
                    res = CellResult(key, "failed", "", error=f"dask task failed: {err}\n{traceback.format_exc(limit=1)}")
                done[res.cell_id] = res
                _advance(bar, res)
        return [done[c.cell_id] for c in cells]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
