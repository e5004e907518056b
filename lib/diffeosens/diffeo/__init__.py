r"""Batched max-entropy diffeomorphisms (methods §2).

A random displacement field is a sine series on the unit square with coefficients whose
variance is set by a temperature :math:`T` and a mode cutoff :math:`c`:

.. math::

    \tau_u(u, v) = \sum_{(i,j) \in \mathcal M_c} C_{ij} \sin(i\pi u)\sin(j\pi v), \qquad
    \tau_v(u, v) = \sum_{(i,j) \in \mathcal M_c} D_{ij} \sin(i\pi u)\sin(j\pi v),

    C_{ij}, D_{ij} \sim \mathcal N\big(0, T/(i^2+j^2)\big), \qquad
    \mathcal M_c = \{(i, j): i, j \ge 1,\ \sqrt{i^2+j^2} < c + \tfrac12\}.

The package follows the draw → apply split of kornia and torchvision v2:

* :mod:`.temperature`: :math:`T`, :math:`c`, the typical displacement :math:`\delta` (pixels);
* :mod:`.fields`: :func:`sample_coefficients` draws a :class:`Coefficients` (the random part,
  counter-based: :mod:`diffeosens.streams`), :func:`fields_from_coefficients` evaluates it;
* :mod:`.warping`: :func:`warp` applies coefficients, :func:`apply_fields` applies any field,
  :func:`deform` draws and applies;
* :mod:`.transform`: :class:`Diffeo`, the augmentation transform.

Conventions: images :math:`(\dots, C, H, W)`, each :math:`(C, H, W)` slice its own field; fields
in pixels :math:`(B, 2, H, W)`, channel 0 horizontal, 1 vertical; :math:`u` horizontal
(columns), :math:`v` vertical (rows); the border never moves.

>>> x = torch.rand(8, 3, 32, 32)
>>> coef = sample_coefficients(8, 32, delta=1.0, cut=3, seed=0)
>>> torch.equal(warp(x, coef), deform(x, delta=1.0, cut=3, seed=0))
True
"""

from __future__ import annotations

import torch  # noqa: F401  (used by the doctest above)

from .fields import Coefficients, fields_from_coefficients, sample_coefficients, sample_fields
from .temperature import (
    PAPER_CUT,
    PAPER_DELTA,
    OverhangWarning,
    check_mode_count,
    max_mode_index,
    mode_sum,
    resolve_temperature,
    temperature_for,
    temperature_range,
    typical_displacement,
)
from .transform import Diffeo
from .warping import GAUSSIAN_SIGMA, INTERPOLATIONS, apply_fields, check_coefficients, check_images, deform, warp

__all__ = [
    "Coefficients",
    "Diffeo",
    "GAUSSIAN_SIGMA",
    "INTERPOLATIONS",
    "OverhangWarning",
    "PAPER_CUT",
    "PAPER_DELTA",
    "apply_fields",
    "check_coefficients",
    "check_images",
    "check_mode_count",
    "deform",
    "fields_from_coefficients",
    "max_mode_index",
    "mode_sum",
    "resolve_temperature",
    "sample_coefficients",
    "sample_fields",
    "temperature_for",
    "temperature_range",
    "typical_displacement",
    "warp",
]

