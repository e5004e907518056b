r"""The estimator core shared by :mod:`diffeosens.sensitivity` and :mod:`diffeosens.theory`.

With :math:`a_n = f_k(x_n)` the clean and :math:`b_n` the perturbed representations of
:math:`P` inputs, flattened over all units:

* numerator :math:`\mathrm{num} = \frac1P\sum_n \|b_n - a_n\|^2` (:func:`mean_sq_change`;
  streamed per row by :func:`row_sq_dist`);
* denominator, the mean over **all** :math:`P^2` ordered pairs, diagonal included,
  :math:`\mathrm{deno} = \frac{1}{P^2}\sum_{n,m}\|a_n - a_m\|^2 = \frac2P\sum_n\|a_n - \bar a\|^2`
  (:func:`pair_mean_sq_distance`; streamed over mini-batches by :class:`Moments`);
* ratios :math:`\mathrm{num}/(\mathrm{deno} + 10^{-10})` (:func:`guarded_ratio`, the reference's
  guard :data:`DENO_EPS`; the stored ``deno`` never includes it).

:class:`Accumulator` streams a model's clean and perturbed representations into these
quantities, with a delete-a-group jackknife (``estimator="mean"``), or keeps them for the
NeurIPS-2021 median estimator with a bootstrap (``estimator="median"``).

Standard errors need at least :data:`MIN_PROBES_FOR_SE` = 10 probe images; below, every ``*_se``
is NaN and :class:`SmallProbeSetWarning` says why. The reasons for 10:

* at :math:`P = 2` a leave-one-out replicate keeps one image, whose denominator is 0, so the
  replicates of D and G are :math:`\mathrm{num}/10^{-10}` and the "standard error" is of order
  :math:`10^{11}` (a number that means nothing, not merely an imprecise one); at :math:`P = 3`
  each replicate's denominator rests on a single pair of images;
* a jackknife or bootstrap standard error is itself estimated from the :math:`P` images; its
  relative uncertainty is about :math:`1/\sqrt{2(P-1)}` for well-behaved data, 35 % at
  :math:`P = 5` and 24 % at :math:`P = 10`, more for the heavy-tailed squared changes measured
  here, and the jackknife of a ratio (D, G, R) relies on a linearisation that few images do not
  support;
* the bootstrap of a median of fewer than 10 values takes only a handful of distinct values.

Ten is the smallest round count at which the error is a usable order of magnitude (the smoke
profile measures 16 images, the others hundreds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..validation import warn_caller

__all__ = [
    "DENO_EPS",
    "ESTIMATORS",
    "MEDIANS",
    "MIN_PROBES_FOR_SE",
    "Accumulator",
    "SmallProbeSetWarning",
    "Moments",
    "apply_off_diagonal",
    "centred_sq_sum",
    "guarded_ratio",
    "jackknife_se",
    "mean_sq_change",
    "pair_mean_sq_distance",
    "pair_median",
    "row_sq_dist",
    "take_median",
]

#: Added to the denominator of D and G as in the reference (methods §4.3).
DENO_EPS = 1e-10

ESTIMATORS = ("mean", "median")
#: How the median estimator takes the median of an even count: the lower middle value (``torch.median``,
#: as the NeurIPS-2021 reference code does) or the average of the two middle values.
MEDIANS = ("lower", "average")

#: The fewest probe images with standard errors (see the module docstring); below, ``*_se`` are NaN.
MIN_PROBES_FOR_SE = 10


class SmallProbeSetWarning(UserWarning):
    """Too few probe images for a standard error: the ``*_se`` variables are NaN."""


#: Row chunks of about this many elements are differenced in a small, cache-resident scratch
#: buffer, so each representation is read once from memory instead of written and re-read.
CHUNK_ELEMENTS = 1 << 18


# ------------------------------------------------------------------------------------------------
# Distances and ratios
# ------------------------------------------------------------------------------------------------


def row_sq_dist(b: Tensor, a: Tensor, scratch: Tensor) -> Tensor:
    r"""Per-row squared distances :math:`\|b_n - a_n\|^2` of two ``(B, d)`` tensors, as float64 ``[B]``.

    ``scratch``: a buffer of at least ``min(B, CHUNK_ELEMENTS // d + 1) * d`` elements in ``b``'s
    dtype and device, reused across calls (the accumulator keeps one).
    """
    n, d = b.shape
    rows = max(1, CHUNK_ELEMENTS // max(d, 1))
    out = torch.empty(n, dtype=b.dtype, device=b.device)
    for s in range(0, n, rows):
        e = min(s + rows, n)
        diff = torch.sub(b[s:e], a[s:e], out=scratch[: (e - s) * d].view(e - s, d))
        torch.linalg.vector_norm(diff, dim=1, out=out[s:e])
    return out.double().square()


def centred_sq_sum(a: Tensor, mean: Tensor, scratch: Tensor) -> float:
    r""":math:`\sum_n \|a_n - \bar a\|^2` of a ``(B, d)`` tensor (centred before squaring: no cancellation)."""
    return float(row_sq_dist(a, mean.expand_as(a), scratch).sum())


def mean_sq_change(b: Tensor, a: Tensor) -> float:
    r"""The numerator :math:`\frac1P\sum_n \|b_n - a_n\|^2` of ``(P, ...)`` tensors (methods §4.2).

    Squares summed in the tensors' dtype, exactly for exactly representable sums (the theory's
    one-hot responses); :class:`Accumulator` streams the same quantity with :func:`row_sq_dist`.
    """
    return float((b - a).reshape(a.shape[0], -1).square().sum(1).mean())


def pair_mean_sq_distance(a: Tensor) -> float:
    r"""The denominator :math:`\frac1{P^2}\sum_{n,m}\|a_n - a_m\|^2` of a ``(P, ...)`` tensor.

    All ordered pairs, diagonal included, by the moment identity
    :math:`\frac2P\sum_n\|a_n-\bar a\|^2` in float64 (centred before squaring; methods §4.3–4.4),
    without the guard :data:`DENO_EPS` (see :func:`guarded_ratio`). :class:`Moments` streams
    the same quantity over mini-batches.
    """
    flat = a.reshape(a.shape[0], -1).double()
    centred = flat - flat.mean(0, keepdim=True)
    return 2.0 * float(centred.square().sum()) / flat.shape[0]


def guarded_ratio(num: Any, deno: Any) -> Any:
    r""":math:`\mathrm{num}/(\mathrm{deno} + 10^{-10})`: D or G from a numerator and the denominator."""
    return num / (deno + DENO_EPS)


# ------------------------------------------------------------------------------------------------
# Streaming moments, jackknife, medians
# ------------------------------------------------------------------------------------------------


class Moments:
    """Per-group counts, means (float64 vectors) and summed squared deviations (float64 scalars)."""

    def __init__(self, n_groups: int) -> None:
        self.n = np.zeros(n_groups)
        self.m2 = np.zeros(n_groups)
        self.mean: Tensor | None = None  # [G, d] float64

    def add(self, group: int, a: Tensor, scratch: Tensor) -> None:
        """Merge the rows of ``a`` [b, d] (compute dtype) into ``group`` (Chan et al.'s update)."""
        nb = a.shape[0]
        mb = a.mean(0)
        m2b = centred_sq_sum(a, mb, scratch) if nb > 1 else 0.0
        mb = mb.to(torch.float64)
        if self.mean is None:
            self.mean = torch.zeros((len(self.n), a.shape[1]), dtype=torch.float64, device=a.device)
        na = self.n[group]
        tot = na + nb
        delta = mb - self.mean[group]
        self.mean[group] += delta * (nb / tot)
        self.m2[group] += m2b + float(delta.square().sum()) * na * nb / tot
        self.n[group] = tot

    def deno(self) -> tuple[float, np.ndarray]:
        """``2 M2 / P`` over all images, and its leave-one-group-out values ``[G]``."""
        assert self.mean is not None
        n = self.n
        total = n.sum()
        mu = (self.mean * torch.as_tensor(n, dtype=torch.float64, device=self.mean.device)[:, None]).sum(0) / total
        q = (self.mean - mu).square().sum(1).cpu().numpy()  # |mu_g - mu|^2
        between = float((n * q).sum())
        m2 = self.m2.sum() + between
        rest = total - n
        with np.errstate(divide="ignore", invalid="ignore"):
            m2_loo = (self.m2.sum() - self.m2) + between - n * q - np.where(rest > 0, n**2 * q / rest, 0.0)
            deno_loo = 2.0 * m2_loo / rest
        return 2.0 * m2 / total, deno_loo


def jackknife_se(loo: np.ndarray) -> float:
    r"""Delete-a-group jackknife standard error :math:`\sqrt{\frac{G-1}{G}\sum_g(\theta_{-g}-\bar\theta)^2}` (finite values only)."""
    loo = loo[np.isfinite(loo)]
    g = len(loo)
    if g < 2:
        return float("nan")
    return float(np.sqrt((g - 1) / g * np.square(loo - loo.mean()).sum()))


def take_median(x: Tensor, dim: int, kind: str = "lower") -> Tensor:
    """Median along ``dim``: for an even count, ``"lower"`` takes the lower of the two middle values
    (``torch.median``, the reference's choice), ``"average"`` their mean (the textbook median)."""
    s = x.sort(dim=dim).values
    n = s.shape[dim]
    lo = s.narrow(dim, (n - 1) // 2, 1)
    if kind == "lower":
        return lo.squeeze(dim)
    hi = s.narrow(dim, n // 2, 1)
    return ((lo + hi) / 2).squeeze(dim)


def pair_median(a: Tensor, kind: str = "lower") -> float:
    """Median of all P^2 ordered pairwise squared distances (diagonal zeros included)."""
    a = a.to(torch.float64)
    d2 = torch.cdist(a, a).square()
    return float(take_median(d2.flatten(), 0, kind))


# ------------------------------------------------------------------------------------------------
# The accumulator
# ------------------------------------------------------------------------------------------------


@dataclass
class Accumulator:
    """Streams clean and perturbed representations of ``layers`` (probe names) and returns the results."""

    layers: list[str]  # probe-point names, in probe order
    names: list[str]  # perturbation names
    P: int
    estimator: str
    n_groups: int
    n_draws: int = 1
    median: str = "lower"  # even counts: "lower" middle value (the reference) or "average"
    sums: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # name -> layer -> [P]
    moments: dict[str, Moments] = field(default_factory=dict)
    stored_clean: dict[str, list[Tensor]] = field(default_factory=dict)
    stored_diff: dict[str, dict[str, list[tuple[int, Tensor]]]] = field(default_factory=dict)
    _scratch_buf: Tensor | None = None
    _clean: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        for nm in self.names:
            self.sums[nm] = {l: np.zeros(self.P) for l in self.layers}
            self.stored_diff[nm] = {l: [] for l in self.layers}
        for l in self.layers:
            self.moments[l] = Moments(self.n_groups)
            self.stored_clean[l] = []

    def group_slices(self, start: int, stop: int) -> Iterator[tuple[int, slice]]:
        """Split images start..stop-1 by jackknife group (contiguous groups of ~P/G images)."""
        g_of = lambda n: n * self.n_groups // self.P  # noqa: E731
        s = start
        while s < stop:
            g = g_of(s)
            e = s
            while e < stop and g_of(e) == g:
                e += 1
            yield g, slice(s - start, e - start)
            s = e

    def _scratch(self, like: Tensor) -> Tensor:
        """A small scratch buffer (``CHUNK_ELEMENTS`` plus one row) in ``like``'s dtype and device."""
        need = CHUNK_ELEMENTS + like.shape[1]
        buf = self._scratch_buf
        if buf is None or buf.numel() < need or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._scratch_buf = torch.empty(need, dtype=like.dtype, device=like.device)
        return buf

    def clean_consumer(self, start: int, clone: bool = False) -> Callable[[int, Tensor], None]:
        """Consumer of the clean forward of images ``start..``: keeps them and updates the moments."""
        self._clean = [None] * len(self.layers)

        def consume(i: int, a: Tensor) -> None:
            a = a.clone() if clone else a
            self._clean[i] = a
            name = self.layers[i]
            if self.estimator == "median":
                self.stored_clean[name].append(a.to("cpu", torch.float64))
            scratch = self._scratch(a)
            for g, sl in self.group_slices(start, start + a.shape[0]):
                self.moments[name].add(g, a[sl], scratch)

        return consume

    def perturbed_consumer(self, pert: str, start: int) -> Callable[[int, Tensor], None]:
        """Consumer of a perturbed forward: adds the squared changes of the representations."""

        def consume(i: int, b: Tensor) -> None:
            name = self.layers[i]
            a = self._clean[i]
            sq = row_sq_dist(b, a, self._scratch(b)).cpu().numpy()
            self.sums[pert][name][start : start + len(sq)] += sq / self.n_draws
            if self.estimator == "median":
                self.stored_diff[pert][name].append((start, (b - a).square().to("cpu", torch.float64)))

        return consume

    def end_batch(self) -> None:
        self._clean = []

    # -------------------------------------------------------------------------------- results

    def finish(self, ratios: Mapping[str, tuple[str, str]], n_boot: int, seed: int) -> dict[str, np.ndarray]:
        """Per layer: ``deno``, ``num_<name>``, ``<name>`` and each ratio ``{out: (a, b)}`` as
        ``out = num_a / num_b``, each with ``*_se``."""
        L = len(self.layers)
        out: dict[str, np.ndarray] = {}
        keys = ["deno"] + [f"num_{n}" for n in self.names] + self.names + list(ratios)
        for k in keys:
            out[k] = np.full(L, np.nan)
            out[k + "_se"] = np.full(L, np.nan)
        few = self.P < MIN_PROBES_FOR_SE
        if few:
            why = ("the jackknife error is itself unreliable (at P = 2 a leave-one-out replicate keeps one image and has "
                   "no denominator)" if self.estimator == "mean" else
                   "the bootstrap of a median of so few images takes only a handful of values")
            warn_caller(
                f"standard errors need at least {MIN_PROBES_FOR_SE} probe images, got P = {self.P}: {why}, so every *_se "
                "is NaN; measure more images for an error bar", SmallProbeSetWarning)
        for i, l in enumerate(self.layers):
            if self.estimator == "mean":
                est, se = self._mean_layer(l, ratios)
            else:
                est, se = self._median_layer(l, ratios, 0 if few else n_boot, seed)
            for k in keys:
                out[k][i] = est[k]
                out[k + "_se"][i] = np.nan if few else se[k]
        return out

    def _mean_layer(self, lname: str, ratios: Mapping[str, tuple[str, str]]) -> tuple[dict[str, float], dict[str, float]]:
        deno, deno_loo = self.moments[lname].deno()
        group = np.arange(self.P) * self.n_groups // self.P
        counts = np.bincount(group, minlength=self.n_groups).astype(float)
        est: dict[str, float] = {"deno": deno}
        loo: dict[str, np.ndarray] = {"deno": deno_loo}
        for nm in self.names:
            e = self.sums[nm][lname]
            gsum = np.bincount(group, weights=e, minlength=self.n_groups)
            num = e.mean()
            with np.errstate(divide="ignore", invalid="ignore"):
                num_loo = (e.sum() - gsum) / (self.P - counts)
            est[f"num_{nm}"] = num
            loo[f"num_{nm}"] = num_loo
            est[nm] = guarded_ratio(num, deno)
            loo[nm] = guarded_ratio(num_loo, deno_loo)
        for name, (a, b) in ratios.items():
            with np.errstate(divide="ignore", invalid="ignore"):
                est[name] = est[f"num_{a}"] / est[f"num_{b}"]
                loo[name] = loo[f"num_{a}"] / loo[f"num_{b}"]
        return est, {k: jackknife_se(v) for k, v in loo.items()}

    def _median_layer(self, lname: str, ratios: Mapping[str, tuple[str, str]], n_boot: int, seed: int) -> tuple[dict[str, float], dict[str, float]]:
        clean = torch.cat(self.stored_clean[lname])
        diffs = {}
        for nm in self.names:  # arrange the squared changes as [draws, P, d]
            chunks = self.stored_diff[nm][lname]
            full = torch.empty((self.n_draws, self.P, chunks[0][1].shape[1]), dtype=torch.float64)
            seen: dict[int, int] = {}
            for start, sq in chunks:
                k = seen.get(start, 0)
                seen[start] = k + 1
                full[k, start : start + sq.shape[0]] = sq
            diffs[nm] = full

        def estimate(rows: Tensor | None) -> dict[str, float]:
            c = clean if rows is None else clean[rows]
            deno = pair_median(c, self.median)
            r: dict[str, float] = {"deno": deno}
            for nm, d in diffs.items():
                d = d if rows is None else d[:, rows]
                num = float(take_median(d.reshape(-1, d.shape[-1]), 0, self.median).sum())
                r[f"num_{nm}"] = num
                r[nm] = guarded_ratio(num, deno)
            for name, (a, b) in ratios.items():
                r[name] = r[f"num_{a}"] / r[f"num_{b}"] if r[f"num_{b}"] else float("nan")
            return r

        est = estimate(None)
        g = torch.Generator().manual_seed(seed)
        boots = [estimate(torch.randint(0, self.P, (self.P,), generator=g)) for _ in range(n_boot)]
        se = {k: float(np.std([b[k] for b in boots], ddof=1)) if n_boot > 1 else float("nan") for k in est}
        return est, se


def apply_off_diagonal(values: dict[str, np.ndarray], P: int) -> None:
    r"""Switch ``values`` (of :meth:`Accumulator.finish`) in place to the off-diagonal pair mean
    :math:`\frac{P}{P-1}\mathrm{deno}` (open choice O4): the denominator grows, the sensitivities shrink."""
    f = P / (P - 1)
    values["deno"] *= f
    values["deno_se"] *= f
    for k in list(values):
        if k in ("deno", "deno_se", "R", "R_se") or k.startswith("num_"):
            continue
        values[k] /= f
