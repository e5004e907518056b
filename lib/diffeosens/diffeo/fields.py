r"""Random displacement fields: draw the coefficients, then evaluate the sine series (methods §2.1–2.5).

A field is a sine series on the unit square,

.. math::

    \tau_u(u, v) = \sum_{(i,j) \in \mathcal M_c} C_{ij} \sin(i\pi u)\sin(j\pi v), \qquad
    \tau_v(u, v) = \sum_{(i,j) \in \mathcal M_c} D_{ij} \sin(i\pi u)\sin(j\pi v),

    C_{ij} = \sqrt{T/(i^2+j^2)}\; z^{(u)}_{ij}, \quad D_{ij} = \sqrt{T/(i^2+j^2)}\; z^{(v)}_{ij},
    \quad z \sim \mathcal N(0, 1).

The random part, the standard normals :math:`z`, is drawn once by :func:`sample_coefficients`
and kept in a :class:`Coefficients` together with :math:`(T, c)`; applying them is deterministic
(:func:`fields_from_coefficients`, :func:`diffeosens.diffeo.warp`). The draw follows the
counter-based scheme of :mod:`diffeosens.streams`: image :math:`n` of a probe set gets the
normals of item :math:`n` of the ``"diffeo"`` stream of its seed, whatever the batch it is in.

Fields are returned **in pixels**, shape :math:`(B, 2, H, W)`: channel 0 is the horizontal
displacement :math:`d_x = W\,\tau_u`, channel 1 the vertical one :math:`d_y = H\,\tau_v` (the
factor :math:`n`, not :math:`n-1`, as in the reference). :math:`u` is horizontal (columns),
:math:`v` vertical (rows); the modes are evaluated on ``linspace(0, 1, W)`` and
``linspace(0, 1, H)``, so the border rows and columns never move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import torch
from torch import Tensor

from ..streams import seed_from_generator, standard_normals, stream_id
from ..validation import check_allocation, check_generator, check_image_size, check_positive_int, check_seed
from .temperature import max_mode_index, mode_grid, mode_mask, resolve_temperature

__all__ = ["Coefficients", "fields_from_coefficients", "sample_coefficients", "sample_fields"]


def size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` from an image size ``n`` or a pair of integers, each at least 2 pixels
    (:func:`diffeosens.validation.check_image_size`: a non-integer such as 32.7 is refused)."""
    return check_image_size(size)


@lru_cache(maxsize=64)
def sine_tables(h: int, w: int, kmax: int, dtype: torch.dtype, device: str) -> dict[str, Tensor]:
    """Sine tables and the identity sampling grid for an ``h x w`` image and modes ``1..kmax`` (cached).

    ``su`` :math:`[K, W]` and ``svt`` :math:`[H, K]` are :math:`\\sin(i\\pi u)` and
    :math:`\\sin(j\\pi v)^\\top`; ``su2`` and ``base`` are the same horizontal table laid out for
    the direct synthesis of a ``grid_sample`` grid (see :func:`diffeosens.diffeo.warp`).
    """
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


@lru_cache(maxsize=256)
def _unit_amplitudes(cut: float, kmax: int) -> Tensor:
    r""":math:`\mathbb 1[(i,j)\in\mathcal M_c]/\sqrt{i^2+j^2}` as ``[K, K]`` float64 (cached per cutoff)."""
    r2, _ = mode_grid(kmax)
    return mode_mask(torch.tensor(cut, dtype=torch.float64), kmax) / r2.sqrt()


@dataclass(frozen=True)
class Coefficients:
    r"""The mode coefficients of a batch of :math:`B` displacement fields.

    Attributes:
        normals: standard normals :math:`z`, shape :math:`(B, 2, K, K)`, index
            ``[b, component, i-1, j-1]`` (component 0 horizontal, 1 vertical); the random part.
        T: temperatures, float64 of shape ``[1]`` (shared) or ``[B]``.
        cut: cutoffs :math:`c`, float64 of shape ``[1]`` or ``[B]``.
        size: the image size ``(H, W)`` they were drawn for (:func:`sample_coefficients`), or
            ``None`` (made by hand: any size). :func:`~diffeosens.diffeo.warp` refuses images of
            another size, since ``delta`` and the overhang check depend on it; rescale with
            :meth:`with_temperature` (``size=``) to apply the same draw to another size.

    The coefficients are ``normals * amplitudes()``. :meth:`with_temperature` rescales the same
    draw to another :math:`T` or :math:`\delta`, which is how a :math:`\delta` sweep grows one
    field (the explorer, ``measure`` with several ``delta``).
    """

    normals: Tensor
    T: Tensor
    cut: Tensor
    size: tuple[int, int] | None = None

    @property
    def batch(self) -> int:
        return int(self.normals.shape[0])

    @property
    def kmax(self) -> int:
        return int(self.normals.shape[-1])

    def amplitudes(self) -> Tensor:
        r""":math:`\sqrt{T_b}\,\mathbb 1[(i,j)\in\mathcal M_{c_b}]/\sqrt{i^2+j^2}`, float64 ``[B or 1, 1, K, K]``."""
        kmax = self.kmax
        if self.cut.numel() == 1:
            unit = _unit_amplitudes(float(self.cut), kmax)[None]
        else:
            r2, _ = mode_grid(kmax)
            unit = mode_mask(self.cut, kmax) / r2.sqrt()
        return (unit * self.T.sqrt()[:, None, None]).unsqueeze(1)

    def with_temperature(self, T: Any = None, *, delta: Any = None, size: int | Sequence[int] | None = None) -> Coefficients:
        """The same standard normals at another temperature ``T`` or typical displacement ``delta``
        (pixels; needs the image ``size``). With ``size``, the result is for images of that size."""
        if delta is not None and size is None:
            raise ValueError("with_temperature(delta=...) needs the image size (n or (H, W)) to convert pixels to T")
        hw = size_hw(size) if size is not None else None
        T_b, cut_b = resolve_temperature(T, delta, self.cut, self.batch, hw)
        return Coefficients(self.normals, T_b, cut_b, hw if hw is not None else self.size)

    def __getitem__(self, rows: slice) -> Coefficients:
        """The coefficients of images ``rows`` (a slice)."""
        if not isinstance(rows, slice):
            raise TypeError(f"Coefficients can be indexed by a slice of images, got {rows!r}")

        def pick(t: Tensor) -> Tensor:
            return t if t.shape[0] == 1 else t[rows]

        return Coefficients(self.normals[rows], pick(self.T), pick(self.cut), self.size)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Coefficients:
        """Move/cast the normals (``T`` and ``cut`` stay float64 CPU scalars)."""
        return Coefficients(self.normals.to(device=device, dtype=dtype), self.T, self.cut, self.size)


