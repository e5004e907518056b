"""Trained runs on disk: rebuild a network from its training directory and measure it.

A training directory (written by :func:`diffeosens.train.train_network`) holds ``init.pt``
(the initial weights), ``best.pt`` (best test accuracy, the paper's checkpoint), ``last.pt`` and
``history.nc``, whose attributes record how the network was built. :class:`TrainedRun` reads
them back; :func:`measure_run` measures a run at initialisation or trained, on the paper's probe
set for its dataset.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

from .diffeo import PAPER_DELTA
from .validation import check_choice
from .results import open_run

__all__ = ["STATES", "TrainedRun", "measure_run"]

_STATE_FILES = {"init": "init.pt", "trained": "best.pt", "last": "last.pt"}
#: ``init``: the run's own initial weights (BatchNorm with batch statistics, methods §4.8);
#: ``trained``: the checkpoint the recipe selects (``Recipe.select``): the best-test-accuracy one
#: (``best.pt``, the CIFAR and 2D recipes, methods §4.6) or the final weights (``last.pt``, the 1D
#: recipe, measured "at the final epoch", methods §7.4); ``last``: the final weights.
STATES = tuple(_STATE_FILES)


def _json_attr(value: Any, default: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return default if value in (None, "none", "default") else value


@dataclass
class TrainedRun:
    """A training directory (``history.nc`` + checkpoints)."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not (self.path / "history.nc").exists():
            raise FileNotFoundError(f"{self.path} is not a training run (no history.nc); run the train notebook first")

    @cached_property
    def history(self) -> xr.Dataset:
        return open_run(self.path / "history.nc")

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.history.attrs)

    @property
    def arch(self) -> str:
        return str(self.attrs["arch"])

    @property
    def dataset(self) -> str:
        return str(self.attrs["dataset"])

    @property
    def activation(self) -> str:
        return str(self.attrs.get("activation", "default"))

    @property
    def train_noise(self) -> float:
        return float(self.attrs.get("train_noise", 0.0))

    @property
    def test_error(self) -> float:
        """1 - the test accuracy of the ``trained`` checkpoint: the best one, or the last evaluated
        one when the recipe selects the final weights (the 1D recipe)."""
        if self.recipe.get("select") == "last":
            acc = self.history.test_acc.values
            acc = acc[np.isfinite(acc)]
            if acc.size:
                return 1.0 - float(acc[-1])
        return 1.0 - float(self.attrs["best_test_acc"])

    @cached_property
    def recipe(self) -> dict[str, Any]:
        """The training recipe's fields, as recorded in the history (empty if not recorded)."""
        recipe = _json_attr(self.attrs.get("recipe"), {})
        return recipe if isinstance(recipe, dict) else {}

    @property
    def stopping(self) -> dict[str, float]:
        """When training stopped: ``stopped_epoch``, ``interpolation_epoch`` (-1: never reached zero
        training loss) and the recipe's ``interpolation_factor`` (the stopping rule of methods §7.4)."""
        return {"stopped_epoch": int(self.attrs.get("stopped_epoch", -1)), "interpolation_epoch": int(self.attrs.get("interpolation_epoch", -1)),
                "interpolation_factor": float(self.recipe.get("interpolation_factor", float("nan")))}

    def build(self) -> nn.Module:
        """A freshly initialised network of the same architecture and options."""
        from .train import build_model

        options = dict(_json_attr(self.attrs.get("model_options"), {}))
        return build_model(self.arch, seed=int(self.attrs["seed"]), dataset=self.dataset, recipe=str(self.attrs["recipe_name"]),
                           width_factor=float(self.attrs.get("width_factor", 1.0)), **options)

    def model(self, state: str = "trained") -> nn.Module:
        """The network at ``state`` (see :data:`STATES`), in eval mode."""
        from .train import load_checkpoint

        check_choice(state, STATES, "state")
        return load_checkpoint(self.build(), self.checkpoint(state)).eval()

    def checkpoint(self, state: str = "trained") -> Path:
        """The file of ``state``; ``trained`` follows the recipe's ``select`` (see :data:`STATES`)."""
        check_choice(state, STATES, "state")
        if state == "trained" and self.recipe.get("select") == "last":
            return self.path / _STATE_FILES["last"]
        return self.path / _STATE_FILES[state]

    def probes(self, n: int, *, seed: int = 0, root: str | os.PathLike | None = None) -> torch.Tensor:
        """The probe set: ``n`` normalised test images of the run's dataset (a fixed, seeded subset).

        For a network trained on noisy images, the probes carry noise of the same norm (one
        fixed draw, seeded), as in the reference's ``--corrupt_test 1`` (methods §6.2, O23).
        """
        from .data import noisy_test_set, probe_images

        if self.dataset not in ("cifar10", "mnist", "fashionmnist"):
            raise ValueError(f"probe images of {self.dataset!r} are task-specific; see diffeosens.tasks")
        x, _, _ = probe_images(self.dataset, n, seed=seed, root=root)
        if self.train_noise > 0:
            x = noisy_test_set(x, self.train_noise, seed=seed)
        return x


def measure_run(
    run: TrainedRun | str | os.PathLike,
    *,
    state: str = "trained",
    n_probe: int = 500,
    probe_seed: int = 0,
    deltas: Sequence[float] | float = PAPER_DELTA,
    root: str | os.PathLike | None = None,
    model: nn.Module | None = None,
    **measure_kwargs: Any,
) -> xr.Dataset:
    """Measure a run's network at ``state`` on its probe set, at one or several ``deltas``.

    At initialisation BatchNorm uses batch statistics (``init_bn="batch"``, methods §4.8), unless
    ``init_bn`` is given; the batch size is chosen to fit the device's memory (``batch_size="auto"``,
    :mod:`diffeosens.sensitivity.memory`) unless given. The result has a ``delta`` dimension (one entry for a single value);
    all values share the clean forward pass and the draws. The run's architecture, dataset,
    activation, training noise and test error are added as attributes. ``model`` replaces the
    checkpoint's network (e.g. a channel-shuffled copy).
    """
    from .sensitivity import measure

    run = run if isinstance(run, TrainedRun) else TrainedRun(Path(run))
    net = model if model is not None else run.model(state)
    x = run.probes(n_probe, seed=probe_seed, root=root)
    measure_kwargs.setdefault("init_bn", "batch" if state == "init" else "running")
    measure_kwargs.setdefault("batch_size", "auto")  # fits the device's memory at any P (the numbers do not depend on it)
    ds = measure(net, x, delta=deltas, **measure_kwargs)
    ds.attrs.update({
        "arch": run.arch, "dataset": run.dataset, "activation": run.activation, "train_noise": run.train_noise,
        "state": state, "test_error": run.test_error if state != "init" else float("nan"),
        "best_test_acc": float(run.attrs["best_test_acc"]), "train_dir": str(run.path), "probe_seed": probe_seed,
    })  # model_params: already set by measure
    return ds
