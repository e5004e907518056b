r"""The entry points: :func:`measure` (diffeomorphisms and matched noise) and :func:`measure_perturbed`.

Both run a prepared copy of the model once per input kind and mini-batch (:mod:`.capture`),
stream the representations into the estimators (:mod:`.estimators`) and return a dataset of the
results schema (:mod:`.schema`). With ``init_bn="batch"`` and several mini-batches, a first
streaming pass gathers the whole probe set's BatchNorm statistics of every input kind
(:class:`~.capture.ProbeSetNorm`), so the result never depends on ``batch_size``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from ..diffeo import (
    INTERPOLATIONS,
    PAPER_CUT,
    PAPER_DELTA,
    Coefficients,
    apply_fields,
    resolve_temperature,
    sample_coefficients,
    warp,
)
from ..noise import rescale_to_norm
from ..streams import standard_normals, stream_id
from ..models.kinds import BATCH_NORMALIZATIONS
from ..validation import check_choice, check_flag, check_float_tensor, check_images, check_module, check_positive_int, check_seed
from .capture import INIT_BN, Probe, ProbeSetNorm, build_probe, check_probe_images, resolve_device
from .estimators import ESTIMATORS, MEDIANS, Accumulator, apply_off_diagonal
from .memory import auto_batch_size
from .schema import result_attrs, to_dataset

__all__ = ["measure", "measure_perturbed"]


def _batches(P: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for s in range(0, P, batch_size):
        yield s, min(s + batch_size, P)


def _common_checks(model: Any, estimator: str, init_bn: str, compute_dtype: torch.dtype, n_jackknife: int, n_boot: int,
                   median: str, off_diagonal: bool, progress: bool) -> tuple[int, int]:
    """The arguments :func:`measure` and :func:`measure_perturbed` share; returns ``(n_jackknife, n_boot)``."""
    check_module(model)
    check_choice(estimator, ESTIMATORS, "estimator")
    check_choice(median, MEDIANS, "median")
    check_choice(init_bn, INIT_BN, "init_bn")
    if compute_dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise ValueError(f"compute_dtype must be a floating torch dtype (float32 or float64), got {compute_dtype!r}")
    check_flag(off_diagonal, "off_diagonal")
    check_flag(progress, "progress")
    # both are checked whatever the estimator: a bad value is an error even where it is not used
    return (check_positive_int(n_jackknife, "n_jackknife (groups of the jackknife)", minimum=2),
            check_positive_int(n_boot, "n_boot (bootstrap resamples)", minimum=2))


def _device_and_batch(model: nn.Module, images: Tensor, device: Any, batch_size: int | str | None, init_bn: str) -> tuple[torch.device, int | str]:
    """The device to run on, and the batch size (default: one full batch with batch-statistics BN;
    ``"auto"`` is resolved by :func:`_resolve_batch` once the probe exists)."""
    dev = resolve_device(model, images, device)
    P = images.shape[0]
    if batch_size is None:
        batch_size = P if init_bn == "batch" else min(P, 128)
    if isinstance(batch_size, str):
        if batch_size != "auto":
            raise ValueError(f"batch_size must be a positive integer, None or 'auto', got {batch_size!r}")
        return dev, batch_size
    return dev, check_positive_int(batch_size, "batch_size (a positive integer, None or 'auto')")


def _resolve_batch(batch_size: int | str, probe: Probe, images: Tensor, dev: torch.device, compute_dtype: torch.dtype,
                   memory_budget: int | None, estimator: str, stored_copies: int, n_groups: int) -> tuple[int, dict[str, int] | None]:
    """``batch_size="auto"``: the largest batch that fits ``memory_budget`` (:mod:`.memory`);
    returns the batch size and the memory plan to record (``None`` for an explicit batch size)."""
    if memory_budget is not None and batch_size != "auto":
        raise ValueError("memory_budget applies to batch_size='auto' only; give one or the other")
    if batch_size != "auto":
        return int(batch_size), None
    plan = auto_batch_size(probe, images[:2].to(dev, compute_dtype), images.shape[0], budget=memory_budget, device=dev,
                           estimator=estimator, stored_copies=stored_copies, n_groups=n_groups)
    return plan["batch_size"], dict(plan)


def _whole_set_norm(probe: Probe, images: Tensor, P: int, batch_size: int, init_bn: str, dev: torch.device,
                    compute_dtype: torch.dtype, inputs: Callable[[], Iterable[tuple[Hashable, Tensor]]]) -> ProbeSetNorm | None:
    """With ``init_bn="batch"`` and several mini-batches, BatchNorm statistics of the whole probe set
    of every input kind (:class:`~.capture.ProbeSetNorm`); ``None`` when plain batch statistics
    already are those (one batch) or the model has no BatchNorm."""
    if init_bn != "batch" or batch_size >= P or not any(isinstance(m, BATCH_NORMALIZATIONS) for m in probe.module.modules()):
        return None
    norm = ProbeSetNorm(probe.module, images[:2].to(dev, compute_dtype), lambda x: probe.run(x, _ignore))
    norm.calibrate(inputs, compute_dtype)
    return norm


def _ignore(i: int, value: Tensor) -> None:
    """A consumer that keeps nothing (the calibration forwards of :class:`~.capture.ProbeSetNorm`)."""


def _forward(probe: Probe, norm: ProbeSetNorm | None, kind: Hashable, x: Tensor, consume: Callable[[int, Tensor], None]) -> None:
    if norm is not None:
        norm.use(kind)
    probe.run(x, consume)


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
    delta: float | Sequence[float] = PAPER_DELTA,
    cut: float = PAPER_CUT,
    interp: str = "linear",
    n_draws: int = 1,
    estimator: str = "mean",
    median: str = "lower",
    batch_size: int | str | None = None,
    memory_budget: int | None = None,
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
        delta: typical displacement in pixels, one value or a sequence (the paper: 1 =
            :data:`~diffeosens.diffeo.PAPER_DELTA`); the result always has a ``delta`` dimension.
            All values share the clean forward pass and the draws: along ``delta`` one field
            grows and one noise direction is rescaled.
        cut: mode cutoff (the paper: 3 = :data:`~diffeosens.diffeo.PAPER_CUT`).
        interp: ``"linear"`` (the paper), ``"nearest"`` or ``"gaussian"`` (then the clean
            images are passed through the Gaussian resampler at :math:`T = 0` too, as in the
            NeurIPS-2021 code, so that clean and deformed images share the same smoothing; the
            deformed image is the Gaussian resampling of the original image, smoothed once).
        n_draws: independent (diffeo, noise) draws per image; the clean forward is shared.
        estimator: ``"mean"`` (2022) or ``"median"`` (2021, see module docstring).
        median: with ``estimator="median"`` and an even count, ``"lower"`` (the lower middle
            value, as ``torch.median`` in the reference code) or ``"average"`` (the mean of the
            two middle values; about 1 % apart on D and G at P = 500).
        batch_size: images per forward (default ``min(P, 128)``; with ``init_bn="batch"`` the
            default is ``P``, one full batch per input kind, as in the reference), or ``"auto"``:
            the largest that fits ``memory_budget`` (:mod:`.memory`; recorded in the ``memory``
            entry of the parameters attribute). The result does not depend on it, with either
            ``init_bn``.
        memory_budget: bytes a ``batch_size="auto"`` measurement may use (default half of the
            memory available on the device, :func:`~.memory.available_memory`).
        seed: the seed of the counter-based streams (:mod:`diffeosens.streams`): image :math:`n`
            in draw :math:`k` gets ``sample_coefficients(..., seed=seed, start=n, draw=k)`` and
            the noise direction of item :math:`n` of stream ``("noise", k)``, whatever the
            batch size or device (recorded in the results).
        device: where to run; default the model's device (images must then be there too).
        compute_dtype: ``torch.float32`` (fast) or ``torch.float64`` (the reference's precision).
        init_bn: ``"running"`` (BatchNorm uses its running statistics) or ``"batch"`` (batch
            statistics, the paper's treatment of untrained BN nets: those of the whole probe set
            of each input kind, the clean images, the deformed images of one draw and delta, the
            noisy ones, whatever ``batch_size``; with several mini-batches a first streaming pass
            gathers them, :class:`~.capture.ProbeSetNorm`).
        off_diagonal: use the off-diagonal pair mean :math:`P/(P-1)\,\mathrm{deno}` (open choice O4).
        n_jackknife: groups of the delete-a-group jackknife (an integer >= 2); ``n_boot``: median
            bootstrap size (an integer >= 2). Both are checked whatever the estimator. With
            fewer than 10 probe images every standard error is NaN, with a warning
            (:data:`~.estimators.MIN_PROBES_FOR_SE`).
        progress: show a tqdm progress bar over mini-batches.

    Returns:
        An :class:`xarray.Dataset` over ``(delta, layer)`` following :data:`SCHEMA` (see the
        module docstring); ``T`` is a coordinate along ``delta``.

    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    >>> ds = measure(net, torch.randn(16, 3, 32, 32))
    >>> ds.layer_name.values.tolist(), ds.sizes["delta"], ds.sizes["layer"]
    (['0', '1', '2', '4'], 1, 4)
    """
    t0 = time.perf_counter()
    n_jackknife, n_boot = _common_checks(model, estimator, init_bn, compute_dtype, n_jackknife, n_boot, median, off_diagonal, progress)
    check_probe_images(images, image_batch=True)
    check_images(images, ndim=4, layout="P, C, H, W")
    check_choice(interp, INTERPOLATIONS, "interp")
    n_draws = check_positive_int(n_draws, "n_draws")
    seed = check_seed(seed)
    deltas = _check_deltas(delta)
    P, C, H, W = images.shape
    dev, batch_size = _device_and_batch(model, images, device, batch_size, init_bn)
    resolved = [resolve_temperature(None, d, cut, 1, (H, W)) for d in deltas]
    temps, cut_b = [T for T, _ in resolved], resolved[0][1]

    chosen, probe = build_probe(model, images, layers, dev, compute_dtype, init_bn)
    batch_size, memory = _resolve_batch(batch_size, probe, images, dev, compute_dtype, memory_budget, estimator,
                                        stored_copies=1 + 2 * len(deltas) * n_draws, n_groups=n_jackknife)
    names = [f"{kind}{i}" for i in range(len(deltas)) for kind in ("D", "G")]
    acc = Accumulator([l.name for l in chosen], names, P, estimator, min(n_jackknife, P), n_draws=n_draws, median=median)

    def inputs(start: int, stop: int) -> Iterator[tuple[str, int, Tensor]]:
        """``(name, draw, input)`` of images ``start..stop-1``: the clean batch, then per draw and delta the
        deformed and the noisy batch (the noise matched per image to the deformation's norm)."""
        raw = images[start:stop].to(dev, compute_dtype)
        # with Gaussian resampling the clean reference is smoothed exactly like the deformed images (T = 0)
        x = apply_fields(raw, raw.new_zeros((stop - start, 2, H, W)), interp="gaussian") if interp == "gaussian" else raw
        yield "clean", 0, x
        for k in range(n_draws):
            drawn = sample_coefficients(stop - start, (H, W), cut=cut_b, T=0.0, seed=seed, start=start, draw=k,
                                        device=dev, dtype=compute_dtype)
            xi = standard_normals(seed, stream_id("noise", k), start, stop, (C, H, W), dtype=compute_dtype, device=dev)
            for i, T in enumerate(temps):
                tx = warp(raw, Coefficients(drawn.normals, T, cut_b, drawn.size), interp=interp)
                target = torch.linalg.vector_norm((tx - x).reshape(stop - start, -1), dim=1, dtype=torch.float64)
                yield f"D{i}", k, tx
                del tx
                yield f"G{i}", k, x + rescale_to_norm(xi, target)

    def every_input() -> Iterator[tuple[Hashable, Tensor]]:
        for start, stop in _batches(P, batch_size):
            for name, k, t in inputs(start, stop):
                yield (name, k), t

    norm = _whole_set_norm(probe, images, P, batch_size, init_bn, dev, compute_dtype, every_input)
    for start, stop in _progress(_batches(P, batch_size), math.ceil(P / batch_size), progress, "measure"):
        for name, k, t in inputs(start, stop):
            consumer = acc.clean_consumer(start, clone=probe.method == "hooks") if name == "clean" else acc.perturbed_consumer(name, start)
            _forward(probe, norm, (name, k), t, consumer)
            del t  # a deformed batch is freed before the noisy one is made
        acc.end_batch()

    values = acc.finish({f"R{i}": (f"D{i}", f"G{i}") for i in range(len(deltas))}, n_boot, seed)
    per_delta = [_values_at(values, i) for i in range(len(deltas))]
    if off_diagonal:
        for v in per_delta:
            apply_off_diagonal(v, P)
    stacked = {k: np.stack([v[k] for v in per_delta]) for k in per_delta[0]}
    T_list = [float(T) for T in temps]
    params = dict(layers=layers if layers is None or isinstance(layers, str) else list(layers), delta=deltas, cut=cut, T=T_list,
                  interp=interp, n_draws=n_draws, estimator=estimator, median=median, batch_size=batch_size, memory=memory, seed=seed,
                  compute_dtype=str(compute_dtype).replace("torch.", ""), init_bn=init_bn, off_diagonal=off_diagonal,
                  n_jackknife=min(n_jackknife, P), n_boot=n_boot, P=P, image_shape=[C, H, W], capture=probe.method,
                  bn_statistics=_bn_statistics(init_bn, norm))
    return to_dataset(chosen, stacked, result_attrs(params, model, estimator, dev, t0), deltas=(deltas, T_list))


