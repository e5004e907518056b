r"""The paper's claims C1–C10 (methods §11), checked against the results.

Each ``check_c*`` function takes the combined dataset(s) of the experiments it needs (as returned
by :func:`diffeosens.results.open_experiment`, or ``None`` when that experiment has not been run
at this profile) and returns a :class:`Verdict`: the quantity, our value with its uncertainty,
the profile and seeds it came from, and ``"reproduced"``, ``"not reproduced"`` or
``"not run"``. Every threshold is stated in the docstring of its check and in the verdict's
``criterion``. :func:`evaluate` runs them all for one profile; the book's claims page only prints
its table.

Seeds are aggregated as in the NeurIPS-2021 paper (open choice O9): geometric mean of D, G, R
(arithmetic mean of the test error); the spread of log-values over seeds is kept when there are
several seeds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .results import geomean, output_layer

__all__ = ["CLAIMS", "Verdict", "evaluate", "verdict_table"]

REPRODUCED, NOT_REPRODUCED, NOT_RUN = "reproduced", "not reproduced", "not run"

#: Claim id -> (short statement, experiments it needs).
CLAIMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "C1": ("At initialisation, deformations and matched noise are about equally visible: R_k ≈ 1.", ("layers", "architectures")),
    "C2": ("After training, test error follows ε ≈ 0.2·√R_f across architectures; D_f alone correlates weakly.", ("architectures",)),
    "C3": ("Training makes representations progressively less sensitive to diffeomorphisms with depth.", ("layers",)),
    "C4": ("Training makes representations more sensitive to white noise.", ("layers",)),
    "C5": ("C2–C4 persist when the training images carry Gaussian noise.", ("noisy",)),
    "C6": ("Spatial pooling acts in the first half of the net, channel pooling in the second.", ("pooling",)),
    "C7": ("Training makes the filters spatially smooth (learned spatial pooling).", ("spectra",)),
    "C8": ("The 2D scale-detection task reproduces the phenomenology, with little effect of shuffling.", ("scale2d",)),
    "C9": ("In the 1D model training learns pooling: D_k ∝ 2^-k, G_k ∝ 2^k with strides.", ("scale1d",)),
    "C10": ("Noise sensitivity comes from ReLU rectification plus pooling; odd activations remove it.", ("theory", "activations")),
}


@dataclass
class Verdict:
    claim: str
    statement: str
    quantity: str
    value: float = math.nan
    uncertainty: float = math.nan
    verdict: str = NOT_RUN
    criterion: str = ""
    detail: str = ""
    profile: str = ""
    seeds: str = ""
    sources: tuple[str, ...] = ()
    numbers: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _at(ds: xr.Dataset, **sel: Any) -> xr.Dataset:
    """Select by the given values where the dimension exists (e.g. delta=1.0)."""
    ok = {k: v for k, v in sel.items() if k in ds.dims}
    for k, v in list(ok.items()):
        if v not in ds[k].values:
            ok[k] = ds[k].values[np.argmin(np.abs(np.asarray(ds[k].values, float) - float(v)))] if np.issubdtype(ds[k].dtype, np.number) else ds[k].values[0]
    return ds.sel(ok)


def _seeds(ds: xr.Dataset) -> str:
    return ",".join(str(s) for s in ds.seed.values) if "seed" in ds.dims else "-"


def _slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """OLS slope of y on x, and its standard error (NaN with fewer than 3 finite points)."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0:
        return math.nan, math.nan
    xm = x - x.mean()
    b = float((xm * (y - y.mean())).sum() / (xm**2).sum())
    resid = y - y.mean() - b * xm
    se = float(np.sqrt((resid**2).sum() / (len(x) - 2) / (xm**2).sum()))
    return b, se


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return math.nan
    ra = pd.Series(a[ok]).rank().to_numpy()
    rb = pd.Series(b[ok]).rank().to_numpy()
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return math.nan  # a constant variable has no rank correlation
    return float(np.corrcoef(ra, rb)[0, 1])


