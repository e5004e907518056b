"""Tests of diffeosens.data (methods §6): real data, in-memory loader, corruption, synthetic tasks."""

from __future__ import annotations

import gzip
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.functional as TF

from diffeosens.data import (
    CIFAR10,
    NORMALIZATION,
    DatasetNotFoundError,
    GaussianCorruption,
    InMemoryLoader,
    augment_batch,
    build_transform,
    candidate_pixels,
    corrupt,
    eval_loader,
    find_root,
    load_dataset,
    load_tensors,
    local_translations,
    move_sites,
    noisy_test_set,
    pair_labels,
    pair_positions,
    pairs_1d,
    render_pairs,
    scale1d_dataset,
    scale1d_labels,
    twopoints_dataset,
)
from diffeosens.data import vision

CIFAR_MEAN, CIFAR_STD = NORMALIZATION["cifar10"]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No user DIFFEOSENS_DATA leaks in; gunzipped IDX files go to a temporary cache."""
    monkeypatch.delenv("DIFFEOSENS_DATA", raising=False)
    monkeypatch.setenv("DIFFEOSENS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def cifar_test():
    return load_tensors("cifar10", train=False)


# ----------------------------------------------------------------------------------------------
# Real data: CIFAR-10, MNIST, FashionMNIST
# ----------------------------------------------------------------------------------------------


def test_find_root_uses_shared_data_by_default():
    root = find_root("CIFAR-10")
    assert (root / "cifar-10-batches-py" / "data_batch_1").is_file()
    assert (find_root("mnist") / "MNIST" / "raw").is_dir()


def test_cifar10_counts_labels_and_channel_means():
    x, y = load_tensors("cifar10", train=True)
    assert x.shape == (50_000, 3, 32, 32) and x.dtype == torch.uint8
    assert y.shape == (50_000,) and y.dtype == torch.int64
    assert y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert torch.bincount(y).tolist() == [5000] * 10
    means = x.sum(dim=(0, 2, 3), dtype=torch.int64).double() / (50_000 * 32 * 32 * 255)
    np.testing.assert_allclose(means.numpy(), CIFAR_MEAN, atol=1e-4)


def test_cifar10_test_split(cifar_test):
    x, y = cifar_test
    assert x.shape == (10_000, 3, 32, 32)
    assert y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


def test_cifar10_torchvision_class_matches_tensors(cifar_test):
    ds = load_dataset("cifar10", train=False)
    assert isinstance(ds, torchvision.datasets.CIFAR10) and len(ds) == 10_000
    img, label = ds[0]
    assert label == 3 and ds.classes[label] == "cat"
    np.testing.assert_array_equal(np.asarray(img).transpose(2, 0, 1), cifar_test[0][0].numpy())


def test_plain_torchvision_rejects_staged_cifar_but_subclass_accepts():
    root = find_root("cifar10")
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        torchvision.datasets.CIFAR10(root, train=False, download=False)
    assert len(CIFAR10(root, train=False, verify="sha256")) == 10_000


def _fake_cifar_root(tmp_path: Path, test_batch: dict, root: Path | None = None, src_root: Path | None = None) -> Path:
    """A CIFAR-10 tree in torchvision's layout under ``root`` (default ``tmp_path/fake``): the staged
    train batches (symlinked from ``src_root``, default the shared copy) and ``test_batch`` pickled."""
    src = (find_root("cifar10") if src_root is None else src_root) / "cifar-10-batches-py"
    dst = (tmp_path / "fake" if root is None else root) / "cifar-10-batches-py"
    dst.mkdir(parents=True)
    for f in ["batches.meta"] + [f"data_batch_{k}" for k in range(1, 6)]:
        (dst / f).symlink_to(src / f)
    with open(dst / "test_batch", "wb") as fh:
        pickle.dump(test_batch, fh, protocol=2)
    return dst.parent


def test_cifar10_content_check_can_fail(tmp_path, cifar_test):
    x, y = cifar_test
    data = x.reshape(10_000, 3072).numpy().copy()
    data[17, 5] ^= 1  # one pixel off by one grey level
    root = _fake_cifar_root(tmp_path, {"batch_label": "testing batch 1 of 1", "labels": y.tolist(), "data": data})
    assert len(CIFAR10(root, train=False)) == 10_000  # the cheap check cannot see one pixel
    with pytest.raises(RuntimeError, match="test_batch: pixel sha256"):
        CIFAR10(root, train=False, verify="sha256")


def test_cifar10_content_check_rejects_wrong_count(tmp_path, cifar_test):
    x, y = cifar_test
    root = _fake_cifar_root(tmp_path, {"labels": y[:100].tolist(), "data": x[:100].reshape(100, 3072).numpy()})
    with pytest.raises(RuntimeError, match=r"expected \(10000, 32, 32, 3\)"):
        CIFAR10(root, train=False)


def test_missing_data_raises_clear_error(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DIFFEOSENS_DATA", str(empty))
    nowhere = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        find_root("cifar10", root=nowhere, fallback=False)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for needle in (str(nowhere), str(empty), "DIFFEOSENS_DATA", "root=", "download=True", "cifar-10-batches-py"):
        assert needle in msg, needle
    # the same through the loaders, with the default places monkeypatched away
    monkeypatch.setattr(vision, "_fallback_roots", lambda name: [])
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        load_tensors("cifar10", train=False, root=nowhere)
    with pytest.raises(DatasetNotFoundError, match="MNIST/raw"):
        load_dataset("mnist", train=False, root=nowhere)


def test_missing_fashionmnist_message_explains_apt(tmp_path, monkeypatch):
    monkeypatch.setattr(vision, "_fallback_roots", lambda name: [])
    with pytest.raises(DatasetNotFoundError) as info:
        find_root("fashionmnist", root=tmp_path)
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "FashionMNIST/raw/" in msg


def test_env_var_root_is_searched_and_explicit_miss_warns(tmp_path, monkeypatch):
    link_root = tmp_path / "data"
    link_root.mkdir()
    (link_root / "cifar-10-batches-py").symlink_to(find_root("cifar10") / "cifar-10-batches-py")
    monkeypatch.setenv("DIFFEOSENS_DATA", str(link_root))
    assert find_root("cifar10") == link_root
    with pytest.warns(UserWarning, match="not under root"):
        assert find_root("cifar10", root=tmp_path / "nowhere") == link_root


def test_unknown_dataset_name_lists_valid_ones():
    with pytest.raises(ValueError, match="'cifar10', 'fashionmnist', 'mnist'"):
        load_tensors("svhn", train=True)
    with pytest.raises(ValueError, match="verify"):
        CIFAR10(find_root("cifar10"), train=False, verify="crc")


def test_mnist_loads_both_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFEOSENS_CACHE", str(tmp_path / "cache"))
    x, y = load_tensors("mnist", train=True)
    assert x.shape == (60_000, 1, 28, 28) and y[:5].tolist() == [5, 0, 4, 1, 9]
    xt, yt = load_tensors("mnist", train=False)
    assert xt.shape == (10_000, 1, 28, 28) and yt[:5].tolist() == [7, 2, 1, 0, 4]
    ds = load_dataset("mnist", train=True)  # gunzips into the cache, not into shared/data
    assert isinstance(ds, torchvision.datasets.MNIST) and len(ds) == 60_000
    assert ds.targets[:5].tolist() == [5, 0, 4, 1, 9]
    assert torch.equal(ds.data[:100], x[:100, 0])
    assert Path(ds.root).is_relative_to(tmp_path / "cache")
    assert len(load_dataset("mnist", train=False)) == 10_000


def test_fashionmnist_if_installed():
    try:
        x, y = load_tensors("fashionmnist", train=True)
    except DatasetNotFoundError:
        pytest.skip("FashionMNIST not installed (apt-get install dataset-fashion-mnist)")
    assert x.shape == (60_000, 1, 28, 28) and y[:5].tolist() == [9, 0, 0, 3, 0]


def _write_idx_gz(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_fashionmnist_debian_layout_is_found_and_gunzipped_to_cache(tmp_path, monkeypatch):
    """The code path of ``apt-get install dataset-fashion-mnist``, on placeholder files in tmp."""
    system = tmp_path / "usr-share-datasets"
    folder = system / "fashion-mnist"
    folder.mkdir(parents=True)
    for prefix, n in (("train", 60_000), ("t10k", 10_000)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n) % 251
        _write_idx_gz(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    monkeypatch.setattr(vision, "_DEBIAN_FASHION", system)
    monkeypatch.setattr(vision, "_repo_root", lambda: None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIFFEOSENS_CACHE", str(tmp_path / "cache"))
    assert find_root("FashionMNIST") == system
    x, y = load_tensors("fashionmnist", train=False)
    assert x.shape == (10_000, 1, 28, 28) and y[:3].tolist() == [0, 1, 2] and int(x[250, 0, 0, 0]) == 250
    ds = load_dataset("fashionmnist", train=False)
    assert isinstance(ds, torchvision.datasets.FashionMNIST) and torch.equal(ds.data, x[:, 0])
    assert Path(ds.root).is_relative_to(tmp_path / "cache") and not any(folder.glob("*-ubyte"))


def test_build_transform_matches_in_memory_normalisation(cifar_test):
    ds = load_dataset("cifar10", train=False, transform=build_transform("cifar10", train=False))
    ref = torch.stack([ds[i][0] for i in range(8)])
    x, y = cifar_test
    xb, _ = next(iter(eval_loader(x[:8], y[:8], mean=CIFAR_MEAN, std=CIFAR_STD)))
    torch.testing.assert_close(xb, ref, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Download when nothing is found locally (never over the network here: torchvision's download is faked)
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def no_local_data(tmp_path, monkeypatch):
    """No local copy anywhere (no shared data, no $DIFFEOSENS_DATA); downloads allowed; the cache in tmp.

    Returns the default download folder and the shared CIFAR-10 root (for the fake downloads)."""
    shared = find_root("cifar10")
    monkeypatch.setattr(vision, "_repo_root", lambda: None)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("DIFFEOSENS_DOWNLOAD", raising=False)
    monkeypatch.delenv("DIFFEOSENS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    target = tmp_path / "xdg" / "diffeosens" / "data"
    with pytest.raises(DatasetNotFoundError):
        find_root("cifar10")
    return target, shared


def _shifted_test_batch(cifar_test) -> dict:
    """The real test split with labels shifted by one: what a fake download writes, recognisable."""
    x, y = cifar_test
    return {"batch_label": "testing batch 1 of 1", "labels": ((y + 1) % 10).tolist(), "data": x.reshape(10_000, 3072).numpy()}


def test_download_root_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("DIFFEOSENS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert vision.download_root() == tmp_path / "xdg" / "diffeosens" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert vision.download_root() == Path.home() / ".cache" / "diffeosens" / "data"
    monkeypatch.setenv("DIFFEOSENS_DATA", str(tmp_path / "mine"))
    assert vision.download_root() == tmp_path / "mine"
    assert vision.download_root(tmp_path / "explicit") == tmp_path / "explicit"
    for value, on in (("0", False), ("off", False), ("False", False), ("1", True), ("", True), ("yes", True)):
        monkeypatch.setenv("DIFFEOSENS_DOWNLOAD", value)
        assert vision.auto_download() is on, value
    monkeypatch.setenv("DIFFEOSENS_DOWNLOAD", "maybe")
    with pytest.raises(ValueError, match="DIFFEOSENS_DOWNLOAD='maybe'"):
        vision.auto_download()


def test_missing_data_is_downloaded_then_read_from_the_download(no_local_data, cifar_test, monkeypatch, capsys):
    target, shared = no_local_data
    calls = []

    def fake_download(name, folder):
        calls.append((name, folder))
        _fake_cifar_root(folder, _shifted_test_batch(cifar_test), root=folder, src_root=shared)

    monkeypatch.setattr(vision, "_torchvision_download", fake_download)
    x, y = load_tensors("cifar10", train=False)
    assert len(calls) == 1 and calls[0][0] == "cifar10"
    assert calls[0][1].parent == target  # a staging folder inside the download folder, removed afterwards
    assert not calls[0][1].exists() and (target / "cifar-10-batches-py" / "test_batch").is_file()
    assert y.tolist() == ((cifar_test[1] + 1) % 10).tolist() and torch.equal(x, cifar_test[0])
    assert "downloading CIFAR-10 into" in capsys.readouterr().err
    # next time it is a local copy (the download folder is searched): no second download
    assert find_root("cifar10") == target
    ds = load_dataset("cifar10", train=False)
    assert Path(ds.root) == target and ds.targets[:3] == [4, 9, 9]
    assert len(calls) == 1


def test_download_goes_to_root_or_env_and_respects_download_false(no_local_data, cifar_test, tmp_path, monkeypatch):
    target, shared = no_local_data
    calls = []
    monkeypatch.setattr(vision, "_torchvision_download", lambda name, folder: calls.append(folder) or
                        _fake_cifar_root(folder, _shifted_test_batch(cifar_test), root=folder, src_root=shared))
    with pytest.raises(DatasetNotFoundError, match="download=False was passed"):
        load_tensors("cifar10", train=False, download=False)
    assert calls == []
    mine = tmp_path / "mine"
    monkeypatch.setenv("DIFFEOSENS_DATA", str(mine))
    with pytest.warns(UserWarning, match="not under root"):  # an explicit root wins; $DIFFEOSENS_DATA then holds it
        assert vision.download_dataset("cifar10") == mine
        assert len(load_tensors("cifar10", train=False, root=tmp_path / "explicit")[1]) == 10_000
    assert [c.parent for c in calls] == [mine]
    monkeypatch.delenv("DIFFEOSENS_DATA")
    assert len(load_tensors("cifar10", train=False, root=tmp_path / "explicit")[1]) == 10_000
    assert [c.parent for c in calls] == [mine, tmp_path / "explicit"]
    assert vision.download_dataset("cifar10", tmp_path / "explicit") == tmp_path / "explicit"  # already there
    assert len(calls) == 2


def test_fresh_download_goes_through_torchvision_with_its_md5_check(no_local_data, cifar_test, tmp_path, monkeypatch):
    """torchvision's own CIFAR10.download (download_and_extract_archive with its url and md5) is what
    runs; the extracted files must then pass torchvision's md5 list (patched here to the fake's md5s)."""
    target, shared = no_local_data
    calls = []

    def fake_archive(url, download_root, filename=None, md5=None, **kw):
        calls.append((url, Path(download_root), filename, md5))
        _fake_cifar_root(Path(download_root), _shifted_test_batch(cifar_test), root=Path(download_root), src_root=shared)

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", fake_archive)
    tv = torchvision.datasets.CIFAR10
    with pytest.raises(DatasetNotFoundError) as info:  # the fake files fail torchvision's md5 list
        load_tensors("cifar10", train=False)
    msg = str(info.value)  # names the files whose md5 differs (torchvision's own message names none)
    assert "failed the integrity check (verify='md5'): md5 of" in msg and "test_batch" in msg and f"downloading it into {target} failed" in msg
    assert calls[0][0] == tv.url and calls[0][2] == tv.filename and calls[0][3] == tv.tgz_md5
    assert calls[0][1].parent == target and not calls[0][1].exists()
    assert not (target / "cifar-10-batches-py").exists()  # nothing half-verified is left as a dataset

    def md5s(files):
        return [[f, vision._md5((shared / "cifar-10-batches-py" / f).resolve())] for f, _ in files]

    written = _fake_cifar_root(tmp_path, _shifted_test_batch(cifar_test), src_root=shared) / "cifar-10-batches-py" / "test_batch"
    test_md5 = vision._md5(written)
    monkeypatch.setattr(tv, "train_list", md5s(tv.train_list))
    monkeypatch.setattr(tv, "test_list", [["test_batch", test_md5]])
    x, y = load_tensors("cifar10", train=False)
    assert y.tolist() == ((cifar_test[1] + 1) % 10).tolist()
    assert (target / "cifar-10-batches-py").is_dir()


def test_failed_download_names_the_fix_and_the_places(no_local_data, monkeypatch):
    import urllib.error

    target, _ = no_local_data

    def offline(name, folder):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(vision, "_torchvision_download", offline)
    for loader in (load_tensors, load_dataset):
        with pytest.raises(DatasetNotFoundError) as info:
            loader("cifar10", train=False)
        msg = str(info.value)
        for needle in ("make data", "-m diffeosens data download cifar10 [--root DIR]", "DIFFEOSENS_DATA", f"downloading it into {target} failed",
                       "URLError", "Name or service not known", str(Path.cwd().parent / "shared" / "data"), "$DIFFEOSENS_DATA (not set)",
                       f"download folder: {target}"):
            assert needle in msg, (needle, msg)
    assert not (target / "cifar-10-batches-py").exists() and not list(target.glob(".download-*"))


def test_opt_out_never_downloads(no_local_data, monkeypatch):
    calls = []
    monkeypatch.setattr(vision, "_torchvision_download", lambda name, folder: calls.append(name))
    monkeypatch.setenv("DIFFEOSENS_DOWNLOAD", "0")
    for name in ("cifar10", "mnist"):
        with pytest.raises(DatasetNotFoundError) as info:
            load_tensors(name, train=True)
        msg = str(info.value)
        assert "automatic download is off (DIFFEOSENS_DOWNLOAD=0" in msg and f"make data DATASETS={name}" in msg
        assert f"diffeosens data download {name}" in msg
    with pytest.raises(DatasetNotFoundError, match="DIFFEOSENS_DOWNLOAD=0"):
        load_dataset("mnist", train=False)
    assert calls == []
    with pytest.raises(TypeError, match="download must be"):
        load_tensors("cifar10", train=False, download="yes")

    def offline(name, folder):
        calls.append(name)
        raise OSError("offline")

    monkeypatch.setattr(vision, "_torchvision_download", offline)
    with pytest.raises(DatasetNotFoundError, match="OSError: offline"):
        load_tensors("mnist", train=False, download=True)  # an explicit download=True overrides the opt-out
    assert calls == ["mnist"]


# ----------------------------------------------------------------------------------------------
# In-memory loader
# ----------------------------------------------------------------------------------------------


def _reference_augment(img: torch.Tensor, top: int, left: int, flip: bool, p: int = 4) -> torch.Tensor:
    """Slow per-image crop + flip with explicit zero padding."""
    c, h, w = img.shape
    padded = torch.zeros(c, h + 2 * p, w + 2 * p, dtype=img.dtype)
    padded[:, p : p + h, p : p + w] = img
    out = padded[:, top : top + h, left : left + w]
    return torch.flip(out, dims=[2]) if flip else out


def test_loader_epoch_covers_every_index_once():
    x = torch.randint(0, 256, (103, 3, 8, 8), dtype=torch.uint8)
    loader = InMemoryLoader(x, torch.arange(103), batch_size=10, shuffle=True, augment=True, seed=3)
    assert len(loader) == 11
    for _ in range(2):
        seen = torch.cat([info.indices for _, _, info in loader.batches(with_info=True)])
        assert sorted(seen.tolist()) == list(range(103))
        assert seen.tolist() != list(range(103))  # shuffled
    ys = torch.cat([yb for _, yb in loader])
    assert sorted(ys.tolist()) == list(range(103))
    dropped = InMemoryLoader(x, torch.arange(103), batch_size=10, drop_last=True, seed=0)
    assert len(dropped) == 10 and sum(len(yb) for _, yb in dropped) == 100


def test_loader_crops_are_exact_shifts_of_padded_image(cifar_test):
    x, y = cifar_test[0][:64], cifar_test[1][:64]
    loader = InMemoryLoader(x, y, batch_size=16, augment=True, mean=CIFAR_MEAN, std=CIFAR_STD, seed=0)
    mean = torch.tensor(CIFAR_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(3, 1, 1)
    checked = 0
    for xb, yb, info in loader.batches(with_info=True):
        assert torch.equal(yb, y[info.indices])
        for k in range(0, len(yb), 3):
            i = int(info.indices[k])
            top, left = (int(v) for v in info.offsets[k])
            flip = bool(info.flips[k])
            raw = _reference_augment(x[i], top, left, flip)
            torch.testing.assert_close(xb[k], (raw.float() / 255 - mean) / std, rtol=0, atol=1e-6)
            # torchvision's own kernels with the same parameters
            tv = TF.crop(TF.pad(x[i], [4]), top, left, 32, 32)
            tv = TF.hflip(tv) if flip else tv
            assert torch.equal(raw, tv)
            checked += 1
    assert checked >= 20
    offsets = torch.cat([info.offsets for _, _, info in loader.batches(with_info=True)])
    flips = torch.cat([info.flips for _, _, info in loader.batches(with_info=True)])
    assert offsets.min() == 0 and offsets.max() == 8 and 0.25 < flips.float().mean() < 0.75


def test_padding_is_raw_black_before_normalisation():
    x = torch.full((2, 3, 32, 32), 200, dtype=torch.uint8)
    out = augment_batch(x, torch.tensor([[0, 0], [8, 8]]), torch.tensor([False, True]), padding=4)
    assert (out[0, :, :4, :] == 0).all() and (out[0, :, 4:, 4:] == 200).all()
    # the crop at (8, 8) takes the bottom-right padding; the flip moves the right band to the left
    assert (out[1, :, -4:, :] == 0).all() and (out[1, :, :28, :4] == 0).all() and (out[1, :, :28, 4:] == 200).all()
    loader = eval_loader(out, torch.zeros(2), mean=CIFAR_MEAN, std=CIFAR_STD)
    xb, _ = next(iter(loader))
    expected = -torch.tensor(CIFAR_MEAN) / torch.tensor(CIFAR_STD)
    torch.testing.assert_close(xb[0, :, 0, 0], expected)


def test_loader_same_seed_same_batches():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    kw = dict(batch_size=8, augment=True, corruption=5.0, mean=(0.5,) * 3, std=(0.2,) * 3)

    def run(seed):
        loader = InMemoryLoader(x, torch.arange(50), seed=seed, **kw)
        return [xb for _ in range(2) for xb, _ in loader]

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[len(a) // 2])  # the second epoch differs from the first


def test_loader_subset_and_options():
    x = torch.randint(0, 256, (40, 1, 6, 6), dtype=torch.uint8)
    first = InMemoryLoader(x, torch.arange(40), subset=10, shuffle=False, batch_size=4)
    assert first.num_samples == 10 and torch.cat([y for _, y in first]).tolist() == list(range(10))
    rand = InMemoryLoader(x, torch.arange(40), subset=10, subset_seed=0, batch_size=4, seed=0)
    rand2 = InMemoryLoader(x, torch.arange(40), subset=10, subset_seed=0, batch_size=4, seed=5)
    assert sorted(torch.cat([y for _, y in rand]).tolist()) == sorted(torch.cat([y for _, y in rand2]).tolist())
    xb, _ = next(iter(InMemoryLoader(x, torch.arange(40), dtype=torch.float64, channels_last=True, seed=0)))
    assert xb.dtype == torch.float64 and xb.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=r"subset must be an int in \[1, 40\]"):
        InMemoryLoader(x, torch.arange(40), subset=41)
    with pytest.raises(ValueError, match="batch_size"):
        InMemoryLoader(x, torch.arange(40), batch_size=0)


def test_eval_loader_corruption_is_fresh_each_pass():
    x = torch.zeros(6, 3, 4, 4)
    loader = eval_loader(x, torch.arange(6), corruption=1.0, seed=0)
    p1, p2 = torch.cat([xb for xb, _ in loader]), torch.cat([xb for xb, _ in loader])
    assert not torch.equal(p1, p2)
    assert torch.cat([y for _, y in loader]).tolist() == list(range(6))


# ----------------------------------------------------------------------------------------------
# Training-noise corruption
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", [1.0, 30.0])
def test_corruption_per_pixel_std(norm):
    x = torch.zeros(400, 3, 32, 32)  # 1,228,800 noise samples
    noise = corrupt(x, norm, generator=torch.Generator().manual_seed(0)) - x
    per_pixel = norm / math.sqrt(3072)
    assert abs(float(noise.std()) / per_pixel - 1) < 0.01  # sampling error ~ 0.06 %
    assert abs(float(noise.flatten(1).pow(2).sum(1).mean()) / norm**2 - 1) < 0.01  # norm = expected L2 norm
    single = GaussianCorruption(norm)(torch.zeros(1, 28, 28))
    assert single.shape == (1, 28, 28)


def test_corruption_fresh_draws_and_fixed_test_set():
    t = GaussianCorruption(1.0)
    img = torch.zeros(3, 32, 32)
    assert not torch.equal(t(img), t(img))
    batch = torch.zeros(4, 3, 32, 32)
    out = t(batch)
    assert not torch.equal(out[0], out[1])  # each image its own draw
    a, b = noisy_test_set(batch, 10.0, seed=0), noisy_test_set(batch, 10.0, seed=0)
    assert torch.equal(a, b) and not torch.equal(a, noisy_test_set(batch, 10.0, seed=1))
    assert torch.equal(corrupt(batch, 0.0), batch)
    with pytest.raises(ValueError, match="norm must be a finite number >= 0"):
        GaussianCorruption(-1.0)


# ----------------------------------------------------------------------------------------------
# 2D two-points task
# ----------------------------------------------------------------------------------------------


def test_twopoints_counts():
    pos = pair_positions(28)
    assert pos.shape == (285_390, 2, 2)
    labels = pair_labels(pos, xi=14, gap=2)
    assert int((labels == 0).sum()) == 135_397  # far
    assert int((labels == 1).sum()) == 120_767  # close
    assert int((labels == -1).sum()) == 29_226  # discarded
    assert pair_positions(28, include_diagonal=True).shape[0] == 784 * 783 // 2


@pytest.mark.parametrize(
    ("offset", "expected"),
    [((8, 10), 1), ((0, 12), 1), ((5, 12), -1), ((0, 13), -1), ((10, 10), -1), ((10, 11), -1), ((9, 12), 0), ((1, 15), 0)],
)
def test_twopoints_boundary_labels(offset, expected):
    # r^2 = 164 (12.81) close; 144 close; 169 (13) and 200, 221 (14.87) discarded; 225 (15), 226 far
    pos = torch.tensor([[[1, 2], [1 + offset[0], 2 + offset[1]]]])
    assert pair_labels(pos).item() == expected


def test_twopoints_linf_and_quadrant():
    pos = torch.tensor([[[0, 1], [12, 12]], [[0, 1], [0, 15]], [[0, 1], [16, 5]]])
    assert pair_labels(pos, norm="linf").tolist() == [1, -1, 0]
    assert pair_labels(pos, labelling="quadrant").tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="unknown norm 'l1'; valid values are 'l2', 'linf'"):
        pair_labels(pos, norm="l1")


def test_twopoints_dataset_balance_splits_and_diagonal():
    data = twopoints_dataset(ptr=1024, seed=0)
    assert data.n_per_class == 120_767 and data.pool_size == 2 * (120_767 - 2048)
    train, test = data.train, data.test
    assert len(train) == 1024 and len(test) == 4096
    assert test.labels[:4].tolist() == [0, 1, 0, 1] and int(test.labels.sum()) == 2048
    assert torch.equal(train.signs, 2 * train.labels - 1)
    assert set(train.index.tolist()).isdisjoint(test.index.tolist())
    # far = class 0 = -1, close = class 1 = +1
    r = (train.positions[:, 0] - train.positions[:, 1]).double().norm(dim=1)
    assert bool((r[train.signs == -1] >= 15).all()) and bool((r[train.signs == 1] < 13).all())
    for split in (train, test):
        assert split.images.shape[1:] == (1, 28, 28)
        assert torch.equal(split.images.flatten(1).count_nonzero(1), torch.full((len(split),), 2))
        assert set(split.images.unique().tolist()) == {0.0, 392.0}
        assert split.images[:, 0, torch.arange(28), torch.arange(28)].abs().sum() == 0  # diagonal never lit
    assert not bool((candidate_pixels(28)[:, 0] == candidate_pixels(28)[:, 1]).any())
    again = twopoints_dataset(ptr=1024, seed=0)
    other = twopoints_dataset(ptr=1024, seed=1)
    assert torch.equal(again.train.index, train.index) and not torch.equal(other.train.index, train.index)
    assert torch.equal(other.test.index, test.index)  # the test set does not depend on seed
    with pytest.raises(ValueError, match="ptr must be in"):
        twopoints_dataset(ptr=300_000, testsize=2)


def test_local_translations_moves_and_order():
    test = twopoints_dataset(ptr=1250, seed=0).test  # 5000 images
    res = local_translations(test.images, generator=torch.Generator().manual_seed(0), return_info=True)
    assert res.images.shape == test.images.shape
    assert torch.equal(res.before, test.positions)  # same images, same order
    sq = res.steps.pow(2).sum(-1)
    assert set(sq.unique().tolist()) <= {1, 2}  # length 1 or sqrt(2) before clipping
    assert abs(float((sq == 2).double().mean()) - 1 / 3) < 0.03
    assert torch.equal(res.after, (res.before + res.steps).clamp(0, 27))
    assert torch.equal(res.images, render_pairs(res.after))
    assert bool((res.after - test.positions).abs().max() <= 1)


def test_local_translations_label_check():
    test = twopoints_dataset(ptr=1250, seed=0).test
    gen = torch.Generator().manual_seed(1)
    with pytest.warns(UserWarning, match="changed label"):
        res = local_translations(test.images, generator=gen, check_labels=True, return_info=True)
    assert 0 < int(res.crossed.sum()) < len(test)
    gen = torch.Generator().manual_seed(1)
    with pytest.warns(UserWarning, match="returned unmoved"):
        undone = local_translations(test.images, generator=gen, check_labels=True, undo_crossing=True)
    assert torch.equal(undone[res.crossed], test.images[res.crossed])
    assert torch.equal(undone[~res.crossed], res.images[~res.crossed])


# ----------------------------------------------------------------------------------------------
# 1D tasks
# ----------------------------------------------------------------------------------------------


def test_scale1d_task2_counts_and_rule():
    pos = pairs_1d(128)
    signs = scale1d_labels(pos, task=2, N=128, xi=32)
    assert int((signs == 1).sum()) == 1_984 and int((signs == -1).sum()) == 6_144
    same = pos[:, 0] // 32 == pos[:, 1] // 32
    assert torch.equal(signs == 1, same)
    assert scale1d_labels(torch.tensor([[31, 32], [32, 63], [0, 127]]), task=2).tolist() == [-1, 1, -1]


def test_scale1d_task1_rule():
    pos = torch.tensor([[0, 27], [0, 28], [0, 35], [0, 36], [0, 127], [10, 115], [0, 64]])
    assert scale1d_labels(pos, task=1, N=128, xi=32, gap=4).tolist() == [1, 0, 0, -1, 1, 1, -1]


def test_scale1d_dataset_balance_and_splits():
    data = scale1d_dataset(task=2, N=128, xi=32, seed=0)
    assert data.n_per_class == 1_984
    assert (len(data.train), len(data.val), len(data.test)) == (1024, 128, 2816)
    for split in (data.train, data.val, data.test):
        assert int((split.signs == 1).sum()) == len(split) // 2
        assert split.signs[:4].tolist() == [1, -1, 1, -1]
        assert torch.equal(split.signs, scale1d_labels(split.positions, task=2))
        assert set(split.images.unique().tolist()) == {0.0, 8.0}  # sqrt(magn), magn = N/2
    all_idx = torch.cat([data.train.index, data.val.index, data.test.index])
    assert all_idx.unique().numel() == all_idx.numel()
    t1 = scale1d_dataset(task=1, N=64, xi=16, gap=2, n_train=100, n_val=10)
    assert int((t1.train.signs == 1).sum()) == 100


def test_scale1d_bad_xi():
    with pytest.raises(ValueError, match="xi must be a power of two"):
        scale1d_labels(pairs_1d(128), task=2, N=128, xi=24)
    with pytest.raises(ValueError, match="xi must be a power of two <= N = 16"):
        scale1d_dataset(N=16, xi=32)
    with pytest.raises(ValueError, match="unknown task 3"):
        scale1d_labels(pairs_1d(8), task=3, N=8, xi=4)


def test_scale1d_moves_keep_task2_label():
    from diffeosens.data import render_1d

    pos = pairs_1d(128)
    x = render_1d(pos, N=128)
    signs = scale1d_labels(pos, task=2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        moved, before, after = move_sites(x, xi=32, generator=gen, return_positions=True)
        assert torch.equal(before, pos)
        assert bool(((after - before).abs() <= 1).all()) and int(after.min()) >= 0 and int(after.max()) <= 127
        assert torch.equal(after // 32, before // 32)  # no site leaves its block
        assert torch.equal(scale1d_labels(after, task=2), signs)
        assert float((after != before).double().mean()) > 0.9  # only moves out of a block are undone
        assert torch.equal(moved[:, 0].count_nonzero(1) >= 1, torch.ones(len(pos), dtype=torch.bool))


class _Exploit:
    """Unpickling this calls os.system: what a crafted batch file could do."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("reader", ["tensors", "torchvision"])
def test_crafted_cifar_batch_cannot_run_code(tmp_path, cifar_test, reader, monkeypatch):
    x, y = cifar_test
    root = _fake_cifar_root(tmp_path, {"labels": y.tolist(), "data": x.reshape(10_000, 3072).numpy(), "evil": _Exploit()})
    called = []
    monkeypatch.setattr("os.system", lambda *a: called.append(a) or 0)
    with pytest.raises(RuntimeError, match="refusing to load the global .*system"):
        if reader == "tensors":
            vision._unpickle_cifar(Path(root) / "cifar-10-batches-py" / "test_batch")
        else:
            CIFAR10(root, train=False)
    assert not called


def test_restricted_unpickler_reads_the_real_batches(cifar_test):
    ds = CIFAR10(find_root("cifar10"), train=False)
    x, y = cifar_test
    assert ds.classes[3] == "cat" and ds.targets == y.tolist()
    assert np.array_equal(ds.data, x.permute(0, 2, 3, 1).numpy())
