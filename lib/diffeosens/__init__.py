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

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the eager imports, for type checkers and IDEs
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

#: Where each re-exported name lives. Imports are lazy (PEP 562): ``import diffeosens`` and light
#: submodules such as :mod:`diffeosens.results` load without torch (a notebook that only writes a
#: result starts in about a second, not four); the first use of a name imports its module.
_EXPORTS: dict[str, str] = {**{name: "diffeo" for name in __all__ if name != "matched_noise"}, "matched_noise": "noise"}
#: The package's submodules, found on disk (nothing is imported to list them).
_SUBMODULES = frozenset(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