def _layer_slope(da: xr.DataArray) -> tuple[float, float]:
    """Slope of log10(value) against relative depth over the probe points of one network."""
    vals = da.values.astype(float)
    depth = np.asarray(da["relative_depth"].values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _slope(depth, np.log10(vals))


def _frac(n_ok: int, n: int) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = n_ok / n
    return p, math.sqrt(max(p * (1 - p), 1.0 / n) / n)


def _archs(ds: xr.Dataset) -> list[str]:
    return [str(a) for a in ds.arch.values] if "arch" in ds.dims else ["net"]


def _per_arch(ds: xr.Dataset, arch: str) -> xr.Dataset:
    return ds.sel(arch=arch) if "arch" in ds.dims else ds


# ------------------------------------------------------------------------------------------------
# the checks
# ------------------------------------------------------------------------------------------------


def check_c1(layers: xr.Dataset | None, architectures: xr.Dataset | None = None) -> Verdict:
    """C1: at initialisation :math:`0.5 < R_k < 2` at (at least) 90 % of the probe points.

    Value: that fraction over every network and probe point at :math:`\\delta = 1` (binomial
    standard error).
    """
    v = Verdict("C1", CLAIMS["C1"][0], "fraction of init R_k in (0.5, 2) over all nets and probe points",
                criterion="reproduced if >= 0.9")
    rs = []
    for ds, name in ((layers, "layers"), (architectures, "architectures")):
        if ds is None:
            continue
        r = geomean(_at(ds, delta=1.0, state="init").R)
        rs.append(r.values.ravel())
        v.sources += (name,)
        v.seeds = v.seeds or _seeds(ds)
    if not rs:
        return v
    r = np.concatenate(rs)
    r = r[np.isfinite(r)]
    ok = int(((r > 0.5) & (r < 2)).sum())
    v.value, v.uncertainty = _frac(ok, len(r))
    v.verdict = REPRODUCED if v.value >= 0.9 else NOT_REPRODUCED
    v.detail = f"{ok} of {len(r)} probe points; median init R_k = {np.median(r):.3g} (range {r.min():.3g}–{r.max():.3g})"
    v.numbers = {"median_R_init": float(np.median(r)), "n": len(r)}
    return v


def check_c2(architectures: xr.Dataset | None) -> Verdict:
    """C2: trained nets: log–log fit :math:`\\epsilon_t = A R_f^b`; the paper: :math:`b \\approx \\frac12`, :math:`A \\approx 0.2`.

    Reproduced if at least 4 networks, :math:`b > 2\\,\\mathrm{se}(b)`, :math:`b` within
    :math:`[0.25, 0.75]` or :math:`0.5` within :math:`b \\pm 2\\,\\mathrm{se}`, and the Spearman
    correlation of :math:`(\\epsilon_t, R_f)` positive and at least that of :math:`(\\epsilon_t, D_f)`.
    Value: the exponent :math:`b` with its OLS standard error.
    """
    v = Verdict("C2", CLAIMS["C2"][0], "exponent b of ε_t = A·R_f^b across trained nets",
                criterion="reproduced if >= 4 nets, b > 2 se, b in [0.25, 0.75] (or 0.5 within 2 se), Spearman(ε,R_f) > 0 and >= Spearman(ε,D_f)")
    if architectures is None:
        return v
    ds = output_layer(_at(architectures, delta=1.0, state="trained"))
    v.sources, v.seeds = ("architectures",), _seeds(architectures)
    err = ds.test_error.mean("seed") if "seed" in ds.test_error.dims else ds.test_error
    rf, df = geomean(ds.R), geomean(ds.D)
    e, r, d = (np.asarray(x.values, float).ravel() for x in (err, rf, df))
    ok = np.isfinite(e) & np.isfinite(r) & (e > 0) & (r > 0)
    n = int(ok.sum())
    b, se = _slope(np.log10(r[ok]), np.log10(e[ok])) if n >= 3 else (math.nan, math.nan)
    a = float(np.mean(np.log10(e[ok]) - b * np.log10(r[ok]))) if n >= 3 else math.nan
    rho_r, rho_d = _spearman(e, r), _spearman(e, d)
    v.value, v.uncertainty = b, se
    v.numbers = {"prefactor": 10**a if np.isfinite(a) else math.nan, "spearman_R": rho_r, "spearman_D": rho_d, "n_nets": n,
                 "test_error": dict(zip(_archs(ds), e.tolist())), "R_f": dict(zip(_archs(ds), r.tolist()))}
    v.detail = (f"{n} nets; fit ε = {10**a:.3g}·R_f^{b:.2f} (se {se:.2f}); Spearman ρ(ε,R_f) = {rho_r:.2f}, "
                f"ρ(ε,D_f) = {rho_d:.2f}")
    if n < 4:
        v.verdict, v.detail = NOT_RUN, v.detail + " — fewer than 4 networks: no fit"
        return v
    good_b = b > 2 * se and (0.25 <= b <= 0.75 or abs(b - 0.5) <= 2 * se)
    v.verdict = REPRODUCED if good_b and rho_r > 0 and not rho_d > rho_r else NOT_REPRODUCED
    return v


def _trained_vs_init_slopes(layers: xr.Dataset, var: str) -> dict[str, tuple[float, float]]:
    out = {}
    ds = _at(layers, delta=1.0)
    for arch in _archs(ds):
        a = _per_arch(ds, arch)
        s_init, _ = _layer_slope(geomean(a[var].sel(state="init")))
        s_tr, _ = _layer_slope(geomean(a[var].sel(state="trained")))
        out[arch] = (s_init, s_tr)
    return out


def check_c3(layers: xr.Dataset | None) -> Verdict:
    """C3: the slope of :math:`\\log_{10} D_k` against relative depth is more negative after training.

    Value: mean over networks of (trained slope − init slope) with its standard error over
    networks. Reproduced if that mean is negative and the trained slope is below the init slope
    for at least 75 % of the networks.
    """
    v = Verdict("C3", CLAIMS["C3"][0], "trained − init slope of log10 D_k vs relative depth (mean over nets)",
                criterion="reproduced if mean < 0 and trained slope < init slope for >= 75 % of nets")
    if layers is None:
        return v
    v.sources, v.seeds = ("layers",), _seeds(layers)
    slopes = _trained_vs_init_slopes(layers, "D")
    diffs = np.array([t - i for i, t in slopes.values()])
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) == 0:
        return v
    v.value = float(diffs.mean())
    v.uncertainty = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else math.nan
    frac = float((diffs < 0).mean())
    v.verdict = REPRODUCED if v.value < 0 and frac >= 0.75 else NOT_REPRODUCED
    v.detail = "; ".join(f"{a}: {i:+.2f} → {t:+.2f}" for a, (i, t) in slopes.items()) + " (init → trained slope per unit depth)"
    v.numbers = {"slopes": {a: {"init": i, "trained": t} for a, (i, t) in slopes.items()}}
    return v


