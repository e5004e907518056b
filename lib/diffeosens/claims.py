r"""The paper's claims C1–C10 (methods §11), checked against the results.

Each ``check_c*`` function takes the combined dataset(s) of the experiments it needs (as returned
by :func:`diffeosens.results.open_experiment`, or ``None`` when that experiment has not been run
at this profile) and returns a :class:`Verdict`: the quantity, our value with its uncertainty,
the profile and seeds it came from, a verdict and a one-line ``reason`` that says why. The
verdicts are

* ``"reproduced"``: every part of the criterion holds on the data;
* ``"not reproduced"``: the data are complete and some part of the criterion fails (the reason
  names the part and the measured numbers);
* ``"incomplete"``: an experiment was run but a part of the data the check needs is missing or
  undefined (a variant not run, a NaN value, too few networks). A claim never passes on data it
  does not have;
* ``"not run"``: none of the experiments the claim needs exists at this profile;
* ``"error"``: the check raised an exception (the reason carries it). Never silently "not run".

Every threshold is stated in the docstring of its check and in the verdict's ``criterion``.
Claims that look at several networks use **one majority rule**: the per-network condition must
hold for at least :data:`MAJORITY` (75 %) of them. :func:`evaluate` runs them all for one
profile; the book's claims page only prints its table.

Book pages never state by hand what this build's data show: beside each statement of the paper
they print :func:`finding`, the sentence a verdict makes ("**This build (quick profile):** the data
do not show it (C4 *not reproduced*): ..."). For a claim a build does not reproduce, the claims
page adds what would decide it: the measured trend, the cheapest configuration that reverses it
and its cost, from the hand-edited table :data:`DECIDING` (rendered by :func:`deciding_table`).

Seeds are aggregated as everywhere in the package, with :func:`diffeosens.stats.seed_mean`: as in
the NeurIPS-2021 paper (open choice O9), geometric mean of D, G, R (arithmetic mean of the test
error). Fits and rank correlations are :func:`diffeosens.stats.fit_exponent` and
:func:`diffeosens.stats.spearman`.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .diffeo import PAPER_DELTA
from .results import output_layer
from .stats import ExponentFit, fit_exponent, seed_mean, spearman

__all__ = ["CLAIMS", "DECIDING", "ERROR", "INCOMPLETE", "MAJORITY", "NOT_REPRODUCED", "NOT_RUN", "REPRODUCED", "TO_BE_MEASURED",
           "UNDECIDED", "VERDICTS", "Deciding", "Incomplete", "Verdict", "block_curve", "deciding_table", "evaluate", "finding",
           "verdict_table"]

REPRODUCED, NOT_REPRODUCED, INCOMPLETE, NOT_RUN, ERROR = "reproduced", "not reproduced", "incomplete", "not run", "error"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCOMPLETE, NOT_RUN, ERROR)
#: The verdicts for which the claims page says what would decide the claim (:data:`DECIDING`).
UNDECIDED = (NOT_REPRODUCED, INCOMPLETE)

#: The majority rule of every multi-network claim: the per-network condition holds for at least this fraction.
MAJORITY = 0.75

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
    "C10": ("Noise sensitivity comes from ReLU rectification plus pooling; odd activations remove it.", ("theory", "activations", "scale2d")),
}


@dataclass
class Verdict:
    """The outcome of one claim's check (module docstring): what was measured, against which criterion, and why."""

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
    reason: str = ""
    #: experiments the claim needs that were not run at this profile (filled in by :func:`evaluate`)
    missing: tuple[str, ...] = ()


class Incomplete(Exception):
    """Raised inside a check: the data it needs is missing or undefined (the message says which)."""


class NotRun(Exception):
    """Raised inside a check: none of the experiments it needs exists."""


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _at(ds: xr.Dataset, **sel: Any) -> xr.Dataset:
    """Select by the given values (e.g. delta=PAPER_DELTA); a dimension or a value that was not measured is
    missing data (:class:`Incomplete`), never a nearest neighbour."""
    ok = dict(sel)
    for k, v in ok.items():
        if k not in ds.dims:
            raise Incomplete(f"the results have no {k!r} dimension (dimensions: {', '.join(map(str, ds.dims))})")
        if v not in ds[k].values:
            raise Incomplete(f"{k} = {v!r} was not measured (have {', '.join(map(str, ds[k].values))})")
    return ds.sel(ok)


def _seeds(ds: xr.Dataset) -> str:
    return ",".join(str(s) for s in ds.seed.values) if "seed" in ds.dims else "-"


def _fit_defined(x: Any, y: Any, *, base: str = "log2") -> ExponentFit:
    """:func:`~diffeosens.stats.fit_exponent` over the points with a finite ``x`` and a finite ``y > 0``
    (padded layers of shorter networks are NaN); NaN slope and error when fewer than 3 such points
    or a single ``x`` value remain: the callers make that "incomplete" with :func:`_finite`."""
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    ok = np.isfinite(x) & np.isfinite(y) & (y > 0) & ((x > 0) if base == "log" else True)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0:
        return ExponentFit(math.nan, math.nan)
    return fit_exponent(x[ok], y[ok], base=base)


def _layer_slope(da: xr.DataArray) -> tuple[float, float]:
    """Slope of log10(value) against relative depth over the probe points of one network (and its
    standard error): the log2 fit of :func:`~diffeosens.stats.fit_exponent` times log10 2."""
    fit = _fit_defined(da["relative_depth"].values, da.values, base="log2")
    return fit.slope * math.log10(2), fit.stderr * math.log10(2)


def _finite(x: Any, what: str) -> float:
    """``x`` as a float; :class:`Incomplete` naming ``what`` when it is NaN or infinite."""
    x = float(x)
    if not math.isfinite(x):
        raise Incomplete(f"{what} is undefined ({x})")
    return x


def _frac(n_ok: int, n: int) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = n_ok / n
    return p, math.sqrt(max(p * (1 - p), 1.0 / n) / n)


def _majority(ok: Sequence[bool]) -> bool:
    """The one majority rule of the multi-network claims: at least :data:`MAJORITY` of them hold."""
    return len(ok) > 0 and float(np.mean(ok)) >= MAJORITY


def _archs(ds: xr.Dataset) -> list[str]:
    return [str(a) for a in ds.arch.values] if "arch" in ds.dims else ["net"]


def _per_arch(ds: xr.Dataset, arch: str) -> xr.Dataset:
    """The data of one network, restricted to its own layers.

    An experiment combines networks of different depths on one ``layer`` dimension (that of the
    deepest), so a shallower network's trailing layers are padding: no ``layer_name``, values NaN.
    They are dropped here, so that only a network's real layers count (a NaN *within* them still
    makes a check incomplete).
    """
    a = ds.sel(arch=arch) if "arch" in ds.dims else ds
    if "layer" in a.dims and "layer_name" in a.coords:
        names = a.layer_name
        named = names.notnull() & (names != "")
        other = [d for d in named.dims if d != "layer"]
        real = np.asarray(named.any(other).values if other else named.values, bool)
        if real.ndim == 1 and real.any() and not real.all():
            a = a.isel(layer=np.flatnonzero(real))
    return a


def _need_states(ds: xr.Dataset, *states: str) -> None:
    have = [str(s) for s in ds.state.values] if "state" in ds.dims else []
    missing = [s for s in states if s not in have]
    if missing:
        raise Incomplete(f"state(s) {', '.join(missing)} not measured")


def _accuracy_note(ds: xr.Dataset, arch: str) -> str:
    """' at 77 % test accuracy' for a layered dataset with a test_error variable, else ''."""
    if "test_error" not in ds:
        return ""
    te = _per_arch(ds, arch).test_error
    if "state" in te.dims:
        te = te.sel(state="trained")
    err = float(np.nanmean(te.values)) if np.isfinite(te.values).any() else math.nan
    return f" at {100 * (1 - err):.0f} % test accuracy" if math.isfinite(err) else ""


def _failed(parts: dict[str, bool]) -> list[str]:
    return [name for name, ok in parts.items() if not ok]


