r"""The constant-filter CNN, simulated exactly, and the closed-form depth laws (methods §5.10, §10).

The theory model of the paper is a CNN whose filters are all **homogeneous**: every layer sums
its input over windows of :math:`F` sites at stride :math:`s`, multiplies by one weight, adds a
bias and applies an activation (methods §5.10). It is pure spatial pooling, so it isolates how
pooling alone makes representations stable to small shifts (:math:`D_k\downarrow`) and, once the
noise has been rectified by a ReLU, sensitive to noise (:math:`G_k\uparrow`): the "noise piling
up" of methods §10.5 (claims C9–C10 of methods §11).

Convention:
    inputs: :math:`(P, N)` (1D) or :math:`(P, N, N)` (2D, any :math:`(P, H, W)` for the network);
    the "diffeomorphism" :math:`\tau` is a cyclic shift by one site along the last axis; the
    noise is matched per input, :math:`\|\eta\| = \|\tau x - x\|` (:math:`=\sqrt2` for one-hot
    inputs), then rectified, :math:`\tilde x = \mathrm{ReLU}(x + \eta)` (methods §3.2), or not,
    :math:`\tilde x = x + \eta` (methods §10.4).

Choices made here (methods §12 leaves them open; each is recorded in the results' ``attrs``):

* **Weight.** ``weight="average"`` is the homogeneous weight :math:`(s/F)^d` per filter entry
  (:math:`d` = 1 or 2 dimensions): :math:`s/F` in 1D as in the reference notebook. It preserves
  the total mass of a signal, and covers both derivations of methods §10.3: Case A
  (:math:`F=s=2`) has weight :math:`s/F = 1`, Case B (stride 1) has weight :math:`1/F`.
  ``weight="ones"`` is the notebook's "one filters" flag (weight 1); a float sets the weight
  directly. With zero bias and a positively homogeneous activation (ReLU, abs, linear), the
  ratios :math:`D_k, G_k, R_k` do not depend on a positive weight at all: only tanh sees it.
* **Padding.** Each layer pads :math:`\lfloor (F-1)/2\rfloor` sites on the left and
  :math:`\lceil (F-1)/2\rceil` on the right (for even :math:`F` the extra site goes on the right,
  as PyTorch's ``padding="same"``), then output :math:`j` sums input sites
  :math:`js - \lfloor (F-1)/2\rfloor, \dots, js - \lfloor (F-1)/2\rfloor + F - 1`. A layer
  maps :math:`n` sites to :math:`\lceil n/s\rceil`. With :math:`F=s=2` the windows are the
  disjoint cells :math:`\{2j, 2j+1\}` of methods §10.3 Case A. ``padding="zero"`` is the
  reference; ``padding="circular"`` wraps around, making the model exactly translation
  invariant when :math:`s^L` divides :math:`N` or :math:`s=1`.
* **Input set.** The one-hot inputs at ``positions="all"`` :math:`N` sites (methods §10.1), at
  the ``"central"`` sites whose response never reaches the zero padding (methods §10.6: a
  margin of :math:`\lceil (F-1)/2\rceil\sum_{i=0}^{L-1}s^i` sites on both sides, exact for
  stride 1, conservative otherwise), or at explicit flat site indices. By default
  :math:`N=\mathrm{RF}(F,s,L)+1` (methods §5.10); a custom :math:`N` must exceed the true
  receptive field of depth :math:`L`, :math:`1 + (F-1)\sum_{i=0}^{L-1}s^i`. (The reference's
  :math:`\mathrm{RF}(F,s,L) = F + (F-1)\sum_{i=1}^{L}s^i` is the receptive field of
  :math:`L+1` layers.) With :math:`F=s=2`, :math:`N` a multiple of :math:`2^L` tiles the
  sites into whole cells and makes Case A exact; the default :math:`2^{L+1}+1` does not.
* **Estimators** (methods §4): numerators are means over inputs of squared L2 changes over all
  units; the denominator is the mean over all :math:`P^2` ordered pairs, diagonal included,
  computed as :math:`2\sum_u\mathrm{Var}_{\rm pop}` (methods §4.4) and stored without a guard;
  :math:`D_k` and :math:`G_k` divide by :math:`\mathrm{deno}+10^{-10}`. These are the estimator core of
  :mod:`diffeosens.sensitivity.estimators`, so both modules define D, G and deno identically.
  ``num_G`` is averaged over ``n_noise`` independent noise draws (one per input per draw).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from .validation import check_choice, check_float_tensor, check_positive_int, check_seed
from .noise import matched_noise
from .provenance import provenance, to_attr
from .sensitivity.estimators import DENO_EPS, guarded_ratio, mean_sq_change, pair_mean_sq_distance
from .stats import FIT_BASES, ExponentFit, fit_exponent  # noqa: F401 - re-exported (theory.fit_exponent is stats.fit_exponent)

__all__ = [
    "ACTIVATIONS",
    "PADDINGS",
    "ExponentFit",
    "add_matched_noise",
    "central_positions",
    "constant_filter_cnn",
    "fit_exponent",
    "min_sites",
    "one_hot_inputs",
    "predict",
    "receptive_field",
    "shift_sites",
    "simulate_sensitivities",
]

ACTIVATIONS = ("relu", "tanh", "linear", "abs")
PADDINGS = ("zero", "circular")
WEIGHTS = ("average", "ones")
POSITIONS = ("all", "central")

#: Constant part of the rectified noise numerator, :math:`N\sigma^2(\tfrac12-\tfrac1{2\pi}) = 1-1/\pi`.
RECTIFIED_NOISE_VARIANCE = 1.0 - 1.0 / math.pi

#: Variables of :func:`simulate_sensitivities` and :func:`predict`: name -> (long name, units).
SCHEMA: dict[str, tuple[str, str]] = {
    "D": ("diffeomorphism (one-site shift) sensitivity D_k = num_D / deno", "1"),
    "G": ("noise sensitivity G_k = num_G / deno", "1"),
    "R": ("relative sensitivity R_k = D_k / G_k", "1"),
    "num_D": ("mean squared representation change under a one-site shift", "activation^2"),
    "num_G": ("mean squared representation change under matched noise", "activation^2"),
    "deno": ("mean squared distance between clean representations (all ordered pairs)", "activation^2"),
    "G_se": ("standard error of G_k over noise draws", "1"),
    "R_se": ("standard error of R_k over noise draws", "1"),
}

_ACT = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "linear": lambda t: t,
    "abs": torch.abs,
}


# ------------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------------


def _check_architecture(depth: Any, filter_size: Any, stride: Any) -> tuple[int, int, int]:
    return (
        check_positive_int(depth, "depth"),
        check_positive_int(filter_size, "filter_size"),
        check_positive_int(stride, "stride"),
    )


def receptive_field(filter_size: int, stride: int, depth: int) -> int:
    r"""The reference's receptive field :math:`\mathrm{RF}(F,s,L) = F + (F-1)\sum_{i=1}^{L}s^i` (methods §5.10).

    The default number of sites of the theory model is :math:`\mathrm{RF}+1`. This is the
    receptive field of :math:`L+1` layers, one more than the network has (see :func:`min_sites`).

    >>> receptive_field(3, 1, 32), receptive_field(2, 2, 5)
    (67, 64)
    """
    depth, filter_size, stride = _check_architecture(depth, filter_size, stride)
    return filter_size + (filter_size - 1) * sum(stride**i for i in range(1, depth + 1))


def min_sites(filter_size: int, stride: int, depth: int) -> int:
    r"""The smallest accepted :math:`N`: the true receptive field of depth :math:`L` plus one.

    .. math:: N_{\min} = 2 + (F-1)\sum_{i=0}^{L-1}s^i .

    With fewer sites, every input reaches the same units at layer :math:`L` and the denominator
    of methods §4.3 degenerates.

    >>> min_sites(3, 1, 32), min_sites(2, 2, 5)
    (66, 33)
    """
    depth, filter_size, stride = _check_architecture(depth, filter_size, stride)
    return 2 + (filter_size - 1) * sum(stride**i for i in range(depth))


def _margin(filter_size: int, stride: int, depth: int) -> int:
    return -(-(filter_size - 1) // 2) * sum(stride**i for i in range(depth))


def central_positions(N: int, *, depth: int, filter_size: int, stride: int) -> list[int]:
    r"""Sites whose one-hot response never reaches the zero padding (methods §10.6).

    A margin :math:`m=\lceil (F-1)/2\rceil\sum_{i=0}^{L-1}s^i` is left on both sides: the sites
    :math:`m,\dots,N-1-m`. For stride 1 this is exactly the condition that the support of the
    depth-:math:`L` response, :math:`[i - L\lceil\tfrac{F-1}2\rceil, i + L\lfloor\tfrac{F-1}2\rfloor]`,
    stays inside the signal; with strides it is conservative.

    >>> central_positions(10, depth=3, filter_size=3, stride=1)
    [3, 4, 5, 6]
    """
    depth, filter_size, stride = _check_architecture(depth, filter_size, stride)
    N = check_positive_int(N, "N")
    m = _margin(filter_size, stride, depth)
    if N - 2 * m < 2:
        raise ValueError(
            f"N={N} leaves {max(N - 2 * m, 0)} central position(s) for depth={depth}, filter_size={filter_size}, "
            f"stride={stride} (margin {m} on each side); N must be >= {2 * m + 2}"
        )
    return list(range(m, N - m))


# ------------------------------------------------------------------------------------------------
# Inputs and perturbations
# ------------------------------------------------------------------------------------------------


def one_hot_inputs(
    N: int,
    *,
    ndim: int = 1,
    positions: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""One-hot inputs of the theory model (methods §5.10, §10.1).

    Args:
        N: number of sites per axis.
        ndim: 1 for signals :math:`(P, N)`, 2 for images :math:`(P, N, N)`.
        positions: flat indices of the active sites (row-major, :math:`iN + j` in 2D); ``None``
            for all :math:`N^{d}` sites, i.e. the identity matrix in 1D.
        dtype, device: of the returned tensor.

    Returns:
        :math:`(P, N)` or :math:`(P, N, N)` with a single 1 per input.

    >>> one_hot_inputs(5).shape, one_hot_inputs(4, ndim=2, positions=[5, 6]).shape
    (torch.Size([5, 5]), torch.Size([2, 4, 4]))
    """
    N = check_positive_int(N, "N")
    check_choice(ndim, (1, 2), "ndim")
    n_flat = N**ndim
    if positions is None:
        idx = torch.arange(n_flat, device=device)
    else:
        idx = torch.as_tensor(list(positions), dtype=torch.long, device=device)
        if idx.ndim != 1 or idx.numel() == 0:
            raise ValueError(f"positions must be a non-empty sequence of site indices, got {positions!r}")
        if int(idx.min()) < 0 or int(idx.max()) >= n_flat:
            raise ValueError(f"positions must lie in [0, {n_flat - 1}] (N={N}, ndim={ndim}), got {positions!r}")
    x = torch.zeros(idx.numel(), n_flat, dtype=dtype, device=device)
    x[torch.arange(idx.numel(), device=device), idx] = 1.0
    return x.reshape(idx.numel(), *([N] * ndim))


