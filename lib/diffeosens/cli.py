"""Command line: ``diffeosens sweep``, ``diffeosens plan``, ``diffeosens measure``, ``diffeosens profiles``, ``diffeosens data``.

Also reachable as ``python -m diffeosens ...``. Each sub-command parses its arguments and calls
one library function. Every error is one line on standard error and exit status 2 (set
``DIFFEOSENS_DEBUG=1`` for the traceback); a sweep whose cells failed exits with 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .profiles import PROFILES


class CLIError(Exception):
    """A user error found by the command line itself (bad path, unavailable device, ...)."""

__all__ = ["main"]


def _sweep_profile(args: argparse.Namespace) -> str:
    """``--dry-run`` runs the ``dry`` profile: the paper's grid at tiny sizes (:mod:`diffeosens.profiles`);
    otherwise ``--profile``, by default that of ``make book`` (``profiles.DEFAULT``)."""
    from .profiles import DEFAULT

    if not getattr(args, "dry_run", False):
        return args.profile or DEFAULT
    if args.profile not in (None, "paper", "dry"):
        raise CLIError(f"--dry-run runs the paper profile's grid at tiny sizes; it goes with --profile paper (or none), not {args.profile!r}")
    return "dry"


def _cmd_plan(args: argparse.Namespace) -> int:
    from .sweep import book_configs

    return _print_plan(args.configs or [str(p) for p in book_configs()], args.profile, args.device, args.root,
                       measure=not args.no_measure)


def _print_plan(configs: Sequence[str], profile: str, device: str | None, root: str | None, *, measure: bool,
                select: dict[str, list[str]] | None = None, stages: Sequence[str] | None = None) -> int:
    """Print the cost plan of ``configs`` at ``profile`` (:func:`diffeosens.plan.plan_profile`)."""
    from .plan import plan_profile
    from .sweep import SweepError

    # a device that is not here can still be priced (from FLOPs, marked as estimated) when nothing is timed
    device = (device or "cpu") if not measure else (_check_device(device) or "cpu")
    try:
        plan = plan_profile(configs, profile, device=device, root=root, measure=measure, select=select, stages=stages)
    except SweepError as err:
        raise CLIError(str(err)) from err
    print(plan.table())
    return 0


def _selection(items: Sequence[str] | None) -> dict[str, list[str]] | None:
    """``--select axis=value`` (repeatable; values of one axis are alternatives) as ``{axis: [values]}``."""
    if not items:
        return None
    out: dict[str, list[str]] = {}
    for item in items:
        axis, sep, value = item.partition("=")
        if not sep or not axis.strip() or not value.strip():
            raise CLIError(f"--select takes axis=value (e.g. --select arch=ResNet50), got {item!r}")
        out.setdefault(axis.strip(), []).append(value.strip())
    return out


def _batch_size(text: str) -> int | str:
    """``--batch-size``: ``auto`` or a positive integer (argparse turns the ValueError into a usage error)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or auto, got {text!r}")
    return value


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import SweepError, run_sweep

    if args.jobs < 1:
        raise CLIError(f"--jobs must be >= 1, got {args.jobs}")
    profile = _sweep_profile(args)
    if args.plan:
        return _print_plan([args.config], profile, args.device, args.root, measure=not args.no_measure,
                           select=_selection(args.select), stages=args.stage)
    if args.no_measure or args.device:
        raise CLIError("--device and --no-measure go with --plan only (a sweep runs each cell on the device its notebook picks)")
    try:
        report = run_sweep(
            args.config, profile=profile, root=args.root, jobs=args.jobs, scheduler=args.scheduler,
            dask_workers=args.dask_workers, stages=args.stage, force=args.force,
            progress="none" if args.no_progress else args.progress,
            stale=args.stale, fresh_kernels=True if args.fresh_kernels else None, select=_selection(args.select),
        )
    except SweepError as err:
        raise CLIError(str(err)) from err
    print(report.summary())
    return 0 if report.ok else 1


def _cmd_measure(args: argparse.Namespace) -> int:
    from . import results
    from .usermodels import measure_model

    layers = args.layers if args.layers in ("default", "all", "output") else [s.strip() for s in args.layers.split(",") if s.strip()]
    out = _check_out(args.out)  # before any computation
    device = _check_device(args.device)
    ds = measure_model(
        args.model, checkpoint=args.checkpoint, data=args.data, root=args.root, n_probe=args.n_probe,
        probe_seed=args.probe_seed, model_seed=args.model_seed, layers=layers, delta=args.delta, cut=args.cut, seed=args.seed,
        batch_size=args.batch_size, init_bn=args.init_bn, device=device, progress=True,
        estimator=args.estimator, median=args.median, n_draws=args.n_draws, interp=args.interp,
    )
    results.save(ds, out, grid={"model": args.model})
    print(ds[["D", "G", "R"]].to_dataframe().to_string())
    print(f"wrote {args.out}")
    return 0


