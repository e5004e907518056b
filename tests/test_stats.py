"""diffeosens.stats: each statistic against a slow, obviously correct reference."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
import xarray as xr

from diffeosens import claims, plots, results, stats, theory


# ------------------------------------------------------------------------------------------------
# fit_exponent
# ------------------------------------------------------------------------------------------------


def _reference_fit(u: list[float], v: list[float]) -> tuple[float, float]:
    """np.polyfit for the slope; the standard error written out term by term."""
    slope, intercept = np.polyfit(u, v, 1)
    n = len(u)
    ubar = sum(u) / n
    ssr = sum((vi - (intercept + slope * ui)) ** 2 for ui, vi in zip(u, v))
    sxx = sum((ui - ubar) ** 2 for ui in u)
    return float(slope), math.sqrt(ssr / (n - 2) / sxx)


@pytest.mark.parametrize("seed", range(5))
def test_fit_exponent_matches_polyfit_and_the_se_formula(seed):
    rng = np.random.default_rng(seed)
    k = np.sort(rng.uniform(1, 10, size=7))
    y = np.exp(rng.normal(size=7)) * k**-0.7
    fit = stats.fit_exponent(k, y, base="log2")
    ref = _reference_fit(list(k), [math.log2(x) for x in y])
    assert fit.slope == pytest.approx(ref[0], rel=1e-10) and fit.stderr == pytest.approx(ref[1], rel=1e-10)
    fit = stats.fit_exponent(k, y, base="log")
    ref = _reference_fit([math.log(x) for x in k], [math.log(x) for x in y])
    assert fit.slope == pytest.approx(ref[0], rel=1e-10) and fit.stderr == pytest.approx(ref[1], rel=1e-10)


def test_fit_exponent_is_one_function():
    assert theory.fit_exponent is stats.fit_exponent and theory.ExponentFit is stats.ExponentFit
    assert theory.FIT_BASES is stats.FIT_BASES
    assert results.geomean is stats.geomean


def test_fit_exponent_exact_law_two_points_and_errors():
    k = np.arange(1.0, 6.0)
    assert stats.fit_exponent(k, 3 * 2.0 ** (-1.5 * k)) == pytest.approx((-1.5, 0.0), abs=1e-12)
    assert math.isnan(stats.fit_exponent([1, 2], [1.0, 4.0]).stderr)
    for bad, msg in ((dict(k=[1, 2], y=[1, 2], base="ln"), "unknown base"), (dict(k=[1, 2, 3], y=[1.0, 0.0, 3.0]), "finite and > 0"),
                     (dict(k=[1, 2, 3], y=[1.0, 2.0]), "same length"), (dict(k=[1], y=[1.0]), "at least 2"),
                     (dict(k=[0, 1, 2], y=[1.0, 2.0, 3.0], base="log"), "k must be finite and > 0"),
                     (dict(k=[2, 2, 2], y=[1.0, 2.0, 3.0]), "two distinct")):
        with pytest.raises(ValueError, match=msg):
            stats.fit_exponent(**bad)


# ------------------------------------------------------------------------------------------------
# spearman
# ------------------------------------------------------------------------------------------------


def test_spearman_hand_computed():
    # ranks of y: 1, 3, 2, 5, 4 -> d = 0, -1, 1, -1, 1, sum d^2 = 4, rho = 1 - 6*4/(5*24) = 0.8
    assert stats.spearman([1, 2, 3, 4, 5], [1.0, 30.0, 20.0, 500.0, 400.0]) == pytest.approx(0.8)
    assert stats.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties: x ranks 1.5, 1.5, 3, 4; y ranks 1, 2, 3, 4 -> Pearson of the ranks
    rx, ry = np.array([1.5, 1.5, 3, 4]), np.array([1, 2, 3, 4.0])
    assert stats.spearman([7, 7, 8, 9], [1, 2, 3, 4]) == pytest.approx(np.corrcoef(rx, ry)[0, 1])


def test_spearman_nan_when_undefined_and_nan_pairs_dropped():
    assert stats.spearman([1, 2, np.nan, 4, 5], [1, 3, 99, 2, 5]) == pytest.approx(stats.spearman([1, 2, 4, 5], [1, 3, 2, 5]))
    assert math.isnan(stats.spearman([1, 2, 3], [5, 5, 5]))  # constant: no rank correlation
    assert math.isnan(stats.spearman([1, 2, np.nan], [1, 2, 3]))  # two finite pairs
    assert math.isnan(stats.spearman([], []))
    with pytest.raises(ValueError, match="same length"):
        stats.spearman([1, 2, 3], [1, 2])


# ------------------------------------------------------------------------------------------------
# seed_mean
# ------------------------------------------------------------------------------------------------


def _seeded() -> xr.Dataset:
    rng = np.random.default_rng(0)
    D = np.exp(rng.normal(size=(3, 4)))
    G = np.exp(rng.normal(size=(3, 4)))
    D[1, 2] = np.nan  # one seed undefined at one layer
    return xr.Dataset(
        {"D": (("seed", "layer"), D), "G": (("seed", "layer"), G), "R": (("seed", "layer"), D / G),
         "D_se": (("seed", "layer"), 0.1 * D), "test_error": (("seed",), [0.1, 0.2, 0.6]),
         "homogeneous_fraction": (("seed", "layer"), rng.uniform(size=(3, 4))), "P": ((), 500)},
        coords={"seed": [0, 1, 2], "layer": np.arange(4), "layer_kind": ("layer", ["conv", "act", "act", "output"])},
        attrs={"P": 500, "experiment": "layers"})


def test_seed_mean_is_the_explicit_geometric_mean_for_sensitivities():
    ds = _seeded()
    m = stats.seed_mean(ds)
    for var in ("D", "G", "R"):
        for layer in range(4):
            vals = [float(x) for x in ds[var].isel(layer=layer).values if np.isfinite(x)]
            expected = math.prod(vals) ** (1 / len(vals))
            assert float(m[var].isel(layer=layer)) == pytest.approx(expected, rel=1e-12)
            assert float(stats.seed_mean(ds[var]).isel(layer=layer)) == pytest.approx(expected, rel=1e-12)
    # arithmetic for everything else
    assert float(m.test_error) == pytest.approx(0.3)
    np.testing.assert_allclose(m.homogeneous_fraction.values, ds.homogeneous_fraction.values.mean(0))
    # R = D / G survives the aggregation where every seed is defined
    np.testing.assert_allclose(m.R.isel(layer=[0, 1, 3]).values, (m.D / m.G).isel(layer=[0, 1, 3]).values)
    # delta-method error of the geometric mean: 0.1 relative per seed -> 0.1/sqrt(n) relative
    np.testing.assert_allclose((m.D_se / m.D).values, [0.1 / math.sqrt(3), 0.1 / math.sqrt(3), 0.1 / math.sqrt(2), 0.1 / math.sqrt(3)])
    assert "seed" not in m.dims and list(m.data_vars) == list(ds.data_vars)
    assert m.attrs == ds.attrs and list(m.layer_kind.values) == ["conv", "act", "act", "output"]


def test_seed_mean_non_positive_values_are_left_out_of_the_geometric_mean():
    da = xr.DataArray([[4.0, 1.0], [0.0, 4.0], [-1.0, 16.0]], dims=("seed", "layer"), name="G")
    np.testing.assert_allclose(stats.seed_mean(da).values, [4.0, 4.0])
    assert np.isnan(float(stats.seed_mean(xr.DataArray([0.0, -1.0], dims="seed", name="D"))))


def test_seed_mean_no_seed_is_a_no_op_and_other_dims_work():
    ds = _seeded().isel(seed=0)
    d = ds.D
    assert stats.seed_mean(ds) is ds and stats.seed_mean(d) is d
    shuffled = xr.DataArray([[1.0, 2.0], [4.0, 8.0]], dims=("shuffle", "layer"), name="D")
    np.testing.assert_allclose(stats.seed_mean(shuffled, "shuffle").values, [2.0, 4.0])


def test_seed_mean_dataarray_rule_needs_a_name():
    ds = _seeded()
    with pytest.raises(ValueError, match="unnamed"):
        stats.seed_mean(ds.D / ds.G)  # xarray drops the name of a ratio of two named arrays
    with pytest.raises(ValueError, match="standard error"):
        stats.seed_mean(ds.D_se)
    np.testing.assert_allclose(stats.seed_mean(ds.D / ds.G, geometric=True).values, stats.seed_mean(ds.R).values)
    np.testing.assert_allclose(stats.seed_mean(ds.D, geometric=False).values, ds.D.mean("seed").values)
    assert stats.seed_mean((ds.D / ds.G).rename("R")).name == "R"


# ------------------------------------------------------------------------------------------------
# the callers use them
# ------------------------------------------------------------------------------------------------


def test_block_curve_is_public_and_seed_averaged():
    L = 6
    k = np.arange(1, L + 1)
    D = np.stack([2.0 ** -k, 4 * 2.0 ** -k])  # two seeds: geometric mean 2 * 2^-k
    ds = xr.Dataset({"D": (("seed", "layer"), D)}, coords={"seed": [0, 1], "layer": np.arange(L), "layer_kind": ("layer", ["act"] * L)})
    kk, y = claims.block_curve(ds, "D", drop_last=2)
    np.testing.assert_allclose(kk, [1, 2, 3, 4])
    np.testing.assert_allclose(y, 2 * 2.0 ** -kk)
    assert stats.fit_exponent(kk, y).slope == pytest.approx(-1.0)
    ds["D"][0, 1] = 0.0
    ds["D"][1, 1] = 0.0
    with pytest.raises(claims.Incomplete, match="undefined D_k"):
        claims.block_curve(ds, "D")


def test_no_private_statistics_left():
    for name in ("_slope", "_spearman", "_block_curve", "geomean"):
        assert not hasattr(claims, name), name
    assert not hasattr(plots, "geomean")


@pytest.mark.parametrize(("var", "geometric"), list(product(("D", "test_error"), (True, False))))
def test_seed_mean_forced_mode(var, geometric):
    da = xr.DataArray([1.0, 4.0], dims="seed", name=var)
    assert float(stats.seed_mean(da, geometric=geometric)) == pytest.approx(2.0 if geometric else 2.5)
