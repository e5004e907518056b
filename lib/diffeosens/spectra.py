r"""Laplacian spectra of convolutional filters: how much of each filter is spatial pooling (methods §8.3).

The :math:`F\times F` pixel grid is a graph (4-neighbour adjacency, open boundary) with Laplacian
:math:`L = \mathrm{diag}(\text{degree}) - A`. Its eigenvectors :math:`\psi_\lambda` are the
"Fourier modes" of a filter: :math:`\lambda = 0` is the homogeneous filter (pure spatial
pooling), large :math:`\lambda` are oscillating ones. For a layer :math:`k`,

.. math::

    S_k(\lambda) = \sum_{\psi \in E_\lambda} \big\langle (w^k_{c,c'}\cdot\psi)^2 \big\rangle_{c,c'},
    \qquad \sum_\lambda S_k(\lambda) = \big\langle \|w^k_{c,c'}\|^2 \big\rangle_{c,c'},

where the mean runs over all filter slices :math:`(c, c')` and the sum over an orthonormal basis
of the eigenspace :math:`E_\lambda`. Summing **within each degenerate eigenvalue** makes
:math:`S_k` independent of the eigensolver's arbitrary basis (methods §12, O10); the reference
reports single modes, which are not. :math:`S_k` is reported raw and normalised by its total
(the mean squared slice norm), since trained and initial filters also differ in scale.

At initialisation the entries are i.i.d., so :math:`\mathbb E[(w\cdot\psi)^2] = \mathrm{Var}(w)`
for every unit :math:`\psi`: the normalised spectrum is **flat**,
:math:`S^\mathrm{norm}(\lambda) = \mathrm{mult}(\lambda)/F^2` (1/9 per mode for 3×3). Training is
expected to move energy to :math:`\lambda = 0` (claim C7, methods §11).

Eigenvalues and modes come from the Kronecker-sum structure :math:`L = P_F\otimes I + I\otimes
P_F`, with the path-graph eigenpairs :math:`2 - 2\cos(\pi m/F)` and
:math:`v_m(j) \propto \cos(\pi m (j + \tfrac12)/F)`: exact and deterministic. Pixels are indexed
row-major, ``p = i * F + j``, as ``weight.flatten(-2)`` does.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from .models.kinds import CONVOLUTIONS
from .validation import check_positive_int

__all__ = [
    "eigenvalue_groups",
    "filter_spectrum",
    "grid_laplacian",
    "laplacian_modes",
    "model_spectra",
]

#: Distinct eigenvalues are rounded to this many decimals for the ``eigenvalue`` coordinate, so
#: that e.g. ``.sel(eigenvalue=0)`` or ``.sel(eigenvalue=4)`` work and kernel sizes share labels.
EIGENVALUE_DECIMALS = 12
#: Eigenvalues closer than this are one degenerate eigenvalue.
DEGENERACY_TOL = 1e-9


def grid_laplacian(n: int) -> Tensor:
    r"""The graph Laplacian of the :math:`n\times n` pixel grid, float64 :math:`(n^2, n^2)` (methods §8.3).

    4-neighbour adjacency with open boundary: :math:`L_{pp}` = number of neighbours of pixel
    :math:`p` (2, 3 or 4), :math:`L_{pq} = -1` for neighbours, row-major pixel index ``i * n + j``.

    >>> grid_laplacian(3)[4]  # the centre pixel
    tensor([ 0., -1.,  0., -1.,  4., -1.,  0., -1.,  0.], dtype=torch.float64)
    """
    n = check_positive_int(n, "n")
    lap = torch.zeros(n * n, n * n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            p = i * n + j
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                a, b = i + di, j + dj
                if 0 <= a < n and 0 <= b < n:
                    lap[p, a * n + b] = -1.0
                    lap[p, p] += 1.0
    return lap


@lru_cache(maxsize=16)
def _modes(n: int) -> tuple[Tensor, Tensor]:
    m = torch.arange(n, dtype=torch.float64)
    path_vals = 2.0 - 2.0 * torch.cos(math.pi * m / n)
    j = torch.arange(n, dtype=torch.float64)
    path_vecs = torch.cos(math.pi * (j[:, None] + 0.5) * m[None, :] / n)  # (site j, mode m): DCT-II
    path_vecs = path_vecs / path_vecs.norm(dim=0, keepdim=True)
    pairs = [(a, b) for a in range(n) for b in range(n)]
    # ascending eigenvalue; ties (degenerate modes) in the fixed order (m_row, m_col)
    pairs.sort(key=lambda ab: (round(float(path_vals[ab[0]] + path_vals[ab[1]]), EIGENVALUE_DECIMALS), ab))
    vals = torch.stack([path_vals[a] + path_vals[b] for a, b in pairs])
    vecs = torch.stack([torch.kron(path_vecs[:, a], path_vecs[:, b]) for a, b in pairs], dim=1)
    # degenerate eigenvalues get one value (their mean), so the sequence is exactly non-decreasing
    index, multiplicity, sums = _group_index(vals)
    return (sums / multiplicity)[index], vecs


def _group_index(vals: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Groups of ascending ``vals`` closer than :data:`DEGENERACY_TOL`: (group of each value, group sizes, group sums)."""
    new_group = torch.cat([torch.zeros(1, dtype=torch.bool), (vals[1:] - vals[:-1]) > DEGENERACY_TOL])
    index = torch.cumsum(new_group.long(), 0)
    n_groups = int(index[-1]) + 1
    multiplicity = torch.bincount(index, minlength=n_groups)
    sums = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, index, vals)
    return index, multiplicity, sums


