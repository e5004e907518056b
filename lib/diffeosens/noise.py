r"""White noise matched in norm to a perturbation (methods §3).

Per-sample match (CIFAR-10 and 2D figures, NeurIPS 2021; methods §3.1):

.. math:: \eta_n = \|\tau_n x_n - x_n\|\ \frac{\xi_n}{\|\xi_n\|}, \qquad \xi_n \sim \mathcal N(0, I),

the norms running over every entry of one sample (all channels and positions). The noisy input
is :math:`x_n + \eta_n`.

Batch-variance match (the 1D experiments; methods §3.3): one variance for the whole batch,

.. math:: \sigma^2 = \frac{1}{P d} \sum_n \|\tau_n x_n - x_n\|^2, \qquad \eta_n \sim \mathcal N(0, \sigma^2 I_d),

with :math:`d` the number of entries of a sample.

Rectified variant (``rectify=True``; the 1D experiments): the returned noise is
:math:`\mathrm{ReLU}(\eta_n)`, to be *added* to the clean input, :math:`\tilde x_n = x_n +
\mathrm{ReLU}(\eta_n)`. It is computed from exactly the :math:`\eta_n` that ``rectify=False``
would return for the same generator state. Its norm is **not** matched: per entry it has mean
:math:`\sigma_n/\sqrt{2\pi}` and second moment :math:`\sigma_n^2/2`, so its expected squared
norm is half the matched one (:math:`\sigma_n^2 = \|\tau_n x_n - x_n\|^2/d` per sample, or the
batch :math:`\sigma^2`). With ``match="batch", rectify=True`` this is exactly the 1D code's
``perturb``. (The theory notebook's :math:`\mathrm{ReLU}(x + \eta)` is implemented in
:mod:`diffeosens.theory`.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from .validation import check_choice, check_finite, check_float_tensor, check_generator, check_min_ndim

__all__ = ["matched_noise", "rescale_to_norm"]

MATCHES = ("sample", "batch")


def rescale_to_norm(xi: Tensor, norms: Tensor) -> Tensor:
    r"""Rescale each sample of ``xi`` (shape :math:`(B, \dots)`) to the given L2 norms ``[B]``.

    The norms and scale factors are computed in float64; a result that does not fit ``xi``'s
    dtype (noise for images near the dtype's largest value) raises :class:`ValueError` instead
    of returning infinities.
    """
    flat = xi.reshape(xi.shape[0], -1)
    cur = torch.linalg.vector_norm(flat, dim=1, dtype=torch.float64)
    scale64 = norms.to(torch.float64) / cur
    scale = scale64.to(xi.dtype)
    out = flat * scale[:, None]
    if not bool(torch.isfinite(out.sum())) and not bool(torch.isfinite(out).all()):
        _raise_out_of_range(float(scale64.max() * flat.abs().max().double()), xi.dtype)
    return out.reshape(xi.shape)


def _raise_out_of_range(largest: float, dtype: torch.dtype) -> None:
    raise ValueError(
        f"the matched noise has entries up to {largest:.3g}, beyond the range of {str(dtype).replace('torch.', '')} "
        f"(largest finite value {torch.finfo(dtype).max:.3g}): the images are too large for this dtype; rescale them "
        "(e.g. divide by their maximum) or compute in float64"
    )


def matched_noise(
    clean: Tensor,
    perturbed: Tensor,
    *,
    generator: torch.Generator | None = None,
    rectify: bool = False,
    match: str = "sample",
    sample_dims: int = 3,
) -> Tensor:
    r"""Gaussian noise with the norm of ``perturbed - clean``, one draw per sample.

    Args:
        clean: :math:`(\dots, C, H, W)` clean inputs (for 1D signals :math:`(\dots, C, N)` with
            ``sample_dims=2``).
        perturbed: the perturbed inputs, same shape.
        generator: source of randomness (the draw happens on the generator's device).
        rectify: return :math:`\mathrm{ReLU}(\eta)` instead of :math:`\eta` (see module docstring).
        match: ``"sample"`` (exact per-sample norm) or ``"batch"`` (one variance for the batch).
        sample_dims: how many trailing dimensions make one sample (3 for images, 2 for 1D).

    Returns:
        The noise :math:`\eta` (or its rectification), same shape, dtype and device as ``clean``;
        the noisy input is ``clean + noise``.

    >>> x = torch.zeros(4, 3, 8, 8); y = x + 1.0
    >>> eta = matched_noise(x, y, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(eta.flatten(1).norm(dim=1), (y - x).flatten(1).norm(dim=1))
    True
    """
    check_float_tensor(clean, "clean")
    check_float_tensor(perturbed, "perturbed")
    check_choice(match, MATCHES, "match")
    check_generator(generator)
    if isinstance(sample_dims, bool) or not isinstance(sample_dims, int) or sample_dims < 1:
        raise ValueError(f"sample_dims must be an integer >= 1, got {sample_dims!r}")
    check_min_ndim(clean, sample_dims, "..., " + ", ".join(["*"] * sample_dims), "clean")
    if clean.shape != perturbed.shape:
        raise ValueError(
            f"clean and perturbed must have the same shape, got {tuple(clean.shape)} and {tuple(perturbed.shape)}"
        )
    if clean.device != perturbed.device:
        raise ValueError(f"clean and perturbed must be on the same device, got {clean.device} and {perturbed.device}")
    check_finite(clean, "clean")
    check_finite(perturbed, "perturbed")

    sample_shape = clean.shape[clean.ndim - sample_dims :]
    if clean.numel() == 0:  # an empty batch: no noise to draw
        return torch.zeros_like(clean)
    diff = (perturbed - clean).reshape(-1, *sample_shape)
    if not bool(torch.isfinite(diff.sum())) and not bool(torch.isfinite(diff).all()):
        # finite inputs whose difference overflows the dtype (entries near its largest value): in float64
        diff = (perturbed.double() - clean.double()).reshape(-1, *sample_shape)
    b = diff.shape[0]
    d = diff[0].numel()
    target = torch.linalg.vector_norm(diff.reshape(b, -1), dim=1, dtype=torch.float64)  # [B], float64: no overflow

    draw_device = generator.device if generator is not None else clean.device
    xi = torch.randn(diff.shape, generator=generator, device=draw_device, dtype=clean.dtype).to(clean.device)
    if match == "sample":
        eta = rescale_to_norm(xi, target)
    else:
        sigma64 = torch.sqrt((target**2).sum() / max(b * d, 1))
        eta = xi * sigma64.to(clean.dtype)
        if not bool(torch.isfinite(eta).all()):
            _raise_out_of_range(float(sigma64 * xi.abs().max().double()), clean.dtype)
    if rectify:
        eta = torch.relu(eta)
    return eta.reshape(clean.shape)