def _bn_statistics(init_bn: str, norm: ProbeSetNorm | None) -> str:
    """How BatchNorm normalised, for the record: running statistics, or those of the whole probe set
    (one batch, or gathered over mini-batches by :class:`~.capture.ProbeSetNorm`)."""
    if init_bn == "running":
        return "running"
    return "whole probe set (gathered over mini-batches)" if norm is not None else "whole probe set (one batch)"


def _check_deltas(delta: Any) -> list[float]:
    """``delta`` as a non-empty list of distinct finite numbers >= 0 (pixels)."""
    many = isinstance(delta, (Sequence, np.ndarray, Tensor)) and not isinstance(delta, str)
    values = list(np.asarray(delta, dtype=object).ravel()) if many else [delta]
    ok = bool(values) and all(
        isinstance(d, (int, float, np.integer, np.floating)) and not isinstance(d, bool) and math.isfinite(d) and d >= 0 for d in values
    )
    if not ok:
        raise ValueError(f"delta must be a number >= 0 (pixels) or a non-empty sequence of them, got {delta!r}")
    out = [float(d) for d in values]
    if len(set(out)) != len(out):
        raise ValueError(f"delta values must be distinct, got {out}")
    return out


def _values_at(values: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    """The estimates of the ``i``-th delta under the schema's names (``D``, ``num_G``, ``R_se``, ...)."""
    out = {"deno": values["deno"].copy(), "deno_se": values["deno_se"].copy()}
    for kind in ("D", "G"):
        for pre in ("num_", ""):
            for post in ("", "_se"):
                out[f"{pre}{kind}{post}"] = values[f"{pre}{kind}{i}{post}"]
    out["R"], out["R_se"] = values[f"R{i}"], values[f"R{i}_se"]
    return out


def measure_perturbed(
    model: nn.Module,
    clean: Tensor,
    perturbed: Mapping[str, Tensor],
    *,
    layers: str | Sequence[str] | None = None,
    ratio: tuple[str, str] | None = None,
    estimator: str = "mean",
    median: str = "lower",
    batch_size: int | str | None = None,
    memory_budget: int | None = None,
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
        Other arguments as in :func:`measure` (``seed`` only seeds the median bootstrap;
        ``batch_size="auto"`` and ``memory_budget`` too).

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> x = torch.randn(10, 1, 3, 4)
    >>> ds = measure_perturbed(net, x, {"D": x.roll(1, -1), "G": x + 0.1})
    >>> sorted(v for v in ds.data_vars if not v.endswith("_se"))
    ['D', 'G', 'R', 'deno', 'num_D', 'num_G']
    """
    t0 = time.perf_counter()
    n_jackknife, n_boot = _common_checks(model, estimator, init_bn, compute_dtype, n_jackknife, n_boot, median, off_diagonal, progress)
    check_flag(channel_mean, "channel_mean")
    check_probe_images(clean, "clean")
    if not isinstance(perturbed, Mapping) or not perturbed:
        raise ValueError("perturbed must be a non-empty dict {name: tensor of the same shape as clean}")
    for nm, t in perturbed.items():
        if not isinstance(nm, str) or not nm.isidentifier() or nm in ("deno", "R"):
            raise ValueError(f"perturbation names must be identifiers other than 'deno' and 'R', got {nm!r}")
        check_float_tensor(t, f"perturbed[{nm!r}]")
        if t.shape != clean.shape:
            raise ValueError(f"perturbed[{nm!r}] has shape {tuple(t.shape)}, expected the shape of clean {tuple(clean.shape)}")
        check_probe_images(t, f"perturbed[{nm!r}]")  # finite
    seed = check_seed(seed)
    if ratio is None and {"D", "G"} <= set(perturbed):
        ratio = ("D", "G")
    if ratio is not None and not (isinstance(ratio, (tuple, list)) and len(ratio) == 2 and set(ratio) <= set(perturbed)):
        raise ValueError(f"ratio {ratio!r} must be a pair (a, b) of perturbation names; valid names: {sorted(perturbed)}")
    P = clean.shape[0]
    dev, batch_size = _device_and_batch(model, clean, device, batch_size, init_bn)
    chosen, probe = build_probe(model, clean, layers, dev, compute_dtype, init_bn, channel_mean=channel_mean)
    batch_size, memory = _resolve_batch(batch_size, probe, clean, dev, compute_dtype, memory_budget, estimator,
                                        stored_copies=1 + len(perturbed), n_groups=n_jackknife)
    names = list(perturbed)
    acc = Accumulator([l.name for l in chosen], names, P, estimator, min(n_jackknife, P), median=median)

    def inputs(start: int, stop: int) -> Iterator[tuple[str, Tensor]]:
        yield "clean", clean[start:stop].to(dev, compute_dtype)
        for nm in names:
            yield nm, perturbed[nm][start:stop].to(dev, compute_dtype)

    def every_input() -> Iterator[tuple[Hashable, Tensor]]:
        for start, stop in _batches(P, batch_size):
            yield from inputs(start, stop)

    norm = _whole_set_norm(probe, clean, P, batch_size, init_bn, dev, compute_dtype, every_input)
    for start, stop in _progress(_batches(P, batch_size), math.ceil(P / batch_size), progress, "measure"):
        for nm, t in inputs(start, stop):
            consumer = acc.clean_consumer(start, clone=probe.method == "hooks") if nm == "clean" else acc.perturbed_consumer(nm, start)
            _forward(probe, norm, nm, t, consumer)
        acc.end_batch()
    values = acc.finish({"R": ratio} if ratio else {}, n_boot, seed)
    if off_diagonal:
        apply_off_diagonal(values, P)
    params = dict(layers=layers if layers is None or isinstance(layers, str) else list(layers), perturbations=names,
                  ratio=list(ratio) if ratio else None, estimator=estimator, median=median, batch_size=batch_size, memory=memory,
                  compute_dtype=str(compute_dtype).replace("torch.", ""), init_bn=init_bn, off_diagonal=off_diagonal,
                  n_jackknife=min(n_jackknife, P), P=P, capture=probe.method, seed=seed, channel_mean=channel_mean,
                  bn_statistics=_bn_statistics(init_bn, norm))
    return to_dataset(chosen, values, result_attrs(params, model, estimator, dev, t0))
