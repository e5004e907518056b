r"""Layer-wise sensitivities :math:`D_k`, :math:`G_k`, :math:`R_k` of any PyTorch model (methods §4).

.. math::

    D_k = \frac{\langle \|f_k(\tau x) - f_k(x)\|^2 \rangle_{x,\tau}}{\langle \|f_k(x) - f_k(z)\|^2 \rangle_{x,z}},
    \qquad
    G_k = \frac{\langle \|f_k(x + \eta) - f_k(x)\|^2 \rangle_{x,\eta}}{\langle \|f_k(x) - f_k(z)\|^2 \rangle_{x,z}},
    \qquad R_k = \frac{D_k}{G_k},

with :math:`f_k(x)` the representation at probe point :math:`k`, flattened over all channels and
positions, :math:`\tau` an independent max-entropy diffeomorphism per image and :math:`\eta`
white noise matched per image to :math:`\|\tau x - x\|`.

Estimators (``estimator="mean"``, the 2022 paper's; methods §4.2–4.4):

* numerators :math:`\mathrm{num}_D = \frac1P \sum_n \|f_k(\tau_n x_n) - f_k(x_n)\|^2` (averaged over
  ``n_draws`` draws per image; the clean forward is shared by the draws), likewise
  :math:`\mathrm{num}_G`;
* denominator: the mean over **all** :math:`P^2` ordered pairs, diagonal included,
  :math:`\mathrm{deno} = \frac{1}{P^2}\sum_{n,m}\|a_n - a_m\|^2 = 2\sum_u \mathrm{Var}_\mathrm{pop}(a_{\cdot u})`,
  computed in :math:`O(P)` by this moment identity, streaming over mini-batches with centred
  (Chan-merged) float64 accumulators, so memory does not grow with :math:`P`;
* :math:`D = \mathrm{num}_D/(\mathrm{deno} + 10^{-10})`, :math:`G = \mathrm{num}_G/(\mathrm{deno} + 10^{-10})`
  (the reference's guard), :math:`R = \mathrm{num}_D/\mathrm{num}_G`.

``estimator="median"`` is the NeurIPS-2021 variant (methods §4.5): numerators
:math:`\sum_u \mathrm{median}_n (b_{nu} - a_{nu})^2` and the median of all :math:`P^2` pairwise
squared distances (diagonal zeros included) as denominator. For an even count the median is the
lower of the two middle values, as ``torch.median`` gives in the reference code (``median="lower"``,
the default); ``median="average"`` takes their mean instead. It keeps every representation in
memory (:math:`O(P\,d_k)` per layer).

Uncertainty: for the mean estimator, a **delete-a-group jackknife** over images — the probes are
split into ``n_jackknife`` contiguous groups (exact leave-one-out when ``n_jackknife >= P``), each
quantity (numerators, denominator and the ratios D, G, R) is recomputed without each group, and
:math:`\mathrm{se} = \sqrt{\frac{G-1}{G}\sum_g (\theta_{-g} - \bar\theta)^2}`. For the median
estimator, a bootstrap over images with ``n_boot`` resamples.

Results schema (one :class:`xarray.Dataset`; documented again in the README):

========================= ======================================================================
dimension ``layer``        probe points in forward order (integer coordinate ``0..L-1``)
coords along ``layer``     ``layer_name`` (graph-node name), ``layer_kind`` (conv, norm, act, pool,
                           linear, add, mul, output, other), ``depth`` (number of conv/linear layers
                           up to and including the node), ``relative_depth`` (``layer/(L-1)``)
variables                  ``D``, ``G``, ``R``, ``num_D``, ``num_G``, ``deno``, each with ``*_se``
attrs                      ``delta``, ``cut``, ``T``, ``interp``, ``P``, ``n_draws``, ``estimator``,
                           ``seed``, ``batch_size``, ``init_bn``, ``compute_dtype``, ``model``,
                           ``model_params``, ``params`` (JSON of every argument), ``provenance``
                           (JSON: versions, device, git commit, wall time, creation time)
========================= ======================================================================

Conventions: probe images are the network's inputs (e.g. normalised CIFAR-10 test images),
:math:`(P, C, H, W)`; :math:`\delta` is in pixels. Randomness is counter-based: the field
coefficients and noise of image :math:`n` in draw :math:`k` depend only on ``(seed, k, n)``, so
the result does not depend on ``batch_size`` and is identical on CPU and GPU up to rounding.
"""

from __future__ import annotations

import copy
import hashlib
import math
import operator
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn
from torch.nn import functional as F

from . import diffeo
from .streams import standard_normals, stream_id
from .validation import check_choice, check_finite, check_float_tensor, check_min_ndim, check_positive_int, check_seed
from .noise import rescale_to_norm
from .provenance import provenance, to_attr

__all__ = [
    "DegenerateWarning",
    "Layer",
    "SCHEMA",
    "extract_features",
    "list_layers",
    "measure",
    "measure_perturbed",
]

