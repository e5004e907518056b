"""diffeosens: layer-wise sensitivity of deep networks to diffeomorphisms and to white noise.

The reproducible companion to U. M. Tomasini, L. Petrini, F. Cagnetta, M. Wyart, *How deep
convolutional neural networks lose spatial information with training* (MLST 2023,
arXiv:2210.01506). Submodules:

- :mod:`diffeosens.diffeo` (max-entropy diffeomorphisms) and :mod:`diffeosens.noise` (matched
  noise), re-exported here;
- :mod:`diffeosens.sensitivity` (layer-wise :math:`D_k`, :math:`G_k`, :math:`R_k` of any model);
- :mod:`diffeosens.models` (the paper's model zoo), :mod:`diffeosens.data` (CIFAR-10, MNIST,
  the scale-detection tasks, probes), :mod:`diffeosens.train` (recipes, resumable training);
- :mod:`diffeosens.pooling`, :mod:`diffeosens.spectra`, :mod:`diffeosens.tasks`,
  :mod:`diffeosens.theory` (the analyses of spatial and channel pooling, and the theory);
- :mod:`diffeosens.results`, :mod:`diffeosens.sweep`, :mod:`diffeosens.claims` (the results
  store, the papermill sweeps, the checks of claims C1–C10).
"""

from .diffeo import (
    PAPER_CUT,
    PAPER_DELTA,
    Coefficients,
    Diffeo,
    OverhangWarning,
    apply_fields,
    deform,
    fields_from_coefficients,
    sample_coefficients,
    sample_fields,
    temperature_for,
    temperature_range,
    typical_displacement,
    warp,
)
from .noise import matched_noise

__version__ = "0.1.0"

__all__ = [
    "PAPER_CUT",
    "PAPER_DELTA",
    "Coefficients",
    "Diffeo",
    "OverhangWarning",
    "apply_fields",
    "deform",
    "fields_from_coefficients",
    "matched_noise",
    "sample_coefficients",
    "sample_fields",
    "temperature_for",
    "temperature_range",
    "typical_displacement",
    "warp",
]
