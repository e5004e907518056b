"""Argument validation shared by the public functions.

Every check raises :class:`ValueError` (or :class:`TypeError` for a wrong type) whose message
names the offending parameter, says what was received and what is valid, so that bad input
never surfaces as a traceback from deep inside torch.

One check per kind of input, used by every entry point that takes that input (the table of
what each public function accepts is ``docs/contract.md``):

============================ ===================================================================
input                        check
============================ ===================================================================
images (perturbations)       :func:`check_images` (float, finite, ``(..., C, H, W)``, ``C >= 1``,
                             at least 2x2 pixels; ``ndim=4`` for a batch ``(B, C, H, W)``)
image size ``n`` / ``(H, W)`` :func:`check_image_size` (integers >= 2, never truncated)
counts (``n_boot``, ...)     :func:`check_positive_int` (an integer, not a bool, >= a minimum)
seeds, generators            :func:`check_seed`, :func:`check_generator`
numbers such as ``delta``    :func:`check_not_bool` (``True`` is not 1 pixel), then the
                             conversion of :mod:`diffeosens.diffeo.temperature`
devices, models              :func:`check_device`, :func:`check_module`
allocations                  :func:`check_allocation` (a request larger than the machine's
                             memory is refused before it is made)
============================ ===================================================================

Warnings of the package are issued with :func:`warn_caller`, which points them at the user's
line (the first frame outside the package), not at a line inside the library.

torch is imported by the tensor checks only, so that light modules (:mod:`diffeosens.results`,
:mod:`diffeosens.stats`) load without it.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
import warnings
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

__all__ = [
    "caller_stacklevel",
    "check_allocation",
    "check_choice",
    "check_device",
    "check_finite",
    "check_flag",
    "check_float_tensor",
    "check_generator",
    "check_image_size",
    "check_images",
    "check_min_ndim",
    "check_module",
    "check_noise_norm",
    "check_nonnegative",
    "check_not_bool",
    "check_positive_int",
    "check_seed",
    "warn_caller",
]

def _is_bool(value: Any) -> bool:
    """A Python or NumPy bool (``numpy.bool_``)."""
    return isinstance(value, (bool, np.bool_))


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside the diffeosens package
    (the user's line that called ``deform``, ``measure``, ...); pass it straight to
    :func:`warnings.warn` from the function that warns."""
    frame, level = inspect.currentframe(), 0
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return max(level, 1)


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """:func:`warnings.warn` pointed at the user's line (see :func:`caller_stacklevel`)."""
    warnings.warn(message, category, stacklevel=caller_stacklevel())


def check_float_tensor(x: Any, name: str) -> Tensor:
    """``x`` must be a floating-point :class:`torch.Tensor`."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        how = f"`{name}.float() / 255` for 8-bit images" if x.dtype == torch.uint8 else f"`{name}.float()`"
        raise TypeError(f"{name} must have a floating-point dtype (float32 or float64), got {x.dtype}; convert it first, e.g. {how}")
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
    """``value`` must be an integer ``>= minimum`` (a Python or NumPy integer, or a float with an
    integer value such as ``3.0``; never a bool); returns it as a Python ``int``."""
    if _is_bool(value):
        raise TypeError(f"{name} must be an integer >= {minimum}, got the bool {value!r}")
    if not isinstance(value, int):
        try:
            as_int = int(value)
        except (TypeError, ValueError, OverflowError):
            raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
        if as_int != value:
            raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
        value = as_int
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_seed(seed: Any, name: str = "seed") -> int:
    """``seed`` must be an integer in ``[0, 2**64)`` (``bool`` is not one); returns it as a Python
    ``int``. Every seed of the package (perturbation streams, probe sets, initial weights) follows
    this one rule."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {seed!r}")
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {seed}")
    return seed


def check_flag(value: Any, name: str) -> bool:
    """``value`` must be ``True`` or ``False`` (a string such as ``"no"`` would count as true)."""
    if not _is_bool(value):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_generator(generator: Any, name: str = "generator") -> torch.Generator | None:
    """``generator`` must be ``None`` or a :class:`torch.Generator` (a seed goes to ``seed=``)."""
    import torch

    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"{name} must be a torch.Generator or None, got {type(generator).__name__} {generator!r}; "
            f"e.g. {name}=torch.Generator().manual_seed(0)"
        )
    return generator


