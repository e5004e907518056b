"""The input contract of the public entry points (issue 18, ``docs/contract.md``).

Every test here failed on the code before issue 18: a silent wrong result (BatchNorm statistics
that depend on ``batch_size``, meaningless standard errors, unchecked ``warp`` inputs, ``True``
taken as 1 pixel, infinite noise, an unhonoured ``DIFFEOSENS_DATA``) or a raw message from inside
torch, numpy or Python where a clear error is due. Errors must say what was wrong and what is
valid; warnings must point at the caller's line.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from diffeosens import deform, matched_noise
from diffeosens.data import DatasetNotFoundError, find_root, load_dataset, load_tensors, probe_images
from diffeosens.diffeo import apply_fields, sample_coefficients, warp
from diffeosens.sensitivity import DegenerateWarning, SmallProbeSetWarning, extract_features, list_layers, measure, measure_perturbed
from diffeosens.usermodels import load_model


def _images(p=12, c=3, n=16, seed=0, dtype=torch.float64):
    return torch.randn(p, c, n, n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _bn_net():
    """Two BatchNorm2d and a BatchNorm1d (one value per channel and image: batch size 1 alone cannot normalise it)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3),
    ).double()


class _SharedNorm(nn.Module):
    """One BatchNorm module called twice per forward: two sets of statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.b(torch.relu(self.bn(self.a(x))))).mean((2, 3))


def _small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)).double()


def _relative_gap(a, b, variables=("D", "G", "R", "num_D", "num_G", "deno")):
    return max(float(np.max(np.abs(a[v].values / b[v].values - 1))) for v in variables)


# ------------------------------------------------------------------------------------------------
# 1. BatchNorm at initialisation: the statistics of the whole probe set, whatever the batch size
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 7])
def test_batch_statistics_are_the_whole_probe_sets_for_every_batch_size(batch_size):
    x = _images(p=13)
    kw = dict(init_bn="batch", compute_dtype=torch.float64, seed=3, n_draws=2, delta=[0.5, 1.0])
    full = measure(_bn_net(), x, batch_size=13, **kw)
    part = measure(_bn_net(), x, batch_size=batch_size, **kw)
    assert _relative_gap(part, full) < 1e-10
    assert "gathered over mini-batches" in part.attrs["params"] and "one batch" in full.attrs["params"]
    running = measure(_bn_net(), x, batch_size=batch_size, compute_dtype=torch.float64, seed=3)
    assert _relative_gap(running, full, ("D",)) > 1e-3  # batch statistics are really used


@pytest.mark.parametrize("batch_size", [1, 7])
def test_batch_statistics_with_a_module_called_twice_and_measure_perturbed(batch_size):
    x = _images(p=13)
    y, z = x.roll(1, -1), x + 0.3 * _images(p=13, seed=1)
    torch.manual_seed(1)
    net = _SharedNorm().double()
    kw = dict(init_bn="batch", compute_dtype=torch.float64, layers="all")
    full = measure_perturbed(net, x, {"D": y, "G": z}, **kw)
    part = measure_perturbed(net, x, {"D": y, "G": z}, batch_size=batch_size, **kw)
    assert _relative_gap(part, full) < 1e-10
    assert _relative_gap(measure(net, x, batch_size=batch_size, **kw), measure(net, x, **kw)) < 1e-10


# ------------------------------------------------------------------------------------------------
# 2. Standard errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator, P", [("mean", 2), ("mean", 9), ("median", 5)])
def test_too_few_probe_images_give_nan_standard_errors_and_say_why(estimator, P):
    with pytest.warns(SmallProbeSetWarning, match=rf"at least 10 probe images, got P = {P}") as record:
        ds = measure(_small_net(), _images(p=P), estimator=estimator, compute_dtype=torch.float64)
    assert record[0].filename == __file__  # points at the caller's line
    for v in ("D", "G", "R", "num_D", "num_G", "deno"):
        assert np.isnan(ds[f"{v}_se"].values).all(), v
        assert np.isfinite(ds[v].values).all(), v
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallProbeSetWarning)
        ok = measure(_small_net(), _images(p=10), estimator=estimator, compute_dtype=torch.float64, n_boot=3)
    assert np.isfinite(ok.D_se.values).all()


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-5, ValueError), (1, ValueError), (True, TypeError),
                                        (2.5, TypeError), ("3", TypeError), (None, TypeError)])
def test_bootstrap_sizes_are_integers_of_at_least_two(bad, error):
    x = _images(p=10)
    with pytest.raises(error, match=r"n_boot \(bootstrap resamples\) must be an integer >= 2"):
        measure(_small_net(), x, estimator="median", n_boot=bad)
    with pytest.raises(error, match=r"n_boot \(bootstrap resamples\) must be an integer >= 2"):
        measure(_small_net(), x, n_boot=bad)  # checked even where the mean estimator does not use it
    with pytest.raises(error, match=r"n_boot \(bootstrap resamples\) must be an integer >= 2"):
        measure_perturbed(_small_net(), x, {"D": x.roll(1, -1)}, estimator="median", n_boot=bad)


def test_other_counts_and_flags_refuse_bools_and_strings():
    x = _images(p=10)
    with pytest.raises(TypeError, match=r"n_jackknife \(groups of the jackknife\) must be an integer >= 2, got the bool True"):
        measure(_small_net(), x, n_jackknife=True)  # was "got 1"
    with pytest.raises(TypeError, match="n_draws must be an integer >= 1, got the bool True"):
        measure(_small_net(), x, n_draws=True)
    with pytest.raises(TypeError, match="off_diagonal must be True or False, got 'no'"):
        measure(_small_net(), x, off_diagonal="no")
    with pytest.raises(TypeError, match="channel_mean must be True or False"):
        measure_perturbed(_small_net(), x, {"D": x}, channel_mean=1)


# ------------------------------------------------------------------------------------------------
# 3. One check path for deform, warp, apply_fields and sample_coefficients
# ------------------------------------------------------------------------------------------------


def test_warp_checks_its_images_like_deform():
    x = torch.rand(4, 3, 32, 32)
    coef = sample_coefficients(4, 32, delta=1.0, seed=0)
    bad = x.clone()
    bad[1, 2, 3, 4] = float("nan")
    for call in (lambda: warp(bad, coef), lambda: deform(bad, delta=1.0, seed=0)):
        with pytest.raises(ValueError, match=r"images contains 1 non-finite value\(s\)"):
            call()
    u8 = (x * 255).to(torch.uint8)
    for call in (lambda: warp(u8, coef), lambda: deform(u8, delta=1.0, seed=0), lambda: apply_fields(u8, torch.zeros(4, 2, 32, 32))):
        with pytest.raises(TypeError, match=r"floating-point dtype .* got torch.uint8; convert it first, e.g. `images.float\(\) / 255` for 8-bit images"):
            call()
    no_channel = torch.rand(4, 0, 32, 32)
    for call in (lambda: warp(no_channel, coef), lambda: deform(no_channel, delta=1.0, seed=0),
                 lambda: apply_fields(no_channel, torch.zeros(4, 2, 32, 32))):
        with pytest.raises(ValueError, match=r"at least one channel \(C >= 1"):
            call()
    with pytest.raises(ValueError, match=r"images must have shape \(B, C, H, W\) with exactly 4 dimensions, got shape \(3, 32, 32\)"):
        warp(x[0], sample_coefficients(3, 32, delta=1.0, seed=0))


def test_warp_refuses_coefficients_drawn_for_another_size():
    coef = sample_coefficients(4, 32, delta=1.0, seed=0)
    x = torch.rand(4, 3, 28, 40)
    with pytest.raises(ValueError, match=r"drawn for 32x32 images but the images are 28x40 .*with_temperature\(T=..., size=\(28, 40\)\)"):
        warp(x, coef)
    with pytest.raises(ValueError, match="drawn for 32x32 images but the images are 28x40"):
        deform(x, coefficients=coef)
    same_draw = coef.with_temperature(delta=1.0, size=(28, 40))  # the documented way to reuse a draw
    assert torch.equal(warp(x, same_draw), deform(x, delta=1.0, seed=0))


def test_an_empty_batch_gives_an_empty_result_everywhere():
    empty = torch.rand(0, 3, 16, 16)
    assert warp(empty, sample_coefficients(0, 16, delta=1.0, seed=0)).shape == (0, 3, 16, 16)
    assert deform(empty, delta=1.0, seed=0).shape == (0, 3, 16, 16)
    assert apply_fields(empty, torch.zeros(0, 2, 16, 16)).shape == (0, 3, 16, 16)
    assert matched_noise(empty, empty).shape == (0, 3, 16, 16)


@pytest.mark.parametrize("size", [32.7, 32.0, (32, 40.5), True, "32"])
def test_image_sizes_are_integers_never_truncated(size):
    with pytest.raises(TypeError, match=r"size must be an integer n or a pair \(H, W\) of integers"):
        sample_coefficients(4, size, delta=1.0, seed=0)


def test_the_number_of_modes_and_of_fields_is_bounded_before_allocating():
    x = torch.rand(2, 1, 32, 32)
    for call in (lambda: deform(x, delta=1.0, cut=1e5, seed=0), lambda: sample_coefficients(2, 32, delta=1.0, cut=1e300, seed=0),
                 lambda: deform(torch.rand(0, 1, 32, 32), delta=1.0, cut=1e5)):
        with pytest.raises(ValueError, match=r"more than the image side \(32 px\).*use cut <= 32"):
            call()
    assert deform(x, delta=0.25, cut=32, seed=0).shape == x.shape  # the bound itself is allowed
    with pytest.raises(ValueError, match=r"sample_coefficients\(batch=1000000000, cut=3\) would need .* GiB, more than the memory"):
        sample_coefficients(10**9, 32, delta=1.0, seed=0)


# ------------------------------------------------------------------------------------------------
# 4. Booleans are not numbers; matched noise never overflows silently
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [dict(delta=True), dict(T=True), dict(delta=1.0, cut=True), dict(delta=[True, 1.0]),
                                dict(delta=torch.tensor([True, False]))])
def test_bools_are_refused_like_seed_true(kw):
    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(TypeError, match="must be a number .*not a bool"):
        deform(x, seed=0, **kw)
    with pytest.raises(TypeError, match="must be a number .*not a bool"):
        sample_coefficients(2, 16, seed=0, **kw)


def test_matched_noise_near_the_largest_float32_raises_instead_of_returning_inf():
    x = torch.rand(4, 3, 8, 8) * 3e38
    with pytest.raises(ValueError, match=r"beyond the range of float32 \(largest finite value 3.4e\+38\).*float64"):
        matched_noise(x, x.flip(-1), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="beyond the range of float32"):
        matched_noise(x, x.flip(-1), generator=torch.Generator().manual_seed(0), match="batch")
    eta = matched_noise(x.double(), x.flip(-1).double(), generator=torch.Generator().manual_seed(0))  # fits in float64
    target = (x.flip(-1).double() - x.double()).flatten(1).norm(dim=1)
    torch.testing.assert_close(eta.flatten(1).norm(dim=1), target, rtol=1e-12, atol=0)


def test_matched_noise_norms_are_computed_without_overflow():
    clean = torch.zeros(2, 3, 8, 8)
    perturbed = clean.clone()
    clean[:, 0, 4, 4], perturbed[:, 0, 4, 4] = 2e38, -2e38  # finite inputs, a difference of 4e38 (inf in float32)
    eta = matched_noise(clean, perturbed, generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(eta).all())
    norms = torch.linalg.vector_norm(eta.flatten(1), dim=1, dtype=torch.float64)
    torch.testing.assert_close(norms, torch.full((2,), 4e38, dtype=torch.float64), rtol=1e-6, atol=0)


def test_a_generator_must_be_a_generator():
    x = torch.rand(2, 1, 16, 16)
    for call in (lambda: matched_noise(x, x + 1, generator=0), lambda: deform(x, delta=1.0, generator=0),
                 lambda: sample_coefficients(2, 16, delta=1.0, generator=0)):
        with pytest.raises(TypeError, match=r"generator must be a torch.Generator or None, got int 0"):
            call()


# ------------------------------------------------------------------------------------------------
# measure: shapes, layers, models, devices
# ------------------------------------------------------------------------------------------------


def test_measure_needs_a_4d_batch_of_at_least_two_images():
    x = _images(p=8)
    with pytest.raises(ValueError, match=r"\(P, C, H, W\) with 4 dimensions, got shape \(8, 16, 16\); .*images.unsqueeze\(1\)"):
        measure(_small_net(), x[:, 0])
    with pytest.raises(ValueError, match=r"\(P, C, H, W\) with 4 dimensions, got shape \(1, 8, 3, 16, 16\); .*flatten\(0, 1\)"):
        measure(_small_net(), x[None])
    with pytest.raises(ValueError, match=r"got P = 1 \(the first dimension is the probe index: .* images.transpose\(0, 1\)\)"):
        measure(_small_net(), x[:, 0][None])


@pytest.mark.parametrize("layers", [5, 2.0, ["0", 1], {"0"}])
def test_layers_of_the_wrong_type_are_refused(layers):
    with pytest.raises(TypeError, match=r"layers must be None, 'default', 'all', 'output', a layer name or a list of layer names"):
        measure(_small_net(), _images(p=10), layers=layers)


class _TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        y = self.conv(x)
        return y, y.mean((2, 3))


class _DictOut(_TupleOut):
    def forward(self, x):
        y = self.conv(x)
        return {"features": y, "pooled": y.mean((2, 3))}


@pytest.mark.parametrize("net", [_TupleOut, _DictOut])
def test_output_layer_of_a_model_without_one_output_tensor_says_why(net):
    with pytest.raises(ValueError, match=r"this model returns no single tensor \(a tuple, list or dict .*layers=\[.*'conv'"):
        measure(net().double(), _images(p=10), layers="output")


def test_a_plain_function_is_not_a_model():
    f = lambda t: t.flatten(1)  # noqa: E731
    x = _images(p=10)
    for call in (lambda: measure(f, x), lambda: measure_perturbed(f, x, {"D": x}), lambda: list_layers(f),
                 lambda: extract_features(f, x)):
        with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got function; wrap a plain function"):
            call()


def test_devices_are_checked_through_the_api():
    x = _images(p=10)
    with pytest.raises(ValueError, match=r"device='gpu' is not a torch device"):
        measure(_small_net(), x, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device='cuda': no CUDA GPU is available on this machine"):
            measure(_small_net(), x, device="cuda")
    else:
        with pytest.raises(ValueError, match=r"device='cuda:99': this machine has \d+ CUDA device"):
            measure(_small_net(), x, device="cuda:99")


# ------------------------------------------------------------------------------------------------
# 6. Data: DIFFEOSENS_DATA honoured or reported, damaged files named
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def real_cifar(monkeypatch, tmp_path_factory):
    """The CIFAR-10 folder found without $DIFFEOSENS_DATA (skipped when none is)."""
    monkeypatch.delenv("DIFFEOSENS_DATA", raising=False)
    monkeypatch.setenv("DIFFEOSENS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    try:
        return find_root("cifar10") / "cifar-10-batches-py"
    except DatasetNotFoundError:
        pytest.skip("CIFAR-10 is not available locally")


def _damaged_root(real, root, **bad: bytes):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for f in real.iterdir():
        if f.name in bad:
            (folder / f.name).write_bytes(bad[f.name])
        else:
            (folder / f.name).symlink_to(f)
    return root


def test_a_data_folder_set_but_not_holding_the_data_is_reported(real_cifar, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DIFFEOSENS_DATA", str(empty))
    with pytest.warns(UserWarning, match=r"CIFAR-10 is not under \$DIFFEOSENS_DATA=.*empty.*; using .*Point DIFFEOSENS_DATA at") as record:
        x, _ = load_tensors("cifar10", train=False)
    assert record[0].filename == __file__ and x.shape == (10_000, 3, 32, 32)
    with pytest.warns(UserWarning, match=r"is not under root=") as record:  # through probe_images: still the caller's line
        probe_images("cifar10", 4, root=empty)
    assert record[0].filename == __file__


@pytest.mark.parametrize("n_bytes", [0, 1000])
def test_a_truncated_batch_file_is_an_error_naming_it(real_cifar, tmp_path, n_bytes):
    root = _damaged_root(real_cifar, tmp_path, test_batch=(real_cifar / "test_batch").read_bytes()[:n_bytes])
    path = root / "cifar-10-batches-py" / "test_batch"
    for call in (lambda: load_tensors("cifar10", train=False, root=root), lambda: load_dataset("cifar10", train=False, root=root)):
        with pytest.raises(RuntimeError, match=rf"{path} \({n_bytes:,} bytes\) is (truncated or )?not a CIFAR-10 batch file"):
            call()


def test_a_crafted_meta_file_is_an_error_naming_it(real_cifar, tmp_path):
    root = _damaged_root(real_cifar, tmp_path, **{"batches.meta": pickle.dumps({"label_names": ["x"] * 10}, protocol=2)})
    with pytest.raises(RuntimeError, match=r"batches.meta is not the CIFAR-10 batches.meta \(md5 [0-9a-f]+, expected 5ff9c5"):
        load_dataset("cifar10", train=False, root=root)


# ------------------------------------------------------------------------------------------------
# Warnings point at the caller; seeds and probe sets
# ------------------------------------------------------------------------------------------------


def test_degenerate_warnings_point_at_the_caller():
    with pytest.warns(DegenerateWarning) as record:
        measure(_small_net(), torch.full((10, 3, 16, 16), 0.5, dtype=torch.float64), layers="output")
    assert {w.filename for w in record} == {__file__}


def test_probe_set_arguments_are_checked_before_loading():
    with pytest.raises(TypeError, match="seed must be an integer, got True"):
        probe_images("cifar10", 8, seed=True)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\), got -1"):
        probe_images("cifar10", 8, seed=-1)
    with pytest.raises(TypeError, match=r"n \(the number of probe images\) must be an integer >= 1, got 2.5"):
        probe_images("cifar10", 2.5)
    with pytest.raises(TypeError, match="dtype must be a floating torch dtype"):
        probe_images("cifar10", 8, dtype=torch.uint8)


def test_negative_model_seeds_are_refused_like_other_seeds():
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\), got -1"):
        load_model("zoo:LeNet", seed=-1)
