r"""Real image-classification data: CIFAR-10, MNIST and FashionMNIST (methods §6.1).

Where the data is looked for (:func:`find_root`, in this order):

1. the explicit ``root=`` argument;
2. the environment variable ``DIFFEOSENS_DATA``;
3. the shared data folder of the project checkout: ``<repo>/../shared/data`` and
   ``<repo>/shared/data`` (``<repo>`` found from this file's location, ``lib/diffeosens/..``),
   then the same two places relative to the current working directory;
4. the download folder ``<cache>/data`` (where downloads go when no ``root`` and no
   ``DIFFEOSENS_DATA`` is given), and for FashionMNIST the Debian folder ``/usr/share/datasets``
   (``apt-get install dataset-fashion-mnist``).

When no local copy is found, :func:`load_tensors` and :func:`load_dataset` download the official
files once with torchvision (``torchvision.datasets.CIFAR10(..., download=True)`` and likewise for
MNIST/FashionMNIST, which checks torchvision's md5 list) into :func:`download_root`: ``root`` if
given, else ``$DIFFEOSENS_DATA``, else ``<cache>/data``. ``DIFFEOSENS_DOWNLOAD=0`` or
``download=False`` turns that off; ``download=True`` forces it even then. The same download is
``diffeosens data download <dataset> [--root DIR]`` (``make data``). Local copies are never
checked against torchvision's md5s (the staged ones differ, see :class:`CIFAR10`).

A *root* is the folder that holds the dataset's own folder, as in torchvision:
``<root>/cifar-10-batches-py/``, ``<root>/MNIST/raw/``, ``<root>/FashionMNIST/raw/`` (or the Debian
layout ``<root>/fashion-mnist/*.gz``). Nothing is ever synthesised: data that is neither found nor
downloaded raises :class:`DatasetNotFoundError`, whose message lists every place searched and the
command that gets the data.

Two loading paths:

* :func:`load_dataset`: torchvision's dataset classes (PIL images through ``transform``). The
  staged CIFAR-10 batches are pixel-identical to the official ones but not byte-identical, so
  :class:`CIFAR10` replaces torchvision's md5 check by a check of the decoded *content*. The
  staged MNIST files are gzipped; torchvision reads uncompressed IDX files, so they are
  gunzipped once into the user cache (``DIFFEOSENS_CACHE``, else ``$XDG_CACHE_HOME/diffeosens``,
  else ``~/.cache/diffeosens``), never into the (read-only) data folder.
* :func:`load_tensors`: straight from the files with NumPy, no PIL, returning
  ``uint8 [N, C, H, W]`` images and ``int64 [N]`` labels; used by
  :class:`diffeosens.data.InMemoryLoader`.

Normalisation constants (:data:`NORMALIZATION`; methods §6.1): CIFAR-10 mean
(0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010); MNIST none (``ToTensor`` only);
FashionMNIST (0.5,), (0.5,). The CIFAR-10 "std" values are those of the authors' code, **not**
the true per-channel standard deviations of CIFAR-10, (0.2470, 0.2435, 0.2616); they are kept for
parity with the paper, so normalised pixels have variances ≈ (1.49, 1.48, 1.69) and a normalised
test image has an L2 norm ≈ 67 rather than :math:`\sqrt{3072} \approx 55`. Every norm quoted in
the paper (corruption levels, matched-noise norms) is in these units.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torchvision
from torch import Tensor

from ..validation import check_choice, warn_caller

__all__ = [
    "CIFAR10",
    "DATASETS",
    "DatasetNotFoundError",
    "NORMALIZATION",
    "build_transform",
    "auto_download",
    "cache_dir",
    "canonical_name",
    "download_command",
    "download_dataset",
    "download_root",
    "find_root",
    "load_dataset",
    "load_tensors",
    "locate",
]

#: Canonical dataset names accepted everywhere (case, ``-`` and ``_`` are ignored).
DATASETS = ("cifar10", "mnist", "fashionmnist")

#: Per-dataset ``(mean, std)`` of ``torchvision.transforms.Normalize`` (methods §6.1), applied to
#: pixels in [0, 1]; ``None`` means no normalisation (``ToTensor`` only). See the module docstring
#: for why the CIFAR-10 std values are not the true standard deviations.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "mnist": None,
    "fashionmnist": ((0.5,), (0.5,)),
}

_PRETTY = {"cifar10": "CIFAR-10", "mnist": "MNIST", "fashionmnist": "FashionMNIST"}
_SHAPES = {"cifar10": (3, 32, 32), "mnist": (1, 28, 28), "fashionmnist": (1, 28, 28)}
_COUNTS = {"cifar10": (50_000, 10_000), "mnist": (60_000, 10_000), "fashionmnist": (60_000, 10_000)}

_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{k}" for k in range(1, 6))
_CIFAR_TEST = ("test_batch",)
_CIFAR_META_MD5 = "5ff9c542aee3614f3951f8cda6e48888"
#: sha256 of the decoded content of each batch: (``data.tobytes()`` of uint8 [10000, 3072] in CHW
#: order, labels as uint8 bytes); from ``shared/data/README.md``. Independent of the pickle encoding.
CIFAR10_CONTENT_SHA256: dict[str, tuple[str, str]] = {
    "data_batch_1": (
        "a50e8b48728e1667d682a807155c375279d5ae321fb12242c02e3104a6bc8b21",
        "d829dbdf32167c9d7b3687cee66d92d80d46c441308b5aca0d11e8b69e27dac9",
    ),
    "data_batch_2": (
        "0b825e5592c3b72ea18d6ec2ff5f5b19d33e41a75f5039054a9bb87be3cf69a0",
        "5d18f7371ed35ea9ade77952fe958b0660a45cd6c8b8a8970030f21612cfd7e3",
    ),
    "data_batch_3": (
        "c6ee1dd4601a69ec085d8ebf53ee6441775491a6839a0a9ae8fa198e88a3a429",
        "32cf77b0ee2e790b1c4384d2d82e42dc1571b87e67f6da8f444b2725b2973f65",
    ),
    "data_batch_4": (
        "1f6b6c799cff375a9f8fae2fac909d51ee09f38a6a60eebb9e8fec6f47ddc48f",
        "d2815e3f8f656272864920fc0edde56b04ec9cf81bf397c0dd3069f4aea51aeb",
    ),
    "data_batch_5": (
        "58e3bbf713e28357476a351d3a05d056372f94c681d04ca9d62a076fdf2a643b",
        "2ddf3ab27d5d04409c94ce7b56849c243129c10de1058ae0bfe14c77e934800c",
    ),
    "test_batch": (
        "177777c33ba79825320efa646ad04a94bdc3c80e4ebe3bd21724f8cdfd4b9d56",
        "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
    ),
}

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_TV_FOLDER = {"mnist": "MNIST", "fashionmnist": "FashionMNIST"}
_DEBIAN_FASHION = Path("/usr/share/datasets")  # holds fashion-mnist/*.gz

ENV_DATA = "DIFFEOSENS_DATA"
ENV_CACHE = "DIFFEOSENS_CACHE"
ENV_DOWNLOAD = "DIFFEOSENS_DOWNLOAD"
#: The shell command that downloads a dataset (named in every "not found" message).
_DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation while downloading (urllib has none by default)
VERIFY_MODES = ("content", "sha256", "md5")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset was not found in any searched place; the message lists them and how to get it."""


