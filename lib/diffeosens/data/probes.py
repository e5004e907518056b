"""Probe sets for the sensitivity measurements (methods §4.6, open choice O1).

The reference drew 500 test images from an unseeded shuffled loader, so every invocation used a
different probe set. Here the probe set is a **fixed, recorded** random subset: the same ``seed``
gives the same images for every architecture, seed and profile, so results are comparable.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from ..validation import check_positive_int, check_seed
from .vision import NORMALIZATION, canonical_name, load_tensors

__all__ = ["normalize", "probe_images"]


def normalize(images_uint8: Tensor, name: str, *, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""uint8 images :math:`(N, C, H, W)` to the network's input space (the paper's normalisation).

    >>> normalize(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8), "cifar10")[0, :, 0, 0]
    tensor([2.5141, 2.5968, 2.7537])
    """
    x = images_uint8.to(dtype) / 255.0
    norm = NORMALIZATION[canonical_name(name)]
    if norm is not None:
        mean, std = (torch.tensor(v, dtype=dtype).view(1, -1, 1, 1) for v in norm)
        x = (x - mean) / std
    return x


def probe_images(
    name: str = "cifar10",
    n: int = 500,
    *,
    seed: int = 0,
    train: bool = False,
    root: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` normalised images of a split, drawn without replacement with ``seed``.

    Returns:
        ``(images [n, C, H, W], labels [n], indices [n])``; ``indices`` are positions in the split.
    """
    n = check_positive_int(n, "n (the number of probe images)")
    seed = check_seed(seed)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch dtype (torch.float32 or torch.float64), got {dtype!r}")
    images, labels = load_tensors(name, train=train, root=root)
    if n > images.shape[0]:
        raise ValueError(f"n must be between 1 and {images.shape[0]} (the size of the split), got {n}")
    idx = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return normalize(images[idx], name, dtype=dtype), labels[idx], idx
