r"""Warping images: apply drawn fields (:func:`warp`, :func:`apply_fields`) or draw and apply (:func:`deform`).

The warp is a pull-back with the source clamped to the image,
:math:`(\tau x)(p) = x\big(\mathrm{clamp}(p - d(p))\big)`, evaluated by bilinear (the papers'
setting), nearest-neighbour or normalised-Gaussian interpolation. Images are
:math:`(\dots, C, H, W)`; every :math:`(C, H, W)` slice is one image with its own field.

One check path: :func:`deform`, :func:`warp` and :func:`apply_fields` check their images with
:func:`~diffeosens.validation.check_images` (floating point, finite, at least one channel and
2x2 pixels) and coefficients with :func:`check_coefficients` (one field per image, drawn for
the images' size). An empty batch gives an empty result.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..validation import check_choice, check_finite, check_float_tensor, check_generator, check_images, check_seed
from .fields import Coefficients, fields_from_coefficients, sample_coefficients, sine_tables
from .temperature import resolve_temperature

__all__ = ["GAUSSIAN_SIGMA", "INTERPOLATIONS", "apply_fields", "check_coefficients", "check_images", "deform", "warp"]

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


def _source_grid(coefficients: Coefficients, h: int, w: int) -> Tensor:
    """``grid_sample`` grid ``[B, H, W, 2]`` of the source points, synthesised by two matmuls."""
    normals = coefficients.normals
    b, kmax = coefficients.batch, coefficients.kmax
    tab = sine_tables(h, w, kmax, normals.dtype, str(normals.device))
    coef = normals * coefficients.amplitudes().to(normals)  # [B, comp, i, j]
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


def check_coefficients(coefficients: Any, batch: int, hw: tuple[int, int]) -> Coefficients:
    """``coefficients`` must be a :class:`Coefficients` with one field per image (``batch``) and,
    when it records the size it was drawn for, drawn for images of size ``hw = (H, W)``."""
    if not isinstance(coefficients, Coefficients):
        raise TypeError(f"coefficients must be diffeo.Coefficients (from sample_coefficients), got {type(coefficients).__name__}")
    if coefficients.batch != batch:
        raise ValueError(f"coefficients hold {coefficients.batch} field(s) but there are {batch} image(s); one field per image")
    if coefficients.size is not None and tuple(coefficients.size) != tuple(hw):
        (h0, w0), (h, w) = coefficients.size, hw
        raise ValueError(
            f"coefficients were drawn for {h0}x{w0} images but the images are {h}x{w} (H x W); draw them for this size "
            f"(sample_coefficients(B, ({h}, {w}), ...)) or rescale the same draw with "
            f"coefficients.with_temperature(T=..., size=({h}, {w}))"
        )
    return coefficients


def warp(images: Tensor, coefficients: Coefficients, *, interp: str = "linear") -> Tensor:
    r"""Apply the diffeomorphisms of ``coefficients`` to a :math:`(B, C, H, W)` batch (the deterministic half of :func:`deform`).

    .. math:: (\tau x)[\cdot, p_y, p_x] = x[\cdot,\ p_y - d_y(p),\ p_x - d_x(p)]

    with :math:`d` = ``fields_from_coefficients(coefficients, (H, W))``, the source clamped to the
    image. Image :math:`b` gets field :math:`b`; the normals are cast to the images' dtype and
    device. The work is done in chunks of about ``_CHUNK_PIXELS`` output pixels so that the
    sampling grid stays in cache. A zero temperature is the identity map, bit for bit (except for
    ``interp="gaussian"``, which blurs). The images are checked as by :func:`deform`
    (:func:`~diffeosens.validation.check_images`), the coefficients by :func:`check_coefficients`
    (one per image, drawn for this image size); an empty batch gives an empty result.

    >>> x = torch.rand(4, 3, 32, 32)
    >>> warp(x, sample_coefficients(4, 32, delta=1.0, seed=0)).shape
    torch.Size([4, 3, 32, 32])
    """
    check_choice(interp, INTERPOLATIONS, "interp")
    check_images(images, ndim=4, layout="B, C, H, W")
    check_coefficients(coefficients, images.shape[0], tuple(images.shape[-2:]))
    return _warp(images, coefficients, interp)


def _warp(images: Tensor, coefficients: Coefficients, interp: str) -> Tensor:
    """:func:`warp` on checked arguments."""
    b, _, h, w = images.shape
    if b == 0:
        return images.clone()
    coefficients = coefficients.to(images.device, images.dtype)
    T = coefficients.T
    if interp == "gaussian":
        parts = [
            _resample_gaussian(images[sl], fields_from_coefficients(coefficients[sl], (h, w)))
            for sl in _chunks(b, h, w, factor=_GAUSS_CHUNK_PIXELS / _CHUNK_PIXELS)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    if T.numel() == 1 and float(T) == 0.0:
        return images.clone()  # a zero temperature is the identity map, bit for bit
    mode = "bilinear" if interp == "linear" else "nearest"
    parts = [
        F.grid_sample(images[sl], _source_grid(coefficients[sl], h, w), mode=mode, padding_mode="border", align_corners=True)
        for sl in _chunks(b, h, w)
    ]
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    still = T == 0
    if T.numel() > 1 and bool(still.any()):
        still = still.to(images.device)
        out[still] = images[still]
    return out


def deform(
    images: Tensor,
    *,
    T: float | Tensor | None = None,
    delta: float | Tensor | None = None,
    cut: float | Tensor = 3,
    interp: str = "linear",
    generator: torch.Generator | None = None,
    seed: int | None = None,
    coefficients: Coefficients | None = None,
    return_fields: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Apply an independent random diffeomorphism to every image (methods §2.6–2.8).

    Draw then apply: ``warp(images, sample_coefficients(...))``. Give ``coefficients`` to apply
    fields drawn before (then ``T``, ``delta``, ``cut``, ``seed`` and ``generator`` are not
    used and must be left out).

    .. math:: (\tau x)[\cdot, p_y, p_x] = x[\cdot,\ p_y - d_y(p),\ p_x - d_x(p)]

    with the source clamped to the image and evaluated by interpolation.

    Args:
        images: :math:`(\dots, C, H, W)` float tensor; each :math:`(C, H, W)` slice is an image.
        T: temperature, a scalar or one value per image. Exactly one of ``T`` and ``delta``.
        delta: typical displacement in pixels (converted with :func:`temperature_for`).
        cut: mode cutoff :math:`c \ge 1`, a scalar or one value per image, keeping mode indices up
            to at most the image side :math:`\max(H, W)` (:func:`~.temperature.check_mode_count`).
        interp: ``"linear"`` (bilinear, the papers' setting), ``"nearest"``, or ``"gaussian"``
            (normalised Gaussian weights, :math:`\sigma = 0.4715` px, over all pixels; at
            :math:`T = 0` a blur, not the identity).
        generator: source of the seed (one draw per call); ``seed``: the seed itself. Image
            :math:`n` of the flattened batch is item :math:`n` of the seed's counter-based stream
            (:mod:`diffeosens.streams`), so ``deform(x, seed=s)`` applies to ``x[n]`` the field
            that ``measure(model, x, seed=s)`` applies in its first draw.
        coefficients: fields drawn by :func:`sample_coefficients`, one per image.
        return_fields: also return the displacement fields in pixels, :math:`(\dots, 2, H, W)`.

    Returns:
        The deformed images (same shape, dtype and device), and the fields if requested.

    Warns:
        OverhangWarning: if some ``T`` exceeds :math:`T_\max` of its cutoff.

    >>> x = torch.rand(8, 3, 32, 32)
    >>> deform(x, delta=1.0, cut=3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([8, 3, 32, 32])
    """
    check_images(images)
    check_choice(interp, INTERPOLATIONS, "interp")
    lead = images.shape[:-3]
    c, h, w = images.shape[-3:]
    flat = images.reshape(-1, c, h, w)
    b = flat.shape[0]
    if coefficients is None and b == 0:  # nothing to deform: check the arguments, draw nothing
        resolve_temperature(T, delta, cut, 0, (h, w))
        check_generator(generator)
        if seed is not None:
            check_seed(seed)
        out = images.clone()
        return (out, images.new_zeros((*lead, 2, h, w))) if return_fields else out
    if coefficients is None:
        coefficients = sample_coefficients(b, (h, w), cut=cut, T=T, delta=delta, seed=seed, generator=generator,
                                           device=flat.device, dtype=flat.dtype)
    else:
        given = {k: v for k, v in (("T", T), ("delta", delta), ("seed", seed), ("generator", generator)) if v is not None}
        if given or not (isinstance(cut, (int, float)) and cut == 3):
            raise ValueError(f"coefficients already fix the fields; do not also give {sorted(given) or ['cut']}")
        check_coefficients(coefficients, b, (h, w))
    out = _warp(flat, coefficients, interp).reshape(images.shape)
    if not return_fields:
        return out
    fields = fields_from_coefficients(coefficients.to(flat.device, flat.dtype), (h, w))
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
    check_images(images)
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