def _check_out(out: str) -> Path:
    """The output file must be a ``.nc`` path in an existing, writable folder (checked before computing)."""
    path = Path(out)
    if path.suffix != ".nc":
        raise CLIError(f"--out must name a netCDF file ending in .nc, got {out!r}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CLIError(f"--out {out!r}: the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and (path.is_dir() or not os.access(path, os.W_OK))):
        raise CLIError(f"--out {out!r}: cannot write there (permission denied or a directory)")
    return path


def _check_device(device: str | None) -> str | None:
    """A device torch knows and this machine has (e.g. cpu, cuda, cuda:1): the API's one check."""
    from .validation import check_device

    try:
        check_device(device, name="--device")
    except (TypeError, ValueError) as err:
        raise CLIError(str(err)) from err
    return device


def _cmd_profiles(_: argparse.Namespace) -> int:
    from .profiles import table_markdown

    print(table_markdown())
    return 0


def _dataset_keys(names: Sequence[str]) -> list[str]:
    """Canonical dataset names (``CIFAR-10`` -> ``cifar10``), in order, without repeats."""
    from .data.vision import DATASETS, canonical_name

    keys: list[str] = []
    for name in names:
        try:
            key = canonical_name(name)
        except ValueError:
            raise CLIError(f"unknown dataset {name!r}; valid names are {', '.join(DATASETS)}") from None
        if key not in keys:
            keys.append(key)
    return keys


def _check_data_root(root: str | None) -> Path | None:
    if root is None:
        return None
    path = Path(root).expanduser()
    if path.exists() and not path.is_dir():
        raise CLIError(f"--root {root!r} is not a folder")
    return path


def _cmd_data_download(args: argparse.Namespace) -> int:
    from .data.vision import download_dataset, download_root, locate

    keys = _dataset_keys(args.datasets)
    root = _check_data_root(args.root)
    for key in keys:
        if root is None:
            found, searched = locate(key)
            if found is not None:
                print(f"{key}: already here, nothing to download ({searched[-1]})")
                continue
        target = download_root(root)
        try:
            download_dataset(key, target)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 - network, checksum or disk: one line naming the target
            raise CLIError(
                f"{key}: downloading into {target} failed ({type(err).__name__}: {err}); check the internet connection, "
                f"or copy the data into a folder and set DIFFEOSENS_DATA to it"
            ) from err
        print(f"{key}: {target}")
    if root is not None and root != download_root(None):
        print(f"the data is in {root}: pass root={str(root)!r} or set DIFFEOSENS_DATA={root} to use it")
    return 0


