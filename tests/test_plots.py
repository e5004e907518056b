"""Tests of the figure helpers: standard errors reach the figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from diffeosens.plots import plot_error_vs_rf, plot_layer_profiles, tidy  # noqa: E402
from diffeosens.stats import seed_mean  # noqa: E402


def _dataset(n_seed: int = 1) -> xr.Dataset:
    rng = np.random.default_rng(0)
    shape = (2, 2, n_seed, 1, 4)  # arch, state, seed, delta, layer
    dims = ("arch", "state", "seed", "delta", "layer")
    D, G = rng.uniform(0.1, 1.0, shape), rng.uniform(0.1, 1.0, shape)
    ds = xr.Dataset(
        {"D": (dims, D), "G": (dims, G), "R": (dims, D / G),
         "D_se": (dims, 0.1 * D), "G_se": (dims, 0.2 * G), "R_se": (dims, 0.05 * D / G),
         "test_error": (("arch", "state", "seed"), rng.uniform(0.1, 0.5, shape[:3]))},
        coords={"arch": ["A", "B"], "state": ["init", "trained"], "seed": list(range(n_seed)), "delta": [1.0], "layer": range(4),
                "layer_name": ("layer", ["c1", "r1", "c2", "out"]), "layer_kind": ("layer", ["conv", "act", "conv", "output"]),
                "relative_depth": ("layer", np.linspace(0, 1, 4))},
    )
    return ds


def test_tidy_carries_each_quantitys_standard_error():
    ds = _dataset().isel(seed=0, delta=0)
    df = tidy(ds, ["D", "G"])
    for q in ("D", "G"):
        sub = df[df.quantity == q].set_index(["arch", "state", "layer"]).sort_index()
        ref = ds[f"{q}_se"].to_series().reorder_levels(["arch", "state", "layer"]).sort_index()
        np.testing.assert_allclose(sub["se"].to_numpy(), ref.to_numpy(), rtol=0, atol=0)
    assert np.isnan(tidy(ds.drop_vars("D_se"), ["D"])["se"]).all()  # no error known: no band


def test_layer_profiles_shade_one_standard_error():
    ds = _dataset()
    g = plot_layer_profiles(ds, delta=1.0, row="arch", hue="state")
    ax = g.axes_dict[("A", "$D_k$ (diffeo)")]
    bands = [c for c in ax.collections if c.get_paths()]
    assert len(bands) == 2  # init and trained
    top = max(p.vertices[:, 1].max() for c in bands for p in c.get_paths())
    sel = ds.sel(arch="A", delta=1.0).isel(seed=0)
    assert top == pytest.approx(float((sel.D + sel.D_se).max()), rel=1e-12)
    plt.close(g.figure)


def test_layer_profiles_errors_follow_the_seed_aggregation():
    ds = _dataset(n_seed=3)
    g = plot_layer_profiles(ds, delta=1.0, row="arch", hue="state")
    ax = g.axes_dict[("B", "$G_k$ (noise)")]
    top = max(p.vertices[:, 1].max() for c in ax.collections for p in c.get_paths())
    agg = seed_mean(ds.sel(arch="B", delta=1.0))
    assert top == pytest.approx(float((agg.G + agg.G_se).max()), rel=1e-12)
    plt.close(g.figure)


def test_error_vs_rf_has_horizontal_error_bars():
    fig = plot_error_vs_rf(_dataset())
    bars = [c for c in fig.axes[0].collections if c.get_segments()]
    assert len(bars) == 2  # one per network
    seg = bars[0].get_segments()[0]
    out = _dataset().sel(arch="A", state="trained", delta=1.0).isel(seed=0, layer=-1)
    assert seg[1, 0] - seg[0, 0] == pytest.approx(2 * float(out.R_se), rel=1e-12)
    assert fig.axes[1].get_xscale() == "log"
    plt.close(fig)
