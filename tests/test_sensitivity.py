"""Tests of diffeosens.sensitivity against brute-force references written here."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from diffeosens import deform, diffeo
from diffeosens.sensitivity import extract_features, list_layers, measure, measure_perturbed

torch.set_num_threads(2)

# Many tests here use fewer than 10 probe images on purpose (brute-force references); their standard
# errors are NaN with a SmallProbeSetWarning, which tests/test_contract.py checks.
pytestmark = pytest.mark.filterwarnings("ignore::diffeosens.sensitivity.SmallProbeSetWarning")


def _images(p=24, c=3, n=12, seed=0, dtype=torch.float64):
    return torch.randn(p, c, n, n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _small_cnn(c=3, seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(c, 6, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(6))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)]
    return nn.Sequential(*layers).double()


def pairwise_mean(a: torch.Tensor) -> float:
    """Brute-force mean over all P^2 ordered pairs (diagonal included) of squared distances."""
    a = a.double()
    p = a.shape[0]
    total = 0.0
    for i in range(p):
        for j in range(p):
            total += float((a[i] - a[j]).square().sum())
    return total / p**2


# ------------------------------------------------------------------------------------------------
# Probe points
# ------------------------------------------------------------------------------------------------


def test_list_layers_kinds_depths_and_exclusions():
    layers = list_layers(_small_cnn(bn=True))
    assert [(l.name, l.kind) for l in layers] == [
        ("0", "conv"), ("1", "norm"), ("2", "act"), ("3", "pool"), ("4", "conv"), ("5", "act"), ("6", "pool"), ("8", "output"),
    ]
    assert [l.depth for l in layers] == [1, 1, 1, 1, 2, 2, 2, 3]
    assert [l.index for l in layers] == list(range(8))
    every = [l.name for l in list_layers(_small_cnn(), include="all")]
    assert "7" in every  # the flatten node is kept only by include="all"


def test_list_layers_on_functional_graph_and_hooks_fallback():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            y = y + x
            return torch.relu(y).mean((2, 3))

    names = [(l.name, l.kind) for l in list_layers(Res())]
    assert names == [("conv", "conv"), ("add", "add"), ("relu", "act"), ("mean", "output")]

    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                return self.lin(x)
            return self.lin(-x)

    layers = list_layers(Untraceable())
    assert [(l.name, l.kind) for l in layers] == [("lin", "linear"), ("output", "output")]
    ds = measure_perturbed(Untraceable().double(), torch.randn(6, 4, dtype=torch.float64) + 5, {"D": torch.randn(6, 4, dtype=torch.float64) + 5})
    assert ds.attrs["capture"] == "hooks" and np.isfinite(ds.D.values).all()


def test_the_model_is_traced_once_per_call(monkeypatch):
    """measure, measure_perturbed, extract_features and list_layers trace the model with torch.fx once."""
    from torchvision.models.feature_extraction import NodePathTracer

    calls = []
    trace = NodePathTracer.trace

    def counting_trace(self, root, *args, **kwargs):
        calls.append(type(root).__name__)
        return trace(self, root, *args, **kwargs)

    monkeypatch.setattr(NodePathTracer, "trace", counting_trace)
    net, x = _small_cnn(bn=True), _images(p=6)
    runs = {
        "measure": lambda: measure(net, x, n_draws=2, batch_size=4),
        "measure median": lambda: measure(net, x, estimator="median", n_boot=2, layers="all"),
        "measure_perturbed": lambda: measure_perturbed(net, x, {"D": x.roll(1, -1), "G": x + 0.1}, layers=["0", "2"]),
        "extract_features": lambda: extract_features(net, x),
        "list_layers": lambda: list_layers(net, include="all"),
    }
    for what, run in runs.items():
        calls.clear()
        run()
        assert len(calls) == 1, (what, calls)


# ------------------------------------------------------------------------------------------------
# Estimators against brute force
# ------------------------------------------------------------------------------------------------


def test_identity_model_D_is_mean_displacement_over_deno_and_G_equals_D():
    x = _images(p=20)
    ds = measure(nn.Identity(), x, delta=1.0, cut=3, seed=3, compute_dtype=torch.float64)
    assert ds.sizes["layer"] == 1 and ds.layer_kind.item() == "output"
    deno = pairwise_mean(x.flatten(1))
    assert ds.deno.item() == pytest.approx(deno, rel=1e-10)
    # the same deformations: deform with the seed draws item n of the same counter-based stream
    from diffeosens.diffeo import deform

    tx = deform(x, delta=1.0, cut=3, seed=3)
    num = float((tx - x).flatten(1).square().sum(1).mean())
    assert ds.D.item() == pytest.approx(num / deno, rel=1e-10)
    assert ds.G.item() == pytest.approx(ds.D.item(), rel=1e-12)
    assert ds.R.item() == pytest.approx(1.0, rel=1e-12)


def test_moment_identity_denominator_equals_pairwise_mean_per_layer():
    net = _small_cnn()
    x = _images(p=15)
    ds = measure(net, x, compute_dtype=torch.float64, batch_size=4)
    feats = extract_features(net, x)
    for name, deno in zip(ds.layer_name.values, ds.deno.values):
        assert deno == pytest.approx(pairwise_mean(feats[str(name)]), rel=1e-10)
    off = measure(net, x, compute_dtype=torch.float64, off_diagonal=True)
    np.testing.assert_allclose(off.deno.values, ds.deno.values * 15 / 14, rtol=1e-12)
    np.testing.assert_allclose(off.D.values, ds.D.values * 14 / 15, rtol=1e-9)


def test_estimator_core_against_brute_force_and_measure_perturbed():
    from diffeosens.sensitivity.estimators import DENO_EPS, guarded_ratio, mean_sq_change, pair_mean_sq_distance

    a, b = _images(p=9, c=2, n=5, seed=1), _images(p=9, c=2, n=5, seed=2)
    assert pair_mean_sq_distance(a) == pytest.approx(pairwise_mean(a.flatten(1)), rel=1e-12)  # no guard
    assert pair_mean_sq_distance(a[:1].expand(4, -1, -1, -1)) == 0.0
    assert mean_sq_change(b, a) == pytest.approx(float((b - a).flatten(1).square().sum(1).mean()), rel=1e-12)
    assert guarded_ratio(2.0, 0.0) == 2.0 / DENO_EPS
    # measure_perturbed's streamed estimators are these functions of the representations
    net = _small_cnn(c=2)
    ds = measure_perturbed(net, a, {"D": b}, compute_dtype=torch.float64, batch_size=4)
    fa, fb = extract_features(net, a), extract_features(net, b)
    for name, deno, num, D in zip(ds.layer_name.values, ds.deno.values, ds.num_D.values, ds.D.values):
        assert deno == pytest.approx(pair_mean_sq_distance(fa[str(name)]), rel=1e-10)
        assert num == pytest.approx(mean_sq_change(fb[str(name)], fa[str(name)]), rel=1e-12)
        assert D == pytest.approx(guarded_ratio(num, deno), rel=1e-10)


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_any_batch_size_gives_the_result_of_one_batch(batch_size):
    net = _small_cnn()
    x = _images(p=17)
    full = measure(net, x, compute_dtype=torch.float64, batch_size=17, n_draws=2, seed=1)
    part = measure(net, x, compute_dtype=torch.float64, batch_size=batch_size, n_draws=2, seed=1)
    for v in ("D", "G", "R", "num_D", "num_G", "deno", "D_se", "deno_se"):
        np.testing.assert_allclose(part[v].values, full[v].values, rtol=1e-10, err_msg=v)


def test_numerators_against_explicit_features_with_measure_perturbed():
    net = _small_cnn()
    x = _images(p=12)
    g = torch.Generator().manual_seed(0)
    y = deform(x, delta=1.0, generator=g)
    z = x + 0.3 * torch.randn(x.shape, generator=g, dtype=x.dtype)
    ds = measure_perturbed(net, x, {"D": y, "G": z}, compute_dtype=torch.float64, batch_size=5)
    fa, fb, fg = extract_features(net, x), extract_features(net, y), extract_features(net, z)
    for i, name in enumerate(ds.layer_name.values):
        name = str(name)
        numd = float((fb[name] - fa[name]).square().sum(1).mean())
        numg = float((fg[name] - fa[name]).square().sum(1).mean())
        assert float(ds.num_D[i]) == pytest.approx(numd, rel=1e-10)
        assert float(ds.num_G[i]) == pytest.approx(numg, rel=1e-10)
        assert float(ds.R[i]) == pytest.approx(numd / numg, rel=1e-10)


def test_gap_model_is_invariant_to_circular_shifts():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, padding_mode="circular"), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).double()
    x = _images(p=10)
    ds = measure_perturbed(net, x, {"shift": torch.roll(x, shifts=(2, 3), dims=(-2, -1))}, compute_dtype=torch.float64)
    d = dict(zip(ds.layer_name.values.tolist(), ds["shift"].values))
    assert d["0"] > 1e-2 and d["1"] > 1e-2  # the conv features move
    assert d["2"] < 1e-20  # global average pooling: D = 0 up to float64 rounding


def test_orthogonal_linear_layer_preserves_D_and_G():
    x = _images(p=16, c=2, n=6)
    d = 2 * 6 * 6
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    lin = nn.Linear(d, d, bias=False).double()
    lin.weight.data.copy_(q)
    net = nn.Sequential(nn.Flatten(), lin)
    a = measure(nn.Identity(), x, delta=0.3, seed=5, compute_dtype=torch.float64)
    b = measure(net, x, delta=0.3, seed=5, compute_dtype=torch.float64)
    for v in ("D", "G", "deno", "num_D", "num_G"):
        assert b[v].item() == pytest.approx(a[v].item(), rel=1e-10), v


def test_median_estimator_equals_brute_force():
    net = _small_cnn()
    x = _images(p=11)  # odd counts; at least 10 images for a standard error
    g = torch.Generator().manual_seed(2)
    y = deform(x, delta=1.0, generator=g)
    z = x + 0.2 * torch.randn(x.shape, generator=g, dtype=x.dtype)
    ds = measure_perturbed(net, x, {"D": y, "G": z}, estimator="median", batch_size=4, n_boot=5, compute_dtype=torch.float64)
    fa, fb, fg = extract_features(net, x), extract_features(net, y), extract_features(net, z)
    for i, name in enumerate(ds.layer_name.values):
        a = fa[str(name)].numpy()
        numd = np.median((fb[str(name)].numpy() - a) ** 2, axis=0).sum()
        numg = np.median((fg[str(name)].numpy() - a) ** 2, axis=0).sum()
        pairs = [((a[i_] - a[j_]) ** 2).sum() for i_ in range(11) for j_ in range(11)]
        deno = np.median(pairs)
        assert float(ds.num_D[i]) == pytest.approx(numd, rel=1e-10)
        assert float(ds.num_G[i]) == pytest.approx(numg, rel=1e-10)
        assert float(ds.deno[i]) == pytest.approx(deno, rel=1e-10)
        assert float(ds.D[i]) == pytest.approx(numd / (deno + 1e-10), rel=1e-10)
        assert np.isfinite(float(ds.D_se[i]))


def test_jackknife_standard_errors_match_closed_forms():
    x = _images(p=10)
    ds = measure(nn.Identity(), x, seed=0, compute_dtype=torch.float64, n_jackknife=10)
    from diffeosens.diffeo import deform

    tx = deform(x, delta=1.0, cut=3, seed=0)
    e = (tx - x).flatten(1).square().sum(1).numpy()
    # leave-one-out jackknife of a mean = sample std / sqrt(P)
    assert ds.num_D_se.item() == pytest.approx(e.std(ddof=1) / math.sqrt(10), rel=1e-10)
    a = x.flatten(1)
    loo = np.array([pairwise_mean(torch.cat([a[:i], a[i + 1 :]])) for i in range(10)])
    se = math.sqrt(9 / 10 * ((loo - loo.mean()) ** 2).sum())
    assert ds.deno_se.item() == pytest.approx(se, rel=1e-8)


# ------------------------------------------------------------------------------------------------
# Semantics
# ------------------------------------------------------------------------------------------------


def test_inplace_relu_never_corrupts_a_recorded_preactivation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=True))
    x = torch.randn(6, 3, 8, 8)
    feats = extract_features(net, x)
    conv = net[0](x).detach().flatten(1)
    assert torch.equal(feats["0"], conv) and float(feats["0"].min()) < 0
    assert float(feats["1"].min()) >= 0
    assert net[1].inplace is True  # the user's model is left untouched

    class InplaceGraph(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 2, 1)
            self.b = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            y = self.a(x)
            z = y
            z += self.b(x)  # in-place residual addition would overwrite y
            return torch.relu_(z)

    m = InplaceGraph()
    x = torch.randn(3, 2, 4, 4)
    f = extract_features(m, x, layers="all")
    # fx records `z += ...` as an out-of-place add; torch.relu_ is rewritten to torch.relu
    expected = (m.a(x) + m.b(x)).detach().flatten(1)
    assert torch.equal(f["a"], m.a(x).detach().flatten(1))
    assert torch.allclose(f["add"], expected) and float(f["add"].min()) < 0
    assert torch.equal(f["relu_"], torch.relu(expected))


def test_batch_statistics_bn_at_init_never_mixes_clean_and_perturbed():
    net = _small_cnn(bn=True)
    x = _images(p=12)
    y = deform(x, delta=1.0, generator=torch.Generator().manual_seed(0))
    ds = measure_perturbed(net, x, {"D": y}, init_bn="batch", compute_dtype=torch.float64)
    assert ds.attrs["batch_size"] == 12  # one full batch per input kind by default
    ref = _small_cnn(bn=True)
    ref.train()  # batch statistics, computed separately for the clean and the deformed batch
    from torchvision.models.feature_extraction import create_feature_extractor

    ext = create_feature_extractor(ref, return_nodes=[str(n) for n in ds.layer_name.values])
    with torch.no_grad():
        fa, fb = ext(x), ext(y)
    for i, name in enumerate(ds.layer_name.values):
        a, b = fa[str(name)].flatten(1), fb[str(name)].flatten(1)
        assert float(ds.num_D[i]) == pytest.approx(float((b - a).square().sum(1).mean()), rel=1e-9)
        assert float(ds.deno[i]) == pytest.approx(pairwise_mean(a), rel=1e-9)
    running = measure_perturbed(net, x, {"D": y}, init_bn="running", compute_dtype=torch.float64)
    assert not np.allclose(running.D.values, ds.D.values)


def test_eval_mode_no_autograd_and_clean_forward_shared_across_draws():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 3)).double()
    calls = []
    net[0].register_forward_hook(lambda m, i, o: calls.append((m.training, torch.is_grad_enabled(), o.requires_grad, i[0].shape[0])))
    x = _images(p=10)
    a = measure(net, x, n_draws=3, batch_size=10)
    b = measure(net, x, n_draws=3, batch_size=10)
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())  # dropout inactive: deterministic
    forwards = [c for c in calls if c[3] == 10]
    assert len(forwards) == 2 * (1 + 2 * 3)  # per call: 1 clean + 3 deformed + 3 noisy
    assert not any(training or grad or req for training, grad, req, _ in calls)
    assert net.training  # the caller's module is not switched to eval


def test_seed_reproducibility_and_float32_agreement():
    net = _small_cnn()
    x = _images(p=20)
    a = measure(net, x, seed=1, compute_dtype=torch.float64)
    b = measure(net, x, seed=1, compute_dtype=torch.float64)
    c = measure(net, x, seed=2, compute_dtype=torch.float64)
    f = measure(net, x.float(), seed=1, compute_dtype=torch.float32)
    np.testing.assert_array_equal(a.D.values, b.D.values)
    assert not np.allclose(a.D.values, c.D.values)
    np.testing.assert_allclose(f.D.values, a.D.values, rtol=1e-4)
    np.testing.assert_allclose(f.G.values, a.G.values, rtol=1e-4)


def test_schema_attrs_and_netcdf_roundtrip(tmp_path):
    ds = measure(_small_cnn(), _images(p=8), layers=["0", "2", "7"], delta=0.5, cut=4, n_draws=2, seed=9)
    assert ds.layer_name.values.tolist() == ["0", "2", "7"]
    assert set(ds.coords) >= {"layer", "layer_name", "layer_kind", "depth", "relative_depth"}
    for v in ("D", "G", "R", "num_D", "num_G", "deno"):
        assert v in ds and v + "_se" in ds and "long_name" in ds[v].attrs and "units" in ds[v].attrs
    for k in ("delta", "cut", "T", "interp", "P", "n_draws", "estimator", "seed", "model", "provenance", "params"):
        assert k in ds.attrs, k
    prov = json.loads(ds.attrs["provenance"])
    assert {"torch_version", "device", "wall_time_s", "git_commit"} <= set(prov)
    assert json.loads(ds.attrs["params"])["cut"] == 4
    path = tmp_path / "r.nc"
    ds.to_netcdf(path, engine="netcdf4")
    back = xr.open_dataset(path, engine="netcdf4")
    xr.testing.assert_allclose(back.load(), ds)
    out = measure(_small_cnn(), _images(p=8), layers="output")
    assert out.layer_kind.values.tolist() == ["output"]


def test_gaussian_interpolation_and_median_measure_run():
    ds = measure(_small_cnn(), _images(p=8), interp="gaussian", estimator="median", n_boot=3)
    assert np.isfinite(ds.D.values).all() and np.isfinite(ds.G.values).all()


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors():
    net = _small_cnn()
    x = _images(p=6)
    with pytest.raises(ValueError, match=r"unknown layer 'relu9'; valid names are: 0, 1, 2"):
        measure(net, x, layers=["relu9"])
    with pytest.raises(ValueError, match="at least 2 probe images"):
        measure(net, x[:1])
    with pytest.raises(ValueError, match="images have 1 channel\\(s\\) but the model's first convolution expects 3"):
        measure(net, x[:, :1])
    with pytest.raises(ValueError, match="model and images are on different devices"):
        measure(_small_cnn().to("meta"), x)
    with pytest.raises(ValueError, match="unknown estimator"):
        measure(net, x, estimator="mode")
    with pytest.raises(ValueError, match="unknown init_bn"):
        measure(net, x, init_bn="frozen")
    with pytest.raises(ValueError, match="n_draws must be an integer >= 1"):
        measure(net, x, n_draws=0)
    with pytest.raises(ValueError, match="delta must be"):
        measure(net, x, delta=-1.0)
    with pytest.raises(ValueError, match=r"perturbed\['D'\] has shape"):
        measure_perturbed(net, x, {"D": x[:, :, :4]})
    with pytest.raises(ValueError, match="cannot process images"):
        measure(nn.Sequential(nn.Flatten(), nn.Linear(5, 2)).double(), x)


@pytest.mark.parametrize("kind", ["lower", "average"])
def test_median_of_an_even_count_lower_or_average(kind):
    """P = 10 (even) and 100 pairs: "lower" is torch.median's lower middle value (the reference),
    "average" numpy's textbook median; checked against a brute-force sort."""
    net = _small_cnn()
    x = _images(p=10)
    g = torch.Generator().manual_seed(3)
    y = deform(x, delta=1.0, generator=g)
    z = x + 0.2 * torch.randn(x.shape, generator=g, dtype=x.dtype)
    ds = measure_perturbed(net, x, {"D": y, "G": z}, estimator="median", median=kind, n_boot=3, compute_dtype=torch.float64)
    assert ds.attrs["median"] == kind
    fa, fb = extract_features(net, x), extract_features(net, y)

    def med(v, axis=None):
        s = np.sort(np.asarray(v), axis=axis)
        n = s.shape[0] if axis is not None else s.size
        s = s if axis is not None else s.ravel()
        lo, hi = s[(n - 1) // 2], s[n // 2]
        return lo if kind == "lower" else (lo + hi) / 2

    for i, name in enumerate(ds.layer_name.values):
        a = fa[str(name)].numpy()
        numd = med((fb[str(name)].numpy() - a) ** 2, axis=0).sum()
        deno = med([((a[i_] - a[j_]) ** 2).sum() for i_ in range(10) for j_ in range(10)])
        assert float(ds.num_D[i]) == pytest.approx(numd, rel=1e-10)
        assert float(ds.deno[i]) == pytest.approx(deno, rel=1e-10)
    with pytest.raises(ValueError, match="median"):
        measure_perturbed(net, x, {"D": y, "G": z}, estimator="median", median="middle")


def test_seed_must_be_an_integer():
    x = _images(p=4)
    with pytest.raises(TypeError, match="seed must be an integer, got 1.5"):
        measure(_small_cnn(), x, seed=1.5)
    with pytest.raises(TypeError, match="seed must be an integer"):
        measure_perturbed(_small_cnn(), x, {"D": x}, seed=2.0)


def test_constant_images_warn_about_degenerate_denominators():
    from diffeosens.sensitivity import DegenerateWarning

    x = torch.full((6, 3, 16, 16), 0.5)
    with pytest.warns(DegenerateWarning) as rec:
        ds = measure(_small_cnn(), x, layers="output")
    messages = [str(w.message) for w in rec]
    assert any("do not vary" in m for m in messages) and any("R undefined" in m for m in messages), messages
    assert float(ds.deno.max()) <= 1e-10
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateWarning)
        measure(_small_cnn(), _images(p=6), layers="output")  # ordinary probes: no warning


