r"""The results schema of :func:`~diffeosens.sensitivity.measure` and its :class:`xarray.Dataset`.

========================= ======================================================================
dimensions                ``(delta, layer)`` for :func:`~diffeosens.sensitivity.measure` (schema
                          ``diffeosens.sensitivity/2``); ``(layer,)`` for
                          :func:`~diffeosens.sensitivity.measure_perturbed` (``diffeosens.perturbed/1``)
dimension ``delta``       typical displacements in pixels (float coordinate), with the temperature
                          ``T`` as a second coordinate along it
dimension ``layer``       probe points in forward order (integer coordinate ``0..L-1``)
coords along ``layer``    ``layer_name`` (graph-node name), ``layer_kind`` (conv, norm, act, pool,
                          linear, add, mul, output, other), ``depth`` (number of conv/linear layers
                          up to and including the node), ``relative_depth`` (``layer/(L-1)``)
variables                 ``D``, ``G``, ``R``, ``num_D``, ``num_G`` over ``(delta, layer)`` and ``deno``
                          over ``layer`` (clean images only), each with ``*_se``
attrs                     ``delta``, ``cut``, ``T``, ``interp``, ``P``, ``n_draws``, ``estimator``,
                          ``seed``, ``batch_size``, ``init_bn``, ``compute_dtype``, ``model``,
                          ``model_params``, ``params`` (JSON of every argument), ``provenance``
                          (JSON: versions, device, git commit, wall time, creation time)
========================= ======================================================================
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from ..provenance import provenance, to_attr
from ..validation import warn_caller
from .estimators import DENO_EPS
from .layers import Layer

__all__ = ["COORDS", "SCHEMA", "DegenerateWarning", "result_attrs", "to_dataset"]

#: The results schema: variable -> (long name, units). Used to write and to validate datasets.
SCHEMA: dict[str, tuple[str, str]] = {
    "D": ("diffeomorphism sensitivity D_k = num_D / deno", "1"),
    "G": ("noise sensitivity G_k = num_G / deno", "1"),
    "R": ("relative sensitivity R_k = D_k / G_k", "1"),
    "num_D": ("mean squared representation change under diffeomorphisms", "activation^2"),
    "num_G": ("mean squared representation change under matched noise", "activation^2"),
    "deno": ("mean squared distance between clean representations (all ordered pairs)", "activation^2"),
}
COORDS = ("layer_name", "layer_kind", "depth", "relative_depth")


class DegenerateWarning(UserWarning):
    """The probe set gives an undefined or meaningless sensitivity at some layer (e.g. constant images)."""


def _warn_degenerate(layers: list[Layer], values: dict[str, np.ndarray]) -> None:
    """Warn when a layer's denominator vanishes (the probes do not vary there: D and G are
    num/1e-10, inflated without meaning) or a ratio is undefined (NaN/inf)."""
    deno = np.asarray(values["deno"], float).reshape(-1, len(layers)).min(0)  # [layer] or [delta, layer]: the same per delta
    flat = [l.name for l, d in zip(layers, deno) if not d > DENO_EPS]
    if flat:
        warn_caller(
            f"the probe images do not vary at {len(flat)} layer(s) ({', '.join(flat[:5])}{', …' if len(flat) > 5 else ''}): "
            f"deno <= {DENO_EPS:g}, so D and G there are divided by the guard {DENO_EPS:g} and mean nothing "
            "(constant or identical probe images?)", DegenerateWarning)
    bad = sorted({k for k in ("D", "G", "R") if k in values and not np.isfinite(np.asarray(values[k], float)).all()})
    if bad:
        warn_caller(f"{', '.join(bad)} undefined (NaN/inf) at some layer: a perturbation changed nothing there "
                    "(num = 0) or the representation is not finite", DegenerateWarning)


def to_dataset(
    layers: list[Layer],
    values: dict[str, np.ndarray],
    attrs: dict[str, Any],
    deltas: tuple[Sequence[float], Sequence[float]] | None = None,
) -> xr.Dataset:
    """The results dataset of ``values`` (of :meth:`~.estimators.Accumulator.finish`) along ``layers``.

    With ``deltas = (delta values, temperatures)`` every value is ``[delta, layer]`` and the
    dataset has the dimensions ``(delta, layer)``, ``deno`` (clean images only) ``(layer,)`` (schema ``diffeosens.sensitivity/2``, the
    output of :func:`~diffeosens.sensitivity.measure`); without, ``(layer,)`` (schema
    ``diffeosens.perturbed/1``, the output of :func:`~diffeosens.sensitivity.measure_perturbed`).

    Warns (:class:`DegenerateWarning`) when a value is meaningless.
    """
    _warn_degenerate(layers, values)
    L = len(layers)
    coords: dict[str, Any] = {
        "layer": ("layer", np.arange(L)),
        "layer_name": ("layer", np.array([l.name for l in layers], dtype=object).astype(str)),
        "layer_kind": ("layer", np.array([l.kind for l in layers], dtype=object).astype(str)),
        "depth": ("layer", np.array([l.depth for l in layers], dtype=np.int64)),
        "relative_depth": ("layer", np.arange(L) / max(L - 1, 1) if L > 1 else np.ones(1)),
    }
    dims: tuple[str, ...] = ("layer",)
    if deltas is not None:
        dims = ("delta", "layer")
        coords["delta"] = ("delta", np.asarray(deltas[0], dtype=np.float64),
                           {"long_name": "typical displacement delta", "units": "pixels"})
        coords["T"] = ("delta", np.asarray(deltas[1], dtype=np.float64), {"long_name": "temperature T", "units": "1"})
    data_vars = {}
    for k, v in values.items():
        base = k[:-3] if k.endswith("_se") else k
        long_name, units = SCHEMA.get(base, (f"sensitivity to perturbation {base!r}", "1"))
        if base.startswith("num_") and base not in SCHEMA:
            long_name, units = (f"mean squared representation change under {base[4:]!r}", "activation^2")
        if k.endswith("_se"):
            long_name = "standard error of " + base
        if base == "deno" and deltas is not None:  # clean representations only: the same at every delta
            data_vars[k] = (("layer",), np.asarray(v)[0], {"long_name": long_name, "units": units})
            continue
        data_vars[k] = (dims, v, {"long_name": long_name, "units": units})
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs["schema"] = "diffeosens.sensitivity/2" if deltas is not None else "diffeosens.perturbed/1"
    ds.attrs.update({k: to_attr(v) for k, v in attrs.items()})
    return ds


def _model_description(model: nn.Module) -> dict[str, Any]:
    text = repr(model)
    return {
        "model": type(model).__name__,
        "model_params": int(sum(p.numel() for p in model.parameters())),
        "model_repr_sha1": hashlib.sha1(text.encode()).hexdigest()[:12],
    }


def result_attrs(params: dict[str, Any], model: nn.Module, estimator: str, dev: torch.device, t0: float) -> dict[str, Any]:
    """Attributes of a results dataset: every parameter (flat and as JSON), the model, provenance."""
    attrs = dict(params)
    attrs.update(_model_description(model))
    attrs["uncertainty"] = "delete-a-group jackknife over images" if estimator == "mean" else "bootstrap over images"
    attrs["deno_eps"] = DENO_EPS
    attrs["params"] = params
    attrs["provenance"] = provenance(dev, time.perf_counter() - t0)
    return attrs
