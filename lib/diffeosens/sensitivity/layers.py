r"""Probe points: the nodes of a model's torch.fx graph that carry a representation (methods §4.7).

A model is traced **once** (:func:`trace_model`); the resulting :class:`TracedModel` gives every
candidate probe point and, for traceable models, the graph that :class:`~.capture.Probe`
instruments. Models fx cannot trace fall back to forward hooks on their leaf modules.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ..models.kinds import CONVOLUTIONS, NORMALIZATIONS
from ..validation import check_choice, check_module

__all__ = [
    "Layer",
    "TracedModel",
    "default_layers",
    "list_layers",
    "numbered",
    "select_layers",
    "trace_model",
]


@dataclass(frozen=True)
class Layer:
    """A probe point: a graph node (or a leaf module, for models fx cannot trace)."""

    name: str
    kind: str
    index: int
    depth: int
    target: str


_ACT_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softsign, nn.Tanhshrink,
)
_NORM_MODULES = NORMALIZATIONS + (nn.LayerNorm, nn.GroupNorm)
_POOL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.LPPool2d,
)
_BOOKKEEPING_MODULES = (
    nn.Flatten, nn.Unflatten, nn.Identity,
    nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d, nn.ReplicationPad2d,
    nn.ReplicationPad3d, nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d,
)
_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)

_ACT_FUNCS = {
    "relu", "relu_", "relu6", "leaky_relu", "gelu", "silu", "mish", "elu", "selu", "celu", "tanh", "sigmoid",
    "softplus", "hardtanh", "hardswish", "hardsigmoid", "abs", "abs_", "tanh_", "sigmoid_", "softsign",
}
_POOL_FUNCS = {"max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
               "adaptive_max_pool2d", "mean", "amax", "sum", "max_pool2d_with_indices"}
_ADD_FUNCS = {"add", "iadd", "add_", "sub", "isub"}
_MUL_FUNCS = {"mul", "imul", "mul_", "truediv", "div", "matmul"}
_BOOKKEEPING_FUNCS = {
    "flatten", "view", "reshape", "squeeze", "unsqueeze", "permute", "transpose", "contiguous", "size",
    "getattr", "getitem", "dim", "numel", "expand", "repeat", "chunk", "split", "to", "type", "float", "double",
    "pad", "dropout", "identity", "clone", "detach", "floordiv", "pow", "t",
}

#: The reference's name filter (methods §4.7): exact names and substrings that are dropped.
_PAPER_EXCLUDED_NAMES = {"x", "size", "view", "squeeze", "dropout"}
_PAPER_EXCLUDED_SUBSTRINGS = ("size", "sub", "floordiv", "numel", "pow")

#: Kinds skipped by default: they duplicate the previous node (eval-mode dropout, reshapes, padding)
#: or rescale it by a constant (``scale``), which leaves D, G and R unchanged.
_DEFAULT_SKIP_KINDS = {"bookkeeping", "dropout", "input", "scale"}


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", str(target)).lstrip("_")


def _module_kind(mod: nn.Module) -> str:
    if isinstance(mod, CONVOLUTIONS):
        return "conv"
    if isinstance(mod, _NORM_MODULES):
        return "norm"
    if isinstance(mod, _POOL_MODULES):
        return "pool"
    if isinstance(mod, _DROPOUT_MODULES):
        return "dropout"
    if isinstance(mod, _BOOKKEEPING_MODULES):
        return "bookkeeping"
    if isinstance(mod, nn.Linear) or "linear" in type(mod).__name__.lower():
        return "linear"
    if isinstance(mod, _ACT_MODULES) or getattr(mod, "is_activation", False):
        return "act"
    name = type(mod).__name__.lower()
    if name in {"abs", "identityactivation", "swish"}:
        return "act"
    return "other"


def _function_kind(name: str) -> str:
    if name in _ACT_FUNCS:
        return "act"
    if name in _POOL_FUNCS:
        return "pool"
    if name in _ADD_FUNCS:
        return "add"
    if name in _MUL_FUNCS:
        return "mul"
    if name in {"conv1d", "conv2d", "conv3d"}:
        return "conv"
    if name in {"linear"}:
        return "linear"
    if name in {"batch_norm", "layer_norm", "group_norm"}:
        return "norm"
    if name in _BOOKKEEPING_FUNCS:
        return "bookkeeping"
    return "other"


def _is_constant_scaling(node: Any) -> bool:
    """A product/quotient of one tensor by a number: D, G and R are unchanged by it."""
    args = list(node.args) + list(node.kwargs.values())
    tensors = [a for a in args if hasattr(a, "op")]
    numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    return len(tensors) == 1 and len(numbers) >= 1


def _paper_excluded(name: str) -> bool:
    return name in _PAPER_EXCLUDED_NAMES or any(s in name for s in _PAPER_EXCLUDED_SUBSTRINGS)


# ------------------------------------------------------------------------------------------------
# Tracing
# ------------------------------------------------------------------------------------------------


def _tracer_kwargs() -> dict[str, Any]:
    """The tracer settings of torchvision's public ``create_feature_extractor``/``get_graph_node_names``.

    Built here from public pieces (math and ``torchvision.ops`` functions are wrapped, every
    ``torchvision.ops`` module is a leaf) because torchvision only exposes them through the private
    ``_set_default_tracer_kwargs``, and its public functions trace in train *and* eval mode.
    """
    import torchvision

    leaf_modules = [obj for _, obj in inspect.getmembers(torchvision.ops)
                    if inspect.isclass(obj) and issubclass(obj, nn.Module)]
    return {"autowrap_modules": (math, torchvision.ops), "leaf_modules": leaf_modules}


def _trace(model: nn.Module) -> tuple[Any, Any]:
    """Trace ``model`` in eval mode with torchvision's NodePathTracer; return (tracer, graph).

    ``NodePathTracer`` names the nodes as ``create_feature_extractor`` does, so layer names can
    be used with it too.
    """
    from torchvision.models.feature_extraction import NodePathTracer

    tracer = NodePathTracer(**_tracer_kwargs())
    was_training = model.training
    try:
        graph = tracer.trace(model.eval())
    finally:
        model.train(was_training)
    return tracer, graph


@dataclass
class TracedModel:
    """A model traced once: every candidate probe point and how to capture it.

    ``method`` is ``"fx"`` (``tracer``/``graph`` hold the eval-mode trace; node names are
    ``tracer.node_to_qualname``) or ``"hooks"`` (the model could not be traced: ``tracer`` and
    ``graph`` are ``None`` and the probe points are the leaf modules plus the output).
    """

    layers: list[Layer]
    method: str
    tracer: Any = None
    graph: Any = None


def trace_model(model: nn.Module) -> TracedModel:
    """Trace ``model`` (once) and list every candidate probe point (:class:`TracedModel`)."""
    try:
        tracer, graph = _trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure means: fall back to hooks
        return TracedModel(_layers_from_modules(model), "hooks")
    return TracedModel(_layers_from_graph(model, tracer, graph), "fx", tracer, graph)


def _layers_from_graph(model: nn.Module, tracer: Any, graph: Any) -> list[Layer]:
    modules = dict(model.named_modules())
    out_node = next(n for n in graph.nodes if n.op == "output")
    final = out_node.args[0]
    final_nodes = {final} if hasattr(final, "op") else set()
    raw: list[tuple[str, str, str]] = []
    for node in graph.nodes:
        if node.op == "output" or node not in tracer.node_to_qualname:
            continue
        name = tracer.node_to_qualname[node]
        if node.op == "placeholder":
            kind, target = "input", "input"
        elif node.op == "call_module":
            mod = modules.get(node.target)
            kind = _module_kind(mod) if mod is not None else "other"
            target = type(mod).__name__ if mod is not None else str(node.target)
        elif node.op in ("call_function", "call_method"):
            target = _target_name(node.target)
            kind = _function_kind(target)
            if kind == "mul" and _is_constant_scaling(node):
                kind = "scale"
        else:  # get_attr
            kind, target = "bookkeeping", "get_attr"
        if node in final_nodes:
            kind = "output"
        raw.append((name, kind, target))
    return _number(raw)


def _number(raw: list[tuple[str, str, str]]) -> list[Layer]:
    layers = []
    depth = 0
    for i, (name, kind, target) in enumerate(raw):
        if kind in ("conv", "linear") or (kind == "output" and target in ("Linear", "linear", "NTKLinear")):
            depth += 1
        layers.append(Layer(name=name, kind=kind, index=i, depth=depth, target=target))
    return layers


def _layers_from_modules(model: nn.Module) -> list[Layer]:
    raw = []
    for name, mod in model.named_modules():
        if name and not any(True for _ in mod.children()):
            raw.append((name, _module_kind(mod), type(mod).__name__))
    raw.append(("output", "output", "output"))
    return _number(raw)


# ------------------------------------------------------------------------------------------------
# Selection
# ------------------------------------------------------------------------------------------------


def default_layers(every: Sequence[Layer]) -> list[Layer]:
    """The default probe points: no input, bookkeeping, dropout or scale nodes, none the paper excludes (but the output)."""
    return [l for l in every if l.kind not in _DEFAULT_SKIP_KINDS and not (_paper_excluded(l.name) and l.kind != "output")]


def numbered(layers: Sequence[Layer]) -> list[Layer]:
    """``layers`` with ``index`` set to their position in the list."""
    return [Layer(l.name, l.kind, i, l.depth, l.target) for i, l in enumerate(layers)]


def select_layers(every: Sequence[Layer], layers: str | Sequence[str] | None) -> list[Layer]:
    """The probe points that ``layers`` (as in :func:`~.measurement.measure`) picks from ``every``, numbered."""
    if not (layers is None or isinstance(layers, str)
            or (isinstance(layers, (Sequence, np.ndarray)) and all(isinstance(n, str) for n in layers))):
        raise TypeError(
            "layers must be None, 'default', 'all', 'output', a layer name or a list of layer names (str), "
            f"got {type(layers).__name__} {layers!r}; see diffeosens.sensitivity.list_layers(model)"
        )
    if layers is None or layers == "default":
        chosen = default_layers(every)
    elif layers == "all":
        chosen = [l for l in every if l.kind != "input"]
    elif layers == "output":
        chosen = [l for l in every if l.kind == "output"][-1:]
        if not chosen:
            last = ", ".join(repr(l.name) for l in default_layers(every)[-3:])
            raise ValueError(
                "layers='output' selects the tensor the model returns, but this model returns no single tensor (a tuple, "
                f"list or dict of outputs, or a constant), so there is no output probe point; pass the node names of the "
                f"representations you want instead, e.g. layers=[{last}] (see diffeosens.sensitivity.list_layers(model))"
            )
    else:
        if isinstance(layers, str):
            layers = [layers]
        by_name = {l.name: l for l in every}
        unknown = [n for n in layers if n not in by_name]
        if unknown:
            valid = ", ".join(l.name for l in every if l.kind != "input")
            raise ValueError(
                f"unknown layer {unknown[0]!r}; valid names are: {valid} "
                "(see diffeosens.sensitivity.list_layers(model, include='all'))"
            )
        chosen = [by_name[n] for n in layers]
    if not chosen:
        raise ValueError("no probe points selected; pass layer names (see diffeosens.sensitivity.list_layers)")
    return numbered(chosen)


def list_layers(model: nn.Module, *, include: str = "default") -> list[Layer]:
    r"""The probe points of ``model`` in forward order (methods §4.7, open choice O8).

    Every node of the model's torch.fx graph (traced in eval mode with torchvision's
    feature-extraction tracer) that carries a representation: conv, norm, activation, pooling,
    linear, residual additions/multiplications and the output. Dropped by default: the input,
    shape bookkeeping (flatten, view, reshape, size, getattr, padding, identity) and eval-mode
    dropout, which duplicate the previous node, and the nodes the reference's name filter drops.
    Models fx cannot trace fall back to forward hooks on leaf modules (plus the output).

    Args:
        model: any :class:`torch.nn.Module`.
        include: ``"default"`` as above, or ``"all"`` for every node of the graph.

    Returns:
        :class:`Layer` records with ``name`` (graph-node name, usable as ``measure(layers=...)``),
        ``kind`` (conv, norm, act, pool, linear, add, mul, output, other; with ``include="all"`` also
        input, bookkeeping, dropout and scale), ``index`` (position among
        the returned layers) and ``depth`` (conv/linear layers up to and including the node).

    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    >>> [(l.name, l.kind, l.depth) for l in list_layers(net)]
    [('0', 'conv', 1), ('1', 'act', 1), ('3', 'output', 2)]
    """
    check_module(model)
    check_choice(include, ("default", "all"), "include")
    layers = trace_model(model).layers
    return numbered(default_layers(layers) if include == "default" else layers)
