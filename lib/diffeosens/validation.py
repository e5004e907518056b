"""Argument validation shared by the public functions.

Every check raises :class:`ValueError` (or :class:`TypeError` for a wrong type) whose message
names the offending parameter, says what was received and what is valid, so that bad input
never surfaces as a traceback from deep inside torch.

torch is imported by the tensor checks only, so that light modules (:mod:`diffeosens.results`,
:mod:`diffeosens.stats`) load without it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "check_choice",
    "check_finite",
    "check_float_tensor",
    "check_min_ndim",
    "check_noise_norm",
    "check_nonnegative",
    "check_positive_int",
    "check_seed",
]


def check_float_tensor(x: Any, name: str) -> Tensor:
    """``x`` must be a floating-point :class:`torch.Tensor`."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} must have a floating-point dtype (float32 or float64), got {x.dtype}; "
            f"convert integer images first, e.g. `{name}.float() / 255`"
        )
    return x


def check_min_ndim(x: Tensor, ndim: int, layout: str, name: str) -> None:
    """``x`` must have at least ``ndim`` dimensions laid out as ``layout`` (e.g. ``"..., C, H, W"``)."""
    if x.ndim < ndim:
        raise ValueError(
            f"{name} must have shape ({layout}) with at least {ndim} dimensions, "
            f"got shape {tuple(x.shape)}"
        )


def check_finite(x: Tensor, name: str) -> None:
    """``x`` must contain no NaN or infinity."""
    import torch

    if not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {n_bad} non-finite value(s) (NaN or inf); all values must be finite")


def check_choice(value: Any, choices: Collection[Any], name: str) -> None:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in sorted(choices, key=str))
        raise ValueError(f"unknown {name} {value!r}; valid values are {valid}")


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` must be an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            as_int = int(value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
        if as_int != value:
            raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
        value = as_int
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_seed(seed: Any, name: str = "seed") -> int:
    """``seed`` must be an integer (``bool`` is not); returns it as a Python ``int``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {seed!r}")
    return int(seed)


def check_nonnegative(value: Any, name: str, meaning: str) -> float:
    """``value`` must be a finite real number ``>= 0``; ``meaning`` says what it is in the error.
    Returns it as a ``float``."""
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number >= 0 ({meaning}), got {value!r}") from None
    if not math.isfinite(as_float) or as_float < 0:
        raise ValueError(f"{name} must be a finite number >= 0 ({meaning}), got {value!r}")
    return as_float


def check_noise_norm(value: Any, name: str = "norm") -> float:
    """``value`` must be a finite real number ``>= 0``: the expected L2 norm of a Gaussian noise
    (training-noise corruption, :mod:`diffeosens.data.corruption`); returns it as a ``float``."""
    return check_nonnegative(value, name, "expected L2 norm of the noise")
