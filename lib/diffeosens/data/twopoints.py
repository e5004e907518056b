r"""The 2D scale-detection ("two-points") task and its local-translation perturbation (methods §6.3).

An input is a :math:`d \times d` one-channel image with two active pixels of value
:math:`d^2/2` (392 for :math:`d = 28`; the mean pixel value is 1) and zeros elsewhere. With
:math:`r` the distance between the two pixels, the label is

* *far*, class 0, hinge label :math:`y = -1`: :math:`r \ge \xi + \text{gap}/2`;
* *close*, class 1, hinge label :math:`y = +1`: :math:`r < \xi - \text{gap}/2`;
* otherwise the pair is discarded.

With the defaults :math:`d = 28`, :math:`\xi = 14`, gap = 2 (close :math:`r < 13`, far
:math:`r \ge 15`): 285,390 pairs, 135,397 far, 120,767 close, 29,226 discarded.

Reference quirks reproduced by default (methods §6.3, open choice O16):

* candidate pixels are the :math:`(i, j)` with :math:`i \ne j`, so **pixels on the diagonal never
  light up** (756 candidates for :math:`d = 28`); ``include_diagonal=True`` is the clean
  variant with all :math:`d^2` pixels;
* the local-translation perturbation (:func:`local_translations`) can be cancelled at the
  border, can land on the diagonal or on the other pixel, and does not re-check the label.

Convention:
    * images: :math:`(M, 1, d, d)`, float; pixel :math:`(i, j)` is row :math:`i`, column
      :math:`j`.
    * positions: ``int64 [M, 2, 2]``, ``positions[m, k] = (i, j)`` of active pixel ``k``.
    * distances in pixels; ``norm="l2"`` (default) or ``"linf"``; optional periodic wrap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..validation import check_choice, check_positive_int, warn_caller

__all__ = [
    "DISCARDED",
    "LocalTranslation",
    "Split",
    "TwoPointsData",
    "candidate_pixels",
    "local_translations",
    "pair_labels",
    "pair_positions",
    "render_pairs",
    "shuffled_classes",
    "twopoints_dataset",
    "two_nonzero",
]

#: Class index of a pair that falls in the gap (neither close nor far).
DISCARDED = -1
#: Seed of the dedicated generator that permutes each class before balancing (reference value).
SHUFFLE_SEED = 123456789

NORMS = ("l2", "linf")
LABELLINGS = ("distance", "quadrant")


@dataclass(frozen=True)
class Split:
    """One split of a synthetic task.

    Attributes:
        images: :math:`(n, 1, d, d)` (2D) or :math:`(n, 1, N)` (1D), float.
        labels: ``int64 [n]`` class indices (2D: 0 = far, 1 = close; 1D: 0 for :math:`y=-1`,
            1 for :math:`y=+1`).
        signs: ``int64 [n]`` hinge labels :math:`y = 2\\,\\text{label} - 1 \\in \\{-1, +1\\}`.
        positions: Active-pixel coordinates, ``int64 [n, 2, 2]`` (2D) or ``[n, 2]`` (1D).
        index: ``int64 [n]`` index of each input in the full enumeration of pairs.
    """

    images: Tensor
    labels: Tensor
    signs: Tensor
    positions: Tensor
    index: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class TwoPointsData:
    """Result of :func:`twopoints_dataset`.

    Attributes:
        train: ``ptr`` inputs drawn at random from the training pool.
        test: ``testsize`` inputs, ``testsize/2`` per class, classes interleaved (far, close, ...).
        n_per_class: Size of each class after balancing (120,767 with the defaults).
        pool_size: Size of the training pool, :math:`2\\,(\\text{n\\_per\\_class} - \\text{testsize}/2)`.
    """

    train: Split
    test: Split
    n_per_class: int
    pool_size: int


def _check_d(d: int) -> int:
    return check_positive_int(d, "d", minimum=2)


def _check_real(x: float, name: str, minimum: float = 0.0) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number >= {minimum}, got {x!r}") from None
    if not math.isfinite(v) or v < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {x!r}")
    return v


def candidate_pixels(d: int = 28, *, include_diagonal: bool = False) -> Tensor:
    """Pixels that may light up, in row-major order.

    Args:
        d: Image side in pixels.
        include_diagonal: ``False`` (reference quirk, default): only :math:`i \\ne j`, i.e.
            :math:`d(d-1)` pixels; ``True``: all :math:`d^2`.

    Returns:
        ``int64 [K, 2]`` rows ``(i, j)``.

    >>> candidate_pixels(28).shape, candidate_pixels(28, include_diagonal=True).shape
    (torch.Size([756, 2]), torch.Size([784, 2]))
    """
    d = _check_d(d)
    ii, jj = torch.meshgrid(torch.arange(d), torch.arange(d), indexing="ij")
    pix = torch.stack([ii.flatten(), jj.flatten()], dim=1)
    if not include_diagonal:
        pix = pix[pix[:, 0] != pix[:, 1]]
    return pix


def pair_positions(d: int = 28, *, include_diagonal: bool = False) -> Tensor:
    """Every unordered pair of distinct candidate pixels, in lexicographic order of candidates.

    Returns:
        ``int64 [M, 2, 2]`` with :math:`M = \\binom{K}{2}` (285,390 for :math:`d = 28`).

    >>> pair_positions(28).shape
    torch.Size([285390, 2, 2])
    """
    pix = candidate_pixels(d, include_diagonal=include_diagonal)
    a, b = torch.triu_indices(pix.shape[0], pix.shape[0], offset=1)
    return torch.stack([pix[a], pix[b]], dim=1)


def _label_positions(
    positions: Tensor, *, d: int, xi: float, gap: float, norm: str, labelling: str, periodic: bool
) -> Tensor:
    if labelling == "quadrant":
        half = d / 2
        q = (positions[..., 0] >= half).long() * 2 + (positions[..., 1] >= half).long()  # [M, 2]
        return (q[:, 0] == q[:, 1]).long()
    diff = (positions[:, 0] - positions[:, 1]).abs().double()  # [M, 2]
    if periodic:
        diff = torch.minimum(diff, d - diff)
    if norm == "l2":
        r = diff.pow(2).sum(1).sqrt()
    else:
        r = diff.max(1).values
    far_at, close_below = xi + gap / 2, xi - gap / 2
    labels = torch.full(r.shape, DISCARDED, dtype=torch.long)
    labels[r >= far_at] = 0
    labels[r < close_below] = 1
    return labels


def pair_labels(
    positions: Tensor,
    *,
    d: int = 28,
    xi: float = 14.0,
    gap: float = 2.0,
    norm: str = "l2",
    labelling: str = "distance",
    periodic: bool = False,
) -> Tensor:
    """Class of each pair: 0 = far, 1 = close, :data:`DISCARDED` (−1) in the gap.

    Args:
        positions: ``int [M, 2, 2]`` pixel coordinates (see :func:`pair_positions`).
        d: Image side (used by ``periodic`` and ``labelling="quadrant"``).
        xi: Scale :math:`\\xi` in pixels.
        gap: Width of the discarded band; far if :math:`r \\ge \\xi + \\text{gap}/2`, close if
            :math:`r < \\xi - \\text{gap}/2`.
        norm: ``"l2"`` (the paper) or ``"linf"`` (:math:`\\max(|\\Delta i|, |\\Delta j|)`).
        labelling: ``"distance"`` (the paper) or ``"quadrant"``: class 1 if both pixels lie in
            the same quadrant (rows and columns split at :math:`d/2`), else 0; nothing discarded.
        periodic: Wrap coordinate differences, :math:`\\min(|\\Delta|, d - |\\Delta|)`.

    Returns:
        ``int64 [M]``.

    >>> pos = torch.tensor([[[0, 1], [0, 13]], [[0, 1], [0, 14]], [[0, 1], [0, 16]]])
    >>> pair_labels(pos).tolist()
    [1, -1, 0]
    """
    d = _check_d(d)
    xi = _check_real(xi, "xi")
    gap = _check_real(gap, "gap")
    check_choice(norm, NORMS, name="norm")
    check_choice(labelling, LABELLINGS, name="labelling")
    if positions.ndim != 3 or positions.shape[1:] != (2, 2):
        raise ValueError(f"positions must have shape (M, 2, 2), got {tuple(positions.shape)}")
    return _label_positions(positions.cpu(), d=d, xi=xi, gap=gap, norm=norm, labelling=labelling, periodic=periodic)


def render_pairs(
    positions: Tensor, *, d: int = 28, value: float | None = None, dtype: torch.dtype = torch.float32, device: str | torch.device | None = None
) -> Tensor:
    """Images with the two given pixels set to ``value`` (default :math:`d^2/2`), zeros elsewhere.

    If both pixels coincide (possible after a perturbation), the image has one active pixel.

    Args:
        positions: ``int [M, 2, 2]``.
        d: Image side.
        value: Active-pixel value (default :math:`d^2/2 = 1/m`, :math:`m = 2/d^2`).
        dtype, device: Of the output.

    Returns:
        :math:`(M, 1, d, d)`.

    >>> render_pairs(torch.tensor([[[0, 1], [2, 3]]]), d=4)[0, 0]
    tensor([[0., 8., 0., 0.],
            [0., 0., 0., 0.],
            [0., 0., 0., 8.],
            [0., 0., 0., 0.]])
    """
    d = _check_d(d)
    if positions.ndim != 3 or positions.shape[1:] != (2, 2):
        raise ValueError(f"positions must have shape (M, 2, 2), got {tuple(positions.shape)}")
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= d):
        raise ValueError(f"positions must lie in [0, d-1] = [0, {d - 1}]")
    value = d * d / 2 if value is None else float(value)
    dev = torch.device(device) if device is not None else positions.device
    flat = (positions[..., 0] * d + positions[..., 1]).to(dev)  # [M, 2]
    out = torch.zeros(positions.shape[0], d * d, dtype=dtype, device=dev)
    out.scatter_(1, flat, value)
    return out.reshape(-1, 1, d, d)


def _interleave(a: Tensor, b: Tensor) -> Tensor:
    """``a[0], b[0], a[1], b[1], ...`` for equal-length 1D tensors."""
    return torch.stack([a, b], dim=1).flatten()


def _make_split(idx: Tensor, positions: Tensor, labels: Tensor, *, d: int, dtype: torch.dtype, device) -> Split:
    pos = positions[idx]
    lab = labels[idx]
    return Split(
        images=render_pairs(pos, d=d, dtype=dtype, device=device),
        labels=lab.to(device),
        signs=(2 * lab - 1).to(device),
        positions=pos.to(device),
        index=idx.to(device),
    )


def twopoints_dataset(
    *,
    ptr: int = 1024,
    testsize: int | None = None,
    seed: int = 0,
    d: int = 28,
    xi: float = 14.0,
    gap: float = 2.0,
    norm: str = "l2",
    labelling: str = "distance",
    periodic: bool = False,
    include_diagonal: bool = False,
    shuffle_seed: int = SHUFFLE_SEED,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> TwoPointsData:
    r"""Balanced train and test sets of the two-points task (methods §6.3).

    1. Enumerate all pairs (:func:`pair_positions`) and label them (:func:`pair_labels`),
       dropping the discarded ones.
    2. Permute each class with one dedicated generator seeded ``shuffle_seed`` (123456789;
       class 0 first, then class 1) and truncate both to the smaller class size.
    3. Test set: the **last** ``testsize/2`` items of each permuted class (interleaved far,
       close, far, ...). Training pool: the rest of both classes.
    4. Training set: ``ptr`` items drawn at random from the pool under ``seed``.

    Args:
        ptr: Training-set size (1024 or 2048 in the paper).
        testsize: Total test-set size, even (default ``4 * ptr`` as during training; the
            measurement uses 5000).
        seed: Seed of the training-subset draw (the reference's ``seed_init``).
        d, xi, gap, norm, labelling, periodic: See :func:`pair_labels`.
        include_diagonal: See :func:`candidate_pixels` (``False`` is the reference quirk).
        shuffle_seed: Seed of the per-class permutation.
        dtype, device: Of the images.

    Returns:
        :class:`TwoPointsData`; ``train.signs``/``test.signs`` are the hinge labels (far −1,
        close +1).

    >>> data = twopoints_dataset(ptr=16, seed=0)
    >>> data.train.images.shape, data.test.images.shape, data.n_per_class
    (torch.Size([16, 1, 28, 28]), torch.Size([64, 1, 28, 28]), 120767)
    """
    ptr = check_positive_int(ptr, "ptr")
    testsize = 4 * ptr if testsize is None else check_positive_int(testsize, "testsize", minimum=2)
    if testsize % 2:
        raise ValueError(f"testsize must be even (testsize/2 per class), got {testsize}")
    positions = pair_positions(d, include_diagonal=include_diagonal)
    labels = pair_labels(positions, d=d, xi=xi, gap=gap, norm=norm, labelling=labelling, periodic=periodic)
    classes, n_min = shuffled_classes(labels, (0, 1), torch.Generator().manual_seed(int(shuffle_seed)))
    half = testsize // 2
    if half >= n_min:
        raise ValueError(f"testsize/2 = {half} must be smaller than the class size after balancing ({n_min})")
    classes = [m[:n_min] for m in classes]
    test_idx = _interleave(classes[0][n_min - half :], classes[1][n_min - half :])
    pool = torch.cat([classes[0][: n_min - half], classes[1][: n_min - half]])
    if ptr > pool.numel():
        raise ValueError(f"ptr must be in [1, {pool.numel()}] (the training pool size for testsize={testsize}), got {ptr}")
    sub = torch.Generator().manual_seed(int(seed))
    train_idx = pool[torch.randperm(pool.numel(), generator=sub)[:ptr]]
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return TwoPointsData(
        train=_make_split(train_idx, positions, labels, d=d, dtype=dtype, device=dev),
        test=_make_split(test_idx, positions, labels, d=d, dtype=dtype, device=dev),
        n_per_class=n_min,
        pool_size=int(pool.numel()),
    )


@dataclass(frozen=True)
class LocalTranslation:
    """Result of :func:`local_translations` with ``return_info=True``.

    Attributes:
        images: Moved images :math:`(B, 1, d, d)`.
        before: ``int64 [B, 2, 2]`` active pixels of the input (row-major order within an image).
        steps: ``int64 [B, 2, 2]`` drawn moves, each component in {−1, 0, 1}, length 1 or √2.
        after: ``int64 [B, 2, 2]`` positions after clipping (and undoing, see ``undo_crossing``).
        crossed: ``bool [B]`` whether the label changed (``check_labels=True``), else ``None``.
    """

    images: Tensor
    before: Tensor
    steps: Tensor
    after: Tensor
    crossed: Tensor | None


def shuffled_classes(labels: Tensor, classes: tuple[int, ...], generator: torch.Generator) -> tuple[list[Tensor], int]:
    """Indices of each class of ``labels``, each randomly permuted (one generator, in order), and the smallest class size.

    The class balancing of the scale-detection tasks (this module and :mod:`~diffeosens.data.scale1d`):
    keeping the first ``n_min`` indices of every class gives a balanced, shuffled subset.

    >>> idx, n_min = shuffled_classes(torch.tensor([0, 1, 1, 0, 1]), (0, 1), torch.Generator().manual_seed(0))
    >>> [sorted(i.tolist()) for i in idx], n_min
    ([[0, 3], [1, 2, 4]], 2)
    """
    members = [torch.nonzero(labels == c).flatten() for c in classes]
    shuffled = [m[torch.randperm(m.numel(), generator=generator)] for m in members]
    return shuffled, min(int(m.numel()) for m in shuffled)


def two_nonzero(flat: Tensor, item: str, unit: str) -> tuple[Tensor, Tensor]:
    """Positions ``[B, 2]`` (ascending) and values ``[B, 2]`` of the two nonzero entries of each row of ``flat``.

    ``flat`` is ``[B, n]``: flattened images of the 2D task or signals of the 1D task. A row
    without exactly two nonzero entries raises :class:`ValueError`, whose message names the
    ``item`` (``"image"``, ``"signal"``) and the ``unit`` (``"pixels"``, ``"sites"``).

    >>> two_nonzero(torch.tensor([[0.0, 2.0, 0.0, -1.0]]), "signal", "sites")
    (tensor([[1, 3]]), tensor([[ 2., -1.]]))
    """
    nz = flat != 0
    counts = nz.sum(1)
    if bool((counts != 2).any()):
        bad = int(torch.nonzero(counts != 2)[0])
        raise ValueError(f"each {item} must have exactly 2 nonzero {unit}; {item} {bad} has {int(counts[bad])}")
    idx = torch.nonzero(nz)[:, 1].reshape(flat.shape[0], 2)
    return idx, flat.gather(1, idx)


def _active_pixels(images: Tensor) -> tuple[Tensor, Tensor]:
    """Coordinates ``[B, 2, 2]`` and values ``[B, 2]`` of the two nonzero pixels of each image."""
    b, _, _, d = images.shape
    idx, values = two_nonzero(images.reshape(b, -1), "image", "pixels")
    return torch.stack([idx // d, idx % d], dim=-1), values


def local_translations(
    images: Tensor,
    *,
    generator: torch.Generator | None = None,
    check_labels: bool = False,
    undo_crossing: bool = False,
    xi: float = 14.0,
    gap: float = 2.0,
    norm: str = "l2",
    labelling: str = "distance",
    periodic: bool = False,
    return_info: bool = False,
) -> Tensor | LocalTranslation:
    r"""Move each active pixel one step in a random direction (methods §6.3, ``local_translations=1``).

    For each active pixel a Gaussian 2-vector :math:`g \sim \mathcal N(0, I_2)` is drawn,
    normalised to unit length and rounded to integers: a step of length 1 along an axis
    (probability 2/3) or :math:`\sqrt2` along a diagonal (1/3). The new coordinates are clipped to
    :math:`[0, d-1]`, and the image is redrawn with the same pixel values, in the same order.

    Quirks of the reference, kept: a move out of the canvas is cancelled by the clipping; a
    pixel can land on the diagonal :math:`i=j` or on the other pixel (then the image has one
    active pixel); the label is not re-checked, and since :math:`r` can change by up to
    :math:`2\sqrt2 > \text{gap}` a few inputs cross the class boundary or land in the gap.
    ``check_labels=True`` recomputes the label (with ``xi``, ``gap``, ``norm``, ``labelling``,
    ``periodic``), reports the crossings (``crossed`` and a :class:`UserWarning`); with
    ``undo_crossing=True`` those images are returned unmoved.

    Args:
        images: :math:`(B, 1, d, d)`, exactly two nonzero pixels each.
        generator: Random source on ``images``' device (draws ``[B, 2, 2]`` normals).
        check_labels, undo_crossing, xi, gap, norm, labelling, periodic: See above.
        return_info: Return a :class:`LocalTranslation` instead of the images only.

    Returns:
        Moved images :math:`(B, 1, d, d)`, or a :class:`LocalTranslation`.

    >>> x = twopoints_dataset(ptr=4, testsize=8).test.images
    >>> local_translations(x, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([8, 1, 28, 28])
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 1 or images.shape[2] != images.shape[3]:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must have shape (B, 1, d, d), got {shape}")
    if undo_crossing and not check_labels:
        raise ValueError("undo_crossing=True needs check_labels=True")
    b, d = images.shape[0], images.shape[-1]
    before, values = _active_pixels(images)
    g = torch.randn(b, 2, 2, generator=generator, device=images.device, dtype=torch.float64)
    steps = torch.round(g / torch.linalg.vector_norm(g, dim=-1, keepdim=True)).long()
    after = (before + steps).clamp_(0, d - 1)
    crossed = None
    if check_labels:
        kw = dict(d=d, xi=xi, gap=gap, norm=norm, labelling=labelling, periodic=periodic)
        crossed = (pair_labels(before, **kw) != pair_labels(after, **kw)).to(images.device)
        n_cross = int(crossed.sum())
        if n_cross:
            what = "returned unmoved" if undo_crossing else "kept"
            warn_caller(f"{n_cross} of {b} moved inputs changed label ({what})")
        if undo_crossing:
            after = torch.where(crossed[:, None, None], before, after)
    flat = after[..., 0] * d + after[..., 1]
    out = torch.zeros(b, d * d, dtype=images.dtype, device=images.device)
    out.scatter_(1, flat, values)
    out = out.reshape(b, 1, d, d)
    if return_info:
        return LocalTranslation(out, before, steps, after, crossed)
    return out
