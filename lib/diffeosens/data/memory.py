r"""Fast in-memory data pipeline: the whole split on the device, batched augmentation (methods §6.1, §7.1).

:class:`InMemoryLoader` replaces ``torch.utils.data.DataLoader`` + per-image PIL transforms. The
raw images are moved to the device **once** (``uint8`` for CIFAR/MNIST, kept raw to save
memory); every mini-batch is then gathered, augmented, converted to ``dtype`` and normalised on
the device, with no Python loop over images.

Augmentation reproduces torchvision's ``RandomCrop(size, padding=p)`` followed by
``RandomHorizontalFlip()``, applied before ``ToTensor``/``Normalize``:

* the raw image is padded with raw zeros (black), so after normalisation the padded pixels are
  :math:`-\mu_c/s_c`, exactly as in the reference pipeline;
* each image gets its own crop offset :math:`(t, l) \in \{0,\dots,2p\}^2` (top-left corner in the
  padded image, uniform) and its own flip (probability 1/2); the crop comes first, then the
  flip.

Convention:
    * images: :math:`(N, C, H, W)`, ``uint8`` in 0–255 (scaled by 1/255 like ``ToTensor``), or
      floating point (taken as is, e.g. the two-points images).
    * batches: ``(x, y)`` with ``x`` :math:`(B, C, H, W)` in ``dtype`` on ``device`` and ``y``
      ``int64`` :math:`(B,)`.
    * randomness: one CPU ``torch.Generator`` draws the epoch permutation and the augmentation
      parameters of the whole epoch (one transfer per epoch); the corruption noise is drawn on
      the device by a generator seeded from it. Same ``seed`` → same batches, epoch after epoch.
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..validation import check_noise_norm, check_positive_int
from .corruption import corrupt

__all__ = [
    "BatchInfo",
    "EpochPlan",
    "InMemoryLoader",
    "augment_batch",
    "draw_augmentation",
    "eval_loader",
    "make_loaders",
]


class EpochPlan(NamedTuple):
    """Random draws of one epoch (CPU tensors).

    ``order``: ``int64 [n]`` positions into the loader's samples; ``offsets``: ``int64 [n, 2]``
    crop corners (top, left) in the padded image, or ``None`` without augmentation; ``flips``:
    ``bool [n]`` or ``None``. Row ``k`` of ``offsets``/``flips`` belongs to the ``k``-th sample of
    the epoch (``order[k]``).
    """

    order: Tensor
    offsets: Tensor | None
    flips: Tensor | None


class BatchInfo(NamedTuple):
    """Provenance of one batch: ``indices`` into the full image tensor ``int64 [B]``, ``offsets``
    ``int64 [B, 2]`` (top, left) and ``flips`` ``bool [B]`` (``None`` without augmentation)."""

    indices: Tensor
    offsets: Tensor | None
    flips: Tensor | None


def draw_augmentation(
    n: int, *, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draw crop offsets and flips for ``n`` images, as ``RandomCrop(padding) + RandomHorizontalFlip()``.

    Args:
        n: Number of images.
        padding: Zero padding :math:`p` in pixels; offsets are uniform in :math:`\\{0,\\dots,2p\\}`.
        flip: Draw flips with probability 1/2 (else all ``False``).
        generator: CPU random source (``None``: torch's global RNG).

    Returns:
        ``offsets`` ``int64 [n, 2]`` (top, left) and ``flips`` ``bool [n]``, on the CPU. The
        offsets are drawn first, then the flips.

    >>> off, fl = draw_augmentation(5, generator=torch.Generator().manual_seed(0))
    >>> off.shape, fl.shape, bool(((off >= 0) & (off <= 8)).all())
    (torch.Size([5, 2]), torch.Size([5]), True)
    """
    n = check_positive_int(n, "n", minimum=0)
    padding = check_positive_int(padding, "padding", minimum=0)
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    if flip:
        flips = torch.rand(n, generator=generator) < 0.5
    else:
        flips = torch.zeros(n, dtype=torch.bool)
    return offsets, flips