#: Added to the denominator as in the reference (methods §4.3).
DENO_EPS = 1e-10

#: The results schema: variable -> (long name, units). Used to write and to validate datasets.
SCHEMA: dict[str, tuple[str, str]] = {
    "D": ("diffeomorphism sensitivity D_k = num_D / deno", "1"),
    "G": ("noise sensitivity G_k = num_G / deno", "1"),
    "R": ("relative sensitivity R_k = D_k / G_k", "1"),
    "num_D": ("mean squared representation change under diffeomorphisms", "activation^2"),
    "num_G": ("mean squared representation change under matched noise", "activation^2"),
    "deno": ("mean squared distance between clean representations (all ordered pairs)", "activation^2"),
}
COORDS = ("layer_name", "layer_kind", "depth", "relative_depth")
ESTIMATORS = ("mean", "median")
#: How the median estimator takes the median of an even count: the lower middle value (``torch.median``,
#: as the NeurIPS-2021 reference code does) or the average of the two middle values.
MEDIANS = ("lower", "average")
INIT_BN = ("running", "batch")

# ------------------------------------------------------------------------------------------------
# Probe points
# ------------------------------------------------------------------------------------------------


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
_NORM_MODULES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
_POOL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.LPPool2d,
)
_CONV_MODULES = (nn.modules.conv._ConvNd,)
_BOOKKEEPING_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.modules.padding._ConstantPadNd,
                        nn.modules.padding._ReflectionPadNd, nn.modules.padding._ReplicationPadNd,
                        nn.modules.padding._CircularPadNd)
_DROPOUT_MODULES = (nn.modules.dropout._DropoutNd,)

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


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", str(target)).lstrip("_")


def _module_kind(mod: nn.Module) -> str:
    if isinstance(mod, _CONV_MODULES):
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


#: Kinds skipped by default: they duplicate the previous node (eval-mode dropout, reshapes, padding)
#: or rescale it by a constant (``scale``), which leaves D, G and R unchanged.
_DEFAULT_SKIP_KINDS = {"bookkeeping", "dropout", "input", "scale"}


def _trace(model: nn.Module) -> tuple[Any, Any]:
    """Trace ``model`` in eval mode with torchvision's NodePathTracer; return (tracer, graph)."""
    from torchvision.models import feature_extraction as fe

    kwargs = fe._set_default_tracer_kwargs(None)
    tracer = fe.NodePathTracer(**kwargs)
    was_training = model.training
    try:
        graph = tracer.trace(model.eval())
    finally:
        model.train(was_training)
    return tracer, graph


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


def _all_layers(model: nn.Module) -> tuple[list[Layer], str]:
    """Every candidate probe point and the capture method (``"fx"`` or ``"hooks"``)."""
    try:
        tracer, graph = _trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure means: fall back to hooks
        return _layers_from_modules(model), "hooks"
    return _layers_from_graph(model, tracer, graph), "fx"


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
    check_choice(include, ("default", "all"), "include")
    layers, _ = _all_layers(model)
    return _numbered(_default_layers(layers) if include == "default" else layers)


def _default_layers(every: Sequence[Layer]) -> list[Layer]:
    """The default probe points: no input, bookkeeping, dropout or scale nodes, none the paper excludes (but the output)."""
    return [l for l in every if l.kind not in _DEFAULT_SKIP_KINDS and not (_paper_excluded(l.name) and l.kind != "output")]


def _numbered(layers: Sequence[Layer]) -> list[Layer]:
    """``layers`` with ``index`` set to their position in the list."""
    return [Layer(l.name, l.kind, i, l.depth, l.target) for i, l in enumerate(layers)]


# ------------------------------------------------------------------------------------------------
# Feature capture
# ------------------------------------------------------------------------------------------------

_INPLACE_FUNCTIONS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                      operator.itruediv: operator.truediv}


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
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.track_running_stats = False
            mod.running_mean = None
            mod.running_var = None
            mod.num_batches_tracked = None


_SINK = threading.local()


def _emit(index: int, value: Any) -> None:
    """Graph hook inserted after every probed node: hands the value to the active consumer."""
    _SINK.consume(index, value)