# ----------------------------------------------------------------------------------------------
# Names and places
# ----------------------------------------------------------------------------------------------


def canonical_name(name: str) -> str:
    """Canonical dataset name: lower case without ``-``/``_`` (``"CIFAR-10"`` → ``"cifar10"``).

    >>> canonical_name("CIFAR-10"), canonical_name("Fashion_MNIST")
    ('cifar10', 'fashionmnist')
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {', '.join(DATASETS)}; got {type(name).__name__}")
    key = name.lower().replace("-", "").replace("_", "")
    check_choice(key, DATASETS, name="dataset name")
    return key


def cache_dir() -> Path:
    """User-writable cache folder: ``$DIFFEOSENS_CACHE``, else ``$XDG_CACHE_HOME/diffeosens``, else ``~/.cache/diffeosens``.

    Used for gunzipped IDX files and as the default download folder (``<cache>/data``). It is
    never inside the repository.

    >>> isinstance(cache_dir(), Path)
    True
    """
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "diffeosens"


def _repo_root() -> Path | None:
    """The checkout containing this package (``lib/diffeosens/data/vision.py``), if it is one."""
    here = Path(__file__).resolve()
    repo = here.parents[3]
    if (repo / "lib" / "diffeosens").is_dir() and (repo / "pyproject.toml").is_file():
        return repo
    return None


def _fallback_roots(name: str) -> list[tuple[str, Path]]:
    """Default places searched after ``root`` and ``$DIFFEOSENS_DATA``, with a description each."""
    out: list[tuple[str, Path]] = []
    repo = _repo_root()
    if repo is not None:
        out.append(("shared data next to the repository", repo.parent / "shared" / "data"))
        out.append(("shared data inside the repository", repo / "shared" / "data"))
    cwd = Path.cwd()
    out.append(("shared data next to the working directory", cwd.parent / "shared" / "data"))
    out.append(("shared data inside the working directory", cwd / "shared" / "data"))
    out.append(("download folder", cache_dir() / "data"))
    if name == "fashionmnist":
        out.append(("Debian package dataset-fashion-mnist", _DEBIAN_FASHION))
    return out


@dataclass(frozen=True)
class _Found:
    root: Path  # the torchvision-style root
    files: Path  # the folder that holds the files themselves


def _match(name: str, root: Path) -> _Found | None:
    """The dataset's files under ``root`` in a known layout, or ``None``."""
    if name == "cifar10":
        folder = root / _CIFAR_FOLDER
        needed = ("batches.meta",) + _CIFAR_TRAIN + _CIFAR_TEST
        if all((folder / f).is_file() for f in needed):
            return _Found(root, folder)
        return None
    layouts = [root / _TV_FOLDER[name] / "raw"]
    if name == "fashionmnist":
        layouts.append(root / "fashion-mnist")  # Debian: /usr/share/datasets/fashion-mnist/*.gz
    for folder in layouts:
        if all((folder / f).is_file() or (folder / f"{f}.gz").is_file() for f in _IDX_FILES):
            return _Found(root, folder)
    return None


