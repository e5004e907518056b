"""Tests of diffeosens.noise."""

from __future__ import annotations

import math

import pytest
import torch

from diffeosens import deform, matched_noise


def _pair(b=64, shape=(3, 16, 16), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, *shape, generator=g, dtype=dtype)
    return x, deform(x, delta=1.0, generator=g) if len(shape) == 3 else x + 0.3 * torch.randn(b, *shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matched_norms_per_sample(dtype):
    x, y = _pair(dtype=dtype)
    eta = matched_noise(x, y, generator=torch.Generator().manual_seed(1))
    assert eta.shape == x.shape and eta.dtype == dtype
    target = (y - x).double().flatten(1).norm(dim=1)
    got = eta.double().flatten(1).norm(dim=1)
    assert float(((got - target).abs() / target).max()) < 1e-6


def test_noise_is_isotropic_gaussian():
    x = torch.zeros(2000, 1, 8, 8)
    eta = matched_noise(x, x + 1.0, generator=torch.Generator().manual_seed(0))  # norm 8 per sample
    vals = eta.flatten()
    assert abs(float(vals.mean())) < 4 * 1.0 / math.sqrt(vals.numel())  # per-entry variance 64/64 = 1
    assert float(vals.var()) == pytest.approx(1.0, rel=0.02)
    # directions are uniform: the mean of a fixed coordinate of eta/|eta| vanishes
    unit = eta.flatten(1) / eta.flatten(1).norm(dim=1, keepdim=True)
    assert float(unit[:, 0].mean().abs()) < 4 / math.sqrt(64 * 2000)


def test_zero_perturbation_gives_zero_noise_and_same_seed_same_noise():
    x, y = _pair()
    assert float(matched_noise(x, x, generator=torch.Generator().manual_seed(0)).abs().max()) == 0.0
    a = matched_noise(x, y, generator=torch.Generator().manual_seed(3))
    b = matched_noise(x, y, generator=torch.Generator().manual_seed(3))
    c = matched_noise(x, y, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rectified_variant_is_relu_of_the_same_draw():
    x, y = _pair()
    eta = matched_noise(x, y, generator=torch.Generator().manual_seed(9))
    rect = matched_noise(x, y, generator=torch.Generator().manual_seed(9), rectify=True)
    assert torch.equal(rect, torch.relu(eta))


def test_batch_match_and_rectified_moments_follow_the_documented_formulas():
    # 1D signals [P, 1, N]: sigma^2 = sum_n |y_n - x_n|^2 / (P N); relu(eta) has mean sigma/sqrt(2 pi)
    # and second moment sigma^2 / 2 per entry.
    p, n = 4000, 128
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(p, 1, n, dtype=torch.float64)
    y = x.clone()
    y[:, 0, :2] = torch.randn(p, 2, generator=g, dtype=torch.float64) * 3
    sigma = math.sqrt(float((y - x).square().sum()) / (p * n))
    eta = matched_noise(x, y, generator=g, match="batch", sample_dims=2)
    assert float(eta.std()) == pytest.approx(sigma, rel=0.01)
    rect = matched_noise(x, y, generator=g, match="batch", rectify=True, sample_dims=2)
    assert float(rect.mean()) == pytest.approx(sigma / math.sqrt(2 * math.pi), rel=0.01)
    assert float(rect.square().mean()) == pytest.approx(sigma**2 / 2, rel=0.01)
    assert float(rect.min()) >= 0.0


def test_sample_dims_defines_the_sample():
    x = torch.zeros(5, 2, 3, 7)
    y = torch.ones(5, 2, 3, 7)
    eta = matched_noise(x, y, sample_dims=2, generator=torch.Generator().manual_seed(0))
    norms = eta.flatten(2).norm(dim=2)  # per [3, 7] sample, 10 samples
    torch.testing.assert_close(norms, torch.full((5, 2), math.sqrt(21.0)), rtol=1e-6, atol=0)


def test_bad_input_raises_clear_errors():
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="same shape"):
        matched_noise(x, torch.zeros(2, 3, 4, 5))
    with pytest.raises(TypeError, match="perturbed must have a floating-point dtype"):
        matched_noise(x, torch.zeros(2, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="unknown match 'median'"):
        matched_noise(x, x, match="median")
    with pytest.raises(ValueError, match="sample_dims"):
        matched_noise(x, x, sample_dims=0)
    with pytest.raises(ValueError, match=r"clean must have shape"):
        matched_noise(torch.zeros(4, 4), torch.zeros(4, 4))
    bad = x.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="perturbed contains 1 non-finite"):
        matched_noise(x, bad)


def test_empty_batch_gives_empty_noise():
    from diffeosens import matched_noise

    x = torch.zeros(0, 3, 8, 8)
    eta = matched_noise(x, x, generator=torch.Generator().manual_seed(0))
    assert eta.shape == (0, 3, 8, 8) and eta.dtype == x.dtype
    assert matched_noise(x, x, match="batch").shape == (0, 3, 8, 8)
    with pytest.raises(ValueError, match="shape"):
        matched_noise(x, torch.zeros(1, 3, 8, 8))
