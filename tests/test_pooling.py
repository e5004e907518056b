"""Tests of diffeosens.pooling: channel shuffling, mean-field and Gaussian weights, the C6 onset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn
from torch.nn import functional as F

from diffeosens import models
from diffeosens.models import VGG
from diffeosens.pooling import (
    MEAN_FIELD_MODELS,
    channel_pooling_onset,
    gaussian_weights,
    mean_field_weights,
    shuffle_channels,
)

SMALL = {"VGG11bn": 0.125, "ResNet18": 0.125, "EfficientNetB0": 0.25, "AlexNet": 0.125, "LeNet": 1.0}


def _build(name, seed=0):
    torch.manual_seed(seed)
    return models.build(name, width_factor=SMALL[name])


def _sorted_slices(w):
    """Per output channel, the F×F slices sorted by a random projection: a multiset fingerprint."""
    flat = w.detach().flatten(2)  # (Cout, Cin, F*F)
    key = flat @ torch.linspace(1.0, 2.0, flat.shape[-1], dtype=flat.dtype)
    order = key.argsort(dim=1)
    return torch.gather(flat, 1, order[..., None].expand_as(flat))


# ------------------------------------------------------------------------------------------------
# shuffle_channels: structure
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SMALL))
def test_shuffle_permutes_input_channels_only(name):
    net = _build(name)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    shuf, perms = shuffle_channels(net, seed=3, return_permutations=True)
    four_d = {n for n, p in net.named_parameters() if p.ndim == 4}
    assert set(perms) == four_d  # scope: every 4-D parameter, first conv and shortcuts included
    new_state, old_params = shuf.state_dict(), dict(net.named_parameters())
    for key, old in before.items():
        new = new_state[key]
        assert new.shape == old.shape
        if key not in perms:  # biases, BN parameters and statistics, linear layers
            assert torch.equal(new, old), key
            continue
        perm = perms[key].input
        assert perms[key].output is None
        assert sorted(perm.tolist()) == list(range(old.shape[1]))
        assert torch.equal(new, old[:, perm]), key
        # each output channel keeps the multiset of its F×F slices (spatial structure preserved)
        assert torch.equal(_sorted_slices(new), _sorted_slices(old)), key
    # the original is untouched and shares no storage with the copy
    for key, old in net.state_dict().items():
        assert torch.equal(old, before[key])
    assert all(p.data_ptr() != old_params[n].data_ptr() for n, p in shuf.named_parameters())
    x = torch.randn(2, 3, 32, 32)
    assert shuf(x).shape == net(x).shape == (2, 10)


def test_first_conv_rgb_axis_is_permuted_and_acts_as_an_input_permutation():
    net = _build("VGG11bn").double()
    seeds = [s for s in range(10) if not torch.equal(
        shuffle_channels(net, seed=s, return_permutations=True)[1]["features.0.weight"].input, torch.arange(3))]
    assert seeds, "some seed must permute the RGB axis non-trivially"
    shuf, perms = shuffle_channels(net, seed=seeds[0], return_permutations=True)
    perm = perms["features.0.weight"].input
    assert perm.shape == (3,)
    w_old, w_new = net.features[0].weight, shuf.features[0].weight
    assert not torch.equal(w_old, w_new)
    # conv with permuted input axis == original conv applied to channel-permuted images
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    got = shuf.features[0](x)
    want = net.features[0](x[:, torch.argsort(perm)])
    assert torch.allclose(got, want, atol=1e-12)


def test_depthwise_and_shortcut_convs():
    eff = _build("EfficientNetB0")
    shuf, perms = shuffle_channels(eff, seed=0, return_permutations=True)
    depthwise = [n for n, m in eff.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise
    for n in depthwise:
        assert perms[f"{n}.weight"].input.tolist() == [0]
        assert torch.equal(shuf.get_submodule(n).weight, eff.get_submodule(n).weight)
    res = _build("ResNet18")
    _, perms = shuffle_channels(res, seed=0, return_permutations=True)
    shortcuts = [k for k in perms if "shortcut" in k]
    assert shortcuts and all(res.get_parameter(k).shape[-1] == 1 for k in shortcuts)


def test_conv1d_weights_are_shuffled():
    net = nn.Sequential(nn.Conv1d(4, 6, 3), nn.ReLU(), nn.Conv1d(6, 2, 3))
    shuf, perms = shuffle_channels(net, seed=0, return_permutations=True)
    assert set(perms) == {"0.weight", "2.weight"}
    assert torch.equal(shuf[2].weight, net[2].weight[:, perms["2.weight"].input])


def test_seeds():
    net = _build("ResNet18")
    _, p1 = shuffle_channels(net, seed=7, return_permutations=True)
    _, p2 = shuffle_channels(net, seed=7, return_permutations=True)
    _, p3 = shuffle_channels(net, seed=8, return_permutations=True)
    assert all(torch.equal(p1[k].input, p2[k].input) for k in p1)
    assert any(not torch.equal(p1[k].input, p3[k].input) for k in p1)
    # one permutation per layer: layers of equal width get different permutations
    wide = [k for k in p1 if len(p1[k].input) >= 8]
    assert len({tuple(p1[k].input.tolist()) for k in wide}) == len(wide)


def test_scope_both_permutes_outputs_too():
    net = _build("VGG11bn")
    shuf, perms = shuffle_channels(net, seed=1, scope="both", return_permutations=True)
    for key, perm in perms.items():
        old, new = net.get_parameter(key), shuf.get_parameter(key)
        assert perm.output is not None and sorted(perm.output.tolist()) == list(range(old.shape[0]))
        assert torch.equal(new, old[perm.output][:, perm.input])
    assert torch.equal(shuf.features[0].bias, net.features[0].bias)


def test_shuffle_errors():
    net = _build("LeNet")
    with pytest.raises(ValueError, match="scope"):
        shuffle_channels(net, scope="output")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        shuffle_channels(torch.zeros(3))
    with pytest.raises(TypeError, match="seed"):
        shuffle_channels(net, seed=1.5)


# ------------------------------------------------------------------------------------------------
# shuffle_channels: a function-level property
# ------------------------------------------------------------------------------------------------


def _exchangeable_vgg():
    """VGG11bn whose filters are homogeneous, w[c, c'] = s[c'] · 1, with channel-independent biases
    and BN: every layer's output channels are identical, so each layer sees exchangeable inputs."""
    torch.manual_seed(0)
    net = models.build("VGG11bn", width_factor=0.125).double()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                # positive, varying scales keep the signal alive through the ReLUs in eval mode
                s = (0.5 + torch.rand(m.in_channels, dtype=torch.float64)) / (9 * m.in_channels)
                m.weight.copy_(s[None, :, None, None].expand_as(m.weight))
                m.bias.fill_(0.05 * float(torch.randn(())))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0 + 0.3 * float(torch.rand(())))
                m.bias.fill_(0.1 * float(torch.rand(())))
                m.running_mean.fill_(0.01 * float(torch.randn(())))
                m.running_var.fill_(0.05 + 0.05 * float(torch.rand(())))
    return net


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_shuffling_homogeneous_exchangeable_net_keeps_the_function(mode):
    net = _exchangeable_vgg()
    shuf, perms = shuffle_channels(net, seed=0, return_permutations=True)
    for m in (net, shuf):
        m.train(mode == "train")
    changed = [k for k in perms if not torch.equal(net.get_parameter(k), shuf.get_parameter(k))]
    assert len(changed) == len(perms)  # every conv weight tensor really moved
    grey = torch.randn(6, 1, 32, 32, dtype=torch.float64).expand(6, 3, 32, 32)  # exchangeable RGB
    with torch.no_grad():
        out, out_shuf = net(grey), shuf(grey)
    assert float(out.std(0).max()) > 1e-3  # a non-trivial function of the input
    assert torch.allclose(out_shuf, out, rtol=1e-10, atol=1e-12)
    # control: with non-exchangeable RGB inputs the shuffled first conv changes the function
    colour = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert not torch.allclose(shuf(colour), net(colour), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# mean_field_weights
# ------------------------------------------------------------------------------------------------


def _two_layer_vgg():
    torch.manual_seed(1)
    net = VGG((2, "M", 3, "M"), batch_norm=True, num_classes=4).double().eval()
    with torch.no_grad():
        for bn in (net.features[1], net.features[5]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    return net


@pytest.mark.parametrize("classifier", ["per_class", "sum"])
def test_mean_field_two_layer_by_hand(classifier):
    net = _two_layer_vgg()
    conv1, bn1, conv2, bn2, lin = net.features[0], net.features[1], net.features[4], net.features[5], net.classifier
    mf = mean_field_weights(net, classifier=classifier)
    # summation, written out slice by slice
    w1 = sum(conv1.weight[c] for c in range(2))[None]  # first layer: over output channels only
    w2 = sum(conv2.weight[c, cp] for c in range(3) for cp in range(2))[None, None]
    assert mf.features[0].weight.shape == (1, 3, 3, 3) and mf.features[4].weight.shape == (1, 1, 3, 3)
    assert torch.allclose(mf.features[0].weight, w1) and torch.allclose(mf.features[4].weight, w2)
    assert mf.features[0].bias.item() == pytest.approx((conv1.bias[0] + conv1.bias[1]).item())
    assert mf.features[1].running_mean.item() == pytest.approx(bn1.running_mean.mean().item())
    assert mf.features[5].running_var.item() == pytest.approx(bn2.running_var.mean().item())
    assert mf.features[5].weight.item() == pytest.approx(bn2.weight.sum().item())
    # the one-channel forward, by hand; 4×4 inputs reach 1×1 after the two pools
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64)

    def bn(h, b):
        m, v = b.running_mean.mean(), b.running_var.mean()
        return (h - m) / torch.sqrt(v + b.eps) * b.weight.sum() + b.bias.sum()

    h = F.max_pool2d(F.relu(bn(F.conv2d(x, w1, conv1.bias.sum().reshape(1), padding=1), bn1)), 2)
    h = F.max_pool2d(F.relu(bn(F.conv2d(h, w2, conv2.bias.sum().reshape(1), padding=1), bn2)), 2)
    h = h.flatten(1)  # (5, 1)
    if classifier == "per_class":
        want = h * lin.weight.sum(1)[None] + lin.bias[None]
    else:
        want = h * lin.weight.sum() + lin.bias.sum()
    with torch.no_grad():
        got = mf(x)
    assert got.shape == ((5, 4) if classifier == "per_class" else (5, 1))
    assert torch.allclose(got, want, atol=1e-12)
    assert not mf.training  # the mode is kept
    assert net.features[0].weight.shape == (2, 3, 3, 3)  # the original is untouched


@pytest.mark.parametrize("name", ["VGG11", "VGG11bn"])
def test_mean_field_vgg11_runs(name):
    net = models.build(name)
    mf = mean_field_weights(net)
    convs = [m for m in mf.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 and all(c.out_channels == 1 for c in convs)
    assert convs[0].in_channels == 3 and all(c.in_channels == 1 for c in convs[1:])
    assert sum(p.numel() for p in mf.parameters()) < 200
    with torch.no_grad():
        out = mf(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_mean_field_rejects_other_architectures():
    with pytest.raises(ValueError, match="VGG11bn") as err:
        mean_field_weights(_build("ResNet18"))
    assert "ResNet" in str(err.value) and all(n in str(err.value) for n in MEAN_FIELD_MODELS)
    with pytest.raises(ValueError, match="classifier"):
        mean_field_weights(models.build("VGG11"), classifier="mean")


# ------------------------------------------------------------------------------------------------
# gaussian_weights
# ------------------------------------------------------------------------------------------------


def test_gaussian_weights_match_per_position_statistics():
    torch.manual_seed(0)
    conv = nn.Conv2d(256, 256, 3).double()
    mu = torch.arange(9, dtype=torch.float64).reshape(3, 3) * 0.05 - 0.2
    sd = 0.02 * (1 + torch.arange(9, dtype=torch.float64).reshape(3, 3))
    lin = nn.Linear(300, 200).double()
    with torch.no_grad():
        conv.weight.copy_(mu + sd * torch.randn(256, 256, 3, 3, dtype=torch.float64))
        lin.weight.normal_(0.3, 0.7)
    net = nn.Sequential(conv, nn.BatchNorm2d(256).double(), nn.Flatten(), lin)
    new = gaussian_weights(net, seed=5)
    w_old, w_new = conv.weight.detach(), new[0].weight.detach()
    n = 256 * 256
    m_old, m_new = w_old.mean((0, 1)), w_new.mean((0, 1))
    s_old, s_new = w_old.std((0, 1)), w_new.std((0, 1))
    # tolerances: 5 standard errors of a sample mean (sd/sqrt(n)) and of a sample std (~1/sqrt(2n))
    assert float(((m_new - m_old).abs() / (s_old / math.sqrt(n))).max()) < 5
    assert float(((s_new / s_old) - 1).abs().max()) < 5 / math.sqrt(2 * n)
    # position-dependent: the per-position means really differ between positions
    assert float(m_new.max() - m_new.min()) > 0.3
    # a fresh draw, not the original values: correlation with the original noise ~ 0
    z_old, z_new = (w_old - mu) / sd, (w_new - m_new) / s_new
    assert abs(float((z_old * z_new).mean())) < 5 / math.sqrt(9 * n)
    # other tensors: one mean and std over all entries; constants stay constant
    lw = new[3].weight.detach()
    assert float(lw.mean()) == pytest.approx(float(lin.weight.detach().mean()), abs=5 * 0.7 / math.sqrt(lw.numel()))
    assert float(lw.std()) == pytest.approx(float(lin.weight.detach().std()), rel=5 / math.sqrt(2 * lw.numel()))
    assert torch.equal(new[1].weight, torch.ones(256, dtype=torch.float64))
    assert torch.equal(new[1].bias, torch.zeros(256, dtype=torch.float64))
    # reproducible, and the input is untouched
    assert torch.equal(gaussian_weights(net, seed=5)[0].weight, new[0].weight)
    assert not torch.equal(gaussian_weights(net, seed=6)[0].weight, new[0].weight)
    assert torch.equal(net[0].weight, w_old)


# ------------------------------------------------------------------------------------------------
# channel_pooling_onset
# ------------------------------------------------------------------------------------------------


def _profile(values, rel=None):
    values = np.asarray(values, dtype=float)
    L = len(values)
    rel = np.arange(L) / (L - 1) if rel is None else rel
    return xr.DataArray(values, dims="layer", coords={"layer": np.arange(L), "relative_depth": ("layer", rel)})


def test_onset_at_known_depth():
    D_orig = np.exp(-0.5 * np.arange(10))
    factor = np.array([1.0, 1.1, 2.5, 0.9, 1.2, 3.0, 5.0, 8.0, 12.0, 20.0])  # transient blip at layer 2
    out = channel_pooling_onset(_profile(D_orig), _profile(D_orig * factor))
    assert out["onset_layer"] == 5
    assert out["onset_relative_depth"] == pytest.approx(5 / 9)
    np.testing.assert_allclose(out["ratio"].values, factor)
    assert out["mean_log_ratio_first_half"] == pytest.approx(np.log(factor[:5]).mean())
    assert out["mean_log_ratio_second_half"] == pytest.approx(np.log(factor[5:]).mean())
    # a higher threshold moves the onset deeper
    assert channel_pooling_onset(_profile(D_orig), _profile(D_orig * factor), threshold=6.0)["onset_layer"] == 7


def test_no_onset():
    D = np.linspace(1.0, 0.1, 8)
    out = channel_pooling_onset(_profile(D), _profile(D * np.array([1, 1, 1, 3, 3, 3, 3, 1.5])))
    assert math.isnan(out["onset_relative_depth"]) and out["onset_layer"] is None
    flat = channel_pooling_onset(_profile(D), _profile(D))
    assert math.isnan(flat["onset_relative_depth"])
    assert flat["mean_log_ratio_first_half"] == pytest.approx(0.0) == flat["mean_log_ratio_second_half"]


def test_onset_errors():
    D = _profile(np.ones(4))
    with pytest.raises(ValueError, match="relative_depth"):
        channel_pooling_onset(D.drop_vars("relative_depth"), D)
    with pytest.raises(ValueError, match="same 'layer'"):
        channel_pooling_onset(D, _profile(np.ones(5)))
    with pytest.raises(ValueError, match="1-D"):
        channel_pooling_onset(D.expand_dims(seed=2), D)
    with pytest.raises(ValueError, match="threshold"):
        channel_pooling_onset(D, D, threshold=0)
