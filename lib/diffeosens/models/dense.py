r"""Fully connected nets in the NTK parametrisation: DenseNetL2, DenseNetL4, DenseNetL6 (methods §5.7).

Registered names: ``DenseNetL2``, ``DenseNetL4``, ``DenseNetL6`` (:math:`L` = number of linear
layers). Not to be confused with the convolutional DenseNet of Huang et al.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..validation import check_choice, check_positive_int
from .registry import check_activation, check_width_factor, register_model, scaled_width
from .activations import make_activation

__all__ = ["SCALINGS", "DenseNet", "NTKLinear"]

SCALINGS: tuple[str, ...] = ("ntk", "mf")
r"""Weight scalings: ``"ntk"`` divides by :math:`\sqrt{\text{fan-in}}`, ``"mf"`` (mean field) by the fan-in."""


def weight_scale(fan_in: int, scaling: str) -> float:
    r""":math:`1/\sqrt{\text{fan-in}}` for ``"ntk"``, :math:`1/\text{fan-in}` for ``"mf"``."""
    check_choice(scaling, SCALINGS, "scaling")
    return 1.0 / math.sqrt(fan_in) if scaling == "ntk" else 1.0 / fan_in


class NTKLinear(nn.Module):
    r"""Linear layer with raw :math:`\mathcal N(0, 1)` parameters, scaled in the forward pass.

    .. math:: y = (c\,x)\,W^\top + b = c\,x W^\top + b, \qquad W_{ij}, b_i \sim \mathcal N(0, 1),

    with :math:`c = 1/\sqrt{\text{fan-in}}` (``scaling="ntk"``) or :math:`c = 1/\text{fan-in}`
    (``scaling="mf"``, mean field); the bias is not scaled. The gradient reaches the raw
    parameters, which is what makes the parametrisation differ from a rescaled initialisation.

    The raw parameters live in a standard child :class:`torch.nn.Linear` named ``linear``
    (``weight`` :math:`(\text{out}, \text{in})`, ``bias`` :math:`(\text{out},)`; also reachable
    as ``self.weight`` and ``self.bias``), applied to the scaled input. The traced graph thus
    holds two batch-shaped nodes, ``<name>.mul`` (:math:`c\,x`) and ``<name>.linear`` (the
    output), and no parameter node.

    Convention:
        :math:`(B, \text{in})` → :math:`(B, \text{out})`.

    >>> NTKLinear(3072, 64)(torch.zeros(5, 3072)).shape
    torch.Size([5, 64])
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, scaling: str = "ntk") -> None:
        super().__init__()
        in_features = check_positive_int(in_features, "in_features")
        out_features = check_positive_int(out_features, "out_features")
        self.scaling = scaling
        self.scale = weight_scale(in_features, scaling)
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.reset_parameters()

    @property
    def weight(self) -> nn.Parameter:
        """The raw weight :math:`(\text{out}, \text{in})`."""
        return self.linear.weight

    @property
    def bias(self) -> nn.Parameter | None:
        """The raw bias :math:`(\text{out},)`, or ``None``."""
        return self.linear.bias

    def reset_parameters(self) -> None:
        """Draw every weight and bias from :math:`\\mathcal N(0, 1)`."""
        nn.init.normal_(self.linear.weight)
        if self.linear.bias is not None:
            nn.init.normal_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x * self.scale)

    def extra_repr(self) -> str:
        return f"scaling={self.scaling!r}, scale={self.scale:.4g}"