def _claim(cid: str, quantity: str, criterion: str) -> Callable[[Callable[..., None]], Callable[..., Verdict]]:
    """Wrap a check body ``fn(v, *datasets, **options)`` that fills the :class:`Verdict` ``v``.

    :class:`NotRun` -> "not run", :class:`Incomplete` -> "incomplete", any other exception ->
    "error"; the exception's message becomes the verdict's reason.
    """

    def deco(fn: Callable[..., None]) -> Callable[..., Verdict]:
        @functools.wraps(fn)
        def check(*datasets: Any, **options: Any) -> Verdict:
            v = Verdict(cid, CLAIMS[cid][0], quantity, criterion=criterion)
            try:
                if all(d is None for d in datasets):
                    raise NotRun(f"experiment(s) {', '.join(CLAIMS[cid][1])} not run at this profile")
                fn(v, *datasets, **options)
            except NotRun as err:
                v.verdict, v.reason = NOT_RUN, str(err)
            except Incomplete as err:
                v.verdict, v.reason = INCOMPLETE, str(err)
            except Exception as err:  # noqa: BLE001 - a check that crashes is reported as an error, never as "not run"
                v.verdict, v.reason = ERROR, f"{type(err).__name__}: {err}"
            if v.verdict not in VERDICTS:
                v.verdict, v.reason = ERROR, f"check returned an unknown verdict {v.verdict!r}"
            if not v.reason:
                v.verdict, v.reason = ERROR, "check gave no reason"
            return v

        return check

    return deco


# ------------------------------------------------------------------------------------------------
# the checks
# ------------------------------------------------------------------------------------------------


@_claim("C1", "fraction of init R_k in (0.5, 2) over all nets and probe points", "reproduced if >= 0.9 of them")
def check_c1(v: Verdict, layers: xr.Dataset | None, architectures: xr.Dataset | None = None) -> None:
    """C1: at initialisation :math:`0.5 < R_k < 2` at (at least) 90 % of the probe points.

    Value: that fraction over every network and probe point at :math:`\\delta = 1` (binomial
    standard error). A non-finite init :math:`R_k` makes the check incomplete.
    """
    rs = []
    for ds, name in ((layers, "layers"), (architectures, "architectures")):
        if ds is None:
            continue
        _need_states(ds, "init")
        init = _at(ds, delta=PAPER_DELTA, state="init")
        for arch in _archs(init):
            rs.append(np.asarray(seed_mean(_per_arch(init, arch).R).values, float).ravel())
        v.sources += (name,)
        v.seeds = v.seeds or _seeds(ds)
    r = np.concatenate(rs)
    if r.size == 0:
        raise Incomplete("no init R_k values")
    if not np.isfinite(r).all():
        raise Incomplete(f"{int((~np.isfinite(r)).sum())} of {r.size} init R_k values are undefined (NaN/inf)")
    ok = int(((r > 0.5) & (r < 2)).sum())
    v.value, v.uncertainty = _frac(ok, len(r))
    v.verdict = REPRODUCED if v.value >= 0.9 else NOT_REPRODUCED
    v.detail = f"{ok} of {len(r)} probe points; median init R_k = {np.median(r):.3g} (range {r.min():.3g}–{r.max():.3g})"
    v.reason = f"{ok} of {len(r)} init R_k in (0.5, 2), median {np.median(r):.2g}"
    v.numbers = {"median_R_init": float(np.median(r)), "n": len(r)}


#: Where the paper's prefactor A of ε = A·R_f^b must lie (0.2 within a factor of 2).
PREFACTOR_RANGE = (0.1, 0.4)


def _is_fcn(arch: str) -> bool:
    return arch.startswith("DenseNet")


@_claim("C2", "exponent b of ε_t = A·R_f^b across trained nets",
        "reproduced if >= 4 nets, b > 2 se and b in [0.25, 0.75] (or ½ within 2 se), A in [0.1, 0.4], "
        "Spearman ρ(ε,R_f) > 0 and >= ρ(ε,D_f), and an FCN has both the largest R_f and the largest error")
def check_c2(v: Verdict, architectures: xr.Dataset | None) -> None:
    """C2: trained nets: log–log fit :math:`\\epsilon_t = A R_f^b`; the paper: :math:`b \\approx \\frac12`,
    :math:`A \\approx 0.2`.

    Reproduced if at least 4 networks, :math:`b > 2\\,\\mathrm{se}(b)`, :math:`b` within
    :math:`[0.25, 0.75]` or :math:`0.5` within :math:`b \\pm 2\\,\\mathrm{se}`, :math:`A` within
    :data:`PREFACTOR_RANGE`, the Spearman correlation of :math:`(\\epsilon_t, R_f)` positive and at
    least that of :math:`(\\epsilon_t, D_f)` (both defined), and the fully connected nets (DenseNet*)
    have both the largest :math:`R_f` and the largest error. Value: :math:`b` with its OLS standard error.
    """
    _need_states(architectures, "trained")
    ds = output_layer(_at(architectures, delta=PAPER_DELTA, state="trained"))
    v.sources, v.seeds = ("architectures",), _seeds(architectures)
    err, rf, df = seed_mean(ds.test_error), seed_mean(ds.R), seed_mean(ds.D)
    archs = _archs(ds)
    e, r, d = (np.asarray(x.values, float).ravel() for x in (err, rf, df))
    ok = np.isfinite(e) & np.isfinite(r) & np.isfinite(d) & (e > 0) & (r > 0)
    n = int(ok.sum())
    v.numbers = {"n_nets": n, "test_error": dict(zip(archs, e.tolist())), "R_f": dict(zip(archs, r.tolist()))}
    if n < 4:
        raise Incomplete(f"only {n} network(s) with a finite error, R_f and D_f: no fit (needs 4)")
    b, se = _fit_defined(r[ok], e[ok], base="log")  # slope of log ε against log R_f
    _finite(b, "the exponent b (R_f takes a single value)")
    a = 10 ** float(np.mean(np.log10(e[ok]) - b * np.log10(r[ok])))
    rho_r, rho_d = _finite(spearman(e[ok], r[ok]), "Spearman ρ(ε, R_f)"), _finite(spearman(e[ok], d[ok]), "Spearman ρ(ε, D_f)")
    good = [x for x, o in zip(archs, ok) if o]
    fcn = [x for x in good if _is_fcn(x)]
    if not fcn or len(fcn) == len(good):
        raise Incomplete("needs both fully connected (DenseNet*) and convolutional nets to compare")
    top_r, top_e = good[int(np.argmax(r[ok]))], good[int(np.argmax(e[ok]))]
    v.value, v.uncertainty = b, se
    v.numbers.update({"prefactor": a, "spearman_R": rho_r, "spearman_D": rho_d, "largest_R_f": top_r, "largest_error": top_e})
    v.detail = (f"{n} nets; fit ε = {a:.3g}·R_f^{b:.2f} (se {se:.2f}); Spearman ρ(ε,R_f) = {rho_r:.2f}, "
                f"ρ(ε,D_f) = {rho_d:.2f}; largest R_f: {top_r}, largest error: {top_e}")
    parts = {
        f"exponent b = {b:.2f} ± {se:.2f} (paper ½)": b > 2 * se and (0.25 <= b <= 0.75 or abs(b - 0.5) <= 2 * se),
        f"prefactor A = {a:.2g} (paper 0.2)": PREFACTOR_RANGE[0] <= a <= PREFACTOR_RANGE[1],
        f"ρ(ε,R_f) = {rho_r:.2f} vs ρ(ε,D_f) = {rho_d:.2f}": rho_r > 0 and rho_r >= rho_d,
        f"largest R_f: {top_r}": _is_fcn(top_r),
        f"largest error: {top_e}": _is_fcn(top_e),
    }
    fails = _failed(parts)
    v.verdict = NOT_REPRODUCED if fails else REPRODUCED
    v.reason = ("fails: " + "; ".join(fails)) if fails else f"ε = {a:.2g}·R_f^{b:.2f} over {n} nets; FCNs have the largest R_f and error"


def _trained_vs_init_slopes(layers: xr.Dataset, var: str) -> dict[str, tuple[float, float]]:
    """Per network: (init, trained) slope of log10 ``var`` against relative depth; undefined -> Incomplete."""
    _need_states(layers, "init", "trained")
    out = {}
    ds = _at(layers, delta=PAPER_DELTA)
    for arch in _archs(ds):
        a = _per_arch(ds, arch)
        s_init = _finite(_layer_slope(seed_mean(a[var].sel(state="init")))[0], f"{arch}: init slope of log {var}_k")
        s_tr = _finite(_layer_slope(seed_mean(a[var].sel(state="trained")))[0], f"{arch}: trained slope of log {var}_k")
        out[arch] = (s_init, s_tr)
    return out


