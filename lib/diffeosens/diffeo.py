r"""Batched max-entropy diffeomorphisms (methods §2).

A random displacement field is a sine series on the unit square with coefficients whose
variance is set by a temperature :math:`T` and a mode cutoff :math:`c`:

.. math::

    \tau_u(u, v) = \sum_{(i,j) \in \mathcal M_c} C_{ij} \sin(i\pi u)\sin(j\pi v), \qquad
    \tau_v(u, v) = \sum_{(i,j) \in \mathcal M_c} D_{ij} \sin(i\pi u)\sin(j\pi v),

    C_{ij}, D_{ij} \sim \mathcal N\big(0, T/(i^2+j^2)\big), \qquad
    \mathcal M_c = \{(i, j): i, j \ge 1,\ \sqrt{i^2+j^2} < c + \tfrac12\}.

Convention:
    * images: :math:`(\dots, C, H, W)`; every :math:`(C, H, W)` slice is one image and gets its
      own independent field (leading dimensions are flattened into a batch).
    * :math:`u` is horizontal (columns, length :math:`W`), :math:`v` vertical (rows, length
      :math:`H`); the modes are evaluated on ``linspace(0, 1, W)`` and ``linspace(0, 1, H)``,
      so the border rows and columns never move.
    * Displacement fields are returned **in pixels**, shape :math:`(B, 2, H, W)`: channel 0 is
      the horizontal displacement :math:`d_x = W\,\tau_u`, channel 1 the vertical one
      :math:`d_y = H\,\tau_v` (the factor :math:`n`, not :math:`n-1`, as in the reference).
    * The warp is a pull-back with the source clamped to the image:
      :math:`(\tau x)(p) = x\big(\mathrm{clamp}(p - d(p))\big)`.
    * :math:`\delta` (``delta``) is the typical displacement in pixels (methods §2.10),
      :math:`\delta = \frac{n}{2}\sqrt{\pi T \ln c}`. For non-square images
      :math:`n = n_\mathrm{eff} = \sqrt{(H^2 + W^2)/2}`, which keeps :math:`\delta` the
      centre rms displacement.

The cutoff :math:`c = 1` (a single mode) makes :math:`\ln c = 0`; the reference then divides by
zero. Here :math:`\ln c` is replaced, for :math:`c = 1` only, by the value
:math:`L(1) = 4/\pi` for which :math:`\delta` is the *exact* rms displacement at the image
centre, :math:`\langle |d|^2 \rangle_\text{centre} = 2 n^2 T \sum_{\mathcal M_c,\ i,j\ \text{odd}}
(i^2+j^2)^{-1}`. With ``exact=True`` that exact centre definition is used for every cutoff.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .validation import check_choice, check_finite, check_float_tensor, check_min_ndim

__all__ = [
    "Diffeo",
    "OverhangWarning",
    "apply_fields",
    "deform",
    "max_mode_index",
    "mode_sum",
    "sample_fields",
    "temperature_for",
    "temperature_range",
    "typical_displacement",
]

#: Standard deviation (pixels) of the ``gaussian`` interpolation kernel of the reference.
GAUSSIAN_SIGMA = 0.4715
#: Tap offsets of the Gaussian resampler around floor(source): every pixel left out is at least
#: 4 px from the source point, a relative weight below exp(-16 / (2 sigma^2)) = 2e-16.
_GAUSS_OFFSETS = tuple(range(-3, 5))
#: The Gaussian resampler works on chunks of about this many output pixels.
_GAUSS_CHUNK_PIXELS = 1 << 16
#: Work is split into chunks of about this many output pixels (keeps the grid in cache).
_CHUNK_PIXELS = 1 << 18

INTERPOLATIONS = ("linear", "nearest", "gaussian")


class OverhangWarning(UserWarning):
    """The temperature exceeds :math:`T_\\max`: the field may fold (no longer a diffeomorphism)."""


# ----------------------------------------------------------------------------------------------
# Scalars: mode set, temperatures, typical displacement
# ----------------------------------------------------------------------------------------------


def _as_float64(x: Any, name: str) -> tuple[Tensor, bool]:
    """Return ``x`` as a float64 CPU tensor and whether it was a Python/NumPy scalar."""
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
    c, _ = _as_float64(cut, "cut")
    _check_cut(c)
    cmax = float(c.max())
    k = int(math.floor(math.sqrt((cmax + 0.5) ** 2 - 1.0)))
    while k * k + 1 >= (cmax + 0.5) ** 2:  # guard the strict inequality against rounding
        k -= 1
    return max(k, 1)


def _mode_grid(kmax: int) -> tuple[Tensor, Tensor]:
    i = torch.arange(1, kmax + 1, dtype=torch.float64)
    r2 = i[:, None] ** 2 + i[None, :] ** 2  # [i, j]
    odd = (i[:, None] % 2 == 1) & (i[None, :] % 2 == 1)
    return r2, odd


def _mode_mask(cut: Tensor, kmax: int) -> Tensor:
    """Boolean mask ``[..., kmax, kmax]`` of the modes in :math:`\\mathcal M_c` (index ``[i-1, j-1]``)."""
    r2, _ = _mode_grid(kmax)
    return r2 < (cut[..., None, None] + 0.5) ** 2


def mode_sum(cut: float | Tensor, *, odd_only: bool = False) -> float | Tensor:
    r"""Exact mode sum :math:`S_c = \sum_{(i,j) \in \mathcal M_c} (i^2+j^2)^{-1}` (methods §2.10).

    With ``odd_only=True`` only modes with :math:`i` and :math:`j` odd are summed; these are the
    modes that do not vanish at the image centre.

    >>> round(mode_sum(3), 4), mode_sum(1, odd_only=True)
    (1.225, 0.5)
    """
    c, scalar = _as_float64(cut, "cut")
    _check_cut(c)
    kmax = max_mode_index(c) if c.numel() else 1
    r2, odd = _mode_grid(kmax)
    mask = _mode_mask(c, kmax)
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
    t, scalar_t = _as_float64(T, "T")
    c, scalar_c = _as_float64(cut, "cut")
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
    d, scalar_d = _as_float64(delta, "delta")
    c, scalar_c = _as_float64(cut, "cut")
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
    c, scalar = _as_float64(cut, "cut")
    _check_cut(c)
    L = _log_factor(c, exact=False)
    ne = _effective_n(n)
    t_min = 1.0 / (math.pi * ne**2 * L)
    t_max = 4.0 / (math.pi**3 * c**2 * L)
    return _out(t_min, scalar), _out(t_max, scalar)


# ----------------------------------------------------------------------------------------------
# Fields
# ----------------------------------------------------------------------------------------------


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (tuple, list, torch.Size)):
        if len(size) != 2:
            raise ValueError(f"size must be an int n or a pair (H, W), got {size!r}")
        h, w = int(size[0]), int(size[1])
    else:
        h = w = int(size)
    if h < 2 or w < 2:
        raise ValueError(f"images must be at least 2x2 pixels, got size (H, W) = ({h}, {w})")
    return h, w


@lru_cache(maxsize=64)
def _tables(h: int, w: int, kmax: int, dtype: torch.dtype, device: str) -> dict[str, Tensor]:
    """Sine tables and the identity grid for an ``h x w`` image and modes ``1..kmax`` (cached)."""
    k = torch.arange(1, kmax + 1, dtype=torch.float64)
    u = torch.linspace(0.0, 1.0, w, dtype=torch.float64)
    v = torch.linspace(0.0, 1.0, h, dtype=torch.float64)
    su = torch.sin(math.pi * k[:, None] * u[None, :])  # [K, W]
    sv = torch.sin(math.pi * k[:, None] * v[None, :])  # [K, H]
    # grid_sample's normalised coordinate of the source x - W tau_u is gx - 2W/(W-1) tau_u.
    scale = (-2.0 * w / (w - 1), -2.0 * h / (h - 1))
    su2 = torch.zeros(2, kmax, w, 2, dtype=torch.float64)  # [(component, i), (x, component)]
    su2[0, :, :, 0] = su * scale[0]
    su2[1, :, :, 1] = su * scale[1]
    gx = torch.linspace(-1.0, 1.0, w, dtype=torch.float64)
    gy = torch.linspace(-1.0, 1.0, h, dtype=torch.float64)
    base = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)  # [H, W, 2]
    out = {
        "su": su,
        "svt": sv.T.contiguous(),
        "su2": su2.reshape(2 * kmax, 2 * w),
        "base": base.reshape(h, 2 * w),
    }
    return {name: t.to(device=device, dtype=dtype) for name, t in out.items()}


def _per_image(value: Tensor, batch: int, name: str) -> Tensor:
    """A scalar as shape ``[1]`` (broadcast over the batch) or one value per image as ``[batch]``."""
    if value.numel() == 1:
        return value.reshape(1)
    if value.numel() != batch:
        raise ValueError(
            f"{name} must be a scalar or have one value per image ({batch}), got shape {tuple(value.shape)}"
        )
    return value.reshape(batch)


@lru_cache(maxsize=256)
def _unit_amplitudes(cut: float, kmax: int) -> Tensor:
    r""":math:`\mathbb 1[(i,j)\in\mathcal M_c]/\sqrt{i^2+j^2}` as ``[K, K]`` float64 (cached per cutoff)."""
    r2, _ = _mode_grid(kmax)
    return _mode_mask(torch.tensor(cut, dtype=torch.float64), kmax) / r2.sqrt()


def _amplitudes(T: Tensor, cut: Tensor, kmax: int) -> Tensor:
    r"""Mode amplitudes :math:`\sqrt{T_b}\,\mathbb 1[(i,j)\in\mathcal M_{c_b}]/\sqrt{i^2+j^2}`, ``[B or 1, 1, K, K]``."""
    if cut.numel() == 1:
        unit = _unit_amplitudes(float(cut), kmax)[None]
    else:
        r2, _ = _mode_grid(kmax)
        unit = _mode_mask(cut, kmax) / r2.sqrt()
    return (unit * T.sqrt()[:, None, None]).unsqueeze(1)


def _rows(t: Tensor, sl: slice) -> Tensor:
    """Slice a per-image tensor, or pass a broadcast ``[1, ...]`` one through."""
    return t if t.shape[0] == 1 else t[sl]


def _draw_normals(batch: int, kmax: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Standard normal coefficients ``[B, 2, K, K]`` (index ``[b, component, i-1, j-1]``).

    They are always drawn in float64 (then cast), so a seed gives the same field in any dtype.
    """
    draw_device = generator.device if generator is not None else device
    z = torch.randn((batch, 2, kmax, kmax), generator=generator, device=draw_device, dtype=torch.float64)
    return z.to(device=device, dtype=dtype)