def laplacian_modes(n: int) -> tuple[Tensor, Tensor]:
    r"""Eigenvalues (ascending) and orthonormal eigenvectors of :func:`grid_laplacian` ``(n)`` (methods §8.3).

    Built from the Kronecker sum of two path graphs :math:`P_n` (eigenvalues
    :math:`2-2\cos(\pi m/n)`, DCT-II eigenvectors), so mode :math:`(m, l)` is
    :math:`v_m\otimes v_l` with eigenvalue :math:`\lambda_m + \lambda_l`; inside a degenerate
    eigenvalue the modes are ordered by :math:`(m, l)`. Deterministic, exact to rounding. The
    :math:`\lambda = 0` mode is the homogeneous filter with entries :math:`+1/n`.

    Convention:
        returns ``eigenvalues`` :math:`(n^2,)` and ``eigenvectors`` :math:`(n^2, n^2)`, float64,
        one eigenvector per **column** (as :func:`torch.linalg.eigh`), so
        ``grid_laplacian(n) == V @ diag(λ) @ V.T``.

    >>> vals, vecs = laplacian_modes(3)
    >>> [round(v, 6) for v in vals.tolist()]
    [0.0, 1.0, 1.0, 2.0, 3.0, 3.0, 4.0, 4.0, 6.0]
    >>> vecs[:, 0].reshape(3, 3)
    tensor([[0.3333, 0.3333, 0.3333],
            [0.3333, 0.3333, 0.3333],
            [0.3333, 0.3333, 0.3333]], dtype=torch.float64)
    """
    n = check_positive_int(n, "n")
    vals, vecs = _modes(n)
    return vals.clone(), vecs.clone()


