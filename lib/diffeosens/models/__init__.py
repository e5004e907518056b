"""The model zoo of the paper (methods §5): a registry with one front door, :func:`build`.

>>> from diffeosens import models
>>> "VGG11bn" in models.available()
True
>>> net = models.build("ResNet18", num_classes=1, in_channels=1, activation="tanh", width_factor=0.25)
>>> net(torch.zeros(2, 1, 28, 28)).shape
torch.Size([2, 1])

Every nonlinearity is a module from :func:`make_activation` (never in place), residual additions
are out of place, and every model traces with torch.fx (``torchvision.models.feature_extraction``),
with stable node names documented in each class. Default initialisation is PyTorch's except for
``DenseNetL*`` and ``ConvGAP*`` (NTK/mean-field parametrisation, methods §5.7–5.9).
"""

import torch  # noqa: F401  (doctest namespace)

from . import alexnet, convgap, dense, efficientnet, lenet, resnet, vgg  # noqa: F401  (registers the models)
from .registry import available, build, register_model
from .activations import ACTIVATIONS, Abs, make_activation
from .alexnet import AlexNet
from .convgap import ConvGAP, ConvGAP1d
from .dense import DenseNet, NTKLinear
from .efficientnet import EfficientNet
from .lenet import LeNet
from .resnet import ResNet
from .vgg import VGG

__all__ = [
    "ACTIVATIONS",
    "Abs",
    "AlexNet",
    "ConvGAP",
    "ConvGAP1d",
    "DenseNet",
    "EfficientNet",
    "LeNet",
    "NTKLinear",
    "ResNet",
    "VGG",
    "available",
    "build",
    "make_activation",
    "register_model",
]
