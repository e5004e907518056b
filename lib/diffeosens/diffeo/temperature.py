r"""Temperature, cutoff and typical displacement of the max-entropy diffeomorphisms (methods §2.9–2.10).

The mode set is :math:`\mathcal M_c = \{(i, j): i, j \ge 1,\ \sqrt{i^2+j^2} < c + \tfrac12\}`; a
temperature :math:`T` gives the coefficients the variance :math:`T/(i^2+j^2)`. :math:`\delta`
(``delta``) is the typical displacement **in pixels**,
:math:`\delta = \frac{n}{2}\sqrt{\pi T \ln c}`; for non-square images
:math:`n = n_\mathrm{eff} = \sqrt{(H^2 + W^2)/2}`, which keeps :math:`\delta` the centre rms
displacement.

The cutoff :math:`c = 1` (a single mode) makes :math:`\ln c = 0`; the reference then divides by
zero. Here :math:`\ln c` is replaced, for :math:`c = 1` only, by the value :math:`L(1) = 4/\pi`
for which :math:`\delta` is the *exact* rms displacement at the image centre,
:math:`\langle |d|^2 \rangle_\text{centre} = 2 n^2 T \sum_{\mathcal M_c,\ i,j\ \text{odd}}
(i^2+j^2)^{-1}`. With ``exact=True`` that exact centre definition is used for every cutoff.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..validation import caller_stacklevel, check_not_bool

__all__ = [
    "PAPER_CUT",
    "PAPER_DELTA",
    "OverhangWarning",
    "check_mode_count",
    "max_mode_index",
    "mode_sum",
    "resolve_temperature",
    "temperature_for",
    "temperature_range",
    "typical_displacement",
]

#: The paper's perturbation: a typical displacement of one pixel ...
PAPER_DELTA = 1.0
#: ... with the mode cutoff :math:`c = 3` (methods §2.11).
PAPER_CUT = 3


class OverhangWarning(UserWarning):
    """The temperature exceeds :math:`T_\\max`: the field may fold (no longer a diffeomorphism)."""


# ----------------------------------------------------------------------------------------------
# Scalars: mode set, temperatures, typical displacement
# ----------------------------------------------------------------------------------------------


_MEANINGS = {"T": "a temperature", "delta": "a typical displacement in pixels", "cut": "the mode cutoff c >= 1"}


def as_float64(x: Any, name: str) -> tuple[Tensor, bool]:
    """Return ``x`` as a float64 CPU tensor and whether it was a Python/NumPy scalar (bools are refused)."""
    check_not_bool(x, name, _MEANINGS.get(name, "a real number"))
    scalar = not isinstance(x, Tensor) and np.ndim(x) == 0
    try:
        t = torch.as_tensor(x, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a number or a tensor of numbers, got {x!r}") from None
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {x!r}")
    return t, scalar


def _out(t: Tensor, scalar: bool) -> float | Tensor:
    return float(t) if scalar else t


def _check_cut(cut: Tensor) -> None:
    if bool((cut < 1).any()):
        bad = cut[cut < 1].flatten()[0].item()
        raise ValueError(f"cut must be >= 1 (the mode cutoff c; c = 1 keeps the single mode (1, 1)), got {bad}")


def max_mode_index(cut: float | Tensor) -> int:
    r"""Largest mode index :math:`i` kept by the cutoff: :math:`\max\{i: i^2 + 1 < (c + \frac12)^2\}`.

    For an integer cutoff this is ``c`` itself (the modes :math:`(1, c)` and :math:`(c, 1)` are kept).

    >>> max_mode_index(3), max_mode_index(15)
    (3, 15)
    """
    if _is_real_scalar(cut):
        return _max_mode_index_scalar(float(cut))
    c, _ = as_float64(cut, "cut")
    _check_cut(c)
    return _max_mode_index_scalar(float(c.max()))


def _is_real_scalar(x: Any) -> bool:
    """A Python or NumPy real number (not a bool, not a tensor)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


