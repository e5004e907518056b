"""Tests of diffeosens.spectra: grid Laplacian, modes, filter spectra and model spectra."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import xarray as xr

from diffeosens import models
from diffeosens.spectra import (
    eigenvalue_groups,
    filter_spectrum,
    grid_laplacian,
    laplacian_modes,
    model_spectra,
)

F64 = torch.float64


# ------------------------------------------------------------------------------------------------
# Laplacian and modes
# ------------------------------------------------------------------------------------------------


def test_grid_laplacian_structure():
    L = grid_laplacian(3)
    assert L.dtype == F64 and L.shape == (9, 9)
    assert torch.equal(L, L.T)
    assert torch.diag(L).tolist() == [2, 3, 2, 3, 4, 3, 2, 3, 2]  # corners, edges, centre
    assert torch.allclose(L.sum(1), torch.zeros(9, dtype=F64))  # rows sum to zero
    assert L[0, 1] == -1 and L[0, 3] == -1 and L[0, 4] == 0 and L[2, 3] == 0  # no wrap-around


def test_eigenvalues_3x3():
    vals, vecs = laplacian_modes(3)
    np.testing.assert_allclose(vals.numpy(), [0, 1, 1, 2, 3, 3, 4, 4, 6], atol=1e-12)
    np.testing.assert_allclose(vals.numpy(), torch.linalg.eigvalsh(grid_laplacian(3)).numpy(), atol=1e-12)
    psi0 = vecs[:, 0]
    assert torch.allclose(psi0.abs(), torch.full((9,), 1 / 3, dtype=F64), atol=1e-15)  # homogeneous


@pytest.mark.parametrize("n", [2, 3, 5, 7])
def test_modes_are_an_orthonormal_eigenbasis(n):
    vals, vecs = laplacian_modes(n)
    L = grid_laplacian(n)
    assert vals.dtype == vecs.dtype == F64 and vecs.shape == (n * n, n * n)
    assert bool((vals[1:] >= vals[:-1]).all())
    assert torch.allclose(vecs.T @ vecs, torch.eye(n * n, dtype=F64), atol=1e-12, rtol=0)
    assert float((L - vecs @ torch.diag(vals) @ vecs.T).abs().max()) < 1e-12
    assert float((L @ vecs - vecs * vals).abs().max()) < 1e-12
    # deterministic
    v2, V2 = laplacian_modes(n)
    assert torch.equal(vals, v2) and torch.equal(vecs, V2)


def test_5x5_eigenvalues_are_sums_of_path_eigenvalues():
    path = [2 - 2 * math.cos(math.pi * m / 5) for m in range(5)]
    sums = sorted(a + b for a in path for b in path)
    vals, _ = laplacian_modes(5)
    np.testing.assert_allclose(vals.numpy(), sums, atol=1e-12)
    np.testing.assert_allclose(vals.numpy(), torch.linalg.eigvalsh(grid_laplacian(5)).numpy(), atol=1e-12)
    distinct, index, mult = eigenvalue_groups(vals)
    assert int(mult.sum()) == 25 and len(distinct) == 14
    assert int(mult[distinct == 4.0]) == 4  # accidental degeneracy λ1+λ4 = λ2+λ3 = 4, grouped


# ------------------------------------------------------------------------------------------------
# filter_spectrum
# ------------------------------------------------------------------------------------------------


def test_homogeneous_filter_projects_only_on_zero():
    w = torch.randn(5, 4, 1, 1, dtype=F64) * torch.ones(3, 3, dtype=F64)  # homogeneous, varying scale
    S, S_norm = filter_spectrum(w)
    assert S.dims == ("eigenvalue",) and S.name == "S" and S_norm.name == "S_norm"
    assert S["eigenvalue"].values.tolist() == [0, 1, 2, 3, 4, 6]
    assert S["multiplicity"].values.tolist() == [1, 2, 1, 2, 2, 1]
    assert float(S_norm.sel(eigenvalue=0)) == pytest.approx(1.0, abs=1e-12)
    assert float(abs(S_norm.sel(eigenvalue=slice(0.5, None))).max()) < 1e-12
    # raw S(0) = <|w|^2>, the Parseval total
    assert float(S.sel(eigenvalue=0)) == pytest.approx(float(w.square().sum((-1, -2)).mean()), rel=1e-12)


@pytest.mark.parametrize("n", [3, 5])
def test_eigenvector_filter_projects_only_on_its_group(n):
    vals, vecs = laplacian_modes(n)
    distinct, index, _ = eigenvalue_groups(vals)
    for k in range(n * n):
        S, S_norm = filter_spectrum(vecs[:, k].reshape(1, 1, n, n))
        expected = np.zeros(len(distinct))
        expected[int(index[k])] = 1.0
        np.testing.assert_allclose(S_norm.values, expected, atol=1e-12)
        np.testing.assert_allclose(S.values, expected, atol=1e-12)  # unit-norm filter


def _random_rotation(m, g):
    q, r = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=F64))
    return q * torch.sign(torch.diagonal(r))


@pytest.mark.parametrize("n", [3, 5])
def test_group_sums_are_basis_independent(n):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 8, n, n, generator=g, dtype=F64) + torch.linspace(0, 1, n * n, dtype=F64).reshape(n, n)
    vals, vecs = laplacian_modes(n)
    distinct, index, mult = eigenvalue_groups(vals)
    rotated = vecs.clone()
    for grp in range(len(distinct)):
        cols = torch.nonzero(index == grp).flatten()
        if len(cols) > 1:
            rotated[:, cols] = vecs[:, cols] @ _random_rotation(len(cols), g)
    assert torch.allclose(rotated.T @ rotated, torch.eye(n * n, dtype=F64), atol=1e-12)
    slices = w.reshape(-1, n * n)
    per_mode_orig = (slices @ vecs).square().mean(0)
    per_mode_rot = (slices @ rotated).square().mean(0)
    assert not torch.allclose(per_mode_orig, per_mode_rot, rtol=1e-3)  # single modes do depend on the basis
    sums_rot = torch.zeros(len(distinct), dtype=F64).index_add_(0, index, per_mode_rot)
    S, _ = filter_spectrum(w)
    np.testing.assert_allclose(S.values, sums_rot.numpy(), rtol=1e-12, atol=1e-14)
    # a symmetry of the grid (transpose, flip) maps eigenspaces to themselves: group sums unchanged
    for w2 in (w.transpose(-1, -2), w.flip(-1), w.flip(-2)):
        np.testing.assert_allclose(filter_spectrum(w2)[0].values, S.values, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("n", [3, 5])
def test_iid_gaussian_filters_have_a_flat_spectrum(n):
    N = 100_000
    g = torch.Generator().manual_seed(1)
    w = 0.3 * torch.randn(N, n, n, generator=g, dtype=F64)
    S, S_norm = filter_spectrum(w)
    flat = S["multiplicity"].values / n**2
    # per mode, (w·ψ)^2 / σ^2 is chi-squared(1): relative std of a mean over N slices is sqrt(2/N);
    # the tolerance is 5 such standard errors (for 3×3, each mode ≈ 1/9 of the energy)
    tol = 5 * math.sqrt(2 / N)
    np.testing.assert_allclose(S_norm.values / flat, 1.0, atol=tol)
    np.testing.assert_allclose(S.values / (0.09 * S["multiplicity"].values), 1.0, atol=tol)
    assert float(S_norm.sum()) == pytest.approx(1.0, abs=1e-12)


def test_filter_spectrum_errors():
    with pytest.raises(ValueError, match="square"):
        filter_spectrum(torch.zeros(4, 3, 3, 5))
    with pytest.raises(TypeError, match="torch.Tensor"):
        filter_spectrum(np.zeros((3, 3)))
    S, S_norm = filter_spectrum(torch.zeros(2, 3, 3))
    assert np.all(S.values == 0) and np.all(np.isnan(S_norm.values))


# ------------------------------------------------------------------------------------------------
# model_spectra
# ------------------------------------------------------------------------------------------------


def test_vgg11_at_init_is_flat():
    torch.manual_seed(0)
    ds = model_spectra(models.build("VGG11"))
    assert ds["layer_name"].values.tolist() == [
        "features.0", "features.3", "features.6", "features.8",
        "features.11", "features.13", "features.16", "features.18",
    ]  # fmt: skip
    assert ds["kernel_size"].values.tolist() == [3] * 8 and ds["depthwise"].values.tolist() == [0] * 8
    assert ds["eigenvalue"].values.tolist() == [0, 1, 2, 3, 4, 6]
    assert ds["S"].dims == ds["S_norm"].dims == ("layer", "eigenvalue")
    n_slices = ds["n_slices"].values
    assert n_slices.tolist() == [64 * 3, 128 * 64, 256 * 128, 256 * 256, 512 * 256, 512 * 512, 512 * 512, 512 * 512]
    # i.i.d. (uniform) init: each mode carries 1/9 of the energy; the homogeneous fraction's
    # relative error is about sqrt(2 / n_slices) (less for uniform entries): 5 standard errors
    frac = ds["homogeneous_fraction"].values
    tol = 5 * np.sqrt(2 / n_slices)
    assert np.all(np.abs(frac * 9 - 1) < tol), frac
    np.testing.assert_allclose(ds["S_norm"].sum("eigenvalue").values, 1.0, atol=1e-12)
    np.testing.assert_allclose(ds["energy"].values, ds["S"].sum("eigenvalue").values, rtol=1e-12)
    assert json.loads(ds.attrs["skipped_layers"]) == {} and ds.attrs["model"] == "VGG"


def test_mixed_kernel_sizes_depthwise_and_skipped_layers(tmp_path):
    torch.manual_seed(0)
    ds = model_spectra(models.build("EfficientNetB0", width_factor=0.25))
    assert set(ds["kernel_size"].values.tolist()) == {3, 5}
    dw = ds["depthwise"].values.astype(bool)
    assert dw.sum() == 16 and not dw[0]  # 16 depthwise convs; the stem is a plain conv
    assert json.loads(ds.attrs["depthwise_layers"]) == ds["layer_name"].values[dw].tolist()
    skipped = json.loads(ds.attrs["skipped_layers"])
    assert skipped and all("1x1" in reason for reason in skipped.values())
    assert "layers.0.se.reduce" in skipped
    # union of eigenvalues with NaN padding: 3×3 layers are NaN at 5×5-only eigenvalues
    assert ds.sizes["eigenvalue"] == len(set([0, 1, 2, 3, 4, 6]) | set(np.round(laplacian_modes(5)[0].numpy(), 12)))
    three = ds.where(ds.kernel_size == 3, drop=True).dropna("eigenvalue", how="all", subset=["S"])
    assert three["eigenvalue"].values.tolist() == [0, 1, 2, 3, 4, 6]
    five = ds.sel(layer=ds.kernel_size == 5)
    assert int(five["multiplicity"].sum("eigenvalue").max()) == 25 and not np.isnan(five["S"].sel(eigenvalue=4)).any()
    assert np.isnan(five["S"].sel(eigenvalue=1.0)).all()
    np.testing.assert_allclose(ds["homogeneous_fraction"].values, ds["S_norm"].sel(eigenvalue=0).values)
    # netCDF-safe attrs and coordinates
    path = tmp_path / "spectra.nc"
    ds.to_netcdf(path, engine="netcdf4")
    back = xr.open_dataset(path, engine="netcdf4")
    xr.testing.assert_allclose(back.load(), ds)
    back.close()


def test_trained_like_smooth_filters_raise_the_homogeneous_fraction():
    """C7's direction: smoothing the filters moves energy to λ = 0 (and low λ)."""
    torch.manual_seed(0)
    net = models.build("LeNet")
    ds0 = model_spectra(net)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.nn.functional.avg_pool2d(m.weight.flatten(0, 1)[:, None], 3, 1, 1).reshape_as(m.weight))
    ds1 = model_spectra(net)
    assert np.all(ds1["homogeneous_fraction"].values > 2 * ds0["homogeneous_fraction"].values)
    low = ds1["S_norm"].sel(eigenvalue=slice(None, 2)).sum("eigenvalue")
    assert np.all(low.values > ds0["S_norm"].sel(eigenvalue=slice(None, 2)).sum("eigenvalue").values)


def test_model_spectra_min_size_and_errors():
    torch.manual_seed(0)
    res = models.build("ResNet18", width_factor=0.125)
    ds = model_spectra(res)
    skipped = json.loads(ds.attrs["skipped_layers"])
    assert sorted(skipped) == ["layer2.0.shortcut.0", "layer3.0.shortcut.0", "layer4.0.shortcut.0"]
    assert ds.sizes["layer"] == 17 and ds.attrs["min_size"] == 3
    ds1 = model_spectra(res, min_size=1)
    assert ds1.sizes["layer"] == 20
    assert np.all(ds1.sel(layer=ds1.kernel_size == 1)["homogeneous_fraction"].values == 1.0)  # trivial 1×1
    with pytest.raises(ValueError, match="min_size=7") as err:
        model_spectra(res, min_size=7)
    assert "smaller than min_size" in str(err.value)
    with pytest.raises(ValueError, match="no conv layers"):
        model_spectra(models.build("DenseNetL2"))
    with pytest.raises(ValueError, match="min_size"):
        model_spectra(res, min_size=0)