def sample_coefficients(
    batch: int,
    size: int | Sequence[int],
    *,
    cut: float | Tensor = 3,
    T: float | Tensor | None = None,
    delta: float | Tensor | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    start: int = 0,
    draw: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Coefficients:
    r"""Draw the coefficients of ``batch`` independent fields (the random half of :func:`deform`).

    Args:
        batch: number of fields :math:`B`.
        size: image size ``n`` or ``(H, W)`` (converts ``delta`` to :math:`T`; checks overhangs).
        cut: mode cutoff :math:`c \ge 1`, a scalar or one value per field.
        T, delta: temperature or typical displacement in pixels (exactly one), scalar or per field.
        seed: seed of the counter-based stream (:mod:`diffeosens.streams`). Field :math:`b` is
            item ``start + b`` of draw ``draw``: the same ``(seed, start + b, draw)`` gives the
            same field whatever the batch, and it is the field ``measure(seed=seed)`` applies to
            probe image ``start + b`` in its draw ``draw``.
        generator: instead of ``seed``, take the seed from this generator (one draw).
            With neither, the seed comes from torch's global generator.
        device, dtype: of the normals (default: CPU, ``torch.get_default_dtype()``); they are
            drawn in float64, so a seed gives the same field in any dtype.

    >>> c = sample_coefficients(4, 32, delta=1.0, seed=0)
    >>> tuple(c.normals.shape), f"{float(c.T):.2e}"
    ((4, 2, 3, 3), '1.13e-03')
    """
    batch = check_positive_int(batch, "batch", minimum=0)
    hw = size_hw(size)
    T_b, cut_b = resolve_temperature(T, delta, cut, batch, hw)
    if seed is not None and generator is not None:
        raise ValueError("give seed or generator, not both")
    check_generator(generator)
    seed = check_seed(seed) if seed is not None else seed_from_generator(generator)
    kmax = max_mode_index(float(cut_b.max())) if batch else 1
    # drawn in float64 (blocks, then one concatenation) and cast: about 2 float64 copies at the peak
    check_allocation(2 * batch * 2 * kmax * kmax * 8, f"sample_coefficients(batch={batch}, cut={float(cut_b.max()):g})",
                     "draw the fields in chunks (start=, the first item of each chunk, keeps the stream)")
    normals = standard_normals(seed, stream_id("diffeo", draw), start, start + batch, (2, kmax, kmax),
                               dtype=dtype or torch.get_default_dtype(), device=device)
    return Coefficients(normals, T_b, cut_b, hw)


def fields_from_coefficients(coefficients: Coefficients, size: int | Sequence[int]) -> Tensor:
    r"""Evaluate the sine series: displacements in pixels :math:`(B, 2, H, W)` (dtype/device of the normals).

    .. math:: d[b, k, y, x] = n_k \sum_{ij} \sin(j\pi v_y)\, C_{b,k,ij}\, \sin(i\pi u_x),
        \quad n_0 = W,\ n_1 = H.
    """
    h, w = size_hw(size)
    normals = coefficients.normals
    tab = sine_tables(h, w, coefficients.kmax, normals.dtype, str(normals.device))
    coef = normals * coefficients.amplitudes().to(normals)  # [B, 2, i, j]
    fields = tab["svt"] @ coef.transpose(-1, -2) @ tab["su"]
    pix = torch.tensor([float(w), float(h)], dtype=normals.dtype, device=normals.device)
    return fields * pix[None, :, None, None]


def sample_fields(
    batch: int,
    size: int | Sequence[int],
    cut: float | Tensor,
    T: float | Tensor,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Draw ``batch`` independent displacement fields, in pixels, :math:`(B, 2, H, W)`.

    ``fields_from_coefficients(sample_coefficients(...), size)``; see those for the arguments.

    >>> sample_fields(4, (28, 32), 3, 1e-3, seed=0).shape
    torch.Size([4, 2, 28, 32])
    """
    coef = sample_coefficients(batch, size, cut=cut, T=T, seed=seed, generator=generator, device=device, dtype=dtype)
    return fields_from_coefficients(coef, size)