@lru_cache(maxsize=256)
def _max_mode_index_scalar(cmax: float) -> int:
    if not math.isfinite(cmax):
        raise ValueError(f"cut must be finite, got {cmax!r}")
    _check_cut(torch.tensor(cmax, dtype=torch.float64))
    k = int(math.floor(math.sqrt((cmax + 0.5) ** 2 - 1.0)))
    while k * k + 1 >= (cmax + 0.5) ** 2:  # guard the strict inequality against rounding
        k -= 1
    return max(k, 1)


def mode_grid(kmax: int) -> tuple[Tensor, Tensor]:
    i = torch.arange(1, kmax + 1, dtype=torch.float64)
    r2 = i[:, None] ** 2 + i[None, :] ** 2  # [i, j]
    odd = (i[:, None] % 2 == 1) & (i[None, :] % 2 == 1)
    return r2, odd


def mode_mask(cut: Tensor, kmax: int) -> Tensor:
    """Boolean mask ``[..., kmax, kmax]`` of the modes in :math:`\\mathcal M_c` (index ``[i-1, j-1]``)."""
    r2, _ = mode_grid(kmax)
    return r2 < (cut[..., None, None] + 0.5) ** 2


def mode_sum(cut: float | Tensor, *, odd_only: bool = False) -> float | Tensor:
    r"""Exact mode sum :math:`S_c = \sum_{(i,j) \in \mathcal M_c} (i^2+j^2)^{-1}` (methods §2.10).

    With ``odd_only=True`` only modes with :math:`i` and :math:`j` odd are summed; these are the
    modes that do not vanish at the image centre.

    >>> round(mode_sum(3), 4), mode_sum(1, odd_only=True)
    (1.225, 0.5)
    """
    c, scalar = as_float64(cut, "cut")
    _check_cut(c)
    kmax = max_mode_index(c) if c.numel() else 1
    r2, odd = mode_grid(kmax)
    mask = mode_mask(c, kmax)
    if odd_only:
        mask = mask & odd
    s = (mask / r2).sum((-1, -2))
    return _out(s, scalar)


def _log_factor(c: Tensor, exact: bool) -> Tensor:
    r"""The factor playing the role of :math:`\ln c` in :math:`\delta` and the temperature range.

    ``exact=False``: :math:`\ln c`, except :math:`4/\pi` at :math:`c = 1` (see the module docstring).
    ``exact=True``: :math:`(8/\pi) \sum_{\mathcal M_c,\ \text{odd}} (i^2+j^2)^{-1}`.
    """
    if exact:
        return (8.0 / math.pi) * torch.as_tensor(mode_sum(c, odd_only=True), dtype=torch.float64)
    return torch.where(c == 1, torch.full_like(c, 4.0 / math.pi), torch.log(c))


def _effective_n(n: Any) -> float:
    """``n`` for a square image, :math:`\\sqrt{(H^2+W^2)/2}` for ``(H, W)``."""
    if isinstance(n, (tuple, list)):
        if len(n) != 2:
            raise ValueError(f"n must be an int or a pair (H, W), got {n!r}")
        h, w = (int(v) for v in n)
        return math.sqrt((h * h + w * w) / 2.0)
    return float(n)


def typical_displacement(T: float | Tensor, cut: float | Tensor, n: int | tuple[int, int], *, exact: bool = False) -> float | Tensor:
    r"""Typical displacement :math:`\delta = \frac n2 \sqrt{\pi T \ln c}` in pixels (methods §2.10).

    ``n`` is the image size (an int, or ``(H, W)`` for non-square images). ``exact=True`` returns
    the exact rms displacement at the image centre instead of the large-cutoff estimate.

    >>> round(typical_displacement(temperature_for(1.0, 3, 32), 3, 32), 12)
    1.0
    """
    t, scalar_t = as_float64(T, "T")
    c, scalar_c = as_float64(cut, "cut")
    _check_cut(c)
    if bool((t < 0).any()):
        raise ValueError(f"T must be >= 0, got {t.min().item()}")
    ne = _effective_n(n)
    d = 0.5 * ne * torch.sqrt(math.pi * t * _log_factor(c, exact))
    return _out(d, scalar_t and scalar_c)


