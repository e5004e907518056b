r"""Feature capture: run a prepared copy of the model and hand each probed representation on.

The model is copied, cast, put in eval mode and its in-place operations are switched off
(methods §4.9), so a recorded pre-activation is never overwritten by a later in-place
activation; with ``init_bn="batch"`` its BatchNorm layers use batch statistics (methods §4.8):
those of the whole probe set of each input kind, whatever the mini-batch size
(:class:`ProbeSetNorm`). :class:`Probe` instruments the model's fx graph (or, for models fx
cannot trace, its leaf modules) so that each representation reaches a consumer as soon as it
exists.
"""

from __future__ import annotations

import copy
import operator
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..validation import check_choice, check_device, check_finite, check_float_tensor, check_min_ndim, check_module
from ..models.kinds import BATCH_NORMALIZATIONS, CONVOLUTIONS
from .layers import Layer, TracedModel, select_layers, trace_model

__all__ = [
    "INIT_BN",
    "Probe",
    "ProbeSetNorm",
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


class _StopForward(Exception):
    """Ends a calibration forward at the BatchNorm call whose input statistics it gathers."""


class ProbeSetNorm:
    r"""BatchNorm with the statistics of the whole probe set, whatever the mini-batch size (``init_bn="batch"``).

    With batch statistics (the paper's treatment of untrained BN nets, methods §4.8) a BatchNorm
    layer normalises its input by the per-channel mean and (biased) variance of the batch. The
    reference runs each *input kind* (the clean probe images; the deformed images of one draw and
    one :math:`\delta`; the noisy images of one draw and one :math:`\delta`) as one batch of all
    :math:`P` images, so "batch statistics" are the statistics of the whole probe set of that kind.
    When the probe set is split into mini-batches this class recovers exactly those statistics:

    * call :math:`j` (the :math:`j`-th BatchNorm call of a forward, in execution order; a module
      called twice has two calls) sees an input that depends on the statistics of calls
      :math:`0..j-1`, so the statistics are found one call at a time: pass :math:`j` runs every
      mini-batch of every kind up to call :math:`j` (the forward stops there), calls
      :math:`0..j-1` normalising with the whole-set statistics found before, and merges the
      per-channel mean and variance of call :math:`j`'s input over all :math:`P` images (float64,
      Chan's update);
    * the measurement forwards then normalise every call with the statistics of its kind (the
      module's running statistics are replaced by them just before the call, in eval mode).

    The result equals the one-batch result to rounding (float64: :math:`10^{-10}` relative,
    tested). Cost: with :math:`B` BatchNorm calls, :math:`B` partial passes per kind, each
    stopping at its call (roughly :math:`B/2` extra forwards; VGG11bn, 24 CIFAR-10 images, float64
    on a CPU: 3.3 s with one batch, 12 s with ``batch_size=8``, 17 s with ``batch_size=1``); none
    with one mini-batch (``batch_size >= P``, the default with ``init_bn="batch"``), where plain
    batch statistics are already those of the whole set.
    """

    def __init__(self, module: nn.Module, example: Tensor, run: Callable[[Tensor], None]) -> None:
        self.bns = [m for m in module.modules() if isinstance(m, BATCH_NORMALIZATIONS)]
        self.run = run
        self.stats: dict[Hashable, list[tuple[Tensor, Tensor]]] = {}
        self._kind: Hashable | None = None
        self._target: int | None = None
        self._moments: list[Any] | None = None
        self._call = 0
        self._counting = True
        for m in self.bns:
            m.register_forward_pre_hook(self._pre_hook)
        self._forward(example)  # count the BatchNorm calls of a forward (plain batch statistics)
        self.n_calls = self._call
        self._counting = False

    def _forward(self, x: Tensor) -> bool:
        """Run ``x``; ``False`` if the forward stopped at the calibrated call."""
        self._call = 0
        try:
            self.run(x)
        except _StopForward:
            return False
        return True

    def _pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        j = self._call
        self._call += 1
        if self._counting:
            module.running_mean = module.running_var = None  # plain batch statistics
            return
        if j == self._target:
            self._accumulate(args[0])
            raise _StopForward
        stats = self.stats[self._kind]
        if j >= len(stats):
            raise RuntimeError(
                f"the model made more BatchNorm calls ({j + 1}) than when its whole-probe-set statistics were gathered "
                f"({len(stats)}): its forward depends on the input; use init_bn='batch' with batch_size >= P (one batch)"
            )
        module.running_mean, module.running_var = stats[j]

    def _accumulate(self, x: Tensor) -> None:
        x = x.detach().to(torch.float64)
        dims = [0] + list(range(2, x.ndim))
        n = x.numel() // max(x.shape[1], 1)
        mean = x.mean(dims)
        m2 = (x - mean.view(1, -1, *[1] * (x.ndim - 2))).square().sum(dims)
        acc = self._moments
        assert acc is not None
        if acc[0] == 0:
            acc[:] = [n, mean, m2]
            return
        na, mean_a, m2_a = acc
        tot = na + n
        delta = mean - mean_a
        acc[:] = [tot, mean_a + delta * (n / tot), m2_a + m2 + delta.square() * (na * n / tot)]

    def calibrate(self, inputs: Callable[[], Iterable[tuple[Hashable, Tensor]]], dtype: torch.dtype) -> None:
        """Gather the whole-set statistics of every kind: ``inputs()`` yields ``(kind, mini-batch)``
        over the whole probe set, the same sequence at every call."""
        moments: dict[Hashable, list[Any]] = {}
        for j in range(self.n_calls):
            for kind, x in inputs():
                self.stats.setdefault(kind, [])
                self._kind, self._target = kind, j
                self._moments = moments.setdefault(kind, [0, None, None])
                if self._forward(x):
                    raise RuntimeError(
                        f"a forward made only {j} BatchNorm call(s), fewer than the {self.n_calls} counted first: the "
                        "model's forward depends on the input; use init_bn='batch' with batch_size >= P (one batch)"
                    )
            for kind, (n, mean, m2) in moments.items():
                self.stats[kind].append((mean.to(dtype), (m2 / n).to(dtype)))  # biased variance, as batch statistics
            moments.clear()
        self._target = self._moments = None

    def use(self, kind: Hashable) -> None:
        """The next forward normalises with the whole-set statistics of ``kind``."""
        if kind not in self.stats:
            raise KeyError(f"no whole-probe-set BatchNorm statistics for input kind {kind!r}")
        self._kind, self._call = kind, 0


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
        why = " (the model returns it: layers='output' needs a model that returns one tensor)" if name == "output" else ""
        raise ValueError(f"layer {name!r} does not produce a tensor (got {type(t).__name__}){why}; choose another layer "
                         "(see diffeosens.sensitivity.list_layers(model))")
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
    check_module(model)
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
    """``device`` (checked: a device this machine has), or the model's device when it is ``None``
    (the images must then be there too)."""
    device = check_device(device)
    model_dev = model_device(model)
    if device is None:
        if images.device != model_dev:
            raise ValueError(
                f"model and images are on different devices (model on {model_dev}, images on {images.device}); "
                "move one of them, or pass device=... to run both there"
            )
        return model_dev
    return device


def check_probe_images(images: Any, name: str = "images", *, image_batch: bool = False) -> Tensor:
    """Probe inputs: a finite floating tensor ``(P, ...)`` with ``P >= 2``; with ``image_batch``
    (:func:`~.measurement.measure`, which deforms them) exactly ``(P, C, H, W)``.

    The first dimension is always the probe index: a ``(1, 8, H, W)`` tensor is one image with 8
    channels (refused, P = 1), a 3-D tensor is never guessed to be ``(P, H, W)`` or ``(C, H, W)``.
    """
    check_float_tensor(images, name)
    if image_batch and images.ndim != 4:
        hint = {
            3: "; a batch of single-channel images needs its channel axis (images.unsqueeze(1)), and one image "
               "(C, H, W) is not enough (P >= 2)",
            5: "; to measure several batches as one probe set, join them (images.flatten(0, 1))",
        }.get(images.ndim, "")
        raise ValueError(f"{name} must be a batch of images (P, C, H, W) with 4 dimensions, got shape {tuple(images.shape)}{hint}")
    check_min_ndim(images, 2, "P, ...", name)
    if images.shape[0] < 2:
        hint = ""
        if images.ndim == 4 and images.shape[1] > 1:
            hint = (f" (the first dimension is the probe index: shape {tuple(images.shape)} is one image with {images.shape[1]} "
                    f"channels; {images.shape[1]} single-channel images are images.transpose(0, 1))")
        raise ValueError(
            f"{name} must hold at least 2 probe images (P >= 2) to form the denominator, got P = {images.shape[0]}{hint}"
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