def check_c4(layers: xr.Dataset | None) -> Verdict:
    """C4: :math:`G_\\text{out}` grows with training and trained :math:`G_k` grows with depth.

    Value: median over networks of :math:`\\log_{10}(G_\\text{out}^\\text{trained}/G_\\text{out}^\\text{init})`.
    Reproduced if, for at least 75 % of the networks, that log-ratio is positive and the slope of
    trained :math:`\\log G_k` against depth is positive.
    """
    v = Verdict("C4", CLAIMS["C4"][0], "median log10(G_out trained / G_out init) over nets",
                criterion="reproduced if for >= 75 % of nets G_out grows with training and trained G_k grows with depth")
    if layers is None:
        return v
    v.sources, v.seeds = ("layers",), _seeds(layers)
    ds = _at(layers, delta=1.0)
    out = output_layer(ds)
    ratios, ok = {}, []
    slopes = _trained_vs_init_slopes(layers, "G")
    for arch in _archs(ds):
        g = geomean(_per_arch(out, arch).G)
        lr = float(np.log10(g.sel(state="trained") / g.sel(state="init")))
        ratios[arch] = lr
        ok.append(lr > 0 and slopes[arch][1] > 0)
    vals = np.array(list(ratios.values()))
    v.value = float(np.median(vals))
    v.uncertainty = float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else math.nan
    v.verdict = REPRODUCED if np.mean(ok) >= 0.75 else NOT_REPRODUCED
    v.detail = "; ".join(f"{a}: log10 ratio {r:+.2f}, trained G slope {slopes[a][1]:+.2f}" for a, r in ratios.items())
    v.numbers = {"log10_ratio": ratios}
    return v