def _expected_layout(name: str) -> str:
    if name == "cifar10":
        return f"{_CIFAR_FOLDER}/{{batches.meta, data_batch_1..5, test_batch}}"
    folder = _TV_FOLDER[name]
    extra = " (or fashion-mnist/*.gz)" if name == "fashionmnist" else ""
    return f"{folder}/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz]{extra}"


def download_command(name: str) -> str:
    """The shell command that downloads ``name``, with this interpreter (relative when below the cwd).

    >>> download_command("cifar10").endswith("-m diffeosens data download cifar10")
    True
    """
    python = Path(sys.executable or "python")
    try:
        python = python.relative_to(Path.cwd())
    except ValueError:
        pass
    return f"{python.as_posix()} -m diffeosens data download {canonical_name(name)}"


def _not_found_message(name: str, searched: list[str], reason: str | None = None) -> str:
    """The message of :class:`DatasetNotFoundError`: why, every place searched, the commands that fix it.

    ``reason`` is ``None`` when no download was considered (:func:`find_root`), else why none
    happened or how it failed.
    """
    pretty = _PRETTY[name]
    top = _expected_layout(name).split("/")[0]
    head = f"{pretty} was not found locally" + (f", and {reason}." if reason else ".")
    lines = [head, f"Looked for {_expected_layout(name)} under, in order:"]
    lines += [f"  {k}. {s}" for k, s in enumerate(searched, 1)]
    lines.append("To fix it, do one of:")
    lines.append(
        f"  * download it (needs internet): `make data DATASETS={name}` in the diffeosens checkout, or "
        f"`{download_command(name)} [--root DIR]` (into DIR, else ${ENV_DATA}, else {cache_dir() / 'data'});"
    )
    lines.append(f"  * put a copy in a folder (the one that contains {top}/) and set {ENV_DATA}=<that folder>, or pass root=<that folder>;")
    if name == "fashionmnist":
        lines.append(
            "  * `apt-get install dataset-fashion-mnist` (installs /usr/share/datasets/fashion-mnist/*.gz, "
            "searched automatically), or gunzip those files into <root>/FashionMNIST/raw/;"
        )
    if reason is None:
        lines.append(
            f"  * load_tensors/load_dataset download it on first use unless {ENV_DOWNLOAD}=0 "
            f"(download=True forces the download, download=False forbids it);"
        )
    lines[-1] = lines[-1][:-1] + "."
    return "\n".join(lines)


def _search(name: str, root: str | os.PathLike | None, fallback: bool) -> tuple[_Found | None, list[str]]:
    # (description, folder or None for a place that is not set), in the order searched
    candidates: list[tuple[str, Path | None]] = []
    candidates.append(("root argument" if root is not None else "root argument (not given)", None if root is None else Path(root).expanduser()))
    env = os.environ.get(ENV_DATA)
    candidates.append((f"${ENV_DATA}" if env else f"${ENV_DATA} (not set)", Path(env).expanduser() if env else None))
    if fallback:
        candidates += _fallback_roots(name)
    searched: list[str] = []
    seen: set[Path] = set()
    for what, path in candidates:
        if path is None:
            searched.append(what)
            continue
        key = path.resolve() if path.exists() else path.absolute()
        if key in seen:
            continue
        seen.add(key)
        found = _match(name, path)
        searched.append(f"{what}: {path}" + ("" if path.exists() else " (does not exist)"))
        if found is not None:
            return found, searched
    return None, searched


def find_root(name: str, root: str | os.PathLike | None = None, *, fallback: bool = True) -> Path:
    """Folder that holds a dataset, in torchvision's layout (the ``root`` of its dataset class).

    Search order: ``root``, ``$DIFFEOSENS_DATA``, then (``fallback=True``) the shared data folder
    of the checkout (``<repo>/../shared/data``, ``<repo>/shared/data``), the same relative to the
    working directory, the download folder ``<cache>/data`` and, for FashionMNIST, the Debian
    folder ``/usr/share/datasets``. When ``root`` is given but does not hold the data and a later
    place does, a :class:`UserWarning` says which folder is used.

    Args:
        name: ``"cifar10"``, ``"mnist"`` or ``"fashionmnist"`` (case, ``-``, ``_`` ignored).
        root: Folder to look in first.
        fallback: Also search the default places after ``root`` and ``$DIFFEOSENS_DATA``.

    Returns:
        The root: ``<root>/cifar-10-batches-py/``, ``<root>/MNIST/raw/``,
        ``<root>/FashionMNIST/raw/`` or ``<root>/fashion-mnist/`` exists under it.

    Raises:
        DatasetNotFoundError: nowhere found; the message names every place searched and how to
            get the data (``make data`` / ``diffeosens data download``, ``root=``,
            ``DIFFEOSENS_DATA``, apt for FashionMNIST). Never downloads (the loaders do).

    >>> find_root("cifar10").joinpath("cifar-10-batches-py").is_dir()  # doctest: +SKIP
    True
    """
    return _find(canonical_name(name), root, fallback).root


