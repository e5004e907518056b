"""ResNet18/34/50, CIFAR version (methods §5.3).

Registered names: ``ResNet18``, ``ResNet34`` (:class:`BasicBlock`) and ``ResNet50``
(:class:`Bottleneck`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..validation import check_positive_int
from .registry import check_common, register_model, scaled_width
from .activations import make_activation

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Identity (an empty ``Sequential``) or conv1×1 (stride, no bias) → BN when the shape changes."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    r"""conv3×3 (stride) → BN → act → conv3×3 → BN, plus the shortcut, then act (methods §5.3).

    All convs are bias-free; the addition is out of place. Output channels: ``planes``.

    Convention:
        :math:`(B, C_\mathrm{in}, H, W)` → :math:`(B, \text{planes}, \lceil H/s\rceil, \lceil W/s\rceil)`.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, activation: str = "relu") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)
        self.act2 = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.act2(out)


class Bottleneck(nn.Module):
    r"""conv1×1 → BN → act → conv3×3 (stride) → BN → act → conv1×1 (4·planes) → BN, + shortcut, act.

    Methods §5.3. All convs are bias-free; the addition is out of place. Output channels:
    ``4 * planes``.

    Convention:
        :math:`(B, C_\mathrm{in}, H, W)` → :math:`(B, 4\,\text{planes}, \lceil H/s\rceil, \lceil W/s\rceil)`.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, activation: str = "relu") -> None:
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = make_activation(activation)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)
        self.act3 = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + self.shortcut(x)
        return self.act3(out)


class ResNet(nn.Module):
    r"""CIFAR ResNet: 3×3 stem without max-pool, four stages, global average pool, linear (methods §5.3).

    * Stem: ``conv1`` (3×3, stride 1, no bias) → ``bn1`` → ``act1``.
    * Stages ``layer1`` … ``layer4`` with 64, 128, 256, 512 planes (times ``width_factor``) and
      strides 1, 2, 2, 2 (only in the first block of a stage): 32 → 32 → 16 → 8 → 4.
    * Head: ``pool`` = ``AdaptiveAvgPool2d(1)`` → ``flatten`` → ``linear``. The paper's
      ``avg_pool2d(4)`` acts on a 4×4 map for both 32×32 and 28×28 inputs (28 → 28 → 14 → 7
      → 4), where it equals this global average; the adaptive pool also covers other sizes.
      Unlike the reference, the output is not squeezed: it is always :math:`(B, \text{num\_classes})`.

    Block nodes are named ``layer{s}.{b}.{conv1,bn1,act1,…,add,act2}``; the shortcut is
    ``layer{s}.{b}.shortcut.{0,1}`` where it is a conv1×1 → BN.

    Convention:
        input :math:`(B, C_\mathrm{in}, 32, 32)` (CIFAR-10) or :math:`(B, 1, 28, 28)`; output
        :math:`(B, \text{num\_classes})`.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        num_blocks: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet18.
        num_classes, in_channels, activation, width_factor: see :func:`diffeosens.models.build`.

    >>> ResNet(BasicBlock, (2, 2, 2, 2), width_factor=0.125)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: Sequence[int],
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        activation: str = "relu",
        width_factor: float = 1.0,
    ) -> None:
        super().__init__()
        num_classes, in_channels, width_factor = check_common(num_classes, in_channels, activation, width_factor)
        if len(num_blocks) != 4:
            raise ValueError(f"num_blocks must list the blocks of 4 stages, got {tuple(num_blocks)}")
        stem = scaled_width(64, width_factor)
        self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.act1 = make_activation(activation)
        in_planes = stem
        stages: list[nn.Sequential] = []
        for planes, n, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            planes = scaled_width(planes, width_factor)
            blocks = []
            for s in [stride] + [1] * (check_positive_int(n, "num_blocks") - 1):
                blocks.append(block(in_planes, planes, s, activation=activation))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        r""":math:`(B, C_\mathrm{in}, H, W)` → :math:`(B, \text{num\_classes})`."""
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        out = torch.flatten(self.pool(out), 1)
        return self.linear(out)


@register_model(name="ResNet18")
def resnet18(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0
) -> ResNet:
    """ResNet18: BasicBlock × (2, 2, 2, 2), methods §5.3; input 3×32×32 or 1×28×28."""
    return ResNet(
        BasicBlock, (2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels,
        activation=activation, width_factor=width_factor,
    )  # fmt: skip


@register_model(name="ResNet34")
def resnet34(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0
) -> ResNet:
    """ResNet34: BasicBlock × (3, 4, 6, 3), methods §5.3; input 3×32×32 or 1×28×28."""
    return ResNet(
        BasicBlock, (3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels,
        activation=activation, width_factor=width_factor,
    )  # fmt: skip


@register_model(name="ResNet50")
def resnet50(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0
) -> ResNet:
    """ResNet50: Bottleneck × (3, 4, 6, 3), final width 2048, methods §5.3; input 3×32×32 or 1×28×28."""
    return ResNet(
        Bottleneck, (3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels,
        activation=activation, width_factor=width_factor,
    )  # fmt: skip
