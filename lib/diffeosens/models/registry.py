"""The model registry and its front door, :func:`build` (methods §5).

Each family file ends with builder functions decorated with :func:`register_model`. A builder
takes keyword arguments only: the four common ones (``num_classes``, ``in_channels``,
``activation``, ``width_factor``) and the family's options, each with its default. The
builder's defaults *are* the family defaults: :func:`build` drops the common arguments left at
``None`` (as timm's ``create_model`` does), so ``activation=None`` gives ReLU everywhere except
EfficientNetB0 (swish, i.e. ``"silu"``), and ``in_channels=None`` gives 3 everywhere except
ConvGAP1d (1).
"""

from __future__ import annotations

import fnmatch
import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

from ..validation import check_positive_int, warn_caller
from .activations import make_activation

__all__ = [
    "ModelEntry",
    "available",
    "build",
    "check_activation",
    "check_common",
    "check_width_factor",
    "register_model",
    "scaled_width",
]

COMMON_ARGS: tuple[str, ...] = ("num_classes", "in_channels", "activation", "width_factor")

F = TypeVar("F", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: canonical ``name``, its ``builder``, family ``options`` with defaults."""

    name: str
    builder: Callable[..., nn.Module]
    options: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(fn: F | None = None, *, name: str | None = None) -> Any:
    """Register a builder under ``name`` (default: the function's name); usable bare or called.

    The builder must accept the keyword arguments ``num_classes``, ``in_channels``,
    ``activation`` and ``width_factor``, each with a default; every other keyword argument (with
    a default) is a family option that :func:`build` accepts. Lookup is case-insensitive;
    re-registering a name warns and overwrites.
    """

    def decorator(builder: F) -> F:
        model_name = name or builder.__name__
        params = inspect.signature(builder).parameters
        missing = [a for a in COMMON_ARGS if a not in params]
        if missing:
            raise TypeError(f"builder {builder.__name__!r} must accept the keyword arguments {missing}")
        no_default = [p for p, v in params.items() if v.default is inspect.Parameter.empty]
        if no_default:
            raise TypeError(f"builder {builder.__name__!r} must give defaults to {no_default}")
        key = model_name.lower()
        if key in _REGISTRY:
            warn_caller(f"overwriting {model_name} in the model registry")
        _REGISTRY[key] = ModelEntry(
            name=model_name,
            builder=builder,
            options={p: v.default for p, v in params.items() if p not in COMMON_ARGS},
            defaults={p: params[p].default for p in COMMON_ARGS},
        )
        return builder

    return decorator(fn) if fn is not None else decorator


def available(pattern: str | None = None) -> list[str]:
    """Canonical names of the registered models, sorted, optionally filtered by a glob ``pattern``.

    >>> available("VGG11*")
    ['VGG11', 'VGG11bn']
    """
    names = sorted((e.name for e in _REGISTRY.values()), key=str.lower)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n.lower(), pattern.lower())]
    return names


def _entry(name: str) -> ModelEntry:
    if not isinstance(name, str) or name.lower() not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names are {', '.join(available())}")
    return _REGISTRY[name.lower()]


def build(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int | None = None,
    activation: str | None = None,
    width_factor: float = 1.0,
    **options: Any,
) -> nn.Module:
    """Build a freshly initialised model of the zoo (methods §5).

    Args:
        name: a name from :func:`available` (case-insensitive), e.g. ``"VGG11bn"``.
        num_classes: number of outputs (1 for the hinge-loss runs, methods §7.3).
        in_channels: input channels; ``None`` = the family default (3, or 1 for ``ConvGAP1d``).
        activation: one of :data:`~diffeosens.models.activations.ACTIVATIONS`, put at every
            nonlinearity; ``None`` = the family default (``"relu"``, or ``"silu"`` = swish for
            ``EfficientNetB0``). Gates (EfficientNet's squeeze-excitation sigmoid) stay as they are.
        width_factor: multiplies every hidden channel or width count (rounded, at least 1); 1
            gives the paper's nets.
        **options: family options, e.g. ``avgpool_identity`` (VGG), ``width`` (DenseNetL*,
            ConvGAP*), ``input_size`` (LeNet, DenseNetL*); see the builder of each family.

    Returns:
        The model, in training mode, on the default device and dtype.

    Raises:
        ValueError: unknown name, activation or option (the message lists the valid ones), or a
            ``width_factor`` that is not positive.

    >>> import torch
    >>> net = build("VGG11", num_classes=1, activation="tanh", width_factor=0.25)
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 1])
    """
    entry = _entry(name)
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        valid = ", ".join(repr(o) for o in entry.options) or "none"
        raise ValueError(
            f"unknown option(s) {', '.join(repr(o) for o in unknown)} for model {entry.name!r}; "
            f"valid options are {valid}"
        )
    if activation is not None:
        make_activation(activation)  # validates the name before anything is built
    kwargs: dict[str, Any] = {
        "num_classes": check_positive_int(num_classes, "num_classes"),
        "width_factor": check_width_factor(width_factor),
    }
    if in_channels is not None:
        kwargs["in_channels"] = check_positive_int(in_channels, "in_channels")
    if activation is not None:
        kwargs["activation"] = activation
    return entry.builder(**kwargs, **options)


def check_width_factor(width_factor: Any) -> float:
    """``width_factor`` must be a finite real number ``> 0``; returns it as a float."""
    if isinstance(width_factor, bool) or not isinstance(width_factor, numbers.Real):
        raise TypeError(f"width_factor must be a positive number, got {width_factor!r}")
    if not math.isfinite(width_factor) or width_factor <= 0:
        raise ValueError(f"width_factor must be a positive, finite number, got {width_factor!r}")
    return float(width_factor)


def scaled_width(width: int, width_factor: float) -> int:
    """``round(width * width_factor)``, at least 1 (the rule behind every ``width_factor``).

    >>> scaled_width(64, 0.5), scaled_width(3, 0.1)
    (32, 1)
    """
    return max(1, int(round(width * width_factor)))


def check_common(num_classes: Any, in_channels: Any, activation: str, width_factor: Any) -> tuple[int, int, float]:
    """Validate the four arguments every architecture takes; returns ``(num_classes, in_channels, width_factor)``."""
    check_activation(activation)
    return check_positive_int(num_classes, "num_classes"), check_positive_int(in_channels, "in_channels"), check_width_factor(width_factor)


def check_activation(activation: str) -> str:
    """``activation`` must be one of :data:`ACTIVATIONS`."""
    make_activation(activation)
    return activation