def _find(name: str, root: str | os.PathLike | None, fallback: bool = True) -> _Found:
    found, searched = _search(name, root, fallback)
    if found is None:
        raise DatasetNotFoundError(_not_found_message(name, searched))
    _warn_if_elsewhere(name, root, found)
    return found


def _warn_if_elsewhere(name: str, root: str | os.PathLike | None, found: _Found) -> None:
    """An explicit place (``root=``, else ``$DIFFEOSENS_DATA``) that does not hold the dataset when a
    later place does: the setting is not honoured, so say so (never a silent fallback)."""
    if root is not None:
        if found.root != Path(root).expanduser():
            warn_caller(f"{_PRETTY[name]} is not under root={str(root)!r} (no {_expected_layout(name)} there); "
                        f"using {found.root}")
        return
    env = os.environ.get(ENV_DATA)
    if env and found.root != Path(env).expanduser():
        warn_caller(f"{_PRETTY[name]} is not under ${ENV_DATA}={env!r} (no {_expected_layout(name)} there); using "
                    f"{found.root}. Point {ENV_DATA} at the folder that holds {_expected_layout(name).split('/')[0]}/, "
                    "or unset it")


def locate(name: str, root: str | os.PathLike | None = None) -> tuple[Path | None, list[str]]:
    """Where a dataset is found, without downloading or raising: ``(root or None, places searched)``.

    The search of :func:`find_root`; the last entry of the list describes the place found.

    >>> path, searched = locate("cifar10")
    >>> path is None or path.is_dir()
    True
    """
    found, searched = _search(canonical_name(name), root, True)
    return (None if found is None else found.root), searched


# ----------------------------------------------------------------------------------------------
# Downloading (torchvision's own download, with its md5 checks)
# ----------------------------------------------------------------------------------------------


def auto_download() -> bool:
    """Whether loaders download missing data: ``$DIFFEOSENS_DOWNLOAD`` (default on; ``0``/``false``/``no``/``off`` turn it off).

    >>> isinstance(auto_download(), bool)
    True
    """
    value = os.environ.get(ENV_DOWNLOAD, "").strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{ENV_DOWNLOAD}={os.environ[ENV_DOWNLOAD]!r} is neither 1/true/yes/on nor 0/false/no/off")