class DenseNet(nn.Module):
    r"""Fully connected net with :math:`L` linear layers in the NTK parametrisation (methods §5.7).

    The input is flattened to :math:`d_\mathrm{in} = C n^2` (3072 for CIFAR-10, 784 for
    28×28×1); hidden width :math:`h` (``width`` × ``width_factor``, default 64):

    .. math::

        z_0 = x, \qquad z_\ell = \phi\big(z_{\ell-1} W_\ell / \sqrt{\text{fan-in}} + b_\ell\big)
        \ (\ell < L), \qquad f(x) = z_{L-1} W_L / h,

    all weights and biases :math:`\mathcal N(0, 1)`; the last layer has no bias, no activation
    and the mean-field :math:`1/\text{fan-in}` scale. Nodes: ``flatten``, then ``layers.{2i}``
    (:class:`NTKLinear`) and ``layers.{2i+1}`` (activation), ``layers.{2L-2}`` the readout.

    Convention:
        input :math:`(B, C, n, n)` with :math:`C n^2 = d_\mathrm{in}` (any shape with that many
        entries per sample); output :math:`(B, \text{num\_classes})`.

    Args:
        depth: :math:`L \ge 1`, the number of linear layers.
        input_dim: :math:`d_\mathrm{in}`.
        width: hidden width before ``width_factor``.
        num_classes, activation, width_factor: see :func:`diffeosens.models.build`.

    >>> DenseNet(4, input_dim=3072)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int,
        *,
        input_dim: int,
        width: int = 64,
        num_classes: int = 10,
        activation: str = "relu",
        width_factor: float = 1.0,
    ) -> None:
        super().__init__()
        depth = check_positive_int(depth, "depth")
        input_dim = check_positive_int(input_dim, "input_dim")
        num_classes = check_positive_int(num_classes, "num_classes")
        check_activation(activation)
        h = scaled_width(check_positive_int(width, "width"), check_width_factor(width_factor))
        layers: list[nn.Module] = []
        fan_in = input_dim
        for _ in range(depth - 1):
            layers += [NTKLinear(fan_in, h, bias=True, scaling="ntk"), make_activation(activation)]
            fan_in = h
        layers.append(NTKLinear(fan_in, num_classes, bias=False, scaling="mf"))
        self.input_dim = input_dim
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        r""":math:`(B, \dots)` with :math:`d_\mathrm{in}` entries per sample → :math:`(B, \text{num\_classes})`."""
        return self.layers(torch.flatten(x, 1))


def _dense(depth: int, num_classes: int, in_channels: int, activation: str, width_factor: float,
           width: int, input_size: int | None) -> DenseNet:  # fmt: skip
    in_channels = check_positive_int(in_channels, "in_channels")
    n = check_positive_int(input_size, "input_size") if input_size is not None else (28 if in_channels == 1 else 32)
    return DenseNet(
        depth, input_dim=in_channels * n * n, width=width, num_classes=num_classes,
        activation=activation, width_factor=width_factor,
    )  # fmt: skip


@register_model(name="DenseNetL2")
def densenet_l2(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0,
    width: int = 64, input_size: int | None = None,
) -> DenseNet:
    """FC net, 2 linear layers (d → 64 → classes), methods §5.7.

    Input :math:`(B, C, n, n)`, ``n = input_size``: default 32 (3072 inputs for CIFAR-10), 28 for 1 channel.
    """
    return _dense(2, num_classes, in_channels, activation, width_factor, width, input_size)


@register_model(name="DenseNetL4")
def densenet_l4(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0,
    width: int = 64, input_size: int | None = None,
) -> DenseNet:
    """FC net, 4 linear layers (d → 64 → 64 → 64 → classes), methods §5.7.

    Input :math:`(B, C, n, n)`, ``n = input_size``: default 32 (3072 inputs for CIFAR-10), 28 for 1 channel.
    """
    return _dense(4, num_classes, in_channels, activation, width_factor, width, input_size)


@register_model(name="DenseNetL6")
def densenet_l6(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0,
    width: int = 64, input_size: int | None = None,
) -> DenseNet:
    """FC net, 6 linear layers (d → 64 ×5 → classes), methods §5.7.

    Input :math:`(B, C, n, n)`, ``n = input_size``: default 32 (3072 inputs for CIFAR-10), 28 for 1 channel.
    """
    return _dense(6, num_classes, in_channels, activation, width_factor, width, input_size)