class _Probe:
    """Runs the model and hands each probed representation to a consumer as soon as it exists.

    For traceable models the eval-mode graph (torchvision's ``NodePathTracer``, whose node names
    are those of ``create_feature_extractor``) gets a call to :func:`_emit` after every probed node;
    otherwise forward hooks on the probed leaf modules do the same. A consumer sees each tensor
    before any later operation runs, and the graph's in-place operations are rewritten out of
    place, so recorded pre-activations are never overwritten. Representations that the consumer
    does not keep are freed as in a plain forward, so memory stays that of one forward pass.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], method: str, channel_mean: bool = False) -> None:
        self.names = list(names)
        self.method = method
        self.channel_mean = channel_mean
        if method == "fx":
            tracer, graph = _trace(model)
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


def _prepare_model(model: nn.Module, device: torch.device, dtype: torch.dtype, init_bn: str) -> nn.Module:
    net = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    _disable_inplace_modules(net)
    for p in net.parameters():
        p.requires_grad_(False)
    if init_bn == "batch":
        _batch_stat_bn(net)
    return net


def _resolve_layers(model: nn.Module, layers: str | Sequence[str] | None) -> tuple[list[Layer], str]:
    every, method = _all_layers(model)
    if layers is None or layers == "default":
        chosen = _default_layers(every)
    elif layers == "all":
        chosen = [l for l in every if l.kind != "input"]
    elif layers == "output":
        chosen = [l for l in every if l.kind == "output"][-1:]
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
    return _numbered(chosen), method


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
    device = _model_device(model)
    chosen, method = _resolve_layers(model, layers)
    net = _prepare_model(model, device, images.dtype, init_bn)
    return _Probe(net, [l.name for l in chosen], method)(images.to(device))


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


# ------------------------------------------------------------------------------------------------
# Accumulation
# ------------------------------------------------------------------------------------------------


#: Row chunks of about this many elements are differenced in a small, cache-resident scratch
#: buffer, so each representation is read once from memory instead of written and re-read.
_CHUNK_ELEMENTS = 1 << 18


def _row_sq_dist(b: Tensor, a: Tensor, scratch: Tensor) -> Tensor:
    r"""Per-row squared distances :math:`\|b_n - a_n\|^2` of two ``(B, d)`` tensors, as float64 ``[B]``."""
    n, d = b.shape
    rows = max(1, _CHUNK_ELEMENTS // max(d, 1))
    out = torch.empty(n, dtype=b.dtype, device=b.device)
    for s in range(0, n, rows):
        e = min(s + rows, n)
        diff = torch.sub(b[s:e], a[s:e], out=scratch[: (e - s) * d].view(e - s, d))
        torch.linalg.vector_norm(diff, dim=1, out=out[s:e])
    return out.double().square()


def _centred_sq_sum(a: Tensor, mean: Tensor, scratch: Tensor) -> float:
    r""":math:`\sum_n \|a_n - \bar a\|^2` of a ``(B, d)`` tensor (centred before squaring: no cancellation)."""
    return float(_row_sq_dist(a, mean.expand_as(a), scratch).sum())


class _Moments:
    """Per-group counts, means (float64 vectors) and summed squared deviations (float64 scalars)."""

    def __init__(self, n_groups: int) -> None:
        self.n = np.zeros(n_groups)
        self.m2 = np.zeros(n_groups)
        self.mean: Tensor | None = None  # [G, d] float64

    def add(self, group: int, a: Tensor, scratch: Tensor) -> None:
        """Merge the rows of ``a`` [b, d] (compute dtype) into ``group`` (Chan et al.'s update)."""
        nb = a.shape[0]
        mb = a.mean(0)
        m2b = _centred_sq_sum(a, mb, scratch) if nb > 1 else 0.0
        mb = mb.to(torch.float64)
        if self.mean is None:
            self.mean = torch.zeros((len(self.n), a.shape[1]), dtype=torch.float64, device=a.device)
        na = self.n[group]
        tot = na + nb
        delta = mb - self.mean[group]
        self.mean[group] += delta * (nb / tot)
        self.m2[group] += m2b + float(delta.square().sum()) * na * nb / tot
        self.n[group] = tot

    def deno(self) -> tuple[float, np.ndarray]:
        """``2 M2 / P`` over all images, and its leave-one-group-out values ``[G]``."""
        assert self.mean is not None
        n = self.n
        total = n.sum()
        mu = (self.mean * torch.as_tensor(n, dtype=torch.float64, device=self.mean.device)[:, None]).sum(0) / total
        q = (self.mean - mu).square().sum(1).cpu().numpy()  # |mu_g - mu|^2
        between = float((n * q).sum())
        m2 = self.m2.sum() + between
        rest = total - n
        with np.errstate(divide="ignore", invalid="ignore"):
            m2_loo = (self.m2.sum() - self.m2) + between - n * q - np.where(rest > 0, n**2 * q / rest, 0.0)
            deno_loo = 2.0 * m2_loo / rest
        return 2.0 * m2 / total, deno_loo


def _jackknife_se(loo: np.ndarray) -> float:
    loo = loo[np.isfinite(loo)]
    g = len(loo)
    if g < 2:
        return float("nan")
    return float(np.sqrt((g - 1) / g * np.square(loo - loo.mean()).sum()))


def _median(x: Tensor, dim: int, kind: str = "lower") -> Tensor:
    """Median along ``dim``: for an even count, ``"lower"`` takes the lower of the two middle values
    (``torch.median``, the reference's choice), ``"average"`` their mean (the textbook median)."""
    s = x.sort(dim=dim).values
    n = s.shape[dim]
    lo = s.narrow(dim, (n - 1) // 2, 1)
    if kind == "lower":
        return lo.squeeze(dim)
    hi = s.narrow(dim, n // 2, 1)
    return ((lo + hi) / 2).squeeze(dim)


def _pair_median(a: Tensor, kind: str = "lower") -> float:
    """Median of all P^2 ordered pairwise squared distances (diagonal zeros included)."""
    a = a.to(torch.float64)
    d2 = torch.cdist(a, a).square()
    return float(_median(d2.flatten(), 0, kind))


@dataclass
class _Accumulator:
    """Streams clean and perturbed representations and returns the results."""

    layers: list[Layer]
    names: list[str]  # perturbation names
    P: int
    estimator: str
    n_groups: int
    n_draws: int = 1
    median: str = "lower"  # even counts: "lower" middle value (the reference) or "average"
    sums: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # name -> layer -> [P]
    moments: dict[str, _Moments] = field(default_factory=dict)
    stored_clean: dict[str, list[Tensor]] = field(default_factory=dict)
    stored_diff: dict[str, dict[str, list[tuple[int, Tensor]]]] = field(default_factory=dict)
    _scratch_buf: Tensor | None = None
    _clean: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        for nm in self.names:
            self.sums[nm] = {l.name: np.zeros(self.P) for l in self.layers}
            self.stored_diff[nm] = {l.name: [] for l in self.layers}
        for l in self.layers:
            self.moments[l.name] = _Moments(self.n_groups)
            self.stored_clean[l.name] = []

    def group_slices(self, start: int, stop: int) -> Iterator[tuple[int, slice]]:
        """Split images start..stop-1 by jackknife group (contiguous groups of ~P/G images)."""
        g_of = lambda n: n * self.n_groups // self.P  # noqa: E731
        s = start
        while s < stop:
            g = g_of(s)
            e = s
            while e < stop and g_of(e) == g:
                e += 1
            yield g, slice(s - start, e - start)
            s = e

    def _scratch(self, like: Tensor) -> Tensor:
        """A small scratch buffer (``_CHUNK_ELEMENTS`` plus one row) in ``like``'s dtype and device."""
        need = _CHUNK_ELEMENTS + like.shape[1]
        buf = self._scratch_buf
        if buf is None or buf.numel() < need or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._scratch_buf = torch.empty(need, dtype=like.dtype, device=like.device)
        return buf

    def clean_consumer(self, start: int, clone: bool = False) -> Callable[[int, Tensor], None]:
        """Consumer of the clean forward of images ``start..``: keeps them and updates the moments."""
        self._clean = [None] * len(self.layers)

        def consume(i: int, a: Tensor) -> None:
            a = a.clone() if clone else a
            self._clean[i] = a
            name = self.layers[i].name
            if self.estimator == "median":
                self.stored_clean[name].append(a.to("cpu", torch.float64))
            scratch = self._scratch(a)
            for g, sl in self.group_slices(start, start + a.shape[0]):
                self.moments[name].add(g, a[sl], scratch)

        return consume

    def perturbed_consumer(self, pert: str, start: int) -> Callable[[int, Tensor], None]:
        """Consumer of a perturbed forward: adds the squared changes of the representations."""

        def consume(i: int, b: Tensor) -> None:
            name = self.layers[i].name
            a = self._clean[i]
            sq = _row_sq_dist(b, a, self._scratch(b)).cpu().numpy()
            self.sums[pert][name][start : start + len(sq)] += sq / self.n_draws
            if self.estimator == "median":
                self.stored_diff[pert][name].append((start, (b - a).square().to("cpu", torch.float64)))

        return consume

    def end_batch(self) -> None:
        self._clean = []

    # -------------------------------------------------------------------------------- results

    def finish(self, ratio: tuple[str, str] | None, n_boot: int, seed: int) -> dict[str, np.ndarray]:
        L = len(self.layers)
        out: dict[str, np.ndarray] = {}
        keys = ["deno"] + [f"num_{n}" for n in self.names] + self.names + (["R"] if ratio else [])
        for k in keys:
            out[k] = np.full(L, np.nan)
            out[k + "_se"] = np.full(L, np.nan)
        for i, l in enumerate(self.layers):
            if self.estimator == "mean":
                est, se = self._mean_layer(l.name, ratio)
            else:
                est, se = self._median_layer(l.name, ratio, n_boot, seed)
            for k in keys:
                out[k][i] = est[k]
                out[k + "_se"][i] = se[k]
        return out

    def _mean_layer(self, lname: str, ratio: tuple[str, str] | None) -> tuple[dict[str, float], dict[str, float]]:
        deno, deno_loo = self.moments[lname].deno()
        group = np.arange(self.P) * self.n_groups // self.P
        counts = np.bincount(group, minlength=self.n_groups).astype(float)
        est: dict[str, float] = {"deno": deno}
        loo: dict[str, np.ndarray] = {"deno": deno_loo}
        for nm in self.names:
            e = self.sums[nm][lname]
            gsum = np.bincount(group, weights=e, minlength=self.n_groups)
            num = e.mean()
            with np.errstate(divide="ignore", invalid="ignore"):
                num_loo = (e.sum() - gsum) / (self.P - counts)
            est[f"num_{nm}"] = num
            loo[f"num_{nm}"] = num_loo
            est[nm] = num / (deno + DENO_EPS)
            loo[nm] = num_loo / (deno_loo + DENO_EPS)
        if ratio:
            a, b = ratio
            with np.errstate(divide="ignore", invalid="ignore"):
                est["R"] = est[f"num_{a}"] / est[f"num_{b}"]
                loo["R"] = loo[f"num_{a}"] / loo[f"num_{b}"]
        return est, {k: _jackknife_se(v) for k, v in loo.items()}

    def _median_layer(self, lname: str, ratio: tuple[str, str] | None, n_boot: int, seed: int) -> tuple[dict[str, float], dict[str, float]]:
        clean = torch.cat(self.stored_clean[lname])
        diffs = {}
        for nm in self.names:  # arrange the squared changes as [draws, P, d]
            chunks = self.stored_diff[nm][lname]
            full = torch.empty((self.n_draws, self.P, chunks[0][1].shape[1]), dtype=torch.float64)
            seen: dict[int, int] = {}
            for start, sq in chunks:
                k = seen.get(start, 0)
                seen[start] = k + 1
                full[k, start : start + sq.shape[0]] = sq
            diffs[nm] = full

        def estimate(rows: Tensor | None) -> dict[str, float]:
            c = clean if rows is None else clean[rows]
            deno = _pair_median(c, self.median)
            r: dict[str, float] = {"deno": deno}
            for nm, d in diffs.items():
                d = d if rows is None else d[:, rows]
                num = float(_median(d.reshape(-1, d.shape[-1]), 0, self.median).sum())
                r[f"num_{nm}"] = num
                r[nm] = num / (deno + DENO_EPS)
            if ratio:
                a, b = ratio
                r["R"] = r[f"num_{a}"] / r[f"num_{b}"] if r[f"num_{b}"] else float("nan")
            return r

        est = estimate(None)
        g = torch.Generator().manual_seed(seed)
        boots = [estimate(torch.randint(0, self.P, (self.P,), generator=g)) for _ in range(n_boot)]
        se = {k: float(np.std([b[k] for b in boots], ddof=1)) if n_boot > 1 else float("nan") for k in est}
        return est, se


# ------------------------------------------------------------------------------------------------
# Public entry points
# ------------------------------------------------------------------------------------------------


def _check_probe_images(images: Any, name: str = "images") -> Tensor:
    check_float_tensor(images, name)
    check_min_ndim(images, 2, "P, ...", name)
    if images.shape[0] < 2:
        raise ValueError(
            f"{name} must hold at least 2 probe images (P >= 2) to form the denominator, got P = {images.shape[0]}"
        )
    if not bool(torch.isfinite(images.sum())):  # cheap screen; the exact check (a sum may overflow)
        check_finite(images, name)
    return images


def _resolve_device(model: nn.Module, images: Tensor, device: torch.device | str | None) -> torch.device:
    model_device = _model_device(model)
    if device is None:
        if images.device != model_device:
            raise ValueError(
                f"model and images are on different devices (model on {model_device}, images on {images.device}); "
                "move one of them, or pass device=... to run both there"
            )
        return model_device
    return torch.device(device)


def _check_compatible(net: nn.Module, images: Tensor) -> None:
    """Fail early, and clearly, when the model cannot take these images."""
    first = next((m for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    first_any = next((m for m in net.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))), None)
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


def _device_and_batch(model: nn.Module, images: Tensor, device: Any, batch_size: int | None, init_bn: str) -> tuple[torch.device, int]:
    """The device to run on, and the batch size (default: one full batch with batch-statistics BN)."""
    dev = _resolve_device(model, images, device)
    P = images.shape[0]
    if batch_size is None:
        batch_size = P if init_bn == "batch" else min(P, 128)
    return dev, check_positive_int(batch_size, "batch_size")


def _build_probe(model: nn.Module, images: Tensor, layers: Any, dev: torch.device, compute_dtype: torch.dtype,
                 init_bn: str, channel_mean: bool = False) -> tuple[list[Layer], _Probe]:
    """Resolve the probe points and return them with a probe on a prepared copy of the model."""
    chosen, method = _resolve_layers(model, layers)
    net = _prepare_model(model, dev, compute_dtype, init_bn)
    _check_compatible(net, images[:2].to(dev, compute_dtype))
    return chosen, _Probe(net, [l.name for l in chosen], method, channel_mean=channel_mean)


def _model_description(model: nn.Module) -> dict[str, Any]:
    text = repr(model)
    return {
        "model": type(model).__name__,
        "model_params": int(sum(p.numel() for p in model.parameters())),
        "model_repr_sha1": hashlib.sha1(text.encode()).hexdigest()[:12],
    }


class DegenerateWarning(UserWarning):
    """The probe set gives an undefined or meaningless sensitivity at some layer (e.g. constant images)."""


def _warn_degenerate(layers: list[Layer], values: dict[str, np.ndarray]) -> None:
    """Warn when a layer's denominator vanishes (the probes do not vary there: D and G are
    num/1e-10, inflated without meaning) or a ratio is undefined (NaN/inf)."""
    deno = np.asarray(values["deno"], float)
    flat = [l.name for l, d in zip(layers, deno) if not d > DENO_EPS]
    if flat:
        warnings.warn(
            f"the probe images do not vary at {len(flat)} layer(s) ({', '.join(flat[:5])}{', …' if len(flat) > 5 else ''}): "
            f"deno <= {DENO_EPS:g}, so D and G there are divided by the guard {DENO_EPS:g} and mean nothing "
            "(constant or identical probe images?)", DegenerateWarning, stacklevel=3)
    bad = sorted({k for k in ("D", "G", "R") if k in values and not np.isfinite(np.asarray(values[k], float)).all()})
    if bad:
        warnings.warn(f"{', '.join(bad)} undefined (NaN/inf) at some layer: a perturbation changed nothing there "
                      "(num = 0) or the representation is not finite", DegenerateWarning, stacklevel=3)


def _to_dataset(layers: list[Layer], values: dict[str, np.ndarray], attrs: dict[str, Any]) -> xr.Dataset:
    _warn_degenerate(layers, values)
    L = len(layers)
    coords = {
        "layer": ("layer", np.arange(L)),
        "layer_name": ("layer", np.array([l.name for l in layers], dtype=object).astype(str)),
        "layer_kind": ("layer", np.array([l.kind for l in layers], dtype=object).astype(str)),
        "depth": ("layer", np.array([l.depth for l in layers], dtype=np.int64)),
        "relative_depth": ("layer", np.arange(L) / max(L - 1, 1) if L > 1 else np.ones(1)),
    }
    data_vars = {}
    for k, v in values.items():
        base = k[:-3] if k.endswith("_se") else k
        long_name, units = SCHEMA.get(base, (f"sensitivity to perturbation {base!r}", "1"))
        if base.startswith("num_") and base not in SCHEMA:
            long_name, units = (f"mean squared representation change under {base[4:]!r}", "activation^2")
        if k.endswith("_se"):
            long_name = "standard error of " + base
        data_vars[k] = ("layer", v, {"long_name": long_name, "units": units})
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs["schema"] = "diffeosens.sensitivity/1"
    ds.attrs.update({k: to_attr(v) for k, v in attrs.items()})
    return ds


def _batches(P: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for s in range(0, P, batch_size):
        yield s, min(s + batch_size, P)


def _common_checks(estimator: str, init_bn: str, compute_dtype: torch.dtype, n_jackknife: int, median: str = "lower") -> None:
    check_choice(estimator, ESTIMATORS, "estimator")
    check_choice(median, MEDIANS, "median")
    check_choice(init_bn, INIT_BN, "init_bn")
    if compute_dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise ValueError(f"compute_dtype must be a floating torch dtype (float32 or float64), got {compute_dtype!r}")
    check_positive_int(n_jackknife, "n_jackknife", minimum=2)


def _progress(it: Iterable[Any], total: int, enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, unit="batch")


def measure(
    model: nn.Module,
    images: Tensor,
    *,
    layers: str | Sequence[str] | None = None,
    delta: float = 1.0,
    cut: float = 3,
    interp: str = "linear",
    n_draws: int = 1,
    estimator: str = "mean",
    median: str = "lower",
    batch_size: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    compute_dtype: torch.dtype = torch.float32,
    init_bn: str = "running",
    off_diagonal: bool = False,
    n_jackknife: int = 20,
    n_boot: int = 20,
    progress: bool = False,
) -> xr.Dataset:
    r"""Layer-wise :math:`D_k`, :math:`G_k`, :math:`R_k` of ``model`` on probe ``images``.

    Args:
        model: any module taking ``images``; it is copied, set to eval mode, cast to
            ``compute_dtype`` and run without autograd; in-place operations are switched off.
        images: probe inputs :math:`(P, C, H, W)` as the network sees them (e.g. normalised).
            They may live on the CPU while the model runs on a GPU only if ``device`` is given.
        layers: ``None``/``"default"`` (see :func:`list_layers`), ``"all"``, ``"output"`` (the
            network output only, the paper's Fig. 1), or a list of node names.
        delta: typical displacement in pixels (the paper: 1); ``cut``: mode cutoff (3);
            ``interp``: ``"linear"`` (the paper), ``"nearest"`` or ``"gaussian"`` (then the clean
            images are passed through the Gaussian resampler at :math:`T = 0` too, as in the
            NeurIPS-2021 code, so that clean and deformed share the same smoothing).
        n_draws: independent (diffeo, noise) draws per image; the clean forward is shared.
        estimator: ``"mean"`` (2022) or ``"median"`` (2021, see module docstring).
        median: with ``estimator="median"`` and an even count, ``"lower"`` (the lower middle
            value, as ``torch.median`` in the reference code) or ``"average"`` (the mean of the
            two middle values; about 1 % apart on D and G at P = 500).
        batch_size: images per forward (default ``min(P, 128)``; with ``init_bn="batch"`` the
            default is ``P``, one full batch per input kind, as in the reference).
        seed: the seed of the counter-based random stream (recorded in the results).
        device: where to run; default the model's device (images must then be there too).
        compute_dtype: ``torch.float32`` (fast) or ``torch.float64`` (the reference's precision).
        init_bn: ``"running"`` (BatchNorm uses its running statistics) or ``"batch"`` (each
            forward batch's own statistics, the paper's treatment of untrained BN nets; clean,
            deformed and noisy inputs are always separate batches).
        off_diagonal: use the off-diagonal pair mean :math:`P/(P-1)\,\mathrm{deno}` (open choice O4).
        n_jackknife: groups of the delete-a-group jackknife; ``n_boot``: median bootstrap size.
        progress: show a tqdm progress bar over mini-batches.

    Returns:
        An :class:`xarray.Dataset` following :data:`SCHEMA` (see the module docstring).

    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    >>> ds = measure(net, torch.randn(16, 3, 32, 32))
    >>> ds.layer_name.values.tolist(), ds.sizes["layer"]
    (['0', '1', '2', '4'], 4)
    """
    t0 = time.perf_counter()
    _check_probe_images(images)
    diffeo._check_images(images)
    check_choice(interp, diffeo.INTERPOLATIONS, "interp")
    n_draws = check_positive_int(n_draws, "n_draws")
    _common_checks(estimator, init_bn, compute_dtype, n_jackknife, median)
    seed = check_seed(seed)
    if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta >= 0):
        raise ValueError(f"delta must be a finite number >= 0 (pixels), got {delta!r}")
    P, C, H, W = images.shape
    dev, batch_size = _device_and_batch(model, images, device, batch_size, init_bn)
    T_b, cut_b = diffeo._prepare_T_cut(None, delta, cut, 1, (H, W), warn_stacklevel=3)
    kmax = diffeo.max_mode_index(cut_b)

    chosen, probe = _build_probe(model, images, layers, dev, compute_dtype, init_bn)
    acc = _Accumulator(chosen, ["D", "G"], P, estimator, min(n_jackknife, P), n_draws=n_draws, median=median)

    for start, stop in _progress(_batches(P, batch_size), math.ceil(P / batch_size), progress, "measure"):
        x = images[start:stop].to(dev, compute_dtype)
        if interp == "gaussian":  # smooth the clean images exactly like the deformed ones (T = 0)
            zero = torch.zeros((stop - start, 2, 1, 1), dtype=x.dtype, device=dev)
            x = diffeo._deform_from_normals(x, zero, torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64), "gaussian")
        probe.run(x, acc.clean_consumer(start, clone=probe.method == "hooks"))
        for k in range(n_draws):
            normals = standard_normals(seed, stream_id("diffeo", k), start, stop, (2, kmax, kmax), dtype=compute_dtype, device=dev)
            tx = diffeo._deform_from_normals(x, normals, T_b, cut_b, interp)
            target = torch.linalg.vector_norm((tx - x).reshape(stop - start, -1), dim=1, dtype=torch.float64)
            probe.run(tx, acc.perturbed_consumer("D", start))
            del tx
            xi = standard_normals(seed, stream_id("noise", k), start, stop, (C, H, W), dtype=compute_dtype, device=dev)
            probe.run(x + rescale_to_norm(xi, target), acc.perturbed_consumer("G", start))
        acc.end_batch()

    values = acc.finish(("D", "G"), n_boot, seed)
    if off_diagonal:
        _apply_off_diagonal(values, P)
    T = float(T_b)
    params = dict(layers=layers if layers is None or isinstance(layers, str) else list(layers), delta=delta, cut=cut, T=T,
                  interp=interp, n_draws=n_draws, estimator=estimator, median=median, batch_size=batch_size, seed=seed,
                  compute_dtype=str(compute_dtype).replace("torch.", ""), init_bn=init_bn, off_diagonal=off_diagonal,
                  n_jackknife=min(n_jackknife, P), n_boot=n_boot, P=P, image_shape=[C, H, W], capture=probe.method)
    return _to_dataset(chosen, values, _result_attrs(params, model, estimator, dev, t0))


def _result_attrs(params: dict[str, Any], model: nn.Module, estimator: str, dev: torch.device, t0: float) -> dict[str, Any]:
    """Attributes of a results dataset: every parameter (flat and as JSON), the model, provenance."""
    attrs = dict(params)
    attrs.update(_model_description(model))
    attrs["uncertainty"] = "delete-a-group jackknife over images" if estimator == "mean" else "bootstrap over images"
    attrs["deno_eps"] = DENO_EPS
    attrs["params"] = params
    attrs["provenance"] = provenance(dev, time.perf_counter() - t0)
    return attrs


def _apply_off_diagonal(values: dict[str, np.ndarray], P: int) -> None:
    f = P / (P - 1)
    values["deno"] *= f
    values["deno_se"] *= f
    for k in list(values):
        if k in ("deno", "deno_se", "R", "R_se") or k.startswith("num_"):
            continue
        values[k] /= f


def measure_perturbed(
    model: nn.Module,
    clean: Tensor,
    perturbed: Mapping[str, Tensor],
    *,
    layers: str | Sequence[str] | None = None,
    ratio: tuple[str, str] | None = None,
    estimator: str = "mean",
    median: str = "lower",
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    compute_dtype: torch.dtype = torch.float32,
    init_bn: str = "running",
    off_diagonal: bool = False,
    n_jackknife: int = 20,
    n_boot: int = 20,
    seed: int = 0,
    progress: bool = False,
    channel_mean: bool = False,
) -> xr.Dataset:
    r"""The same estimators for user-supplied perturbations (pixel moves, any custom transform).

    Args:
        clean: :math:`(P, \dots)` clean inputs.
        perturbed: ``{name: tensor}``, each the same shape as ``clean`` (row :math:`n` perturbs
            input :math:`n`). Each name ``k`` gives variables ``num_k``, ``k`` (= ``num_k/deno``)
            and their standard errors.
        ratio: ``(a, b)`` adds ``R = num_a / num_b``; by default ``("D", "G")`` when both exist.
        channel_mean: average every representation over its channel axis (dimension 1) before
            flattening: the purely spatial measure of the 1D experiments (methods §4.10).
        Other arguments as in :func:`measure` (``seed`` only seeds the median bootstrap).

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> x = torch.randn(10, 1, 3, 4)
    >>> ds = measure_perturbed(net, x, {"D": x.roll(1, -1), "G": x + 0.1})
    >>> sorted(v for v in ds.data_vars if not v.endswith("_se"))
    ['D', 'G', 'R', 'deno', 'num_D', 'num_G']
    """
    t0 = time.perf_counter()
    _check_probe_images(clean, "clean")
    if not isinstance(perturbed, Mapping) or not perturbed:
        raise ValueError("perturbed must be a non-empty dict {name: tensor of the same shape as clean}")
    for nm, t in perturbed.items():
        if not isinstance(nm, str) or not nm.isidentifier() or nm in ("deno", "R"):
            raise ValueError(f"perturbation names must be identifiers other than 'deno' and 'R', got {nm!r}")
        check_float_tensor(t, f"perturbed[{nm!r}]")
        if t.shape != clean.shape:
            raise ValueError(f"perturbed[{nm!r}] has shape {tuple(t.shape)}, expected the shape of clean {tuple(clean.shape)}")
    _common_checks(estimator, init_bn, compute_dtype, n_jackknife, median)
    seed = check_seed(seed)
    if ratio is None and {"D", "G"} <= set(perturbed):
        ratio = ("D", "G")
    if ratio is not None and not set(ratio) <= set(perturbed):
        raise ValueError(f"ratio {ratio!r} names perturbations that are not given; valid names: {sorted(perturbed)}")
    P = clean.shape[0]
    dev, batch_size = _device_and_batch(model, clean, device, batch_size, init_bn)
    chosen, probe = _build_probe(model, clean, layers, dev, compute_dtype, init_bn, channel_mean=channel_mean)
    names = list(perturbed)
    acc = _Accumulator(chosen, names, P, estimator, min(n_jackknife, P), median=median)
    for start, stop in _progress(_batches(P, batch_size), math.ceil(P / batch_size), progress, "measure"):
        probe.run(clean[start:stop].to(dev, compute_dtype), acc.clean_consumer(start, clone=probe.method == "hooks"))
        for nm in names:
            probe.run(perturbed[nm][start:stop].to(dev, compute_dtype), acc.perturbed_consumer(nm, start))
        acc.end_batch()
    values = acc.finish(ratio, n_boot, seed)
    if off_diagonal:
        _apply_off_diagonal(values, P)
    params = dict(layers=layers if layers is None or isinstance(layers, str) else list(layers), perturbations=names,
                  ratio=list(ratio) if ratio else None, estimator=estimator, median=median, batch_size=batch_size,
                  compute_dtype=str(compute_dtype).replace("torch.", ""), init_bn=init_bn, off_diagonal=off_diagonal,
                  n_jackknife=min(n_jackknife, P), P=P, capture=probe.method, seed=seed, channel_mean=channel_mean)
    return _to_dataset(chosen, values, _result_attrs(params, model, estimator, dev, t0))
