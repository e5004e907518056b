r"""ConvGAP: convolutional nets with global average pooling in the NTK/mean-field parametrisation.

* ``ConvGAP`` (2D, methods §5.8; the reference ``convs.py::ConvNetGAPMF``);
* ``ConvGAP1d`` (1D, methods §5.9; the reference ``ConvNetGAPMF_1d`` of the 1D scale-detection task).

Conv weights are stored raw, :math:`W \sim \mathcal N(0, 1)`, and scaled by
:math:`1/\sqrt{C_\mathrm{in} F^d}` in the forward pass (:class:`NTKConv2d`,
:class:`NTKConv1d`); biases are :math:`\mathcal N(0, 1)` and unscaled. The readout averages over
positions, :math:`\bar y \in \mathbb R^H`, and applies :class:`~diffeosens.models.dense.NTKLinear`
with ``scaling``:

* ``"mf"`` (mean field, the default and the paper's): :math:`\beta^\top \bar y / H + b`;
* ``"ntk"``: :math:`\beta^\top \bar y / \sqrt H + b`,

with :math:`\beta, b \sim \mathcal N(0, 1)`. The conv layers are NTK-scaled in both cases; only
the readout changes.

Circular ("periodic") padding for a filter size :math:`f` puts :math:`(f-1)/2` sites on each
side for odd :math:`f`, and :math:`f/2 - 1` on the left (top) and :math:`f/2` on the right
(bottom) for even :math:`f` (methods §5.9; the 2D net uses the same rule on both axes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..validation import check_choice, check_positive_int
from .registry import check_common, register_model, scaled_width
from .activations import make_activation
from .dense import SCALINGS, NTKLinear

__all__ = ["ConvGAP", "ConvGAP1d", "NTKConv1d", "NTKConv2d", "circular_padding"]


def circular_padding(filter_size: int) -> tuple[int, int]:
    """(left, right) circular padding for a filter of size ``filter_size`` (methods §5.9).

    >>> circular_padding(5), circular_padding(2), circular_padding(4)
    ((2, 2), (0, 1), (1, 2))
    """
    if filter_size % 2:
        return (filter_size - 1) // 2, (filter_size - 1) // 2
    return filter_size // 2 - 1, filter_size // 2


def _strides(stride: int | Sequence[int], depth: int, *, alternate: bool) -> tuple[int, ...]:
    """Per-block strides from an int (every block, or alternately s, 1, s, … when ``alternate``) or a list."""
    if isinstance(stride, int):
        s = check_positive_int(stride, "stride")
        return tuple(s if (l % 2 == 0 or not alternate) else 1 for l in range(depth))
    strides = tuple(check_positive_int(v, "stride") for v in stride)
    if len(strides) != depth:
        raise ValueError(f"stride must be an int or a list of {depth} per-block strides (one per block), got {strides}")
    return strides


class _NTKConv(nn.Module):
    """Shared code of :class:`NTKConv1d` and :class:`NTKConv2d`: a raw child conv ``conv``."""

    conv_type: type[nn.Conv1d] | type[nn.Conv2d] = nn.Conv2d
    dim: int = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1) -> None:
        super().__init__()
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**self.dim)
        self.conv = self.conv_type(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=True)
        self.reset_parameters()

    @property
    def weight(self) -> nn.Parameter:
        """The raw filters :math:`(C_\\mathrm{out}, C_\\mathrm{in}, F, \\dots)`."""
        return self.conv.weight

    @property
    def bias(self) -> nn.Parameter:
        """The raw bias :math:`(C_\\mathrm{out},)`."""
        return self.conv.bias

    def reset_parameters(self) -> None:
        """Draw every weight and bias from :math:`\\mathcal N(0, 1)`."""
        nn.init.normal_(self.conv.weight)
        nn.init.normal_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x * self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}"


class NTKConv2d(_NTKConv):
    r"""Unpadded 2D conv :math:`y = W * x / \sqrt{C_\mathrm{in} F^2} + b`, raw :math:`W, b \sim \mathcal N(0,1)`.

    The raw parameters sit in the child :class:`torch.nn.Conv2d` ``conv``, which is applied to
    the scaled input: graph nodes ``<name>.mul`` and ``<name>.conv`` (the output), no parameter node.

    Convention:
        :math:`(B, C_\mathrm{in}, H, W)` → :math:`(B, C_\mathrm{out}, \lfloor (H-F)/s\rfloor + 1, \lfloor (W-F)/s\rfloor + 1)`.
    """

    conv_type = nn.Conv2d
    dim = 2


class NTKConv1d(_NTKConv):
    r"""Unpadded 1D conv :math:`y = W * x / \sqrt{C_\mathrm{in} f} + b`, raw :math:`W, b \sim \mathcal N(0,1)`.

    Raw parameters in the child :class:`torch.nn.Conv1d` ``conv`` (nodes ``<name>.mul``, ``<name>.conv``).

    Convention:
        :math:`(B, C_\mathrm{in}, N)` → :math:`(B, C_\mathrm{out}, \lfloor (N-f)/s\rfloor + 1)`.
    """

    conv_type = nn.Conv1d
    dim = 1


class ConvBlock2d(nn.Module):
    """[``pad``: circular padding] → ``filter`` (:class:`NTKConv2d`) → ``act`` → [``bn``: BatchNorm2d]."""

    def __init__(
        self, in_channels: int, out_channels: int, *, filter_size: int, stride: int, pbc: bool,
        batch_norm: bool, activation: str,
    ) -> None:  # fmt: skip
        super().__init__()
        left, right = circular_padding(filter_size)
        self.pad = nn.CircularPad2d((left, right, left, right)) if pbc and left + right > 0 else None
        self.filter = NTKConv2d(in_channels, out_channels, filter_size, stride=stride)
        self.act = make_activation(activation)
        self.bn = nn.BatchNorm2d(out_channels) if batch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        if self.pad is not None:
            x = self.pad(x)
        x = self.act(self.filter(x))
        if self.bn is not None:
            x = self.bn(x)
        return x


class ConvGAP(nn.Module):
    r"""2D ConvGAP: ``depth`` NTK conv blocks, global average pooling, mean-field readout (methods §5.8).

    Block :math:`l` (``conv.{l}``): optional circular padding (``pbc``), conv
    :math:`F\times F` with :math:`h` output channels and stride :math:`s_l`, activation, optional
    BatchNorm **after** the activation (``batch_norm``). Strides: :math:`s` in the first block,
    then alternately 1, :math:`s`, 1, … (blocks 0, 2, 4, … counted from 0 are strided), unless
    ``stride`` is a per-block list. Without ``pbc`` the convs are unpadded.

    Readout: ``pool`` (mean over positions) → ``flatten`` → ``readout``
    (:math:`\beta^\top\bar y/h + b_\mathrm{last}` with ``scaling="mf"``; ``last_bias=False``
    drops :math:`b_\mathrm{last}`, as the reference measurement loader does).

    Convention:
        input :math:`(B, C, n, n)`, e.g. :math:`(B, 1, 28, 28)` (2D task) or
        :math:`(B, 3, 32, 32)`; output :math:`(B, \text{num\_classes})`. With the defaults
        (3 blocks, :math:`F = 5`, :math:`s = 2`, no ``pbc``) the maps are 32 → 14 → 10 → 3.

    >>> ConvGAP(in_channels=1)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        depth: int = 3,
        width: int = 64,
        filter_size: int = 5,
        stride: int | Sequence[int] = 2,
        pbc: bool = False,
        batch_norm: bool = False,
        scaling: str = "mf",
        last_bias: bool = True,
        num_classes: int = 10,
        in_channels: int = 3,
        activation: str = "relu",
        width_factor: float = 1.0,
    ) -> None:
        super().__init__()
        depth = check_positive_int(depth, "depth")
        filter_size = check_positive_int(filter_size, "filter_size")
        num_classes, channels, width_factor = check_common(num_classes, in_channels, activation, width_factor)
        check_choice(scaling, SCALINGS, "scaling")
        h = scaled_width(check_positive_int(width, "width"), width_factor)
        strides = _strides(stride, depth, alternate=True)
        blocks = []
        for l in range(depth):
            blocks.append(
                ConvBlock2d(
                    channels, h, filter_size=filter_size, stride=strides[l], pbc=bool(pbc),
                    batch_norm=bool(batch_norm), activation=activation,
                )  # fmt: skip
            )
            channels = h
        self.strides = strides
        self.conv = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.readout = NTKLinear(h, num_classes, bias=bool(last_bias), scaling=scaling)

    def forward(self, x: Tensor) -> Tensor:
        r""":math:`(B, C, H, W)` → :math:`(B, \text{num\_classes})`."""
        out = self.conv(x)
        out = torch.flatten(self.pool(out), 1)
        return self.readout(out)


