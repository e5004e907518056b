r"""Disentangling spatial from channel pooling: channel shuffling and one-channel networks (methods §8.1–8.2).

* :func:`shuffle_channels` — the disentangling tool of the paper (methods §8.1): every conv filter
  bank :math:`w^k \in \mathbb R^{H_k\times H_{k-1}\times F\times F}` gets one random permutation
  :math:`\pi_k` of its input-channel axis, the same for all output channels,

  .. math::

      w^k_{c,c'} \leftarrow w^k_{c,\pi_k(c')} .

  Each :math:`F\times F` slice keeps its spatial profile (spatial pooling survives), while the
  learned pairing of input channels and filter slices is destroyed (channel pooling does not).
* :func:`mean_field_weights` — the one-channel network whose filter at each layer is the
  channel sum of the trained filters (the reference's ``--mf_weights 1``, methods §8.2).
* :func:`gaussian_weights` — every parameter redrawn as Gaussian noise with the empirical
  statistics of the tensor (``--mf_weights 2``, methods §8.2).
* :func:`channel_pooling_onset` — the quantitative form of claim C6 (methods §11): the ratio of
  the shuffled to the original sensitivity per layer and the depth from which it stays large.

All transforms return a modified **copy** and never touch the input model. Randomness comes from
a CPU :class:`torch.Generator` seeded with ``seed`` (methods §12, O11: fixed seeds instead of the
reference's unseeded global RNG; average several seeds for the figures), so the result does not
depend on the device of the model.
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import Any, NamedTuple

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from .validation import check_choice, check_seed
from .models.kinds import CONVOLUTIONS, NORMALIZATIONS
from .models.vgg import VGG

__all__ = [
    "MEAN_FIELD_MODELS",
    "ChannelPermutation",
    "channel_pooling_onset",
    "gaussian_weights",
    "mean_field_weights",
    "shuffle_channels",
]

#: Registered zoo names that :func:`mean_field_weights` supports (every :class:`~diffeosens.models.VGG`).
MEAN_FIELD_MODELS: tuple[str, ...] = (
    "VGG11", "VGG13", "VGG16", "VGG19", "VGG11bn", "VGG13bn", "VGG16bn", "VGG19bn",
)  # fmt: skip

SCOPES = ("input", "both")
CLASSIFIER_MAPS = ("per_class", "sum")


class ChannelPermutation(NamedTuple):
    """The permutations applied to one weight tensor by :func:`shuffle_channels`.

    ``input[c']`` is the input channel whose slices land at position ``c'`` (the new tensor is
    ``w[:, input]``); ``output`` is the same for the output axis, ``None`` unless ``scope="both"``.
    """

    input: Tensor
    output: Tensor | None


# ------------------------------------------------------------------------------------------------
# Channel shuffling (methods §8.1)
# ------------------------------------------------------------------------------------------------


def _conv_weight_names(model: nn.Module) -> set[str]:
    """Qualified names of the weights of 1-D conv modules (the only 3-D tensors that get shuffled)."""
    names = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Conv1d) and isinstance(getattr(mod, "weight", None), nn.Parameter):
            names.add(f"{mod_name}.weight" if mod_name else "weight")
    return names


def _shuffled_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    conv1d = _conv_weight_names(model)
    return [(n, p) for n, p in model.named_parameters() if p.ndim == 4 or (p.ndim == 3 and n in conv1d)]


def shuffle_channels(
    model: nn.Module,
    *,
    seed: int = 0,
    scope: str = "input",
    return_permutations: bool = False,
) -> nn.Module | tuple[nn.Module, dict[str, ChannelPermutation]]:
    r"""A copy of ``model`` with the input channels of every conv filter bank permuted (methods §8.1).

    For every weight :math:`w \in \mathbb R^{H_k\times H_{k-1}\times F\times F}` one permutation
    :math:`\pi_k` of :math:`\{0,\dots,H_{k-1}-1\}` is drawn and applied to all output channels,
    :math:`w_{c,c'} \leftarrow w_{c,\pi_k(c')}`, i.e. ``w_new = w[:, perm]``.

    Scope (as the reference, methods §12 O11): **every 4-D parameter tensor** — including the
    first conv (so the RGB axis is permuted too), ResNet 1×1 shortcuts and EfficientNet's 1×1
    expansion, projection and squeeze-excitation convs — plus the 3-D weights of ``nn.Conv1d``
    modules (1-D convs, e.g. ``ConvGAP1d``; an extension, the reference is 2-D only). Depthwise
    convs (input axis of size 1) are left unchanged; in a grouped conv the same permutation acts
    within every group. Biases, BatchNorm statistics and affine parameters, linear layers and
    buffers are untouched. Tied parameters are shuffled once.

    Draw order: a CPU :class:`torch.Generator` seeded with ``seed`` draws
    ``torch.randperm(H_{k-1})`` for each shuffled tensor in the order of
    ``model.named_parameters()`` (for ``scope="both"``, the output permutation of a tensor is
    drawn right after its input permutation). Depthwise tensors draw their trivial permutation of
    length 1 too, so the stream stays aligned with the parameter list.

    Args:
        model: any :class:`torch.nn.Module`; it is deep-copied, never modified.
        seed: seed of the permutations; several seeds should be averaged (methods §12 O11).
        scope: ``"input"`` (the paper's ``shuffle_channels=1``) or ``"both"``, which also permutes
            the output axis with an independent permutation per layer, ``w_new = w[σ][:, π]``
            (the reference's option 2; no figure uses it).
        return_permutations: also return ``{parameter name: ChannelPermutation}``.

    Returns:
        The shuffled copy (same device, dtype and train/eval mode), and the permutations if asked.

    >>> from diffeosens import models
    >>> net = models.build("VGG11", width_factor=0.125)
    >>> shuf, perms = shuffle_channels(net, seed=1, return_permutations=True)
    >>> perms["features.0.weight"].input.shape, shuf(torch.zeros(2, 3, 32, 32)).shape
    (torch.Size([3]), torch.Size([2, 10]))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_choice(scope, SCOPES, "scope")
    seed = check_seed(seed)
    shuffled = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    perms: dict[str, ChannelPermutation] = {}
    with torch.no_grad():
        for name, param in _shuffled_parameters(shuffled):
            perm_in = torch.randperm(param.shape[1], generator=generator)
            perm_out = torch.randperm(param.shape[0], generator=generator) if scope == "both" else None
            new = param.index_select(1, perm_in.to(param.device))
            if perm_out is not None:
                new = new.index_select(0, perm_out.to(param.device))
            param.copy_(new)
            perms[name] = ChannelPermutation(perm_in, perm_out)
    return (shuffled, perms) if return_permutations else shuffled


# ------------------------------------------------------------------------------------------------
# Mean-field and Gaussian weights (methods §8.2)
# ------------------------------------------------------------------------------------------------


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def _one_channel_conv(conv: nn.Conv2d, *, first: bool) -> nn.Conv2d:
    if conv.groups != 1:
        raise ValueError(f"mean_field_weights needs ungrouped convolutions, got groups={conv.groups}")
    w = conv.weight.detach()
    new = nn.Conv2d(
        conv.in_channels if first else 1, 1, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode,
        device=w.device, dtype=w.dtype,
    )  # fmt: skip
    with torch.no_grad():
        new.weight.copy_(w.sum(0, keepdim=True) if first else w.sum((0, 1), keepdim=True))
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach().sum().reshape(1))
    return new


def _one_channel_bn(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    ref = next(iter(bn.buffers()), None) if bn.weight is None else bn.weight
    new = nn.BatchNorm2d(
        1, eps=bn.eps, momentum=bn.momentum, affine=bn.affine, track_running_stats=bn.track_running_stats,
        device=None if ref is None else ref.device, dtype=None if ref is None else ref.dtype,
    )  # fmt: skip
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight.detach().sum().reshape(1))
            new.bias.copy_(bn.bias.detach().sum().reshape(1))
        if bn.track_running_stats and bn.running_mean is not None:
            new.running_mean.copy_(bn.running_mean.mean().reshape(1))
            new.running_var.copy_(bn.running_var.mean().reshape(1))
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def _one_input_linear(linear: nn.Linear, *, classifier: str) -> nn.Linear:
    w = linear.weight.detach()
    out = linear.out_features if classifier == "per_class" else 1
    new = nn.Linear(1, out, bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        if classifier == "per_class":
            new.weight.copy_(w.sum(1, keepdim=True))
            if linear.bias is not None:
                new.bias.copy_(linear.bias.detach())
        else:
            new.weight.copy_(w.sum().reshape(1, 1))
            if linear.bias is not None:
                new.bias.copy_(linear.bias.detach().sum().reshape(1))
    return new


def mean_field_weights(model: nn.Module, *, classifier: str = "per_class") -> nn.Module:
    r"""The one-channel network whose filters are the channel sums of ``model``'s (methods §8.2).

    The reference's ``--mf_weights 1``: a copy of the architecture in which every hidden layer has
    **one** channel,

    * conv weights summed over output and input channels,
      :math:`\bar w^k = \sum_{c,c'} w^k_{c,c'} \in \mathbb R^{1\times1\times F\times F}`; for the
      first conv over output channels only, :math:`\sum_c w^1_{c,\cdot} \in \mathbb R^{1\times
      C\times F\times F}`, so the net still takes :math:`C`-channel images;
    * conv biases and BN affine parameters summed to one element, BN running mean and variance
      averaged over channels (``num_batches_tracked`` copied);
    * activations, pools, padding and the train/eval mode kept.

    It is pure spatial pooling with the trained spatial profile: the one-channel network cannot
    pool channels.

    **Classifier** (an open choice; the reference sums linear weights to :math:`1\times1`, i.e. a
    single output). ``classifier="per_class"`` (default) sums the weight of ``Linear(512 →
    classes)`` over its **input** axis only, :math:`\bar W_{j} = \sum_i W_{ji}`, keeping the
    per-class biases: the one-channel net still outputs ``num_classes`` logits, so its output
    node has the original meaning (argmax, accuracy), whereas the sum over classes is, for a
    softmax-trained net, the one direction of logit space that the loss ignores. For
    ``num_classes = 1`` (hinge loss) both maps coincide. ``classifier="sum"`` reproduces the
    reference exactly (weight summed to :math:`1\times1`, biases summed, one output).

    Supported models: the VGG family with or without BN (:data:`MEAN_FIELD_MODELS`, any
    ``width_factor``, ``in_channels`` or ``avgpool_identity``), where one channel flows through
    every layer and the flattened features have one entry. Other architectures raise
    :class:`ValueError` (ResNet's additions, AlexNet's and LeNet's flatten sizes and
    EfficientNet's depthwise and squeeze-excitation convs do not stay consistent with one channel).

    Args:
        model: a :class:`~diffeosens.models.VGG` (e.g. ``models.build("VGG11bn")``), trained or not;
            it is not modified.
        classifier: ``"per_class"`` or ``"sum"`` (see above).

    Returns:
        A :class:`~diffeosens.models.VGG` with one channel per hidden layer, on the same device
        and dtype.

    >>> from diffeosens import models
    >>> mf = mean_field_weights(models.build("VGG11bn"))
    >>> mf.features[0].weight.shape, mf(torch.zeros(2, 3, 32, 32)).shape
    (torch.Size([1, 3, 3, 3]), torch.Size([2, 10]))
    """
    check_choice(classifier, CLASSIFIER_MAPS, "classifier")
    if not isinstance(model, VGG):
        raise ValueError(
            f"mean_field_weights supports only the VGG family ({', '.join(MEAN_FIELD_MODELS)}), whose "
            f"shapes stay consistent with one channel per layer; got {type(model).__name__}"
        )
    mf = copy.deepcopy(model)
    first = True
    for name, module in list(mf.named_modules()):
        if isinstance(module, nn.Conv2d):
            new: nn.Module = _one_channel_conv(module, first=first)
            first = False
        elif isinstance(module, nn.BatchNorm2d):
            new = _one_channel_bn(module)
        elif isinstance(module, nn.Linear):
            new = _one_input_linear(module, classifier=classifier)
        elif isinstance(module, CONVOLUTIONS + NORMALIZATIONS):
            raise ValueError(f"mean_field_weights cannot map layer {name!r} ({type(module).__name__}) to one channel")
        else:
            continue
        new.train(module.training)
        _replace(mf, name, new)
    return mf


def gaussian_weights(model: nn.Module, *, seed: int = 0) -> nn.Module:
    r"""A copy of ``model`` with every parameter redrawn as Gaussian noise of matched statistics (methods §8.2).

    The reference's ``--mf_weights 2``. For a conv weight :math:`w \in \mathbb R^{H_k\times
    H_{k-1}\times F\times F}` the mean and standard deviation are taken **per spatial position**
    over both channel axes,

    .. math::

        w^\mathrm{new}_{c,c',i,j} = \mu_{ij} + \sigma_{ij}\, z_{c,c',i,j},\qquad
        \mu_{ij} = \langle w_{\cdot,\cdot,i,j}\rangle,\quad \sigma_{ij} = \mathrm{std}(w_{\cdot,\cdot,i,j}),
        \quad z \sim \mathcal N(0, 1),

    (likewise per position for 3-D and 5-D conv weights); every other parameter (biases, BN
    affine parameters, linear weights) uses one mean and std over all of its entries. The std is
    the unbiased one (``correction=1``; 0 for a single entry), so a constant tensor (e.g. BN
    :math:`\gamma = 1` at init) stays constant. Buffers (BN running statistics) are untouched.

    Draws come from a CPU :class:`torch.Generator` seeded with ``seed``, one standard-normal
    tensor per parameter in the order of ``model.named_parameters()``, in float64 then cast.

    >>> from diffeosens import models
    >>> net = gaussian_weights(models.build("LeNet"), seed=3)
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    seed = check_seed(seed)
    redrawn = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in redrawn.named_parameters():
            w = param.detach().double()
            dims: tuple[int, ...] = (0, 1) if w.ndim >= 3 else tuple(range(w.ndim))
            n = math.prod(w.shape[d] for d in dims)
            mean = w.mean(dim=dims, keepdim=True) if dims else w
            std = w.std(dim=dims, correction=1 if n > 1 else 0, keepdim=True) if dims else torch.zeros_like(w)
            z = torch.randn(param.shape, generator=generator, dtype=torch.float64).to(w.device)
            param.copy_((mean + std * z).to(param.dtype))
    return redrawn


# ------------------------------------------------------------------------------------------------
# Claim C6: where channel pooling sets in
# ------------------------------------------------------------------------------------------------


def _check_profile(x: Any, name: str) -> xr.DataArray:
    if not isinstance(x, xr.DataArray):
        raise TypeError(f"{name} must be an xarray.DataArray over 'layer', got {type(x).__name__}")
    if x.dims != ("layer",):
        raise ValueError(
            f"{name} must be 1-D over 'layer', got dims {x.dims}; select one curve first, "
            f"e.g. ds['D'].sel(seed=0)"
        )
    if "relative_depth" not in x.coords:
        raise ValueError(f"{name} needs a 'relative_depth' coordinate along 'layer' (as in diffeosens.sensitivity results)")
    return x


def channel_pooling_onset(
    original: xr.DataArray, shuffled: xr.DataArray, *, threshold: float = 2.0
) -> dict[str, Any]:
    r"""Where the shuffled net's sensitivity departs from the original's (claim C6, methods §11).

    With :math:`\rho_k = X_k^\mathrm{shuf} / X_k^\mathrm{orig}` (:math:`X = D` or :math:`R`) and
    the layers ordered by relative depth :math:`r_k`, the **onset** is

    .. math::

        r^\ast = \min\{\, r_k : \rho_j > \text{threshold for every } j \text{ with } r_j \ge r_k \,\},

    the first relative depth from which the ratio **stays** above ``threshold`` to the last
    layer (a transient excursion above it earlier does not count); NaN if the last layer is not
    above it. A NaN ratio counts as "not above". Claim C6 expects :math:`\rho_k \approx 1`
    (spatial pooling, which survives shuffling) in the first half and :math:`\rho_k \gg 1`
    (channel pooling, which does not) in the second, i.e. :math:`r^\ast \gtrsim 1/2`. The two
    halves are summarised by the mean natural log-ratio over the layers with :math:`r_k \le 1/2`
    (first half) and :math:`r_k > 1/2` (second half), non-finite log-ratios skipped.

    Args:
        original: :math:`D_k` (or :math:`R_k`) of the original net, a 1-D DataArray over ``layer``
            with a ``relative_depth`` coordinate (e.g. ``measure(...)["D"]``).
        shuffled: the same quantity for the channel-shuffled net (:func:`shuffle_channels`), on
            the same layers (already averaged over shuffles if several were drawn).
        threshold: ratio above which the layers count as channel-pooling dominated (> 0).

    Returns:
        A dict with ``ratio`` (DataArray over ``layer``), ``onset_relative_depth`` (float, NaN if
        none), ``onset_layer`` (the ``layer`` label at the onset, ``None`` if none),
        ``mean_log_ratio_first_half``, ``mean_log_ratio_second_half`` (floats) and ``threshold``.

    >>> import numpy as np, xarray as xr
    >>> rd = np.linspace(0, 1, 5)
    >>> d = xr.DataArray(np.ones(5), dims="layer", coords={"layer": np.arange(5), "relative_depth": ("layer", rd)})
    >>> out = channel_pooling_onset(d, d * np.array([1, 1, 1, 3, 9]))
    >>> float(out["onset_relative_depth"]), out["onset_layer"]
    (0.75, 3)
    """
    original = _check_profile(original, "original")
    shuffled = _check_profile(shuffled, "shuffled")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not threshold > 0:
        raise ValueError(f"threshold must be a positive number, got {threshold!r}")
    if original.sizes["layer"] != shuffled.sizes["layer"] or not np.array_equal(
        original["layer"].values, shuffled["layer"].values
    ):
        raise ValueError("original and shuffled must have the same 'layer' labels, in the same order")
    if not np.allclose(original["relative_depth"].values, shuffled["relative_depth"].values):
        raise ValueError("original and shuffled have different 'relative_depth' coordinates")
    ratio = (shuffled / original).rename("ratio")
    ratio.attrs = {"long_name": "shuffled / original", "units": "1"}
    order = np.argsort(ratio["relative_depth"].values, kind="stable")
    rd = ratio["relative_depth"].values[order]
    above = np.nan_to_num(ratio.values[order], nan=-np.inf) > threshold
    # the onset is the start of the trailing run of layers above the threshold
    onset_pos = len(above)
    while onset_pos > 0 and above[onset_pos - 1]:
        onset_pos -= 1
    onset = float(rd[onset_pos]) if onset_pos < len(above) else math.nan
    onset_layer = ratio["layer"].values[order][onset_pos].item() if onset_pos < len(above) else None
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log(ratio.values.astype(float))
    rel = ratio["relative_depth"].values

    def _mean(mask: np.ndarray) -> float:
        vals = log_ratio[mask]
        vals = vals[np.isfinite(vals)]
        return float(vals.mean()) if vals.size else math.nan

    return {
        "ratio": ratio,
        "onset_relative_depth": onset,
        "onset_layer": onset_layer,
        "mean_log_ratio_first_half": _mean(rel <= 0.5),
        "mean_log_ratio_second_half": _mean(rel > 0.5),
        "threshold": float(threshold),
    }