def shift_sites(x: Tensor, *, shift: int = 1) -> Tensor:
    r"""The theory model's "diffeomorphism": a cyclic shift of every input along its last axis (methods §5.10).

    >>> shift_sites(torch.eye(3))
    tensor([[0., 1., 0.],
            [0., 0., 1.],
            [1., 0., 0.]])
    """
    check_float_tensor(x, "x")
    if isinstance(shift, bool) or not isinstance(shift, int):
        raise TypeError(f"shift must be an integer, got {shift!r}")
    return torch.roll(x, shifts=shift, dims=-1)


def add_matched_noise(
    x: Tensor, perturbed: Tensor, *, rectify: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    r"""Noisy inputs with noise matched per input to ``perturbed - x`` (methods §3.1, §3.2, §10.4).

    .. math:: \eta_n = \|\tau x_n - x_n\|\,\frac{\xi_n}{\|\xi_n\|},\qquad
        \tilde x_n = \mathrm{ReLU}(x_n + \eta_n)\ \ (\texttt{rectify=True}),\qquad
        \tilde x_n = x_n + \eta_n\ \ (\texttt{rectify=False}).

    The rectification acts on the noisy input (the theory notebook), not on the noise alone as
    in :func:`diffeosens.matched_noise` with ``rectify=True`` (the 1D experiments, methods §3.3).

    Args:
        x: clean inputs, one per row of the first axis (:math:`(P, N)` or :math:`(P, H, W)`).
        perturbed: the same inputs after the perturbation whose norm the noise matches.
        rectify: apply ReLU to :math:`x + \eta`.
        generator: source of randomness; the draw happens on the generator's device.

    >>> x = torch.eye(6, dtype=torch.float64)
    >>> noisy = add_matched_noise(x, shift_sites(x), rectify=False, generator=torch.Generator().manual_seed(0))
    >>> noisy.shape, bool(torch.allclose((noisy - x).norm(dim=1), torch.full((6,), 2**0.5, dtype=torch.float64)))
    (torch.Size([6, 6]), True)
    """
    check_float_tensor(x, "x")
    if not isinstance(rectify, bool):
        raise TypeError(f"rectify must be a bool, got {rectify!r}")
    eta = matched_noise(x, perturbed, generator=generator, sample_dims=max(x.ndim - 1, 1))
    noisy = x + eta
    return torch.relu(noisy) if rectify else noisy


# ------------------------------------------------------------------------------------------------
# The network
# ------------------------------------------------------------------------------------------------


def _resolve_weight(weight: str | float, filter_size: int, stride: int, ndim: int) -> float:
    if isinstance(weight, str):
        check_choice(weight, WEIGHTS, "weight")
        return (stride / filter_size) ** ndim if weight == "average" else 1.0
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise TypeError(f"weight must be 'average', 'ones' or a float, got {weight!r}")
    if not math.isfinite(weight) or weight == 0:
        raise ValueError(f"weight must be a finite non-zero float, 'average' or 'ones', got {weight!r}")
    return float(weight)


def _check_bias(bias: Any) -> float:
    if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
        raise ValueError(f"bias must be a finite float, got {bias!r}")
    return float(bias)


def _window_sum(x: Tensor, filter_size: int, stride: int, padding: str) -> Tensor:
    """Sums over windows of ``filter_size`` sites at ``stride`` along the last axis (padded, see module doc)."""
    n = x.shape[-1]
    left = (filter_size - 1) // 2
    right = filter_size - 1 - left
    if padding == "zero":
        xp = torch.nn.functional.pad(x, (left, right))
    else:
        idx = torch.arange(-left, n + right, device=x.device) % n
        xp = x.index_select(-1, idx)
    n_out = (n - 1) // stride + 1
    span = stride * (n_out - 1) + 1
    out = xp[..., 0:span:stride].clone()
    for i in range(1, filter_size):  # shift-and-add: faster than unfold().sum() for small F
        out += xp[..., i : i + span : stride]
    return out


def _layers(
    x: Tensor, *, depth: int, filter_size: int, stride: int, weight: float, bias: float, activation: str, padding: str
) -> Iterator[Tensor]:
    phi = _ACT[activation]
    h = x
    for _ in range(depth):
        h = _window_sum(h, filter_size, stride, padding)
        if h.ndim == 3:
            h = _window_sum(h.transpose(-1, -2), filter_size, stride, padding).transpose(-1, -2)
        h = h * weight
        if bias != 0.0:
            h = h + bias
        h = phi(h)
        yield h


def _check_options(activation: str, padding: str) -> None:
    check_choice(activation, ACTIVATIONS, "activation")
    check_choice(padding, PADDINGS, "padding")


def constant_filter_cnn(
    x: Tensor,
    *,
    depth: int,
    filter_size: int,
    stride: int,
    weight: str | float = "average",
    bias: float = 0.0,
    activation: str = "relu",
    padding: str = "zero",
) -> list[Tensor]:
    r"""The representations :math:`f_1(x),\dots,f_L(x)` of the constant-filter CNN (methods §5.10).

    Each layer pads, sums over windows of :math:`F` sites (:math:`F\times F` in 2D, separably) at
    stride :math:`s`, multiplies by the homogeneous weight :math:`w`, adds the bias :math:`b` and
    applies :math:`\phi`:

    .. math:: [f_k(x)]_j = \phi\Big(b + w\sum_{i=0}^{F-1}[f_{k-1}(x)]_{js - \lfloor (F-1)/2\rfloor + i}\Big),
        \qquad f_0(x) = x .

    Convention:
        x: :math:`(P, N)` (1D) or :math:`(P, H, W)` (2D); layer :math:`k` has
        :math:`\lceil N/s^k\rceil` sites per axis. Device and dtype follow ``x``.

    Args:
        x: inputs.
        depth: number of layers :math:`L\ge1`.
        filter_size: :math:`F\ge1`.
        stride: :math:`s\ge1`.
        weight: ``"average"`` (:math:`(s/F)^d`, mass-preserving; methods §5.10), ``"ones"`` (1) or
            a float. Case A of methods §10.3 (:math:`F=s=2`) has weight 1, Case B (stride 1)
            :math:`1/F`: both are ``"average"``.
        bias: :math:`b`.
        activation: ``"relu"``, ``"tanh"``, ``"linear"`` or ``"abs"``.
        padding: ``"zero"`` (the reference) or ``"circular"`` (see the module docstring for
            the left/right split with even :math:`F`).

    Returns:
        A list of ``depth`` tensors, :math:`(P, n_k)` or :math:`(P, h_k, w_k)`.

    >>> reps = constant_filter_cnn(torch.eye(8, dtype=torch.float64), depth=3, filter_size=2, stride=2)
    >>> [tuple(r.shape) for r in reps]
    [(8, 4), (8, 2), (8, 1)]
    """
    check_float_tensor(x, "x")
    if x.ndim not in (2, 3):
        raise ValueError(f"x must have shape (P, N) or (P, H, W), got {tuple(x.shape)}")
    depth, filter_size, stride = _check_architecture(depth, filter_size, stride)
    _check_options(activation, padding)
    w = _resolve_weight(weight, filter_size, stride, x.ndim - 1)
    b = _check_bias(bias)
    return list(
        _layers(x, depth=depth, filter_size=filter_size, stride=stride, weight=w, bias=b, activation=activation, padding=padding)
    )


# ------------------------------------------------------------------------------------------------
# Simulation
# ------------------------------------------------------------------------------------------------


def _resolve_positions(
    positions: str | Sequence[int], N: int, ndim: int, depth: int, filter_size: int, stride: int
) -> tuple[list[int] | None, str]:
    if isinstance(positions, str):
        check_choice(positions, POSITIONS, "positions")
        if positions == "all":
            return None, "all"
        central = central_positions(N, depth=depth, filter_size=filter_size, stride=stride)
        if ndim == 1:
            return central, "central"
        return [i * N + j for i in central for j in central], "central"
    return [int(p) for p in positions], "custom"


def simulate_sensitivities(
    *,
    depth: int,
    filter_size: int,
    stride: int,
    weight: str | float = "average",
    bias: float = 0.0,
    activation: str = "relu",
    padding: str = "zero",
    rectify: bool | None = None,
    N: int | None = None,
    ndim: int = 1,
    positions: str | Sequence[int] = "all",
    n_noise: int = 5,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> xr.Dataset:
    r"""Exact :math:`D_k`, :math:`G_k`, :math:`R_k` of the constant-filter CNN (methods §4, §5.10, §10.1).

    The probe set is one-hot inputs :math:`x_n`; :math:`\tau` shifts them cyclically by one site
    (along the last axis in 2D); the noise is matched per input and rectified or not (see
    :func:`add_matched_noise`). With :math:`a_n=f_k(x_n)`, :math:`b_n=f_k(\tau x_n)`,
    :math:`g_n=f_k(\tilde x_n)`:

    .. math::
        \mathrm{num}_D(k)=\frac1P\sum_n\|b_n-a_n\|^2,\quad
        \mathrm{num}_G(k)=\Big\langle\frac1P\sum_n\|g_n-a_n\|^2\Big\rangle_{\rm draws},\quad
        \mathrm{deno}(k)=\frac1{P^2}\sum_{n,m}\|a_n-a_m\|^2,

    :math:`D_k=\mathrm{num}_D/(\mathrm{deno}+10^{-10})`, :math:`G_k=\mathrm{num}_G/(\mathrm{deno}+10^{-10})`,
    :math:`R_k=\mathrm{num}_D/\mathrm{num}_G`: the estimators of :func:`diffeosens.sensitivity.measure`
    (:mod:`diffeosens.sensitivity.estimators`).

    Args:
        depth, filter_size, stride, weight, bias, activation, padding: the network, see
            :func:`constant_filter_cnn`.
        rectify: ReLU on the noisy input (methods §3.2). ``None`` pairs it with the activation
            as in methods §10.3–10.4: rectified for ``"relu"``, not for the others.
        N: sites per axis; ``None`` for :math:`\mathrm{RF}(F,s,L)+1` (:func:`receptive_field`).
            Must be at least :func:`min_sites`.
        ndim: 1 (signals) or 2 (:math:`N\times N` images, :math:`F\times F` windows).
        positions: ``"all"`` sites, the ``"central"`` ones (:func:`central_positions`; in 2D
            both coordinates central) or explicit flat site indices.
        n_noise: independent noise draws averaged in :math:`\mathrm{num}_G`.
        seed: seeds a CPU :class:`torch.Generator` from which the draws are taken in turn, so
            that results do not depend on ``device``.
        dtype, device: of the computation (float64 by default, as the reference).

    Returns:
        A Dataset over ``depth`` (:math:`k=1..L`) with ``D``, ``G``, ``R``, ``num_D``,
        ``num_G``, ``deno``, ``G_se`` and ``R_se`` (standard errors over the noise draws; NaN for
        a single draw), the coordinate ``n_units`` (units at layer :math:`k`), and every
        parameter in ``attrs`` (also as JSON in ``attrs["params"]``).

    >>> ds = simulate_sensitivities(depth=4, filter_size=2, stride=2, N=32, n_noise=2)
    >>> ds.sizes["depth"], ds["num_D"].values.round(4).tolist()
    (4, [1.0, 0.5, 0.25, 0.125])
    """
    t0 = time.perf_counter()
    depth, filter_size, stride = _check_architecture(depth, filter_size, stride)
    _check_options(activation, padding)
    check_choice(ndim, (1, 2), "ndim")
    w = _resolve_weight(weight, filter_size, stride, ndim)
    b = _check_bias(bias)
    if rectify is None:
        rectify = activation == "relu"
    if not isinstance(rectify, bool):
        raise TypeError(f"rectify must be a bool or None, got {rectify!r}")
    n_noise = check_positive_int(n_noise, "n_noise")
    seed = check_seed(seed)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    n_min = min_sites(filter_size, stride, depth)
    if N is None:
        N = receptive_field(filter_size, stride, depth) + 1
    N = check_positive_int(N, "N")
    if N < n_min:
        raise ValueError(
            f"N={N} is too small for the receptive field of depth={depth}, filter_size={filter_size}, stride={stride}: "
            f"N must be >= {n_min} (default: receptive_field + 1 = {receptive_field(filter_size, stride, depth) + 1})"
        )
    idx, pos_kind = _resolve_positions(positions, N, ndim, depth, filter_size, stride)
    dev = torch.device(device) if device is not None else torch.device("cpu")

    x = one_hot_inputs(N, ndim=ndim, positions=idx, dtype=dtype, device=dev)
    P = x.shape[0]
    tx = shift_sites(x)
    gen = torch.Generator().manual_seed(seed)
    noisy = [add_matched_noise(x, tx, rectify=rectify, generator=gen) for _ in range(n_noise)]
    batch = torch.cat([x, tx, *noisy], dim=0)  # every input is processed independently

    num_D, deno, units = [], [], []
    num_G = np.zeros((n_noise, depth))
    net = dict(depth=depth, filter_size=filter_size, stride=stride, weight=w, bias=b, activation=activation, padding=padding)
    for k, h in enumerate(_layers(batch, **net)):
        a = h[:P]
        num_D.append(mean_sq_change(h[P : 2 * P], a))
        deno.append(pair_mean_sq_distance(a))
        units.append(a[0].numel())
        for r in range(n_noise):
            num_G[r, k] = mean_sq_change(h[(2 + r) * P : (3 + r) * P], a)

    num_D_a, deno_a = np.asarray(num_D), np.asarray(deno)
    G_draws = guarded_ratio(num_G, deno_a)
    R_draws = num_D_a / num_G
    se = (lambda v: v.std(0, ddof=1) / math.sqrt(n_noise)) if n_noise > 1 else (lambda v: np.full(depth, np.nan))
    values = {
        "D": guarded_ratio(num_D_a, deno_a),
        "G": guarded_ratio(num_G.mean(0), deno_a),
        "R": num_D_a / num_G.mean(0),
        "num_D": num_D_a,
        "num_G": num_G.mean(0),
        "deno": deno_a,
        "G_se": se(G_draws),
        "R_se": se(R_draws),
    }
    params: dict[str, Any] = dict(
        depth=depth, filter_size=filter_size, stride=stride, weight=weight, weight_value=w, bias=b,
        activation=activation, padding=padding, rectify=rectify, N=N, ndim=ndim, positions=pos_kind,
        P=P, n_noise=n_noise, seed=seed, dtype=str(dtype).replace("torch.", ""),
    )
    if pos_kind == "custom":
        params["position_list"] = idx
    attrs = {k: to_attr(v) for k, v in params.items() if k != "position_list"}
    attrs.update(
        model="constant-filter CNN (methods §5.10)",
        perturbation="cyclic shift by one site along the last axis",
        noise="matched per input, " + ("ReLU(x + eta) (methods §3.2)" if rectify else "x + eta (methods §10.4)"),
        receptive_field=receptive_field(filter_size, stride, depth),
        deno_eps=DENO_EPS,
        params=json.dumps(params, sort_keys=True),
        provenance=to_attr(provenance(dev, time.perf_counter() - t0)),
    )
    return _to_dataset(np.arange(1, depth + 1), values, attrs, n_units=np.asarray(units, dtype=np.int64))


def _to_dataset(k: np.ndarray, values: dict[str, np.ndarray], attrs: dict[str, Any], n_units: np.ndarray | None = None) -> xr.Dataset:
    data_vars = {}
    for name, v in values.items():
        long_name, units = SCHEMA[name]
        data_vars[name] = ("depth", np.asarray(v, dtype=np.float64), {"long_name": long_name, "units": units})
    coords: dict[str, Any] = {"depth": ("depth", k.astype(np.int64), {"long_name": "layer index k", "units": "1"})}
    if n_units is not None:
        coords["n_units"] = ("depth", n_units, {"long_name": "units (sites) at layer k", "units": "1"})
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


# ------------------------------------------------------------------------------------------------
# Closed forms
# ------------------------------------------------------------------------------------------------


def _check_depths(depth: Any) -> np.ndarray:
    k = np.atleast_1d(np.asarray(depth))
    if k.ndim != 1 or k.size == 0 or not np.issubdtype(k.dtype, np.number) or np.any(k != np.round(k)) or np.any(k < 1):
        raise ValueError(f"depth must be integers >= 1 (a scalar or a 1D array), got {depth!r}")
    return k.astype(np.int64)


def predict(
    depth: int | Sequence[int] | np.ndarray,
    *,
    filter_size: int,
    stride: int,
    activation: str = "relu",
    N: int | None = None,
    subleading: bool = True,
) -> xr.Dataset:
    r"""Closed-form depth laws of the constant-filter CNN (methods §10.3–10.4).

    Setup: one-hot inputs on :math:`N` sites, one-site shifts, matched noise
    :math:`\|\eta\|^2=2`, per-site variance :math:`\sigma^2=2/N`; rectified noise has mean
    :math:`\mu=\sigma/\sqrt{2\pi}` and variance :math:`\sigma^2(\tfrac12-\tfrac1{2\pi})`, so
    :math:`N\mu^2=1/\pi` and the summed variance is :math:`1-1/\pi\approx0.68`. The ratios do
    not depend on the weight; the numerators and the denominator are given for
    ``weight="average"``.

    **Case A** (``activation="relu"``, :math:`F=s=2`, rectified noise):

    .. math::
        \mathrm{num}_D=2\cdot2^{-k},\quad \mathrm{deno}=2\,(1-2^k/N),\quad
        D_k=\frac{2^{-k}}{1-2^k/N},\quad
        \mathrm{num}_G\simeq\frac{2^k}{\pi}+\Big(1-\frac1\pi\Big),\quad
        G_k\simeq\frac{2^k}{2\pi}+0.34,\quad R_k\simeq2\pi\,4^{-k}.

    With a finite ``N`` (a multiple of :math:`2^k`), ``num_G`` also carries the exact
    :math:`O(2^k/N)` terms of independent noise entries,
    :math:`[2^k-(2^{k+1}-1)/N]/\pi + (1-\tfrac1\pi)(N-1)/N + 2/N`.

    **Case B** (``activation="relu"``, :math:`s=1`, weight :math:`1/F`, rectified noise): the
    point response is about a Gaussian of width :math:`s_k=\sqrt{k(F^2-1)/12}` with
    :math:`\|f_k\|^2=(2\sqrt\pi s_k)^{-1}`:

    .. math::
        \mathrm{deno}\simeq\frac{1}{\sqrt\pi\,s_k},\quad
        \mathrm{num}_D\simeq\frac{1}{4\sqrt\pi\,s_k^3},\quad
        D_k\simeq\frac{3}{k(F^2-1)},\quad
        \mathrm{num}_G\simeq\frac1\pi+\Big(1-\frac1\pi\Big)\|f_k\|^2,\quad
        G_k\simeq\frac{s_k}{\sqrt\pi}+0.34,\quad R_k=\frac{D_k}{G_k}\propto k^{-3/2}.

    The constant :math:`\tfrac12(1-\tfrac1\pi)=0.34` in :math:`G_k` (the rectified noise's
    fluctuations, which decay like the signal) is derived here as for Case A; methods §10.3
    gives only the leading :math:`s_k/\sqrt\pi`. It lowers the log-log slope of :math:`G_k` over
    :math:`k=4\ldots32` from 0.5 to about 0.41, the value measured in methods §10.6.

    **Case C** (``activation="tanh"`` or ``"linear"``, :math:`F=s=2` or :math:`s=1`, unrectified
    noise; methods §10.4): the noise stays centred and only its variance propagates,
    :math:`\mathrm{num}_G=N\sigma^2\|f_k\|^2` (linear), so :math:`G_k\simeq1`; :math:`D_k` as in
    Case A or B and :math:`R_k\simeq D_k`. The numerators are given for ``"linear"`` only
    (NaN for tanh). For tanh this is the linear-regime prediction: :math:`\tanh` compresses
    the unit one-hot signal more than the small noise, so with weight 1 and :math:`F=s=2` the
    simulated :math:`G_k` sits at about 1.7–2.8 instead of 1, but it does not grow like
    :math:`2^k` as with ReLU.

    Args:
        depth: layer indices :math:`k\ge1` (scalar or array).
        filter_size, stride: :math:`F=s=2` or :math:`s=1` (:math:`F\ge2`).
        activation: ``"relu"`` (Cases A, B) or ``"tanh"``/``"linear"`` (Case C).
        N: number of sites, for the finite-size factors; ``None`` for :math:`N\to\infty`. For
            stride 1 they assume a ring (circular padding, all positions):
            :math:`\mathrm{deno}=2(\|f_k\|^2-1/N)`.
        subleading: keep the constant terms of :math:`\mathrm{num}_G` (above); ``False`` gives
            the bare power laws of methods §10.2 (:math:`G_k=2^k/2\pi` or :math:`s_k/\sqrt\pi`).

    Returns:
        A Dataset over ``depth`` with ``D``, ``G``, ``R``, ``num_D``, ``num_G``, ``deno``.

    >>> ds = predict([1, 2, 4], filter_size=2, stride=2)
    >>> ds["num_G"].values.round(2).tolist(), ds["D"].values.tolist()
    ([1.32, 1.95, 5.77], [0.5, 0.25, 0.0625])
    """
    k = _check_depths(depth).astype(np.float64)
    filter_size = check_positive_int(filter_size, "filter_size")
    stride = check_positive_int(stride, "stride")
    check_choice(activation, ("relu", "tanh", "linear"), "activation")
    if not isinstance(subleading, bool):
        raise TypeError(f"subleading must be a bool, got {subleading!r}")
    if filter_size == stride == 2:
        case = "A"
    elif stride == 1 and filter_size >= 2:
        case = "B"
    else:
        raise ValueError(
            f"closed forms exist for filter_size=stride=2 (Case A) or stride=1 with filter_size >= 2 (Case B) "
            f"(methods §10.3), got filter_size={filter_size}, stride={stride}"
        )
    if N is not None:
        N = check_positive_int(N, "N", minimum=2)
        top = 2.0**k.max() if case == "A" else None
        if case == "A" and N <= top:
            raise ValueError(f"N must exceed 2^k = {int(top)} for every requested depth (Case A), got N={N}")
    inv_N = 0.0 if N is None else 1.0 / N
    c = RECTIFIED_NOISE_VARIANCE if subleading else 0.0
    nan = np.full_like(k, np.nan)

    if case == "A":
        two_k = 2.0**k
        num_D = 2.0 / two_k
        deno = 2.0 * (1.0 - two_k * inv_N)
        if activation == "relu":
            if N is None or not subleading:
                num_G = two_k / math.pi + c
            else:
                num_G = (two_k - (2.0 * two_k - 1.0) * inv_N) / math.pi + c * (1.0 - inv_N) + 2.0 * inv_N
        else:
            num_G = np.full_like(k, 2.0)  # N sigma^2: each of the N/2^k units has variance 2^k sigma^2
    else:
        s_k = np.sqrt(k * (filter_size**2 - 1) / 12.0)
        norm2 = 1.0 / (2.0 * math.sqrt(math.pi) * s_k)  # ||f_k||^2
        num_D = 1.0 / (4.0 * math.sqrt(math.pi) * s_k**3)
        deno = 2.0 * (norm2 - inv_N)
        if np.any(deno <= 0):
            raise ValueError(f"N={N} is too small for a Gaussian point response at depth {int(k.max())}")
        if activation == "relu":
            num_G = 1.0 / math.pi + c * norm2
        else:
            num_G = 2.0 * norm2  # N sigma^2 ||f_k||^2

    D = num_D / deno
    G = num_G / deno
    R = num_D / num_G
    if activation == "tanh":
        num_D, num_G, deno = nan, nan, nan
    values = {"D": D, "G": G, "R": R, "num_D": num_D, "num_G": num_G, "deno": deno}
    case_name = case if activation == "relu" else "C"
    attrs = {
        "case": case_name,
        "filter_size": filter_size,
        "stride": stride,
        "activation": activation,
        "N": to_attr(N),
        "subleading": int(subleading),
        "source": "methods §10.3 (Cases A, B), §10.4 (Case C)",
    }
    return _to_dataset(k.astype(np.int64), values, attrs)


# ------------------------------------------------------------------------------------------------
# Fits
# ------------------------------------------------------------------------------------------------


# :class:`ExponentFit`, :func:`fit_exponent` and :data:`FIT_BASES` live in :mod:`diffeosens.stats` (one
# function for each statistic); they are imported above and re-exported from here.