def _fields_from_normals(normals: Tensor, amp: Tensor, h: int, w: int) -> Tensor:
    """Displacements in pixels ``[B, 2, H, W]`` from standard normals and amplitudes."""
    kmax = normals.shape[-1]
    tab = _tables(h, w, kmax, normals.dtype, str(normals.device))
    coef = normals * amp.to(normals)  # [B, 2, i, j]
    # d[b, k, y, x] = sum_ij Sv[j, y] C[b, k, i, j] Su[i, x]
    fields = tab["svt"] @ coef.transpose(-1, -2) @ tab["su"]
    pix = torch.tensor([float(w), float(h)], dtype=normals.dtype, device=normals.device)
    return fields * pix[None, :, None, None]


def sample_fields(
    batch: int,
    size: int | Sequence[int],
    cut: float | Tensor,
    T: float | Tensor,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Draw ``batch`` independent displacement fields, in pixels.

    Args:
        batch: number of fields :math:`B`.
        size: image size ``n`` or ``(H, W)``.
        cut: mode cutoff :math:`c \ge 1`, a scalar or one value per field.
        T: temperature :math:`T \ge 0`, a scalar or one value per field.
        generator: source of randomness (the draw happens on the generator's device).
        device, dtype: of the result (default: CPU, ``torch.get_default_dtype()``).

    Returns:
        :math:`(B, 2, H, W)`: channel 0 the horizontal and channel 1 the vertical displacement.

    >>> g = torch.Generator().manual_seed(0)
    >>> sample_fields(4, (28, 32), 3, 1e-3, generator=g).shape
    torch.Size([4, 2, 28, 32])
    """
    batch = int(batch)
    if batch < 0:
        raise ValueError(f"batch must be >= 0, got {batch}")
    h, w = _size_hw(size)
    T_b, cut_b = _prepare_T_cut(T, None, cut, batch, (h, w), warn_stacklevel=3)
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = dtype or torch.get_default_dtype()
    kmax = max_mode_index(cut_b) if batch else 1
    normals = _draw_normals(batch, kmax, generator, device, dtype)
    return _fields_from_normals(normals, _amplitudes(T_b, cut_b, kmax), h, w)


def _prepare_T_cut(
    T: Any, delta: Any, cut: Any, batch: int, hw: tuple[int, int], warn_stacklevel: int = 3
) -> tuple[Tensor, Tensor]:
    """Validate ``T``/``delta``/``cut``; return float64 ``T`` and ``cut`` of shape ``[1]`` or ``[batch]``."""
    if (T is None) == (delta is None):
        raise ValueError(
            "give exactly one of T (temperature) or delta (typical displacement in pixels); "
            f"got T={T!r}, delta={delta!r}"
        )
    c, _ = _as_float64(cut, "cut")
    _check_cut(c)
    c_b = _per_image(c, batch, "cut")
    if delta is not None:
        d, _ = _as_float64(delta, "delta")
        if bool((d < 0).any()):
            raise ValueError(f"delta must be >= 0 (a displacement in pixels), got {d.min().item()}")
        t_b = temperature_for(_per_image(d, batch, "delta"), c_b, hw)
    else:
        t, _ = _as_float64(T, "T")
        if bool((t < 0).any()):
            raise ValueError(f"T must be >= 0 (a temperature), got {t.min().item()}")
        t_b = _per_image(t, batch, "T")
    if t_b.numel() != c_b.numel():
        t_b, c_b = torch.broadcast_tensors(t_b, c_b)
    _, t_max = temperature_range(hw, c_b)
    over = t_b > t_max * (1 + 1e-12)
    if bool(over.any()):
        k = int(over.nonzero()[0])
        n_over = int(over.sum()) if over.numel() > 1 else batch
        warnings.warn(
            f"T={t_b[k].item():.4g} exceeds T_max={t_max[k].item():.4g} for cut={c_b[k].item():g} "
            f"({n_over} of {batch} image(s)): the field can fold over (overhangs), so the "
            "map is no longer a diffeomorphism",
            OverhangWarning,
            stacklevel=warn_stacklevel,
        )
    return t_b, c_b


# ----------------------------------------------------------------------------------------------
# Resampling
# ----------------------------------------------------------------------------------------------


def _grid_from_normals(normals: Tensor, amp: Tensor, h: int, w: int) -> Tensor:
    """``grid_sample`` grid ``[B, H, W, 2]`` of the source points, synthesised by two matmuls."""
    b, _, kmax, _ = normals.shape
    tab = _tables(h, w, kmax, normals.dtype, str(normals.device))
    coef = normals * amp.to(normals)  # [B, comp, i, j]
    coef = coef.permute(0, 3, 1, 2).reshape(b * kmax, 2 * kmax)  # [(B, j), (comp, i)]
    a = (coef @ tab["su2"]).view(b, kmax, 2 * w)  # [B, j, (x, comp)]
    grid = torch.baddbmm(tab["base"], tab["svt"].expand(b, -1, -1), a)  # [B, H, (x, comp)]
    return grid.view(b, h, w, 2)


def _source_pixels(fields: Tensor) -> tuple[Tensor, Tensor]:
    """Clamped source coordinates (pixels) ``s = clamp(p - d)``, each ``[B, H, W]``."""
    _, _, h, w = fields.shape
    ys = torch.arange(h, dtype=fields.dtype, device=fields.device)[:, None]
    xs = torch.arange(w, dtype=fields.dtype, device=fields.device)[None, :]
    sy = (ys - fields[:, 1]).clamp_(0, h - 1)
    sx = (xs - fields[:, 0]).clamp_(0, w - 1)
    return sy, sx


def _axis_weights(s: Tensor, n: int) -> tuple[Tensor, Tensor]:
    r"""Unnormalised 1D Gaussian weights of the 8 taps around each source coordinate.

    For a source :math:`s = q_0 + f` (:math:`q_0 = \lfloor s \rfloor`) and taps :math:`q_0 + k`,
    :math:`k \in \{-3, \dots, 4\}`:
    :math:`e^{-(f-k)^2/2\sigma^2} = e^{-f^2/2\sigma^2}\,(e^{f/\sigma^2})^k\,e^{-k^2/2\sigma^2}`. The first
    factor is common to all taps and cancels in the normalisation, so one exponential per point
    suffices. Taps outside ``[0, n-1]`` get weight 0 (the sum runs over the image's pixels only).

    Returns ``(weights [..., 8], q0 [...] as int64)`` for a source tensor of shape ``[...]``.
    """
    q0 = s.floor()
    f = s - q0
    offs = torch.tensor(_GAUSS_OFFSETS, dtype=s.dtype, device=s.device)
    const = torch.exp(offs.square() * (-0.5 / GAUSSIAN_SIGMA**2))
    e = torch.exp(f * (1.0 / GAUSSIAN_SIGMA**2))
    q0 = q0.long()
    q = q0[..., None] + offs.long()
    w = e[..., None].pow(offs) * const * ((q >= 0) & (q < n))
    return w, q0


def _gaussian_window(images: Tensor, sy: Tensor, sx: Tensor) -> Tensor:
    r"""Gaussian resampling :math:`\sum_q w_q x_q / \sum_q w_q`, :math:`w_q = e^{-|s-q|^2/2\sigma^2}`.

    The weights are separable and restricted to the 8x8 pixels nearest to each source point:
    every pixel left out is at least 4 px away, with relative weight below
    :math:`e^{-16/2\sigma^2} = 2\times10^{-16}`, so this equals the sum over all pixels to float64
    rounding (tested against the :math:`n^4` formulation).

    Each pair of adjacent taps :math:`(w_0, w_1)` is one linear interpolation at the fractional
    position :math:`w_1/(w_0 + w_1)` weighted by :math:`w_0 + w_1`, so the 64 taps are 16 bilinear
    samples (16 ``grid_sample`` calls), with zero weight for pixels outside the image.
    """
    b, c, h, w = images.shape
    wy, y0 = _axis_weights(sy, h)  # [B, H, W, 8]
    wx, x0 = _axis_weights(sx, w)
    first = float(_GAUSS_OFFSETS[0])

    def pairs(wt: Tensor, q0: Tensor, n: int) -> tuple[Tensor, Tensor]:
        ws = wt[..., 0::2] + wt[..., 1::2]
        frac = torch.where(ws > 0, wt[..., 1::2] / ws.clamp_min(torch.finfo(ws.dtype).tiny), torch.zeros_like(ws))
        start = torch.arange(0, wt.shape[-1], 2, dtype=wt.dtype, device=wt.device) + first
        pos = q0.to(wt.dtype)[..., None] + start + frac
        return ws, pos * (2.0 / (n - 1)) - 1.0  # grid_sample coordinates (align_corners=True)

    wys, gy = pairs(wy, y0, h)
    wxs, gx = pairs(wx, x0, w)
    out = torch.zeros_like(images)
    for m in range(wys.shape[-1]):
        for k in range(wxs.shape[-1]):
            grid = torch.stack((gx[..., k], gy[..., m]), dim=-1)
            sample = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            out.addcmul_(sample, (wys[..., m] * wxs[..., k]).unsqueeze(1))
    return out / (wy.sum(-1) * wx.sum(-1)).unsqueeze(1)


def _resample_gaussian(images: Tensor, fields: Tensor) -> Tensor:
    sy, sx = _source_pixels(fields)
    return _gaussian_window(images, sy, sx)


def _chunks(batch: int, h: int, w: int, factor: float = 1.0) -> list[slice]:
    step = max(1, int(_CHUNK_PIXELS * factor) // (h * w))
    return [slice(s, min(s + step, batch)) for s in range(0, batch, step)]


def _deform_from_normals(images: Tensor, normals: Tensor, T: Tensor, cut: Tensor, interp: str) -> Tensor:
    """Deform a ``[B, C, H, W]`` batch with per-image standard normals, temperatures and cutoffs.

    ``T`` and ``cut`` have shape ``[1]`` (shared) or ``[B]``. The work is done in chunks of about
    ``_CHUNK_PIXELS`` output pixels so that the sampling grid stays in cache.
    """
    b, _, h, w = images.shape
    kmax = normals.shape[-1]
    amp = _amplitudes(T, cut, kmax)
    if interp == "gaussian":
        parts = [
            _resample_gaussian(images[sl], _fields_from_normals(normals[sl], _rows(amp, sl), h, w))
            for sl in _chunks(b, h, w, factor=_GAUSS_CHUNK_PIXELS / _CHUNK_PIXELS)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    if T.numel() == 1 and float(T) == 0.0:
        return images.clone()  # a zero temperature is the identity map, bit for bit
    mode = "bilinear" if interp == "linear" else "nearest"
    parts = [
        F.grid_sample(images[sl], _grid_from_normals(normals[sl], _rows(amp, sl), h, w), mode=mode, padding_mode="border", align_corners=True)
        for sl in _chunks(b, h, w)
    ]
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    still = T == 0
    if T.numel() > 1 and bool(still.any()):
        still = still.to(images.device)
        out[still] = images[still]
    return out


def _check_images(images: Any, name: str = "images") -> Tensor:
    check_float_tensor(images, name)
    check_min_ndim(images, 3, "..., C, H, W", name)
    _size_hw(tuple(images.shape[-2:]))
    # A sum is non-finite iff some entry is (or it overflows): a cheap screen before the exact check.
    if not bool(torch.isfinite(images.sum())):
        check_finite(images, name)
    return images


def deform(
    images: Tensor,
    *,
    T: float | Tensor | None = None,
    delta: float | Tensor | None = None,
    cut: float | Tensor = 3,
    interp: str = "linear",
    generator: torch.Generator | None = None,
    return_fields: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Apply an independent random diffeomorphism to every image (methods §2.6–2.8).

    .. math:: (\tau x)[\cdot, p_y, p_x] = x[\cdot,\ p_y - d_y(p),\ p_x - d_x(p)]

    with the source clamped to the image and evaluated by interpolation.

    Args:
        images: :math:`(\dots, C, H, W)` float tensor; each :math:`(C, H, W)` slice is an image.
        T: temperature, a scalar or one value per image. Exactly one of ``T`` and ``delta``.
        delta: typical displacement in pixels (converted with :func:`temperature_for`).
        cut: mode cutoff :math:`c \ge 1`, a scalar or one value per image.
        interp: ``"linear"`` (bilinear, the papers' setting), ``"nearest"``, or ``"gaussian"``
            (normalised Gaussian weights, :math:`\sigma = 0.4715` px, over all pixels; at
            :math:`T = 0` a blur, not the identity).
        generator: source of randomness; the same seed gives the same fields.
        return_fields: also return the displacement fields in pixels, :math:`(\dots, 2, H, W)`.

    Returns:
        The deformed images (same shape, dtype and device), and the fields if requested.

    Warns:
        OverhangWarning: if some ``T`` exceeds :math:`T_\max` of its cutoff.

    >>> x = torch.rand(8, 3, 32, 32)
    >>> deform(x, delta=1.0, cut=3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([8, 3, 32, 32])
    """
    _check_images(images)
    check_choice(interp, INTERPOLATIONS, "interp")
    lead = images.shape[:-3]
    c, h, w = images.shape[-3:]
    flat = images.reshape(-1, c, h, w)
    b = flat.shape[0]
    T_b, cut_b = _prepare_T_cut(T, delta, cut, b, (h, w))
    if b == 0:  # an empty batch (arguments checked above): nothing to deform, no randomness drawn
        out = images.clone()
        return (out, images.new_zeros((*lead, 2, h, w))) if return_fields else out
    kmax = max_mode_index(cut_b)
    normals = _draw_normals(b, kmax, generator, flat.device, flat.dtype)
    out = _deform_from_normals(flat, normals, T_b, cut_b, interp).reshape(images.shape)
    if not return_fields:
        return out
    fields = _fields_from_normals(normals, _amplitudes(T_b, cut_b, kmax), h, w)
    return out, fields.reshape(*lead, 2, h, w)


def apply_fields(images: Tensor, fields: Tensor, *, interp: str = "linear") -> Tensor:
    r"""Warp images with given displacement fields (pixels): :math:`x(\mathrm{clamp}(p - d(p)))`.

    Args:
        images: :math:`(\dots, C, H, W)`.
        fields: :math:`(\dots, 2, H, W)` with the same leading shape; channel 0 horizontal,
            channel 1 vertical displacement, in pixels.
        interp: ``"linear"``, ``"nearest"`` or ``"gaussian"``.

    >>> x = torch.rand(2, 1, 5, 5)
    >>> torch.equal(apply_fields(x, torch.zeros(2, 2, 5, 5)), x)
    True
    """
    _check_images(images)
    check_float_tensor(fields, "fields")
    check_choice(interp, INTERPOLATIONS, "interp")
    c, h, w = images.shape[-3:]
    if tuple(fields.shape) != (*images.shape[:-3], 2, h, w):
        raise ValueError(
            f"fields must have shape {(*images.shape[:-3], 2, h, w)} (leading dims of images, 2, H, W), "
            f"got {tuple(fields.shape)}"
        )
    check_finite(fields, "fields")
    flat = images.reshape(-1, c, h, w)
    d = fields.reshape(-1, 2, h, w).to(flat)
    if interp == "gaussian":
        return _resample_gaussian(flat, d).reshape(images.shape)
    sy, sx = _source_pixels(d)
    grid = torch.stack((2.0 * sx / (w - 1) - 1.0, 2.0 * sy / (h - 1) - 1.0), dim=-1)
    mode = "bilinear" if interp == "linear" else "nearest"
    out = F.grid_sample(flat, grid, mode=mode, padding_mode="border", align_corners=True)
    still = (d == 0).flatten(1).all(1)
    if bool(still.any()):
        out[still] = flat[still]
    return out.reshape(images.shape)


# ----------------------------------------------------------------------------------------------
# torchvision-v2 transform
# ----------------------------------------------------------------------------------------------

try:  # torchvision is a hard dependency of the package, but keep the import local to this class
    from torchvision.transforms import v2 as _v2
except ImportError:  # pragma: no cover
    _v2 = None


def _beta_params(s: float, r: float) -> tuple[float, float]:
    """The reference's parametrisation: :math:`\\mathrm{Beta}(s - s/(r+1),\\ s/(r+1))`."""
    return s - s / (r + 1.0), s / (r + 1.0)


class Diffeo(_v2.Transform if _v2 is not None else torch.nn.Module):  # type: ignore[misc]
    r"""Random-diffeomorphism augmentation in the style of torchvision's v2 transforms (methods §2.14).

    Every image gets its own cutoff, drawn from a discretised Beta distribution on
    ``{cut_min, ..., cut_max}`` as :math:`\lfloor \beta (c_\max + 1 - c_\min) + c_\min \rfloor`,
    and its own temperature, drawn from a Beta distribution on :math:`[T_\min(c), T_\max(c)]`.
    Both Betas are :math:`\mathrm{Beta}(s - s/(r+1), s/(r+1))`; the defaults ``s=2, r=1`` make
    them uniform. Works on tensors :math:`(\dots, C, H, W)` (a batch gets independent draws per
    image) and on ``tv_tensors.Image``; every transformed input of a sample gets the same field.

    Args:
        cut_range: ``(cut_min, cut_max)``, inclusive (reference default ``(1, 15)``).
        T_range: ``None`` for :math:`[T_\min(c), T_\max(c)]` of each drawn cutoff, or a fixed
            ``(T_lo, T_hi)``.
        s_cut, r_cut, s_T, r_T: Beta parameters of the cutoff and temperature draws.
        interp: interpolation of :func:`deform`.
        generator: a :class:`torch.Generator` for reproducible draws.

    >>> t = Diffeo(cut_range=(2, 5), generator=torch.Generator().manual_seed(0))
    >>> t(torch.rand(4, 3, 32, 32)).shape
    torch.Size([4, 3, 32, 32])
    """

    _transformed_types = (Tensor,)

    def __init__(
        self,
        cut_range: tuple[int, int] = (1, 15),
        T_range: tuple[float, float] | None = None,
        *,
        s_cut: float = 2.0,
        r_cut: float = 1.0,
        s_T: float = 2.0,
        r_T: float = 1.0,
        interp: str = "linear",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        lo, hi = (int(v) for v in cut_range)
        if lo < 1 or hi < lo:
            raise ValueError(f"cut_range must be (cut_min, cut_max) with 1 <= cut_min <= cut_max, got {cut_range!r}")
        if T_range is not None and not (0 <= T_range[0] <= T_range[1]):
            raise ValueError(f"T_range must be (T_lo, T_hi) with 0 <= T_lo <= T_hi, got {T_range!r}")
        for name, v in (("s_cut", s_cut), ("r_cut", r_cut), ("s_T", s_T), ("r_T", r_T)):
            if not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")
        check_choice(interp, INTERPOLATIONS, "interp")
        self.cut_range = (lo, hi)
        self.T_range = T_range
        self.s_cut, self.r_cut, self.s_T, self.r_T = float(s_cut), float(r_cut), float(s_T), float(r_T)
        self.interp = interp
        self.generator = generator

    def _rng(self) -> np.random.Generator:
        seed = torch.randint(0, 2**62, (1,), generator=self.generator).item()
        return np.random.default_rng(seed)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        image = next((x for x in flat_inputs if isinstance(x, Tensor)), None)
        if image is None:
            raise TypeError("Diffeo works on tensors of shape (..., C, H, W); convert PIL images with v2.ToImage() first")
        _check_images(image, "image")
        h, w = image.shape[-2:]
        batch = int(np.prod(image.shape[:-3], dtype=np.int64))
        rng = self._rng()
        lo, hi = self.cut_range
        cut = np.floor(rng.beta(*_beta_params(self.s_cut, self.r_cut), size=batch) * (hi + 1 - lo) + lo)
        cut = torch.as_tensor(np.minimum(cut, hi), dtype=torch.float64)
        if self.T_range is None:
            t_lo, t_hi = temperature_range((h, w), cut)
            if bool((t_hi < t_lo).any()):
                raise ValueError(
                    f"for {h}x{w} images and cut up to {hi} the range [T_min, T_max] is empty; "
                    f"use cut_max < 2n/pi = {2 * min(h, w) / math.pi:.1f} or give T_range"
                )
        else:
            t_lo = torch.full((batch,), float(self.T_range[0]), dtype=torch.float64)
            t_hi = torch.full((batch,), float(self.T_range[1]), dtype=torch.float64)
        beta = torch.as_tensor(rng.beta(*_beta_params(self.s_T, self.r_T), size=batch), dtype=torch.float64)
        T = t_lo + beta * (t_hi - t_lo)
        kmax = max_mode_index(cut) if batch else 1
        normals = _draw_normals(batch, kmax, self.generator, image.device, image.dtype)
        return {"T": T, "cut": cut, "normals": normals}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        _check_images(inpt, "image")
        c, h, w = inpt.shape[-3:]
        flat = inpt.reshape(-1, c, h, w)
        normals = params["normals"].to(device=flat.device, dtype=flat.dtype)
        out = _deform_from_normals(flat, normals, params["T"], params["cut"], self.interp).reshape(inpt.shape)
        if hasattr(inpt, "wrap_like") or type(inpt) is not Tensor:
            try:
                from torchvision import tv_tensors

                return tv_tensors.wrap(out, like=inpt)
            except (ImportError, TypeError):  # pragma: no cover
                return out
        return out
