"""Figures of the book and the notebooks (seaborn), built from results datasets.

Every function takes an :class:`xarray.Dataset` opened with :mod:`diffeosens.results` and returns
a matplotlib/seaborn object; book pages only call these and add text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["book_context", "layer_frame", "plot_layer_profiles", "profile_note", "tidy"]

QUANTITY_LABELS = {"D": "$D_k$ (diffeo)", "G": "$G_k$ (noise)", "R": "$R_k = D_k/G_k$"}


def book_context() -> tuple[str, Path]:
    """The profile and results root the book is built from (``DIFFEOSENS_PROFILE``, default quick)."""
    from .results import default_root

    return os.environ.get("DIFFEOSENS_PROFILE", "quick"), default_root()


def profile_note(ds: xr.Dataset) -> str:
    """A one-line statement of where a figure's numbers come from."""
    prof = ds.attrs.get("profile", "?")
    p = ds.attrs.get("P", "?")
    return f"Profile **{prof}** ({ds.attrs.get('runs', '?')} runs, P = {p} probe images)."


def tidy(ds: xr.Dataset, variables: Sequence[str]) -> pd.DataFrame:
    """A long DataFrame of ``variables`` with every coordinate as a column (NaN rows dropped)."""
    df = ds[list(variables)].to_dataframe().reset_index()
    id_vars = [c for c in df.columns if c not in variables]
    long = df.melt(id_vars=id_vars, value_vars=list(variables), var_name="quantity", value_name="value")
    return long.dropna(subset=["value"])


def layer_frame(ds: xr.Dataset, quantities: Sequence[str] = ("D", "G", "R")) -> pd.DataFrame:
    """Per-layer quantities with ``layer_name``, ``layer_kind``, ``relative_depth`` as columns."""
    df = tidy(ds, quantities)
    return df[df["layer_name"].notna()]


def plot_layer_profiles(
    ds: xr.Dataset,
    *,
    delta: float | None = 1.0,
    x: str = "relative_depth",
    quantities: Sequence[str] = ("D", "G", "R"),
    row: str | None = "arch",
    hue: str = "state",
    height: float = 2.4,
    aspect: float = 1.3,
) -> Any:
    """:math:`D_k, G_k, R_k` against depth, one column per quantity (log scale)."""
    import seaborn as sns

    sel = ds.sel(delta=delta) if delta is not None and "delta" in ds.dims else ds
    df = layer_frame(sel, quantities)
    df["quantity"] = df["quantity"].map(lambda q: QUANTITY_LABELS.get(q, q))
    g = sns.relplot(df, x=x, y="value", hue=hue, col="quantity", row=row if row in df.columns else None, kind="line",
                    marker="o", markersize=4, height=height, aspect=aspect, facet_kws={"sharey": False, "margin_titles": True},
                    errorbar=None)
    g.set(yscale="log")
    g.set_titles(col_template="{col_name}", row_template="{row_name}")
    g.set_axis_labels("relative depth" if x == "relative_depth" else x, "")
    return g


def ratio_last_first(ds: xr.Dataset, var: str, *, kinds: Sequence[str] = ("act", "output")) -> xr.DataArray:
    """``var`` at the last probe point over ``var`` at the first one of the given kinds."""
    v = ds[var].where(ds.layer_kind.isin(list(kinds)))
    ok = v.notnull()
    first = ok.argmax("layer")
    last = ok.sizes["layer"] - 1 - ok.isel(layer=slice(None, None, -1)).argmax("layer")
    return v.isel(layer=last) / v.isel(layer=first)


def finite(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]
