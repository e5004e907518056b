"""Tests of the static explorers and the perturbation grid behind them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffeosens.explorer import grid_explorer, perturbation_grid, precomputed_slider


def test_perturbation_grid_matches_norms_and_is_the_identity_at_zero():
    x = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ds = perturbation_grid(x, deltas=[0.0, 0.5, 1.0], cuts=[3, 5], seed=1)
    assert ds.deformed.shape == (2, 3, 3, 16, 16) and ds.field.shape == (2, 3, 2, 16, 16)
    np.testing.assert_array_equal(ds.deformed.sel(delta=0.0).values, np.broadcast_to(ds.original.values, (2, 3, 16, 16)))
    np.testing.assert_array_equal(ds.noisy.sel(delta=0.0).values, ds.deformed.sel(delta=0.0).values)
    for c in (3, 5):
        for d in (0.5, 1.0):
            s = ds.sel(cut=c, delta=d)
            dn = np.linalg.norm(s.deformed.values - ds.original.values)
            nn_ = np.linalg.norm(s.noisy.values - ds.original.values)
            assert dn == pytest.approx(float(s.perturbation_norm), rel=1e-10)
            assert nn_ == pytest.approx(dn, rel=1e-10)  # matched noise
    # along delta the same field grows linearly (same coefficients, T proportional to delta^2)
    f5, f10 = ds.field.sel(cut=3, delta=0.5).values, ds.field.sel(cut=3, delta=1.0).values
    np.testing.assert_allclose(f10, 2 * f5, rtol=1e-12, atol=1e-14)


class _Square(torch.nn.Module):
    """An elementwise square: its output change depends on the direction of a perturbation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


@pytest.mark.parametrize("interp", ["linear", "gaussian"])
def test_explorer_shows_the_fields_and_noise_that_measure_applies(interp):
    from diffeosens.sensitivity import measure

    P, seed, delta, cut = 5, 3, 1.0, 3
    x = torch.randn(P, 2, 12, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ds = measure(_Square(), x, layers="output", delta=delta, cut=cut, seed=seed, interp=interp,
                 compute_dtype=torch.float64, batch_size=2)
    num_D = num_G = 0.0
    for n in range(P):
        g = perturbation_grid(x[n], deltas=[delta], cuts=[cut], seed=seed, item=n, interp=interp).isel(cut=0, delta=0)
        clean = torch.as_tensor(g.original.values)  # for gaussian: smoothed at T = 0, as measure does
        tx, noisy = torch.as_tensor(g.deformed.values), torch.as_tensor(g.noisy.values)
        num_D += float(((tx * tx) - clean * clean).square().sum()) / P
        num_G += float(((noisy * noisy) - clean * clean).square().sum()) / P
    out = ds.isel(layer=-1).sel(delta=delta)
    assert float(out.num_D) == pytest.approx(num_D, rel=1e-10)
    assert float(out.num_G) == pytest.approx(num_G, rel=1e-10)
    # and a different image index is a different draw
    other = perturbation_grid(x[0], deltas=[delta], cuts=[cut], seed=seed, item=1, interp=interp)
    mine = perturbation_grid(x[0], deltas=[delta], cuts=[cut], seed=seed, item=0, interp=interp)
    assert not np.array_equal(other.field.values, mine.field.values)


def test_grid_explorer_links_widgets_in_javascript(monkeypatch):
    import ipywidgets as w

    links = []
    real_jslink = w.jslink
    monkeypatch.setattr(w, "jslink", lambda *a, **k: links.append(real_jslink(*a, **k)) or links[-1])
    pngs = {(a, d): f"{a}-{d}".encode() for a in ("A", "B") for d in (0.5, 1.0, 2.0)}
    box = grid_explorer(pngs, outer="net", inner="delta", start=("B", 1.0))
    (dropdown, slider), outer = box.children[0].children, box.children[1]
    assert isinstance(dropdown, w.Dropdown) and isinstance(slider, w.SelectionSlider) and isinstance(outer, w.Stack)
    assert outer.selected_index == 1 and all(s.selected_index == 1 for s in outer.children)
    assert [bytes(img.value) for img in outer.children[1].children] == [b"B-0.5", b"B-1.0", b"B-2.0"]
    linked = {(l.source[0].model_id, l.target[0].model_id) for l in links}
    assert (dropdown.model_id, outer.model_id) in linked
    assert all((slider.model_id, s.model_id) in linked for s in outer.children)
    box2 = precomputed_slider({1: b"x", 2: b"y"}, description="d", start=2)
    assert box2.children[1].selected_index == 1
