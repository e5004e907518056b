r"""Training recipes of the paper (methods §7) and a resumable training loop.

Recipes (frozen :class:`Recipe` records in :data:`RECIPES`):

========== ===================================================================================
``cifar``   SGD, lr 0.1, momentum 0.9, weight decay 5e-4 on weights only (``ndim > 1``), cosine
            schedule with :math:`T_\max = 0.8\,\text{epochs}` stepped per epoch (it rises again
            after :math:`T_\max`, as PyTorch's ``CosineAnnealingLR`` does), batch 128, random crop
            (padding 4) + horizontal flip, cross-entropy, 250 epochs, best-test checkpoint (§7.1).
``fcn``     the same pipeline with Adam at lr 0.1 (the reference's CLI default, open choice
            O13), no weight decay, constant lr (§7.2).
``scale2d`` hinge loss :math:`\mathrm{mean}\,\mathrm{ReLU}(1 - y f(x))`, SGD lr 0.05, momentum 0.9,
            wd 5e-4 on weights, cosine as above, 300 epochs, batch 128, no augmentation (§7.3).
``scale1d`` hinge loss, plain SGD with step :math:`\mathrm{lr}\cdot H` (mean-field scaling, lr 0.01),
            batch 8, ridge penalty :math:`\lambda \sum_l \sum |W_l|^p / (H^{p/2} L)` on the conv
            weights, monitoring every 10 epochs and the stop-after-interpolation rule (§7.4).
``cifar_fast`` *not the paper's*: Nesterov SGD with a one-cycle schedule and label smoothing 0.1,
            for reaching a good accuracy in few epochs on a CPU (used by the benchmark).
========== ===================================================================================

:func:`fit` runs any recipe on any pair of loaders (:class:`~diffeosens.data.InMemoryLoader` or
anything yielding ``(x, y)`` batches): checkpoints ``init.pt``, ``best.pt`` (best test accuracy;
the paper's selection) and ``last.pt`` are written atomically; ``last.pt`` also holds the
optimiser, the random states and the history, so an interrupted run **resumes** where it
stopped and, on CPU, continues exactly as an uninterrupted one. Model checkpoints are plain
state dicts, loadable with ``torch.load(path, weights_only=True)``. Networks with 2D convolutions
train in channels-last memory format (faster on CPU and GPU); on CUDA the forward runs under bf16
autocast.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from .models.kinds import CONVOLUTIONS
from .validation import check_choice, check_nonnegative, check_positive_int, warn_caller
from .provenance import provenance, to_attr

__all__ = [
    "CheckpointError",
    "DATASETS",
    "RECIPES",
    "Loaders",
    "Recipe",
    "TrainResult",
    "TrainingSpec",
    "UnverifiedCheckpointWarning",
    "build_model",
    "check_checkpoint",
    "digest_path",
    "fit",
    "get_recipe",
    "training_spec",
    "load_checkpoint",
    "lr_at",
    "warmup_factor",
    "make_loaders",
    "param_groups",
    "save_atomic",
    "train_network",
    "verify_checkpoint",
]


@dataclass(frozen=True)
class Recipe:
    """A training recipe. Every field is a documented hyper-parameter of methods §7."""

    name: str
    optimizer: str = "sgd"  # "sgd" | "adam"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4  # on parameters with ndim > 1 only
    schedule: str = "cosine"  # "cosine" | "constant" | "onecycle"
    t_max_frac: float = 0.8  # cosine: T_max = t_max_frac * epochs
    epochs: int = 250
    batch_size: int = 128
    loss: str = "ce"  # "ce" | "hinge"
    label_smoothing: float = 0.0
    augment: bool = True
    lr_times_width: bool = False  # scale1d: the step is lr * H (mean-field learning rate)
    ridge: float = 0.0  # scale1d: ridge * sum_l sum |W_l|^p / (H^(p/2) L) on conv weights
    ridge_p: float = 2.0
    monitor_every: int = 1  # evaluate every this many epochs
    stop_rule: str = "none"  # "none" | "interpolation" (scale1d)
    interpolation_factor: float = 500.0  # scale1d: stop at e >= factor * e0 with zero train loss and val error
    select: str = "best_test"  # checkpoint used downstream: "best_test" | "last"
    warmup_epochs: float = 0.0  # > 0: the lr ramps linearly per step from ~0 over this many epochs (not the paper's)
    clip_grad_norm: float = 0.0  # > 0: rescale the gradient to at most this total 2-norm (not the paper's; 0: off)

    def with_(self, **changes: Any) -> "Recipe":
        """A copy with some fields changed (unknown fields raise a clear error)."""
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown recipe field(s) {sorted(unknown)}; valid fields: {sorted(self.__dataclass_fields__)}")
        return replace(self, **changes)


RECIPES: dict[str, Recipe] = {
    "cifar": Recipe("cifar"),
    "fcn": Recipe("fcn", optimizer="adam", lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant"),
    "scale2d": Recipe("scale2d", lr=0.05, epochs=300, loss="hinge", augment=False),
    "scale1d": Recipe(
        "scale1d", lr=0.01, momentum=0.0, weight_decay=0.0, schedule="constant", epochs=600_000, batch_size=8,
        loss="hinge", augment=False, lr_times_width=True, ridge=0.01, ridge_p=2.0, monitor_every=10,
        stop_rule="interpolation", select="last",
    ),
    "cifar_fast": Recipe("cifar_fast", lr=0.2, nesterov=True, schedule="onecycle", epochs=20, label_smoothing=0.1),
}


def get_recipe(recipe: str | Recipe) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    check_choice(recipe, RECIPES, "recipe")
    return RECIPES[recipe]


def lr_at(recipe: Recipe, epoch: float, epochs: int) -> float:
    r"""Learning rate at (fractional) ``epoch`` of an ``epochs``-long run.

    ``cosine``: :math:`\eta_0 \frac12 (1 + \cos(\pi e / T_\max))` with :math:`T_\max =` ``t_max_frac``
    × epochs and :math:`e` the integer epoch (stepped once per epoch; continues past
    :math:`T_\max`, open choice O15). ``onecycle``: linear warm-up over the first 25 % of the run
    to :math:`\eta_0`, then cosine decay to 0. ``constant``: :math:`\eta_0`.

    >>> round(lr_at(RECIPES["cifar"], 200, 250), 12), round(lr_at(RECIPES["cifar"], 249, 250), 4)
    (0.0, 0.0141)
    """
    if recipe.schedule == "constant":
        return recipe.lr
    if recipe.schedule == "cosine":
        t_max = recipe.t_max_frac * epochs
        return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * math.floor(epoch) / t_max))
    if recipe.schedule == "onecycle":
        frac = epoch / epochs
        if frac < 0.25:
            return recipe.lr * frac / 0.25
        return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * (frac - 0.25) / 0.75))
    raise ValueError(f"unknown schedule {recipe.schedule!r}; valid: constant, cosine, onecycle")


def warmup_factor(recipe: Recipe, progress: float) -> float:
    r"""The linear warm-up multiplier :math:`\min(1, e/e_w)` of the lr after ``progress`` epochs
    (fractional: step :math:`b` of :math:`n` in epoch :math:`e` ends at :math:`e + (b+1)/n`);
    1 when ``recipe.warmup_epochs`` is 0 (the paper's recipes).

    >>> warmup_factor(RECIPES["cifar"].with_(warmup_epochs=2), 0.5), warmup_factor(RECIPES["cifar"], 0.5)
    (0.25, 1.0)
    """
    if recipe.warmup_epochs <= 0:
        return 1.0
    return min(1.0, progress / recipe.warmup_epochs)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on parameters with more than one dimension (conv and linear weights) only."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _width_of(model: nn.Module) -> int:
    """H of a mean-field net: the ``width`` attribute, or the widest conv output."""
    w = getattr(model, "width", None)
    if isinstance(w, int):
        return w
    convs = [m.out_channels for m in model.modules() if isinstance(m, CONVOLUTIONS)]
    return max(convs) if convs else 1


def _conv_weights(model: nn.Module) -> list[Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, CONVOLUTIONS)]


def _make_optimizer(model: nn.Module, recipe: Recipe, lr_scale: float) -> torch.optim.Optimizer:
    lr = recipe.lr * lr_scale
    groups = param_groups(model, recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; valid: sgd, adam")


def _loss(recipe: Recipe, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Batch-mean loss and the number of correct predictions."""
    if recipe.loss == "hinge":
        f = out.reshape(-1).float()
        yy = y.reshape(-1).to(f.dtype)
        return torch.relu(1.0 - yy * f).mean(), (yy * f > 0).sum()
    out = out.float()
    return nn.functional.cross_entropy(out, y, label_smoothing=recipe.label_smoothing), (out.argmax(1) == y).sum()


def _ridge(conv_weights: list[Tensor], width: int, recipe: Recipe) -> Tensor:
    r"""``recipe.ridge`` :math:`\cdot \sum_l \|w_l\|_p^p / (h^{p/2} L)` over the :math:`L` conv weights of a width-:math:`h` network."""
    total = sum(w.abs().pow(recipe.ridge_p).sum() for w in conv_weights)
    return recipe.ridge * total / (width ** (recipe.ridge_p / 2) * max(len(conv_weights), 1))


def digest_path(path: str | os.PathLike) -> Path:
    """The file beside checkpoint ``path`` that holds its SHA-256 content hash (``best.pt.sha256``)."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a partial file.

    The file's SHA-256 is recorded beside it (:func:`digest_path`) and checked by every load
    (:func:`check_checkpoint`, :func:`load_checkpoint`, resuming :func:`fit`), so a checkpoint
    corrupted on disk is an error naming it, never silently wrong weights. While the file is
    replaced the record lists both the old and the new hash, so an interrupted save leaves a
    consistent pair whichever file survived.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    new = _sha256(tmp)
    record = digest_path(path)
    old = [line.strip() for line in record.read_text().splitlines() if line.strip()] if record.is_file() and path.is_file() else []
    _write_text_atomic(record, "\n".join([new, *old]) + "\n")
    os.replace(tmp, path)
    _write_text_atomic(record, new + "\n")


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or holds no state dict (the message names the file)."""


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint has no recorded content hash (written before diffeosens recorded them, or by
    another tool), so :func:`verify_checkpoint` cannot tell whether it changed on disk."""


def verify_checkpoint(path: str | os.PathLike) -> bool:
    """Check ``path`` against the SHA-256 recorded when :func:`save_atomic` wrote it.

    Returns ``True`` when it matches, ``False`` (with an :class:`UnverifiedCheckpointWarning`) when
    no hash was recorded; raises :class:`CheckpointError` naming the file when it does not match
    (the file changed after it was written: corrupted, or edited).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    record = digest_path(path)
    if not record.is_file():
        warn_caller(f"checkpoint {path} has no recorded content hash ({record.name}): it cannot be verified", UnverifiedCheckpointWarning)
        return False
    allowed = {line.strip() for line in record.read_text().splitlines() if line.strip()}
    if _sha256(path) not in allowed:
        raise CheckpointError(f"checkpoint {path} does not match the content hash recorded when it was written ({record}): "
                              "the file is corrupt or was changed; delete its run folder to retrain it")
    return True


def _read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    path = Path(path)
    verify_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError/EOFError/UnpicklingError/... for bad files
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated or corrupt? delete it to re-run its cell): "
                              f"{type(err).__name__}: {' '.join(str(err).split())[:200]}") from err
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors")
    return state


