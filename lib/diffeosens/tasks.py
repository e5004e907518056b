r"""Sensitivities on the scale-detection tasks (methods §6.3–6.4, §9 Figs. 7–9).

The label of these tasks depends only on a scale :math:`\xi`, so small moves of the active
pixels never change it; the "diffeomorphism" is such a move, and the noise is matched to it.

* **2D two-points** (:func:`measure_twopoints`): each active pixel moves one lattice step in a
  random direction (:func:`~diffeosens.data.local_translations`); the noise is matched per image
  (§3.1); representations are flattened over channels and positions (the CIFAR protocol).
* **1D task T2** (:func:`measure_scale1d`), two protocols:

  - ``"1d"``, the paper's (§3.3, §4.10): each active site moves by ±1 without changing its block
    (:func:`~diffeosens.data.move_sites`); the noise has one variance for the whole probe batch,
    :math:`\sigma^2 = \sum_n \|\tau x_n - x_n\|^2/(PN)`, and is *rectified*,
    :math:`\tilde x = x + \mathrm{ReLU}(\eta)`; representations are averaged over channels;
  - ``"cifar"``: the same moves, per-image matched noise without rectification, and
    representations flattened over channels and positions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import xarray as xr
from torch import nn

from .validation import check_choice
from .noise import matched_noise
from .runs import TrainedRun
from .sensitivity import measure_perturbed

__all__ = ["PROTOCOLS", "measure_scale1d", "measure_twopoints", "scale1d_probes", "twopoints_probes"]

PROTOCOLS = ("1d", "cifar")


def _task(run: TrainedRun) -> dict[str, Any]:
    task = run.attrs.get("task", "{}")
    return json.loads(task) if isinstance(task, str) and task.startswith("{") else {}


def twopoints_probes(run: TrainedRun, n: int, *, seed: int = 0, testsize: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` probe images of the two-points task and their moved versions.

    As the reference's measurement loader: the task rebuilt with the run's parameters and
    ``testsize = 5000`` (2,500 per class), of which a seeded random subset of ``n`` is used; these
    can include items of the training pool (a quirk kept for parity, methods §6.3).
    """
    from .data import local_translations, twopoints_dataset

    task = {k: v for k, v in _task(run).items() if k in ("d", "xi", "gap", "norm", "labelling", "periodic", "include_diagonal")}
    ptr = int(run.attrs.get("n_train", 1024))
    test = twopoints_dataset(ptr=ptr, testsize=max(testsize, n + n % 2), seed=int(run.attrs["seed"]), **task).test
    idx = torch.randperm(test.images.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    x = test.images[idx]
    moved = local_translations(x, generator=torch.Generator().manual_seed(seed + 1))
    return x, moved


def scale1d_probes(run: TrainedRun, n: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` balanced probe signals of the 1D task (drawn from all pairs, as the reference) and their moves."""
    from .data import move_sites, pairs_1d, render_1d, scale1d_labels

    task = _task(run)
    N, xi = int(task.get("N", 128)), int(task.get("xi", 32))
    pos = pairs_1d(N)
    lab = scale1d_labels(pos, task=int(task.get("task", 2)), N=N, xi=xi, gap=int(task.get("gap", 0)))
    g = torch.Generator().manual_seed(seed)
    half = n // 2
    chosen = []
    for sign in (1, -1):
        cls = (lab == sign).nonzero().flatten()
        chosen.append(cls[torch.randperm(cls.numel(), generator=g)[: (half if sign == 1 else n - half)]])
    x = render_1d(pos[torch.cat(chosen)], N=N, magn=task.get("magn"))
    moved = move_sites(x, xi=xi, generator=torch.Generator().manual_seed(seed + 1))
    return x, moved


def _finish(ds: xr.Dataset, run: TrainedRun, state: str, extra: dict[str, Any]) -> xr.Dataset:
    ds.attrs.update({
        "arch": run.arch, "dataset": run.dataset, "activation": run.activation, "state": state,
        "test_error": run.test_error if state != "init" else float("nan"), "best_test_acc": float(run.attrs["best_test_acc"]),
        "train_dir": str(run.path), **run.stopping, **extra,
    })
    return ds


def measure_twopoints(
    run: TrainedRun | str | os.PathLike, *, state: str = "trained", n_probe: int = 500, probe_seed: int = 0,
    model: nn.Module | None = None, **kwargs: Any,
) -> xr.Dataset:
    """Layer-wise D, G, R of a two-points network: pixel moves vs per-image matched noise."""
    run = run if isinstance(run, TrainedRun) else TrainedRun(Path(run))
    net = model if model is not None else run.model(state)
    x, moved = twopoints_probes(run, n_probe, seed=probe_seed)
    noisy = x + matched_noise(x, moved, generator=torch.Generator().manual_seed(probe_seed + 2))
    kwargs.setdefault("init_bn", "batch" if state == "init" else "running")
    kwargs.setdefault("batch_size", "auto")  # fits the device's memory at any P (the numbers do not depend on it)
    ds = measure_perturbed(net, x, {"D": moved, "G": noisy}, **kwargs)
    return _finish(ds, run, state, {"protocol": "twopoints", "perturbation": "one-pixel moves of each active pixel", "probe_seed": probe_seed})


def measure_scale1d(
    run: TrainedRun | str | os.PathLike, *, state: str = "trained", protocol: str = "1d", n_probe: int = 812,
    probe_seed: int = 0, model: nn.Module | None = None, **kwargs: Any,
) -> xr.Dataset:
    """Layer-wise D, G, R of a 1D network on task T2, with the 1D or the CIFAR protocol (module docstring)."""
    check_choice(protocol, PROTOCOLS, "protocol")
    run = run if isinstance(run, TrainedRun) else TrainedRun(Path(run))
    net = model if model is not None else run.model(state)
    x, moved = scale1d_probes(run, n_probe, seed=probe_seed)
    g = torch.Generator().manual_seed(probe_seed + 2)
    if protocol == "1d":
        noise = matched_noise(x, moved, generator=g, match="batch", rectify=True, sample_dims=2)
    else:
        noise = matched_noise(x, moved, generator=g, sample_dims=2)
    kwargs.setdefault("init_bn", "batch" if state == "init" else "running")
    kwargs.setdefault("batch_size", "auto")  # fits the device's memory at any P (the numbers do not depend on it)
    ds = measure_perturbed(net, x, {"D": moved, "G": x + noise}, channel_mean=protocol == "1d", **kwargs)
    return _finish(ds, run, state, {"protocol": protocol, "perturbation": "±1 moves within the block", "probe_seed": probe_seed})