def download_root(root: str | os.PathLike | None = None) -> Path:
    """The folder downloads go to: ``root`` if given, else ``$DIFFEOSENS_DATA``, else ``<cache>/data``.

    ``<cache>`` is :func:`cache_dir` (``$DIFFEOSENS_CACHE``, else ``$XDG_CACHE_HOME/diffeosens``,
    else ``~/.cache/diffeosens``). The download folder is also one of the places searched.

    >>> download_root("/tmp/x").as_posix()
    '/tmp/x'
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_DATA)
    return Path(env).expanduser() if env else cache_dir() / "data"


def _torchvision_download(name: str, folder: Path) -> None:
    """Download the official files of both splits into ``folder`` with torchvision (``download=True``).

    torchvision checks the md5 of every archive against its own list (and, for CIFAR-10, of the
    extracted batches) and raises if one differs; a failed connection raises too.
    """
    if name == "cifar10":
        for train in (True, False):
            CIFAR10(folder, train=train, download=True, verify="md5")  # the restricted unpickler; torchvision's download
    else:
        cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
        for train in (True, False):
            cls(str(folder), train=train, download=True)


def _move_into(src: Path, dst: Path) -> None:
    """Move every file under ``src`` to the same relative path under ``dst`` (each move atomic)."""
    for path in sorted(src.rglob("*")):
        if path.is_dir():
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)


def download_dataset(name: str, root: str | os.PathLike | None = None) -> Path:
    """Download a dataset's official files into :func:`download_root` and return that root.

    Nothing is downloaded when the folder already holds the dataset. Otherwise torchvision
    downloads both splits (``torchvision.datasets.CIFAR10(..., download=True)``, ``MNIST``,
    ``FashionMNIST``; its md5 checks apply) into a temporary folder inside the target, and the
    verified files are then moved into place (``<root>/cifar-10-batches-py/``,
    ``<root>/MNIST/raw/``, ``<root>/FashionMNIST/raw/``), so an interrupted download never looks
    like a dataset. Concurrent calls for the same folder wait for each other. Ignores
    ``DIFFEOSENS_DOWNLOAD`` (this *is* the explicit request).

    Args:
        name: ``"cifar10"``, ``"mnist"`` or ``"fashionmnist"``.
        root: Target folder (default ``$DIFFEOSENS_DATA``, else ``<cache>/data``).

    Returns:
        The root, to pass as ``root=`` (it is also searched by default when it is the default).

    Raises:
        OSError, RuntimeError, urllib.error.URLError: no connection, a checksum mismatch (from
            torchvision), or a folder that cannot be written.

    >>> download_dataset("cifar10")  # doctest: +SKIP
    PosixPath('/home/me/.cache/diffeosens/data')
    """
    key = canonical_name(name)
    target = download_root(root)
    if _match(key, target) is not None:
        return target
    target.mkdir(parents=True, exist_ok=True)
    with open(target / f".diffeosens-download-{key}.lock", "a") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be downloading the same thing
        except ImportError:  # pragma: no cover - not POSIX: no lock
            pass
        if _match(key, target) is not None:  # it did
            return target
        print(f"diffeosens: downloading {_PRETTY[key]} into {target} (torchvision, md5-checked)", file=sys.stderr)
        staging = Path(tempfile.mkdtemp(dir=target, prefix=f".download-{key}-"))
        previous_timeout = socket.getdefaulttimeout()
        try:
            if previous_timeout is None:
                socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)  # a dead connection fails instead of hanging
            _torchvision_download(key, staging)
            if _match(key, staging) is None:
                raise RuntimeError(f"torchvision's download left no {_expected_layout(key)} in {staging}")
            # the archives (cifar-10-python.tar.gz) stay behind; the extracted files move into place
            folder = _CIFAR_FOLDER if key == "cifar10" else f"{_TV_FOLDER[key]}/raw"
            _move_into(staging / folder, target / folder)
        finally:
            socket.setdefaulttimeout(previous_timeout)
            shutil.rmtree(staging, ignore_errors=True)
    if _match(key, target) is None:  # pragma: no cover - moved files vanished
        raise RuntimeError(f"{_PRETTY[key]} was downloaded but {target} does not hold {_expected_layout(key)}")
    return target


def _find_or_download(name: str, root: str | os.PathLike | None, download: bool | None) -> _Found:
    """The local copy (as :func:`find_root`), else the freshly downloaded one, else a clear error."""
    if download is not None and not isinstance(download, bool):
        raise TypeError(f"download must be True, False or None, got {download!r}")
    found, searched = _search(name, root, True)
    if found is not None:
        _warn_if_elsewhere(name, root, found)
        return found
    if download is False:
        raise DatasetNotFoundError(_not_found_message(name, searched, "download=False was passed, so nothing was downloaded"))
    if download is None and not auto_download():
        raise DatasetNotFoundError(_not_found_message(
            name, searched, f"automatic download is off ({ENV_DOWNLOAD}={os.environ.get(ENV_DOWNLOAD)}; unset it, or pass download=True, "
            "to download on first use)"
        ))
    target = download_root(root)
    try:
        download_dataset(name, target)
    except Exception as err:  # noqa: BLE001 - any failure (network, checksum, disk) becomes the one clear error
        detail = " ".join(f"{type(err).__name__}: {err}".split())
        if len(detail) > 400:
            detail = detail[:400] + " ..."
        raise DatasetNotFoundError(_not_found_message(name, searched, f"downloading it into {target} failed ({detail})")) from err
    found = _match(name, target)
    assert found is not None  # download_dataset checked it
    return found


# ----------------------------------------------------------------------------------------------
# Fast path: NumPy straight from the files
# ----------------------------------------------------------------------------------------------


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``) into a uint8 array of the stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = bytearray(f.read())  # writable, so torch.from_numpy does not warn
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise RuntimeError(f"{path} is not an unsigned-byte IDX file (bad magic number {raw[:4]!r})")
    ndim = raw[3]
    dims = tuple(int(v) for v in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) if dims else 0
    if len(raw) - offset != expected:
        raise RuntimeError(f"{path}: header announces shape {dims} ({expected} bytes), file holds {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _idx_path(folder: Path, stem: str) -> Path:
    plain = folder / stem
    return plain if plain.is_file() else folder / f"{stem}.gz"


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch file and nothing else: numpy arrays, dicts, lists, bytes, str and
    ints. Any other global (a function a crafted file would call) is refused before it is loaded."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load the global {module}.{name}: a CIFAR-10 batch holds only numpy arrays, lists, bytes and ints"
        )


def _unpickle_cifar(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(data uint8 [n, 3072], labels int64 [n])`` of a CIFAR-10 batch file, read with the restricted
    unpickler; any file that is not one (truncated, empty, crafted) is a :class:`RuntimeError`
    naming it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        try:
            entry = _CifarUnpickler(f, encoding="bytes").load()
        except pickle.UnpicklingError as err:
            raise RuntimeError(f"{path} ({size:,} bytes) is not a CIFAR-10 batch file: {err}") from err
        except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError, OverflowError) as err:
            raise RuntimeError(
                f"{path} ({size:,} bytes) is truncated or not a CIFAR-10 batch file ({type(err).__name__}: {err}); a batch "
                "is about 30.7 MB: copy or download it again"
            ) from err
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()} if isinstance(entry, dict) else entry
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        raise RuntimeError(f"{path} is not a CIFAR-10 batch file (expected a dict with 'data' and 'labels')")
    try:
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry["labels"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as err:
        raise RuntimeError(f"{path} is not a CIFAR-10 batch file ('data' or 'labels' is not an array of integers: {err})") from err
    if data.ndim != 2 or labels.ndim != 1 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise RuntimeError(f"{path}: expected data [n, 3072] and n labels, got data {data.shape}, labels {labels.shape}")
    return data, labels


def load_tensors(
    name: str, *, train: bool, root: str | os.PathLike | None = None, download: bool | None = None
) -> tuple[Tensor, Tensor]:
    """Whole split as tensors, read with NumPy (no PIL, no torchvision, nothing cached).

    Args:
        name: ``"cifar10"``, ``"mnist"`` or ``"fashionmnist"``.
        train: Training split if ``True``, else the test split.
        root: Folder to look in first (see :func:`find_root`); also the download target.
        download: When no local copy is found: ``None`` (default) downloads it
            (:func:`download_dataset`) unless ``DIFFEOSENS_DOWNLOAD=0``; ``True`` downloads it
            anyway; ``False`` raises :class:`DatasetNotFoundError`.

    Returns:
        ``(images, labels)``: raw pixels ``uint8 [N, C, H, W]`` (0–255, CHW, official order) and
        class indices ``int64 [N]``. CIFAR-10: ``N`` = 50,000 / 10,000, ``C, H, W = 3, 32, 32``;
        (Fashion)MNIST: 60,000 / 10,000 and ``1, 28, 28``.

    >>> x, y = load_tensors("cifar10", train=False)  # doctest: +SKIP
    >>> x.shape, x.dtype, y[:4].tolist()  # doctest: +SKIP
    (torch.Size([10000, 3, 32, 32]), torch.uint8, [3, 8, 8, 0])
    """
    key = canonical_name(name)
    if not isinstance(train, bool):
        raise TypeError(f"train must be a bool, got {train!r}")
    found = _find_or_download(key, root, download)
    if key == "cifar10":
        parts = [_unpickle_cifar(found.files / f) for f in (_CIFAR_TRAIN if train else _CIFAR_TEST)]
        data = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([p[1] for p in parts])
    else:
        prefix = "train" if train else "t10k"
        data = _read_idx(_idx_path(found.files, f"{prefix}-images-idx3-ubyte"))[:, None]
        labels = _read_idx(_idx_path(found.files, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    expected = _COUNTS[key][0 if train else 1]
    if data.shape != (expected,) + _SHAPES[key] or labels.shape != (expected,):
        raise RuntimeError(
            f"{_PRETTY[key]} {'train' if train else 'test'} split in {found.files} has images {data.shape} and "
            f"labels {labels.shape}; expected ({expected}, {', '.join(map(str, _SHAPES[key]))}) and ({expected},)"
        )
    return torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(np.ascontiguousarray(labels))


# ----------------------------------------------------------------------------------------------
# torchvision path
# ----------------------------------------------------------------------------------------------


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class CIFAR10(torchvision.datasets.CIFAR10):
    """``torchvision.datasets.CIFAR10`` whose integrity check verifies the decoded content.

    The staged batches hold the official pixels, labels and order but are not byte-identical to
    the official pickles (they lack the ``filenames`` list), so torchvision's md5 check rejects
    them. This subclass accepts any batches whose content is right.

    Args:
        root, train, transform, target_transform, download: as in torchvision.
        verify: ``"content"`` (default without ``download``): all batch files present, the
            ``batches.meta`` md5 (byte-identical in both copies), and after decoding the image
            count, shape ``[N, 32, 32, 3]`` uint8 and labels in 0–9. ``"sha256"``: in addition, the
            sha256 of every decoded batch of the split (pixels and labels) against
            :data:`CIFAR10_CONTENT_SHA256` (about 1 s more). ``"md5"`` (default with
            ``download=True``): torchvision's own check of the official file md5s.

    >>> ds = CIFAR10(find_root("cifar10"), train=False)  # doctest: +SKIP
    >>> len(ds), ds.targets[0]  # doctest: +SKIP
    (10000, 3)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
        *,
        verify: str | None = None,
    ) -> None:
        if verify is None:
            verify = "md5" if download else "content"
        check_choice(verify, VERIFY_MODES, name="verify")
        self.verify = verify
        # torchvision's own __init__ unpickles the batches with an unrestricted pickle.load; here the
        # same steps run with the restricted unpickler (a crafted batch file cannot run code)
        torchvision.datasets.VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
        self.train = train
        if download:
            self.download()
        if not self._check_integrity():
            raise RuntimeError(f"CIFAR-10 in {Path(self.root) / self.base_folder} failed the integrity check "
                               f"(verify={self.verify!r}): {self._integrity_problem()}")
        folder = Path(self.root) / self.base_folder
        parts = [_unpickle_cifar(folder / name) for name, _ in (self.train_list if train else self.test_list)]
        self.data = np.vstack([d for d, _ in parts]).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        self.targets = [int(t) for _, ls in parts for t in ls]
        meta_path = folder / self.meta["filename"]
        with open(meta_path, "rb") as f:
            try:
                meta = _CifarUnpickler(f, encoding="latin1").load()
                classes = [str(c) for c in meta[self.meta["key"]]]
            except Exception as err:  # noqa: BLE001 - any unreadable meta file is the one clear error
                raise RuntimeError(f"{meta_path} is not a CIFAR-10 meta file (a dict with {self.meta['key']!r}): "
                                   f"{type(err).__name__}: {err}") from err
        self.classes = classes
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        if verify != "md5":
            self._check_content()

    def _check_integrity(self) -> bool:
        if getattr(self, "verify", "md5") == "md5":
            return super()._check_integrity()
        folder = Path(self.root) / self.base_folder
        if not all((folder / f).is_file() for f, _ in self.train_list + self.test_list):
            return False
        meta = folder / self.meta["filename"]
        return meta.is_file() and _md5(meta) == _CIFAR_META_MD5

    def _integrity_problem(self) -> str:
        """What :meth:`_check_integrity` found wrong, naming the files (torchvision's message names none)."""
        folder = Path(self.root) / self.base_folder
        missing = [f for f, _ in self.train_list + self.test_list + [(self.meta["filename"], None)] if not (folder / f).is_file()]
        if missing:
            return f"missing file(s) {', '.join(missing)} (expected {_expected_layout('cifar10')})"
        if self.verify == "md5":
            wrong = [f for f, md5 in self.train_list + self.test_list + [(self.meta["filename"], self.meta["md5"])]
                     if _md5(folder / f) != md5]
            return (f"md5 of {', '.join(wrong)} differs from torchvision's list of the official files "
                    "(a local copy is checked with verify='content' instead)")
        meta = folder / self.meta["filename"]
        return (f"{meta} is not the CIFAR-10 batches.meta (md5 {_md5(meta)}, expected {_CIFAR_META_MD5}); "
                "copy or download it again")

    def _check_content(self) -> None:
        split = "train" if self.train else "test"
        n = _COUNTS["cifar10"][0 if self.train else 1]
        data = np.asarray(self.data)
        targets = np.asarray(self.targets)
        problems = []
        if data.shape != (n, 32, 32, 3) or data.dtype != np.uint8:
            problems.append(f"images {data.shape} {data.dtype}, expected ({n}, 32, 32, 3) uint8")
        if targets.shape != (n,) or (targets.size and (targets.min() < 0 or targets.max() > 9)):
            problems.append(f"labels of shape {targets.shape} in [{targets.min()}, {targets.max()}], expected ({n},) in [0, 9]")
        if not problems and self.verify == "sha256":
            names = _CIFAR_TRAIN if self.train else _CIFAR_TEST
            for k, batch in enumerate(names):
                sl = slice(10_000 * k, 10_000 * (k + 1))
                chw = np.ascontiguousarray(data[sl].transpose(0, 3, 1, 2).reshape(10_000, 3072))
                got = (hashlib.sha256(chw.tobytes()).hexdigest(), hashlib.sha256(targets[sl].astype(np.uint8).tobytes()).hexdigest())
                want = CIFAR10_CONTENT_SHA256[batch]
                if got[0] != want[0]:
                    problems.append(f"{batch}: pixel sha256 {got[0]} != {want[0]}")
                if got[1] != want[1]:
                    problems.append(f"{batch}: label sha256 {got[1]} != {want[1]}")
        if problems:
            raise RuntimeError(
                f"CIFAR-10 {split} split in {Path(self.root) / self.base_folder} failed the content check "
                f"(verify={self.verify!r}): " + "; ".join(problems)
            )


