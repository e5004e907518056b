"""Kinds of layers, as tuples of torch's public classes for :func:`isinstance`.

torch's own base classes for these kinds (``nn.modules.conv._ConvNd``,
``nn.modules.batchnorm._NormBase``) are private names of torch and may change between releases;
these tuples name the public classes instead (every ``torch.nn`` subclass of those bases; the
quantization variants of ``torch.ao`` are left out).

>>> from torch import nn
>>> isinstance(nn.Conv1d(1, 2, 3), CONVOLUTIONS), isinstance(nn.Linear(2, 2), CONVOLUTIONS)
(True, False)
>>> isinstance(nn.InstanceNorm2d(4), NORMALIZATIONS)
True
"""

from __future__ import annotations

from torch import nn

__all__ = ["BATCH_NORMALIZATIONS", "CONVOLUTIONS", "NORMALIZATIONS"]

#: Every convolution of ``torch.nn`` (1-3 D, plain and transposed; the lazy ones subclass these).
CONVOLUTIONS: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)

#: Every batch normalisation of ``torch.nn`` (these use batch statistics with ``init_bn="batch"``).
BATCH_NORMALIZATIONS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d,
)

#: Every batch and instance normalisation of ``torch.nn`` (those that can keep running statistics),
#: lazy ones included: the subclasses of torch's private ``_NormBase`` in ``torch.nn``.
NORMALIZATIONS: tuple[type[nn.Module], ...] = BATCH_NORMALIZATIONS + (
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.LazyInstanceNorm1d, nn.LazyInstanceNorm2d, nn.LazyInstanceNorm3d,
)
