r"""Feature capture: run a prepared copy of the model and hand each probed representation on.

The model is copied, cast, put in eval mode and its in-place operations are switched off
(methods §4.9), so a recorded pre-activation is never overwritten by a later in-place
activation; with ``init_bn="batch"`` its BatchNorm layers use each forward batch's statistics
(methods §4.8). :class:`Probe` instruments the model's fx graph (or, for models fx cannot
trace, its leaf modules) so that each representation reaches a consumer as soon as it exists.
"""

from __future__ import annotations

import copy
import operator
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..validation import check_choice, check_finite, check_float_tensor, check_min_ndim
from ..models.kinds import BATCH_NORMALIZATIONS, CONVOLUTIONS
from .layers import Layer, TracedModel, select_layers, trace_model

__all__ = [
    "INIT_BN",
    "Probe",
    "build_probe",
    "check_probe_images",
    "extract_features",
    "model_device",
    "prepare_model",
    "resolve_device",
]

INIT_BN = ("running", "batch")

_INPLACE_FUNCTIONS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                      operator.itruediv: operator.truediv}


# ------------------------------------------------------------------------------------------------
# Model preparation
# ------------------------------------------------------------------------------------------------


def _disable_inplace_modules(model: nn.Module) -> None:
    for mod in model.modules():
        if getattr(mod, "inplace", False) is True:
            mod.inplace = False


def _disable_inplace_graph(gm: torch.fx.GraphModule) -> None:
    """Rewrite in-place graph operations (``x += y``, ``relu(x, inplace=True)``, ``x.relu_()``)."""
    changed = False
    for node in gm.graph.nodes:
        if node.op == "call_function":
            if node.target in _INPLACE_FUNCTIONS:
                node.target = _INPLACE_FUNCTIONS[node.target]
                changed = True
            name = getattr(node.target, "__name__", "")
            if name.endswith("_") and not name.startswith("_"):
                for ns in (torch, F):
                    if getattr(ns, name, None) is node.target and hasattr(ns, name[:-1]):
                        node.target = getattr(ns, name[:-1])  # torch.relu_ -> torch.relu
                        changed = True
                        break
            if node.kwargs.get("inplace") is True:
                node.kwargs = {**node.kwargs, "inplace": False}
                changed = True
        elif node.op == "call_method" and isinstance(node.target, str) and node.target.endswith("_") and not node.target.startswith("_"):
            if hasattr(torch.Tensor, node.target[:-1]):
                node.target = node.target[:-1]
                changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()


def _batch_stat_bn(model: nn.Module) -> None:
    """BatchNorm layers normalise with the statistics of each forward batch (methods §4.8)."""
    for mod in model.modules():
        if isinstance(mod, BATCH_NORMALIZATIONS):
            mod.track_running_stats = False
            mod.running_mean = None
            mod.running_var = None
            mod.num_batches_tracked = None


def prepare_model(model: nn.Module, device: torch.device, dtype: torch.dtype, init_bn: str) -> nn.Module:
    """A copy of ``model`` on ``device`` in ``dtype``, in eval mode, without gradients or in-place modules."""
    net = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    _disable_inplace_modules(net)
    for p in net.parameters():
        p.requires_grad_(False)
    if init_bn == "batch":
        _batch_stat_bn(net)
    return net


# ------------------------------------------------------------------------------------------------
# The probe
# ------------------------------------------------------------------------------------------------

_SINK = threading.local()


def _emit(index: int, value: Any) -> None:
    """Graph hook inserted after every probed node: hands the value to the active consumer."""
    _SINK.consume(index, value)


class Probe:
    """Runs the model and hands each probed representation to a consumer as soon as it exists.

    For traceable models the eval-mode graph of ``traced`` (torchvision's ``NodePathTracer``,
    whose node names are those of ``create_feature_extractor``) gets a call to :func:`_emit`
    after every probed node; otherwise forward hooks on the probed leaf modules do the same. A
    consumer sees each tensor before any later operation runs, and the graph's in-place
    operations are rewritten out of place, so recorded pre-activations are never overwritten.
    Representations that the consumer does not keep are freed as in a plain forward, so memory
    stays that of one forward pass.

    ``traced`` must be the trace of ``model`` (:func:`~.layers.trace_model`); its graph is
    instrumented in place, so it serves one probe only.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], traced: TracedModel, channel_mean: bool = False) -> None:
        self.names = list(names)
        self.method = traced.method
        self.channel_mean = channel_mean
        if self.method == "fx":
            tracer, graph = traced.tracer, traced.graph
            by_name = {tracer.node_to_qualname[n]: n for n in graph.nodes if n in tracer.node_to_qualname}
            for i, name in enumerate(self.names):
                node = by_name[name]
                with graph.inserting_after(node):
                    graph.call_function(_emit, (i, node))
            self.module = torch.fx.GraphModule(tracer.root, graph, type(model).__name__)
            _disable_inplace_graph(self.module)
        else:
            self.module = model
            mods = dict(model.named_modules())
            for i, name in enumerate(self.names):
                if name != "output":
                    mods[name].register_forward_hook(lambda _m, _i, out, i=i: _emit(i, out))
        self.module.eval()

    def run(self, x: Tensor, consume: Callable[[int, Tensor], None]) -> None:
        """Forward ``x``; ``consume(i, f_i)`` receives probe ``i``'s representation as ``(B, d_i)``."""
        names = self.names

        mean = self.channel_mean

        def flat(i: int, value: Any) -> None:
            if mean and isinstance(value, Tensor) and value.ndim > 2:
                value = value.mean(1)  # average over channels: a purely spatial representation
            consume(i, _flatten(value, names[i]))

        _SINK.consume = flat
        try:
            with torch.no_grad():
                out = self.module(x)
                if self.method == "hooks" and "output" in names:
                    flat(names.index("output"), out)
        finally:
            _SINK.consume = None

    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        """All probed representations of ``x`` as a dict ``{name: (B, d)}``."""
        feats: dict[str, Tensor] = {}
        self.run(x, lambda i, t: feats.__setitem__(self.names[i], t))
        return feats


