"""Contract audit: bad or unusual inputs through the public entry points, each outcome classified automatically.

Every case calls one public function (``deform``, ``warp``, ``apply_fields``,
``sample_coefficients``, ``matched_noise``, ``measure``, ``measure_perturbed``, ``load_tensors``,
``load_dataset``, ``probe_images``) with one bad or unusual input, and the outcome is sorted into:

* **clear error**: an exception raised by a ``raise`` statement of the diffeosens package (the
  innermost frame of the traceback is one, found with :mod:`ast`), with a message;
* **raw message**: any other exception (raised inside torch, numpy or the standard library, or by a
  Python error such as a failed tuple unpacking in our own code, never by one of our checks);
* **warning**: no exception and at least one warning (the table says whether it points at the
  caller's line, as it should, or at a line inside the library);
* **documented result**: no exception, no warning, and the case's documented result checked
  (unusual but valid input: an empty batch gives an empty result, ``init_bn="batch"`` gives the
  same numbers for every ``batch_size``);
* **silent result**: no exception, no warning, and no documented result (or a wrong one).

Checkpoints (``load_checkpoint``, ``TrainedRun``) and sweep configs (``load_sweep``) are audited the
same way. The command line (``diffeosens ...``, run in-process through ``cli.main``) is classified by
what a user sees: **clear error** when it exits with status 2 and one line on stderr without a
traceback (argparse's own usage errors print the usage first and count as clear when their last line
names the problem), **raw message** for a traceback or a multi-line message, **silent result** for
exit status 0.

The target of issue 18 is 0 silent results and at most 3 raw messages.

Usage: ``python bench/contract_audit.py`` (about 30 s on 2 CPU cores; reads the CIFAR-10 test
batch through ``$DIFFEOSENS_DATA`` or the shared data folder, never downloads). Run it with
``ulimit -v`` on code older than issue 18: there ``sample_coefficients(10**9, 32)`` allocates until
the memory runs out.
"""

from __future__ import annotations

import ast
import collections
import functools
import os
import pickle
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, markdown_table  # noqa: E402

import diffeosens  # noqa: E402
from diffeosens import deform, matched_noise  # noqa: E402
from diffeosens.data import find_root, load_dataset, load_tensors, probe_images  # noqa: E402
from diffeosens.diffeo import apply_fields, sample_coefficients, warp  # noqa: E402
from diffeosens.sensitivity import measure, measure_perturbed  # noqa: E402

PACKAGE = Path(diffeosens.__file__).resolve().parent


@dataclass
class Case:
    entry: str  # the public function
    what: str  # the input, in words
    call: Callable[[], Any]
    expect: Callable[[Any], bool] | None = None  # the documented result of a valid, unusual input


@functools.lru_cache(maxsize=None)
def _raise_spans(path: str) -> list[tuple[int, int]]:
    """(first line, last line) of every ``raise`` statement in a source file."""
    tree = ast.parse(Path(path).read_text())
    return [(n.lineno, n.end_lineno or n.lineno) for n in ast.walk(tree) if isinstance(n, ast.Raise)]


def _raised_by_a_check(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback is a ``raise`` statement of the package."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    path = Path(tb.tb_frame.f_code.co_filename).resolve()
    if PACKAGE not in path.parents:
        return False
    return any(a <= tb.tb_lineno <= b for a, b in _raise_spans(str(path)))


def _short(text: str, n: int = 150) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1] + "…"


def classify(case: Case) -> dict[str, str]:
    """Run one case and sort its outcome (see the module docstring)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = case.call()
        except Exception as err:  # noqa: BLE001 - every failure is an outcome to classify
            ours = _raised_by_a_check(err) and str(err).strip()
            outcome = "clear error" if ours else "raw message"
            where = "" if ours else f" (raised in {Path(traceback.extract_tb(err.__traceback__)[-1].filename).name})"
            return {"outcome": outcome, "detail": _short(f"{type(err).__name__}: {err}") + where}
    if caught:
        w = caught[0]
        at = "at the caller" if Path(w.filename).resolve() == Path(__file__).resolve() else f"at {Path(w.filename).name}:{w.lineno}"
        return {"outcome": "warning", "detail": _short(f"{w.category.__name__} ({at}): {w.message}")}
    if case.expect is not None:
        try:
            ok = bool(case.expect(result))
        except Exception as err:  # noqa: BLE001
            ok, result = False, err
        if ok:
            return {"outcome": "documented result", "detail": "checked"}
        return {"outcome": "silent result", "detail": _short(f"result differs from the documented one: {result!r}", 100)}
    return {"outcome": "silent result", "detail": _short(f"returned {type(result).__name__}", 100)}


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------


def small_cnn(bn: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)] + ([nn.BatchNorm2d(4)] if bn else [])
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)]
    return nn.Sequential(*layers)


class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        return y, y.mean((2, 3))


class DictOut(TupleOut):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        y = self.conv(x)
        return {"features": y, "pooled": y.mean((2, 3))}


class _Evil:
    """Pickles to a call of ``os.system``: a crafted batch file must never run it."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo crafted-pickle-ran > /dev/null",))