def _cache_key(folder: Path) -> str:
    h = hashlib.sha1(str(folder.resolve()).encode())
    for stem in _IDX_FILES:
        p = _idx_path(folder, stem)
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:12]


def _idx_root_for_torchvision(name: str, found: _Found) -> Path:
    """A root whose ``<Class>/raw/`` holds the four uncompressed IDX files.

    The found folder itself when it is in torchvision's layout and already uncompressed;
    otherwise the ``.gz`` files are gunzipped once (atomically) into ``<cache>/idx/<name>-<key>/``.
    """
    folder_name = _TV_FOLDER[name]
    if found.files == found.root / folder_name / "raw" and all((found.files / f).is_file() for f in _IDX_FILES):
        return found.root
    target_root = cache_dir() / "idx" / f"{name}-{_cache_key(found.files)}"
    raw = target_root / folder_name / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for stem in _IDX_FILES:
            dst = raw / stem
            if dst.is_file():
                continue
            src = _idx_path(found.files, stem)
            fd, tmp = tempfile.mkstemp(dir=raw, prefix=f".{stem}.")
            try:
                with os.fdopen(fd, "wb") as out:
                    if src.suffix == ".gz":
                        with gzip.open(src, "rb") as inp:
                            shutil.copyfileobj(inp, out, 1 << 20)
                    else:
                        with open(src, "rb") as inp:
                            shutil.copyfileobj(inp, out, 1 << 20)
                os.replace(tmp, dst)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
    except OSError as e:
        raise OSError(
            f"cannot write the uncompressed {_PRETTY[name]} IDX files into the cache {raw} ({e}); "
            f"set {ENV_CACHE} to a writable folder, or gunzip the files yourself into <root>/{folder_name}/raw/ "
            f"and pass root=<root>"
        ) from e
    return target_root