def check_checkpoint(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` (naming ``path``) unless it loads as a state dict with ``weights_only=True``."""
    _read_checkpoint(path, map_location="cpu")


def load_checkpoint(model: nn.Module, path: str | os.PathLike, *, map_location: Any = "cpu") -> nn.Module:
    """Load a model state dict (``init.pt``/``best.pt``, or the ``model`` entry of ``last.pt``).

    Files are read with ``torch.load(..., weights_only=True)``. A ``module.`` prefix (from
    ``DataParallel``) is stripped. A missing, truncated or foreign file raises
    :class:`CheckpointError` naming it; a state dict that does not fit ``model`` too.
    """
    state = _read_checkpoint(path, map_location)
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not fit {type(model).__name__}: {' '.join(str(err).split())[:300]}") from err
    return model


@dataclass
class TrainResult:
    """What :func:`fit` returns: the trained model (the *last* weights), its history and files."""

    model: nn.Module
    history: xr.Dataset
    best_epoch: int
    best_test_acc: float
    checkpoints: dict[str, Path] = field(default_factory=dict)


def _evaluate(model: nn.Module, loader: Iterable[Any], recipe: Recipe, device: torch.device, amp: bool) -> tuple[float, float]:
    model.eval()
    total = 0
    # summed on the device (float64, exact as a Python float would be): no GPU sync per batch
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss, ok = _loss(recipe, model(x), y)
            total += y.shape[0]
            loss_sum += loss.detach().double() * y.shape[0]
            correct += ok
    return float(loss_sum) / max(total, 1), int(correct) / max(total, 1)


def _state(loader: Any) -> dict[str, Tensor] | None:
    return loader.state_dict() if hasattr(loader, "state_dict") else None


def _history_dataset(hist: dict[str, list[float]], attrs: dict[str, Any]) -> xr.Dataset:
    epochs = np.array(hist["epoch"], dtype=np.int64)
    units = {"train_loss": "1", "train_acc": "1", "test_loss": "1", "test_acc": "1", "lr": "1", "clipped_frac": "1", "time_s": "s"}
    long = {
        "train_loss": "training loss (epoch average, without regularisers)",
        "train_acc": "training accuracy (epoch average, augmented batches)",
        "test_loss": "test loss", "test_acc": "test accuracy", "lr": "learning rate",
        "clipped_frac": "fraction of the epoch's steps whose gradient norm was clipped (recipe.clip_grad_norm)",
        "time_s": "cumulative training time",
    }
    ds = xr.Dataset(
        {k: ("epoch", np.asarray(hist[k], dtype=np.float64), {"long_name": long[k], "units": units[k]}) for k in units},
        coords={"epoch": epochs},
    )
    ds.attrs["schema"] = "diffeosens.history/1"
    ds.attrs.update({k: to_attr(v) for k, v in attrs.items()})
    return ds


def fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    test_loader: Iterable[Any],
    recipe: str | Recipe = "cifar",
    *,
    epochs: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = True,
    val_loader: Iterable[Any] | None = None,
    progress: bool = True,
    max_minutes: float | None = None,
    amp: bool | None = None,
    attrs: dict[str, Any] | None = None,
    on_epoch: Callable[[int, nn.Module, dict[str, list[float]]], None] | None = None,
    channels_last: bool | None = None,
) -> TrainResult:
    r"""Train ``model`` with ``recipe`` and keep the paper's checkpoints.

    Args:
        model: a freshly built network (its current weights are saved as ``init.pt``).
        train_loader, test_loader: iterables of ``(x, y)`` batches; class indices for ``"ce"``,
            :math:`\pm1` labels for ``"hinge"``. If they have ``state_dict``/``load_state_dict``
            (:class:`~diffeosens.data.InMemoryLoader`), their random state is checkpointed too.
        recipe: a name of :data:`RECIPES` or a :class:`Recipe`.
        epochs: overrides ``recipe.epochs`` (the schedule is stretched to it).
        seed: seeds torch's global RNG at the start (dropout) for a reproducible CPU run.
        device: default: CUDA if available, else CPU.
        out_dir: where ``init.pt``, ``best.pt``, ``last.pt`` and ``history.nc`` go (``None``: keep
            nothing on disk, no resuming).
        resume: continue from ``out_dir/last.pt`` if it exists (a finished run returns at once).
            ``last.pt`` is written after every evaluated epoch (every ``recipe.monitor_every``
            epochs) and after the last one; a resumed run repeats the epochs since then exactly.
        val_loader: the validation set of the ``interpolation`` stopping rule (scale1d).
        progress: tqdm progress bar with epoch, loss and accuracy.
        max_minutes: stop after the first epoch that ends past this wall-clock budget.
        amp: bf16 autocast; default on for CUDA.
        attrs: extra attributes for the history (e.g. the architecture and dataset).
        on_epoch: called as ``on_epoch(epoch, model, history)`` after every epoch (``epoch``
            counts from 1; ``history`` maps each column of the history to its values so far), after
            the resume point is written, with the model in eval mode and under no autograd. It is
            for observing a run (e.g. measuring snapshots): torch's global random state is restored
            after it, so a run with a callback trains exactly as one without.
        channels_last: train a network with 2D convolutions in the channels-last memory format
            (``None``, the default: yes on every device; ``bench/train_throughput.py`` measured
            1.25x the NCHW throughput of VGG11 x0.25 on a 2-core CPU, gradients equal to float32
            rounding). The weights saved are the same parameters in either format.

    Returns:
        :class:`TrainResult` with the last-epoch model, the history (:class:`xarray.Dataset` over
        ``epoch``), the best epoch/test accuracy, and the checkpoint paths.
    """
    recipe = get_recipe(recipe)
    epochs = check_positive_int(epochs if epochs is not None else recipe.epochs, "epochs")
    check_choice(recipe.loss, ("ce", "hinge"), "recipe.loss")
    check_choice(recipe.stop_rule, ("none", "interpolation"), "recipe.stop_rule")
    check_nonnegative(recipe.warmup_epochs, "recipe.warmup_epochs", "0: no warm-up")
    check_nonnegative(recipe.clip_grad_norm, "recipe.clip_grad_norm", "0: no clipping")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = (dev.type == "cuda") if amp is None else bool(amp)
    if recipe.stop_rule == "interpolation" and val_loader is None:
        raise ValueError("recipe with stop_rule='interpolation' needs a val_loader (the validation set)")
    torch.manual_seed(seed)
    model = model.to(dev)
    # channels-last for 2D convolutions, on CUDA and on the CPU (bench/train_throughput.py: 1.25x the
    # training throughput of the NCHW loop on a 2-core CPU, gradients equal to float32 rounding)
    has_conv2d = any(isinstance(m, nn.Conv2d) for m in model.modules())
    channels_last = has_conv2d if channels_last is None else bool(channels_last) and has_conv2d
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # constant over training (parameters are updated and reloaded in place)
    width, conv_weights = _width_of(model), _conv_weights(model)
    lr_scale = width if recipe.lr_times_width else 1.0
    opt = _make_optimizer(model, recipe, lr_scale)
    out = Path(out_dir) if out_dir is not None else None
    paths = {k: out / f"{k}.pt" for k in ("init", "best", "last")} if out else {}

    hist: dict[str, list[float]] = {k: [] for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "clipped_frac", "time_s")}
    start_epoch, best_acc, best_epoch, elapsed, e0, finished = 0, -1.0, -1, 0.0, None, False
    if out and resume and paths["last"].exists():
        verify_checkpoint(paths["last"])  # a resume point that changed on disk is an error naming it
        try:
            ck = torch.load(paths["last"], map_location=dev, weights_only=True)
        except Exception as err:  # noqa: BLE001 - a truncated resume point is named, never a bare torch error
            raise CheckpointError(f"resume point {paths['last']} cannot be read (truncated or corrupt?): delete it to "
                                  f"restart this run from scratch ({type(err).__name__})") from err
        for name in ("init", "best"):
            if paths[name].exists() or name == "init":
                try:
                    check_checkpoint(paths[name])
                except CheckpointError as err:
                    raise CheckpointError(f"{err}; its run in {out} cannot be resumed without it: delete {out} to retrain") from err
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng"].cpu())
        for loader, key in ((train_loader, "train_loader"), (test_loader, "test_loader"), (val_loader, "val_loader")):
            if ck.get(key) is not None and hasattr(loader, "load_state_dict"):
                loader.load_state_dict(ck[key])
        hist = {k: list(v) for k, v in ck["history"].items()}
        hist.setdefault("clipped_frac", [math.nan] * len(hist["epoch"]))  # resume points written before it existed
        start_epoch, best_acc, best_epoch = int(ck["epoch"]) + 1, float(ck["best_acc"]), int(ck["best_epoch"])
        elapsed, finished = float(ck["elapsed"]), bool(ck.get("finished", False))
        e0 = None if int(ck.get("e0", -1)) < 0 else int(ck["e0"])
    elif out:
        save_atomic(model.state_dict(), paths["init"])

    bar = None
    if progress and not finished:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start_epoch, desc=f"train {type(model).__name__}", unit="epoch")
    n_batches = len(train_loader) if hasattr(train_loader, "__len__") else None
    if recipe.warmup_epochs > 0 and not n_batches:
        raise ValueError("recipe.warmup_epochs needs a train_loader with a length (batches per epoch)")
    t_start = time.perf_counter() - elapsed
    epoch = start_epoch - 1
    for epoch in range(start_epoch, 0 if finished else epochs):
        model.train()
        tot = 0
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)  # on the device: no GPU sync per batch
        correct = torch.zeros((), dtype=torch.long, device=dev)
        clipped = torch.zeros((), dtype=torch.long, device=dev)
        steps = 0
        epoch_lr = lr = lr_at(recipe, epoch, epochs)
        for b, (x, y) in enumerate(train_loader):
            lr = lr_at(recipe, epoch + b / n_batches, epochs) if recipe.schedule == "onecycle" and n_batches else epoch_lr
            if recipe.warmup_epochs > 0:
                lr *= warmup_factor(recipe, epoch + (b + 1) / n_batches)
            for g in opt.param_groups:
                g["lr"] = lr * lr_scale
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                loss, ok = _loss(recipe, model(x), y)
            total = loss + _ridge(conv_weights, width, recipe) if recipe.ridge > 0 else loss
            opt.zero_grad(set_to_none=True)
            total.backward()
            if recipe.clip_grad_norm > 0:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad_norm)
                clipped += norm > recipe.clip_grad_norm
            opt.step()
            steps += 1
            tot += y.shape[0]
            loss_sum += loss.detach().double() * y.shape[0]
            correct += ok
        train_loss, train_acc = float(loss_sum) / max(tot, 1), int(correct) / max(tot, 1)
        monitor = (epoch + 1) % recipe.monitor_every == 0 or epoch == epochs - 1
        test_loss, test_acc = _evaluate(model, test_loader, recipe, dev, amp) if monitor else (math.nan, math.nan)
        hist["epoch"].append(epoch + 1)
        clipped_frac = int(clipped) / max(steps, 1)
        for k, v in (("train_loss", train_loss), ("train_acc", train_acc), ("test_loss", test_loss), ("test_acc", test_acc), ("lr", lr),
                     ("clipped_frac", clipped_frac)):
            hist[k].append(v)
        hist["time_s"].append(time.perf_counter() - t_start)
        if monitor and test_acc > best_acc:
            best_acc, best_epoch = test_acc, epoch + 1
            if out:
                save_atomic(model.state_dict(), paths["best"])
        stop = False
        if recipe.stop_rule == "interpolation" and monitor:
            _, val_acc = _evaluate(model, val_loader, recipe, dev, amp)
            if e0 is None and train_loss == 0.0:
                e0 = epoch + 1
            if e0 is not None:
                stop = recipe.ridge == 0 or (epoch + 1 >= recipe.interpolation_factor * e0 and train_loss == 0.0 and val_acc == 1.0)
        if max_minutes is not None and (time.perf_counter() - t_start) / 60 > max_minutes:
            stop = True
        finished = stop or epoch == epochs - 1
        if out and (monitor or finished):  # the resume point: every evaluated epoch and the last one
            save_atomic(
                {
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "best_acc": best_acc,
                    "best_epoch": best_epoch, "elapsed": time.perf_counter() - t_start, "rng": torch.get_rng_state(),
                    "train_loader": _state(train_loader), "test_loader": _state(test_loader),
                    "val_loader": _state(val_loader) if val_loader is not None else None,
                    "history": hist, "e0": -1 if e0 is None else e0, "finished": finished,
                },
                paths["last"],
            )
        if on_epoch is not None:
            rng = torch.get_rng_state()
            model.eval()
            with torch.no_grad():
                on_epoch(epoch + 1, model, {k: list(v) for k, v in hist.items()})
            torch.set_rng_state(rng)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{train_acc:.3f}", test=f"{test_acc:.3f}")
        if stop:
            break
    if bar is not None:
        bar.close()
    if out and best_epoch < 0:  # no evaluation happened: the last weights are the best we have
        save_atomic(model.state_dict(), paths["best"])
    info = {
        "recipe": asdict(recipe), "recipe_name": recipe.name, "epochs": epochs, "seed": seed, "best_epoch": best_epoch,
        "best_test_acc": best_acc, "stopped_epoch": hist["epoch"][-1] if hist["epoch"] else 0,
        "interpolation_epoch": -1 if e0 is None else e0, "model": type(model).__name__,
        "model_params": int(sum(p.numel() for p in model.parameters())),
        "provenance": provenance(dev, hist["time_s"][-1] if hist["time_s"] else 0.0),
    }
    history = _history_dataset(hist, {**info, **(attrs or {})})
    if out:
        from .results import save

        save(history, out / "history.nc")
    model.eval()
    return TrainResult(model=model, history=history, best_epoch=best_epoch, best_test_acc=best_acc,
                       checkpoints={k: v for k, v in paths.items() if v.exists()})


# ------------------------------------------------------------------------------------------------
# Data and one-call training
# ------------------------------------------------------------------------------------------------

#: Datasets :func:`make_loaders` knows, and the input shape (C, H, W or C, N) of each.
DATASETS = {"cifar10": (3, 32, 32), "mnist": (1, 28, 28), "fashionmnist": (1, 28, 28), "twopoints": (1, 28, 28), "scale1d": (1, 128)}


@dataclass
class Loaders:
    """Train/test (and, for the 1D task, validation) loaders of one dataset."""

    train: Any
    test: Any
    val: Any = None
    info: dict[str, Any] = field(default_factory=dict)


def make_loaders(
    dataset: str,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    batch_size: int = 128,
    test_batch_size: int = 500,
    augment: bool = False,
    train_noise: float = 0.0,
    seed: int = 0,
    device: torch.device | str | None = None,
    root: str | os.PathLike | None = None,
    **task: Any,
) -> Loaders:
    r"""In-memory loaders for a dataset of the paper.

    Args:
        dataset: ``cifar10``, ``mnist``, ``fashionmnist`` (real data, normalised as in
            methods §6.1), ``twopoints`` (2D scale detection, §6.3; labels :math:`\pm1`) or
            ``scale1d`` (1D task T2, §6.4; labels :math:`\pm1`).
        n_train: training images (a seeded random subset; ``None`` = all); for ``twopoints`` the
            paper's ``ptr``; for ``scale1d`` the number of training points.
        n_test: test images (the first ``n_test`` of the test split; ``None`` = all).
        augment: random crop (padding 4) + horizontal flip (real images only).
        train_noise: the norm of the Gaussian corruption added to train and test images,
            redrawn at every pass (methods §6.2).
        seed: data order, augmentation, subset and corruption.
        **task: options of :func:`~diffeosens.data.twopoints_dataset` or
            :func:`~diffeosens.data.scale1d_dataset` (e.g. ``xi``, ``gap``).
    """
    from . import data as D

    check_choice(dataset, DATASETS, "dataset")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dataset in ("cifar10", "mnist", "fashionmnist"):
        if task:
            raise ValueError(f"unknown option(s) {sorted(task)} for dataset {dataset!r}")
        train, test = D.make_loaders(dataset, root=root, batch_size=batch_size, test_batch_size=test_batch_size, augment=augment,
                                     corruption=train_noise, subset=n_train, subset_seed=seed if n_train else None,
                                     test_subset=n_test, seed=seed, device=dev)
        return Loaders(train, test, info={"n_train": train.num_samples, "n_test": test.num_samples})
    if train_noise:
        raise ValueError("train_noise applies to the real-image datasets only")
    if dataset == "twopoints":
        tp = D.twopoints_dataset(ptr=n_train or 1024, testsize=n_test, seed=seed, device=dev, **task)
        train = D.InMemoryLoader(tp.train.images, tp.train.signs.float(), batch_size=batch_size, seed=seed, device=dev)
        test = D.eval_loader(tp.test.images, tp.test.signs.float(), batch_size=test_batch_size, seed=seed + 1, device=dev)
        return Loaders(train, test, info={"n_train": len(tp.train.images), "n_test": len(tp.test.images)})
    s1 = D.scale1d_dataset(n_train=n_train or 512, seed=seed, device=dev, **task)
    test_split = s1.test if n_test is None else _first(s1.test, n_test)
    train = D.InMemoryLoader(s1.train.images, s1.train.signs.float(), batch_size=batch_size, seed=seed, device=dev)
    val = D.eval_loader(s1.val.images, s1.val.signs.float(), batch_size=test_batch_size, device=dev)
    test = D.eval_loader(test_split.images, test_split.signs.float(), batch_size=test_batch_size, device=dev)
    return Loaders(train, test, val, info={"n_train": len(s1.train.images), "n_test": len(test_split.images)})


def _first(split: Any, n: int) -> Any:
    return replace(split, **{f: getattr(split, f)[:n] for f in ("images", "labels", "signs", "positions", "index")})


def build_model(arch: str, *, seed: int = 0, dataset: str = "cifar10", recipe: str | Recipe = "cifar", **options: Any) -> nn.Module:
    """A freshly initialised zoo model for ``dataset`` (input channels, classes), seeded.

    The initialisation only consumes torch's global RNG inside a forked RNG scope, so building
    a model does not disturb the caller's random stream.
    """
    from . import models

    rec = get_recipe(recipe)
    channels = DATASETS[dataset][0] if dataset in DATASETS else 3
    classes = 1 if rec.loss == "hinge" else 10
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return models.build(arch, num_classes=classes, in_channels=channels, **options)


@dataclass(frozen=True)
class TrainingSpec:
    """What :func:`train_network` will train: the recipe (with the profile's departures and the
    overrides applied), epochs (for ``scale1d``: the most, the run stops at its interpolation rule),
    training/test set sizes (``None``: the whole split), width factor and model options."""

    recipe: Recipe
    epochs: int
    n_train: int | None
    n_test: int | None
    width_factor: float
    model_options: dict[str, Any]


def training_spec(
    arch: str,
    *,
    dataset: str = "cifar10",
    recipe: str | Recipe = "cifar",
    profile: str = "quick",
    activation: str | None = None,
    epochs: int | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    width_factor: float | None = None,
    model_options: dict[str, Any] | None = None,
    recipe_overrides: dict[str, Any] | None = None,
) -> TrainingSpec:
    """The :class:`TrainingSpec` of a :func:`train_network` call (the same arguments), without training:
    the one place where a profile's sizes and recipe departures meet the explicit arguments (the
    cost plan, :mod:`diffeosens.plan`, reads it too)."""
    from . import profiles

    if recipe == "auto":  # the paper's choice per family: Adam for the fully connected nets
        recipe = "fcn" if arch.startswith("DenseNet") else {"twopoints": "scale2d", "scale1d": "scale1d"}.get(dataset, "cifar")
    rec = get_recipe(recipe)
    departures = profiles.recipe_departures(rec.name, profile)  # where the profile is not the paper's recipe
    if departures or recipe_overrides:
        rec = rec.with_(**{**departures, **dict(recipe_overrides or {})})
    size = profiles.training(rec.name if rec.name in profiles.TRAINING else "cifar", profile, arch)
    options = dict(model_options or {})
    if size.width is not None and "width" not in options:
        options["width"] = size.width
    if activation is not None and activation != "default":  # "default": the family's own (ReLU; swish for EfficientNet)
        options["activation"] = activation
    return TrainingSpec(rec, epochs if epochs is not None else size.epochs, n_train if n_train is not None else size.n_train,
                        n_test if n_test is not None else size.n_test,
                        width_factor if width_factor is not None else size.width_factor, options)


def train_network(
    arch: str,
    *,
    dataset: str = "cifar10",
    recipe: str | Recipe = "cifar",
    profile: str = "quick",
    activation: str | None = None,
    seed: int = 0,
    train_noise: float = 0.0,
    out_dir: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    epochs: int | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    width_factor: float | None = None,
    model_options: dict[str, Any] | None = None,
    task: dict[str, Any] | None = None,
    root: str | os.PathLike | None = None,
    progress: bool = True,
    attrs: dict[str, Any] | None = None,
    recipe_overrides: dict[str, Any] | None = None,
    on_epoch: Callable[[int, nn.Module, dict[str, list[float]]], None] | None = None,
) -> TrainResult:
    """Build ``arch``, make the loaders and :func:`fit` it with ``recipe`` at ``profile`` size.

    ``recipe="auto"`` picks the paper's recipe for the architecture and dataset (``fcn`` for the
    DenseNetL* nets, ``scale2d``/``scale1d`` for the tasks, ``cifar`` otherwise);
    ``recipe_overrides`` changes recipe fields (recorded in the history).

    Explicit ``epochs``/``n_train``/``n_test``/``width_factor`` override the profile
    (:mod:`diffeosens.profiles`). The history's attributes record every choice. ``on_epoch`` is
    passed to :func:`fit` (an observer called after every epoch).
    """
    spec = training_spec(arch, dataset=dataset, recipe=recipe, profile=profile, activation=activation, epochs=epochs,
                         n_train=n_train, n_test=n_test, width_factor=width_factor, model_options=model_options,
                         recipe_overrides=recipe_overrides)
    rec, epochs, n_train, n_test, width_factor, options = (spec.recipe, spec.epochs, spec.n_train, spec.n_test,
                                                           spec.width_factor, spec.model_options)
    model = build_model(arch, seed=seed, dataset=dataset, recipe=rec, width_factor=width_factor, **options)
    loaders = make_loaders(dataset, n_train=n_train, n_test=n_test, batch_size=rec.batch_size, augment=rec.augment and dataset == "cifar10",
                           train_noise=train_noise, seed=seed, device=device, root=root, **(task or {}))
    extra = {
        "arch": arch, "dataset": dataset, "profile": profile, "activation": activation if activation not in (None, "") else "default", "train_noise": train_noise,
        "width_factor": width_factor, "n_train": loaders.info["n_train"], "n_test": loaders.info["n_test"],
        "model_options": options, "task": task or {}, **(attrs or {}),
    }
    result = fit(model, loaders.train, loaders.test, rec, epochs=epochs, seed=seed, device=device, out_dir=out_dir,
                 val_loader=loaders.val, progress=progress, attrs=extra, on_epoch=on_epoch)
    return result