@_claim("C3", "trained − init slope of log10 D_k vs relative depth (mean over nets)",
        "reproduced if the mean is < 0 and, for >= 75 % of nets, trained D_k decreases with depth (slope < 0) "
        "and more steeply than at init")
def check_c3(v: Verdict, layers: xr.Dataset | None) -> None:
    """C3: after training :math:`D_k` decreases along the network, faster than at initialisation.

    Value: mean over networks of (trained slope − init slope) of :math:`\\log_{10} D_k` against
    relative depth, with its standard error over networks. Reproduced if that mean is negative and,
    for at least :data:`MAJORITY` of the networks, the trained slope is negative and below the init slope.
    """
    v.sources, v.seeds = ("layers",), _seeds(layers)
    slopes = _trained_vs_init_slopes(layers, "D")
    diffs = np.array([t - i for i, t in slopes.values()])
    v.value = float(diffs.mean())
    v.uncertainty = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else math.nan
    ok = {a: t < 0 and t < i for a, (i, t) in slopes.items()}
    v.verdict = REPRODUCED if v.value < 0 and _majority(list(ok.values())) else NOT_REPRODUCED
    v.detail = "; ".join(f"{a}: {i:+.2f} → {t:+.2f}" for a, (i, t) in slopes.items()) + " (init → trained slope per unit depth)"
    v.numbers = {"slopes": {a: {"init": i, "trained": t} for a, (i, t) in slopes.items()}}
    bad = [f"{a} ({slopes[a][0]:+.2f} → {slopes[a][1]:+.2f})" for a, good in ok.items() if not good]
    v.reason = (f"trained D_k falls with depth, faster than at init, in {sum(ok.values())} of {len(ok)} nets"
                + (f"; not in {', '.join(bad)}" if bad else ""))


def _ratio_error(g: xr.Dataset) -> tuple[float, float]:
    r"""Standard error of :math:`\rho = G^\text{trained}/G^\text{init}` and how many of them
    :math:`\ln\rho` lies above 0, from the per-state jackknife errors ``G_se`` (delta method:
    :math:`s = \sqrt{(\mathrm{se}_t/G_t)^2 + (\mathrm{se}_i/G_i)^2}`, :math:`\mathrm{se}(\rho) = \rho s`,
    :math:`z = \ln\rho / s`); NaNs without errors.
    """
    gt, gi = float(g.G.sel(state="trained")), float(g.G.sel(state="init"))
    st, si = float(g.G_se.sel(state="trained")), float(g.G_se.sel(state="init"))
    rel = math.hypot(st / gt, si / gi) if gt > 0 and gi > 0 else math.nan
    if not (math.isfinite(rel) and rel > 0):
        return math.nan, math.nan
    return gt / gi * rel, math.log(gt / gi) / rel


@_claim("C4", "median log10(G_out trained / G_out init) over nets",
        "reproduced if for >= 75 % of nets G_out grows with training and trained G_k grows with depth")
def check_c4(v: Verdict, layers: xr.Dataset | None) -> None:
    """C4: :math:`G_\\text{out}` grows with training and trained :math:`G_k` grows with depth.

    Value: median over networks of :math:`\\log_{10}(G_\\text{out}^\\text{trained}/G_\\text{out}^\\text{init})`.
    Reproduced if, for at least :data:`MAJORITY` of the networks, that log-ratio is positive and
    the slope of trained :math:`\\log G_k` against depth is positive.
    """
    v.sources, v.seeds = ("layers",), _seeds(layers)
    slopes = _trained_vs_init_slopes(layers, "G")
    ds = _at(layers, delta=PAPER_DELTA)
    out = output_layer(ds)
    ratios, ok, margin = {}, {}, {}
    for arch in _archs(ds):
        net = seed_mean(_per_arch(out, arch)[[n for n in ("G", "G_se") if n in out]])
        g = net.G
        ratios[arch] = _finite(np.log10(float(g.sel(state="trained")) / float(g.sel(state="init"))), f"{arch}: G_out trained/init")
        ok[arch] = ratios[arch] > 0 and slopes[arch][1] > 0
        margin[arch] = _ratio_error(net) if "G_se" in net else (math.nan, math.nan)
    vals = np.array(list(ratios.values()))
    v.value = float(np.median(vals))
    v.uncertainty = float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else math.nan
    v.verdict = REPRODUCED if _majority(list(ok.values())) else NOT_REPRODUCED

    def ratio(a: str) -> str:
        se, z = margin[a]
        return f"{10 ** ratios[a]:.3g}" + (f" ± {se:.1g} ({z:+.1f} SE from 1)" if math.isfinite(z) else "")

    v.detail = "; ".join(f"{a}: G_out trained/init {ratio(a)}{_accuracy_note(ds, a)}, trained G slope {slopes[a][1]:+.2f}"
                         for a in ratios)
    v.numbers = {"log10_ratio": ratios, "ratio_se": {a: m[0] for a, m in margin.items()},
                 "z_from_one": {a: m[1] for a, m in margin.items()}}
    if v.verdict == REPRODUCED:
        weak = [a for a, good in ok.items() if good and math.isfinite(margin[a][1]) and margin[a][1] < 2]
        v.reason = (f"G_out grows with training and G_k with depth in {sum(ok.values())} of {len(ok)} nets"
                    + (f"; weak evidence: G_out trained/init within 2 jackknife SE of 1 for "
                       + "; ".join(f"{a}: {ratio(a)}" for a in weak) if weak else ""))
    else:
        bad = [f"{a}: G_out trained/init = {10**ratios[a]:.2g}{_accuracy_note(ds, a)}, G slope {slopes[a][1]:+.2f}"
               for a, good in ok.items() if not good]
        v.reason = f"holds in {sum(ok.values())} of {len(ok)} nets; " + "; ".join(bad)


@_claim("C5", "fraction of (net, trainable noise level) with R_f < 0.5 and G_f(trained) > G_f(init)",
        "reproduced if at >= 3 trainable (net, level) pairs, and for >= 75 % of nets at all their trainable levels, "
        "R_f < 0.5 and G_f grows with training")
def check_c5(v: Verdict, noisy: xr.Dataset | None, *, chance_factor: float = 2.0) -> None:
    """C5: at every training-noise level that still trains (test accuracy above ``chance_factor``
    times chance), :math:`R_f < 0.5` and :math:`G_f^\\text{trained} > G_f^\\text{init}`.

    Value: the fraction of trainable (network, level) pairs where both hold. Reproduced if there are
    at least 3 such pairs and the claim holds at every trainable level for at least
    :data:`MAJORITY` of the networks.
    """
    v.sources, v.seeds = ("noisy",), _seeds(noisy)
    _need_states(noisy, "init", "trained")
    ds = output_layer(_at(noisy, delta=PAPER_DELTA))
    rows, cells, per_net, bad = [], [], {}, []
    for arch in _archs(ds):
        a = _per_arch(ds, arch)
        net_ok = []
        for level in a.train_noise.values:
            s = a.sel(train_noise=level)
            acc = 1 - _finite(seed_mean(s.test_error.sel(state="trained")).mean(), f"{arch} σ={level:g}: test error")
            r = _finite(seed_mean(s.R.sel(state="trained")), f"{arch} σ={level:g}: trained R_f")
            g_tr = _finite(seed_mean(s.G.sel(state="trained")), f"{arch} σ={level:g}: trained G_f")
            g_in = _finite(seed_mean(s.G.sel(state="init")), f"{arch} σ={level:g}: init G_f")
            rows.append(f"{arch} σ={level:g}: acc {acc:.2f}, R_f {r:.2g}, G_f {g_in:.2g}→{g_tr:.2g}")
            if acc > chance_factor * 0.1:
                good = r < 0.5 and g_tr > g_in
                cells.append(good)
                net_ok.append(good)
                if not good:
                    bad.append(f"{arch} σ={level:g}: R_f {r:.2g}, G_f trained/init {g_tr / g_in:.2g} at {100 * acc:.0f} %")
        if net_ok:
            per_net[arch] = all(net_ok)
    v.detail = "; ".join(rows)
    if len(cells) < 3:
        raise Incomplete(f"only {len(cells)} (net, noise level) pair(s) trained above {chance_factor:g}× chance (needs 3)")
    v.value, v.uncertainty = _frac(int(sum(cells)), len(cells))
    v.verdict = REPRODUCED if _majority(list(per_net.values())) else NOT_REPRODUCED
    v.reason = (f"holds at {sum(cells)} of {len(cells)} trainable (net, level) pairs" + ("; fails at " + "; ".join(bad[:3]) if bad else "")
                + (" …" if len(bad) > 3 else ""))


