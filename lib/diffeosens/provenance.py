"""Provenance metadata attached to every result file: versions, device, git commit, time."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = ["git_commit", "provenance", "to_attr"]

_PACKAGES = ("diffeosens", "torch", "torchvision", "numpy", "xarray", "netCDF4")


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the repository holding this package, with ``-dirty`` if it has local changes.

    ``"unknown"`` when the package is not inside a git checkout (e.g. an installed wheel).
    """
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def provenance(device: torch.device | str | None = None, wall_time_s: float | None = None) -> dict[str, Any]:
    """A dict of provenance facts: package versions, Python, device, git commit, creation time."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    info: dict[str, Any] = {f"{p}_version": _version(p) for p in _PACKAGES}
    info.update(
        python=platform.python_version(),
        platform=platform.platform(),
        device=str(dev),
        device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        torch_threads=torch.get_num_threads(),
        git_commit=git_commit(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    if wall_time_s is not None:
        info["wall_time_s"] = round(float(wall_time_s), 3)
    return info


def to_attr(value: Any) -> Any:
    """Make a value storable as a netCDF attribute: dicts/None/bools become JSON strings or ints."""
    if isinstance(value, bool):
        return int(value)
    if value is None:
        return "none"
    if isinstance(value, (dict, list, tuple)) and not (
        isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return json.dumps(value, default=str, sort_keys=True)
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, (torch.device, Path)):
        return str(value)
    return value
