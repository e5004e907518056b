"""Tests for diffeosens.models (methods §5): counts, shapes, activations, in-place ops, torch.fx.

Every expected parameter count and activation count is derived here, independently of the
library, from layer lists copied from the methods tables.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import symbolic_trace
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from diffeosens import models

# --------------------------------------------------------------------------- layer lists (spec)

NAMES_2D = [
    "DenseNetL2", "DenseNetL4", "DenseNetL6", "LeNet", "AlexNet",
    "VGG11", "VGG13", "VGG16", "VGG19", "VGG11bn", "VGG13bn", "VGG16bn", "VGG19bn",
    "ResNet18", "ResNet34", "ResNet50", "EfficientNetB0", "ConvGAP",
]  # fmt: skip
ALL_NAMES = NAMES_2D + ["ConvGAP1d"]

VGG_CFG = {  # methods §5.2
    "VGG11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "VGG13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "VGG16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "VGG19": [64, 64, "M", 128, 128, "M"] + [256] * 4 + ["M"] + [512] * 4 + ["M"] + [512] * 4 + ["M"],
}
RESNET_BLOCKS = {"ResNet18": ("basic", [2, 2, 2, 2]), "ResNet34": ("basic", [3, 4, 6, 3]),
                 "ResNet50": ("bottleneck", [3, 4, 6, 3])}  # fmt: skip
EFFNET_STAGES = [  # (expansion, out, blocks, kernel, stride), methods §5.6
    (1, 16, 1, 3, 1), (6, 24, 2, 3, 2), (6, 40, 2, 5, 2), (6, 80, 3, 3, 2),
    (6, 112, 3, 5, 1), (6, 192, 4, 5, 2), (6, 320, 1, 3, 1),
]  # fmt: skip


def w(c: int, f: float) -> int:
    return max(1, round(c * f))


def conv(cin: int, cout: int, k: int, *, bias: bool = True, groups: int = 1, dim: int = 2) -> int:
    return cout * (cin // groups) * k**dim + (cout if bias else 0)


def lin(i: int, o: int, *, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def count_vgg(name: str, cin: int, k: int, f: float) -> int:
    base, has_bn = name.removesuffix("bn"), name.endswith("bn")
    total, c = 0, cin
    for item in VGG_CFG[base]:
        if item != "M":
            total += conv(c, w(item, f), 3) + (bn(w(item, f)) if has_bn else 0)
            c = w(item, f)
    return total + lin(c, k)


def count_resnet(name: str, cin: int, k: int, f: float) -> int:
    kind, blocks = RESNET_BLOCKS[name]
    total = conv(cin, w(64, f), 3, bias=False) + bn(w(64, f))
    c = w(64, f)
    for planes, n, stride in zip([64, 128, 256, 512], blocks, [1, 2, 2, 2]):
        p = w(planes, f)
        for s in [stride] + [1] * (n - 1):
            if kind == "basic":
                out = p
                total += conv(c, p, 3, bias=False) + bn(p) + conv(p, p, 3, bias=False) + bn(p)
            else:
                out = 4 * p
                total += conv(c, p, 1, bias=False) + bn(p) + conv(p, p, 3, bias=False) + bn(p)
                total += conv(p, out, 1, bias=False) + bn(out)
            if s != 1 or c != out:
                total += conv(c, out, 1, bias=False) + bn(out)
            c = out
    return total + lin(c, k)


def count_alexnet(cin: int, k: int, f: float) -> int:
    c = [cin] + [w(x, f) for x in (64, 192, 384, 256, 256)]
    h = w(4096, f)
    return sum(conv(a, b, 3) for a, b in zip(c[:-1], c[1:])) + lin(c[-1] * 4, h) + lin(h, h) + lin(h, k)


def count_lenet(cin: int, k: int, f: float, side: int) -> int:
    c1, c2, h1, h2 = (w(x, f) for x in (6, 16, 120, 84))
    return conv(cin, c1, 5) + conv(c1, c2, 5) + lin(c2 * side * side, h1) + lin(h1, h2) + lin(h2, k)


def count_effnet(cin: int, k: int, f: float) -> int:
    total = conv(cin, w(32, f), 3, bias=False) + bn(w(32, f))
    c = w(32, f)
    for e, out, n, ks, _ in EFFNET_STAGES:
        out = w(out, f)
        for _ in range(n):
            mid, se = e * c, max(1, math.floor(0.25 * c))
            total += conv(c, mid, 1, bias=False) + bn(mid)  # built even when e = 1 (unused), as the reference
            total += conv(mid, mid, ks, bias=False, groups=mid) + bn(mid)
            total += conv(mid, se, 1) + conv(se, mid, 1)
            total += conv(mid, out, 1, bias=False) + bn(out)
            c = out
    return total + lin(c, k)


def count_dense(L: int, d: int, k: int, f: float) -> int:
    h = w(64, f)
    sizes = [d] + [h] * (L - 1)
    return sum(lin(a, b) for a, b in zip(sizes[:-1], sizes[1:])) + lin(sizes[-1], k, bias=False)


def count_convgap(cin: int, k: int, f: float, *, depth: int = 3, width: int = 64, fs: int = 5) -> int:
    h = w(width, f)
    return conv(cin, h, fs) + (depth - 1) * conv(h, h, fs) + lin(h, k)


def count_convgap1d(cin: int, k: int, f: float, *, depth: int = 7, width: int = 1000, fs: int = 2) -> int:
    h = w(width, f)
    return conv(cin, h, fs, dim=1) + (depth - 1) * conv(h, h, fs, dim=1) + lin(h, k)


def expected_count(name: str, cin: int, k: int, f: float) -> int:
    side = 28 if cin == 1 else 32
    if name.startswith("VGG"):
        return count_vgg(name, cin, k, f)
    if name.startswith("ResNet"):
        return count_resnet(name, cin, k, f)
    if name.startswith("DenseNetL"):
        return count_dense(int(name[-1]), cin * side * side, k, f)
    return {
        "AlexNet": lambda: count_alexnet(cin, k, f),
        "LeNet": lambda: count_lenet(cin, k, f, 5 if side == 32 else 4),
        "EfficientNetB0": lambda: count_effnet(cin, k, f),
        "ConvGAP": lambda: count_convgap(cin, k, f),
        "ConvGAP1d": lambda: count_convgap1d(cin, k, f),
    }[name]()


def expected_activations(name: str) -> int:
    """Number of nonlinearities of each net, from the layer lists."""
    if name.startswith("VGG"):
        return sum(1 for x in VGG_CFG[name.removesuffix("bn")] if x != "M")
    if name.startswith("ResNet"):
        kind, blocks = RESNET_BLOCKS[name]
        return 1 + sum(blocks) * (2 if kind == "basic" else 3)
    if name.startswith("DenseNetL"):
        return int(name[-1]) - 1
    if name == "EfficientNetB0":  # stem + per block: [expansion] + depthwise + SE inner
        return 1 + sum(n * ((e != 1) + 2) for e, _, n, _, _ in EFFNET_STAGES)
    return {"AlexNet": 7, "LeNet": 4, "ConvGAP": 3, "ConvGAP1d": 7}[name]


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def small(name: str, **kw) -> nn.Module:
    """A reduced-width instance (same structure) for the structural tests."""
    extra = {"width": 16} if name == "ConvGAP1d" else {}
    return models.build(name, width_factor=0.25, **extra, **kw)


def example_input(name: str, in_channels: int = 3, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if name == "ConvGAP1d":
        return torch.randn(batch, in_channels, 128, generator=g)
    side = 28 if in_channels == 1 else 32
    return torch.randn(batch, in_channels, side, side, generator=g)


ACT_TYPES = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU, "softplus": nn.Softplus,
             "linear": nn.Identity, "abs": models.Abs}  # fmt: skip

# --------------------------------------------------------------------------- registry


def test_available_lists_the_paper_zoo():
    assert sorted(models.available()) == sorted(ALL_NAMES)
    assert models.available("VGG1[13]") == ["VGG11", "VGG13"]
    assert set(models.ACTIVATIONS) == set(ACT_TYPES)


def test_lookup_is_case_insensitive():
    assert isinstance(models.build("vgg11bn", width_factor=0.125), models.VGG)


# --------------------------------------------------------------------------- parameter counts


def test_count_anchors():
    with torch.device("meta"):
        assert n_params(models.build("VGG11")) == 9_225_610
        assert n_params(models.build("ResNet18")) == 11_173_962
        assert n_params(models.build("VGG11", width_factor=0.5)) == 2_308_810
        assert n_params(models.build("ResNet18", width_factor=0.5)) == 2_797_610
        # the authors' CIFAR EfficientNetB0 (kuangliu style) builds an unused expansion conv + BN
        # in its first block (e = 1): 3,598,598 + 32*32 + 2*32 = 3,599,686 (issue 13)
        assert n_params(models.build("EfficientNetB0")) == 3_599_686


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize(("in_channels", "num_classes", "width_factor"), [(3, 10, 1.0), (1, 1, 0.5)])
def test_parameter_count(name, in_channels, num_classes, width_factor):
    with torch.device("meta"):
        net = models.build(name, in_channels=in_channels, num_classes=num_classes, width_factor=width_factor)
    assert n_params(net) == expected_count(name, in_channels, num_classes, width_factor)


def test_count_options():
    with torch.device("meta"):
        assert n_params(models.build("VGG11bn")) == count_vgg("VGG11bn", 3, 10, 1.0)
        assert n_params(models.build("DenseNetL4", width=128)) == count_dense(4, 3072, 10, 2.0)
        assert n_params(models.build("LeNet", in_channels=3, input_size=28)) == count_lenet(3, 10, 1.0, 4)
        gap = models.build("ConvGAP", depth=4, width=8, filter_size=3, batch_norm=True, last_bias=False)
        assert n_params(gap) == count_convgap(3, 10, 1.0, depth=4, width=8, fs=3) - 10 + 4 * bn(8)
        gap1 = models.build("ConvGAP1d", depth=3, width=10, filter_size=3, stride=[1, 2, 2])
        assert n_params(gap1) == count_convgap1d(1, 10, 1.0, depth=3, width=10, fs=3)


# --------------------------------------------------------------------------- forward shapes


@pytest.mark.parametrize("name", NAMES_2D)
def test_forward_shapes_2d(name):
    net = models.build(name, width_factor=0.5).eval()  # full-width structure: test_parameter_count
    with torch.no_grad():
        assert net(example_input(name, 3)).shape == (2, 10)
    net = small(name, in_channels=1, num_classes=1).eval()
    with torch.no_grad():
        assert net(example_input(name, 1)).shape == (2, 1)


def test_forward_shape_1d():
    with torch.no_grad():
        assert models.build("ConvGAP1d", width=100).eval()(example_input("ConvGAP1d", 1)).shape == (2, 10)
        assert small("ConvGAP1d", num_classes=1)(torch.randn(5, 1, 128)).shape == (5, 1)


def test_one_channel_padding_and_lenet_flatten():
    assert isinstance(small("VGG11", in_channels=1).pad, nn.ZeroPad2d)
    assert isinstance(small("AlexNet", in_channels=1).pad, nn.ZeroPad2d)
    assert small("VGG11").pad is None
    assert models.build("LeNet", in_channels=1).classifier[0].in_features == 256
    assert models.build("LeNet").classifier[0].in_features == 400


@pytest.mark.parametrize("side", [32, 28])
def test_resnet_last_map_is_4x4(side):
    net, shapes = small("ResNet18", in_channels=3), []
    net.layer4.register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    net(torch.randn(2, 3, side, side))
    assert shapes[0][-2:] == (4, 4)  # so the global pool equals the paper's avg_pool2d(4)


# --------------------------------------------------------------------------- activations


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("activation", sorted(ACT_TYPES))
def test_activation_reaches_every_nonlinearity(name, activation):
    net = small(name, activation=activation).eval()
    act_type = ACT_TYPES[activation]
    acts = [m for m in net.modules() if type(m) is act_type]
    assert len(acts) == expected_activations(name)
    calls = []
    for m in acts:
        m.register_forward_hook(lambda mod, i, o: calls.append(mod))
    with torch.no_grad():
        net(example_input(name, 1 if name == "ConvGAP1d" else 3))
    assert len(calls) == len(acts) and len({id(m) for m in calls}) == len(acts)  # each exactly once
    others = set(ACT_TYPES.values()) - {act_type}
    assert not [m for m in net.modules() if type(m) in others]
    if activation != "relu":
        graph = symbolic_trace(net).graph
        relu_targets = {F.relu, torch.relu, torch.relu_, F.relu_, "relu", "relu_"}
        assert not [n for n in graph.nodes if n.op in ("call_function", "call_method") and n.target in relu_targets]
    sigmoids = sum(type(m) is nn.Sigmoid for m in net.modules())
    assert sigmoids == (16 if name == "EfficientNetB0" else 0)  # SE gates are never swapped


def test_family_default_activation():
    assert sum(type(m) is nn.SiLU for m in small("EfficientNetB0").modules()) == 48
    assert sum(type(m) is nn.ReLU for m in small("EfficientNetB0", activation="relu").modules()) == 48
    assert sum(type(m) is nn.ReLU for m in small("VGG11").modules()) == 8


def test_make_activation_returns_fresh_modules():
    assert models.make_activation("tanh") is not models.make_activation("tanh")
    assert torch.equal(models.make_activation("abs")(torch.tensor([-1.5, 2.0])), torch.tensor([1.5, 2.0]))


# --------------------------------------------------------------------------- in-place ops


@pytest.mark.parametrize("name", ALL_NAMES)
def test_no_inplace_ops(name):
    net = small(name).eval()
    assert not [n for n, m in net.named_modules() if getattr(m, "inplace", False)]
    captured = []

    def keep(mod, inp, out):
        captured.append((out, out.detach().clone()))

    for m in net.modules():
        if not list(m.children()):
            m.register_forward_hook(keep)
    with torch.no_grad():
        net(example_input(name, 1 if name == "ConvGAP1d" else 3))
    assert captured
    assert all(torch.equal(ref, copy) for ref, copy in captured)  # no output was overwritten later


# --------------------------------------------------------------------------- torch.fx


@pytest.mark.parametrize("name", ALL_NAMES)
def test_fx_feature_extraction(name):
    net = small(name).eval()
    train_nodes, eval_nodes = get_graph_node_names(net)
    assert train_nodes and eval_nodes and len(set(eval_nodes)) == len(eval_nodes)
    extractor = create_feature_extractor(net, return_nodes=eval_nodes[1:])
    x = example_input(name, 1 if name == "ConvGAP1d" else 3, batch=3)
    with torch.no_grad():
        feats = extractor(x)
        out = net(x)
    assert torch.equal(feats[eval_nodes[-1]], out)
    assert all(t.shape[0] == 3 for t in feats.values())  # every node is batch-shaped (no parameter nodes)


def test_stable_node_names():
    _, nodes = get_graph_node_names(small("VGG11"))
    relus = [n for n in nodes if n.startswith("features.") and int(n.split(".")[1]) in (1, 4, 7, 9, 12, 14, 17, 19)]
    assert len(relus) == 8 and nodes[-1] == "classifier"  # methods §4.7
    assert "features.21" in get_graph_node_names(small("VGG11", avgpool_identity=True))[1]
    _, nodes = get_graph_node_names(small("ConvGAP1d"))
    assert [f"conv.{l}.mul" in nodes for l in range(7)] == [True] * 7  # methods §4.7, 1D nets
    _, nodes = get_graph_node_names(small("AlexNet"))
    assert "classifier.0" in nodes and "classifier.3" in nodes
    for name in ("VGG11", "AlexNet"):  # the 1-channel pad does not shift the feature indices
        nodes = get_graph_node_names(small(name, in_channels=1))[1]
        assert nodes[:3] == ["x", "pad", "features.0"]


# --------------------------------------------------------------------------- features


def test_vgg_avgpool_identity_changes_nothing():
    net = small("VGG11").eval()
    net_a = small("VGG11", avgpool_identity=True).eval()
    net_a.load_state_dict(net.state_dict())
    x = example_input("VGG11")
    assert torch.equal(net(x), net_a(x))


def test_vgg_bn_keeps_conv_bias():
    net = small("VGG11bn")
    assert net.features[0].bias is not None and isinstance(net.features[1], nn.BatchNorm2d)


def test_default_init_outside_ntk_nets():
    conv0 = models.build("VGG11").features[0]
    assert conv0.weight.abs().max() <= 1 / math.sqrt(3 * 9)  # kaiming-uniform(a=sqrt 5) bound


def test_dense_ntk_forward_matches_formula():
    torch.manual_seed(0)
    net = models.build("DenseNetL4", width=32).eval()
    assert abs(float(net.layers[0].weight.detach().std()) - 1) < 0.02 and abs(float(net.layers[0].bias.detach().std()) - 1) < 0.4
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    net = net.double()
    z = x.flatten(1)
    lins = [net.layers[i] for i in (0, 2, 4)]
    for layer in lins:
        z = torch.relu(z @ layer.weight.T / math.sqrt(z.shape[1]) + layer.bias)
    expected = z @ net.layers[6].weight.T / z.shape[1]
    assert net.layers[6].bias is None
    torch.testing.assert_close(net(x), expected)


@pytest.mark.parametrize(("scaling", "alpha"), [("mf", 1.0), ("ntk", 0.1)])
def test_convgap1d_matches_formula(scaling, alpha):
    torch.manual_seed(0)
    net = models.build("ConvGAP1d", width=6, depth=3, filter_size=3, stride=[2, 1, 2],
                       scaling=scaling, alpha=alpha, num_classes=1).double()  # fmt: skip
    x = torch.randn(2, 1, 16, dtype=torch.float64)
    z = x
    for block, s in zip(net.conv, [2, 1, 2]):
        wt, b = block.filter.weight, block.filter.bias
        z = F.pad(z, (1, 1), mode="circular")  # odd f = 3: (f - 1)/2 on each side
        z = math.sqrt(3) * torch.relu(F.conv1d(z, wt, stride=s) / math.sqrt(wt.shape[1] * 3) + b[:, None])
    ybar = z.mean(-1)
    norm = 6 if scaling == "mf" else math.sqrt(6)
    expected = alpha * (net.readout.bias + ybar @ net.readout.weight.T / norm)
    torch.testing.assert_close(net(x), expected)


def test_convgap1d_even_filter_padding_and_lengths():
    net, lengths = models.build("ConvGAP1d", width=4), []
    for block in net.conv:
        block.register_forward_hook(lambda m, i, o: lengths.append(o.shape[-1]))
    net(torch.randn(2, 1, 128))
    assert lengths == [64, 32, 16, 8, 4, 2, 1]
    assert net.conv[0].pad.padding == (0, 1)  # even f = 2: f/2 - 1 left, f/2 right


def test_convgap2d_strides_and_pbc():
    assert models.build("ConvGAP", depth=5, width=4).strides == (2, 1, 2, 1, 2)
    net, sizes = models.build("ConvGAP", width=4, pbc=True, batch_norm=True), []
    for block in net.conv:
        block.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    net(torch.randn(2, 3, 32, 32))
    assert sizes == [16, 16, 8]
    assert isinstance(net.conv[0].bn, nn.BatchNorm2d)
    block = net.conv[0]  # BN comes after the activation
    assert list(dict(block.named_children())) == ["pad", "filter", "act", "bn"]


def test_efficientnet_dropout_only_in_training():
    net = small("EfficientNetB0")
    x = example_input("EfficientNetB0")
    net.eval()
    assert torch.equal(net(x), net(x))
    assert net.dropout.p == 0.2


# --------------------------------------------------------------------------- bad input


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'VGG12'.*ResNet18.*VGG11bn"):
        models.build("VGG12")


def test_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'sigmoid'; valid values are .*'tanh'"):
        models.build("VGG11", activation="sigmoid")
    with pytest.raises(ValueError, match="unknown activation"):
        models.make_activation("ReLU")


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_bad_width_factor(bad):
    with pytest.raises(ValueError, match="width_factor must be a positive"):
        models.build("ResNet18", width_factor=bad)


def test_width_factor_type():
    with pytest.raises(TypeError, match="width_factor"):
        models.build("LeNet", width_factor="1")


def test_unknown_option():
    with pytest.raises(ValueError, match="unknown option.*'pooling'.*'VGG11'.*'avgpool_identity'"):
        models.build("VGG11", pooling="avg")
    with pytest.raises(ValueError, match="unknown option.*'width'.*'ResNet18'; valid options are none"):
        models.build("ResNet18", width=3)


def test_bad_option_values():
    with pytest.raises(ValueError, match="list of 7 per-block strides"):
        models.build("ConvGAP1d", stride=[2, 2])
    with pytest.raises(ValueError, match="unknown scaling 'sp'"):
        models.build("ConvGAP1d", scaling="sp")
    with pytest.raises(ValueError, match="num_classes"):
        models.build("AlexNet", num_classes=0)
