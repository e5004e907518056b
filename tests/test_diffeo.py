"""Tests of diffeosens.diffeo against slow, explicit references written here."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from diffeosens import diffeo
from diffeosens.diffeo import warping  # internals of the resampler under test
from diffeosens.diffeo import (
    Diffeo,
    OverhangWarning,
    apply_fields,
    deform,
    max_mode_index,
    mode_sum,
    sample_coefficients,
    sample_fields,
    temperature_for,
    temperature_range,
    typical_displacement,
)

# ----------------------------------------------------------------------------------------------
# Slow references
# ----------------------------------------------------------------------------------------------


def modes_reference(cut: float) -> list[tuple[int, int]]:
    """Mode set by brute force from the definition sqrt(i^2 + j^2) < c + 1/2."""
    return [(i, j) for i in range(1, 64) for j in range(1, 64) if math.sqrt(i * i + j * j) < cut + 0.5]


def bilinear_reference(img: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Pull-back bilinear warp with explicit loops: img [C, H, W], field [2, H, W] (dx, dy) px."""
    c, h, w = img.shape
    out = np.zeros_like(img)
    for y in range(h):
        for x in range(w):
            sx = min(max(x - field[0, y, x], 0.0), w - 1.0)
            sy = min(max(y - field[1, y, x], 0.0), h - 1.0)
            x0, y0 = int(math.floor(sx)), int(math.floor(sy))
            x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
            fx, fy = sx - x0, sy - y0
            for ch in range(c):
                out[ch, y, x] = (
                    (1 - fy) * (1 - fx) * img[ch, y0, x0]
                    + (1 - fy) * fx * img[ch, y0, x1]
                    + fy * (1 - fx) * img[ch, y1, x0]
                    + fy * fx * img[ch, y1, x1]
                )
    return out


def nearest_reference(img: np.ndarray, field: np.ndarray) -> np.ndarray:
    c, h, w = img.shape
    out = np.zeros_like(img)
    for y in range(h):
        for x in range(w):
            sx = min(max(x - field[0, y, x], 0.0), w - 1.0)
            sy = min(max(y - field[1, y, x], 0.0), h - 1.0)
            out[:, y, x] = img[:, int(np.rint(sy)), int(np.rint(sx))]
    return out


def gaussian_reference(img: np.ndarray, field: np.ndarray, sigma: float = 0.4715) -> np.ndarray:
    """The reference's n^4 formulation: normalised Gaussian weights over all pixels."""
    c, h, w = img.shape
    out = np.zeros_like(img)
    qy, qx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for y in range(h):
        for x in range(w):
            sx = min(max(x - field[0, y, x], 0.0), w - 1.0)
            sy = min(max(y - field[1, y, x], 0.0), h - 1.0)
            wgt = np.exp(-((qy - sy) ** 2 + (qx - sx) ** 2) / (2 * sigma**2))
            out[:, y, x] = (img * wgt).sum((1, 2)) / wgt.sum()
    return out


def field_reference(coef_u: np.ndarray, coef_v: np.ndarray, h: int, w: int) -> np.ndarray:
    """Explicit sine-series sum of one field in pixels from coefficient matrices [i, j]."""
    u = np.linspace(0, 1, w)
    v = np.linspace(0, 1, h)
    out = np.zeros((2, h, w))
    k = coef_u.shape[0]
    for i in range(1, k + 1):
        for j in range(1, k + 1):
            basis = np.sin(j * np.pi * v)[:, None] * np.sin(i * np.pi * u)[None, :]
            out[0] += coef_u[i - 1, j - 1] * basis
            out[1] += coef_v[i - 1, j - 1] * basis
    out[0] *= w
    out[1] *= h
    return out


# ----------------------------------------------------------------------------------------------
# Mode set and scalars
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut,count,max_r2", [(1, 1, 2), (2, 3, 5), (3, 6, 10), (4, 13, 20), (5, 19, 29), (8, 48, 72), (10, 77, 109), (15, 172, 234)])
def test_mode_set_matches_table(cut, count, max_r2):
    modes = modes_reference(cut)
    assert len(modes) == count
    assert max(i * i + j * j for i, j in modes) == max_r2
    assert max_mode_index(cut) == max(i for i, _ in modes)
    s = sum(1.0 / (i * i + j * j) for i, j in modes)
    assert mode_sum(cut) == pytest.approx(s, rel=1e-14)