@_claim("C6", "mean over nets of (second-half − first-half) mean log10(D_shuf/D_orig)",
        "reproduced if for >= 75 % of nets, for both D and R: the shuffled/original ratio stays below 2 on average "
        "in the first half, exceeds 2 in the second half, and stays above 2 from an onset depth to the output")
def check_c6(v: Verdict, pooling: xr.Dataset | None, *, threshold: float = 2.0) -> None:
    """C6: :math:`X_k^\\text{shuf}/X_k^\\text{orig}` (:math:`X = D` and :math:`X = R`) stays near 1 in
    the first half of the net and exceeds ``threshold`` in the second half.

    Uses :func:`diffeosens.pooling.channel_pooling_onset` per network and quantity: reproduced for
    a network if, for both :math:`D` and :math:`R`, the mean log-ratio of the first half is below
    :math:`\\ln` ``threshold``, that of the second half above it, and an onset exists (the ratio stays
    above ``threshold`` from some depth to the last layer). Majority rule over networks. Value: mean
    over networks of (second-half − first-half) mean :math:`\\log_{10}(D^\\text{shuf}/D^\\text{orig})`.
    """
    from .pooling import channel_pooling_onset

    v.sources, v.seeds = ("pooling",), _seeds(pooling)
    if "variant" not in pooling.dims or not {"original", "shuffled"} <= {str(x) for x in pooling.variant.values}:
        raise Incomplete("the shuffled (or original) variant was not measured")
    pooling = _at(pooling, delta=PAPER_DELTA)
    diffs, ok, rows, bad = [], {}, [], []
    t = math.log(threshold)
    for arch in _archs(pooling):
        a = _per_arch(pooling, arch)
        net_ok = True
        for var in ("D", "R"):
            x = a[var] if var in a else (a.D / a.G).rename("R")
            x = seed_mean(x, "shuffle")
            orig, shuf = seed_mean(x.sel(variant="original")), seed_mean(x.sel(variant="shuffled"))
            if not (np.isfinite(orig.values).all() and np.isfinite(shuf.values).all()):
                raise Incomplete(f"{arch}: {var}_k has undefined values")
            on = channel_pooling_onset(orig, shuf, threshold=threshold)
            first, second = on["mean_log_ratio_first_half"], on["mean_log_ratio_second_half"]
            _finite(first, f"{arch}: first-half {var} ratio")
            _finite(second, f"{arch}: second-half {var} ratio")
            good = first < t and second > t and math.isfinite(on["onset_relative_depth"])
            net_ok &= good
            rows.append(f"{arch} {var}: ratio {math.exp(first):.2g} (first half), {math.exp(second):.2g} (second half), onset at depth {on['onset_relative_depth']:.2f}")
            if var == "D":
                diffs.append((second - first) / math.log(10))
            if not good:
                bad.append(f"{arch} {var}: {math.exp(first):.2g} → {math.exp(second):.2g}")
        ok[arch] = net_ok
    d = np.array(diffs)
    v.value = float(d.mean())
    v.uncertainty = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else math.nan
    v.verdict = REPRODUCED if _majority(list(ok.values())) else NOT_REPRODUCED
    v.detail = "; ".join(rows)
    v.reason = f"holds for {sum(ok.values())} of {len(ok)} nets" + ("; fails: " + ", ".join(bad) if bad else "")


@_claim("C7", "trained − init homogeneous fraction S(0)/ΣS (mean over layers, then nets)",
        "reproduced if, for >= 75 % of nets, the gain exceeds 0.02 and early layers gain more than late ones")
