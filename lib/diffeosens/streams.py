r"""Counter-based random streams: the one random scheme of the perturbations.

Every random quantity of a measurement (the mode coefficients of a diffeomorphism, the direction
of the matched noise) is indexed by a triple ``(seed, stream, item)``: ``seed`` is the user's
seed, ``stream`` names what is drawn (see :func:`stream_id`), ``item`` is the index of the image
in the probe set. The values of item :math:`n` depend on that triple only, never on the batch
size, the device, the dtype or on what else was drawn before, so that

* ``measure`` gives the same numbers for any ``batch_size`` and on any device;
* the explorer draws the very field that ``measure`` applies to probe image :math:`n`;
* a sweep can resume in the middle of a probe set.

Items are grouped in blocks of :data:`BLOCK` consecutive indices; each block is drawn from a
CPU :class:`torch.Generator` seeded from ``SeedSequence([seed_lo, seed_hi, stream, block])``,
always in float64 (then cast), so a seed gives the same values in any dtype.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .validation import check_generator, check_seed

__all__ = ["BLOCK", "STREAMS", "stream_id", "standard_normals", "seed_from_generator"]

#: Items per independently seeded block.
BLOCK = 64

#: What each stream of a draw holds; draw :math:`k` of ``measure`` uses streams
#: ``2k`` (diffeomorphism coefficients) and ``2k + 1`` (noise directions).
STREAMS = ("diffeo", "noise")


def stream_id(kind: str, draw: int = 0) -> int:
    """The stream number of ``kind`` (``"diffeo"`` or ``"noise"``) for independent draw ``draw``.

    >>> stream_id("diffeo", 0), stream_id("noise", 0), stream_id("diffeo", 1)
    (0, 1, 2)
    """
    if kind not in STREAMS:
        raise ValueError(f"kind must be one of {STREAMS}, got {kind!r}")
    if isinstance(draw, bool) or not isinstance(draw, (int, np.integer)) or draw < 0:
        raise ValueError(f"draw must be an int >= 0, got {draw!r}")
    return len(STREAMS) * int(draw) + STREAMS.index(kind)


def _block_seed(seed: int, stream: int, block: int) -> int:
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32, stream, block]).generate_state(1, np.uint64)
    return int(state[0] >> 1)


def standard_normals(
    seed: int,
    stream: int,
    start: int,
    stop: int,
    shape: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Standard normals :math:`(\mathrm{stop}-\mathrm{start}, *\mathrm{shape})` for items ``start..stop-1``.

    Item :math:`n`'s values depend only on ``(seed, stream, n)`` and ``shape``.

    >>> a = standard_normals(0, 0, 0, 100, (3,))
    >>> torch.equal(a[70:80], standard_normals(0, 0, 70, 80, (3,)))
    True
    """
    seed = check_seed(seed)  # an integer in [0, 2**64)
    start, stop, stream = int(start), int(stop), int(stream)
    if not 0 <= start <= stop or stream < 0:
        raise ValueError(f"need 0 <= start <= stop and stream >= 0, got start={start}, stop={stop}, stream={stream}")
    shape = tuple(int(s) for s in shape)
    if start == stop:
        return torch.zeros((0, *shape), dtype=dtype, device=device)
    parts = []
    for block in range(start // BLOCK, (stop - 1) // BLOCK + 1):
        g = torch.Generator().manual_seed(_block_seed(seed, stream, block))
        z = torch.randn((BLOCK, *shape), generator=g, dtype=torch.float64)
        lo = max(start - block * BLOCK, 0)
        hi = min(stop - block * BLOCK, BLOCK)
        parts.append(z[lo:hi])
    z = torch.cat(parts) if len(parts) > 1 else parts[0]
    return z.to(device=device, dtype=dtype)


def seed_from_generator(generator: torch.Generator | None) -> int:
    """One seed for :func:`standard_normals` drawn from ``generator`` (or from torch's global one).

    This is how the ``generator=`` arguments of :func:`diffeosens.deform` and
    :class:`diffeosens.Diffeo` feed the counter-based scheme: each call advances the generator
    by one draw and uses the result as the seed of its stream.
    """
    check_generator(generator)
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device if generator is not None else "cpu").item())
