r"""The memory a measurement needs, and the batch size that keeps it within a budget.

A measurement (:func:`~.measurement.measure`) runs one mini-batch of ``B`` images at a time,
once clean and once per perturbation; its memory is that of one forward pass without autograd
plus the clean representations of the batch at every probe point (kept until the perturbed
forwards of the batch have been compared with them). Per image, in bytes, with ``e`` the bytes of
one element of ``compute_dtype`` (8 for the paper's float64):

.. math::

    m_\text{image} = e\,\Bigl(2\sum_{k} d_k + c \max_{\ell}\,(n^\text{in}_\ell + n^\text{out}_\ell)\Bigr)

where :math:`d_k` is the size of probe point :math:`k`'s representation (kept clean, plus the
perturbed one being compared), :math:`n^\text{in}_\ell, n^\text{out}_\ell` the input and output
sizes of module :math:`\ell` (the largest one bounds the live tensors of a forward pass), and
:math:`c =` :data:`LIVE_TENSORS` covers the tensors a network keeps alive beside them (the skip
branch of a residual block, the clean, deformed and noisy input batches, the scratch of the
distance computation). The probe-set statistics of the estimators are :math:`O(P \times
\text{layers})` numbers and are neglected. Fixed costs, whatever the batch size: the prepared
copy of the model in the compute dtype, the streaming moments of the denominator (one float64
mean vector of every probe point per jackknife group: :math:`G\,e_{64}\sum_k d_k`, which for
ResNet50 at full width with its 173 probe points is about 2 GiB at :math:`G = 20`) and, with the
median estimator, the stored
representations (:math:`P\,e_{64}\sum_k d_k` per stored copy, on the CPU);
:func:`auto_batch_size` refuses a budget they alone exceed.

``batch_size="auto"`` in :func:`~.measurement.measure` chooses
:math:`B = \min(P, \lfloor(\text{budget} - \text{fixed}) / m_\text{image}\rfloor)`; the budget
defaults to :func:`memory_fraction` (:data:`DEFAULT_FRACTION`, or the environment variable
:data:`MEMORY_FRACTION_ENV`, which a sweep running ``N`` cells side by side on one machine sets to
its ``1/N``-th) of the memory available on the device (CUDA: free memory
reported by the driver; CPU: ``MemAvailable`` of ``/proc/meminfo``). The chosen batch size, the
budget and the estimate are recorded in the results' attributes. The result does not depend on
the batch size (:mod:`.measurement`), so the choice changes time and memory, never the numbers.
``bench/memory.py`` checks the estimate against the measured peak at the paper's sizes.
"""

from __future__ import annotations

import math
import os
from typing import Any, TypedDict

import torch
from torch import Tensor, nn

from ..validation import check_positive_int

__all__ = ["DEFAULT_FRACTION", "LIVE_TENSORS", "MEMORY_FRACTION_ENV", "MemoryPlan", "auto_batch_size", "available_memory",
           "bytes_per_image", "format_bytes", "memory_fraction"]

#: Fraction of the available memory a measurement with ``batch_size="auto"`` plans to use.
DEFAULT_FRACTION = 0.5

#: Live tensors of the largest module's input+output size allowed for beside the probed ones.
LIVE_TENSORS = 4

#: The environment variable that replaces :data:`DEFAULT_FRACTION` (a number in (0, 1]); set it
#: when several processes measure on one device at once (``diffeosens sweep --jobs N`` and a local
#: Dask cluster set it to ``DEFAULT_FRACTION / N`` for their cells).
MEMORY_FRACTION_ENV = "DIFFEOSENS_MEMORY_FRACTION"


def memory_fraction() -> float:
    """The fraction of the available memory that ``batch_size="auto"`` plans to use:
    ``$DIFFEOSENS_MEMORY_FRACTION`` if set, else :data:`DEFAULT_FRACTION`.

    Raises:
        ValueError: the environment variable is not a number in (0, 1].
    """
    raw = os.environ.get(MEMORY_FRACTION_ENV, "").strip()
    if not raw:
        return DEFAULT_FRACTION
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise ValueError(f"{MEMORY_FRACTION_ENV} must be a number in (0, 1] (the fraction of the device's available memory a "
                         f"measurement may plan to use), got {raw!r}")
    return value


def available_memory(device: torch.device | str) -> int:
    """Bytes of memory available for new tensors on ``device`` (CUDA: free memory; CPU: ``MemAvailable``)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    if dev.type == "mps":  # no query for free memory: the recommended maximum working set
        return int(torch.mps.recommended_max_memory())
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def format_bytes(n: float) -> str:
    """``n`` bytes in B, KiB, MiB or GiB."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    return 0


