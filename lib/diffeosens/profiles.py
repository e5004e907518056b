"""Run sizes: the ``smoke``, ``quick`` and ``paper`` profiles (open choice O14).

Every experiment runs at one of three sizes:

* ``smoke``: seconds per notebook, for CI and the test suite (numbers are meaningless);
* ``quick``: the default of ``make book`` on a 2-core laptop CPU, the whole book in under 45
  minutes: the paper's recipes on the whole training set but at reduced width and for few
  epochs, fewer probe images (the regime study behind this choice: ``docs/regimes.md``);
* ``paper``: the paper's sizes (methods §7), for a GPU or a cluster.

:data:`TRAINING` scales the recipes of :mod:`diffeosens.train`; :data:`MEASUREMENT` the probe sets.
The same table is rendered in the README and the book by :func:`table_markdown`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from .validation import check_choice

__all__ = ["MEASUREMENT", "PROFILES", "TRAINING", "Size", "describe", "measurement", "table_markdown", "training"]

PROFILES = ("smoke", "quick", "paper")


@dataclass(frozen=True)
class Size:
    """How big a training run is.

    ``n_train``/``n_test``: training/test images (``None``: the whole split; for the synthetic
    tasks ``n_train`` is the paper's ``ptr``); ``width_factor`` multiplies every hidden width;
    ``width`` is the hidden width of the mean-field nets (``None``: the model default).
    """

    epochs: int
    n_train: int | None
    n_test: int | None
    width_factor: float = 1.0
    width: int | None = None


TRAINING: dict[str, dict[str, Size]] = {
    "cifar": {
        "smoke": Size(epochs=1, n_train=512, n_test=256, width_factor=0.125),
        # the paper's recipe on the whole training set, compressed to 6 epochs (docs/regimes.md)
        "quick": Size(epochs=6, n_train=None, n_test=None, width_factor=0.25),
        "paper": Size(epochs=250, n_train=None, n_test=None),
    },
    "fcn": {
        "smoke": Size(epochs=1, n_train=512, n_test=256),
        "quick": Size(epochs=6, n_train=None, n_test=None),
        "paper": Size(epochs=250, n_train=None, n_test=None),
    },
    "scale2d": {
        "smoke": Size(epochs=2, n_train=128, n_test=256, width_factor=0.125),
        "quick": Size(epochs=30, n_train=1024, n_test=2048, width_factor=0.25),
        "paper": Size(epochs=300, n_train=1024, n_test=4096),
    },
    "scale1d": {
        "smoke": Size(epochs=60, n_train=128, n_test=128, width=64),
        "quick": Size(epochs=800, n_train=256, n_test=128, width=64),
        "paper": Size(epochs=600_000, n_train=512, n_test=128, width=1000),
    },
}

#: Probe images (P) of the sensitivity measurements, and the number of seeds per network.
MEASUREMENT: dict[str, dict[str, int]] = {
    "smoke": {"n_probe": 16, "n_seeds": 1},
    "quick": {"n_probe": 200, "n_seeds": 1},
    "paper": {"n_probe": 500, "n_seeds": 4},
}


#: Networks that are small at full width (below ~0.3 M parameters): reduced profiles keep their
#: full width instead of applying the profile's ``width_factor``.
SMALL_NETS = frozenset({"LeNet", "DenseNetL2", "DenseNetL4", "DenseNetL6", "ConvGAP", "ConvGAP1d"})


def training(recipe: str, profile: str, arch: str | None = None) -> Size:
    """The :class:`Size` of ``recipe`` at ``profile`` (for ``arch``: small nets keep full width)."""
    check_choice(profile, PROFILES, "profile")
    check_choice(recipe, TRAINING, "recipe")
    size = TRAINING[recipe][profile]
    if arch is not None and arch in SMALL_NETS and size.width_factor != 1.0:
        size = replace(size, width_factor=1.0)
    return size


def measurement(profile: str) -> dict[str, int]:
    """Probe-set size and seeds at ``profile``."""
    check_choice(profile, PROFILES, "profile")
    return dict(MEASUREMENT[profile])


_WIDTH_WORDS = {1.0: "full-width", 0.5: "half-width", 0.25: "quarter-width", 0.125: "eighth-width"}


def describe(recipe: str, profile: str) -> str:
    """A sentence fragment that says what ``recipe`` trains at ``profile``, from :data:`TRAINING`.

    The book's "the quick profile trains …" sentences are made by this function, so they cannot
    drift from the sizes actually run.

    >>> describe("cifar", "paper")
    'full-width networks trained for 250 epochs on all the training images'
    """
    check_choice(profile, PROFILES, "profile")
    check_choice(recipe, TRAINING, "recipe")
    s = TRAINING[recipe][profile]
    data = "all the training images" if s.n_train is None else f"{s.n_train:,} training {'images' if recipe in ('cifar', 'fcn') else 'points'}"
    if s.width is not None:
        what = f"networks of hidden width {s.width}"
    else:
        what = f"{_WIDTH_WORDS.get(s.width_factor, f'width x{s.width_factor:g}')} networks"
        if s.width_factor != 1.0:
            what += " (the small nets at full width)"
    epochs = f"{s.epochs:,} epoch{'s' if s.epochs != 1 else ''}"
    epochs = f"at most {epochs}" if recipe == "scale1d" else epochs
    return f"{what} trained for {epochs} on {data}"


def table_markdown() -> str:
    """The profiles as one Markdown table (recipe x profile)."""
    rows = ["| recipe | profile | epochs | training set | test set | width factor | width | probes P |", "|---|---|---|---|---|---|---|---|"]
    for recipe, sizes in TRAINING.items():
        for profile, s in sizes.items():
            d = asdict(s)
            rows.append(
                f"| {recipe} | {profile} | {d['epochs']:,} | {d['n_train'] or 'all'} | {d['n_test'] or 'all'} | "
                f"{d['width_factor']:g} | {d['width'] or 'default'} | {MEASUREMENT[profile]['n_probe']} |"
            )
    rows.append("")
    rows.append(f"Small networks ({', '.join(sorted(SMALL_NETS))}) keep their full width at every profile.")
    return "\n".join(rows)