def check_c7(v: Verdict, spectra: xr.Dataset | None, *, margin: float = 0.02) -> None:
    """C7: after training the filters carry more energy on the homogeneous (:math:`\\lambda = 0`) mode
    than the flat 1/9 of initialisation, most in the early layers.

    Value: mean over networks of (trained − init) homogeneous fraction averaged over layers.
    Reproduced if, for at least :data:`MAJORITY` of the networks, that gain exceeds ``margin`` and
    the first-half layers gain more than the second-half ones.
    """
    v.sources, v.seeds = ("spectra",), _seeds(spectra)
    v.criterion = v.criterion.replace("0.02", f"{margin:g}")
    _need_states(spectra, "init", "trained")
    gains, ok, rows = [], {}, []
    for arch in _archs(spectra):
        a = _per_arch(spectra, arch)
        hf = seed_mean(a.homogeneous_fraction)
        tr, ini = hf.sel(state="trained"), hf.sel(state="init")
        if not (np.isfinite(tr.values).all() and np.isfinite(ini.values).all()):
            raise Incomplete(f"{arch}: undefined homogeneous fractions")
        gain = float((tr - ini).mean())
        depth = np.asarray(a.relative_depth.values, float) if "relative_depth" in a.coords else np.linspace(0, 1, hf.sizes["layer"])
        dd = (tr - ini).values
        early, late = np.nanmean(np.where(depth <= 0.5, dd, np.nan)), np.nanmean(np.where(depth > 0.5, dd, np.nan))
        if not np.isfinite(late):  # a one-half net (a single layer) has no "late" layers: the early test does not apply
            late = -math.inf
        gains.append(gain)
        ok[arch] = gain > margin and early > late
        rows.append(f"{arch}: {float(ini.mean()):.3f} → {float(tr.mean()):.3f} (early layers {early:+.3f}, late {late:+.3f})")
    g = np.array(gains)
    v.value = float(g.mean())
    v.uncertainty = float(g.std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else math.nan
    v.verdict = REPRODUCED if _majority(list(ok.values())) else NOT_REPRODUCED
    v.detail = "; ".join(rows)
    v.reason = f"holds for {sum(ok.values())} of {len(ok)} nets (mean gain {v.value:+.3f})"


@_claim("C8", "fraction of nets with low error, R_f < 0.5, D_k ↓, G_k ↑ and small shuffling effect",
        "reproduced if >= 75 % of nets: error < 0.2, R_f < 0.5, D_k falls and G_k rises with depth, |log10 D_shuf/D_orig| < log10 2")
def check_c8(v: Verdict, scale2d: xr.Dataset | None, *, max_error: float = 0.2) -> None:
    """C8: on the 2D task, trained nets reach low test error (< ``max_error``) with :math:`R_f < 0.5`,
    :math:`D_k` falling and :math:`G_k` rising with depth, and shuffling changes :math:`D_k` little
    (mean :math:`|\\log_{10} D^\\text{shuf}/D^\\text{orig}| < \\log_{10} 2`). The shuffled variant is
    required: without it the check is incomplete.

    Value: the fraction of networks where all of these hold (majority rule).
    """
    v.sources, v.seeds = ("scale2d",), _seeds(scale2d)
    _need_states(scale2d, "trained")
    if "activation" in scale2d.dims:  # the tanh variants belong to C10; C8 is about the paper's (ReLU) nets
        scale2d = _at(scale2d, activation="default")
    if "variant" not in scale2d.dims or "shuffled" not in [str(x) for x in scale2d.variant.values]:
        raise Incomplete("the channel-shuffled variant was not measured")
    ok, rows, bad = [], [], []
    for arch in _archs(scale2d):
        tr = _per_arch(scale2d, arch).sel(state="trained")
        orig = tr.sel(variant="original")
        if "test_error" not in orig:
            raise Incomplete("no test error in the results")
        err = _finite(seed_mean(orig.test_error).mean(), f"{arch}: test error")
        r_out = _finite(seed_mean(output_layer(orig).R), f"{arch}: R_f")
        sd = _finite(_layer_slope(seed_mean(orig.D))[0], f"{arch}: D_k slope")
        sg = _finite(_layer_slope(seed_mean(orig.G))[0], f"{arch}: G_k slope")
        with np.errstate(divide="ignore", invalid="ignore"):
            shuf_effect = _finite(np.nanmean(np.abs(np.log10(seed_mean(tr.D.sel(variant="shuffled")) / seed_mean(orig.D)))), f"{arch}: shuffling effect")
        parts = {f"error {err:.2f}": err < max_error, f"R_f {r_out:.2g}": r_out < 0.5, f"D slope {sd:+.2f}": sd < 0,
                 f"G slope {sg:+.2f}": sg > 0, f"shuffle |log10| {shuf_effect:.2f}": shuf_effect < np.log10(2)}
        ok.append(all(parts.values()))
        if not ok[-1]:
            bad.append(f"{arch} ({', '.join(_failed(parts))})")
        rows.append(f"{arch}: error {err:.3f}, R_f {r_out:.2g}, D slope {sd:+.2f}, G slope {sg:+.2f}, |log10 shuffle ratio| {shuf_effect:.2f}")
    v.value, v.uncertainty = _frac(int(sum(ok)), len(ok))
    v.verdict = REPRODUCED if _majority(ok) else NOT_REPRODUCED
    v.detail = "; ".join(rows)
    v.reason = f"holds for {sum(ok)} of {len(ok)} nets" + ("; fails: " + "; ".join(bad) if bad else "")


def block_curve(ds: xr.Dataset, var: str, *, drop_last: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-block values of ``var`` (e.g. ``"D"``) of one 1D net (ConvGAP1d): its probe points of kind
    ``"act"`` (the block outputs), aggregated over seeds with :func:`~diffeosens.stats.seed_mean`.

    ``ds`` is the ``scale1d`` dataset of one network and state (a ``layer`` dimension, a ``layer_kind``
    coordinate and at most a ``seed`` dimension besides). Returns ``(k, y)`` with ``k = 1..L`` as
    floats, the last ``drop_last`` blocks left out (claim C9 leaves out the two whose receptive
    field reaches N/2), ready for ``fit_exponent(k, y, base="log2")``. Raises :class:`Incomplete`
    when a value is undefined (NaN, infinite or not positive) or fewer than 3 blocks remain.
    """
    kinds = np.asarray(ds.layer_kind.values).astype(str)
    vals = np.asarray(seed_mean(ds[var]).values, float)
    y = vals[np.isin(kinds, ("act",))]
    if not (np.isfinite(y).all() and (y > 0).all()):
        raise Incomplete(f"undefined {var}_k values in the 1D net (NaN, infinite or not positive)")
    y = y[: len(y) - drop_last] if drop_last else y
    if len(y) < 3:
        raise Incomplete(f"only {len(y)} block(s) to fit")
    return np.arange(1, len(y) + 1, dtype=float), y


@_claim("C9", "trained slope of log2 D_k vs k (f = s = 2, ReLU, 1D protocol)",
        "reproduced if D slope in [-1.5, -0.5], G slope in [0.5, 1.5] and D falls faster than at init")
def check_c9(v: Verdict, scale1d: xr.Dataset | None) -> None:
    """C9: trained 1D ConvGAP with :math:`f = s = 2` and ReLU (1D protocol), fitted over all blocks but
    the last two (finite-size factor): slope of :math:`\\log_2 D_k`
    against :math:`k` in :math:`[-1.5, -0.5]` (prediction −1) and of :math:`\\log_2 G_k` in
    :math:`[0.5, 1.5]` (prediction +1), and a steeper :math:`D_k` decay than at initialisation.

    Value: the fitted :math:`\\log_2 D_k` slope of the trained net (OLS standard error).
    """
    v.sources, v.seeds = ("scale1d",), _seeds(scale1d)
    _need_states(scale1d, "init", "trained")
    ds = _at(scale1d, stride=2, activation="relu", protocol="1d")
    # the last two blocks (receptive field >= N/2) are dominated by the finite-size factor
    # 1/(1 - 2^k/N) of the denominator (methods §10.3): the power law is fitted on the others
    k, d_tr = block_curve(ds.sel(state="trained"), "D", drop_last=2)
    _, g_tr = block_curve(ds.sel(state="trained"), "G", drop_last=2)
    k0, d_in = block_curve(ds.sel(state="init"), "D", drop_last=2)
    sd, se = fit_exponent(k, d_tr, base="log2")
    sg, _ = fit_exponent(k, g_tr, base="log2")
    sd0, _ = fit_exponent(k0, d_in, base="log2")
    v.value, v.uncertainty = sd, se
    v.numbers = {"D_slope": sd, "G_slope": sg, "D_slope_init": sd0}
    v.detail = f"log2 slopes per layer: D {sd:+.2f} (init {sd0:+.2f}), G {sg:+.2f}"
    if "stride" in scale1d.dims and 1 in scale1d.stride.values:
        s1 = _at(scale1d, stride=1, activation="relu", protocol="1d").sel(state="trained")
        k1, d1 = block_curve(s1, "D")
        _, g1 = block_curve(s1, "G")
        a, _ = fit_exponent(k1, d1, base="log")
        b, _ = fit_exponent(k1, g1, base="log")
        v.detail += f"; stride 1: log–log slopes D {a:+.2f} (theory −1), G {b:+.2f} (theory +½)"
    parts = {f"D slope {sd:+.2f} (theory −1)": -1.5 <= sd <= -0.5, f"G slope {sg:+.2f} (theory +1)": 0.5 <= sg <= 1.5,
             f"D slope at init {sd0:+.2f} not above trained": sd < sd0}
    fails = _failed(parts)
    v.verdict = NOT_REPRODUCED if fails else REPRODUCED
    v.reason = ("fails: " + "; ".join(fails)) if fails else f"log2 slopes D {sd:+.2f}, G {sg:+.2f} (theory −1, +1; init D {sd0:+.2f})"


#: The trained networks of each experiment that C10 compares with their tanh variants.
_TANH_SOURCES = {"activations": "CIFAR-10", "scale2d": "2D task"}
#: The test error of chance on each experiment's task (10 classes; two classes).
_CHANCE_ERROR = {"activations": 0.9, "scale2d": 0.5}


def _tanh_pairs(ds: xr.Dataset | None, source: str) -> dict[str, dict[str, float]]:
    """Per network of ``ds`` trained with both the default activation (ReLU) and tanh: the ratio
    G_f(tanh)/G_f(ReLU) of the trained nets, the slope of the trained tanh net's log10 D_k against
    relative depth, and the ReLU net's G_out trained/init. A network whose tanh variant was not run
    (all its values NaN: the sweep's grid has no such cell) is left out; a NaN among the values of
    a variant that was run makes the check incomplete."""
    if ds is None or "activation" not in ds.dims or not {"default", "tanh"} <= {str(a) for a in ds.activation.values}:
        return {}
    _need_states(ds, "init", "trained")
    if "delta" in ds.dims:
        ds = _at(ds, delta=PAPER_DELTA)
    if "variant" in ds.dims:
        ds = _at(ds, variant="original")
    out = output_layer(ds)
    pairs = {}
    for arch in _archs(ds):
        tanh_d = _per_arch(ds, arch).D.sel(activation="tanh", state="trained")
        if not np.isfinite(tanh_d.values).any():
            continue  # no tanh variant of this net in the sweep
        g = seed_mean(_per_arch(out, arch).G)
        name = f"{arch} ({_TANH_SOURCES[source]})"
        ratio = _finite(float(g.sel(activation="tanh", state="trained") / g.sel(activation="default", state="trained")), f"{name}: G_f(tanh)/G_f(ReLU)")
        gain = _finite(float(g.sel(activation="default", state="trained") / g.sel(activation="default", state="init")), f"{name}: ReLU G_out trained/init")
        slope = _finite(_layer_slope(seed_mean(tanh_d))[0], f"{name}: tanh D_k slope")
        if "test_error" not in ds:
            raise Incomplete(f"{name}: no test error in the results (is the tanh net trained?)")
        err = _per_arch(ds, arch).test_error.sel(activation="tanh", state="trained")
        err = _finite(seed_mean(err).mean(), f"{name}: tanh test error")
        pairs[name] = {"ratio": ratio, "relu_gain": gain, "tanh_D_slope": slope, "tanh_error": err,
                       "tanh_learned": err < _CHANCE_ERROR[source] / 2}
    return pairs


@_claim("C10", "slope of ln G_k per layer, constant-filter CNN with F = s = 2, ReLU (theory: ln 2 = 0.69)",
        "reproduced if ReLU slope within 30 % of ln 2, |tanh/linear slope| < 0.1, and, among the trained CNNs with a tanh "
        "variant (the CIFAR-10 nets of the activations experiment and the tanh variants of the 2D scale-detection nets) "
        "whose ReLU version gained noise sensitivity in training (G_out trained > init) and whose tanh version learned "
        "(test error below half of chance), at least 2 and >= 75 % have "
        "tanh G_f < ReLU G_f while tanh D_k still falls with depth")
def check_c10(v: Verdict, theory: xr.Dataset | None, activations: xr.Dataset | None = None, scale2d: xr.Dataset | None = None) -> None:
    """C10: in the constant-filter model with strides, :math:`\\ln G_k` grows by about :math:`\\ln 2` per
    layer with ReLU (within 30 %) and stays flat (|slope| < 0.1 per layer) for tanh and linear; in
    trained CNNs, tanh nets have a smaller output :math:`G_f` than their ReLU counterparts while
    their :math:`D_k` still decreases with depth. Both halves are needed: theory alone, or trained
    CNNs alone, make the check incomplete.

    Which trained nets: the paper does not say which nets it retrained with tanh (open choice
    O18). We compare every network run with both activations: the CIFAR-10 nets of the
    ``activations`` experiment and the tanh variants of the 2D scale-detection nets (``scale2d``).
    The claim is that tanh *removes* the noise sensitivity that ReLU nets acquire in training, so
    it is tested on the pairs whose ReLU net did acquire it (:math:`G_\\text{out}` trained above
    init, the premise) and whose tanh net learned the task (test error below half of chance: an
    untrained net says nothing); the others are listed, not counted. Majority rule over the pairs
    that meet the premise, and at least 2 of them; none: not reproduced (the premise fails).

    Value: the ReLU slope of :math:`\\ln G_k` per layer (stride 2).
    """
    if theory is None:
        raise Incomplete("the theory experiment is missing (only the trained CNNs were run)")
    v.sources = ("theory",)
    th = _at(theory, stride=2)
    acts = [str(a) for a in th.activation.values]
    if "relu" not in acts or not {"tanh", "linear"} & set(acts):
        raise Incomplete(f"the theory needs relu and tanh or linear; have {', '.join(acts)}")
    slopes = {}
    for act in acts:
        g = th.G.sel(activation=act)
        fit = _fit_defined(g.depth.values, g.values, base="log2")
        slopes[act], se = fit.slope * math.log(2), fit.stderr * math.log(2)  # per layer, of ln G_k
        _finite(slopes[act], f"theory slope of ln G_k ({act})")
        if act == "relu":
            v.value, v.uncertainty = slopes[act], se
    relu_tol, odd_max = 0.3, 0.1  # the ReLU slope within 30 % of ln 2; |tanh, linear slope| below 0.1
    relu_ok = abs(slopes["relu"] - np.log(2)) < relu_tol * np.log(2)
    odd_ok = all(abs(s) < odd_max for a, s in slopes.items() if a in ("tanh", "linear"))
    v.detail = "theory slopes of ln G_k: " + ", ".join(f"{a} {s:+.3f}" for a, s in slopes.items())
    theory_note = f"theory ln G slope relu {slopes['relu']:+.2f}, " + ", ".join(f"{a} {s:+.2f}" for a, s in slopes.items() if a != "relu")
    # the model half on its own, for the theory chapter (kept even when the trained half is missing)
    v.numbers["model"] = {"holds": bool(relu_ok and odd_ok), "slopes": slopes, "reason": theory_note,
                          "criterion": f"ReLU slope within {100 * relu_tol:g} % of ln 2 = 0.69 per layer, |tanh/linear slope| < {odd_max:g}"}
    if activations is None and scale2d is None:
        raise Incomplete(f"{theory_note}; the trained-CNN half (activations or scale2d experiment with tanh variants) was not run")
    pairs: dict[str, dict[str, float]] = {}
    for name, ds in (("activations", activations), ("scale2d", scale2d)):
        found = _tanh_pairs(ds, name)
        if found:
            v.sources += (name,)
            pairs.update(found)
    v.seeds = ",".join(sorted({_seeds(d) for d in (activations, scale2d) if d is not None}))
    if not pairs:
        raise Incomplete(f"{theory_note}; no trained CNN was run with both the default activation and tanh "
                         f"(activations experiment or tanh variants of scale2d)")
    eligible = {n: p for n, p in pairs.items() if p["relu_gain"] > 1 and p["tanh_learned"]}
    ok = {n: p["ratio"] < 1 and p["tanh_D_slope"] < 0 for n, p in eligible.items()}
    cnn_ok = len(ok) >= 2 and _majority(list(ok.values()))
    v.detail += "; trained CNNs, G_f(tanh)/G_f(ReLU) [ReLU G_out trained/init, tanh D slope]: " + ", ".join(
        f"{n} {p['ratio']:.2g} [{p['relu_gain']:.2g}, {p['tanh_D_slope']:+.2f}]" for n, p in pairs.items())
    v.numbers["pairs"] = pairs
    left_out = [f"{n} (" + (f"ReLU G_out trained/init {p['relu_gain']:.2g}" if p["relu_gain"] <= 1 else
                            f"the tanh net did not learn: test error {p['tanh_error']:.2f}") + ")"
                for n, p in pairs.items() if n not in eligible]
    if not eligible:
        cnn_note = "no pair of a ReLU net that gained noise sensitivity in training and a tanh net that learned: " + ", ".join(left_out)
    else:
        cnn_note = (f"tanh lowers G_f with D_k still falling in {sum(ok.values())} of {len(ok)} nets whose ReLU version gained noise "
                    "sensitivity: " + ", ".join(f"{n} tanh/ReLU G_f {eligible[n]['ratio']:.2g}" for n in ok)
                    + (f" (at least 2 needed)" if len(ok) < 2 else ""))
    if left_out and eligible:
        cnn_note += "; not counted (ReLU G_out fell in training, or the tanh net did not learn): " + ", ".join(left_out)
    parts = {theory_note: relu_ok and odd_ok, cnn_note: cnn_ok}
    fails = _failed(parts)
    v.verdict = NOT_REPRODUCED if fails else REPRODUCED
    v.reason = ("fails: " + "; ".join(fails)) if fails else f"{theory_note}; {cnn_note}"


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------

_CHECKS: dict[str, Callable[..., Verdict]] = {
    "C1": check_c1, "C2": check_c2, "C3": check_c3, "C4": check_c4, "C5": check_c5,
    "C6": check_c6, "C7": check_c7, "C8": check_c8, "C9": check_c9, "C10": check_c10,
}


def evaluate(profile: str = "quick", root: str | os.PathLike | None = None, *, only: Sequence[str] | None = None) -> list[Verdict]:
    """Check every claim (or the claims ``only`` names, in :data:`CLAIMS` order) against the results of ``profile``.

    An experiment with no results at this profile is ``None`` for its checks (missing everywhere:
    "not run") and is listed in the verdict's ``missing``; one whose results cannot be read gives
    an "error" verdict naming the problem. A book chapter calls it with ``only`` for the verdicts
    it prints, so they are the claims page's.
    """
    from pathlib import Path

    from .results import default_root, open_experiment

    if only is not None and (unknown := sorted(set(only) - set(CLAIMS))):
        raise ValueError(f"unknown claim(s) {', '.join(unknown)}; the claims are {', '.join(CLAIMS)}")
    base = Path(root) if root is not None else default_root()
    cache: dict[str, xr.Dataset | None | Exception] = {}

    def get(name: str) -> xr.Dataset | None | Exception:
        if name not in cache:
            if not any((base / profile / name).glob("*.nc")):
                cache[name] = None  # not run at this profile
            else:
                try:
                    cache[name] = open_experiment(name, profile=profile, root=base)
                except Exception as err:  # noqa: BLE001 - unreadable results: the claim's verdict is "error"
                    cache[name] = err
        return cache[name]

    verdicts = []
    for cid, (statement, needs) in CLAIMS.items():
        if only is not None and cid not in only:
            continue
        datasets = [get(n) for n in needs]
        broken = [(n, d) for n, d in zip(needs, datasets) if isinstance(d, Exception)]
        if broken:
            n, err = broken[0]
            v = Verdict(cid, statement, "", verdict=ERROR, reason=f"results of {n} could not be read: {type(err).__name__}: {err}")
        else:
            v = _CHECKS[cid](*datasets)
        v.profile = profile
        v.missing = tuple(n for n, d in zip(needs, datasets) if d is None)
        verdicts.append(v)
    return verdicts


def verdict_table(verdicts: list[Verdict]) -> pd.DataFrame:
    """One row per claim: verdict, the one-line reason, value ± uncertainty, quantity, profile, seeds, sources."""
    rows = []
    for v in verdicts:
        val = "—" if not np.isfinite(v.value) else (f"{v.value:.3g} ± {v.uncertainty:.2g}" if np.isfinite(v.uncertainty) else f"{v.value:.3g}")
        rows.append({"claim": v.claim, "verdict": v.verdict, "reason": v.reason, "value": val, "quantity": v.quantity,
                     "profile": v.profile, "seeds": v.seeds or "-", "from": ", ".join(v.sources) or "-"})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# what this build shows, and what would decide a claim it does not reproduce
# ------------------------------------------------------------------------------------------------

#: How :func:`finding` words each verdict.
_FINDING = {
    REPRODUCED: "the data show it",
    NOT_REPRODUCED: "the data do not show it",
    INCOMPLETE: "the data cannot decide it",
    NOT_RUN: "not measured",
    ERROR: "the check failed",
}

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>$|])")


def _md(text: str) -> str:
    """``text`` with Markdown's special characters escaped: a reason is data, never markup."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def finding(v: Verdict, *, part: str | None = None, criterion: bool = False) -> str:
    """What this build's data show about the claim of ``v``, as one Markdown sentence.

    It is made from the verdict alone: the verdict, the check's one-line reason (with the measured
    numbers), the profile, and the experiments the claim needs that were not run at it. So it uses
    exactly the criterion of the claims page and flips with the data. Book chapters print it
    beside the paper's statement of the claim ("**The paper:** …") instead of a hand-written
    reading of their figures.

    ``part`` names one half of a claim that its check records on its own in ``v.numbers[part]``
    as ``{"holds", "reason", "criterion"}`` (C10's ``"model"``: the constant-filter model, for the
    theory chapter); the sentence then says whether that half holds, or why it could not be checked.
    ``criterion=True`` appends the criterion the verdict applies.

    >>> v = Verdict("C4", CLAIMS["C4"][0], "", verdict=NOT_REPRODUCED, profile="quick", reason="holds in 0 of 4 nets")
    >>> finding(v)
    '**This build (quick profile):** the data do not show it (C4 *not reproduced*): holds in 0 of 4 nets.'
    """
    where = f"This build ({v.profile} profile)" if v.profile else "This build"
    rule = v.criterion
    if part is None:
        head = f"{_FINDING.get(v.verdict, v.verdict)} ({v.claim} *{v.verdict}*)"
        reason = v.reason
    elif isinstance(sub := v.numbers.get(part), dict):
        verdict = REPRODUCED if sub["holds"] else NOT_REPRODUCED
        head = f"{_FINDING[verdict]} ({v.claim}, {part} part: *{verdict}*)"
        reason, rule = sub["reason"], sub.get("criterion", rule)
    else:
        head = f"{v.claim}, {part} part: not checked ({v.claim} *{v.verdict}*)"
        reason = v.reason
    reason = reason.rstrip(". ") or "the check gave no reason"
    text = f"**{where}:** {head}: {_md(reason)}."
    if v.missing and v.verdict != NOT_RUN:
        text += f" Not run at this profile, so not part of it: {', '.join(v.missing)}."
    if criterion and rule:
        text += f" Criterion: {_md(rule.rstrip('.'))}."
    return text


#: Marks what no measurement backs yet in :data:`DECIDING` (a whole field, or the part of one that
#: names a candidate still to be tried).
TO_BE_MEASURED = "to be measured"


@dataclass(frozen=True)
class Deciding:
    """What would decide a claim that a build does not reproduce: one entry of :data:`DECIDING`.

    Plain text, edited by hand as measurements come in. Say "measured" or "estimated" next to every
    number, and write :data:`TO_BE_MEASURED` wherever no measurement exists yet.

    Attributes:
        trend: the measured trend of the claim's quantity over the configurations tried, with its
            numbers (e.g. "G_out trained/init rises with test accuracy: 0.11 at 52 % → 0.49 at 80 %").
        config: the cheapest configuration measured to reverse the verdict (profile or recipe,
            networks, epochs, data), or "none affordable" followed by the candidate to try next.
        cost: what ``config`` costs and on what hardware, marked measured or estimated (e.g.
            "≈ 14 min on 2 CPU cores (measured)", "≈ 6 GPU-hours (estimated)").
        source: where the numbers are recorded: files and sections ("docs/regimes.md#choice").
    """

    trend: str
    config: str
    cost: str
    source: str

    @property
    def pending(self) -> tuple[str, ...]:
        """The fields that still wait for a measurement (those mentioning :data:`TO_BE_MEASURED`)."""
        return tuple(f for f in ("trend", "config", "cost", "source") if TO_BE_MEASURED in getattr(self, f).lower())


_QUICK_RUN = "bench/RESULTS.md#re-run-with-the-one-epoch-warm-up-commit-5860ce1-2026-12-03"
_REGIMES = "docs/regimes.md#hypotheses-and-measurements-cifar-10"
_TRAJECTORIES = "bench/trajectories.py (per-epoch trajectories of every claim's quantity)"

#: Claim id -> what would decide it when a build does not reproduce it (rendered by
#: :func:`deciding_table` on the claims page, for the claims of :data:`UNDECIDED` verdicts only).
#: "quick" numbers are those of the `make book` of 2026-12-03 (bench/RESULTS.md).
DECIDING: dict[str, Deciding] = {
    "C1": Deciding(
        trend="reproduced at quick: init R_k in (0.5, 2) at 87 of 87 probe points of 6 CIFAR-10 nets, median 0.91 "
              "(a claim about initialisation: no training involved)",
        config="the quick profile's init measurements (layers and architectures sweeps, P = 200 and 500 probe images)",
        cost="≈ 2 min on 2 CPU cores for the 10 init measurements alone (estimated from ≈ 10 s per measurement cell, "
             "measured); ≈ 14 min with the trainings of both sweeps (measured: 657 s + 158 s)",
        source=_QUICK_RUN),
    "C2": Deciding(
        trend="the error rises with R_f across nets; the law ε ≈ 0.2·√R_f itself puts R_f ≈ 1 at 80 % accuracy, so R_f ≪ 1 "
              "needs errors of a few percent (measured R_f = 0.5–1 at 67–80 %). At quick (6 nets, 44–79 % accuracy) "
              "ε = 0.36·R_f^0.28 (se 0.07), reproduced near the edges of the criterion (b ≥ 0.25, A ≤ 0.4); "
              "not reproduced (b = 0.06 ± 0.17) while VGG11 collapsed untrained",
        config="the quick profile with its one-epoch lr warm-up (6 nets, 6 epochs on all 50,000 images)",
        cost="≈ 14 min on 2 CPU cores (measured: layers sweep 657 s + architectures sweep 158 s)",
        source=f"{_QUICK_RUN}; {_REGIMES}"),
    "C3": Deciding(
        trend="trained D_k falls with depth faster than at init in 4 of 4 nets at quick and in 8 of the 11 regimes of "
              "the regime table (slope per unit depth from +0.14…+0.65 at init to −0.17…−1.10); the exceptions are LeNets "
              "trained on 2,000–5,000 images (33–43 % test accuracy, slope +0.07 to +0.50)",
        config="the quick profile's layers sweep (4 nets, 6 epochs on all 50,000 images)",
        cost="≈ 11 min on 2 CPU cores (measured: layers sweep 657 s)",
        source=f"{_QUICK_RUN}; {_REGIMES}"),
    "C4": Deciding(
        trend="G_out trained/init rises with test accuracy but stays below 1 in every short regime measured: 0.11 at 52 % "
              "(LeNet) → 0.49 at 80 % (VGG11 ×0.25, 20 epochs) → 0.75–0.78 at 85 % (paper recipe compressed to 60 epochs); "
              "0.20–0.31 at 57–79 % at quick. On the paper's whole 250-epoch schedule (VGG11 ×0.25) it stays below 1 for "
              "140 epochs, then is 1.00–1.18 at every snapshot from epoch 150 to 250 (the low-lr part), trained G_k slope "
              "+0.14…+0.20; through a clean-clone make book (laptop profile, P = 500, best epoch): 1.07 ± 0.06 "
              "(+1.1 jackknife SE from 1), trained G slope +0.16 at 88 % (reproduced, 1 of 1 net, weak evidence)",
        config="the laptop profile: VGG11 ×0.25 trained on the paper's 250-epoch schedule on all 50,000 images "
               "(make book PROFILE=laptop; bench/trajectories.py vgg11_w025_250ep)",
        cost="62–87 min of training on 2 CPU cores (measured: 14.8 s per epoch over epochs 150–250 of the trajectory; "
             "20.3 s per epoch, 87 min, in the clean-clone make book of 2026-12-07: shared machines differ); a second seed, "
             "which would sharpen the weak margin, costs the same again; the paper's full-width nets ≈ 16× that per net "
             "(estimated from the width)",
        source=f"{_REGIMES}; docs/regimes.md#trajectories-per-epoch"),
    "C5": Deciding(
        trend="as C4 before its reversal: at quick 0 of 5 trainable (net, noise level) pairs; LeNet at σ = 0 has R_f 1.3 "
              "and G_f trained/init 0.2 at 57 % accuracy. C4 reverses only in the last 100 epochs of the paper's 250-epoch "
              "schedule (VGG11 ×0.25), so each noise level needs that schedule",
        config="none affordable: the laptop profile's 250-epoch VGG11 ×0.25 trained at each noise level of C5's criterion "
               "(at least 3 trainable levels; the paper has 7), not measured",
        cost="≈ 62 min of training per noise level on 2 CPU cores (estimated from the C4 run): ≥ 3 h for 3 levels",
        source=f"{_QUICK_RUN}; {_REGIMES}"),
    "C6": Deciding(
        trend="the shuffled/original D ratio of the second half exceeds 2 but R's does not: on the paper's whole "
              "250-epoch schedule (VGG11 ×0.25) D 0.9–1.0 (first half) → 2.1–3.1 (second half) from epoch 60 on, R "
              "0.96–1.0 → 0.6–0.9 (shuffling lowers R in the second half) at every epoch; 60-epoch runs: VGG11 R ≤ 1.3, "
              "VGG11bn D 1.0 → 1.2–2.2, R ≤ 2.0; at quick 0 of 4 nets",
        config="none affordable: not reversed by the paper's whole schedule for VGG11 ×0.25 (measured per 10 epochs) "
               "nor by 60 epochs of VGG11bn; the paper's nets are full width (not measured here)",
        cost="a full-width VGG11 on the 250-epoch schedule ≈ 16 h on 2 CPU cores (estimated: 16× the ×0.25 run)",
        source=f"{_QUICK_RUN}; docs/regimes.md#trajectories-per-epoch"),
    "C7": Deciding(
        trend="the filters' homogeneous fraction rises from 1/9 in both halves; which half gains more depends on the net "
              "and on training length: VGG11 ×0.25 on the 250-epoch schedule, late half more until epoch 160, early half "
              "more from epoch 170 to 250 (0.188–0.196 vs 0.185–0.188; through the pipeline +0.079 vs +0.073: reproduced, "
              "1 of 1 net); VGG11bn late half more at every epoch of 60 (0.18 vs 0.22–0.25); at quick 1 of 4 nets",
        config="the laptop profile: VGG11 ×0.25 on the paper's 250-epoch schedule (the C4 network)",
        cost="≈ 62 min of training on 2 CPU cores (measured, shared with C4); the spectra themselves ≈ 1 min",
        source=f"{_QUICK_RUN}; docs/regimes.md#trajectories-per-epoch"),
    "C8": Deciding(
        trend="VGG11 (no BatchNorm) fails at every training length measured: trained G_k falls with depth (slope −0.41 "
              "at 30 and 60 epochs, −0.13 at 100) and shuffling moves its second-half D_k by ×2.7–4.6; flat from epoch ~60 "
              "on (zero hinge loss). The BatchNorm VGGs hold: VGG11bn G slope +1.7, R_f 0.002; VGG16bn +1.15, R_f 0.014 "
              "(×0.25, seed 0, measured per epoch)",
        config="the paper's first four 2D-task nets (VGG11, VGG11bn, VGG13bn, VGG16bn) at the quick profile's 30 epochs: "
               "3 of 4 hold, the 75 % majority (the verdicts at 30 and 60 epochs are the same)",
        cost="≈ 1.5 s per epoch per net at ×0.25 on 1 CPU core (measured): ≈ 1 min of training per net",
        source="docs/regimes.md#trajectories-per-epoch; bench/trajectories/scale2d_*.json"),
    "C9": Deciding(
        trend="the trained slopes approach the theory with the training time past interpolation (stride-2 ReLU cell, "
              "width 64): G slope per block +0.11 at 2·e0, +0.48 at 10·e0, +0.92 at 30·e0 (theory +1); D slope −0.81, "
              "−0.80, −1.07 (theory −1)",
        config="train to 30 times the interpolation epoch e0 (the quick profile's stride-2 cell, width 64, ridge 0.01)",
        cost="≈ 4.5 min of training on 2 CPU cores (measured: 268 s; the scale1d sweep 323 s)",
        source="docs/regimes.md#the-1d-model-claim-c9"),
    "C10": Deciding(
        trend="the constant-filter model holds (ReLU ln G_k slope ≈ ln 2, tanh flat). Trained: where the ReLU net gains "
              "noise sensitivity, tanh removes most of it — 2D task, VGG11bn: G_f(tanh)/G_f(ReLU) = 0.075 (ReLU G_out "
              "×36 over init, tanh ×2); where the ReLU net's G_out falls in training there is nothing to remove and "
              "tanh is not lower: 2D-task VGG11 2.1, CIFAR-10 AlexNet 1.7, LeNet 1.1 (measured)",
        config="the tanh variants of the 2D-task nets at the quick profile (VGG11, VGG11bn, VGG13bn, VGG16bn, 30 epochs); "
               "the CIFAR-10 half needs C4's reversal first",
        cost="≈ 1 min of training per tanh net on 1 CPU core (measured, ×0.25, 1,024 images)",
        source="docs/regimes.md#trajectories-per-epoch; bench/trajectories/scale2d_*tanh*.json"),
}

#: The entry of a claim missing from :data:`DECIDING`.
_NO_ENTRY = Deciding(TO_BE_MEASURED, TO_BE_MEASURED, TO_BE_MEASURED, "—")


def deciding_table(verdicts: Sequence[Verdict], entries: Mapping[str, Deciding] | None = None) -> pd.DataFrame:
    """What would decide each claim that ``verdicts`` leave undecided (:data:`UNDECIDED`: not
    reproduced or incomplete): one row with its verdict and its entry of ``entries`` (default
    :data:`DECIDING`): the measured trend, the cheapest configuration that reverses it, its cost and
    the source of the numbers. Claims reproduced, not run or whose check failed get no row; an
    undecided claim without an entry gets one that says "to be measured"."""
    entries = DECIDING if entries is None else entries
    rows = []
    for v in verdicts:
        if v.verdict in UNDECIDED:
            d = entries.get(v.claim, _NO_ENTRY)
            rows.append({"claim": v.claim, "verdict": v.verdict, "measured trend": d.trend,
                         "what would decide it": d.config, "cost": d.cost, "source": d.source})
    return pd.DataFrame(rows, columns=["claim", "verdict", "measured trend", "what would decide it", "cost", "source"])
