r"""Activation modules for the model zoo (methods §5; the tanh variants of the MLST paper, O18).

Every nonlinearity of every model is built by :func:`make_activation`, which returns a **fresh
module instance** per call, so that

* each nonlinearity is its own node in the torch.fx graph and can carry its own forward hook
  (methods §4.7);
* nothing runs in place: the sensitivity probes read pre-activation tensors, which an in-place
  activation would overwrite (methods §4.9).

Valid names (:data:`ACTIVATIONS`):

=============  ==========================================================  =================
name           function                                                    module
=============  ==========================================================  =================
``relu``       :math:`\max(0, x)`                                          :class:`nn.ReLU`
``tanh``       :math:`\tanh x`                                             :class:`nn.Tanh`
``gelu``       :math:`x\,\Phi(x)` (exact erf form)                         :class:`nn.GELU`
``silu``       :math:`x\,\sigma(x)` (swish, EfficientNet's default)        :class:`nn.SiLU`
``softplus``   :math:`\log(1 + e^x)`                                       :class:`nn.Softplus`
``linear``     :math:`x`                                                   :class:`nn.Identity`
``abs``        :math:`|x|`                                                 :class:`Abs`
=============  ==========================================================  =================

torch.fx treats the ``torch.nn`` activations as leaf modules (one ``call_module`` node named
after the module, e.g. ``features.1``); :class:`Abs` is traced through, giving one
``call_function`` node named ``<module>.abs`` (e.g. ``features.1.abs``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..validation import check_choice

__all__ = ["ACTIVATIONS", "Abs", "make_activation"]


class Abs(nn.Module):
    r"""Elementwise absolute value :math:`|x|`, out of place.

    Shape: any; the output has the shape, dtype and device of the input.

    >>> Abs()(torch.tensor([-2.0, 0.5]))
    tensor([2.0000, 0.5000])
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.abs(x)


_FACTORIES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "linear": nn.Identity,
    "abs": Abs,
}

ACTIVATIONS: tuple[str, ...] = tuple(_FACTORIES)
"""Names accepted by :func:`make_activation` and by ``models.build(..., activation=...)``."""


def make_activation(name: str) -> nn.Module:
    """A new, non-in-place activation module for ``name`` (one of :data:`ACTIVATIONS`).

    Args:
        name: ``"relu"``, ``"tanh"``, ``"gelu"``, ``"silu"``, ``"softplus"``, ``"linear"`` or
            ``"abs"``.

    Returns:
        A fresh :class:`torch.nn.Module`; two calls never return the same instance.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).

    >>> make_activation("tanh")
    Tanh()
    >>> make_activation("relu").inplace
    False
    """
    check_choice(name, ACTIVATIONS, "activation")
    return _FACTORIES[name]()