def test_temperature_formulas_match_methods_table():
    # methods §2.11 (n, c): T_min, T_max, T(delta=1), delta(T_max)
    table = {
        (32, 2): (4.49e-4, 4.65e-2, 1.79e-3, 5.09),
        (32, 3): (2.83e-4, 1.30e-2, 1.13e-3, 3.40),
        (32, 15): (1.15e-4, 2.12e-4, 4.59e-4, 0.68),
        (224, 5): (3.94e-6, 3.21e-3, 1.58e-5, 14.3),
    }
    for (n, c), (tmin, tmax, t1, dmax) in table.items():
        got_min, got_max = temperature_range(n, c)
        assert got_min == pytest.approx(tmin, rel=5e-3)
        assert got_max == pytest.approx(tmax, rel=5e-3)
        assert temperature_for(1.0, c, n) == pytest.approx(t1, rel=5e-3)
        assert typical_displacement(got_max, c, n) == pytest.approx(dmax, rel=5e-3)
        assert typical_displacement(got_min, c, n) == pytest.approx(0.5, rel=1e-12)
        assert typical_displacement(got_max, c, n) == pytest.approx(n / (math.pi * c), rel=1e-12)


def test_cut_one_is_defined_by_exact_centre_moment():
    # c = 1: one mode (1,1) with variance T/2 per component; at the centre sin^2 = 1, so
    # <|d|^2> = 2 * n^2 * T / 2 = n^2 T and delta = n sqrt(T).
    n, T = 33, 2e-3
    assert typical_displacement(T, 1, n) == pytest.approx(n * math.sqrt(T), rel=1e-12)
    assert temperature_for(n * math.sqrt(T), 1, n) == pytest.approx(T, rel=1e-12)
    tmin, tmax = temperature_range(n, 1)
    assert math.isfinite(tmin) and math.isfinite(tmax) and 0 < tmin < tmax
    assert typical_displacement(tmin, 1, n) == pytest.approx(0.5, rel=1e-12)


def test_exact_option_equals_centre_mode_sum():
    n, T = 32, 1e-3
    for c in (1, 2, 3, 5, 15):
        odd = sum(1.0 / (i * i + j * j) for i, j in modes_reference(c) if i % 2 and j % 2)
        assert typical_displacement(T, c, n, exact=True) == pytest.approx(math.sqrt(2 * n * n * T * odd), rel=1e-12)


def test_scalar_functions_accept_per_image_tensors():
    cuts = torch.tensor([1.0, 3.0, 5.0])
    t = temperature_for(torch.tensor([0.5, 1.0, 2.0]), cuts, 32)
    assert isinstance(t, torch.Tensor) and t.shape == (3,)
    for k in range(3):
        assert float(t[k]) == pytest.approx(temperature_for([0.5, 1.0, 2.0][k], float(cuts[k]), 32), rel=1e-14)


# ----------------------------------------------------------------------------------------------
# Fields
# ----------------------------------------------------------------------------------------------


def test_fields_equal_explicit_sine_sum_of_the_same_coefficients():
    h, w, cut, T = 9, 13, 3, 2e-3
    f = sample_fields(4, (h, w), cut, T, seed=3, dtype=torch.float64)
    # The same standard normals [B, 2, K, K] from the public draw, then the mode amplitudes.
    normals = sample_coefficients(4, (h, w), cut=cut, T=T, seed=3, dtype=torch.float64).normals.numpy()
    amp = np.zeros((3, 3))
    for i, j in modes_reference(cut):
        amp[i - 1, j - 1] = math.sqrt(T / (i * i + j * j))
    for b in range(4):
        ref = field_reference(normals[b, 0] * amp, normals[b, 1] * amp, h, w)
        np.testing.assert_allclose(f[b].numpy(), ref, atol=1e-13)