def data_fixtures(tmp: Path) -> dict[str, Path]:
    """Roots holding a CIFAR-10 folder with one bad file each (the other files link to the real ones)."""
    real = find_root("cifar10") / "cifar-10-batches-py"
    roots = {}

    def root_with(name: str, bad: dict[str, bytes]) -> Path:
        root = tmp / name
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for f in real.iterdir():
            if f.name in bad:
                (folder / f.name).write_bytes(bad[f.name])
            else:
                (folder / f.name).symlink_to(f)
        roots[name] = root
        return root

    test_batch = (real / "test_batch").read_bytes()
    root_with("truncated0", {"test_batch": b""})
    root_with("truncated1000", {"test_batch": test_batch[:1000]})
    root_with("crafted_batch", {"test_batch": pickle.dumps({"data": _Evil(), "labels": [0]}, protocol=2)})
    root_with("crafted_meta", {"batches.meta": pickle.dumps({"label_names": ["a"] * 10, "num_vis": 3072}, protocol=2)})
    root_with("wrong_shape", {"test_batch": pickle.dumps({b"data": np.zeros((10, 100), np.uint8), b"labels": [0] * 10}, protocol=2)})
    (tmp / "empty").mkdir()
    roots["empty"] = tmp / "empty"
    return roots


def with_env(name: str, value: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        old = os.environ.get(name)
        os.environ[name] = value
        try:
            return fn()
        finally:
            if old is None:
                del os.environ[name]
            else:
                os.environ[name] = old

    return call


def bn_batch_sizes_agree(net: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    def call() -> float:
        kw = dict(init_bn="batch", compute_dtype=torch.float64, layers="all", seed=1)
        full = measure(net, x, batch_size=x.shape[0], **kw)
        worst = 0.0
        for bs in (1, 7):
            part = measure(net, x, batch_size=bs, **kw)
            for v in ("D", "G", "R", "deno"):
                worst = max(worst, float(np.max(np.abs(part[v].values / full[v].values - 1))))
        return worst

    return call


def cases(fixtures: dict[str, Path]) -> list[Case]:
    x = torch.rand(4, 3, 32, 32)
    coef = sample_coefficients(4, 32, delta=1.0, seed=0)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    X = torch.randn(12, 3, 16, 16, dtype=torch.float64)
    net, bn_net = small_cnn().double(), small_cnn(bn=True).double()
    nan_x = x.clone()
    nan_x[0, 0, 0, 0] = float("nan")
    u8 = (x * 255).to(torch.uint8)
    big = torch.rand(4, 3, 8, 8) * 3e38
    cifar = lambda root: lambda: load_tensors("cifar10", train=False, root=root)  # noqa: E731
    return [
        # deform
        Case("deform", "NaN in the images", lambda: deform(nan_x, delta=1.0, seed=0)),
        Case("deform", "uint8 images", lambda: deform(u8, delta=1.0, seed=0)),
        Case("deform", "delta=True", lambda: deform(x, delta=True, seed=0)),
        Case("deform", "seed=True", lambda: deform(x, delta=1.0, seed=True)),
        Case("deform", "delta=-1", lambda: deform(x, delta=-1.0, seed=0)),
        Case("deform", "cut=0.5", lambda: deform(x, delta=1.0, cut=0.5, seed=0)),
        Case("deform", "cut=1e5 (10^10 modes)", lambda: deform(x, delta=1.0, cut=1e5, seed=0)),
        Case("deform", "cut=True", lambda: deform(x, delta=1.0, cut=True, seed=0)),
        Case("deform", "interp='cubic'", lambda: deform(x, delta=1.0, interp="cubic", seed=0)),
        Case("deform", "a 2-D image (H, W)", lambda: deform(torch.rand(32, 32), delta=1.0, seed=0)),
        Case("deform", "0 channels", lambda: deform(torch.rand(4, 0, 32, 32), delta=1.0, seed=0)),
        Case("deform", "1x1 images", lambda: deform(torch.rand(4, 3, 1, 1), delta=1.0, seed=0)),
        Case("deform", "both T and delta", lambda: deform(x, T=1e-3, delta=1.0, seed=0)),
        Case("deform", "generator=0 (an int)", lambda: deform(x, delta=1.0, generator=0)),
        Case("deform", "a list instead of a tensor", lambda: deform(x.tolist(), delta=1.0, seed=0)),
        Case("deform", "coefficients for 3 fields, 4 images", lambda: deform(x, coefficients=sample_coefficients(3, 32, delta=1.0, seed=0))),
        Case("deform", "empty batch (0, 3, 32, 32)", lambda: deform(torch.rand(0, 3, 32, 32), delta=1.0, seed=0),
             expect=lambda out: tuple(out.shape) == (0, 3, 32, 32)),
        # warp
        Case("warp", "NaN in the images", lambda: warp(nan_x, coef)),
        Case("warp", "uint8 images", lambda: warp(u8, coef)),
        Case("warp", "0 channels", lambda: warp(torch.rand(4, 0, 32, 32), coef)),
        Case("warp", "coefficients drawn for 32x32 on 28x40 images", lambda: warp(torch.rand(4, 3, 28, 40), coef)),
        Case("warp", "coefficients for 3 fields, 4 images", lambda: warp(x, sample_coefficients(3, 32, delta=1.0, seed=0))),
        Case("warp", "a tensor instead of Coefficients", lambda: warp(x, torch.zeros(4, 2, 3, 3))),
        Case("warp", "3-D images (C, H, W)", lambda: warp(x[0], coef)),
        Case("warp", "interp='cubic'", lambda: warp(x, coef, interp="cubic")),
        Case("warp", "empty batch", lambda: warp(torch.rand(0, 3, 32, 32), sample_coefficients(0, 32, delta=1.0, seed=0)),
             expect=lambda out: tuple(out.shape) == (0, 3, 32, 32)),
        # sample_coefficients
        Case("sample_coefficients", "size=32.7", lambda: sample_coefficients(4, 32.7, delta=1.0, seed=0)),
        Case("sample_coefficients", "batch=10**9 (144 GB)", lambda: sample_coefficients(10**9, 32, delta=1.0, seed=0)),
        Case("sample_coefficients", "batch=-1", lambda: sample_coefficients(-1, 32, delta=1.0, seed=0)),
        Case("sample_coefficients", "batch=True", lambda: sample_coefficients(True, 32, delta=1.0, seed=0)),
        Case("sample_coefficients", "size=(32,)", lambda: sample_coefficients(4, (32,), delta=1.0, seed=0)),
        Case("sample_coefficients", "size=1", lambda: sample_coefficients(4, 1, delta=1.0, seed=0)),
        Case("sample_coefficients", "seed=-1", lambda: sample_coefficients(4, 32, delta=1.0, seed=-1)),
        Case("sample_coefficients", "cut='3' (a string)", lambda: sample_coefficients(4, 32, delta=1.0, cut="3", seed=0)),
        Case("sample_coefficients", "neither T nor delta", lambda: sample_coefficients(4, 32, seed=0)),
        # apply_fields
        Case("apply_fields", "fields of another shape", lambda: apply_fields(x, torch.zeros(4, 2, 16, 16))),
        Case("apply_fields", "NaN in the fields", lambda: apply_fields(x, torch.full((4, 2, 32, 32), float("nan")))),
        Case("apply_fields", "integer fields", lambda: apply_fields(x, torch.zeros(4, 2, 32, 32, dtype=torch.int64))),
        Case("apply_fields", "uint8 images", lambda: apply_fields(u8, torch.zeros(4, 2, 32, 32))),
        Case("apply_fields", "empty batch", lambda: apply_fields(torch.rand(0, 3, 8, 8), torch.zeros(0, 2, 8, 8)),
             expect=lambda out: tuple(out.shape) == (0, 3, 8, 8)),
        # matched_noise
        Case("matched_noise", "generator=0 (an int)", lambda: matched_noise(x, x + 1, generator=0)),
        Case("matched_noise", "finite images of 3e38 (float32)", lambda: matched_noise(big, big.flip(-1), generator=g())),
        Case("matched_noise", "shapes differ", lambda: matched_noise(x, x[:2], generator=g())),
        Case("matched_noise", "uint8 images", lambda: matched_noise(u8, u8, generator=g())),
        Case("matched_noise", "match='median'", lambda: matched_noise(x, x + 1, match="median")),
        Case("matched_noise", "sample_dims=0", lambda: matched_noise(x, x + 1, sample_dims=0)),
        Case("matched_noise", "NaN in perturbed", lambda: matched_noise(x, nan_x, generator=g())),
        Case("matched_noise", "empty batch", lambda: matched_noise(torch.rand(0, 3, 8, 8), torch.rand(0, 3, 8, 8)),
             expect=lambda out: tuple(out.shape) == (0, 3, 8, 8)),
        # measure
        Case("measure", "3-D images (P, H, W)", lambda: measure(net, X[:, 0])),
        Case("measure", "5-D images", lambda: measure(net, X[None])),
        Case("measure", "(1, 8, H, W): one image of 8 channels", lambda: measure(net, torch.randn(1, 8, 16, 16, dtype=torch.float64))),
        Case("measure", "layers=5", lambda: measure(net, X, layers=5)),
        Case("measure", "layers='output' on a model returning a tuple", lambda: measure(TupleOut().double(), X, layers="output")),
        Case("measure", "layers='output' on a model returning a dict", lambda: measure(DictOut().double(), X, layers="output")),
        Case("measure", "device='cuda'" + ("" if not torch.cuda.is_available() else " (a GPU is present: skipped)"),
             (lambda: measure(net, X, device="cuda")) if not torch.cuda.is_available() else (lambda: measure(net, X, device="cuda:99"))),
        Case("measure", "device='gpu' (not a torch device)", lambda: measure(net, X, device="gpu")),
        Case("measure", "a plain function as model", lambda: measure(lambda t: t.flatten(1), X)),
        Case("measure", "n_boot=0 (median estimator)", lambda: measure(net, X, estimator="median", n_boot=0)),
        Case("measure", "n_boot=-5", lambda: measure(net, X, n_boot=-5)),
        Case("measure", "n_boot=True", lambda: measure(net, X, estimator="median", n_boot=True)),
        Case("measure", "n_jackknife=2.5", lambda: measure(net, X, n_jackknife=2.5)),
        Case("measure", "n_draws=True", lambda: measure(net, X, n_draws=True)),
        Case("measure", "P = 2 (standard errors)", lambda: measure(net, X[:2], layers="output")),
        Case("measure", "batch_size=0", lambda: measure(net, X, batch_size=0)),
        Case("measure", "delta=True", lambda: measure(net, X, delta=True)),
        Case("measure", "delta=[]", lambda: measure(net, X, delta=[])),
        Case("measure", "compute_dtype=torch.int32", lambda: measure(net, X, compute_dtype=torch.int32)),
        Case("measure", "NaN in the images", lambda: measure(net, torch.where(X > 3, float("nan"), X))),
        Case("measure", "1-channel images, 3-channel model", lambda: measure(net, X[:, :1])),
        Case("measure", "seed=-1", lambda: measure(net, X, seed=-1)),
        Case("measure", "off_diagonal='no'", lambda: measure(net, X, off_diagonal="no")),
        Case("measure", "init_bn='batch': batch_size 1 and 7 vs P (float64)", bn_batch_sizes_agree(bn_net, X),
             expect=lambda worst: worst < 1e-10),
        # measure_perturbed
        Case("measure_perturbed", "perturbed of another shape", lambda: measure_perturbed(net, X, {"D": X[:, :, :8]})),
        Case("measure_perturbed", "a tensor instead of a dict", lambda: measure_perturbed(net, X, X)),
        Case("measure_perturbed", "ratio names a missing perturbation", lambda: measure_perturbed(net, X, {"D": X}, ratio=("D", "G"))),
        Case("measure_perturbed", "NaN in a perturbed input", lambda: measure_perturbed(net, X, {"D": X * float("nan")})),
        Case("measure_perturbed", "P = 1", lambda: measure_perturbed(net, X[:1], {"D": X[:1]})),
        Case("measure_perturbed", "init_bn='batch', batch_size=1 vs P (float64)", lambda: (
            measure_perturbed(bn_net, X, {"D": X.roll(1, -1)}, init_bn="batch", batch_size=1, compute_dtype=torch.float64).D.values,
            measure_perturbed(bn_net, X, {"D": X.roll(1, -1)}, init_bn="batch", compute_dtype=torch.float64).D.values),
             expect=lambda ab: np.allclose(ab[0], ab[1], rtol=1e-10, atol=0)),
        # loaders
        Case("load_tensors", "name='svhn'", lambda: load_tensors("svhn", train=True)),
        Case("load_tensors", "train='yes'", lambda: load_tensors("cifar10", train="yes")),
        Case("load_tensors", "download='no'", lambda: load_tensors("cifar10", train=False, download="no")),
        Case("load_tensors", "DIFFEOSENS_DATA set to a folder without the data",
             with_env("DIFFEOSENS_DATA", str(fixtures["empty"]), lambda: load_tensors("cifar10", train=False))),
        Case("load_tensors", "root= a folder without the data", lambda: load_tensors("cifar10", train=False, root=fixtures["empty"])),
        Case("load_tensors", "test_batch truncated to 0 bytes", cifar(fixtures["truncated0"])),
        Case("load_tensors", "test_batch truncated to 1,000 bytes", cifar(fixtures["truncated1000"])),
        Case("load_tensors", "test_batch: a crafted pickle calling os.system", cifar(fixtures["crafted_batch"])),
        Case("load_tensors", "test_batch: data of shape (10, 100)", cifar(fixtures["wrong_shape"])),
        Case("load_dataset", "crafted batches.meta", lambda: load_dataset("cifar10", train=False, root=fixtures["crafted_meta"])),
        Case("load_dataset", "test_batch truncated to 1,000 bytes",
             lambda: load_dataset("cifar10", train=False, root=fixtures["truncated1000"])),
        Case("load_dataset", "verify='sha256' for MNIST", lambda: load_dataset("mnist", train=False, verify="sha256")),
        Case("probe_images", "n=0", lambda: probe_images("cifar10", 0)),
        Case("probe_images", "n=10**6", lambda: probe_images("cifar10", 10**6)),
        Case("probe_images", "n=2.5", lambda: probe_images("cifar10", 2.5)),
        Case("probe_images", "seed=True", lambda: probe_images("cifar10", 8, seed=True)),
        Case("probe_images", "seed=-1", lambda: probe_images("cifar10", 8, seed=-1)),
        Case("probe_images", "dtype=torch.uint8", lambda: probe_images("cifar10", 8, dtype=torch.uint8)),
    ]


def _cli(*argv: str) -> Callable[[], Any]:
    """A command line, run in-process: returns (exit status, stderr)."""
    import contextlib
    import io

    from diffeosens import cli

    def run() -> tuple[int, str]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(argv))
            except SystemExit as exit_:  # argparse
                code = int(exit_.code or 0)
        return code, err.getvalue()

    return run


def classify_cli(case: Case) -> dict[str, str]:
    code, err = case.call()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if code == 0:
        return {"outcome": "silent result", "detail": "exit status 0"}
    argparse_error = len(lines) > 1 and lines[0].startswith("usage:") and ": error: " in lines[-1]
    if code == 2 and "Traceback" not in err and (len(lines) == 1 or argparse_error):
        return {"outcome": "clear error", "detail": _short(lines[-1])}
    return {"outcome": "raw message", "detail": _short(f"exit {code}: {' / '.join(lines[-3:])}")}


def other_cases(tmp: Path) -> list[Case]:
    """Checkpoints, sweep configs and the command line."""
    from diffeosens.runs import TrainedRun
    from diffeosens.sweep import load_sweep
    from diffeosens.train import build_model, load_checkpoint, save_atomic

    repo = Path(__file__).resolve().parents[1]
    ck = tmp / "ck"
    ck.mkdir()
    net = build_model("LeNet", seed=0)
    save_atomic(net.state_dict(), ck / "best.pt")
    flipped = bytearray((ck / "best.pt").read_bytes())
    mid = len(flipped) // 2
    flipped[mid:mid + 64] = bytes(b ^ 0x5A for b in flipped[mid:mid + 64])
    (ck / "best.pt").write_bytes(bytes(flipped))
    save_atomic(net.state_dict(), ck / "half.pt")
    (ck / "half.pt").write_bytes((ck / "half.pt").read_bytes()[:1000])
    torch.save({"weights": [1, 2, 3]}, ck / "foreign.pt")
    save_atomic(build_model("VGG11", width_factor=0.125).state_dict(), ck / "vgg.pt")
    spectra = (repo / "configs" / "spectra.yaml").read_text()
    configs = {
        "unknown top-level key": spectra.replace("stages:", "stage_typo: 1\nstages:", 1),
        "architecture not in the zoo": spectra.replace("[LeNet, VGG11bn]", "[LeNet, VGG12bn]", 1),
        "grid axis not a list": spectra.replace("state: [init, trained]", "state: init", 1),
        "unknown ${variable}": spectra.replace("${archs}", "${nets}", 1),
        "stage with an unknown key": spectra.replace("  - name: spectra", "  - name: spectra\n    gird: {}", 1),
    }
    cfg_cases = []
    for what, text in configs.items():
        f = tmp / f"cfg{len(cfg_cases)}.yaml"
        f.write_text(text)
        cfg_cases.append(Case("load_sweep", what, functools.partial(load_sweep, f, profile="smoke", root=tmp / "results")))
    out = str(tmp / "m.nc")
    return [
        Case("load_checkpoint", "64 flipped bytes inside best.pt", lambda: load_checkpoint(build_model("LeNet"), ck / "best.pt")),
        Case("load_checkpoint", "a file truncated to 1,000 bytes", lambda: load_checkpoint(build_model("LeNet"), ck / "half.pt")),
        Case("load_checkpoint", "a pickle that is not a state dict", lambda: load_checkpoint(build_model("LeNet"), ck / "foreign.pt")),
        Case("load_checkpoint", "another network's weights", lambda: load_checkpoint(build_model("LeNet"), ck / "vgg.pt")),
        Case("TrainedRun", "a folder without history.nc", lambda: TrainedRun(ck)),
        *cfg_cases,
        Case("load_sweep", "profile='huge'", lambda: load_sweep(repo / "configs" / "spectra.yaml", profile="huge")),
        Case("cli", "measure --probe-seed -1", _cli("measure", "--model", "zoo:LeNet", "--n-probe", "16", "--out", out, "--probe-seed", "-1")),
        Case("cli", "measure --model-seed -1", _cli("measure", "--model", "zoo:LeNet", "--n-probe", "16", "--out", out, "--model-seed", "-1")),
        Case("cli", "measure --seed -1", _cli("measure", "--model", "zoo:LeNet", "--n-probe", "16", "--out", out, "--seed", "-1")),
        Case("cli", "measure --n-probe 0", _cli("measure", "--model", "zoo:LeNet", "--n-probe", "0", "--out", out)),
        Case("cli", "measure --delta -1", _cli("measure", "--model", "zoo:LeNet", "--n-probe", "16", "--out", out, "--delta", "-1")),
        Case("cli", "measure --n-draws 0", _cli("measure", "--model", "zoo:LeNet", "--n-probe", "16", "--out", out, "--n-draws", "0")),
        Case("cli", "measure --estimator mode", _cli("measure", "--model", "zoo:LeNet", "--out", out, "--estimator", "mode")),
        Case("cli", "measure --out x.csv", _cli("measure", "--model", "zoo:LeNet", "--out", str(tmp / "x.csv"))),
        Case("cli", "measure --model zoo:NoSuchNet", _cli("measure", "--model", "zoo:NoSuchNet", "--n-probe", "16", "--out", out)),
        Case("cli", "measure --checkpoint with flipped bytes",
             _cli("measure", "--model", "zoo:LeNet", "--n-probe", "16", "--out", out, "--checkpoint", str(ck / "best.pt"))),
        Case("cli", "sweep of a folder", _cli("sweep", str(repo / "configs"))),
        Case("cli", "sweep with an unknown top-level key", _cli("sweep", str(tmp / "cfg0.yaml"), "--profile", "smoke", "--root", str(tmp / "r"))),
        Case("cli", "sweep --jobs 0", _cli("sweep", str(repo / "configs" / "spectra.yaml"), "--profile", "smoke", "--jobs", "0",
                                           "--root", str(tmp / "r"))),
    ]


def main() -> int:
    torch.set_num_threads(1)
    os.environ["DIFFEOSENS_DOWNLOAD"] = "0"  # never the network
    tmp = Path(tempfile.mkdtemp(prefix="contract-audit-"))
    os.environ["DIFFEOSENS_CACHE"] = str(tmp / "cache")
    print(header(torch.device("cpu")))
    print(f"diffeosens from {PACKAGE}")
    t0 = time.perf_counter()
    try:
        rows = []
        for i, case in enumerate([*cases(data_fixtures(tmp)), *other_cases(tmp)], 1):
            outcome = classify_cli(case) if case.entry == "cli" else classify(case)
            rows.append({"#": i, "entry point": f"`{case.entry}`", "input": case.what, **outcome})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts = collections.Counter(r["outcome"] for r in rows)
    print(f"\n{len(rows)} inputs in {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"{counts[k]} {k}" for k in ("clear error", "warning", "documented result", "raw message", "silent result")))
    print()
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