def temperature_for(delta: float | Tensor, cut: float | Tensor, n: int | tuple[int, int], *, exact: bool = False) -> float | Tensor:
    r"""Temperature giving a typical displacement :math:`\delta` pixels: :math:`T = \frac{4\delta^2}{\pi n^2 \ln c}`.

    >>> f"{temperature_for(1.0, 3, 32):.2e}"
    '1.13e-03'
    """
    d, scalar_d = as_float64(delta, "delta")
    c, scalar_c = as_float64(cut, "cut")
    _check_cut(c)
    if bool((d < 0).any()):
        raise ValueError(f"delta must be >= 0 (a displacement in pixels), got {d.min().item()}")
    ne = _effective_n(n)
    t = 4.0 * d**2 / (math.pi * ne**2 * _log_factor(c, exact))
    return _out(t, scalar_d and scalar_c)


def temperature_range(n: int | tuple[int, int], cut: float | Tensor) -> tuple[float | Tensor, float | Tensor]:
    r"""The reference's temperature range :math:`(T_\min, T_\max)` (methods §2.9).

    :math:`T_\min = 1/(\pi n^2 \ln c)` gives :math:`\delta = \frac12` pixel;
    :math:`T_\max = 4/(\pi^3 c^2 \ln c)` is the largest temperature without overhangs (independent
    of :math:`n`). At :math:`c = 1`, :math:`\ln c` is replaced by :math:`4/\pi`.

    >>> tmin, tmax = temperature_range(32, 3)
    >>> f"{tmin:.2e} {tmax:.2e}"
    '2.83e-04 1.30e-02'
    """
    c, scalar = as_float64(cut, "cut")
    _check_cut(c)
    L = _log_factor(c, exact=False)
    ne = _effective_n(n)
    t_min = 1.0 / (math.pi * ne**2 * L)
    t_max = 4.0 / (math.pi**3 * c**2 * L)
    return _out(t_min, scalar), _out(t_max, scalar)


def per_image(value: Tensor, batch: int, name: str) -> Tensor:
    """A scalar as shape ``[1]`` (broadcast over the batch) or one value per image as ``[batch]``."""
    if value.numel() == 1:
        return value.reshape(1)
    if value.numel() != batch:
        raise ValueError(
            f"{name} must be a scalar or have one value per image ({batch}), got shape {tuple(value.shape)}"
        )
    return value.reshape(batch)


def check_mode_count(cut: float, hw: tuple[int, int]) -> int:
    r"""The largest mode index :math:`K` of ``cut`` (:func:`max_mode_index`), checked against the image size.

    A field has :math:`K^2` modes per component, evaluated on an :math:`H \times W` grid; a mode
    index above the image side :math:`\max(H, W)` aliases on the pixel grid (the mode
    :math:`i = W - 1` vanishes on every column), so such a cutoff adds nothing but memory
    (``cut=1e5`` would ask for :math:`2\times10^{10}` coefficients per image). A cutoff with
    :math:`K > \max(H, W)` is refused before anything is allocated.
    """
    side = max(hw)
    # cut >= side + 1 keeps the mode (side + 1, 1): refused without computing K (a huge cut overflows)
    k = max_mode_index(cut) if cut < side + 1 else math.floor(cut)
    if k > side:
        raise ValueError(
            f"cut={cut:g} keeps modes up to index {float(k):.6g}, more than the image side ({side} px): modes beyond the "
            f"image side alias on the pixel grid (and would need {2.0 * k * k:.3g} coefficients per image); "
            f"use cut <= {side} (the paper's cutoff is {PAPER_CUT})"
        )
    return k