def bytes_per_image(probe: Any, sample: Tensor) -> tuple[int, int, int]:
    """``(per_image, probed, largest_module)``: the estimate :math:`m_\\text{image}` of the module
    docstring, in bytes, from one forward of ``sample`` (a few images, already on the device and in
    the compute dtype) through ``probe`` (a :class:`~.capture.Probe`), with the per-image bytes of
    the probed representations and of the largest module's input+output."""
    n = sample.shape[0]
    probed = [0]
    largest = [0]

    def consume(i: int, value: Tensor) -> None:
        probed[0] += _tensor_bytes(value)

    def hook(_m: nn.Module, args: Any, out: Any) -> None:
        largest[0] = max(largest[0], _tensor_bytes(args) + _tensor_bytes(out))

    handles = [m.register_forward_hook(hook) for m in probe.module.modules() if not list(m.children())]
    try:
        probe.run(sample, consume)
    finally:
        for h in handles:
            h.remove()
    per_probed, per_largest = -(-probed[0] // n), -(-largest[0] // n)
    return 2 * per_probed + LIVE_TENSORS * per_largest, per_probed, per_largest


class MemoryPlan(TypedDict):
    """What :func:`auto_batch_size` decided (recorded in the results), in bytes but for the batch size."""

    batch_size: int
    budget_bytes: int
    bytes_per_image: int
    fixed_bytes: int
    estimated_peak_bytes: int


def auto_batch_size(probe: Any, sample: Tensor, P: int, *, budget: int | None = None, device: torch.device | str | None = None,
                    estimator: str = "mean", stored_copies: int = 3, n_groups: int = 20) -> MemoryPlan:
    """The largest batch size (at most ``P``) whose estimated memory fits ``budget`` bytes
    (default :func:`memory_fraction` of :func:`available_memory` of ``device``).

    With ``estimator="median"``, ``stored_copies`` float64 copies of every probed representation
    of the whole probe set are kept (the clean one and one change per perturbation kind, delta and
    draw): a fixed cost whatever the batch size. The streaming moments of the denominator keep one
    float64 mean vector per jackknife group (``n_groups``) for every probe point: another fixed cost.

    Raises:
        MemoryError: the budget does not hold one image, or the median estimator's stored
            representations alone exceed it (with what would fit).
    """
    dev = torch.device(device) if device is not None else sample.device
    if budget is None:
        budget = int(memory_fraction() * available_memory(dev))
    budget = check_positive_int(budget, "memory_budget (bytes)")
    per_image, per_probed, _ = bytes_per_image(probe, sample)
    # the median estimator keeps every clean representation and every perturbed change in float64 on the CPU
    # the prepared copy of the model (in the compute dtype), the per-group float64 means of the moments
    # (estimators.Moments) and, for the median, the stored representations
    groups = min(n_groups, P)
    model = sum(_tensor_bytes(t) for t in (*probe.module.parameters(), *probe.module.buffers()))
    means = groups * per_probed * 8 // sample.element_size()
    stored = P * per_probed * 8 // sample.element_size() * stored_copies if estimator == "median" else 0
    fixed = model + means + stored
    if fixed >= budget:
        parts = (f"the model {format_bytes(model)} (in {sample.dtype}), the float64 means of {groups} jackknife groups at "
                 f"every probe point {format_bytes(means)}" + (f", the median estimator's stored representations of P = {P} images "
                                                               f"{format_bytes(stored)}" if stored else ""))
        hints = ["raise memory_budget", "probe fewer points (layers=...)", "use fewer jackknife groups (n_jackknife=...)"]
        if stored:
            hints.insert(1, "use estimator='mean' or fewer images")
        if sample.element_size() > 4:
            hints.append("use compute_dtype=torch.float32")
        raise MemoryError(f"the fixed costs of this measurement, {format_bytes(fixed)} ({parts}), exceed the memory budget of "
                          f"{format_bytes(budget)}; {', '.join(hints)}")
    batch = (budget - fixed) // per_image
    if batch < 1:
        raise MemoryError(f"one image needs about {format_bytes(per_image)} in this measurement, more than the memory budget of "
                          f"{format_bytes(budget - fixed)}; raise memory_budget or use compute_dtype=torch.float32")
    batch = int(min(P, batch))
    return MemoryPlan(batch_size=batch, budget_bytes=int(budget), bytes_per_image=int(per_image), fixed_bytes=int(fixed),
                      estimated_peak_bytes=int(fixed + batch * per_image))
