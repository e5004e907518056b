"""diffeosens: layer-wise sensitivity of deep networks to diffeomorphisms and to white noise.

The reproducible companion to U. M. Tomasini, L. Petrini, F. Cagnetta, M. Wyart, *How deep
convolutional neural networks lose spatial information with training* (MLST 2023,
arXiv:2210.01506). Submodules: :mod:`diffeosens.diffeo` (max-entropy diffeomorphisms),
:mod:`diffeosens.noise` (matched noise).
"""

from .diffeo import (
    Diffeo,
    OverhangWarning,
    apply_fields,
    deform,
    sample_fields,
    temperature_for,
    temperature_range,
    typical_displacement,
)
from .noise import matched_noise

__version__ = "0.1.0"

__all__ = [
    "Diffeo",
    "OverhangWarning",
    "apply_fields",
    "deform",
    "matched_noise",
    "sample_fields",
    "temperature_for",
    "temperature_range",
    "typical_displacement",
]