def resolve_temperature(
    T: Any, delta: Any, cut: Any, batch: int, hw: tuple[int, int] | None
) -> tuple[Tensor, Tensor]:
    r"""Validate ``T`` or ``delta`` (exactly one) and ``cut`` for ``batch`` images of size ``hw = (H, W)``.

    Returns float64 tensors ``(T, cut)``, each of shape ``[1]`` (shared by the batch) or
    ``[batch]`` (one value per image); a ``delta`` in pixels is converted with
    :func:`temperature_for`. The cutoff is checked against the image size
    (:func:`check_mode_count`); ``hw=None`` (coefficients rescaled without a size) skips that
    check and allows ``T`` only.

    Warns:
        OverhangWarning: if some :math:`T` exceeds :math:`T_\max` of its cutoff.

    >>> T, c = resolve_temperature(None, 1.0, 3, 8, (32, 32))
    >>> T.shape, f"{float(T):.2e}", float(c)
    (torch.Size([1]), '1.13e-03', 3.0)
    """
    if (T is None) == (delta is None):
        raise ValueError(
            "give exactly one of T (temperature) or delta (typical displacement in pixels); "
            f"got T={T!r}, delta={delta!r}"
        )
    given = T if delta is None else delta
    if _is_real_scalar(cut) and _is_real_scalar(given):  # the common case: checked once per value (cached)
        t, c, t_max = _resolve_scalars(None if T is None else float(T), None if delta is None else float(delta), float(cut), tuple(hw))
        if t > t_max * (1 + 1e-12):
            _warn_overhang(t, t_max, c, batch, batch)
        return torch.tensor([t], dtype=torch.float64), torch.tensor([c], dtype=torch.float64)
    return _resolve_tensors(T, delta, cut, batch, hw, warn=True)


@lru_cache(maxsize=256)
def _resolve_scalars(T: float | None, delta: float | None, cut: float, hw: tuple[int, int] | None) -> tuple[float, float, float]:
    """``(T, cut, T_max)`` of scalar arguments, validated by the tensor path once per distinct value."""
    t_b, c_b = _resolve_tensors(T, delta, cut, 1, hw, warn=False)
    _, t_max = temperature_range(hw or (2, 2), c_b)  # T_max does not depend on the size
    return float(t_b), float(c_b), float(t_max)


def _warn_overhang(t: float, t_max: float, cut: float, n_over: int, batch: int) -> None:
    warnings.warn(
        f"T={t:.4g} exceeds T_max={t_max:.4g} for cut={cut:g} "
        f"({n_over} of {batch} image(s)): the field can fold over (overhangs), so the "
        "map is no longer a diffeomorphism",
        OverhangWarning,
        stacklevel=caller_stacklevel(),
    )


def _resolve_tensors(T: Any, delta: Any, cut: Any, batch: int, hw: tuple[int, int] | None, *, warn: bool) -> tuple[Tensor, Tensor]:
    c, _ = as_float64(cut, "cut")
    _check_cut(c)
    c_b = per_image(c, batch, "cut")
    if hw is not None and c_b.numel():
        check_mode_count(float(c_b.max()), hw)
    if delta is not None:
        if hw is None:
            raise ValueError("delta (pixels) needs the image size (n or (H, W)) to be converted to T")
        d, _ = as_float64(delta, "delta")
        if bool((d < 0).any()):
            raise ValueError(f"delta must be >= 0 (a displacement in pixels), got {d.min().item()}")
        t_b = temperature_for(per_image(d, batch, "delta"), c_b, hw)
    else:
        t, _ = as_float64(T, "T")
        if bool((t < 0).any()):
            raise ValueError(f"T must be >= 0 (a temperature), got {t.min().item()}")
        t_b = per_image(t, batch, "T")
    if t_b.numel() != c_b.numel():
        t_b, c_b = torch.broadcast_tensors(t_b, c_b)
    if warn:
        _, t_max = temperature_range(hw or (2, 2), c_b)  # T_max does not depend on the size
        over = t_b > t_max * (1 + 1e-12)
        if bool(over.any()):
            k = int(over.nonzero()[0])
            n_over = int(over.sum()) if over.numel() > 1 else batch
            _warn_overhang(t_b[k].item(), t_max[k].item(), c_b[k].item(), n_over, batch)
    return t_b, c_b

