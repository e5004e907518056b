"""Measure your own network: load it from a spec string and a checkpoint, then :func:`measure` it.

Model specs:

* ``zoo:<name>``: a model of :mod:`diffeosens.models` (e.g. ``zoo:VGG11bn``);
* ``torchvision:<name>``: ``torchvision.models.get_model(name, weights=None, num_classes=...)``
  (no pretrained weights are downloaded; give your own with ``checkpoint``);
* ``<module>:<factory>`` or ``<path/to/file.py>:<factory>``: any callable returning an
  ``nn.Module``, called without arguments.

Checkpoints are read with ``torch.load(path, weights_only=True)``: a state dict, or a dict with
a ``"model"``/``"state_dict"`` entry holding one; a ``module.`` prefix (``DataParallel``) is
stripped.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import torch
import xarray as xr
from torch import nn

from .validation import check_seed

__all__ = ["load_model", "load_state", "measure_model"]


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint file, read with ``weights_only=True``.

    A checkpoint written by diffeosens (a training run's ``init.pt``/``best.pt``/``last.pt``) has its
    content hash beside it and is verified against it (:func:`diffeosens.train.verify_checkpoint`):
    a file changed on disk is an error naming it. Other files (your own ``torch.save``) carry no
    such record and are read as they are.
    """
    from .train import digest_path, verify_checkpoint

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if digest_path(path).is_file():
        verify_checkpoint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise ValueError(
            f"{path} could not be read with torch.load(weights_only=True) (only tensors and plain containers are "
            f"allowed; save a state dict with torch.save(model.state_dict(), path)): {err}"
        ) from err
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def load_model(
    spec: str, *, checkpoint: str | os.PathLike | None = None, num_classes: int = 10, in_channels: int = 3, seed: int = 0,
) -> nn.Module:
    """Build the model named by ``spec`` (see the module docstring) and load ``checkpoint``.

    The initial weights are drawn with torch's global RNG seeded by ``seed`` inside a forked RNG
    scope, so the same spec and seed give the same network (and the caller's stream is untouched).
    """
    seed = check_seed(seed)
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"model spec {spec!r} must be zoo:<name>, torchvision:<name> or <module>:<factory>")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(spec, num_classes, in_channels)
    if checkpoint is not None:
        state = load_state(checkpoint)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"checkpoint {checkpoint} does not fit {spec}: {err}") from err
    return model.eval()


def _build(spec: str, num_classes: int, in_channels: int) -> nn.Module:
    kind, _, name = spec.rpartition(":") if spec.endswith(".py") else spec.partition(":")
    if kind == "zoo":
        from . import models

        model = models.build(name, num_classes=num_classes, in_channels=in_channels)
    elif kind == "torchvision":
        import torchvision

        try:
            model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        except ValueError as err:
            raise ValueError(f"unknown torchvision model {name!r}; see torchvision.models.list_models(): {err}") from err
    else:
        module_path, factory = spec.rsplit(":", 1)
        if module_path.endswith(".py"):
            file = Path(module_path)
            if not file.exists():
                raise ValueError(f"no Python file at {file}")
            mod_spec = importlib.util.spec_from_file_location(file.stem, file)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[file.stem] = module
            mod_spec.loader.exec_module(module)
        else:
            try:
                module = importlib.import_module(module_path)
            except ImportError as err:
                raise ValueError(f"cannot import module {module_path!r} of model spec {spec!r}: {err}") from err
        fn = getattr(module, factory, None)
        if not callable(fn):
            raise ValueError(f"{module_path} has no callable {factory!r}")
        model = fn()
        if not isinstance(model, nn.Module):
            raise ValueError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def measure_model(
    spec: str,
    *,
    checkpoint: str | os.PathLike | None = None,
    data: str = "cifar10",
    root: str | os.PathLike | None = None,
    n_probe: int = 500,
    probe_seed: int = 0,
    model_seed: int = 0,
    **measure_kwargs: Any,
) -> xr.Dataset:
    """Load a model (initial weights seeded by ``model_seed``) and measure its layer-wise profile
    on ``n_probe`` test images of ``data``."""
    from .data import probe_images
    from .sensitivity import measure

    probe_seed, model_seed = check_seed(probe_seed, "probe_seed"), check_seed(model_seed, "model_seed")
    x, _, _ = probe_images(data, n_probe, seed=probe_seed, root=root)
    model = load_model(spec, checkpoint=checkpoint, in_channels=x.shape[1], seed=model_seed)
    ds = measure(model, x, **measure_kwargs)
    ds.attrs.update({"model_spec": spec, "checkpoint": str(checkpoint) if checkpoint else "none", "dataset": data,
                     "probe_seed": probe_seed, "model_seed": model_seed})
    return ds