class ConvBlock1d(nn.Module):
    r"""``pad`` (circular) → ``filter`` (:class:`NTKConv1d`) → ``act`` → ``mul`` by :math:`\sqrt f`."""

    def __init__(self, in_channels: int, out_channels: int, *, filter_size: int, stride: int, activation: str) -> None:
        super().__init__()
        left, right = circular_padding(filter_size)
        self.pad = nn.CircularPad1d((left, right)) if left + right > 0 else None
        self.filter = NTKConv1d(in_channels, out_channels, filter_size, stride=stride)
        self.act = make_activation(activation)
        self.gain = math.sqrt(filter_size)

    def forward(self, x: Tensor) -> Tensor:
        if self.pad is not None:
            x = self.pad(x)
        return self.act(self.filter(x)) * self.gain


class ConvGAP1d(nn.Module):
    r"""1D ConvGAP of the scale-detection task (methods §5.9).

    Block :math:`l` (``conv.{l}``): circular padding (:func:`circular_padding`), conv1d with
    :math:`H` output channels, filter :math:`f` and stride :math:`s_l`, then
    :math:`\sqrt f\cdot\phi(\cdot)`; the block output is the node ``conv.{l}.mul``, the one the
    reference probes (methods §4.7). Strides: ``stride`` in every block, or a per-block list.

    Readout: ``pool`` (mean over positions) → ``flatten`` → ``readout`` → ``mul`` by
    :math:`\tilde\alpha`:

    .. math:: y = \tilde\alpha\,\big(b_\mathrm{out} + \beta^\top\bar y / H\big)

    for ``scaling="mf"`` (:math:`/\sqrt H` for ``"ntk"``); :math:`\tilde\alpha = 10^{-a}` is
    ``alpha`` (1 in the measurement script).

    Convention:
        input :math:`(B, C, N)`, e.g. :math:`(B, 1, 128)`: with the defaults (7 blocks,
        :math:`f = s = 2`, :math:`H = 1000`) the lengths are 128 → 64 → … → 1; output
        :math:`(B, \text{num\_classes})`.

    >>> ConvGAP1d(width=16)(torch.zeros(2, 1, 128)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        depth: int = 7,
        width: int = 1000,
        filter_size: int = 2,
        stride: int | Sequence[int] = 2,
        scaling: str = "mf",
        alpha: float = 1.0,
        num_classes: int = 10,
        in_channels: int = 1,
        activation: str = "relu",
        width_factor: float = 1.0,
    ) -> None:
        super().__init__()
        depth = check_positive_int(depth, "depth")
        filter_size = check_positive_int(filter_size, "filter_size")
        num_classes, channels, width_factor = check_common(num_classes, in_channels, activation, width_factor)
        check_choice(scaling, SCALINGS, "scaling")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be a positive, finite number, got {alpha!r}")
        h = scaled_width(check_positive_int(width, "width"), width_factor)
        strides = _strides(stride, depth, alternate=False)
        blocks = []
        for l in range(depth):
            blocks.append(ConvBlock1d(channels, h, filter_size=filter_size, stride=strides[l], activation=activation))
            channels = h
        self.strides = strides
        self.alpha = float(alpha)
        self.conv = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.readout = NTKLinear(h, num_classes, bias=True, scaling=scaling)

    def forward(self, x: Tensor) -> Tensor:
        r""":math:`(B, C, N)` → :math:`(B, \text{num\_classes})`."""
        out = self.conv(x)
        out = torch.flatten(self.pool(out), 1)
        return self.readout(out) * self.alpha


@register_model(name="ConvGAP")
def convgap(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0,
    depth: int = 3, width: int = 64, filter_size: int = 5, stride: int | Sequence[int] = 2, pbc: bool = False,
    batch_norm: bool = False, scaling: str = "mf", last_bias: bool = True,
) -> ConvGAP:
    """2D ConvGAP, methods §5.8; input (B, C, n, n), e.g. 1×28×28 (2D task) or 3×32×32."""
    return ConvGAP(
        depth=depth, width=width, filter_size=filter_size, stride=stride, pbc=pbc, batch_norm=batch_norm,
        scaling=scaling, last_bias=last_bias, num_classes=num_classes, in_channels=in_channels,
        activation=activation, width_factor=width_factor,
    )  # fmt: skip


@register_model(name="ConvGAP1d")
def convgap1d(
    *, num_classes: int = 10, in_channels: int = 1, activation: str = "relu", width_factor: float = 1.0,
    depth: int = 7, width: int = 1000, filter_size: int = 2, stride: int | Sequence[int] = 2,
    scaling: str = "mf", alpha: float = 1.0,
) -> ConvGAP1d:
    """1D ConvGAP, methods §5.9; input (B, 1, N), e.g. N = 128 (one output under the hinge loss)."""
    return ConvGAP1d(
        depth=depth, width=width, filter_size=filter_size, stride=stride, scaling=scaling, alpha=alpha,
        num_classes=num_classes, in_channels=in_channels, activation=activation, width_factor=width_factor,
    )  # fmt: skip
