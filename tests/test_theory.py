"""Tests of diffeosens.theory: the constant-filter CNN against independent references and the
closed-form depth laws of methods §10.3–10.4 (numerical confirmation table of §10.6; claims C9–C10).

Stride-1 runs use circular padding with one-hot inputs at all N = 4 (RF + 1) sites: the model is
then exactly translation invariant, and N is large enough for the ring's finite-size factor on
the denominator, 1 - 1/(N ||f_k||^2), to stay below 5 % up to k = 32.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
import xarray as xr

from diffeosens.theory import (
    add_matched_noise,
    central_positions,
    constant_filter_cnn,
    fit_exponent,
    min_sites,
    one_hot_inputs,
    predict,
    receptive_field,
    shift_sites,
    simulate_sensitivities,
)

torch.set_num_threads(2)

#: G_k offset from the rectified noise's fluctuations, (1 - 1/pi) / 2 = 0.34 (methods §10.3).
G_OFFSET = 0.5 * (1.0 - 1.0 / math.pi)
K_FIT = slice(3, None)  # k = 4 ... 32, as in methods §10.6


@lru_cache(maxsize=None)
def _stride1(F: int, activation: str = "relu") -> xr.Dataset:
    N = 4 * (receptive_field(F, 1, 32) + 1)
    return simulate_sensitivities(depth=32, filter_size=F, stride=1, activation=activation, padding="circular", N=N, n_noise=5, seed=0)


def _slope(ds: xr.Dataset, y, base: str = "log") -> float:
    return fit_exponent(ds.depth.values[K_FIT], np.asarray(y)[K_FIT], base=base).slope


# ------------------------------------------------------------------------------------------------
# The network against torch convolutions
# ------------------------------------------------------------------------------------------------


def _reference_1d(x, F, s, w, b, act, padding, depth):
    left, right = (F - 1) // 2, F - 1 - (F - 1) // 2
    kernel = torch.full((1, 1, F), w, dtype=x.dtype)
    out, h = [], x[:, None]
    for _ in range(depth):
        hp = tF.pad(h, (left, right), mode="constant" if padding == "zero" else "circular")
        h = tF.conv1d(hp, kernel, stride=s) + b
        h = {"relu": torch.relu, "tanh": torch.tanh, "abs": torch.abs, "linear": lambda t: t}[act](h)
        out.append(h[:, 0])
    return out


def _reference_2d(x, F, s, w, depth):
    left, right = (F - 1) // 2, F - 1 - (F - 1) // 2
    kernel = torch.full((1, 1, F, F), w, dtype=x.dtype)
    out, h = [], x[:, None]
    for _ in range(depth):
        h = torch.relu(tF.conv2d(tF.pad(h, (left, right, left, right)), kernel, stride=s))
        out.append(h[:, 0])
    return out


@pytest.mark.parametrize(
    "F, s, weight, bias, act, padding",
    [
        (3, 1, "average", 0.0, "relu", "zero"),
        (2, 2, "ones", 0.0, "relu", "zero"),
        (4, 1, 0.7, -0.05, "tanh", "zero"),  # even F: the extra pad site goes on the right
        (5, 2, "average", 0.1, "abs", "circular"),
        (3, 3, 1.3, 0.0, "linear", "circular"),
    ],
)
def test_network_matches_torch_convolutions(F, s, weight, bias, act, padding):
    x = torch.randn(7, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = constant_filter_cnn(x, depth=3, filter_size=F, stride=s, weight=weight, bias=bias, activation=act, padding=padding)
    w = {"average": s / F, "ones": 1.0}.get(weight, weight)
    ref = _reference_1d(x, F, s, w, bias, act, padding, 3)
    assert [tuple(g.shape) for g in got] == [tuple(r.shape) for r in ref]
    assert [g.shape[-1] for g in got] == [math.ceil(40 / s**k) for k in (1, 2, 3)]
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("F, s", [(3, 1), (2, 2), (4, 2)])
def test_network_2d_is_the_separable_FxF_window_sum(F, s):
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = constant_filter_cnn(x, depth=2, filter_size=F, stride=s)  # "average": (s/F)^2 per entry
    ref = _reference_2d(x, F, s, (s / F) ** 2, 2)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


def test_network_follows_input_dtype():
    reps = constant_filter_cnn(torch.eye(9), depth=2, filter_size=3, stride=1)
    assert [r.dtype for r in reps] == [torch.float32] * 2 and reps[0].device == torch.device("cpu")


def test_receptive_field_and_minimum_size():
    assert receptive_field(3, 1, 32) == 67 and receptive_field(5, 1, 32) == 133 and receptive_field(2, 2, 5) == 64
    # the support of a centred point response at depth L is the true receptive field, min_sites - 1
    for F, L in [(3, 4), (4, 3), (5, 2)]:
        x = one_hot_inputs(41, positions=[20])
        support = int((constant_filter_cnn(x, depth=L, filter_size=F, stride=1)[-1] > 0).sum())
        assert support == min_sites(F, 1, L) - 1 == 1 + L * (F - 1)
    # with F = s = 2 a one-hot input stays one-hot: a single active unit, cell floor(i / 2^k)
    reps = constant_filter_cnn(one_hot_inputs(32), depth=4, filter_size=2, stride=2)
    for k, r in enumerate(reps, start=1):
        assert torch.equal(r.argmax(1), torch.arange(32) // 2**k) and torch.equal(r.sum(1), torch.ones(32, dtype=r.dtype))
    assert central_positions(10, depth=3, filter_size=3, stride=1) == [3, 4, 5, 6]


# ------------------------------------------------------------------------------------------------
# Inputs, perturbations, estimators
# ------------------------------------------------------------------------------------------------


def test_inputs_shift_and_matched_noise():
    x = one_hot_inputs(12)
    assert torch.equal(x, torch.eye(12, dtype=torch.float64))
    tx = shift_sites(x)
    assert torch.equal(tx.argmax(1), (torch.arange(12) + 1) % 12)
    g = torch.Generator().manual_seed(0)
    noisy = add_matched_noise(x, tx, rectify=False, generator=g)
    torch.testing.assert_close((noisy - x).norm(dim=1), torch.full((12,), math.sqrt(2), dtype=torch.float64))
    rect = add_matched_noise(x, tx, rectify=True, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rect, torch.relu(noisy))  # same draw, rectified after adding: ReLU(x + eta)
    assert one_hot_inputs(4, ndim=2, positions=[5]).flatten().argmax().item() == 5


def test_estimators_match_brute_force():
    kw = dict(depth=3, filter_size=3, stride=1, padding="zero")
    ds = simulate_sensitivities(**kw, N=12, n_noise=2, seed=3)
    x = one_hot_inputs(12)
    tx = shift_sites(x)
    gen = torch.Generator().manual_seed(3)
    noisy = [add_matched_noise(x, tx, rectify=True, generator=gen) for _ in range(2)]
    A = constant_filter_cnn(x, **kw)
    B = constant_filter_cnn(tx, **kw)
    Gs = [constant_filter_cnn(n, **kw) for n in noisy]
    for k in range(3):
        a = A[k]
        pairs = (a[:, None, :] - a[None, :, :]).square().sum(-1)  # all P^2 ordered pairs, diagonal included
        deno = float(pairs.mean())  # stored without the guard, as diffeosens.sensitivity does
        num_D = float((B[k] - a).square().sum(1).mean())
        num_G = np.mean([float((g[k] - a).square().sum(1).mean()) for g in Gs])
        assert ds.deno.values[k] == pytest.approx(deno, rel=1e-12)
        assert ds.num_D.values[k] == pytest.approx(num_D, rel=1e-12)
        assert ds.num_G.values[k] == pytest.approx(num_G, rel=1e-12)
        assert ds.D.values[k] == pytest.approx(num_D / (deno + 1e-10), rel=1e-12)
        assert ds.G.values[k] == pytest.approx(num_G / (deno + 1e-10), rel=1e-12)
        assert ds.R.values[k] == pytest.approx(num_D / num_G, rel=1e-12)


def test_dataset_layout_attrs_and_netcdf_roundtrip(tmp_path):
    ds = simulate_sensitivities(depth=4, filter_size=2, stride=2, N=32, n_noise=3)
    assert ds.sizes == {"depth": 4} and ds.depth.values.tolist() == [1, 2, 3, 4]
    assert ds.n_units.values.tolist() == [16, 8, 4, 2]
    assert set(ds.data_vars) == {"D", "G", "R", "num_D", "num_G", "deno", "G_se", "R_se"}
    assert all("long_name" in ds[v].attrs and "units" in ds[v].attrs for v in ds.data_vars)
    params = json.loads(ds.attrs["params"])
    assert params["rectify"] is True and params["weight"] == "average" and params["weight_value"] == 1.0 and params["P"] == 32
    ds.to_netcdf(tmp_path / "t.nc", engine="netcdf4")
    back = xr.open_dataset(tmp_path / "t.nc", engine="netcdf4")
    np.testing.assert_array_equal(back.D.values, ds.D.values)
    assert back.attrs["rectify"] == 1 and back.attrs["activation"] == "relu"
    back.close()


def test_reproducible_for_a_seed_and_different_across_seeds():
    kw = dict(depth=6, filter_size=3, stride=1, N=40, n_noise=2)
    a, b, c = (simulate_sensitivities(**kw, seed=s) for s in (7, 7, 8))
    for v in ("D", "G", "R", "num_G", "deno"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    np.testing.assert_array_equal(a.num_D.values, c.num_D.values)  # the shift is deterministic
    assert not np.allclose(a.num_G.values, c.num_G.values, rtol=1e-6)
    assert a.attrs["params"] == b.attrs["params"]


def test_ratios_do_not_depend_on_a_positive_weight_except_for_tanh():
    kw = dict(depth=5, filter_size=3, stride=1, N=30, n_noise=2)
    for act in ("relu", "linear"):
        avg = simulate_sensitivities(**kw, activation=act)
        other = simulate_sensitivities(**kw, activation=act, weight=2.5)
        np.testing.assert_allclose(other.D.values, avg.D.values, rtol=1e-9)
        np.testing.assert_allclose(other.G.values, avg.G.values, rtol=1e-9)
    tanh_avg = simulate_sensitivities(**kw, activation="tanh")
    tanh_ones = simulate_sensitivities(**kw, activation="tanh", weight="ones")
    assert not np.allclose(tanh_ones.G.values, tanh_avg.G.values, rtol=1e-3)


def test_2d_model_is_the_product_of_two_1d_models():
    # On a torus the 2D point response is g_k (x) g_k, so num_D(2D) = ||g_k||^2 num_D(1D) and
    # deno(2D) = 2 (||g_k||^4 - 1/N^2), with ||g_k||^2 = deno(1D)/2 + 1/N (mass-preserving weight).
    N = 14
    d1 = simulate_sensitivities(depth=4, filter_size=3, stride=1, N=N, padding="circular", n_noise=1)
    d2 = simulate_sensitivities(depth=4, filter_size=3, stride=1, N=N, ndim=2, padding="circular", n_noise=1)
    g2 = d1.deno.values / 2 + 1 / N
    np.testing.assert_allclose(d2.num_D.values, d1.num_D.values * g2, rtol=1e-10)
    np.testing.assert_allclose(d2.deno.values, 2 * (g2**2 - 1 / N**2), rtol=1e-10)
    assert d2.attrs["P"] == N * N and d2.n_units.values.tolist() == [N * N] * 4


# ------------------------------------------------------------------------------------------------
# Simulation against the closed forms (methods §10.6)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("F", [3, 5])
def test_stride1_relu_power_laws(F):
    ds = _stride1(F)
    pred = predict(ds.depth.values, filter_size=F, stride=1, N=ds.attrs["N"])
    # D_k ~ 3 / (k (F^2 - 1)) ~ k^-1 (the discrete response steepens it only a little)
    assert _slope(ds, ds.D) == pytest.approx(-1.0, rel=0.10)
    assert ds.D.values[-1] == pytest.approx(3 / ((F * F - 1) * 32), rel=0.10)
    # G_k ~ s_k / sqrt(pi) + 0.34: within 3 % of the prediction at every k >= 4; the asymptotic
    # exponent 1/2 is that of G_k - 0.34, and the raw slope (about 0.42-0.46 over k = 4..32,
    # 0.41-0.45 in methods §10.6) is that of the predicted curve
    np.testing.assert_allclose(ds.G.values[K_FIT], pred.G.values[K_FIT], rtol=0.03)
    assert _slope(ds, ds.G - G_OFFSET) == pytest.approx(0.5, rel=0.10)
    assert _slope(ds, ds.G) == pytest.approx(_slope(pred, pred.G), rel=0.10)
    assert _slope(ds, ds.G) < 0.5
    # R_k = D_k / G_k ~ k^-3/2
    assert _slope(ds, ds.D / (ds.G - G_OFFSET)) == pytest.approx(-1.5, rel=0.10)
    assert _slope(ds, ds.R) == pytest.approx(_slope(pred, pred.R), rel=0.10)
    # the noise numerator tends to N mu^2 = 1/pi; the denominator decays like k^-1/2
    assert ds.num_G.values[-1] == pytest.approx(1 / math.pi + 2 * G_OFFSET * (ds.deno.values[-1] / 2 + 1 / ds.attrs["N"]), rel=0.03)
    assert _slope(ds, ds.deno) == pytest.approx(-0.5, rel=0.15)


def test_stride2_relu_is_exact_and_noise_piles_up():
    L, N = 8, 512  # N a multiple of 2^L: the cells tile the ring, Case A is exact
    ds = simulate_sensitivities(depth=L, filter_size=2, stride=2, N=N, n_noise=10, seed=0)
    k = ds.depth.values
    pred = predict(k, filter_size=2, stride=2, N=N)
    # one active unit per input: the diffeo numerator and the denominator are exact
    np.testing.assert_array_equal(ds.num_D.values, 2.0 * 2.0**-k)
    np.testing.assert_allclose(ds.deno.values, 2 * (1 - 2.0**k / N), rtol=1e-14)
    np.testing.assert_allclose(ds.D.values, 2.0**-k / (1 - 2.0**k / N), rtol=1e-9)
    assert fit_exponent(k, ds.D * (1 - 2.0**k / N)).slope == pytest.approx(-1.0, abs=1e-9)
    assert fit_exponent(k[:5], ds.D[:5]).slope == pytest.approx(-1.0, rel=0.10)  # before the finite size shows
    # noise numerator 2^k / pi + 0.68: 1.32, 1.95, 5.77 at k = 1, 2, 4 (methods §10.3, §10.6)
    np.testing.assert_allclose(ds.num_G.values[[0, 1, 3]], [1.32, 1.95, 5.77], rtol=0.05)
    np.testing.assert_allclose(ds.num_G.values, pred.num_G.values, rtol=0.01)
    # piling up: the pooled rectified mean doubles at every layer ...
    pile = ds.num_G.values - 2 * G_OFFSET
    np.testing.assert_allclose(pile[1:] / pile[:-1], 2.0, rtol=0.10)
    # ... so G_k grows by the predicted factors (x1.49, 1.66, 1.82, 1.94, 2.07, ...), x2 once
    # 2^k/pi dominates the 0.68 and before the finite-size denominator (k = 4 -> 6)
    factors = ds.G.values[1:] / ds.G.values[:-1]
    np.testing.assert_allclose(factors, pred.G.values[1:] / pred.G.values[:-1], rtol=0.02)
    np.testing.assert_allclose(factors[3:5], 2.0, rtol=0.10)
    assert fit_exponent(k[:5], ds.G.values[:5] - G_OFFSET).slope == pytest.approx(1.0, rel=0.10)
    # R_k ~ 2 pi 4^-k: per-layer factor about 1/4
    np.testing.assert_allclose(ds.R.values[4:] / ds.R.values[3:-1], 0.25, rtol=0.10)


def test_default_size_breaks_the_exact_tiling():
    # N = RF + 1 = 2^(L+1) + 1 is odd: one lone cell, so num_D exceeds 2 * 2^-k (documented)
    ds = simulate_sensitivities(depth=5, filter_size=2, stride=2, n_noise=1)
    k = ds.depth.values
    assert ds.attrs["N"] == 65
    np.testing.assert_allclose(ds.num_D.values, 2 * (2.0 ** (6 - k) + 1) / 65, rtol=1e-12)


def test_odd_and_linear_activations_keep_G_flat():
    # methods §10.4: zero-mean noise only propagates its variance, G_k ~ 1 at every depth
    for act in ("tanh", "linear"):
        ds = _stride1(3, act)
        assert abs(_slope(ds, ds.G)) < 0.1
        assert _slope(ds, ds.D) == pytest.approx(-1.0, rel=0.10)  # D decays as with ReLU
    lin = _stride1(3, "linear")
    pred = predict(lin.depth.values, filter_size=3, stride=1, activation="linear", N=lin.attrs["N"])
    np.testing.assert_allclose(lin.G.values, pred.G.values, rtol=0.03)
    ds = simulate_sensitivities(depth=5, filter_size=2, stride=2, activation="linear", N=256, n_noise=10)
    np.testing.assert_allclose(ds.G.values, 1.0, rtol=0.20)
    np.testing.assert_allclose(ds.G.values, predict(ds.depth.values, filter_size=2, stride=2, activation="linear", N=256).G.values, rtol=0.03)


def test_claim_C10_relu_piles_noise_up_odd_activation_does_not():
    kw = dict(depth=6, filter_size=2, stride=2, N=256, n_noise=5)
    relu = simulate_sensitivities(**kw, activation="relu")
    tanh = simulate_sensitivities(**kw, activation="tanh")
    k = relu.depth.values
    assert fit_exponent(k, relu.G).slope > 0.75  # log2 G grows by about one per layer (x2)
    assert fit_exponent(k, tanh.G).slope < 0.25
    assert tanh.G.values[-1] < relu.G.values[-1] / 3


# ------------------------------------------------------------------------------------------------
# Closed forms and fits
# ------------------------------------------------------------------------------------------------


def test_predict_hand_numbers():
    a = predict([1, 2, 4], filter_size=2, stride=2)
    np.testing.assert_allclose(a.num_G.values, [2 / math.pi + 0.6817, 4 / math.pi + 0.6817, 16 / math.pi + 0.6817], atol=1e-4)
    np.testing.assert_allclose(a.G.values, [1 / math.pi + 0.3408, 2 / math.pi + 0.3408, 8 / math.pi + 0.3408], atol=1e-4)
    np.testing.assert_allclose(a.D.values, [0.5, 0.25, 0.0625])
    np.testing.assert_allclose(predict([3], filter_size=2, stride=2, N=64).D.values, [0.125 / (1 - 8 / 64)])
    np.testing.assert_allclose(predict([1, 3], filter_size=2, stride=2, subleading=False).R.values, [2 * math.pi / 4, 2 * math.pi / 64])
    b = predict([8, 32], filter_size=3, stride=1, subleading=False)
    np.testing.assert_allclose(b.D.values, [3 / 64, 3 / 256])  # 3 / (k (F^2 - 1))
    np.testing.assert_allclose(b.G.values, [math.sqrt(8 * 8 / (12 * math.pi)), math.sqrt(32 * 8 / (12 * math.pi))])
    np.testing.assert_allclose(b.R.values, b.D.values / b.G.values)
    assert predict([32], filter_size=5, stride=1).D.values[0] == pytest.approx(3 / (24 * 32))
    c = predict([1, 5], filter_size=2, stride=2, activation="tanh")
    np.testing.assert_allclose(c.G.values, 1.0) and np.testing.assert_allclose(c.R.values, c.D.values)
    assert np.isnan(c.num_G.values).all() and c.attrs["case"] == "C"


def test_fit_exponent_recovers_known_exponents():
    k = np.arange(1, 9)
    fit = fit_exponent(k, 3.0 * 2.0 ** (-1.25 * k), base="log2")
    assert fit.slope == pytest.approx(-1.25, abs=1e-12) and fit.stderr < 1e-12
    kk = np.arange(4, 33)
    fit = fit_exponent(kk, 0.7 * kk**-1.5, base="log")
    assert fit.slope == pytest.approx(-1.5, abs=1e-12) and fit.stderr < 1e-12
    slope, stderr = fit_exponent([1, 2, 3, 4], [1.0, 2.2, 3.9, 8.5])
    assert 0 < stderr < 0.2 and slope == pytest.approx(1.0, abs=0.1)
    assert math.isnan(fit_exponent([1, 2], [1.0, 2.0]).stderr)


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(depth=0), "depth must be an integer >= 1"),
        (dict(filter_size=0), "filter_size must be an integer >= 1"),
        (dict(stride=0), "stride must be an integer >= 1"),
        (dict(activation="sigmoid"), "unknown activation 'sigmoid'"),
        (dict(padding="reflect"), "unknown padding 'reflect'"),
        (dict(weight="mean"), "unknown weight 'mean'"),
        (dict(weight=0.0), "weight must be a finite non-zero"),
        (dict(N=10), r"N=10 is too small .* N must be >= 18"),
        (dict(n_noise=0), "n_noise must be an integer >= 1"),
        (dict(ndim=3), "unknown ndim 3"),
        (dict(positions="edges"), "unknown positions 'edges'"),
        (dict(positions="central", filter_size=4, N=30), "central position"),
        (dict(positions=[0, 99], N=20), r"positions must lie in \[0, 19\]"),
    ],
)
def test_simulate_rejects_bad_input(kwargs, match):
    base = dict(depth=8, filter_size=3, stride=1, n_noise=1)
    with pytest.raises(ValueError, match=match):
        simulate_sensitivities(**{**base, **kwargs})


def test_other_functions_reject_bad_input():
    with pytest.raises(ValueError, match=r"x must have shape \(P, N\) or \(P, H, W\)"):
        constant_filter_cnn(torch.zeros(5), depth=1, filter_size=3, stride=1)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        constant_filter_cnn(np.zeros((2, 5)), depth=1, filter_size=3, stride=1)
    with pytest.raises(ValueError, match="filter_size=3, stride=2"):
        predict([1, 2], filter_size=3, stride=2)
    with pytest.raises(ValueError, match="depth must be integers >= 1"):
        predict([0, 1], filter_size=2, stride=2)
    with pytest.raises(ValueError, match="N must exceed 2\\^k = 16"):
        predict([4], filter_size=2, stride=2, N=16)
    with pytest.raises(ValueError, match="unknown activation 'abs'"):
        predict([1], filter_size=2, stride=2, activation="abs")
    with pytest.raises(ValueError, match="unknown base 'ln'"):
        fit_exponent([1, 2], [1, 2], base="ln")
    with pytest.raises(ValueError, match="y must be finite and > 0"):
        fit_exponent([1, 2, 3], [1.0, -2.0, 3.0])
    with pytest.raises(ValueError, match="same length"):
        fit_exponent([1, 2, 3], [1.0, 2.0])