def load_dataset(
    name: str,
    *,
    train: bool,
    root: str | os.PathLike | None = None,
    download: bool | None = None,
    transform: Callable | None = None,
    target_transform: Callable | None = None,
    verify: str | None = None,
) -> torchvision.datasets.VisionDataset:
    """A split through torchvision's dataset classes (items are ``(PIL image or transform(image), int)``).

    A local copy found by :func:`find_root` is always loaded with ``download=False`` (whatever
    ``download`` says), because the staged files' md5s differ from torchvision's list. Only when
    nothing is found does torchvision download the official files (:func:`download_dataset`, into
    ``root``, else ``$DIFFEOSENS_DATA``, else ``<cache>/data``), checking its standard md5s.

    Args:
        name: ``"cifar10"``, ``"mnist"`` or ``"fashionmnist"``.
        train: Training split if ``True``, else the test split.
        root: Folder to look in first (see :func:`find_root`); also the download target.
        download: When no local copy is found: ``None`` (default) downloads the official files
            unless ``DIFFEOSENS_DOWNLOAD=0``; ``True`` downloads them anyway; ``False`` raises
            :class:`DatasetNotFoundError`.
        transform: Applied to each PIL image, e.g. :func:`build_transform`. ``None`` keeps PIL.
        target_transform: Applied to each label.
        verify: CIFAR-10 only: ``"content"`` / ``"sha256"`` / ``"md5"``, see :class:`CIFAR10`.

    Returns:
        :class:`CIFAR10` (a ``torchvision.datasets.CIFAR10``), ``torchvision.datasets.MNIST`` or
        ``torchvision.datasets.FashionMNIST``.

    >>> ds = load_dataset("mnist", train=True)  # doctest: +SKIP
    >>> len(ds), [ds[i][1] for i in range(5)]  # doctest: +SKIP
    (60000, [5, 0, 4, 1, 9])
    """
    key = canonical_name(name)
    if not isinstance(train, bool):
        raise TypeError(f"train must be a bool, got {train!r}")
    if verify is not None and key != "cifar10":
        raise ValueError(f"verify applies to CIFAR-10 only (got verify={verify!r} for {_PRETTY[key]}); leave it None")
    found = _find_or_download(key, root, download)
    if key == "cifar10":
        return CIFAR10(found.root, train=train, transform=transform, target_transform=target_transform, download=False, verify=verify or "content")
    tv_root = _idx_root_for_torchvision(key, found)
    cls = torchvision.datasets.MNIST if key == "mnist" else torchvision.datasets.FashionMNIST
    return cls(tv_root, train=train, transform=transform, target_transform=target_transform, download=False)


