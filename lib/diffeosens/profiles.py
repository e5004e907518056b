"""Run sizes: the ``smoke``, ``quick``, ``paper`` and ``dry`` profiles (open choice O14), the one source of them.

Every experiment runs at one of these sizes:

* ``smoke``: seconds per notebook, for CI and the test suite (numbers are meaningless);
* ``quick``: a preview of the book on a 2-core laptop CPU (``make book PROFILE=quick``), the
  whole book in under 45 minutes: the paper's recipes on the whole training set but at reduced width and for few
  epochs, fewer probe images (the regime study behind this choice: ``docs/regimes.md``);
* ``laptop``: the quick profile plus one network trained on the paper's whole 250-epoch schedule
  (VGG11, quarter width), the one network of the layers, pooling and filters chapters: its
  low-learning-rate tail is where the noise sensitivity overtakes the initial one (claim C4,
  ``docs/regimes.md``, *Trajectories per epoch*); about two hours on two cores; the default
  (:data:`DEFAULT`) of ``make book``;
* ``paper``: the paper's sizes (methods §7), for a GPU or a cluster;
* ``dry``: the dry run of the paper profile: the *paper's grid* (every network, activation, noise
  level, task, variant, delta and seed a sweep config lists for ``paper``, see :data:`GRID_OF`)
  through the paper's code paths (its recipes, optimisers,
  input sizes, probe points, combinations of results), at tiny sizes: one epoch on a few hundred
  images at eighth width for the CIFAR and 2D-task nets, four epochs at the paper's width 1,000 for
  the 1D task (its checkpoints take most of the dry run's disk), a few probe images. It finds on a laptop the crash that would otherwise
  come in hour 30 of a GPU run (``diffeosens sweep CONFIG --dry-run``, ``make dry-run``).

:data:`TRAINING` scales the recipes of :mod:`diffeosens.train`; :data:`MEASUREMENT` the probe sets
and seeds; :data:`EXPERIMENTS` holds the few experiments that depart from their profile's sizes.
The same tables are rendered in the README and the book by :func:`table_markdown`.

Sizes are set here and nowhere else: a sweep config (``configs/*.yaml``) names a profile and
refers to the sizes of its experiment as ``${n_probe}``, ``${seeds}`` and ``${recipe_overrides}``,
which :func:`diffeosens.sweep.load_sweep` fills in from :func:`experiment_sizes`; a training run
gets its epochs, training set and widths from :func:`training` (the ``profile`` parameter of
``notebooks/train.ipynb``). A config that sets one of :data:`SIZE_NAMES` itself is rejected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from collections.abc import Iterable
from typing import Any

from .validation import check_choice

__all__ = [
    "DEFAULT",
    "EXPERIMENTS",
    "MEASUREMENT",
    "PROFILES",
    "RECIPE_DEPARTURES",
    "SIZE_NAMES",
    "SWEEP_SIZES",
    "TRAINING",
    "Size",
    "describe",
    "experiment_sizes",
    "GRID_OF",
    "grid_profile",
    "measurement",
    "recipe_departures",
    "table_markdown",
    "training",
]

PROFILES = ("smoke", "quick", "laptop", "paper", "dry")

#: The profile of ``make book``, of the book's pages (``DIFFEOSENS_PROFILE`` unset) and of the
#: command line: ``laptop``, chosen by measurement (docs/regimes.md, *Trajectories per epoch*).
DEFAULT = "laptop"

#: The profile whose *grid* a profile runs where a sweep config lists none of its own (the variables
#: a config lists under ``profiles.<name>``: networks, activations, noise levels, tasks, ...); a
#: profile not listed here always runs its own. ``dry`` runs the paper's grid at its own (tiny)
#: sizes; ``laptop`` runs the quick grid except in the configs that list a ``laptop`` grid (the
#: experiments of its long-trained network).
GRID_OF: dict[str, str] = {"dry": "paper", "laptop": "quick"}


def grid_profile(profile: str, defined: Iterable[str] = ()) -> str:
    """The profile whose sweep-config variables (the grid) ``profile`` runs, for a config that
    defines grids for the profiles ``defined``.

    >>> grid_profile("dry"), grid_profile("quick"), grid_profile("laptop"), grid_profile("laptop", ["quick", "laptop"])
    ('paper', 'quick', 'quick', 'laptop')
    """
    check_choice(profile, PROFILES, "profile")
    return profile if profile in set(defined) or profile not in GRID_OF else GRID_OF[profile]


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
        # the paper's recipe on the whole training set, compressed to 6 epochs (docs/regimes.md);
        # RECIPE_DEPARTURES adds a one-epoch lr warm-up
        "quick": Size(epochs=6, n_train=None, n_test=None, width_factor=0.25),
        "laptop": Size(epochs=6, n_train=None, n_test=None, width_factor=0.25),  # and 250 epochs: EXPERIMENTS
        "paper": Size(epochs=250, n_train=None, n_test=None),
        "dry": Size(epochs=1, n_train=256, n_test=128, width_factor=0.125),
    },
    "fcn": {
        "smoke": Size(epochs=1, n_train=512, n_test=256),
        "quick": Size(epochs=6, n_train=None, n_test=None),
        "laptop": Size(epochs=6, n_train=None, n_test=None),
        "paper": Size(epochs=250, n_train=None, n_test=None),
        "dry": Size(epochs=1, n_train=256, n_test=128),
    },
    "scale2d": {
        "smoke": Size(epochs=2, n_train=128, n_test=256, width_factor=0.125),
        "quick": Size(epochs=30, n_train=1024, n_test=2048, width_factor=0.25),
        "laptop": Size(epochs=30, n_train=1024, n_test=2048, width_factor=0.25),
        "paper": Size(epochs=300, n_train=1024, n_test=4096),
        "dry": Size(epochs=1, n_train=64, n_test=64, width_factor=0.125),
    },
    "scale1d": {
        "smoke": Size(epochs=60, n_train=128, n_test=128, width=64),
        "quick": Size(epochs=800, n_train=256, n_test=128, width=64),
        "laptop": Size(epochs=800, n_train=256, n_test=128, width=64),
        "paper": Size(epochs=600_000, n_train=512, n_test=128, width=1000),
        "dry": Size(epochs=4, n_train=64, n_test=32, width=1000),
    },
}

#: Probe images (P) of the sensitivity measurements, and the number of seeds per network
#: (seeds ``first_seed, first_seed + 1, ...``; ``first_seed`` is 0 unless an experiment says otherwise).
MEASUREMENT: dict[str, dict[str, int]] = {
    "smoke": {"n_probe": 16, "n_seeds": 1},
    "quick": {"n_probe": 200, "n_seeds": 1},
    "laptop": {"n_probe": 200, "n_seeds": 1},
    "paper": {"n_probe": 500, "n_seeds": 4},
    # every seed of the paper's grid (with each experiment's seed departures, see measurement()), a few probes
    "dry": {"n_probe": 16, "n_seeds": 4},
}

#: Where an experiment (a sweep config's ``experiment``) departs from its profile's sizes:
#: experiment -> profile -> any of ``n_probe``, ``n_seeds``, ``first_seed`` (over
#: :data:`MEASUREMENT`) and ``recipe_overrides`` (recipe fields of its training runs, e.g. how far
#: past interpolation the scale1d nets train). The only place such a departure is written.
EXPERIMENTS: dict[str, dict[str, dict[str, Any]]] = {
    "architectures": {"quick": {"n_probe": 500}, "laptop": {"n_probe": 500}},
    "noisy": {"quick": {"n_probe": 300}, "laptop": {"n_probe": 300}},
    "scale2d": {"smoke": {"n_probe": 32}, "quick": {"n_probe": 300}, "laptop": {"n_probe": 300}, "paper": {"n_seeds": 10}, "dry": {"n_probe": 32}},
    # the laptop profile's one long-trained network (the paper's 250-epoch schedule): the low-lr tail
    # is where its noise sensitivity overtakes the initial one (C4; docs/regimes.md, trajectories), by
    # about one jackknife standard error at P = 200 (G_out 0.137 ± 0.009 -> 0.147 ± 0.010): the paper's
    # P = 500 narrows it by sqrt(200/500) for about a minute more
    "layers": {"laptop": {"epochs": 250, "n_probe": 500}},
    "pooling": {"laptop": {"epochs": 250}},
    "spectra": {"laptop": {"epochs": 250}},
    # the 1D task's probe set is the paper's 812 test points; the quick nets train 30x past
    # interpolation: the C9 slopes need it (docs/regimes.md); the paper's seeds are 1-10
    "scale1d": {
        "smoke": {"n_probe": 64, "recipe_overrides": {"monitor_every": 5, "interpolation_factor": 2}},
        "quick": {"n_probe": 400, "recipe_overrides": {"monitor_every": 10, "interpolation_factor": 30}},
        "laptop": {"n_probe": 400, "recipe_overrides": {"monitor_every": 10, "interpolation_factor": 30}},
        "paper": {"n_probe": 812, "n_seeds": 10, "first_seed": 1},
        "dry": {"n_probe": 32},
    },
}

#: Where a profile departs from the paper's *recipe* itself (not its sizes): recipe -> profile ->
#: recipe fields, applied by :func:`diffeosens.train.train_network` before any ``recipe_overrides``.
#: ``quick`` ``cifar``: a linear lr warm-up over the first epoch. Without BatchNorm, VGG11 at
#: PyTorch's default initialisation starts with an output of ~1e-4 and leaves that plateau after
#: ~200-350 steps in a burst that, at the full lr 0.1 with momentum 0.9, kills it for good in 2 of 3
#: seeds (loss ln 10 and 10 % accuracy for all 6 epochs). The paper's 250 epochs can absorb a slow
#: start, 6 cannot. With the warm-up the burst comes at a lower lr and every seed tried trains; from
#: epoch 2 on the schedule is the paper's (docs/regimes.md, "The collapse of VGG11").
RECIPE_DEPARTURES: dict[str, dict[str, dict[str, Any]]] = {
    "cifar": {"quick": {"warmup_epochs": 1.0}, "laptop": {"warmup_epochs": 1.0}},
}

#: The sizes a sweep config refers to (``${n_probe}``, ...), filled in by :func:`experiment_sizes`.
SWEEP_SIZES = ("n_probe", "seeds", "recipe_overrides", "epochs")

#: Every name of a size set in this module: a sweep config or a notebook's parameters cell must not
#: give any of them a value of its own.
SIZE_NAMES = frozenset({*SWEEP_SIZES, "n_seeds", "first_seed", *(f.name for f in fields(Size))})

_EXPERIMENT_KEYS = ("n_probe", "n_seeds", "first_seed", "recipe_overrides", "epochs")


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


def recipe_departures(recipe: str, profile: str) -> dict[str, Any]:
    """Recipe fields that ``profile`` changes for ``recipe`` (:data:`RECIPE_DEPARTURES`; ``{}``: the paper's).

    >>> recipe_departures("cifar", "quick"), recipe_departures("cifar", "paper")
    ({'warmup_epochs': 1.0}, {})
    """
    check_choice(profile, PROFILES, "profile")
    return dict(RECIPE_DEPARTURES.get(recipe, {}).get(profile, {}))


def measurement(profile: str, experiment: str | None = None) -> dict[str, int]:
    """Probe-set size ``n_probe`` and number of seeds ``n_seeds`` at ``profile`` (for ``experiment``:
    with its departures of :data:`EXPERIMENTS`, ``first_seed`` included when it has one).

    >>> measurement("quick"), measurement("quick", "noisy")
    ({'n_probe': 200, 'n_seeds': 1}, {'n_probe': 300, 'n_seeds': 1})
    """
    check_choice(profile, PROFILES, "profile")
    out = dict(MEASUREMENT[profile])
    if profile == "dry":  # a dry run takes every seed of the grid it runs (e.g. seeds 1-10 of the paper's scale1d)
        seeds = measurement(GRID_OF[profile], experiment)
        out.update({"first_seed": seeds.get("first_seed", 0), "n_seeds": seeds["n_seeds"]})
    extra = EXPERIMENTS.get(experiment, {}).get(profile, {}) if experiment is not None else {}
    out.update({k: v for k, v in extra.items() if k in ("n_probe", "n_seeds", "first_seed")})
    return out


def experiment_sizes(experiment: str, profile: str) -> dict[str, Any]:
    """The sizes a sweep of ``experiment`` at ``profile`` refers to: ``n_probe``, ``seeds`` (the list
    of seeds), ``recipe_overrides`` (``{}`` unless :data:`EXPERIMENTS` sets some; a dry run keeps
    the paper's) and ``epochs`` of its training runs (``None``: the profile's, :data:`TRAINING`).

    >>> experiment_sizes("layers", "paper")
    {'n_probe': 500, 'seeds': [0, 1, 2, 3], 'recipe_overrides': {}, 'epochs': None}
    >>> experiment_sizes("layers", "laptop")["epochs"], experiment_sizes("architectures", "laptop")["epochs"]
    (250, None)
    >>> experiment_sizes("scale1d", "paper")["seeds"], experiment_sizes("scale1d", "dry")["seeds"]
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    """
    m = measurement(profile, experiment)
    first = m.get("first_seed", 0)
    own = EXPERIMENTS.get(experiment, {}).get(profile, {})
    overrides = dict(EXPERIMENTS.get(experiment, {}).get(GRID_OF[profile], {}).get("recipe_overrides", {})) if profile == "dry" else {}
    overrides.update(own.get("recipe_overrides", {}))
    return {"n_probe": m["n_probe"], "seeds": list(range(first, first + m["n_seeds"])), "recipe_overrides": overrides,
            "epochs": own.get("epochs")}


def _check_experiments() -> None:
    for experiment, by_profile in EXPERIMENTS.items():
        for profile, sizes in by_profile.items():
            if profile not in PROFILES or set(sizes) - set(_EXPERIMENT_KEYS):
                raise ValueError(f"EXPERIMENTS[{experiment!r}][{profile!r}]: profiles are {PROFILES}, keys {_EXPERIMENT_KEYS}; got {sorted(sizes)}")


_check_experiments()


_WIDTH_WORDS = {1.0: "full-width", 0.5: "half-width", 0.25: "quarter-width", 0.125: "eighth-width"}


def describe(recipe: str, profile: str, experiment: str | None = None) -> str:
    """A sentence fragment that says what ``recipe`` trains at ``profile``, from :data:`TRAINING`
    (for ``experiment``: with its departures of :data:`EXPERIMENTS`, e.g. a longer training).

    The book's "the quick profile trains …" sentences are made by this function, so they cannot
    drift from the sizes actually run.

    >>> describe("cifar", "paper")
    'full-width networks trained for 250 epochs on all the training images'
    >>> describe("cifar", "quick").split(", ")[-1]
    "with a linear learning-rate warm-up over the first epoch (not the paper's)"
    >>> describe("cifar", "laptop", "layers").split(" on ")[0]
    'quarter-width networks (the small nets at full width) trained for 250 epochs'
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
    n_epochs = (experiment_sizes(experiment, profile)["epochs"] if experiment is not None else None) or s.epochs
    epochs = f"{n_epochs:,} epoch{'s' if n_epochs != 1 else ''}"
    epochs = f"at most {epochs}" if recipe == "scale1d" else epochs
    extra = ""
    for key, value in recipe_departures(recipe, profile).items():
        if key == "warmup_epochs":
            span = "the first epoch" if value == 1 else f"the first {value:g} epochs"
            extra += f", with a linear learning-rate warm-up over {span} (not the paper's)"
        elif key == "clip_grad_norm":
            extra += f", with the gradient norm clipped to {value:g} (not the paper's)"
        else:
            extra += f", with {key} = {value} (not the paper's)"
    return f"{what} trained for {epochs} on {data}{extra}"


def table_markdown() -> str:
    """The profiles as one Markdown table (recipe x profile)."""
    rows = ["| recipe | profile | epochs | training set | test set | width factor | width | probes P (unless below) |", "|---|---|---|---|---|---|---|---|"]
    for recipe, sizes in TRAINING.items():
        for profile, s in sizes.items():
            d = asdict(s)
            rows.append(
                f"| {recipe} | {profile} | {d['epochs']:,} | {d['n_train'] or 'all'} | {d['n_test'] or 'all'} | "
                f"{d['width_factor']:g} | {d['width'] or 'default'} | {MEASUREMENT[profile]['n_probe']} |"
            )
    rows.append("")
    for recipe, by_profile in RECIPE_DEPARTURES.items():
        for profile, changes in by_profile.items():
            what = ", ".join(f"{k} = {v}" for k, v in changes.items())
            rows.append(f"Departure from the paper's recipe: `{recipe}` at `{profile}` trains with {what} (see the regime study).")
            rows.append("")
    rows.append(f"Small networks ({', '.join(sorted(SMALL_NETS))}) keep their full width at every profile.")
    rows += ["", "Experiments whose sizes depart from their profile's (seeds: the list of training seeds):", "",
             "| experiment | profile | probes P | seeds | recipe overrides |", "|---|---|---|---|---|"]
    for experiment, by_profile in EXPERIMENTS.items():
        for profile in PROFILES:
            if profile in by_profile:
                s = experiment_sizes(experiment, profile)
                seeds = s["seeds"] if len(s["seeds"]) < 3 else [s["seeds"][0], "…", s["seeds"][-1]]
                overrides = ", ".join(f"{k} = {v}" for k, v in s["recipe_overrides"].items()) or "-"
                rows.append(f"| {experiment} | {profile} | {s['n_probe']} | {', '.join(map(str, seeds))} | {overrides} |")
    return "\n".join(rows)
