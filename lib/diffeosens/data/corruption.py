r"""Gaussian training-noise corruption, "noisy CIFAR-10" (methods §6.2).

.. math:: x \mapsto x + \frac{\sigma}{\sqrt{d}}\,\xi, \qquad \xi \sim \mathcal N(0, I_d),

with :math:`d = C H W` the number of entries of one sample (3072 for CIFAR-10).

Convention:
    * ``norm`` (:math:`\sigma`, the reference's ``gaussian_corruption_std``) is the **expected L2
      norm** of the noise vector, :math:`\langle\|\eta\|^2\rangle^{1/2} = \sigma`, **not** a
      per-pixel standard deviation: the per-pixel std is :math:`\sigma/\sqrt d`
      (:math:`\sigma/55.4` on CIFAR-10).
    * It is added **after** normalisation, in normalised units (a normalised CIFAR-10 image has
      norm ≈ 67; the matched diffeo noise ≈ 19). Values used in the paper: 0, 0.01, 0.1, 1, 10,
      30, 100.
    * It is applied to **both** the training and the test set, and redrawn every time an image is
      loaded (fresh every epoch and every test pass). :func:`noisy_test_set` is the alternative
      for a *fixed* corrupted copy.
    * Not to be confused with the matched noise of the sensitivity measurement
      (:mod:`diffeosens.noise`, methods §3), whose norm is set per image.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..validation import check_float_tensor, check_min_ndim, check_noise_norm, check_seed

__all__ = ["GaussianCorruption", "corrupt", "noisy_test_set"]


def _check_sample_dims(sample_dims: int) -> int:
    if isinstance(sample_dims, bool) or not isinstance(sample_dims, int) or sample_dims < 1:
        raise ValueError(f"sample_dims must be an integer >= 1 (3 for (C, H, W) images, 2 for (C, N) signals), got {sample_dims!r}")
    return sample_dims


def corrupt(x: Tensor, norm: float, *, sample_dims: int = 3, generator: torch.Generator | None = None) -> Tensor:
    r"""Add :math:`(\sigma/\sqrt d)\,\xi`, :math:`\xi \sim \mathcal N(0, I)`, to every sample of ``x``.

    Args:
        x: Normalised inputs, :math:`(\dots, C, H, W)`: one image ``[C, H, W]`` or a batch
            ``[B, C, H, W]`` (the last ``sample_dims`` dimensions form one sample of size
            :math:`d`).
        norm: :math:`\sigma`, the expected L2 norm of each sample's noise (normalised units);
            0 returns ``x`` itself.
        sample_dims: How many trailing dimensions make one sample (3 for images, 2 for 1D).
        generator: Random source, on ``x``'s device (``None``: torch's global RNG).

    Returns:
        A new tensor with the shape, dtype and device of ``x``.

    >>> x = torch.zeros(4, 3, 32, 32)
    >>> y = corrupt(x, 10.0, generator=torch.Generator().manual_seed(0))
    >>> y.shape, round(float(y.std() * math.sqrt(3072)), 0)
    (torch.Size([4, 3, 32, 32]), 10.0)
    """
    check_float_tensor(x, "x")
    sample_dims = _check_sample_dims(sample_dims)
    check_min_ndim(x, sample_dims, "..., C, H, W" if sample_dims == 3 else f"..., {sample_dims} sample dims", "x")
    sigma = check_noise_norm(norm)
    if sigma == 0:
        return x
    d = math.prod(x.shape[-sample_dims:])
    xi = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + (sigma / math.sqrt(d)) * xi


class GaussianCorruption(torch.nn.Module):
    r"""Transform adding fresh Gaussian corruption of expected L2 norm ``norm`` at every call.

    Use it after ``Normalize`` in a torchvision pipeline (one ``[C, H, W]`` image per call), or
    on batches ``[B, C, H, W]`` (each image gets its own draw); see :func:`corrupt`.

    Args:
        norm: :math:`\sigma`, the expected L2 norm of the noise of one sample (not a per-pixel
            std; that is :math:`\sigma/\sqrt{CHW}`).
        sample_dims: Trailing dimensions forming one sample (3 for images).
        generator: Random source (``None``: torch's global RNG, which torch's ``DataLoader``
            seeds per worker).

    >>> t = GaussianCorruption(1.0, generator=torch.Generator().manual_seed(0))
    >>> img = torch.zeros(3, 32, 32)
    >>> t(img).shape, torch.equal(t(img), t(img))
    (torch.Size([3, 32, 32]), False)
    """

    def __init__(self, norm: float, *, sample_dims: int = 3, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.norm = check_noise_norm(norm)
        self.sample_dims = _check_sample_dims(sample_dims)
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        return corrupt(x, self.norm, sample_dims=self.sample_dims, generator=self.generator)

    def extra_repr(self) -> str:
        return f"norm={self.norm}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(norm={self.norm})"


def noisy_test_set(images: Tensor, norm: float, *, seed: int = 0, sample_dims: int = 3) -> Tensor:
    r"""A fixed corrupted copy of normalised evaluation images (the same noise at every call).

    Args:
        images: Normalised images :math:`(N, C, H, W)` (float).
        norm: Expected L2 norm :math:`\sigma` of each image's noise (normalised units).
        seed: Seed of the dedicated generator (on ``images``' device).
        sample_dims: Trailing dimensions forming one sample.

    Returns:
        ``images + (norm / sqrt(C H W)) * xi``, same shape, dtype and device.

    >>> x = torch.zeros(5, 3, 32, 32)
    >>> a, b = noisy_test_set(x, 30.0, seed=1), noisy_test_set(x, 30.0, seed=1)
    >>> a.shape, torch.equal(a, b)
    (torch.Size([5, 3, 32, 32]), True)
    """
    check_float_tensor(images, "images")
    seed = check_seed(seed)
    gen = torch.Generator(device=images.device).manual_seed(seed)
    return corrupt(images, norm, sample_dims=sample_dims, generator=gen).clone()