def build_transform(
    name: str,
    *,
    train: bool,
    augment: bool | None = None,
    corruption: float = 0.0,
    padding: int = 4,
) -> Callable:
    """The torchvision transform of the paper's pipeline for one split (methods §6.1, §6.2, §7.1).

    ``[RandomCrop(size, padding) + RandomHorizontalFlip()]`` (if ``augment``), ``ToTensor()``,
    ``Normalize(*NORMALIZATION[name])`` (if any), then :class:`~diffeosens.data.GaussianCorruption`
    (if ``corruption > 0``; applied to both splits, after normalisation).

    Args:
        name: ``"cifar10"``, ``"mnist"`` or ``"fashionmnist"``.
        train: Whether this is the training split (``augment`` defaults to ``train`` for CIFAR-10
            and to ``False`` otherwise).
        augment: Random crop with zero padding ``padding`` + horizontal flip (p = 1/2).
        corruption: Expected L2 norm of the Gaussian corruption (normalised units), 0 for none.
        padding: Crop padding in pixels (raw zeros, i.e. black, as torchvision pads before
            normalising).

    >>> t = build_transform("cifar10", train=True, corruption=1.0)
    >>> [type(s).__name__ for s in t.transforms]
    ['RandomCrop', 'RandomHorizontalFlip', 'ToTensor', 'Normalize', 'GaussianCorruption']
    """
    from torchvision import transforms as T

    from .corruption import GaussianCorruption

    key = canonical_name(name)
    if augment is None:
        augment = bool(train) and key == "cifar10"
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an integer >= 0 (pixels), got {padding!r}")
    steps: list[Callable] = []
    if augment:
        steps += [T.RandomCrop(_SHAPES[key][1], padding=padding), T.RandomHorizontalFlip()]
    steps.append(T.ToTensor())
    norm = NORMALIZATION[key]
    if norm is not None:
        steps.append(T.Normalize(*norm))
    if corruption:
        steps.append(GaussianCorruption(corruption))
    return T.Compose(steps)