def test_field_statistics_match_exact_mode_sums():
    n, cut = 33, 3
    T = temperature_for(1.0, cut, n)
    draws = 4000
    f = sample_fields(draws, n, cut, T, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sq = f.square().sum(1)  # |d|^2, [draws, n, n]
    # Exact expectations, written out from the definition (not the library):
    u = np.linspace(0, 1, n)
    modes = modes_reference(cut)
    grid = sum(
        T / (i * i + j * j) * np.mean(np.sin(i * np.pi * u) ** 2) * np.mean(np.sin(j * np.pi * u) ** 2) for i, j in modes
    ) * 2 * n * n
    centre = sum(T / (i * i + j * j) * np.sin(i * np.pi / 2) ** 2 * np.sin(j * np.pi / 2) ** 2 for i, j in modes) * 2 * n * n
    per_grid = sq.mean((1, 2)).numpy()
    per_centre = sq[:, n // 2, n // 2].numpy()
    assert abs(per_grid.mean() - grid) < 3 * per_grid.std() / math.sqrt(draws)
    assert abs(per_centre.mean() - centre) < 3 * per_centre.std() / math.sqrt(draws)
    # ... and the methods table: grid rms 0.82 px and centre rms 1.27 px at delta = 1, c = 3.
    assert math.sqrt(grid) == pytest.approx(0.82, abs=0.01)
    assert math.sqrt(centre) == pytest.approx(1.27, abs=0.01)
    # Border rows and columns never move.
    for border in (f[..., 0, :], f[..., -1, :], f[..., :, 0], f[..., :, -1]):
        assert float(border.abs().max()) < 1e-12


def test_cut_one_centre_rms_equals_delta():
    n, delta = 33, 1.5
    T = temperature_for(delta, 1, n)
    f = sample_fields(20000, n, 1, T, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c = f[:, :, n // 2, n // 2].square().sum(1)
    assert float(c.mean()) == pytest.approx(delta**2, abs=3 * float(c.std()) / math.sqrt(20000))


def _fold_free_fraction(fields: torch.Tensor) -> float:
    """Fraction of fields whose map s -> s - d(s) has a positive Jacobian at every grid point."""
    dxx = torch.gradient(fields[:, 0], dim=2)[0]
    dxy = torch.gradient(fields[:, 0], dim=1)[0]
    dyx = torch.gradient(fields[:, 1], dim=2)[0]
    dyy = torch.gradient(fields[:, 1], dim=1)[0]
    det = (1 - dxx) * (1 - dyy) - dxy * dyx
    return float((det > 0).flatten(1).all(1).double().mean())


def test_jacobian_positive_in_the_diffeomorphic_regime():
    # The reference's T_max is a typical-value bound, not a guarantee: at T = T_max about a third
    # of the c = 3 fields fold somewhere (measured, see temperature_range). Up to 0.3 T_max, and
    # at the papers' setting delta = 1 (T = 0.087 T_max at n = 32), >= 99 % of the draws are
    # fold-free on the grid.
    n, cut = 32, 3
    _, t_max = temperature_range(n, cut)
    g = torch.Generator().manual_seed(0)
    for T in (temperature_for(1.0, cut, n), 0.3 * t_max):
        assert _fold_free_fraction(sample_fields(3000, n, cut, T, generator=g, dtype=torch.float64)) >= 0.99
    at_max = _fold_free_fraction(sample_fields(3000, n, cut, t_max, generator=g, dtype=torch.float64))
    assert 0.5 < at_max < 0.8  # documented value ~0.64


def test_fields_are_independent_across_the_batch():
    f = sample_fields(6000, 17, 3, 1e-3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    centre = f[:, 0, 8, 8].numpy()
    a, b = centre[0::2], centre[1::2]
    r = np.corrcoef(a, b)[0, 1]
    assert abs(r) < 3 / math.sqrt(len(a))
    # per-image temperatures scale each field on its own
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    f1 = sample_fields(3, 16, 3, 1e-3, generator=g1, dtype=torch.float64)
    f2 = sample_fields(3, 16, 3, torch.tensor([0.0, 1e-3, 4e-3], dtype=torch.float64), generator=g2, dtype=torch.float64)
    assert float(f2[0].abs().max()) == 0.0
    torch.testing.assert_close(f2[1], f1[1], rtol=1e-14, atol=0)
    torch.testing.assert_close(f2[2], 2 * f1[2], rtol=1e-14, atol=0)


def test_per_image_cutoffs_use_their_own_mode_sets():
    f = sample_fields(2, 16, torch.tensor([1.0, 3.0]), 1e-3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # cut = 1 keeps only sin(pi u) sin(pi v): the field is proportional to that product.
    u = torch.linspace(0, 1, 16, dtype=torch.float64)
    basis = torch.sin(math.pi * u)[:, None] * torch.sin(math.pi * u)[None, :]
    ratio = f[0, 0, 1:-1, 1:-1] / basis[1:-1, 1:-1]
    assert float(ratio.std()) < 1e-10 * float(ratio.abs().mean())
    ratio3 = f[1, 0, 1:-1, 1:-1] / basis[1:-1, 1:-1]
    assert float(ratio3.std()) > 1e-3


# ----------------------------------------------------------------------------------------------
# deform
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interp", ["linear", "nearest"])
def test_zero_temperature_is_the_identity(interp):
    x = torch.rand(5, 3, 32, 32)
    assert torch.equal(deform(x, T=0.0, interp=interp), x)
    assert torch.equal(deform(x, delta=0.0, cut=5, interp=interp), x)
    y = deform(x, T=torch.tensor([0.0, 1e-3, 0.0, 1e-3, 0.0]), interp=interp, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y[0::2], x[0::2]) and not torch.equal(y[1], x[1])


@pytest.mark.filterwarnings("ignore::diffeosens.diffeo.OverhangWarning")  # large moves on purpose
@pytest.mark.parametrize("interp,reference", [("linear", bilinear_reference), ("nearest", nearest_reference), ("gaussian", gaussian_reference)])
@pytest.mark.parametrize("size", [(12, 12), (10, 15)])
def test_deform_matches_slow_reference_on_the_same_fields(interp, reference, size):
    h, w = size
    x = torch.rand(3, 2, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    # a large displacement exercises the border clamping
    out, fields = deform(x, delta=2.5, cut=3, interp=interp, generator=g, return_fields=True)
    assert out.shape == x.shape and fields.shape == (3, 2, h, w)
    for b in range(3):
        ref = reference(x[b].numpy(), fields[b].numpy())
        np.testing.assert_allclose(out[b].numpy(), ref, atol=1e-10, rtol=0)
    np.testing.assert_allclose(apply_fields(x, fields, interp=interp).numpy(), out.numpy(), atol=1e-10, rtol=0)


@pytest.mark.filterwarnings("ignore::diffeosens.diffeo.OverhangWarning")
def test_gaussian_window_equals_all_pixel_sum_at_the_border_and_far_moves():
    h, w = 14, 11
    x = torch.rand(2, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fields = sample_fields(2, (h, w), 3, temperature_for(3.0, 3, (h, w)), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sy, sx = warping._source_pixels(fields)
    window = warping._gaussian_window(x, sy, sx)
    for b in range(2):
        ref = gaussian_reference(x[b].numpy(), fields[b].numpy())
        np.testing.assert_allclose(window[b].numpy(), ref, atol=1e-12)
    # float32 agrees to float32 precision
    w32 = warping._gaussian_window(x.float(), sy.float(), sx.float())
    torch.testing.assert_close(w32.double(), window, atol=2e-6, rtol=0)


def test_gaussian_at_zero_temperature_is_a_normalised_blur():
    x = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(deform(x, T=0.0, interp="gaussian"), x)  # weights are normalised
    y = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    y[0, 0, 4, 4] = 1
    blurred = deform(y, T=0.0, interp="gaussian")
    assert float(blurred[0, 0, 4, 4]) < 1 and float(blurred[0, 0, 4, 5]) > 0


def test_leading_dimensions_each_get_their_own_field():
    x = torch.rand(2, 3, 1, 16, 16).expand(2, 3, 1, 16, 16).clone()
    x[:] = x[0, 0]  # six identical images
    y, f = deform(x, delta=1.0, generator=torch.Generator().manual_seed(0), return_fields=True)
    assert y.shape == x.shape and f.shape == (2, 3, 2, 16, 16)
    flat = y.reshape(6, -1)
    assert all(not torch.equal(flat[0], flat[k]) for k in range(1, 6))
    # a single image [C, H, W] works too
    assert deform(x[0, 0], delta=1.0).shape == (1, 16, 16)


def test_same_seed_same_output_other_seed_different():
    x = torch.rand(4, 3, 32, 32)
    a = deform(x, delta=1.0, generator=torch.Generator().manual_seed(7))
    b = deform(x, delta=1.0, generator=torch.Generator().manual_seed(7))
    c = deform(x, delta=1.0, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_float32_matches_float64_and_dtypes_are_kept():
    x64 = torch.rand(4, 3, 32, 32, dtype=torch.float64)
    y64, f64 = deform(x64, delta=1.0, generator=torch.Generator().manual_seed(0), return_fields=True)
    y32, f32 = deform(x64.float(), delta=1.0, generator=torch.Generator().manual_seed(0), return_fields=True)
    assert y64.dtype == torch.float64 and y32.dtype == torch.float32 and f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), f64, atol=1e-5, rtol=0)
    torch.testing.assert_close(y32.double(), y64, atol=1e-4, rtol=0)


def test_chunking_does_not_change_the_result(monkeypatch):
    x = torch.rand(40, 3, 16, 16, dtype=torch.float64)
    full = deform(x, delta=1.0, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(warping, "_CHUNK_PIXELS", 3 * 16 * 16)
    chunked = deform(x, delta=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(chunked, full, atol=1e-14, rtol=0)


# ----------------------------------------------------------------------------------------------
# Diffeo transform
# ----------------------------------------------------------------------------------------------


def test_diffeo_transform_draws_per_image_parameters():
    t = Diffeo(cut_range=(2, 6), generator=torch.Generator().manual_seed(0))
    x = torch.rand(64, 3, 32, 32)
    params = t.make_params([x])
    cut, T = params["coefficients"].cut, params["coefficients"].T
    assert cut.shape == (64,) and T.shape == (64,)
    assert set(cut.tolist()) <= {2.0, 3.0, 4.0, 5.0, 6.0} and len(set(cut.tolist())) >= 4
    tmin, tmax = temperature_range(32, cut)
    assert bool(((T >= tmin) & (T <= tmax)).all())
    y = t.transform(x, params)
    assert y.shape == x.shape and not torch.equal(y, x)


def test_diffeo_transform_is_reproducible_and_keeps_tv_tensors():
    from torchvision import tv_tensors

    x = tv_tensors.Image(torch.rand(3, 32, 32))
    a = Diffeo(generator=torch.Generator().manual_seed(1))(x)
    b = Diffeo(generator=torch.Generator().manual_seed(1))(x)
    assert isinstance(a, tv_tensors.Image) and torch.equal(a, b)


def test_diffeo_transform_rejects_bad_arguments():
    with pytest.raises(ValueError, match="cut_range"):
        Diffeo(cut_range=(0, 3))
    with pytest.raises(ValueError, match="interp"):
        Diffeo(interp="cubic")
    with pytest.raises(ValueError, match="empty"):
        Diffeo(cut_range=(30, 30))(torch.rand(3, 32, 32))


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def test_bad_images_raise_clear_errors():
    with pytest.raises(ValueError, match=r"images must have shape \(\.\.\., C, H, W\)"):
        deform(torch.rand(32, 32), delta=1.0)
    with pytest.raises(TypeError, match="images must have a floating-point dtype"):
        deform(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), delta=1.0)
    bad = torch.rand(1, 3, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="images contains 1 non-finite"):
        deform(bad, delta=1.0)
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        deform(np.zeros((1, 3, 8, 8)), delta=1.0)
    with pytest.raises(ValueError, match="at least 2x2"):
        deform(torch.rand(1, 3, 1, 8), delta=1.0)


def test_bad_parameters_raise_clear_errors():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="T must be >= 0"):
        deform(x, T=-1e-3)
    with pytest.raises(ValueError, match="delta must be >= 0"):
        deform(x, delta=-1.0)
    with pytest.raises(ValueError, match="cut must be >= 1"):
        deform(x, delta=1.0, cut=0.5)
    with pytest.raises(ValueError, match="exactly one of T"):
        deform(x, T=1e-3, delta=1.0)
    with pytest.raises(ValueError, match="exactly one of T"):
        deform(x)
    with pytest.raises(ValueError, match="unknown interp 'cubic'"):
        deform(x, delta=1.0, interp="cubic")
    with pytest.raises(ValueError, match="T must be finite"):
        deform(x, T=float("inf"))
    with pytest.raises(ValueError, match="one value per image"):
        deform(x, T=torch.tensor([1e-3, 1e-3, 1e-3]))
    with pytest.raises(ValueError, match="fields must have shape"):
        apply_fields(x, torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="cut must be >= 1"):
        temperature_range(32, 0)


def test_temperature_above_t_max_warns():
    _, t_max = temperature_range(16, 3)
    with pytest.warns(OverhangWarning, match="exceeds T_max"):
        deform(torch.rand(1, 1, 16, 16), T=2 * t_max, cut=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deform(torch.rand(1, 1, 16, 16), T=t_max, cut=3)


def test_empty_batch_is_returned_unchanged():
    x = torch.zeros(0, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    out, fields = deform(x, delta=1.0, generator=g, return_fields=True)
    assert out.shape == x.shape and fields.shape == (0, 2, 16, 16)
    assert torch.equal(g.get_state(), state)  # nothing was drawn
    with pytest.raises(ValueError):
        deform(x, delta=-1.0)  # arguments are still checked
    assert deform(torch.zeros(2, 0, 3, 16, 16), delta=1.0).shape == (2, 0, 3, 16, 16)


# ----------------------------------------------------------------------------------------------
# Draw -> apply split and the counter-based stream
# ----------------------------------------------------------------------------------------------


def test_deform_is_sample_coefficients_then_warp():
    x = torch.rand(6, 3, 16, 20, dtype=torch.float64)
    coef = sample_coefficients(6, (16, 20), delta=1.5, cut=3, seed=11, dtype=torch.float64)
    drawn_then_applied = diffeo.warp(x, coef)
    assert torch.equal(deform(x, delta=1.5, cut=3, seed=11), drawn_then_applied)
    assert torch.equal(deform(x, coefficients=coef), drawn_then_applied)
    out, fields = deform(x, coefficients=coef, return_fields=True)
    torch.testing.assert_close(fields, diffeo.fields_from_coefficients(coef, (16, 20)), rtol=0, atol=0)
    # the warp is the pull-back of those fields
    torch.testing.assert_close(apply_fields(x, fields), out, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="coefficients already fix"):
        deform(x, coefficients=coef, delta=1.0)
    with pytest.raises(ValueError, match="6 field.*5 image"):
        deform(x[:5], coefficients=coef)
    with pytest.raises(ValueError, match="seed or generator"):
        sample_coefficients(2, 16, delta=1.0, seed=0, generator=torch.Generator())


def test_image_n_gets_item_n_of_the_stream_whatever_the_batch():
    whole = sample_coefficients(150, 32, delta=1.0, seed=5, dtype=torch.float64)
    part = sample_coefficients(20, 32, delta=1.0, seed=5, start=60, dtype=torch.float64)
    assert torch.equal(part.normals, whole.normals[60:80])  # crosses a block boundary (64)
    other_draw = sample_coefficients(20, 32, delta=1.0, seed=5, start=60, draw=1, dtype=torch.float64)
    assert not torch.equal(other_draw.normals, part.normals)
    f32 = sample_coefficients(20, 32, delta=1.0, seed=5, start=60, dtype=torch.float32)
    assert torch.equal(f32.normals, part.normals.float())  # drawn in float64, then cast
    # deform applies item n to image n: a slice of the batch, deformed from `start`, agrees
    x = torch.rand(150, 1, 32, 32, dtype=torch.float64)
    sub = diffeo.warp(x[60:80], part)
    torch.testing.assert_close(sub, deform(x, delta=1.0, seed=5)[60:80], rtol=0, atol=0)


def test_with_temperature_rescales_the_same_draw():
    coef = sample_coefficients(3, 24, delta=1.0, cut=3, seed=2, dtype=torch.float64)
    f1 = diffeo.fields_from_coefficients(coef, 24)
    f2 = diffeo.fields_from_coefficients(coef.with_temperature(delta=2.0, size=24), 24)
    torch.testing.assert_close(f2, 2.0 * f1, rtol=1e-13, atol=0)  # delta is linear in sqrt(T)
    assert torch.equal(coef.with_temperature(T=0.0).T, torch.zeros(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="image size"):
        coef.with_temperature(delta=1.0)


def test_overhang_warning_points_at_the_callers_line():
    _, t_max = temperature_range(16, 3)
    for call in (lambda: deform(torch.rand(1, 1, 16, 16), T=2 * t_max, cut=3),
                 lambda: sample_coefficients(1, 16, T=2 * t_max, seed=0),
                 lambda: sample_fields(1, 16, 3, 2 * t_max, seed=0)):
        with pytest.warns(OverhangWarning) as record:
            call()
        assert record[0].filename == __file__
