"""VGG11/13/16/19, with or without BatchNorm, CIFAR version (methods §5.2).

Registered names: ``VGG11``, ``VGG13``, ``VGG16``, ``VGG19`` and ``VGG11bn`` … ``VGG19bn``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .registry import check_common, register_model, scaled_width
from .activations import make_activation

__all__ = ["CONFIGS", "VGG"]

CONFIGS: dict[str, tuple[int | str, ...]] = {
    "VGG11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "VGG13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "VGG16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "VGG19": (
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ),
}  # fmt: skip
"""Conv output channels (at ``width_factor=1``) and ``"M"`` = 2×2 max-pool, per net (methods §5.2)."""


class VGG(nn.Module):
    r"""VGG for 32×32 inputs: 3×3 convs and five 2×2 max-pools, then one linear layer (methods §5.2).

    Each number of the configuration is ``Conv2d(3×3, padding=1, bias=True)`` →
    [``BatchNorm2d`` if ``batch_norm``; the conv keeps its bias] → activation; each ``"M"`` is
    ``MaxPool2d(2, 2)``. Five pools take 32×32 to 1×1, so the head is a flatten and a single
    ``Linear(512·width_factor → num_classes)``; there are no hidden fully connected layers.

    Layer names (torch.fx nodes): ``features.{i}`` in configuration order, e.g. for VGG11 without
    BN ``features.0`` conv, ``features.1`` activation, ``features.2`` pool, …, ``features.20``
    the last pool; then ``flatten`` and ``classifier``. With ``avgpool_identity=True`` the
    feature stack ends with ``AvgPool2d(1, 1)``, the identity node labelled ``A`` by the
    authors' measurement code (``features.21`` for VGG11). With ``in_channels == 1`` a
    ``ZeroPad2d(2)`` named ``pad`` comes first (28 → 32); the ``features`` indices do not move.

    Convention:
        input: :math:`(B, C_\mathrm{in}, 32, 32)` (CIFAR-10) or :math:`(B, 1, 28, 28)` (MNIST,
        the 2D scale-detection task); output :math:`(B, \text{num\_classes})`.

    Args:
        config: channel counts and ``"M"`` entries, e.g. :data:`CONFIGS` ``["VGG11"]``.
        batch_norm: insert ``BatchNorm2d`` after every conv.
        num_classes: outputs.
        in_channels: input channels; 1 prepends ``ZeroPad2d(2)``.
        activation: name of the nonlinearity after every conv (or BN).
        width_factor: multiplies every conv width (and so the linear layer's input).
        avgpool_identity: end the features with the identity ``AvgPool2d(1, 1)`` (default off,
            as in the latest version of the authors' ``vgg.py``).

    >>> VGG(CONFIGS["VGG11"], width_factor=0.125)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        config: Sequence[int | str],
        *,
        batch_norm: bool = False,
        num_classes: int = 10,
        in_channels: int = 3,
        activation: str = "relu",
        width_factor: float = 1.0,
        avgpool_identity: bool = False,
    ) -> None:
        super().__init__()
        num_classes, in_channels, width_factor = check_common(num_classes, in_channels, activation, width_factor)
        self.pad = nn.ZeroPad2d(2) if in_channels == 1 else None
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            width = scaled_width(int(item), width_factor)
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=True))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(make_activation(activation))
            channels = width
        if avgpool_identity:
            layers.append(nn.AvgPool2d(kernel_size=1, stride=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        r""":math:`(B, C_\mathrm{in}, 32, 32)` or :math:`(B, 1, 28, 28)` → :math:`(B, \text{num\_classes})`."""
        if self.pad is not None:
            x = self.pad(x)
        out = self.features(x)
        out = torch.flatten(out, 1)
        return self.classifier(out)


def _vgg(
    config: str,
    batch_norm: bool,
    num_classes: int,
    in_channels: int,
    activation: str,
    width_factor: float,
    avgpool_identity: bool,
) -> VGG:
    return VGG(
        CONFIGS[config],
        batch_norm=batch_norm,
        num_classes=num_classes,
        in_channels=in_channels,
        activation=activation,
        width_factor=width_factor,
        avgpool_identity=avgpool_identity,
    )


@register_model(name="VGG11")
def vgg11(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0,
    avgpool_identity: bool = False,
) -> VGG:
    """VGG11 without BN (8 convs), methods §5.2; input 3×32×32 or 1×28×28."""
    return _vgg("VGG11", False, num_classes, in_channels, activation, width_factor, avgpool_identity)


@register_model(name="VGG13")
def vgg13(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0,
    avgpool_identity: bool = False,
) -> VGG:
    """VGG13 without BN (10 convs), methods §5.2; input 3×32×32 or 1×28×28."""
    return _vgg("VGG13", False, num_classes, in_channels, activation, width_factor, avgpool_identity)


@register_model(name="VGG16")
def vgg16(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0,
    avgpool_identity: bool = False,
) -> VGG:
    """VGG16 without BN (13 convs), methods §5.2; input 3×32×32 or 1×28×28."""
    return _vgg("VGG16", False, num_classes, in_channels, activation, width_factor, avgpool_identity)


@register_model(name="VGG19")
def vgg19(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0,
    avgpool_identity: bool = False,
) -> VGG:
    """VGG19 without BN (16 convs), methods §5.2; input 3×32×32 or 1×28×28."""
    return _vgg("VGG19", False, num_classes, in_channels, activation, width_factor, avgpool_identity)


@register_model(name="VGG11bn")
def vgg11bn(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0,
    avgpool_identity: bool = False,
) -> VGG:
    """VGG11 with BN after every conv, methods §5.2; input 3×32×32 or 1×28×28."""
    return _vgg("VGG11", True, num_classes, in_channels, activation, width_factor, avgpool_identity)


@register_model(name="VGG13bn")
def vgg13bn(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0,
    avgpool_identity: bool = False,
) -> VGG:
    """VGG13 with BN after every conv, methods §5.2; input 3×32×32 or 1×28×28."""
    return _vgg("VGG13", True, num_classes, in_channels, activation, width_factor, avgpool_identity)


@register_model(name="VGG16bn")
def vgg16bn(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0,
    avgpool_identity: bool = False,
) -> VGG:
    """VGG16 with BN after every conv, methods §5.2; input 3×32×32 or 1×28×28."""
    return _vgg("VGG16", True, num_classes, in_channels, activation, width_factor, avgpool_identity)


@register_model(name="VGG19bn")
def vgg19bn(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0,
    avgpool_identity: bool = False,
) -> VGG:
    """VGG19 with BN after every conv, methods §5.2; input 3×32×32 or 1×28×28."""
    return _vgg("VGG19", True, num_classes, in_channels, activation, width_factor, avgpool_identity)
