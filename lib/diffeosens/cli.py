"""Command line: ``diffeosens sweep``, ``diffeosens measure``, ``diffeosens profiles``.

Also reachable as ``python -m diffeosens ...``. Each sub-command parses its arguments and calls
one library function.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import SweepError, run_sweep

    try:
        report = run_sweep(
            args.config, profile=args.profile, root=args.root, jobs=args.jobs, scheduler=args.scheduler,
            dask_workers=args.dask_workers, stages=args.stage, force=args.force, progress=not args.no_progress,
        )
    except SweepError as err:
        print(f"diffeosens sweep: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.ok else 1


def _cmd_measure(args: argparse.Namespace) -> int:
    from . import results
    from .usermodels import measure_model

    layers = args.layers if args.layers in ("default", "all", "output") else [s.strip() for s in args.layers.split(",") if s.strip()]
    try:
        ds = measure_model(
            args.model, checkpoint=args.checkpoint, data=args.data, root=args.root, n_probe=args.n_probe,
            probe_seed=args.probe_seed, layers=layers, delta=args.delta, cut=args.cut, seed=args.seed,
            batch_size=args.batch_size, init_bn=args.init_bn, device=args.device, progress=True,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"diffeosens measure: {err}", file=sys.stderr)
        return 2
    results.save(ds, args.out, grid={"model": args.model})
    print(ds[["D", "G", "R"]].to_dataframe().to_string())
    print(f"wrote {args.out}")
    return 0


def _cmd_profiles(_: argparse.Namespace) -> int:
    from .profiles import table_markdown

    print(table_markdown())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffeosens", description="Layer-wise sensitivity of deep nets to diffeomorphisms and noise.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sweep", help="run a sweep config (papermill notebooks over a grid)")
    s.add_argument("config", help="configs/<experiment>.yaml")
    s.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    s.add_argument("--root", default=None, help="results root (default: results/ or $DIFFEOSENS_RESULTS)")
    s.add_argument("--jobs", type=int, default=1, help="cells in parallel on this machine")
    s.add_argument("--scheduler", default=None, help="address of a Dask scheduler, e.g. tcp://host:8786")
    s.add_argument("--dask-workers", type=int, default=None, help="start a local Dask cluster with N workers")
    s.add_argument("--stage", action="append", help="run only this stage (repeatable)")
    s.add_argument("--force", action="store_true", help="re-run cells whose outputs are valid")
    s.add_argument("--no-progress", action="store_true")
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
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--batch-size", type=int, default=None)
    m.add_argument("--init-bn", default="running", choices=["running", "batch"])
    m.add_argument("--device", default=None)
    m.add_argument("--out", required=True, help="the .nc file to write")
    m.set_defaults(func=_cmd_measure)

    pr = sub.add_parser("profiles", help="print the smoke/quick/paper sizes")
    pr.set_defaults(func=_cmd_profiles)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
