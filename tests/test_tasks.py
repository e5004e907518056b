"""Measurements on the scale-detection tasks, including a small but trained 1D network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffeosens.runs import TrainedRun
from diffeosens.tasks import measure_scale1d, measure_twopoints, scale1d_probes, twopoints_probes
from diffeosens.train import train_network

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def run1d(tmp_path_factory):
    """ConvGAP1d, filter 2, stride 2, ReLU, trained on task T2 (smoke size, ~10 s)."""
    out = tmp_path_factory.mktemp("conv1d")
    train_network("ConvGAP1d", dataset="scale1d", recipe="auto", profile="smoke", seed=0, out_dir=out, progress=False,
                  model_options={"filter_size": 2, "stride": 2}, recipe_overrides={"monitor_every": 5, "interpolation_factor": 2})
    return TrainedRun(out)


def _blocks(ds, var):
    return ds[var].where(ds.layer_kind == "act", drop=True).values


def test_trained_stride2_relu_net_loses_sensitivity_to_moves_with_depth(run1d):
    assert run1d.test_error < 0.4  # it learned the task
    trained = measure_scale1d(run1d, state="trained", protocol="1d", n_probe=200)
    init = measure_scale1d(run1d, state="init", protocol="1d", n_probe=200)
    d, d0 = _blocks(trained, "D"), _blocks(init, "D")
    assert len(d) == 7
    k = np.arange(1, 6)  # the last two blocks carry the finite-size factor 1 / (1 - 2^k / N)
    slope = np.polyfit(k, np.log2(d[:5]), 1)[0]
    slope0 = np.polyfit(k, np.log2(d0[:5]), 1)[0]
    assert d[3] < d[0] / 3  # measured: 0.50 -> 0.075
    assert slope < -0.5 and slope < slope0  # measured: about -0.7 trained vs -0.2 at init


def test_1d_protocols_differ_as_documented(run1d):
    one = measure_scale1d(run1d, state="trained", protocol="1d", n_probe=64)
    cif = measure_scale1d(run1d, state="trained", protocol="cifar", n_probe=64)
    assert one.attrs["protocol"] == "1d" and json_bool(one.attrs["params"], "channel_mean")
    assert not json_bool(cif.attrs["params"], "channel_mean")
    assert not np.allclose(one.D.values, cif.D.values)
    with pytest.raises(ValueError, match="unknown protocol"):
        measure_scale1d(run1d, protocol="2d")


def json_bool(text, key):
    import json

    return bool(json.loads(text)[key])


def test_scale1d_probes_are_balanced_and_moves_keep_the_block(run1d):
    x, moved = scale1d_probes(run1d, 100, seed=3)
    assert x.shape == moved.shape == (100, 1, 128)
    pos = [torch.nonzero(s[0]).flatten() for s in x]
    blocks = [int(p[0] // 32 == p[-1] // 32) for p in pos]
    assert sum(blocks) == 50  # balanced: half same-block, half different
    for a, b in zip(x, moved):
        pa, pb = torch.nonzero(a[0]).flatten(), torch.nonzero(b[0]).flatten()
        assert (pa // 32).tolist()[: len(pb)] == (pb // 32).tolist()[: len(pa)] or len(pb) < len(pa)


def test_twopoints_measurement_uses_one_pixel_moves(tmp_path):
    train_network("LeNet", dataset="twopoints", recipe="auto", profile="smoke", epochs=1, out_dir=tmp_path, progress=False)
    run = TrainedRun(tmp_path)
    x, moved = twopoints_probes(run, 20, seed=0)
    assert x.shape == (20, 1, 28, 28)
    for a, b in zip(x, moved):
        pa = torch.nonzero(a[0]).float()
        pb = torch.nonzero(b[0]).float()
        if len(pa) == len(pb) == 2:
            step = torch.cdist(pa, pb).min(1).values  # every pixel moved by at most one diagonal step
            assert float(step.max()) <= 2**0.5 + 1e-6
    ds = measure_twopoints(run, state="trained", n_probe=20)
    assert ds.attrs["protocol"] == "twopoints" and np.isfinite(ds.D.values).all() and np.isfinite(ds.G.values).all()
