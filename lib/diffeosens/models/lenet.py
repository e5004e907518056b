"""LeNet (methods §5.5). Registered name: ``LeNet``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..validation import check_positive_int
from .registry import check_common, register_model, scaled_width
from .activations import make_activation

__all__ = ["LeNet"]


class LeNet(nn.Module):
    r"""LeNet-5 style: two 5×5 convs with max-pools, then three linear layers (methods §5.5).

    ``features``: Conv2d(C→6, 5×5, no padding), act, MaxPool(p), Conv2d(6→16, 5×5), act,
    MaxPool(p); ``flatten``; ``classifier``: Linear(16·m²→120), act, Linear(120→84), act,
    Linear(84→num_classes). Widths 6, 16, 120, 84 are multiplied by ``width_factor``. With
    pool size :math:`p` (``stride``, default 2) and input side :math:`n`, the flattened map
    side is :math:`m = \lfloor(\lfloor(n-4)/p\rfloor-4)/p\rfloor`: 16×5×5 = 400 for
    :math:`n=32`, 16×4×4 = 256 for :math:`n=28`.

    Convention:
        input :math:`(B, C, n, n)` with ``n = input_size``: by default 32 (CIFAR-10) for
        ``in_channels != 1`` and 28 (MNIST, 2D task) for ``in_channels == 1``; output
        :math:`(B, \text{num\_classes})`.

    >>> LeNet(in_channels=1)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        activation: str = "relu",
        width_factor: float = 1.0,
        input_size: int | None = None,
        stride: int = 2,
    ) -> None:
        super().__init__()
        num_classes, in_channels, width_factor = check_common(num_classes, in_channels, activation, width_factor)
        stride = check_positive_int(stride, "stride")
        n = check_positive_int(input_size, "input_size") if input_size is not None else (28 if in_channels == 1 else 32)
        side = ((n - 4) // stride - 4) // stride
        if n < 5 or (n - 4) // stride < 5 or side < 1:
            raise ValueError(f"input_size {n} is too small for LeNet with pool size {stride}")
        c1, c2, h1, h2 = (scaled_width(c, width_factor) for c in (6, 16, 120, 84))
        self.input_size = n
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5),
            make_activation(activation),
            nn.MaxPool2d(kernel_size=stride),
            nn.Conv2d(c1, c2, kernel_size=5),
            make_activation(activation),
            nn.MaxPool2d(kernel_size=stride),
        )
        self.classifier = nn.Sequential(
            nn.Linear(c2 * side * side, h1),
            make_activation(activation),
            nn.Linear(h1, h2),
            make_activation(activation),
            nn.Linear(h2, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        r""":math:`(B, C, n, n)` → :math:`(B, \text{num\_classes})`."""
        out = torch.flatten(self.features(x), 1)
        return self.classifier(out)


@register_model(name="LeNet")
def lenet(
    *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", width_factor: float = 1.0,
    input_size: int | None = None, stride: int = 2,
) -> LeNet:
    """LeNet, methods §5.5; input 3×32×32 (flatten 400) or 1×28×28 (flatten 256) by default."""
    return LeNet(
        num_classes=num_classes, in_channels=in_channels, activation=activation,
        width_factor=width_factor, input_size=input_size, stride=stride,
    )  # fmt: skip
