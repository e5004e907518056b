r"""The statistics of the package, one function each: exponent fits, rank correlation, seed means.

* :func:`fit_exponent`: the least-squares exponent of a depth law, with its standard error
  (claims C2, C3, C4, C8, C9, C10 and the theory page);
* :func:`spearman`: Spearman's rank correlation (claim C2);
* :func:`seed_mean`: **the** aggregation over seeds (or over any other repeat dimension, e.g.
  channel shuffles), used by the claims, the figures and every book page; :func:`geomean` is its
  geometric part.

Seeds (open choice O9, methods §4.11 and §12): the NeurIPS-2021 paper averaged the sensitivity
ratios over seeds by a **geometric mean** ("logmean", methods §4.5); the aggregation behind the
2210.01506 figures is not public. :func:`seed_mean` follows the 2021 paper for the positive,
ratio-scale sensitivity quantities (:data:`GEOMETRIC_VARIABLES`) and takes the arithmetic mean of
everything else (test errors, accuracies, spectra, fractions, epochs).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, TypeVar

import numpy as np
import pandas as pd
import xarray as xr

from .validation import check_choice

__all__ = [
    "FIT_BASES",
    "GEOMETRIC_VARIABLES",
    "ExponentFit",
    "fit_exponent",
    "geomean",
    "seed_mean",
    "spearman",
]

#: ``base`` of :func:`fit_exponent`: ``"log2"`` (exponential laws in k), ``"log"`` (power laws in k).
FIT_BASES = ("log2", "log")

#: The positive, ratio-scale sensitivity quantities that :func:`seed_mean` averages geometrically.
#: Their standard errors (``D_se``, ``G_se``, ``R_se``) are propagated to the geometric mean.
GEOMETRIC_VARIABLES = ("D", "G", "R", "num_D", "num_G", "deno")

T = TypeVar("T", xr.DataArray, xr.Dataset)


# ------------------------------------------------------------------------------------------------
# exponent fits
# ------------------------------------------------------------------------------------------------


class ExponentFit(NamedTuple):
    """Least-squares slope and its standard error (NaN with two points)."""

    slope: float
    stderr: float


def fit_exponent(k: Any, y: Any, *, base: str = "log2") -> ExponentFit:
    r"""Fitted exponent of a depth law, by ordinary least squares.

    * ``base="log2"``: slope :math:`a` of :math:`\log_2 y_k = a\,k + c` (exponential laws,
      :math:`y\propto2^{ak}`; e.g. :math:`a=-1` for :math:`D_k\propto2^{-k}`).
    * ``base="log"``: slope :math:`a` of :math:`\ln y_k = a\ln k + c` (power laws,
      :math:`y\propto k^{a}`; e.g. :math:`a=-1` for :math:`D_k\propto k^{-1}`).

    With :math:`u_i` the regressor (:math:`k_i` or :math:`\ln k_i`) and :math:`v_i` the response
    (:math:`\log_2 y_i` or :math:`\ln y_i`), :math:`i = 1..n`,

    .. math::

        \hat a = \frac{\sum_i (u_i-\bar u)(v_i-\bar v)}{\sum_i (u_i-\bar u)^2}, \qquad
        \mathrm{se}(\hat a) = \sqrt{\frac{\sum_i r_i^2/(n-2)}{\sum_i (u_i-\bar u)^2}}, \quad
        r_i = v_i-\bar v-\hat a(u_i-\bar u),

    and :math:`\mathrm{se} = \mathrm{NaN}` for :math:`n = 2`. The fit of any other logarithm of
    :math:`y` against :math:`k` is this slope times a constant (e.g. :math:`\log_{10}2` for
    :math:`\log_{10} y`, :math:`\ln 2` for :math:`\ln y`).

    Raises :class:`ValueError` for fewer than two points, lengths that differ, a :math:`y` that is
    not finite and positive, a non-positive :math:`k` with ``base="log"``, or a constant :math:`k`.

    >>> k = [1, 2, 3, 4]
    >>> fit_exponent(k, [2.0**-x for x in k]).slope
    -1.0
    """
    check_choice(base, FIT_BASES, "base")
    kk = np.asarray(k, dtype=np.float64).ravel()
    yy = np.asarray(y, dtype=np.float64).ravel()
    if kk.size != yy.size:
        raise ValueError(f"k and y must have the same length, got {kk.size} and {yy.size}")
    if kk.size < 2:
        raise ValueError(f"need at least 2 points to fit an exponent, got {kk.size}")
    if not (np.all(np.isfinite(yy)) and np.all(yy > 0)):
        raise ValueError("y must be finite and > 0 to take its logarithm")
    if base == "log":
        if not (np.all(np.isfinite(kk)) and np.all(kk > 0)):
            raise ValueError("k must be finite and > 0 for base='log' (a fit of log y against log k)")
        u, v = np.log(kk), np.log(yy)
    else:
        u, v = kk, np.log2(yy)
    du = u - u.mean()
    sxx = float(du @ du)
    if sxx == 0:
        raise ValueError("k must take at least two distinct values")
    slope = float(du @ (v - v.mean())) / sxx
    resid = v - v.mean() - slope * du
    n = u.size
    stderr = math.sqrt(float(resid @ resid) / (n - 2) / sxx) if n > 2 else float("nan")
    return ExponentFit(slope, stderr)


# ------------------------------------------------------------------------------------------------
# rank correlation
# ------------------------------------------------------------------------------------------------


def spearman(x: Any, y: Any) -> float:
    r"""Spearman's rank correlation of the pairs :math:`(x_i, y_i)` with both members finite (pandas).

    .. math::

        \rho = \frac{\sum_i (r_i-\bar r)(s_i-\bar s)}{\sqrt{\sum_i (r_i-\bar r)^2\sum_i (s_i-\bar s)^2}},

    the Pearson correlation of the ranks :math:`r_i` of :math:`x` and :math:`s_i` of :math:`y`
    (ties get their average rank; without ties :math:`\rho = 1 - 6\sum_i d_i^2/(n(n^2-1))`,
    :math:`d_i = r_i - s_i`).

    **NaN when undefined**: fewer than 3 finite pairs, or a constant :math:`x` or :math:`y`.
    A caller must treat NaN as missing data (e.g. a claim is "incomplete"), never as a pass.

    >>> spearman([1, 2, 3, 4], [10, 20, 40, 30])
    0.8
    """
    a, b = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    if a.size != b.size:
        raise ValueError(f"x and y must have the same length, got {a.size} and {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan  # a constant variable has no rank correlation
    return float(pd.DataFrame({"x": a[ok], "y": b[ok]}).corr(method="spearman").iloc[0, 1])


# ------------------------------------------------------------------------------------------------
# seed aggregation
# ------------------------------------------------------------------------------------------------


def geomean(da: xr.DataArray, dim: str = "seed") -> xr.DataArray:
    r"""Geometric mean over ``dim``, :math:`\exp\big(\frac1{n}\sum_{i} \ln x_i\big)` over the
    :math:`n` entries with :math:`x_i > 0` (non-positive and NaN entries are left out; NaN when
    none is left); ``da`` unchanged if ``dim`` is absent.

    The geometric part of :func:`seed_mean`, which is what to call for seeds.
    """
    if dim not in da.dims:
        return da
    return np.exp(np.log(da.where(da > 0)).mean(dim))


def _geomean_se(x: xr.DataArray, se: xr.DataArray, gm: xr.DataArray, dim: str) -> xr.DataArray:
    """Delta-method standard error of the geometric mean ``gm`` of ``x`` given per-entry errors ``se``."""
    used = x > 0
    rel2 = ((se / x) ** 2).where(used, 0.0)
    n = used.sum(dim)
    return (gm * np.sqrt(rel2.sum(dim, skipna=False)) / n).where(n > 0)


def seed_mean(obj: T, dim: str = "seed", *, geometric: bool | None = None) -> T:
    r"""The one aggregation over seeds (or another repeat dimension ``dim``, e.g. ``"shuffle"``).

    The rule, per variable (for a Dataset) or for the array (a DataArray, by its ``name``):

    * the positive, ratio-scale sensitivity quantities :data:`GEOMETRIC_VARIABLES` (``D``, ``G``,
      ``R``, ``num_D``, ``num_G``, ``deno``) are averaged **geometrically**, as the NeurIPS-2021
      paper did (methods §4.5, §4.11, open choice O9 in §12), with :func:`geomean`:
      :math:`\bar x = \exp\langle\ln x\rangle` over the seeds with :math:`x > 0`. The geometric mean
      keeps :math:`\bar R = \bar D/\bar G` (when every seed is defined) and is the mean of the
      log-scale on which these quantities are plotted and fitted;
    * their standard errors ``D_se`` … (``X_se`` with ``X`` among them) are propagated to that
      geometric mean by the delta method,
      :math:`\mathrm{se}(\bar x) = \bar x\,\sqrt{\sum_i(\mathrm{se}_i/x_i)^2}/n`, over the :math:`n`
      seeds used for :math:`\bar x` (NaN if one of them has no error); an ``X_se`` whose ``X`` is
      not in the Dataset cannot be propagated and is dropped (a DataArray: :class:`ValueError`);
    * every other numeric variable (``test_error``, accuracies, ``homogeneous_fraction``, spectra,
      epochs, noise levels) gets the **arithmetic** mean, NaN skipped: errors and accuracies are
      fractions, which average linearly;
    * non-numeric variables along ``dim`` are dropped; variables and coordinates without ``dim``,
      and the attributes, are kept.

    A no-op (the same object) when ``obj`` has no dimension ``dim``. ``geometric`` forces the
    geometric (``True``) or the arithmetic (``False``) mean of a DataArray; an unnamed DataArray
    (e.g. ``ds.D / ds.G``) needs it or a name (``.rename("R")``), else :class:`ValueError`.
    """
    if dim not in obj.dims:
        return obj
    if isinstance(obj, xr.DataArray):
        name = obj.name
        if geometric is None:
            if isinstance(name, str) and name.endswith("_se") and name[:-3] in GEOMETRIC_VARIABLES:
                raise ValueError(f"{name} is the standard error of {name[:-3]}: aggregate the Dataset holding both")
            if name is None:
                raise ValueError("seed_mean of an unnamed DataArray: pass geometric=True/False or name it (.rename)")
            geometric = name in GEOMETRIC_VARIABLES
        out = geomean(obj, dim) if geometric else obj.mean(dim, keep_attrs=True)
        return out.rename(name)
    if geometric is not None:
        raise TypeError("geometric= applies to a DataArray; a Dataset follows the per-variable rule")
    ses = {f"{v}_se" for v in GEOMETRIC_VARIABLES}
    out = obj.drop_vars([v for v in ses if v in obj.data_vars]).mean(dim, keep_attrs=True)
    for v in GEOMETRIC_VARIABLES:
        if v in obj.data_vars and dim in obj[v].dims:
            out[v] = geomean(obj[v], dim).assign_attrs(obj[v].attrs)
            if f"{v}_se" in obj.data_vars:
                out[f"{v}_se"] = _geomean_se(obj[v], obj[f"{v}_se"], out[v], dim).assign_attrs(obj[f"{v}_se"].attrs)
    return out[[v for v in obj.data_vars if v in out.data_vars]]