def check_c5(noisy: xr.Dataset | None, *, chance_factor: float = 2.0) -> Verdict:
    """C5: at every training-noise level that still trains (test accuracy above twice chance),
    :math:`R_f < 0.5` and :math:`G_f^\\text{trained} > G_f^\\text{init}`.

    Value: the fraction of such levels (all networks) where both hold.
    """
    v = Verdict("C5", CLAIMS["C5"][0], "fraction of trainable noise levels with R_f < 0.5 and G_f(trained) > G_f(init)",
                criterion="reproduced if the fraction is 1 over at least 3 trainable levels")
    if noisy is None:
        return v
    v.sources, v.seeds = ("noisy",), _seeds(noisy)
    ds = output_layer(_at(noisy, delta=1.0))
    rows, ok = [], []
    for arch in _archs(ds):
        a = _per_arch(ds, arch)
        for level in a.train_noise.values:
            s = a.sel(train_noise=level)
            acc = 1 - float(s.test_error.sel(state="trained").mean())
            r = float(geomean(s.R.sel(state="trained")))
            g_tr, g_in = float(geomean(s.G.sel(state="trained"))), float(geomean(s.G.sel(state="init")))
            trainable = acc > chance_factor * 0.1
            rows.append(f"{arch} σ={level:g}: acc {acc:.2f}, R_f {r:.2g}, G_f {g_in:.2g}→{g_tr:.2g}")
            if trainable:
                ok.append(r < 0.5 and g_tr > g_in)
    v.value, v.uncertainty = _frac(int(sum(ok)), len(ok))
    v.detail = "; ".join(rows)
    v.verdict = NOT_RUN if len(ok) < 3 else (REPRODUCED if all(ok) else NOT_REPRODUCED)
    if len(ok) < 3:
        v.detail += " — fewer than 3 trainable levels"
    return v