def _cmd_data_where(args: argparse.Namespace) -> int:
    from .data.vision import DATASETS, auto_download, download_root, locate

    keys = _dataset_keys(args.datasets or DATASETS)
    root = _check_data_root(args.root)
    for key in keys:
        found, searched = locate(key, root)
        if found is not None:
            print(f"{key}: {found} ({searched[-1].rsplit(': ', 1)[0]})")
        else:
            print(f"{key}: not found locally (searched {len(searched)} places); it would be downloaded into {download_root(root)}")
    state = "on" if auto_download() else "off"
    print(f"download on first use: {state} (DIFFEOSENS_DOWNLOAD=0 turns it off); download folder: {download_root(root)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffeosens", description="Layer-wise sensitivity of deep nets to diffeomorphisms and noise.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sweep", help="run a sweep config (papermill notebooks over a grid)")
    s.add_argument("config", help="configs/<experiment>.yaml")
    s.add_argument("--profile", default=None, choices=list(PROFILES),
                   help="run sizes (diffeosens profiles; default that of make book, laptop; paper with --dry-run)")
    s.add_argument("--dry-run", action="store_true",
                   help="the paper profile's grid (every network, activation, noise level, task, variant, delta and "
                        "seed) at tiny sizes, into <root>/dry: finds a crash before a GPU or cluster run does")
    s.add_argument("--plan", action="store_true",
                   help="print the cells, estimated hours on this device and disk of this sweep at --profile; run nothing "
                        "(unit costs are timed here on first use and cached under <root>/costs/)")
    s.add_argument("--device", default=None, help="with --plan: the device to price (default: cpu)")
    s.add_argument("--no-measure", action="store_true",
                   help="with --plan: time nothing; unit costs not cached are estimated from FLOPs (a GPU device only)")
    s.add_argument("--root", default=None, help="results root (default: results/ or $DIFFEOSENS_RESULTS)")
    s.add_argument("--jobs", type=int, default=1, help="cells in parallel on this machine")
    s.add_argument("--scheduler", default=None, help="address of a Dask scheduler, e.g. tcp://host:8786")
    s.add_argument("--dask-workers", type=int, default=None, help="start a local Dask cluster with N workers")
    s.add_argument("--stage", action="append", help="run only this stage (repeatable)")
    s.add_argument("--force", action="store_true", help="re-run cells whose outputs are valid")
    s.add_argument("--select", action="append", metavar="AXIS=VALUE",
                   help="run only the cells with this grid value, and those they need (repeatable; e.g. --select arch=ResNet50)")
    s.add_argument("--progress", default="bar", choices=["bar", "lines", "none"],
                   help="a progress bar, one line per finished cell with counts and an ETA (for logs), or nothing")
    s.add_argument("--no-progress", action="store_true", help="the same as --progress none")
    s.add_argument("--stale", default=None, choices=["rerun", "warn", "accept", "ignore"],
                   help="results made by other code (notebook or library changed): rerun them (default, or "
                        "$DIFFEOSENS_STALE), keep them with a warning, adopt them as current, or ignore the check")
    s.add_argument("--fresh-kernels", action="store_true",
                   help="run each cell in a fresh Jupyter kernel instead of one warm kernel per worker, reset between "
                        "cells (also: DIFFEOSENS_FRESH_KERNEL=1)")
    s.set_defaults(func=_cmd_sweep)

    m = sub.add_parser("measure", help="layer-wise D, G, R of a model (zoo, torchvision or your own)")
    m.add_argument("--model", required=True, help="zoo:<name> | torchvision:<name> | <module>:<factory>")
    m.add_argument("--checkpoint", default=None, help="state dict to load (read with weights_only=True)")
    m.add_argument("--data", default="cifar10", choices=["cifar10", "mnist", "fashionmnist"])
    m.add_argument("--root", default=None, help="data root")
    m.add_argument("--n-probe", type=int, default=500)
    m.add_argument("--probe-seed", type=int, default=0)
    m.add_argument("--layers", default="default", help="default | all | output | comma-separated node names")
    m.add_argument("--delta", type=float, default=1.0)
    m.add_argument("--cut", type=float, default=3)
    m.add_argument("--seed", type=int, default=0, help="seed of the diffeomorphism and noise draws")
    m.add_argument("--model-seed", type=int, default=0, help="seed of the initial weights (when no --checkpoint replaces them)")
    m.add_argument("--batch-size", type=_batch_size, default="auto",
                   help="images per forward pass: a positive integer, or auto (default: the largest batch that fits half "
                        "the device's free memory; the numbers do not depend on it)")
    m.add_argument("--init-bn", default="running", choices=["running", "batch"])
    m.add_argument("--estimator", default="mean", choices=["mean", "median"],
                   help="ratio of means over the probe set (the paper's), or the median of per-image ratios")
    m.add_argument("--median", default="lower", choices=["lower", "average"],
                   help="with --estimator median: the lower median (the paper's torch.median) or the average of the middle two")
    m.add_argument("--n-draws", type=int, default=1, help="diffeomorphism and noise draws per image")
    m.add_argument("--interp", default="linear", choices=["linear", "nearest", "gaussian"], help="interpolation of the deformed image (linear: the paper)")
    m.add_argument("--device", default=None)
    m.add_argument("--out", required=True, help="the .nc file to write")
    m.set_defaults(func=_cmd_measure)

    pl = sub.add_parser("plan", help="what a profile will cost: trainings, measurements, hours on this device, disk")
    pl.add_argument("configs", nargs="*", help="sweep configs (default: all of configs/, in the book's order)")
    pl.add_argument("--profile", default="paper", choices=list(PROFILES))
    pl.add_argument("--root", default=None, help="results root (its costs/ folder caches the timed unit costs)")
    pl.add_argument("--device", default=None, help="the device to price (default: cpu); one without timed costs (e.g. --device cuda "
                    "--no-measure on a machine without a GPU) is estimated from FLOPs")
    pl.add_argument("--no-measure", action="store_true", help="time nothing: unit costs not cached are estimated from FLOPs")
    pl.set_defaults(func=_cmd_plan)

    pr = sub.add_parser("profiles", help="print the smoke/quick/paper/dry sizes")
    pr.set_defaults(func=_cmd_profiles)

    d = sub.add_parser("data", help="download the datasets, or show where they are found")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dd = dsub.add_parser("download", help="download datasets with torchvision (md5-checked), unless already here")
    dd.add_argument("datasets", nargs="+", metavar="dataset", help="cifar10 | mnist | fashionmnist")
    dd.add_argument("--root", default=None, help="target folder (default: $DIFFEOSENS_DATA, else ~/.cache/diffeosens/data)")
    dd.set_defaults(func=_cmd_data_download)
    dw = dsub.add_parser("where", help="print where each dataset is found (or would be downloaded)")
    dw.add_argument("datasets", nargs="*", metavar="dataset", help="cifar10 | mnist | fashionmnist (default: all)")
    dw.add_argument("--root", default=None, help="folder to look in first")
    dw.set_defaults(func=_cmd_data_where)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse itself exits with 2 and a one-line usage error
    import warnings

    def one_line(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings.showwarning's signature
        print(f"diffeosens {args.command}: {category.__name__}: {' '.join(str(message).split())}", file=sys.stderr)

    warnings.showwarning = one_line  # a warning of the library is one line too, not a source excerpt
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"diffeosens {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every user-facing error is one line and exit status 2
        if os.environ.get("DIFFEOSENS_DEBUG"):
            raise
        msg = " ".join(str(err).split()) or type(err).__name__
        kind = "" if isinstance(err, (CLIError, ValueError, FileNotFoundError)) else f"{type(err).__name__}: "
        print(f"diffeosens {args.command}: {kind}{msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