def _flatten(t: Any, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise ValueError(f"layer {name!r} does not produce a tensor (got {type(t).__name__}); choose another layer")
    return t.reshape(t.shape[0], -1) if t.ndim > 1 else t.reshape(-1, 1)


def _probe_on_copy(model: nn.Module, layers: str | Sequence[str] | None, device: torch.device, dtype: torch.dtype,
                   init_bn: str, check_with: Tensor | None = None, channel_mean: bool = False) -> tuple[list[Layer], Probe]:
    """Prepare a copy of ``model``, trace it once, select the probe points and instrument them."""
    net = prepare_model(model, device, dtype, init_bn)
    traced = trace_model(net)
    chosen = select_layers(traced.layers, layers)
    if check_with is not None:
        _check_compatible(net, check_with)
    return chosen, Probe(net, [l.name for l in chosen], traced, channel_mean=channel_mean)


def build_probe(model: nn.Module, images: Tensor, layers: Any, dev: torch.device, compute_dtype: torch.dtype,
                init_bn: str, channel_mean: bool = False) -> tuple[list[Layer], Probe]:
    """Resolve the probe points and return them with a probe on a prepared copy of the model.

    The copy is traced once; the model is checked on two of ``images`` before the probe is built.
    """
    return _probe_on_copy(model, layers, dev, compute_dtype, init_bn,
                          check_with=images[:2].to(dev, compute_dtype), channel_mean=channel_mean)


def extract_features(
    model: nn.Module,
    images: Tensor,
    *,
    layers: str | Sequence[str] | None = None,
    init_bn: str = "running",
) -> dict[str, Tensor]:
    r"""The representations :math:`f_k(x)` at the probe points, each flattened to :math:`(B, d_k)`.

    The model is copied, put in eval mode, and its in-place operations are switched off, so a
    recorded pre-activation is never overwritten by a later in-place activation (methods §4.9).

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True))
    >>> f = extract_features(net, torch.randn(4, 1, 5, 5))
    >>> {k: tuple(v.shape) for k, v in f.items()}
    {'0': (4, 18), '1': (4, 18)}
    """
    check_float_tensor(images, "images")
    check_choice(init_bn, INIT_BN, "init_bn")
    device = model_device(model)
    _, probe = _probe_on_copy(model, layers, device, images.dtype, init_bn)
    return probe(images.to(device))


# ------------------------------------------------------------------------------------------------
# Devices and checks
# ------------------------------------------------------------------------------------------------


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def resolve_device(model: nn.Module, images: Tensor, device: torch.device | str | None) -> torch.device:
    """``device``, or the model's device when it is ``None`` (the images must then be there too)."""
    model_dev = model_device(model)
    if device is None:
        if images.device != model_dev:
            raise ValueError(
                f"model and images are on different devices (model on {model_dev}, images on {images.device}); "
                "move one of them, or pass device=... to run both there"
            )
        return model_dev
    return torch.device(device)


def check_probe_images(images: Any, name: str = "images") -> Tensor:
    """Probe inputs: a finite floating tensor ``(P, ...)`` with ``P >= 2``."""
    check_float_tensor(images, name)
    check_min_ndim(images, 2, "P, ...", name)
    if images.shape[0] < 2:
        raise ValueError(
            f"{name} must hold at least 2 probe images (P >= 2) to form the denominator, got P = {images.shape[0]}"
        )
    if not bool(torch.isfinite(images.sum())):  # cheap screen; the exact check (a sum may overflow)
        check_finite(images, name)
    return images


def _check_compatible(net: nn.Module, images: Tensor) -> None:
    """Fail early, and clearly, when the model cannot take these images."""
    first = next((m for m in net.modules() if isinstance(m, CONVOLUTIONS)), None)
    first_any = next((m for m in net.modules() if isinstance(m, (*CONVOLUTIONS, nn.Linear))), None)
    if first is not None and first is first_any and images.ndim >= 3 and images.shape[1] != first.in_channels:
        raise ValueError(
            f"images have {images.shape[1]} channel(s) but the model's first convolution expects "
            f"{first.in_channels} (images must have shape (P, {first.in_channels}, H, W))"
        )
    try:
        with torch.no_grad():
            net(images[:2])
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"the model cannot process images of shape {tuple(images.shape[1:])} (per image): {err}") from err
