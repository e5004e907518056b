"""EfficientNetB0, kuangliu-style CIFAR version (methods §5.6). Registered name: ``EfficientNetB0``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .registry import check_common, register_model, scaled_width
from .activations import make_activation

__all__ = ["B0_STAGES", "EfficientNet", "MBConv", "SqueezeExcitation"]

B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 16, 1, 3, 1),
    (6, 24, 2, 3, 2),
    (6, 40, 2, 5, 2),
    (6, 80, 3, 3, 2),
    (6, 112, 3, 5, 1),
    (6, 192, 4, 5, 2),
    (6, 320, 1, 3, 1),
)
"""(expansion, output channels, blocks, kernel, stride) per stage of B0 (methods §5.6)."""


class SqueezeExcitation(nn.Module):
    r"""Global average → conv1×1 (C→r, bias) → act → conv1×1 (r→C, bias) → sigmoid gate → multiply.

    The sigmoid is a **gate**, not a swappable nonlinearity: it stays a sigmoid for every
    ``activation``. Nodes: ``pool``, ``reduce``, ``act``, ``expand``, ``gate``, ``mul``.

    Convention:
        :math:`(B, C, H, W)` → :math:`(B, C, H, W)`.
    """

    def __init__(self, channels: int, reduced: int, *, activation: str = "silu") -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, kernel_size=1, bias=True)
        self.act = make_activation(activation)
        self.expand = nn.Conv2d(reduced, channels, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        w = self.gate(self.expand(self.act(self.reduce(self.pool(x)))))
        return x * w


class MBConv(nn.Module):
    r"""Inverted-residual block with squeeze-excitation (methods §5.6).

    With :math:`C = e\,C_\mathrm{in}`:

    1. ``conv1`` → ``bn1`` → ``act1``: expansion conv1×1 (skipped when :math:`e = 1`; its
       parameters exist anyway, as in the reference);
    2. ``conv2`` → ``bn2`` → ``act2``: depthwise :math:`k\times k` conv (groups :math:`C`,
       stride :math:`s`, padding :math:`(k-1)/2`, no bias);
    3. ``se``: squeeze-excitation with :math:`\lfloor 0.25\,C_\mathrm{in}\rfloor` channels (at least 1);
    4. ``conv3`` → ``bn3``: projection conv1×1 to :math:`C_\mathrm{out}`, no activation;
    5. ``add``: residual addition (out of place) when :math:`s = 1` and :math:`C_\mathrm{in} = C_\mathrm{out}`.

    Drop-connect is not implemented: the reference's rate is 0 (methods §5.6).

    Convention:
        :math:`(B, C_\mathrm{in}, H, W)` → :math:`(B, C_\mathrm{out}, \lceil H/s\rceil, \lceil W/s\rceil)`.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, expansion: int, kernel_size: int, stride: int,
        activation: str = "silu",
    ) -> None:  # fmt: skip
        super().__init__()
        channels = expansion * in_channels
        self.expand = expansion != 1
        # The reference builds the expansion conv and BN for every block, also when e = 1, and then
        # skips them in the forward: they are kept (unused) so that the parameter count
        # (3,599,686 for B0) and the state dict match the authors' checkpoints.
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act1 = make_activation(activation) if self.expand else None
        self.conv2 = nn.Conv2d(
            channels, channels, kernel_size=kernel_size, stride=stride,
            padding=(kernel_size - 1) // 2, groups=channels, bias=False,
        )  # fmt: skip
        self.bn2 = nn.BatchNorm2d(channels)
        self.act2 = make_activation(activation)
        self.se = SqueezeExcitation(channels, max(1, int(0.25 * in_channels)), activation=activation)
        self.conv3 = nn.Conv2d(channels, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.expand:
            out = self.act1(self.bn1(self.conv1(out)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.se(out)
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + x
        return out


class EfficientNet(nn.Module):
    r"""EfficientNetB0 for 32×32 inputs, kuangliu-style (methods §5.6).

    * Stem: ``conv1`` (3×3, stride 1, padding 1, no bias, 32 channels) → ``bn1`` → ``act1``.
    * ``layers.0`` … ``layers.15``: :class:`MBConv` blocks following :data:`B0_STAGES`, the
      stride in the first block of each stage; spatial sizes 32, 16, 8, 4, 4, 2, 2.
    * Head: ``pool`` (global average) → ``flatten`` (320) → ``dropout`` (0.2, active in
      training mode only) → ``linear``. There is no 1280-channel head conv and no drop-connect.

    The default activation is swish (``"silu"``); any other ``activation`` replaces every swish
    (stem, expansion, depthwise and the one inside squeeze-excitation). The squeeze-excitation
    sigmoid gates stay sigmoids. Channel counts are multiplied by ``width_factor``.

    Convention:
        input :math:`(B, 3, 32, 32)` (CIFAR-10) or :math:`(B, 1, 28, 28)` (spatial sizes 28,
        14, 7, 4, 4, 2, 2); output :math:`(B, \text{num\_classes})`.

    >>> EfficientNet(width_factor=0.25)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        stages: tuple[tuple[int, int, int, int, int], ...] = B0_STAGES,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        activation: str = "silu",
        width_factor: float = 1.0,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        num_classes, in_channels, width_factor = check_common(num_classes, in_channels, activation, width_factor)
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout!r}")
        stem = scaled_width(32, width_factor)
        self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.act1 = make_activation(activation)
        blocks: list[MBConv] = []
        channels = stem
        for expansion, out, n, kernel, stride in stages:
            out = scaled_width(out, width_factor)
            for s in [stride] + [1] * (n - 1):
                blocks.append(
                    MBConv(channels, out, expansion=expansion, kernel_size=kernel, stride=s, activation=activation)
                )
                channels = out
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        r""":math:`(B, C, H, W)` → :math:`(B, \text{num\_classes})`."""
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = torch.flatten(self.pool(out), 1)
        return self.linear(self.dropout(out))


@register_model(name="EfficientNetB0")
def efficientnet_b0(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "silu", width_factor: float = 1.0,
    dropout: float = 0.2,
) -> EfficientNet:
    """EfficientNetB0 (swish by default), methods §5.6; input 3×32×32 or 1×28×28."""
    return EfficientNet(
        B0_STAGES, num_classes=num_classes, in_channels=in_channels, activation=activation,
        width_factor=width_factor, dropout=dropout,
    )  # fmt: skip
