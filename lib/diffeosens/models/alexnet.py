"""AlexNet, CIFAR version (methods §5.4). Registered name: ``AlexNet``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .registry import check_common, register_model, scaled_width
from .activations import make_activation

__all__ = ["AlexNet"]


class AlexNet(nn.Module):
    r"""CIFAR AlexNet: five 3×3 convs (the first with stride 2), three max-pools, three linears.

    Methods §5.4. Layers and shapes for a :math:`3\times32\times32` input (widths times
    ``width_factor``):

    ===========================  ================================================  ============
    node                         layer                                             output
    ===========================  ================================================  ============
    ``features.0``, ``.1``       Conv2d(C→64, 3×3, stride 2, padding 1), act        64×16×16
    ``features.2``               MaxPool2d(2)                                      64×8×8
    ``features.3``, ``.4``       Conv2d(64→192, 3×3, padding 1), act                192×8×8
    ``features.5``               MaxPool2d(2)                                      192×4×4
    ``features.6`` … ``.11``     Conv 192→384, act; Conv 384→256, act;             256×4×4
                                 Conv 256→256, act (3×3, padding 1)
    ``features.12``              MaxPool2d(2)                                      256×2×2
    ``flatten``                  flatten                                           1024
    ``classifier.0`` … ``.6``    Dropout(0.5), Linear(1024→4096), act,             num_classes
                                 Dropout(0.5), Linear(4096→4096), act,
                                 Linear(4096→num_classes)
    ===========================  ================================================  ============

    With ``in_channels == 1`` a ``ZeroPad2d(2)`` named ``pad`` comes first (28 → 32). The
    dropouts are identities in eval mode.

    Convention:
        input :math:`(B, 3, 32, 32)` (CIFAR-10) or :math:`(B, 1, 28, 28)` (MNIST, 2D task);
        output :math:`(B, \text{num\_classes})`.

    >>> AlexNet(width_factor=0.0625)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        activation: str = "relu",
        width_factor: float = 1.0,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        num_classes, in_channels, width_factor = check_common(num_classes, in_channels, activation, width_factor)
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout!r}")
        c1, c2, c3, c4, c5, hidden = (scaled_width(c, width_factor) for c in (64, 192, 384, 256, 256, 4096))
        self.pad = nn.ZeroPad2d(2) if in_channels == 1 else None
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=3, stride=2, padding=1),
            make_activation(activation),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            make_activation(activation),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            make_activation(activation),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            make_activation(activation),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            make_activation(activation),
            nn.MaxPool2d(kernel_size=2),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(c5 * 2 * 2, hidden),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            make_activation(activation),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        r""":math:`(B, C, 32, 32)` or :math:`(B, 1, 28, 28)` → :math:`(B, \text{num\_classes})`."""
        if self.pad is not None:
            x = self.pad(x)
        out = torch.flatten(self.features(x), 1)
        return self.classifier(out)


@register_model(name="AlexNet")
def alexnet(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0,
    dropout: float = 0.5,
) -> AlexNet:
    """CIFAR AlexNet, methods §5.4; input 3×32×32 or 1×28×28."""
    return AlexNet(
        num_classes=num_classes, in_channels=in_channels, activation=activation,
        width_factor=width_factor, dropout=dropout,
    )  # fmt: skip