def augment_batch(images: Tensor, offsets: Tensor, flips: Tensor, *, padding: int = 4) -> Tensor:
    r"""Zero-pad, crop each image at its own offset, then flip it horizontally where asked.

    Equivalent, image by image, to ``RandomCrop(H, padding)`` then ``RandomHorizontalFlip`` with
    the given parameters, done for the whole batch with one gather:

    .. math:: y_{b,c,i,j} = \tilde x_{b,c,\,t_b+i,\,l_b+j'},\qquad
        j' = \begin{cases} W-1-j & \text{flip}_b \\ j & \text{otherwise}\end{cases}

    where :math:`\tilde x` is ``images`` padded with :math:`p` zeros on every side.

    Args:
        images: Raw images :math:`(B, C, H, W)` (any dtype; padding is the value 0).
        offsets: ``int [B, 2]`` crop corners (top, left) in :math:`\{0,\dots,2p\}`.
        flips: ``bool [B]``.
        padding: :math:`p` in pixels.

    Returns:
        :math:`(B, C, H, W)`, same dtype and device as ``images``.

    >>> x = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4)
    >>> augment_batch(x, torch.tensor([[1, 1]]), torch.tensor([True]), padding=1)[0, 0]
    tensor([[ 3,  2,  1,  0],
            [ 7,  6,  5,  4],
            [11, 10,  9,  8],
            [15, 14, 13, 12]], dtype=torch.uint8)
    """
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    b, c, h, w = images.shape
    padding = check_positive_int(padding, "padding", minimum=0)
    if offsets.shape != (b, 2) or flips.shape != (b,):
        raise ValueError(f"offsets must have shape ({b}, 2) and flips ({b},); got {tuple(offsets.shape)} and {tuple(flips.shape)}")
    dev = images.device
    offsets = offsets.to(dev, torch.long)
    flips = flips.to(dev, torch.bool)
    if b and (int(offsets.min()) < 0 or int(offsets.max()) > 2 * padding):
        raise ValueError(f"offsets must lie in [0, 2*padding] = [0, {2 * padding}], got [{int(offsets.min())}, {int(offsets.max())}]")
    return _crop_flip(images, offsets, flips, padding)


