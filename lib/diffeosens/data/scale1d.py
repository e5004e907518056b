r"""The 1D scale-detection tasks T1 and T2 and their ±1 move perturbation (methods §6.4).

An input is a length-:math:`N` signal (one channel) with two distinct active sites
:math:`r_1 < r_2`, both of value :math:`\sqrt{\text{magn}}` (default :math:`\text{magn} = N/2`,
value 8 for :math:`N = 128`); all :math:`\binom N2` pairs are enumerated.

* **Task 1**: periodic distance :math:`\Delta = \min(|r_2 - r_1|, N - |r_2 - r_1|)`;
  :math:`y = +1` if :math:`\Delta < \xi - \text{gap}`, :math:`y = -1` if
  :math:`\Delta \ge \xi + \text{gap}`, otherwise discarded (the gap is the full half-width,
  unlike the 2D task's gap/2).
* **Task 2** (the paper's figures): the line is cut into blocks of length :math:`\xi`;
  :math:`y = +1` if :math:`\lfloor r_1/\xi \rfloor = \lfloor r_2/\xi \rfloor`, else :math:`-1`.
  For :math:`N = 128`, :math:`\xi = 32`: 1,984 same-block and 6,144 different-block pairs.

:math:`\xi` must be a power of two (as in the reference script). Classes are balanced by
permuting each under ``seed`` and truncating both to the smaller size; per class the first
``n_train`` go to training, the next ``n_val`` to validation and the rest to test.

Convention:
    * images: :math:`(M, 1, N)`, float.
    * positions: ``int64 [M, 2]``, :math:`r_1 < r_2` (after a move they may coincide).
    * labels: class index 1 for :math:`y=+1`, 0 for :math:`y=-1`; signs :math:`y`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..validation import check_choice, check_positive_int
from .twopoints import Split, shuffled_classes, two_nonzero

__all__ = [
    "Scale1DData",
    "move_sites",
    "pairs_1d",
    "render_1d",
    "scale1d_dataset",
    "scale1d_labels",
]

#: Sign of a discarded pair (Task 1 only).
DISCARDED_SIGN = 0
TASKS = (1, 2)


@dataclass(frozen=True)
class Scale1DData:
    """Result of :func:`scale1d_dataset`: ``train``, ``val`` and ``test`` :class:`Split` s
    (classes interleaved +1, −1, +1, ... so that any even prefix is balanced), and
    ``n_per_class`` after balancing (1,984 for Task 2, :math:`N=128`, :math:`\\xi=32`)."""

    train: Split
    val: Split
    test: Split
    n_per_class: int


def _check_n(N: int) -> int:
    return check_positive_int(N, "N", minimum=2)


def _check_xi(xi: int, N: int, task: int) -> int:
    if isinstance(xi, bool) or not isinstance(xi, int) or xi < 1 or xi & (xi - 1):
        raise ValueError(f"xi must be a power of two (1, 2, 4, ..., <= N = {N}), got {xi!r}")
    if xi > N:
        raise ValueError(f"xi must be a power of two <= N = {N}, got {xi}")
    if task == 2 and N % xi:
        raise ValueError(f"for task 2, N must be a multiple of xi (whole blocks); got N = {N}, xi = {xi}")
    return xi


def pairs_1d(N: int = 128) -> Tensor:
    """All pairs of distinct sites :math:`r_1 < r_2`, lexicographic.

    Returns:
        ``int64 [N(N-1)/2, 2]``.

    >>> pairs_1d(4).tolist()
    [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    """
    N = _check_n(N)
    return torch.triu_indices(N, N, offset=1).T.contiguous()


def scale1d_labels(positions: Tensor, *, task: int = 2, N: int = 128, xi: int = 32, gap: int = 0) -> Tensor:
    """Hinge labels of pairs: +1, −1, or 0 (discarded, Task 1 only).

    Args:
        positions: ``int [M, 2]`` sites.
        task: 1 (periodic distance) or 2 (blocks).
        N: Signal length.
        xi: Scale :math:`\\xi`, a power of two :math:`\\le N`.
        gap: Task 1 half-width of the discarded band, in sites (``>= 0``; the sources give no
            default, 0 discards nothing). Ignored by Task 2.

    Returns:
        ``int64 [M]``.

    >>> scale1d_labels(torch.tensor([[0, 31], [31, 32]]), task=2, N=128, xi=32).tolist()
    [1, -1]
    """
    check_choice(task, TASKS, name="task")
    N = _check_n(N)
    xi = _check_xi(xi, N, task)
    if isinstance(gap, bool) or not isinstance(gap, int) or gap < 0:
        raise ValueError(f"gap must be an integer >= 0 (sites), got {gap!r}")
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(f"positions must have shape (M, 2), got {tuple(positions.shape)}")
    r1, r2 = positions[:, 0].long(), positions[:, 1].long()
    if task == 2:
        same = torch.div(r1, xi, rounding_mode="floor") == torch.div(r2, xi, rounding_mode="floor")
        return torch.where(same, 1, -1).long()
    sep = (r2 - r1).abs()
    delta = torch.minimum(sep, N - sep)
    out = torch.full_like(delta, DISCARDED_SIGN)
    out[delta < xi - gap] = 1
    out[delta >= xi + gap] = -1
    return out


def render_1d(
    positions: Tensor, *, N: int = 128, magn: float | None = None, dtype: torch.dtype = torch.float32, device: str | torch.device | None = None
) -> Tensor:
    """Signals with the given sites set to :math:`\\sqrt{\\text{magn}}` (default magn = N/2).

    Returns:
        :math:`(M, 1, N)`.

    >>> render_1d(torch.tensor([[0, 2]]), N=4, magn=4.0)
    tensor([[[2., 0., 2., 0.]]])
    """
    N = _check_n(N)
    magn = N / 2 if magn is None else float(magn)
    if not math.isfinite(magn) or magn < 0:
        raise ValueError(f"magn must be a finite number >= 0, got {magn!r}")
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(f"positions must have shape (M, 2), got {tuple(positions.shape)}")
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= N):
        raise ValueError(f"positions must lie in [0, N-1] = [0, {N - 1}]")
    dev = torch.device(device) if device is not None else positions.device
    out = torch.zeros(positions.shape[0], N, dtype=dtype, device=dev)
    out.scatter_(1, positions.long().to(dev), math.sqrt(magn))
    return out[:, None, :]


def scale1d_dataset(
    *,
    task: int = 2,
    N: int = 128,
    xi: int = 32,
    gap: int = 0,
    magn: float | None = None,
    n_train: int = 512,
    n_val: int = 64,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> Scale1DData:
    """Balanced train / validation / test splits of a 1D task (methods §6.4, §7.4).

    Each class (+1 first, then −1) is permuted with one generator seeded ``seed`` and truncated
    to the smaller class size; per class the first ``n_train`` items are training, the next
    ``n_val`` validation, the rest test (Task 2, :math:`N=128`, :math:`\\xi=32`: 1024 / 128 /
    2816 in all).

    Args:
        task, N, xi, gap: See :func:`scale1d_labels`.
        magn: Squared active value (default :math:`N/2`).
        n_train, n_val: Per-class sizes of the training and validation splits.
        seed: Seed of the balancing permutation.
        dtype, device: Of the images.

    >>> data = scale1d_dataset()
    >>> len(data.train), len(data.val), len(data.test), data.train.images.shape[1:]
    (1024, 128, 2816, torch.Size([1, 128]))
    """
    N = _check_n(N)
    positions = pairs_1d(N)
    signs = scale1d_labels(positions, task=task, N=N, xi=xi, gap=gap)
    n_train = check_positive_int(n_train, "n_train", minimum=0)
    n_val = check_positive_int(n_val, "n_val", minimum=0)
    classes, n_min = shuffled_classes(signs, (1, -1), torch.Generator().manual_seed(int(seed)))
    if n_train + n_val > n_min:
        raise ValueError(
            f"n_train + n_val = {n_train + n_val} exceeds the class size after balancing ({n_min}) "
            f"for task {task}, N = {N}, xi = {xi}"
        )
    plus, minus = (m[:n_min] for m in classes)
    dev = torch.device(device) if device is not None else torch.device("cpu")

    def split(sl: slice) -> Split:
        idx = torch.stack([plus[sl], minus[sl]], dim=1).flatten()
        pos = positions[idx]
        sg = signs[idx]
        return Split(
            images=render_1d(pos, N=N, magn=magn, dtype=dtype, device=dev),
            labels=((sg + 1) // 2).to(dev),
            signs=sg.to(dev),
            positions=pos.to(dev),
            index=idx.to(dev),
        )

    return Scale1DData(
        train=split(slice(0, n_train)),
        val=split(slice(n_train, n_train + n_val)),
        test=split(slice(n_train + n_val, n_min)),
        n_per_class=n_min,
    )


def move_sites(
    images: Tensor, *, xi: int = 32, generator: torch.Generator | None = None, return_positions: bool = False
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    r"""Move each active site by ±1, keeping it in its block (methods §6.4, ``adding_diffeo``).

    Each active site :math:`r` moves to :math:`r \pm 1` with probability 1/2 each; :math:`-1`
    and :math:`N` are clamped to 0 and :math:`N-1`; a move that changes the block
    :math:`\lfloor r/\xi \rfloor` is undone (then clamped again), so the Task-2 label never
    changes. Two sites may end on the same position (the signal then has one active site).

    Args:
        images: :math:`(B, 1, N)`, exactly two nonzero sites each.
        xi: Block length, a power of two dividing :math:`N`.
        generator: Random source on ``images``' device.
        return_positions: Also return the positions ``int64 [B, 2]`` before and after.

    Returns:
        Moved signals :math:`(B, 1, N)` (same values, same order), or
        ``(moved, before, after)``.

    >>> x = render_1d(torch.tensor([[0, 31], [40, 70]]), N=128)
    >>> move_sites(x, xi=32, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 128])
    """
    if not isinstance(images, Tensor) or images.ndim != 3 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must have shape (B, 1, N), got {shape}")
    b, _, n = images.shape
    xi = _check_xi(xi, n, task=2)
    flat = images[:, 0]
    before, values = two_nonzero(flat, "signal", "sites")
    step = 2 * torch.randint(0, 2, (b, 2), generator=generator, device=images.device) - 1
    after = (before + step).clamp(0, n - 1)
    changed = torch.div(after, xi, rounding_mode="floor") != torch.div(before, xi, rounding_mode="floor")
    after = torch.where(changed, before, after).clamp(0, n - 1)
    out = torch.zeros_like(flat)
    out.scatter_(1, after, values)
    out = out[:, None, :]
    if return_positions:
        return out, before, after
    return out
