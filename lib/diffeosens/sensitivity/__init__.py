r"""Layer-wise sensitivities :math:`D_k`, :math:`G_k`, :math:`R_k` of any PyTorch model (methods §4).

.. math::

    D_k = \frac{\langle \|f_k(\tau x) - f_k(x)\|^2 \rangle_{x,\tau}}{\langle \|f_k(x) - f_k(z)\|^2 \rangle_{x,z}},
    \qquad
    G_k = \frac{\langle \|f_k(x + \eta) - f_k(x)\|^2 \rangle_{x,\eta}}{\langle \|f_k(x) - f_k(z)\|^2 \rangle_{x,z}},
    \qquad R_k = \frac{D_k}{G_k},

with :math:`f_k(x)` the representation at probe point :math:`k`, flattened over all channels and
positions, :math:`\tau` an independent max-entropy diffeomorphism per image and :math:`\eta`
white noise matched per image to :math:`\|\tau x - x\|`.

Estimators (``estimator="mean"``, the 2022 paper's; methods §4.2–4.4):

* numerators :math:`\mathrm{num}_D = \frac1P \sum_n \|f_k(\tau_n x_n) - f_k(x_n)\|^2` (averaged over
  ``n_draws`` draws per image; the clean forward is shared by the draws), likewise
  :math:`\mathrm{num}_G`;
* denominator: the mean over **all** :math:`P^2` ordered pairs, diagonal included,
  :math:`\mathrm{deno} = \frac{1}{P^2}\sum_{n,m}\|a_n - a_m\|^2 = 2\sum_u \mathrm{Var}_\mathrm{pop}(a_{\cdot u})`,
  computed in :math:`O(P)` by this moment identity, streaming over mini-batches with centred
  (Chan-merged) float64 accumulators, so memory does not grow with :math:`P`;
* :math:`D = \mathrm{num}_D/(\mathrm{deno} + 10^{-10})`, :math:`G = \mathrm{num}_G/(\mathrm{deno} + 10^{-10})`
  (the reference's guard; the stored ``deno`` is without it), :math:`R = \mathrm{num}_D/\mathrm{num}_G`.

``estimator="median"`` is the NeurIPS-2021 variant (methods §4.5): numerators
:math:`\sum_u \mathrm{median}_n (b_{nu} - a_{nu})^2` and the median of all :math:`P^2` pairwise
squared distances (diagonal zeros included) as denominator. For an even count the median is the
lower of the two middle values, as ``torch.median`` gives in the reference code (``median="lower"``,
the default); ``median="average"`` takes their mean instead. It keeps every representation in
memory (:math:`O(P\,d_k)` per layer).

Uncertainty: for the mean estimator, a **delete-a-group jackknife** over images — the probes are
split into ``n_jackknife`` contiguous groups (exact leave-one-out when ``n_jackknife >= P``), each
quantity (numerators, denominator and the ratios D, G, R) is recomputed without each group, and
:math:`\mathrm{se} = \sqrt{\frac{G-1}{G}\sum_g (\theta_{-g} - \bar\theta)^2}`. For the median
estimator, a bootstrap over images with ``n_boot`` resamples. With fewer than
:data:`~.estimators.MIN_PROBES_FOR_SE` = 10 probe images every standard error is NaN, with a
:class:`~.estimators.SmallProbeSetWarning` (the reasons are in :mod:`.estimators`).

Results: one :class:`xarray.Dataset` along ``layer`` with ``D``, ``G``, ``R``, ``num_D``,
``num_G``, ``deno`` and their ``*_se``, the coordinates ``layer_name``, ``layer_kind``, ``depth``,
``relative_depth`` and every parameter in ``attrs`` (:data:`SCHEMA`; the full table is in
:mod:`diffeosens.sensitivity.schema` and the README).

Conventions: probe images are the network's inputs (e.g. normalised CIFAR-10 test images),
:math:`(P, C, H, W)`; :math:`\delta` is in pixels. Randomness is counter-based: the field
coefficients and noise of image :math:`n` in draw :math:`k` depend only on ``(seed, k, n)``, so
the result does not depend on ``batch_size`` and is identical on CPU and GPU up to rounding.

Modules: :mod:`.layers` (probe points, traced once), :mod:`.capture` (running the model and
capturing representations), :mod:`.estimators` (the estimator core, shared with
:mod:`diffeosens.theory`), :mod:`.schema` (the results dataset), :mod:`.measurement` (the entry
points).
"""

from .capture import INIT_BN, extract_features  # noqa: F401
from .estimators import DENO_EPS, ESTIMATORS, MEDIANS, MIN_PROBES_FOR_SE, SmallProbeSetWarning  # noqa: F401 - public constants
from .layers import Layer, list_layers
from .measurement import measure, measure_perturbed
from .schema import COORDS, SCHEMA, DegenerateWarning  # noqa: F401

__all__ = [
    "DegenerateWarning",
    "Layer",
    "SCHEMA",
    "SmallProbeSetWarning",
    "extract_features",
    "list_layers",
    "measure",
    "measure_perturbed",
]