def eigenvalue_groups(eigenvalues: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Group (ascending) eigenvalues into degenerate eigenvalues.

    Consecutive eigenvalues closer than :data:`DEGENERACY_TOL` form one group (for 5×5 this also
    catches accidental degeneracies such as :math:`\lambda_1+\lambda_4 = \lambda_2+\lambda_3 = 4`).

    Returns:
        ``distinct`` (group means rounded to :data:`EIGENVALUE_DECIMALS` decimals), ``index``
        (the group of each eigenvalue, long) and ``multiplicity`` (long), all 1-D.

    >>> distinct, index, mult = eigenvalue_groups(laplacian_modes(3)[0])
    >>> distinct.tolist(), mult.tolist()
    ([0.0, 1.0, 2.0, 3.0, 4.0, 6.0], [1, 2, 1, 2, 2, 1])
    """
    vals = torch.as_tensor(eigenvalues, dtype=torch.float64).flatten()
    if vals.numel() == 0:
        raise ValueError("eigenvalues must not be empty")
    if bool((vals[1:] < vals[:-1] - DEGENERACY_TOL).any()):
        raise ValueError("eigenvalues must be in ascending order (as returned by laplacian_modes)")
    index, multiplicity, sums = _group_index(vals)
    distinct = torch.round(sums / multiplicity, decimals=EIGENVALUE_DECIMALS)
    return distinct, index, multiplicity


def _check_filters(weight: Any) -> Tensor:
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor of filters (..., F, F), got {type(weight).__name__}")
    if weight.ndim < 2 or weight.shape[-1] != weight.shape[-2]:
        raise ValueError(f"weight must have shape (..., F, F) with square F×F filters, got {tuple(weight.shape)}")
    if weight.numel() == 0:
        raise ValueError(f"weight must hold at least one filter, got shape {tuple(weight.shape)}")
    return weight


def _group_spectrum(weight: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(distinct eigenvalues, group sums S, multiplicities, number of slices) of a weight (..., F, F)."""
    f = weight.shape[-1]
    vals, vecs = _modes(f)
    distinct, index, mult = eigenvalue_groups(vals)
    slices = weight.detach().to(device="cpu", dtype=torch.float64).reshape(-1, f * f)
    per_mode = (slices @ vecs).square().mean(0)  # <(w_{c,c'} . psi)^2>_{c,c'}, one per mode
    sums = torch.zeros(len(distinct), dtype=torch.float64).index_add_(0, index, per_mode)
    return distinct.numpy(), sums.numpy(), mult.numpy(), slices.shape[0]


def filter_spectrum(weight: Tensor) -> tuple[xr.DataArray, xr.DataArray]:
    r"""Laplacian spectrum :math:`S(\lambda)` of a bank of :math:`F\times F` filters, raw and normalised (methods §8.3).

    :math:`S(\lambda)` is the mean over all slices ``weight[..., :, :]`` of the squared
    projections on the modes of :func:`laplacian_modes` ``(F)``, **summed within each degenerate
    eigenvalue** (only these sums are basis-independent), and
    :math:`S^\mathrm{norm} = S / \sum_\lambda S` with :math:`\sum_\lambda S = \langle\|w_{c,c'}\|^2\rangle`
    (NaN for all-zero filters). Computed in float64 on the CPU.

    Convention:
        ``weight``: :math:`(\dots, F, F)`, e.g. a conv weight :math:`(H_k, H_{k-1}, F, F)`; every
        leading index is one slice :math:`(c, c')`. Returns two 1-D DataArrays named ``S`` and
        ``S_norm`` over ``eigenvalue`` (the distinct eigenvalues, ascending), with a
        ``multiplicity`` coordinate. A flat (i.i.d.) bank has ``S_norm == multiplicity / F**2``.

    >>> S, S_norm = filter_spectrum(torch.ones(8, 4, 3, 3))  # homogeneous filters
    >>> S_norm.values.round(6).tolist()
    [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    >>> round(float(S.sel(eigenvalue=0)), 9), S.sizes["eigenvalue"]
    (9.0, 6)
    """
    weight = _check_filters(weight)
    distinct, sums, mult, n_slices = _group_spectrum(weight)
    total = float(sums.sum())
    normed = sums / total if total > 0 else np.full_like(sums, np.nan)
    f = weight.shape[-1]
    coords = {"eigenvalue": ("eigenvalue", distinct, {"long_name": "grid-Laplacian eigenvalue", "units": "1"}),
              "multiplicity": ("eigenvalue", mult.astype(np.int64))}  # fmt: skip
    attrs = {"kernel_size": int(f), "n_slices": int(n_slices)}
    S = xr.DataArray(
        sums, dims="eigenvalue", coords=coords, name="S",
        attrs={"long_name": "mean squared projection of the filters on the eigenspace", "units": "weight^2", **attrs},
    )  # fmt: skip
    S_norm = xr.DataArray(
        normed, dims="eigenvalue", coords=coords, name="S_norm",
        attrs={"long_name": "fraction of filter energy in the eigenspace", "units": "1", **attrs},
    )  # fmt: skip
    return S, S_norm


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels


def model_spectra(model: nn.Module, *, min_size: int = 3) -> xr.Dataset:
    r"""Laplacian spectra of every :math:`F\times F` conv layer of ``model`` with :math:`F \ge` ``min_size`` (methods §8.3, O10).

    Every ``nn.Conv2d`` (also those inside ``NTKConv2d``, whose raw weights are used) with a
    square kernel of size :math:`F \ge` ``min_size`` is one entry of the ``layer`` dimension, in
    module order. Depthwise convs (``groups == in_channels > 1``, EfficientNet) are included,
    flagged by the ``depthwise`` coordinate so that they can be listed separately
    (``ds.where(ds.depthwise == 0, drop=True)``); convs skipped for being smaller (the 1×1 convs),
    non-square or not 2-D are listed with the reason in ``attrs["skipped_layers"]``.

    Layout: kernel sizes have different eigenvalue sets (3×3: 0, 1, 2, 3, 4, 6; 5×5: 14
    distinct values), so ``eigenvalue`` is the **union** of the distinct eigenvalues of the kernel
    sizes present (rounded to 12 decimals, so shared values such as 0, 3 and 4 coincide) and a
    layer's entries at eigenvalues its kernel size lacks are NaN (``multiplicity`` 0 there).
    ``ds.where(ds.kernel_size == 3, drop=True).dropna("eigenvalue", how="all", subset=["S"])``
    recovers one kernel size (``ds.groupby("kernel_size")`` iterates over them).

    ========================= ======================================================================
    dimensions                 ``layer`` (integer ``0..L-1``), ``eigenvalue`` (float)
    coords along ``layer``     ``layer_name`` (module name, e.g. ``features.0``), ``kernel_size``,
                               ``depthwise`` (0/1), ``in_channels``, ``out_channels``, ``groups``,
                               ``n_slices``, ``relative_depth`` (``layer/(L-1)``)
    variables                  ``S``, ``S_norm`` (layer, eigenvalue); ``multiplicity`` (layer,
                               eigenvalue, int); ``energy`` = :math:`\sum_\lambda S` and
                               ``homogeneous_fraction`` = ``S_norm`` at :math:`\lambda=0` (layer)
    attrs                      ``schema``, ``model``, ``min_size``, ``skipped_layers`` (JSON
                               ``{name: reason}``), ``depthwise_layers`` (JSON list), ``description``
    ========================= ======================================================================

    At initialisation ``homogeneous_fraction`` :math:`\approx 1/F^2` (flat spectrum); claim C7
    (methods §11) expects it above that after training, most in the early layers.

    Raises:
        ValueError: no conv layer qualifies (the message lists what was skipped).

    >>> from diffeosens import models
    >>> ds = model_spectra(models.build("LeNet"))
    >>> ds["S"].dims, ds["layer_name"].values.tolist(), ds.sizes["eigenvalue"]
    (('layer', 'eigenvalue'), ['features.0', 'features.3'], 14)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    min_size = check_positive_int(min_size, "min_size")
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, CONVOLUTIONS):
            continue
        k = tuple(mod.kernel_size)
        if not isinstance(mod, nn.Conv2d):
            skipped[name] = f"{type(mod).__name__} is not a 2-D convolution"
        elif k[0] != k[1]:
            skipped[name] = f"non-square kernel {k[0]}x{k[1]}"
        elif k[0] < min_size:
            skipped[name] = f"kernel {k[0]}x{k[1]} smaller than min_size={min_size}"
        else:
            distinct, sums, mult, n_slices = _group_spectrum(mod.weight)
            rows.append(dict(name=name, conv=mod, distinct=distinct, sums=sums, mult=mult, n_slices=n_slices))
    if not rows:
        raise ValueError(
            f"model has no square 2-D conv layer with kernel size >= min_size={min_size}; "
            f"skipped: {json.dumps(skipped) if skipped else 'no conv layers at all'}"
        )
    eig = np.unique(np.concatenate([r["distinct"] for r in rows]))
    L, E = len(rows), len(eig)
    S = np.full((L, E), np.nan)
    mult = np.zeros((L, E), dtype=np.int64)
    for i, r in enumerate(rows):
        pos = np.searchsorted(eig, r["distinct"])
        S[i, pos] = r["sums"]
        mult[i, pos] = r["mult"]
    energy = np.nansum(S, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        S_norm = S / energy[:, None]
    convs = [r["conv"] for r in rows]
    coords = {
        "layer": ("layer", np.arange(L)),
        "eigenvalue": ("eigenvalue", eig, {"long_name": "grid-Laplacian eigenvalue", "units": "1"}),
        "layer_name": ("layer", np.array([r["name"] for r in rows], dtype=object).astype(str)),
        "kernel_size": ("layer", np.array([c.kernel_size[0] for c in convs], dtype=np.int64)),
        "depthwise": ("layer", np.array([int(_is_depthwise(c)) for c in convs], dtype=np.int64)),
        "in_channels": ("layer", np.array([c.in_channels for c in convs], dtype=np.int64)),
        "out_channels": ("layer", np.array([c.out_channels for c in convs], dtype=np.int64)),
        "groups": ("layer", np.array([c.groups for c in convs], dtype=np.int64)),
        "n_slices": ("layer", np.array([r["n_slices"] for r in rows], dtype=np.int64)),
        "relative_depth": ("layer", np.arange(L) / (L - 1) if L > 1 else np.ones(1)),
    }
    zero = int(np.argmin(np.abs(eig)))
    data_vars = {
        "S": (("layer", "eigenvalue"), S,
              {"long_name": "mean squared projection of the filters on the eigenspace", "units": "weight^2"}),
        "S_norm": (("layer", "eigenvalue"), S_norm,
                   {"long_name": "fraction of filter energy in the eigenspace", "units": "1"}),
        "multiplicity": (("layer", "eigenvalue"), mult,
                         {"long_name": "degeneracy of the eigenvalue for the layer's kernel size", "units": "1"}),
        "energy": ("layer", energy, {"long_name": "mean squared norm of the filter slices", "units": "weight^2"}),
        "homogeneous_fraction": ("layer", S_norm[:, zero],
                                 {"long_name": "fraction of filter energy on the homogeneous mode", "units": "1"}),
    }  # fmt: skip
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs = {
        "schema": "diffeosens.spectra/1",
        "model": type(model).__name__,
        "min_size": int(min_size),
        "skipped_layers": json.dumps(skipped, sort_keys=True),
        "depthwise_layers": json.dumps([r["name"] for r, c in zip(rows, convs) if _is_depthwise(c)]),
        "description": "grid-Laplacian spectra of conv filters, summed within degenerate eigenvalues (methods 8.3)",
    }
    return ds
