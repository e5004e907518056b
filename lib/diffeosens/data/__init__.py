"""Datasets of the paper (methods §6): real images, training-noise corruption, synthetic tasks.

* :mod:`~diffeosens.data.vision`: CIFAR-10, MNIST, FashionMNIST located on disk
  (:func:`find_root`) or downloaded once with torchvision (:func:`download_dataset`), loaded
  through torchvision (:func:`load_dataset`) or as tensors
  (:func:`load_tensors`), with the paper's normalisation (:data:`NORMALIZATION`) and transforms
  (:func:`build_transform`). §6.1.
* :mod:`~diffeosens.data.memory`: :class:`InMemoryLoader`, the whole split on the device with
  batched crop + flip augmentation. §6.1, §7.1.
* :mod:`~diffeosens.data.corruption`: :class:`GaussianCorruption` ("noisy CIFAR-10"). §6.2.
* :mod:`~diffeosens.data.twopoints`: the 2D scale-detection task and its local translations. §6.3.
* :mod:`~diffeosens.data.scale1d`: the 1D tasks T1/T2 and their ±1 moves. §6.4.
"""

from .corruption import GaussianCorruption, corrupt, noisy_test_set
from .memory import BatchInfo, EpochPlan, InMemoryLoader, augment_batch, draw_augmentation, eval_loader, make_loaders
from .probes import normalize, probe_images
from .scale1d import Scale1DData, move_sites, pairs_1d, render_1d, scale1d_dataset, scale1d_labels
from .twopoints import (
    DISCARDED,
    LocalTranslation,
    Split,
    TwoPointsData,
    candidate_pixels,
    local_translations,
    pair_labels,
    pair_positions,
    render_pairs,
    twopoints_dataset,
)
from .vision import (
    CIFAR10,
    DATASETS,
    NORMALIZATION,
    DatasetNotFoundError,
    auto_download,
    build_transform,
    cache_dir,
    canonical_name,
    download_dataset,
    download_root,
    find_root,
    load_dataset,
    load_tensors,
    locate,
)

__all__ = [
    "CIFAR10",
    "DATASETS",
    "DISCARDED",
    "NORMALIZATION",
    "BatchInfo",
    "DatasetNotFoundError",
    "EpochPlan",
    "GaussianCorruption",
    "InMemoryLoader",
    "LocalTranslation",
    "Scale1DData",
    "Split",
    "TwoPointsData",
    "augment_batch",
    "auto_download",
    "build_transform",
    "cache_dir",
    "candidate_pixels",
    "canonical_name",
    "corrupt",
    "download_dataset",
    "download_root",
    "draw_augmentation",
    "eval_loader",
    "find_root",
    "load_dataset",
    "load_tensors",
    "local_translations",
    "locate",
    "make_loaders",
    "move_sites",
    "noisy_test_set",
    "normalize",
    "probe_images",
    "pair_labels",
    "pair_positions",
    "pairs_1d",
    "render_1d",
    "render_pairs",
    "scale1d_dataset",
    "scale1d_labels",
    "twopoints_dataset",
]