def check_c6(pooling: xr.Dataset | None, *, threshold: float = 2.0) -> Verdict:
    """C6: :math:`D_k^\\text{shuf}/D_k^\\text{orig}` stays near 1 in the first half of the net and exceeds
    ``threshold`` in the second half.

    For each network, the mean :math:`\\log_{10}` ratio over the second half of the probe points
    (relative depth > 0.5) minus that over the first half. Value: the mean of that difference over
    networks. Reproduced if, for at least half of the networks, the second-half mean ratio exceeds
    ``threshold`` and the first-half mean ratio is below it.
    """
    v = Verdict("C6", CLAIMS["C6"][0], "mean over nets of (second-half − first-half) mean log10(D_shuf/D_orig)",
                criterion=f"reproduced if for >= half of the nets: second-half ratio > {threshold:g} and first-half ratio < {threshold:g}")
    if pooling is None:
        return v
    v.sources, v.seeds = ("pooling",), _seeds(pooling)
    ds = pooling
    diffs, ok, rows = [], [], []
    for arch in _archs(ds):
        a = _per_arch(ds, arch)
        d = a.D
        d = geomean(d, "shuffle")
        orig, shuf = geomean(d.sel(variant="original")), geomean(d.sel(variant="shuffled"))
        depth = np.asarray(a.relative_depth.values, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            lr = np.log10(shuf.values / orig.values)
        first = np.nanmean(np.where(depth <= 0.5, lr, np.nan))
        second = np.nanmean(np.where(depth > 0.5, lr, np.nan))
        diffs.append(second - first)
        t = np.log10(threshold)
        ok.append(second > t and first < t)
        rows.append(f"{arch}: mean ratio {10**first:.2g} (first half), {10**second:.2g} (second half)")
    diffs = np.array(diffs)
    v.value = float(np.nanmean(diffs))
    v.uncertainty = float(np.nanstd(diffs, ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else math.nan
    v.verdict = REPRODUCED if np.mean(ok) >= 0.5 else NOT_REPRODUCED
    v.detail = "; ".join(rows)
    return v


def check_c7(spectra: xr.Dataset | None, *, margin: float = 0.02) -> Verdict:
    """C7: after training the filters carry more energy on the homogeneous (:math:`\\lambda = 0`) mode
    than the flat 1/9 of initialisation, most in the early layers.

    Value: mean over networks of (trained − init) homogeneous fraction averaged over layers.
    Reproduced if that difference exceeds ``margin`` for at least 75 % of the networks and the
    first-half layers gain more than the second-half ones for most networks.
    """
    v = Verdict("C7", CLAIMS["C7"][0], "trained − init homogeneous fraction S(0)/ΣS (mean over layers, then nets)",
                criterion=f"reproduced if > {margin} for >= 75 % of nets and early layers gain most for most nets")
    if spectra is None:
        return v
    v.sources, v.seeds = ("spectra",), _seeds(spectra)
    gains, ok_gain, ok_early, rows = [], [], [], []
    for arch in _archs(spectra):
        a = _per_arch(spectra, arch)
        hf = a.homogeneous_fraction
        if "seed" in hf.dims:
            hf = hf.mean("seed")
        tr, ini = hf.sel(state="trained"), hf.sel(state="init")
        gain = float((tr - ini).mean())
        depth = np.asarray(a.relative_depth.values, float) if "relative_depth" in a.coords else np.linspace(0, 1, hf.sizes["layer"])
        d = (tr - ini).values
        early, late = np.nanmean(np.where(depth <= 0.5, d, np.nan)), np.nanmean(np.where(depth > 0.5, d, np.nan))
        gains.append(gain)
        ok_gain.append(gain > margin)
        ok_early.append(early > late)
        rows.append(f"{arch}: {float(ini.mean()):.3f} → {float(tr.mean()):.3f} (early layers +{early:.3f}, late +{late:.3f})")
    g = np.array(gains)
    v.value = float(g.mean())
    v.uncertainty = float(g.std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else math.nan
    v.verdict = REPRODUCED if np.mean(ok_gain) >= 0.75 and np.mean(ok_early) > 0.5 else NOT_REPRODUCED
    v.detail = "; ".join(rows)
    return v


def check_c8(scale2d: xr.Dataset | None, *, max_error: float = 0.2) -> Verdict:
    """C8: on the 2D task, trained nets reach low test error (< ``max_error``) with :math:`R_f < 0.5`,
    :math:`D_k` falling and :math:`G_k` rising with depth, and shuffling changes :math:`D_k` little
    (mean :math:`|\\log_{10} D^\\text{shuf}/D^\\text{orig}| < \\log_{10} 2`).

    Value: the fraction of networks where all of these hold.
    """
    v = Verdict("C8", CLAIMS["C8"][0], "fraction of nets with low error, R_f < 0.5, D_k ↓, G_k ↑ and small shuffling effect",
                criterion="reproduced if >= 0.5")
    if scale2d is None:
        return v
    v.sources, v.seeds = ("scale2d",), _seeds(scale2d)
    ok, rows = [], []
    for arch in _archs(scale2d):
        a = _per_arch(scale2d, arch)
        tr = a.sel(state="trained")
        orig = tr.sel(variant="original") if "variant" in tr.dims else tr
        err = float(orig.test_error.mean()) if "test_error" in orig else math.nan
        r_out = float(geomean(output_layer(orig).R))
        sd, _ = _layer_slope(geomean(orig.D))
        sg, _ = _layer_slope(geomean(orig.G))
        shuf_effect = math.nan
        if "variant" in tr.dims and "shuffled" in tr.variant.values:
            with np.errstate(divide="ignore", invalid="ignore"):
                shuf_effect = float(np.nanmean(np.abs(np.log10(geomean(tr.D.sel(variant="shuffled")) / geomean(orig.D)))))
        good = err < max_error and r_out < 0.5 and sd < 0 and sg > 0 and (math.isnan(shuf_effect) or shuf_effect < np.log10(2))
        ok.append(good)
        rows.append(f"{arch}: error {err:.3f}, R_f {r_out:.2g}, D slope {sd:+.2f}, G slope {sg:+.2f}, |log10 shuffle ratio| {shuf_effect:.2f}")
    v.value, v.uncertainty = _frac(int(sum(ok)), len(ok))
    v.verdict = REPRODUCED if v.value >= 0.5 else NOT_REPRODUCED
    v.detail = "; ".join(rows)
    return v


def _block_curve(ds: xr.Dataset, var: str, *, drop_last: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-block values (activation outputs) of a 1D net, indexed k = 1..L (the last ``drop_last`` left out)."""
    kinds = np.asarray(ds.layer_kind.values).astype(str)
    vals = np.asarray(geomean(ds[var]).values, float)
    sel = np.isin(kinds, ("act",)) & np.isfinite(vals)
    y = vals[sel]
    y = y[: len(y) - drop_last] if drop_last else y
    return np.arange(1, len(y) + 1, dtype=float), y


def check_c9(scale1d: xr.Dataset | None) -> Verdict:
    """C9: trained 1D ConvGAP with :math:`f = s = 2` and ReLU (1D protocol), fitted over all blocks but
    the last two (finite-size factor): slope of :math:`\\log_2 D_k`
    against :math:`k` in :math:`[-1.5, -0.5]` (prediction −1) and of :math:`\\log_2 G_k` in
    :math:`[0.5, 1.5]` (prediction +1), and a steeper :math:`D_k` decay than at initialisation.

    Value: the fitted :math:`\\log_2 D_k` slope of the trained net (OLS standard error).
    """
    v = Verdict("C9", CLAIMS["C9"][0], "trained slope of log2 D_k vs k (f = s = 2, ReLU, 1D protocol)",
                criterion="reproduced if D slope in [-1.5, -0.5], G slope in [0.5, 1.5] and D falls faster than at init")
    if scale1d is None:
        return v
    v.sources, v.seeds = ("scale1d",), _seeds(scale1d)
    ds = _at(scale1d, stride=2, activation="relu", protocol="1d")
    # the last two blocks (receptive field >= N/2) are dominated by the finite-size factor
    # 1/(1 - 2^k/N) of the denominator (methods §10.3): the power law is fitted on the others
    k, d_tr = _block_curve(ds.sel(state="trained"), "D", drop_last=2)
    _, g_tr = _block_curve(ds.sel(state="trained"), "G", drop_last=2)
    k0, d_in = _block_curve(ds.sel(state="init"), "D", drop_last=2)
    sd, se = _slope(k, np.log2(d_tr))
    sg, _ = _slope(k, np.log2(g_tr))
    sd0, _ = _slope(k0, np.log2(d_in))
    v.value, v.uncertainty = sd, se
    v.numbers = {"D_slope": sd, "G_slope": sg, "D_slope_init": sd0}
    v.detail = f"log2 slopes per layer: D {sd:+.2f} (init {sd0:+.2f}), G {sg:+.2f}"
    if "stride" in scale1d.dims and 1 in scale1d.stride.values:
        s1 = _at(scale1d, stride=1, activation="relu", protocol="1d").sel(state="trained")
        k1, d1 = _block_curve(s1, "D")
        _, g1 = _block_curve(s1, "G")
        a, _ = _slope(np.log(k1), np.log(d1))
        b, _ = _slope(np.log(k1), np.log(g1))
        v.detail += f"; stride 1: log–log slopes D {a:+.2f} (theory −1), G {b:+.2f} (theory +½)"
    good = -1.5 <= sd <= -0.5 and 0.5 <= sg <= 1.5 and sd < sd0
    v.verdict = REPRODUCED if good else NOT_REPRODUCED
    return v


def check_c10(theory: xr.Dataset | None, activations: xr.Dataset | None = None) -> Verdict:
    """C10: in the constant-filter model with strides, :math:`\\ln G_k` grows by about :math:`\\ln 2` per
    layer with ReLU (within 30 %) and stays flat (|slope| < 0.1 per layer) for tanh and linear; in
    trained CNNs (if run), tanh nets have a smaller output :math:`G_f` than their ReLU counterparts.

    Value: the ReLU slope of :math:`\\ln G_k` per layer (stride 2).
    """
    v = Verdict("C10", CLAIMS["C10"][0], "slope of ln G_k per layer, constant-filter CNN with F = s = 2, ReLU (theory: ln 2 = 0.69)",
                criterion="reproduced if ReLU slope within 30 % of ln 2, |tanh/linear slope| < 0.1, and trained tanh G_f < ReLU G_f for most nets (when run)")
    if theory is None:
        return v
    v.sources = ("theory",)
    th = _at(theory, stride=2)
    slopes = {}
    for act in [str(a) for a in th.activation.values]:
        g = th.G.sel(activation=act)
        slopes[act], se = _slope(g.depth.values.astype(float), np.log(g.values))
        if act == "relu":
            v.value, v.uncertainty = slopes[act], se
    relu_ok = abs(slopes.get("relu", math.nan) - np.log(2)) < 0.3 * np.log(2)
    odd_ok = all(abs(s) < 0.1 for a, s in slopes.items() if a in ("tanh", "linear"))
    v.detail = "theory slopes of ln G_k: " + ", ".join(f"{a} {s:+.3f}" for a, s in slopes.items())
    cnn_ok = True
    if activations is not None:
        v.sources += ("activations",)
        v.seeds = _seeds(activations)
        out = output_layer(_at(activations, delta=1.0, state="trained"))
        ratios = {}
        for arch in _archs(out):
            g = geomean(_per_arch(out, arch).G)
            ratios[arch] = float(g.sel(activation="tanh") / g.sel(activation="default"))
        cnn_ok = np.mean([r < 1 for r in ratios.values()]) > 0.5
        v.detail += "; trained CNNs, G_f(tanh)/G_f(ReLU): " + ", ".join(f"{a} {r:.2g}" for a, r in ratios.items())
    v.verdict = REPRODUCED if relu_ok and odd_ok and cnn_ok else NOT_REPRODUCED
    return v


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------

_CHECKS: dict[str, Callable[..., Verdict]] = {
    "C1": check_c1, "C2": check_c2, "C3": check_c3, "C4": check_c4, "C5": check_c5,
    "C6": check_c6, "C7": check_c7, "C8": check_c8, "C9": check_c9, "C10": check_c10,
}


def evaluate(profile: str = "quick", root: str | os.PathLike | None = None) -> list[Verdict]:
    """Check every claim against the results of ``profile`` (missing experiments: "not run")."""
    from .results import ResultsError, open_experiment

    cache: dict[str, xr.Dataset | None] = {}

    def get(name: str) -> xr.Dataset | None:
        if name not in cache:
            try:
                cache[name] = open_experiment(name, profile=profile, root=root)
            except ResultsError:
                cache[name] = None
        return cache[name]

    verdicts = []
    for cid, (statement, needs) in CLAIMS.items():
        datasets = [get(n) for n in needs]
        try:
            v = _CHECKS[cid](*datasets)
        except Exception as err:  # noqa: BLE001 - a check that cannot be computed is reported, not fatal
            v = Verdict(cid, statement, "", verdict=NOT_RUN, detail=f"could not be evaluated: {type(err).__name__}: {err}")
        v.profile = profile
        if not any(d is not None for d in datasets):
            v.detail = v.detail or f"experiment(s) {', '.join(needs)} not run at the {profile} profile"
        verdicts.append(v)
    return verdicts


def verdict_table(verdicts: list[Verdict]) -> pd.DataFrame:
    """One row per claim: verdict, value ± uncertainty, quantity, profile, seeds, sources."""
    rows = []
    for v in verdicts:
        val = "—" if not np.isfinite(v.value) else (f"{v.value:.3g} ± {v.uncertainty:.2g}" if np.isfinite(v.uncertainty) else f"{v.value:.3g}")
        rows.append({"claim": v.claim, "verdict": v.verdict, "value": val, "quantity": v.quantity, "profile": v.profile,
                     "seeds": v.seeds or "-", "from": ", ".join(v.sources) or "-"})
    return pd.DataFrame(rows)