def _crop_flip(images: Tensor, offsets: Tensor, flips: Tensor, padding: int) -> Tensor:
    """:func:`augment_batch` without checks (no host-device synchronisation)."""
    b, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    rows = offsets[:, :1] + torch.arange(h, device=dev)  # [B, H]
    cols = torch.arange(w, device=dev).expand(b, w)
    cols = torch.where(flips[:, None], cols.flip(1), cols) + offsets[:, 1:]  # [B, W]
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def _as_device(device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


class InMemoryLoader:
    r"""Shuffled mini-batches of a whole split kept on ``device``, with batched augmentation.

    Args:
        images: :math:`(N, C, H, W)`, ``uint8`` (raw 0–255) or floating point; 1D signals
            :math:`(N, C, L)` are accepted too (no augmentation).
        labels: ``int [N]`` class indices (or any per-sample tensor, e.g. ±1 signs).
        batch_size: Images per batch.
        shuffle: New random order every epoch.
        drop_last: Drop the last incomplete batch.
        augment: Random crop (zero padding ``padding``) + horizontal flip, one independent draw
            per image (methods §6.1).
        padding: Crop padding :math:`p` in pixels.
        flip: Include the horizontal flip in the augmentation.
        mean, std: Per-channel ``Normalize`` constants applied after scaling (``None``: no
            normalisation). ``uint8`` images are first divided by 255.
        corruption: Expected L2 norm of Gaussian corruption added after normalisation to every
            batch, a fresh draw each time (methods §6.2); 0 for none.
        subset: ``None`` (all), an int ``n`` (the first ``n`` images, or ``n`` random ones when
            ``subset_seed`` is given) or a 1D tensor/sequence of indices.
        subset_seed: Seed of the random subset.
        seed: Seed of the loader's generator (order, augmentation, corruption). ``None`` draws
            one from torch's global RNG (so ``torch.manual_seed`` makes it reproducible).
        generator: A CPU generator to use instead of ``seed``.
        device: Where the data lives and batches are produced (default CPU).
        dtype: Floating dtype of the batches.
        channels_last: Return batches in ``torch.channels_last`` memory format.

    ``len(loader)`` is the number of batches per epoch; ``loader.num_samples`` the number of
    images. Iterating yields ``(x, y)``; :meth:`batches` can also yield :class:`BatchInfo`.

    >>> x = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    >>> y = torch.arange(10)
    >>> loader = InMemoryLoader(x, y, batch_size=4, augment=True, mean=(0.5,) * 3, std=(0.25,) * 3, seed=0)
    >>> len(loader), [tuple(xb.shape) for xb, _ in loader]
    (3, [(4, 3, 32, 32), (4, 3, 32, 32), (2, 3, 32, 32)])
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int = 128,
        shuffle: bool = True,
        drop_last: bool = False,
        augment: bool = False,
        padding: int = 4,
        flip: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        corruption: float = 0.0,
        subset: int | Tensor | Sequence[int] | None = None,
        subset_seed: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        if not isinstance(images, Tensor) or images.ndim not in (3, 4):
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be a tensor of shape (N, C, H, W) (or (N, C, L) for 1D signals), got {shape}")
        if images.ndim == 3 and augment:
            raise ValueError("augment=True needs 2D images (N, C, H, W); 1D signals (N, C, L) cannot be cropped/flipped")
        if images.dtype != torch.uint8 and not torch.is_floating_point(images):
            raise TypeError(f"images must be uint8 (raw 0-255) or floating point, got {images.dtype}")
        if not isinstance(labels, Tensor) or labels.ndim < 1 or labels.shape[0] != images.shape[0]:
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"labels must be a tensor with {images.shape[0]} rows (one per image), got {got}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype (torch.float32, float64, ...), got {dtype}")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.padding = check_positive_int(padding, "padding", minimum=0)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.augment = bool(augment)
        self.flip = bool(flip)
        self.corruption = check_noise_norm(corruption, "corruption")
        self.device = _as_device(device)
        self.dtype = dtype
        self.channels_last = bool(channels_last)
        n_all, c = images.shape[0], images.shape[1]

        self._mean = self._std = None
        if (mean is None) != (std is None):
            raise ValueError("mean and std must be given together (or both None for no normalisation)")
        if mean is not None:
            m = torch.as_tensor(mean, dtype=torch.float64).flatten()
            s = torch.as_tensor(std, dtype=torch.float64).flatten()
            if m.numel() not in (1, c) or s.numel() not in (1, c):
                raise ValueError(f"mean and std must have 1 or C={c} entries, got {m.numel()} and {s.numel()}")
            if bool((s <= 0).any()):
                raise ValueError(f"std must be > 0, got {s.tolist()}")
            shape = (1, -1) + (1,) * (images.ndim - 2)
            self._mean = m.to(self.device, dtype).reshape(shape)
            self._std = s.to(self.device, dtype).reshape(shape)

        self.indices = self._subset_indices(n_all, subset, subset_seed).to(self.device)
        if generator is not None:
            if generator.device.type != "cpu":
                raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
            self._gen = generator
        else:
            if seed is None:
                seed = int(torch.randint(0, 2**62, (1,)))
            self._gen = torch.Generator().manual_seed(int(seed))
        noise_seed = int(torch.randint(0, 2**62, (1,), generator=self._gen))
        self._noise_gen = torch.Generator(device=self.device).manual_seed(noise_seed)

        self._images = images.to(self.device)  # moved once, kept raw
        self._labels = labels.to(self.device)

    @staticmethod
    def _subset_indices(n_all: int, subset: int | Tensor | Sequence[int] | None, subset_seed: int | None) -> Tensor:
        if subset is None:
            return torch.arange(n_all)
        if isinstance(subset, int) and not isinstance(subset, bool):
            if not 1 <= subset <= n_all:
                raise ValueError(f"subset must be an int in [1, {n_all}] (number of images), got {subset}")
            if subset_seed is None:
                return torch.arange(subset)
            g = torch.Generator().manual_seed(int(subset_seed))
            return torch.randperm(n_all, generator=g)[:subset]
        idx = torch.as_tensor(subset).flatten().long().cpu()
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= n_all:
            raise ValueError(f"subset indices must be non-empty and lie in [0, {n_all - 1}]")
        return idx

    @property
    def num_samples(self) -> int:
        """Number of images the loader draws from (after ``subset``)."""
        return int(self.indices.numel())

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    def state_dict(self) -> dict[str, Tensor]:
        """The random state (order/augmentation and corruption generators), for resuming."""
        return {"generator": self._gen.get_state(), "noise_generator": self._noise_gen.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a state from :meth:`state_dict`: the next epoch repeats the saved one's draws."""
        self._gen.set_state(state["generator"])
        self._noise_gen.set_state(state["noise_generator"])

    def plan_epoch(self) -> EpochPlan:
        """Draw the next epoch's order and augmentation parameters (advances the generator).

        :meth:`batches` calls it once per epoch; calling it directly on a loader built with the
        same ``seed`` returns the draws that loader's next epoch uses.
        """
        n = self.num_samples
        order = torch.randperm(n, generator=self._gen) if self.shuffle else torch.arange(n)
        if self.augment:
            offsets, flips = draw_augmentation(n, padding=self.padding, flip=self.flip, generator=self._gen)
        else:
            offsets = flips = None
        return EpochPlan(order, offsets, flips)

    def _finish(self, raw: Tensor) -> Tensor:
        x = raw.to(self.dtype)
        if raw.dtype == torch.uint8:
            x = x.div_(255.0)
        if self._mean is not None:
            x = x.sub_(self._mean).div_(self._std)
        if self.corruption:
            x = corrupt(x, self.corruption, generator=self._noise_gen)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def batches(self, *, with_info: bool = False) -> Iterator[tuple[Tensor, Tensor] | tuple[Tensor, Tensor, BatchInfo]]:
        """One epoch of ``(x, y)`` batches, or ``(x, y, info)`` with ``with_info=True``.

        ``info`` is a :class:`BatchInfo` (CPU tensors): the indices into the full image tensor
        and the crop offsets and flips used for each image of the batch.
        """
        plan = self.plan_epoch()
        order_dev = plan.order.to(self.device)
        if plan.offsets is not None:
            offsets_dev = plan.offsets.to(self.device)
            flips_dev = plan.flips.to(self.device)
        n, b = self.num_samples, self.batch_size
        stop = (n // b) * b if self.drop_last else n
        for start in range(0, stop, b):
            sl = slice(start, min(start + b, stop))
            idx = self.indices[order_dev[sl]]
            raw = self._images[idx]
            if plan.offsets is not None:
                raw = _crop_flip(raw, offsets_dev[sl], flips_dev[sl], self.padding)
            x, y = self._finish(raw), self._labels[idx]
            if with_info:
                info = BatchInfo(
                    idx.cpu(),
                    None if plan.offsets is None else plan.offsets[sl],
                    None if plan.flips is None else plan.flips[sl],
                )
                yield x, y, info
            else:
                yield x, y

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.batches()  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_samples={self.num_samples}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"augment={self.augment}, corruption={self.corruption}, device={self.device}, dtype={self.dtype})"
        )

    @classmethod
    def from_dataset(
        cls, name: str, *, train: bool, root: str | None = None, normalize: bool = True, **kwargs
    ) -> "InMemoryLoader":
        """Loader for a real dataset: :func:`~diffeosens.data.load_tensors` + the paper's normalisation.

        Args:
            name: ``"cifar10"``, ``"mnist"`` or ``"fashionmnist"``.
            train: Which split.
            root: Where to look first (see :func:`~diffeosens.data.find_root`).
            normalize: Apply :data:`~diffeosens.data.NORMALIZATION` (``mean``/``std`` kwargs win).
            **kwargs: Any :class:`InMemoryLoader` option.

        >>> loader = InMemoryLoader.from_dataset("cifar10", train=False, batch_size=100)  # doctest: +SKIP
        >>> len(loader)  # doctest: +SKIP
        100
        """
        from .vision import NORMALIZATION, canonical_name, load_tensors

        key = canonical_name(name)
        images, labels = load_tensors(key, train=train, root=root)
        norm = NORMALIZATION[key]
        if normalize and norm is not None and "mean" not in kwargs and "std" not in kwargs:
            kwargs["mean"], kwargs["std"] = norm
        return cls(images, labels, **kwargs)


def eval_loader(images: Tensor, labels: Tensor, *, batch_size: int = 100, **kwargs) -> InMemoryLoader:
    """An evaluation loader: fixed order, no augmentation, no dropped batch.

    Corruption (``corruption=``) is still allowed and redrawn at every pass, as in the
    reference's test transform (methods §6.2). Other keywords as in :class:`InMemoryLoader`.

    >>> loader = eval_loader(torch.zeros(5, 1, 4, 4), torch.arange(5), batch_size=2)
    >>> [y.tolist() for _, y in loader]
    [[0, 1], [2, 3], [4]]
    """
    for bad in ("shuffle", "augment", "drop_last"):
        if kwargs.get(bad):
            raise ValueError(f"eval_loader does not take {bad}=True; build an InMemoryLoader instead")
        kwargs.pop(bad, None)
    return InMemoryLoader(images, labels, batch_size=batch_size, shuffle=False, augment=False, drop_last=False, **kwargs)


def make_loaders(
    name: str,
    *,
    root: str | None = None,
    batch_size: int = 128,
    test_batch_size: int = 100,
    augment: bool | None = None,
    corruption: float = 0.0,
    subset: int | None = None,
    subset_seed: int | None = None,
    test_subset: int | None = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> tuple[InMemoryLoader, InMemoryLoader]:
    """Train and test loaders of the paper's image pipeline (methods §6.1–6.2, §7.1).

    Train: shuffled, crop + flip (``augment`` defaults to ``True`` for CIFAR-10, ``False``
    otherwise), batch 128. Test: fixed order, batch 100. Both normalised with
    :data:`~diffeosens.data.NORMALIZATION` and corrupted at level ``corruption`` (fresh draws).
    ``subset``/``subset_seed`` restrict the training set (``ptr``), ``test_subset`` keeps the first
    images of the test set; ``seed`` drives both loaders (the test loader uses ``seed + 1`` for
    its corruption noise).

    >>> train, test = make_loaders("cifar10", corruption=10.0, seed=0)  # doctest: +SKIP
    >>> len(train), len(test)  # doctest: +SKIP
    (391, 100)
    """
    from .vision import canonical_name

    key = canonical_name(name)
    if augment is None:
        augment = key == "cifar10"
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)))
    common = dict(root=root, corruption=corruption, device=device, dtype=dtype, channels_last=channels_last)
    train = InMemoryLoader.from_dataset(
        key, train=True, batch_size=batch_size, augment=augment, subset=subset, subset_seed=subset_seed, seed=seed, **common
    )
    test = InMemoryLoader.from_dataset(
        key, train=False, batch_size=test_batch_size, shuffle=False, subset=test_subset, seed=seed + 1, **common
    )
    return train, test