@pytest.mark.parametrize("estimator", ["mean", "median"])
def test_several_deltas_share_the_draws_and_equal_separate_calls(estimator):
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    x = _images(p=12)
    kw = dict(seed=4, compute_dtype=torch.float64, batch_size=5, estimator=estimator, n_boot=4)
    both = measure(net, x, delta=[0.5, 1.25], **kw)
    assert both.D.dims == ("delta", "layer") and both.deno.dims == ("layer",)
    assert both.delta.values.tolist() == [0.5, 1.25] and both.T.dims == ("delta",)
    for d in (0.5, 1.25):
        one = measure(net, x, delta=d, **kw)
        assert one.sizes["delta"] == 1 and one.delta.values.tolist() == [d]
        for v in ("D", "G", "R", "num_D", "num_G", "D_se", "G_se", "R_se"):
            np.testing.assert_allclose(both[v].sel(delta=d).values, one[v].sel(delta=d).values, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(both.deno.values, one.deno.values)
    if estimator == "mean":  # a larger move changes the input more (the median of a few images need not grow)
        assert float(both.num_D.isel(layer=0, delta=1)) > float(both.num_D.isel(layer=0, delta=0))
    with pytest.warns(diffeo.OverhangWarning) as record:  # a fold-over warning names the caller's line
        measure(net, x, delta=3.0, **kw)
    assert record[0].filename == __file__


@pytest.mark.parametrize("bad", [[], [1.0, 1.0], [-1.0], "1", [float("nan")], [True]])
def test_delta_must_be_distinct_numbers(bad):
    with pytest.raises(ValueError, match="delta"):
        measure(nn.Identity(), _images(p=4), delta=bad)