def check_not_bool(value: Any, name: str, meaning: str) -> None:
    """``value`` (a number, a sequence of numbers, an array or a tensor) must not be or hold a bool:
    ``True`` would silently count as 1. ``meaning`` says what the number is, for the error."""
    dtype = getattr(value, "dtype", None)
    if _is_bool(value) or (dtype is not None and str(dtype) in ("bool", "torch.bool")):
        raise TypeError(f"{name} must be a number ({meaning}), not a bool; got {value!r}")
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        for v in value:
            check_not_bool(v, name, meaning)


def check_image_size(size: Any, name: str = "size") -> tuple[int, int]:
    """An image size ``n`` or ``(H, W)`` of integers ``>= 2`` (pixels), as ``(H, W)``; a
    non-integer such as ``32.7`` is refused, never truncated."""
    import torch

    pair = isinstance(size, (tuple, list, torch.Size))
    if pair and len(size) != 2:
        raise ValueError(f"{name} must be an integer n or a pair (H, W) of integers (pixels), got {size!r}")
    values = tuple(size) if pair else (size, size)
    for v in values:
        if _is_bool(v) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an integer n or a pair (H, W) of integers (pixels), got {size!r}")
    h, w = (int(v) for v in values)
    if h < 2 or w < 2:
        raise ValueError(f"images must be at least 2x2 pixels, got size (H, W) = ({h}, {w})")
    return h, w


def check_images(images: Any, name: str = "images", *, ndim: int | None = None, layout: str = "..., C, H, W") -> Tensor:
    """Images for a perturbation or a measurement: a finite floating-point tensor ``(..., C, H, W)``
    (exactly ``ndim`` dimensions when given, laid out as ``layout``) with at least one channel and
    images of at least 2x2 pixels. Returns ``images``.

    An empty batch (a leading dimension 0) is accepted: the perturbation entry points return an
    empty result for it.
    """
    import torch

    check_float_tensor(images, name)
    if ndim is not None and images.ndim != ndim:
        raise ValueError(
            f"{name} must have shape ({layout}) with exactly {ndim} dimensions, got shape {tuple(images.shape)}"
        )
    check_min_ndim(images, 3, layout, name)
    if images.shape[-3] == 0:
        raise ValueError(f"{name} must have at least one channel (C >= 1 in ({layout})), got shape {tuple(images.shape)}")
    check_image_size(tuple(images.shape[-2:]), f"the image size (H, W) of {name}")
    # A sum is non-finite iff some entry is (or it overflows): a cheap screen before the exact check.
    if not bool(torch.isfinite(images.sum())):
        check_finite(images, name)
    return images


def check_module(model: Any, name: str = "model") -> nn.Module:
    """``model`` must be a :class:`torch.nn.Module` (its copies, devices and probe points need one)."""
    from torch import nn

    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{name} must be a torch.nn.Module, got {type(model).__name__}; wrap a plain function in a module "
            "(class F(nn.Module): def forward(self, x): return f(x))"
        )
    return model


def check_device(device: Any, name: str = "device") -> torch.device | None:
    """``device`` (``None``, a string such as ``"cpu"``, ``"cuda:1"``, or a :class:`torch.device`)
    must name a device torch knows and this machine has; returned as a :class:`torch.device`."""
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ValueError(f"{name}={device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:0'): {err}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={device!r}: no CUDA GPU is available on this machine (torch.cuda.is_available() is False); use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s) (0..{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={device!r}: MPS is not available on this machine; use device='cpu'")
    return dev


def _physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or ``None`` where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def check_allocation(n_bytes: int, what: str, hint: str) -> None:
    """Refuse, before allocating, a request of ``n_bytes`` larger than this machine's memory (it
    would only fail after minutes, or bring the machine down). ``what`` names the request and
    ``hint`` says how to make it smaller."""
    limit = _physical_memory()
    if limit is not None and n_bytes > limit:
        raise ValueError(
            f"{what} would need {n_bytes / 2**30:.3g} GiB, more than the memory of this machine "
            f"({limit / 2**30:.3g} GiB); {hint}"
        )


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
