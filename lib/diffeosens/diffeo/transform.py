r"""Random-diffeomorphism augmentation as a torchvision-v2 transform (methods §2.14)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..streams import seed_from_generator, standard_normals, stream_id
from ..validation import check_choice
from .fields import Coefficients
from .temperature import max_mode_index, temperature_range
from .warping import INTERPOLATIONS, check_images, warp

__all__ = ["Diffeo"]

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
        return np.random.default_rng(seed_from_generator(self.generator))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        image = next((x for x in flat_inputs if isinstance(x, Tensor)), None)
        if image is None:
            raise TypeError("Diffeo works on tensors of shape (..., C, H, W); convert PIL images with v2.ToImage() first")
        check_images(image, "image")
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
        seed = seed_from_generator(self.generator)
        normals = standard_normals(seed, stream_id("diffeo"), 0, batch, (2, kmax, kmax), dtype=image.dtype, device=image.device)
        return {"coefficients": Coefficients(normals, T, cut)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        check_images(inpt, "image")
        c, h, w = inpt.shape[-3:]
        flat = inpt.reshape(-1, c, h, w)
        out = warp(flat, params["coefficients"], interp=self.interp).reshape(inpt.shape)
        if hasattr(inpt, "wrap_like") or type(inpt) is not Tensor:
            try:
                from torchvision import tv_tensors

                return tv_tensors.wrap(out, like=inpt)
            except (ImportError, TypeError):  # pragma: no cover
                return out
        return out
