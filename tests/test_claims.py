"""The claim checks return each verdict on synthetic datasets built to hold or to fail the claim."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from diffeosens import claims
from diffeosens.claims import ERROR, INCOMPLETE, NOT_REPRODUCED, NOT_RUN, REPRODUCED

L = 10
DEPTH = np.linspace(0, 1, L)


def layered(curves: dict[str, dict[str, dict[str, np.ndarray]]], *, errors: dict[str, float] | None = None, extra_dims: dict | None = None) -> xr.Dataset:
    """A dataset shaped like open_experiment's: curves[arch][state][var] -> values over layers."""
    archs = list(curves)
    states = list(next(iter(curves.values())))
    data = {v: np.zeros((len(archs), 1, len(states), 1, L)) for v in ("D", "G")}
    for i, a in enumerate(archs):
        for j, s in enumerate(states):
            for v in ("D", "G"):
                data[v][i, 0, j, 0] = curves[a][s][v]
    dims = ("arch", "seed", "state", "delta", "layer")
    ds = xr.Dataset({v: (dims, x) for v, x in data.items()},
                    coords={"arch": archs, "seed": [0], "state": states, "delta": [1.0], "layer": np.arange(L)})
    ds["R"] = ds.D / ds.G
    kinds = np.array(["act"] * (L - 1) + ["output"])
    ds = ds.assign_coords(layer_kind=(("arch", "layer"), np.tile(kinds, (len(archs), 1))),
                          relative_depth=(("arch", "layer"), np.tile(DEPTH, (len(archs), 1))))
    err = errors or {a: 0.1 for a in archs}
    te = np.array([[[np.nan if s == "init" else err[a] for s in states]] for a in archs])
    ds["test_error"] = (("arch", "seed", "state"), te)
    return ds


def flat(value=0.1):
    return np.full(L, value)


def paperlike(arch_count=4):
    """Init: D = G (R = 1), flat; trained: D falls, G rises with depth, G_out above init."""
    return {f"net{i}": {"init": {"D": flat(0.1), "G": flat(0.1)},
                        "trained": {"D": 0.1 * 10 ** (-1.5 * DEPTH), "G": 0.12 * 10 ** (1.0 * DEPTH)}} for i in range(arch_count)}


def test_c1_init_relative_sensitivity_near_one():
    assert claims.check_c1(layered(paperlike())).verdict == REPRODUCED
    bad = paperlike()
    bad["net0"]["init"]["G"] = flat(0.01)  # R = 10 at init in one of four nets: 25 % of points off
    v = claims.check_c1(layered(bad))
    assert v.verdict == NOT_REPRODUCED and v.value == pytest.approx(0.75)
    assert claims.check_c1(None).verdict == NOT_RUN


def test_c3_and_c4_trained_trends():
    ds = layered(paperlike())
    assert claims.check_c3(ds).verdict == REPRODUCED and claims.check_c3(ds).value == pytest.approx(-1.5, rel=1e-6)
    assert claims.check_c4(ds).verdict == REPRODUCED
    swapped = paperlike()
    for a in swapped.values():
        a["trained"]["D"], a["trained"]["G"] = a["trained"]["G"], a["trained"]["D"]  # D rises, G falls
    ds2 = layered(swapped)
    assert claims.check_c3(ds2).verdict == NOT_REPRODUCED
    assert claims.check_c4(ds2).verdict == NOT_REPRODUCED


def test_c4_states_its_margin_against_the_jackknife_errors():
    """G_out 0.10 -> 0.105 (ratio 1.05): with 5 % errors on each G it is 0.7 SE above 1, weak evidence."""
    nets = paperlike(1)
    nets["net0"]["trained"]["G"] = nets["net0"]["trained"]["G"] * (0.105 / nets["net0"]["trained"]["G"][-1])
    ds = layered(nets)
    for rel, weak in ((0.05, True), (0.001, False)):
        ds["G_se"] = rel * ds.G
        v = claims.check_c4(ds)
        z = math.log(1.05) / math.hypot(rel, rel)  # delta method on ln(G_t / G_i)
        assert v.verdict == REPRODUCED
        assert v.numbers["z_from_one"]["net0"] == pytest.approx(z, rel=1e-9)
        assert v.numbers["ratio_se"]["net0"] == pytest.approx(1.05 * math.hypot(rel, rel), rel=1e-9)
        assert ("weak evidence" in v.reason) is weak and "SE from 1" in v.detail
    del ds["G_se"]
    assert "SE" not in claims.check_c4(ds).detail  # no errors, no margin claimed


def output_only(r_f: dict[str, float], errors: dict[str, float], d_f: dict[str, float] | None = None) -> xr.Dataset:
    curves = {}
    for a in r_f:
        d = (d_f or {}).get(a, 0.05)
        curves[a] = {"init": {"D": flat(0.1), "G": flat(0.1)}, "trained": {"D": flat(d), "G": flat(d / r_f[a])}}
    return layered(curves, errors=errors)


def test_c2_error_follows_square_root_of_r_f():
    rng = np.random.default_rng(0)
    r = {f"n{i}": 10 ** x for i, x in enumerate(np.linspace(-3, 0, 8))}
    r["DenseNetL2"] = r.pop("n7")  # the largest R_f (and so the largest error) is a fully connected net
    err = {a: 0.2 * np.sqrt(v) * np.exp(rng.normal(0, 0.05)) for a, v in r.items()}
    d = {a: 0.01 * np.exp(rng.normal(0, 1.0)) for a in r}  # D_f unrelated to the error
    v = claims.check_c2(output_only(r, err, d))
    assert v.verdict == REPRODUCED and v.value == pytest.approx(0.5, abs=0.05)
    assert v.numbers["prefactor"] == pytest.approx(0.2, rel=0.2)
    flat_err = {a: 0.1 * np.exp(rng.normal(0, 0.05)) for a in r}  # error independent of R_f
    assert claims.check_c2(output_only(r, flat_err, d)).verdict == NOT_REPRODUCED
    few = {a: r[a] for a in list(r)[:3]}
    assert claims.check_c2(output_only(few, {a: err[a] for a in few})).verdict == INCOMPLETE


def noisy_dataset(hold: bool) -> xr.Dataset:
    levels = [0.0, 1.0, 10.0, 100.0]
    D = np.zeros((1, len(levels), 1, 2, 1, 1))
    G = np.zeros_like(D)
    for j, lv in enumerate(levels):
        D[0, j, 0, :, 0, 0] = [0.1, 0.02]
        G[0, j, 0, :, 0, 0] = [0.1, 0.2 if hold else 0.05]
    dims = ("arch", "train_noise", "seed", "state", "delta", "layer")
    ds = xr.Dataset({"D": (dims, D), "G": (dims, G)},
                    coords={"arch": ["LeNet"], "train_noise": levels, "seed": [0], "state": ["init", "trained"], "delta": [1.0], "layer": [0]})
    ds["R"] = ds.D / ds.G
    ds = ds.assign_coords(layer_kind=(("arch", "layer"), [["output"]]), relative_depth=(("arch", "layer"), [[1.0]]))
    ds["test_error"] = (("arch", "train_noise", "seed", "state"), np.array([[[[np.nan, 0.4]]] * len(levels)]))
    return ds


def test_c5_noisy_training():
    assert claims.check_c5(noisy_dataset(True)).verdict == REPRODUCED
    v = claims.check_c5(noisy_dataset(False))
    assert v.verdict == NOT_REPRODUCED and v.value == 0.0


def pooling_dataset(onset_second_half: bool) -> xr.Dataset:
    orig = 0.1 * 10 ** (-2 * DEPTH)
    ratio = np.where(DEPTH > 0.5, 10.0, 1.0) if onset_second_half else np.full(L, 1.1)
    D = np.stack([orig, orig * ratio])[None, None, :, None, :]  # arch, seed, variant, shuffle, layer
    dims = ("arch", "seed", "variant", "shuffle", "layer")
    ds = xr.Dataset({"D": (dims, D), "G": (dims, np.ones_like(D))},
                    coords={"arch": ["VGG11"], "seed": [0], "variant": ["original", "shuffled"], "shuffle": [0], "layer": np.arange(L)})
    ds = ds.expand_dims(delta=[1.0])  # measure's results always have a delta dimension
    return ds.assign_coords(relative_depth=(("arch", "layer"), DEPTH[None]), layer_kind=(("arch", "layer"), np.array(["act"] * L)[None]))


def test_c6_channel_pooling_in_the_second_half():
    assert claims.check_c6(pooling_dataset(True)).verdict == REPRODUCED
    assert claims.check_c6(pooling_dataset(False)).verdict == NOT_REPRODUCED
    assert claims.check_c6(pooling_dataset(True).isel(delta=0, drop=True)).verdict == claims.INCOMPLETE  # no delta: not measured
    assert claims.check_c6(pooling_dataset(True).assign_coords(delta=[2.0])).verdict == claims.INCOMPLETE


def spectra_dataset(gain_early: float, gain_late: float) -> xr.Dataset:
    init = np.full(L, 1 / 9)
    trained = init + np.where(DEPTH <= 0.5, gain_early, gain_late)
    hf = np.stack([init, trained])[None, None]  # arch, seed, state, layer
    ds = xr.Dataset({"homogeneous_fraction": (("arch", "seed", "state", "layer"), hf)},
                    coords={"arch": ["VGG11"], "seed": [0], "state": ["init", "trained"], "layer": np.arange(L)})
    return ds.assign_coords(relative_depth=(("arch", "layer"), DEPTH[None]))


def test_c7_learned_spatial_pooling():
    assert claims.check_c7(spectra_dataset(0.3, 0.05)).verdict == REPRODUCED
    assert claims.check_c7(spectra_dataset(0.0, 0.0)).verdict == NOT_REPRODUCED
    assert claims.check_c7(spectra_dataset(0.02, 0.3)).verdict == NOT_REPRODUCED  # gains late, not early


def scale2d_dataset(shuffle_ratio: float, error: float) -> xr.Dataset:
    base = layered({"VGG11": {"init": {"D": flat(), "G": flat()},
                              "trained": {"D": 0.1 * 10 ** (-2 * DEPTH), "G": 0.2 * 10 ** (DEPTH)}}}, errors={"VGG11": error})
    base = base.isel(delta=0, drop=True)
    shuf = base.copy()
    shuf["D"] = base.D * shuffle_ratio
    return xr.concat([base, shuf], xr.DataArray(["original", "shuffled"], dims="variant", name="variant"), coords="minimal", compat="override")


def test_c8_scale_detection_2d():
    v = claims.check_c8(scale2d_dataset(1.2, 0.02))
    assert v.verdict == REPRODUCED and v.reason
    assert claims.check_c8(scale2d_dataset(10.0, 0.02)).verdict == NOT_REPRODUCED  # shuffling matters
    assert claims.check_c8(scale2d_dataset(1.2, 0.4)).verdict == NOT_REPRODUCED  # not learnt


def scale1d_dataset(d_slope: float, g_slope: float) -> xr.Dataset:
    k = np.arange(1, 8)
    curves = {"init": {"D": 0.3 * np.ones(7), "G": 0.3 * np.ones(7)}, "trained": {"D": 0.5 * 2.0 ** (d_slope * k), "G": 0.05 * 2.0 ** (g_slope * k)}}
    D = np.stack([curves[s]["D"] for s in ("init", "trained")])
    G = np.stack([curves[s]["G"] for s in ("init", "trained")])
    dims = ("stride", "activation", "seed", "state", "protocol", "layer")
    ds = xr.Dataset({"D": (dims, D[None, None, None, :, None]), "G": (dims, G[None, None, None, :, None])},
                    coords={"stride": [2], "activation": ["relu"], "seed": [0], "state": ["init", "trained"], "protocol": ["1d"], "layer": np.arange(7)})
    return ds.assign_coords(layer_kind=("layer", np.array(["act"] * 7)), relative_depth=("layer", np.linspace(0, 1, 7)))


def test_c9_pooling_power_laws():
    v = claims.check_c9(scale1d_dataset(-1.0, 1.0))
    assert v.verdict == REPRODUCED and v.value == pytest.approx(-1.0, abs=1e-9)
    assert claims.check_c9(scale1d_dataset(-0.1, 0.1)).verdict == NOT_REPRODUCED


def theory_dataset(relu_factor: float, tanh_factor: float) -> xr.Dataset:
    k = np.arange(1, 8)
    G = np.stack([relu_factor**k, tanh_factor**k])[:, None, :]
    return xr.Dataset({"G": (("activation", "stride", "depth"), G)}, coords={"activation": ["relu", "tanh"], "stride": [2], "depth": k})


def activations_dataset(tanh_over_relu: dict[str, float]) -> xr.Dataset:
    """Trained CNNs with default (ReLU) and tanh activations; tanh G_f = ratio x ReLU G_f, D_k falling for both."""
    archs = list(tanh_over_relu)
    D = np.zeros((len(archs), 2, 1, 2, 1, L))
    G = np.zeros_like(D)
    for i, a in enumerate(archs):
        for j, f in enumerate((1.0, tanh_over_relu[a])):
            D[i, j, 0, :, 0] = [flat(0.1), 0.1 * 10 ** (-DEPTH)]
            G[i, j, 0, :, 0] = [flat(0.1), 0.2 * f * 10 ** DEPTH]
    dims = ("arch", "activation", "seed", "state", "delta", "layer")
    ds = xr.Dataset({"D": (dims, D), "G": (dims, G)},
                    coords={"arch": archs, "activation": ["default", "tanh"], "seed": [0], "state": ["init", "trained"], "delta": [1.0], "layer": np.arange(L)})
    ds["R"] = ds.D / ds.G
    ds["test_error"] = (("arch", "activation", "seed", "state"), np.tile(np.array([np.nan, 0.3]), (len(archs), 2, 1, 1)))
    kinds = np.array(["act"] * (L - 1) + ["output"])
    return ds.assign_coords(layer_kind=(("arch", "layer"), np.tile(kinds, (len(archs), 1))),
                            relative_depth=(("arch", "layer"), np.tile(DEPTH, (len(archs), 1))))


def test_c10_rectification_and_odd_activations():
    acts = activations_dataset({"LeNet": 0.1, "AlexNet": 0.2, "VGG11bn": 0.3})
    assert claims.check_c10(theory_dataset(2.0, 1.0), acts).verdict == REPRODUCED
    assert claims.check_c10(theory_dataset(2.0, 1.5), acts).verdict == NOT_REPRODUCED  # tanh noise grows too
    assert claims.check_c10(theory_dataset(1.1, 1.0), acts).verdict == NOT_REPRODUCED  # no piling up
    assert claims.check_c10(theory_dataset(2.0, 1.0), activations_dataset({"LeNet": 3.0, "AlexNet": 2.0, "VGG11bn": 0.3})).verdict == NOT_REPRODUCED
    assert claims.check_c10(None).verdict == NOT_RUN
    assert claims.check_c10(None, None).verdict == NOT_RUN


def scale2d_with_tanh(nets: dict[str, tuple[float, float]]) -> xr.Dataset:
    """2D-task nets with a tanh variant: nets[arch] = (ReLU G_out trained/init, tanh/ReLU trained G_f).
    Init G = 0.1 flat; D falls with depth when trained, for both activations; shuffled = original."""
    parts = []
    for act in ("default", "tanh"):
        curves = {}
        for arch, (gain, ratio) in nets.items():
            g_out = 0.1 * gain * (ratio if act == "tanh" else 1.0)
            trained_g = np.linspace(0.1, g_out, L)
            curves[arch] = {"init": {"D": flat(), "G": flat()}, "trained": {"D": 0.1 * 10 ** (-DEPTH), "G": trained_g}}
        ds = layered(curves, errors={a: 0.01 for a in nets}).isel(delta=0, drop=True)
        ds = xr.concat([ds, ds], xr.DataArray(["original", "shuffled"], dims="variant", name="variant"), coords="minimal", compat="override")
        parts.append(ds.expand_dims(activation=[act]))
    return xr.concat(parts, "activation", coords="minimal", compat="override")


def test_c10_trained_half_from_the_tanh_variants_of_the_2d_task_nets():
    theory = theory_dataset(2.0, 1.0)
    good = scale2d_with_tanh({"VGG11bn": (30.0, 0.1), "VGG16bn": (6.0, 0.3), "VGG11": (0.9, 2.0)})
    v = claims.check_c10(theory, None, good)
    # VGG11's ReLU net lost noise sensitivity in training: listed, not counted; the two others hold
    assert v.verdict == REPRODUCED and "2 of 2" in v.reason and "VGG11 (2D task)" in v.reason and "not counted" in v.reason
    assert v.sources == ("theory", "scale2d")
    # tanh does not lower G_f in one of two eligible nets: 50 % < 75 %
    assert claims.check_c10(theory, None, scale2d_with_tanh({"VGG11bn": (30.0, 0.1), "VGG16bn": (6.0, 3.0)})).verdict == NOT_REPRODUCED
    # one eligible net is not enough
    one = claims.check_c10(theory, None, scale2d_with_tanh({"VGG11bn": (30.0, 0.1), "VGG11": (0.9, 2.0)}))
    assert one.verdict == NOT_REPRODUCED and "at least 2" in one.reason
    # no ReLU net gained noise sensitivity: the premise fails, whatever tanh does
    none = claims.check_c10(theory, None, scale2d_with_tanh({"A": (0.5, 0.1), "B": (0.9, 0.1)}))
    assert none.verdict == NOT_REPRODUCED and "no pair of a ReLU net that gained noise sensitivity" in none.reason
    # pairs from both experiments count together (CIFAR-10 nets of activations_dataset gain noise sensitivity)
    both = claims.check_c10(theory, activations_dataset({"LeNet": 3.0}), scale2d_with_tanh({"VGG11bn": (30.0, 0.1), "VGG16bn": (6.0, 0.3)}))
    assert both.verdict == NOT_REPRODUCED and "2 of 3" in both.reason
    # a tanh net whose values are undefined is missing data, never a pass
    broken = good.copy(deep=True)
    broken["G"].loc[dict(arch="VGG16bn", activation="tanh", state="trained", layer=L - 1)] = np.nan
    assert claims.check_c10(theory, None, broken).verdict == INCOMPLETE
    # the ReLU nets alone: no pair, incomplete
    assert claims.check_c10(theory, None, good.sel(activation=["default"])).verdict == INCOMPLETE
    # a tanh net that did not learn (chance error on the two-class task) is not evidence: listed, not counted
    untrained = good.copy(deep=True)
    untrained["test_error"].loc[dict(arch="VGG16bn", activation="tanh", state="trained")] = 0.5
    v = claims.check_c10(theory, None, untrained)
    assert v.verdict == NOT_REPRODUCED and "the tanh net did not learn" in v.reason and "at least 2" in v.reason


def test_c8_uses_the_relu_nets_of_a_sweep_with_tanh_variants():
    ds = scale2d_with_tanh({"VGG11bn": (30.0, 0.1), "VGG16bn": (6.0, 0.3)})
    assert claims.check_c8(ds).verdict == REPRODUCED
    ds["G"].loc[dict(activation="tanh")] = ds.G.sel(activation="tanh")[..., ::-1].values  # tanh G_k falls with depth: not C8's business
    assert claims.check_c8(ds).verdict == REPRODUCED
    ds["G"].loc[dict(activation="default")] = ds.G.sel(activation="default")[..., ::-1].values
    assert claims.check_c8(ds).verdict == NOT_REPRODUCED


def test_evaluate_reports_not_run_for_missing_experiments(tmp_path):
    verdicts = claims.evaluate("smoke", root=tmp_path)
    assert [v.claim for v in verdicts] == list(claims.CLAIMS)
    assert all(v.verdict == NOT_RUN for v in verdicts)
    assert all(v.reason.startswith("experiment(s) ") for v in verdicts)
    table = claims.verdict_table(verdicts)
    assert list(table.columns) == ["claim", "verdict", "reason", "value", "quantity", "profile", "seeds", "from"]


# ------------------------------------------------------------------------------------------------
# Loopholes of the earlier checks: each case below passed before and must not pass now.
# ------------------------------------------------------------------------------------------------


def test_loophole_c8_passes_without_the_shuffled_variant():
    only_original = scale2d_dataset(1.2, 0.02).sel(variant=["original"])
    v = claims.check_c8(only_original)
    assert v.verdict == INCOMPLETE and "shuffled" in v.reason
    assert claims.check_c8(scale2d_dataset(1.2, 0.02).isel(variant=0, drop=True)).verdict == INCOMPLETE


def test_loophole_c10_passes_on_theory_alone():
    v = claims.check_c10(theory_dataset(2.0, 1.0))
    assert v.verdict == INCOMPLETE and "activations" in v.reason
    only_relu_runs = activations_dataset({"LeNet": 0.1, "AlexNet": 0.2}).sel(activation=["default"])
    assert claims.check_c10(theory_dataset(2.0, 1.0), only_relu_runs).verdict == INCOMPLETE


def test_loophole_c2_nan_spearman_passes():
    rng = np.random.default_rng(1)
    r = {f"n{i}": 10 ** x for i, x in enumerate(np.linspace(-3, 0, 8))}
    r["DenseNetL2"] = r.pop("n7")
    err = {a: 0.2 * np.sqrt(v) * np.exp(rng.normal(0, 0.05)) for a, v in r.items()}
    constant_d = {a: 0.01 for a in r}  # ρ(ε, D_f) is undefined
    v = claims.check_c2(output_only(r, err, constant_d))
    assert v.verdict == INCOMPLETE and "D_f" in v.reason


def test_loophole_c2_wrong_prefactor_or_fcn_not_worst():
    rng = np.random.default_rng(2)
    r = {f"n{i}": 10 ** x for i, x in enumerate(np.linspace(-3, 0, 8))}
    d = {a: 0.01 * np.exp(rng.normal(0, 1.0)) for a in r}
    r_fcn = dict(r)
    r_fcn["DenseNetL2"] = r_fcn.pop("n7")
    d["DenseNetL2"] = d.pop("n7")
    big_a = {a: 0.8 * np.sqrt(v) for a, v in r_fcn.items()}  # slope ½ but prefactor 0.8
    v = claims.check_c2(output_only(r_fcn, big_a, d))
    assert v.verdict == NOT_REPRODUCED and "prefactor" in v.reason
    assert v.value == pytest.approx(0.5, abs=1e-6) and v.numbers["prefactor"] == pytest.approx(0.8, rel=1e-6)
    r_mid = dict(r)
    r_mid["DenseNetL2"] = r_mid.pop("n3")  # an FCN in the middle: a CNN has the largest R_f and error
    d2 = {**{a: d.get(a, 0.01) for a in r_mid}}
    v2 = claims.check_c2(output_only(r_mid, {a: 0.2 * np.sqrt(x) for a, x in r_mid.items()}, d2))
    assert v2.verdict == NOT_REPRODUCED and "largest R_f" in v2.reason
    no_fcn = claims.check_c2(output_only(r, {a: 0.2 * np.sqrt(x) for a, x in r.items()}, d))
    assert no_fcn.verdict == INCOMPLETE and "fully connected" in no_fcn.reason


def test_loophole_c3_trained_d_must_decrease():
    nets = {f"net{i}": {"init": {"D": 0.1 * 10 ** (1.0 * DEPTH), "G": flat(0.1)},
                        "trained": {"D": 0.1 * 10 ** (0.3 * DEPTH), "G": flat(0.1)}} for i in range(4)}
    v = claims.check_c3(layered(nets))  # flatter than at init, but D_k still rises with depth
    assert v.value < 0 and v.verdict == NOT_REPRODUCED and "0 of 4" in v.reason


def test_loophole_exception_is_an_error_not_not_run():
    broken = layered(paperlike()).drop_vars("G")  # the check cannot compute G
    v = claims.check_c4(broken)
    assert v.verdict == ERROR and "G" in v.reason


def test_loophole_unreadable_results_are_an_error(tmp_path):
    (tmp_path / "smoke" / "layers").mkdir(parents=True)
    (tmp_path / "smoke" / "layers" / "run.nc").write_bytes(b"not a netCDF file")
    verdicts = {v.claim: v for v in claims.evaluate("smoke", root=tmp_path)}
    assert verdicts["C3"].verdict == ERROR and "layers" in verdicts["C3"].reason
    assert verdicts["C9"].verdict == NOT_RUN


def pooling_two_nets(r_pattern: bool) -> xr.Dataset:
    """Two nets, both with the D pattern of C6; with ``r_pattern=False`` G moves like D so R does not."""
    orig = 0.1 * 10 ** (-2 * DEPTH)
    ratio = np.where(DEPTH > 0.5, 10.0, 1.0)
    D = np.stack([orig, orig * ratio])[None, None, :, None, :].repeat(2, axis=0)
    G = np.ones_like(D) if r_pattern else D.copy()
    dims = ("arch", "seed", "variant", "shuffle", "layer")
    ds = xr.Dataset({"D": (dims, D), "G": (dims, G)},
                    coords={"arch": ["VGG11", "LeNet"], "seed": [0], "variant": ["original", "shuffled"], "shuffle": [0], "layer": np.arange(L)})
    ds["R"] = ds.D / ds.G
    ds = ds.expand_dims(delta=[1.0])
    return ds.assign_coords(relative_depth=(("arch", "layer"), np.tile(DEPTH, (2, 1))), layer_kind=(("arch", "layer"), np.full((2, L), "act")))


def test_loophole_c6_checks_r_too_and_the_majority_rule():
    assert claims.check_c6(pooling_two_nets(True)).verdict == REPRODUCED
    v = claims.check_c6(pooling_two_nets(False))  # D shows channel pooling, R does not
    assert v.verdict == NOT_REPRODUCED and " R:" in v.reason
    half = pooling_two_nets(True)
    half["D"].loc[dict(arch="LeNet", variant="shuffled")] = half.D.sel(arch="LeNet", variant="original")
    half["R"] = half.D / half.G
    assert claims.check_c6(half).verdict == NOT_REPRODUCED  # 1 of 2 nets: below the 75 % majority


def test_loophole_majority_rule_for_c8_and_c10():
    one = scale2d_dataset(1.2, 0.02)
    two = xr.concat([one, scale2d_dataset(10.0, 0.02)], xr.DataArray(["A", "B"], dims="arch", name="arch"), coords="minimal", compat="override")
    assert claims.check_c8(two.transpose("arch", ...)).verdict == NOT_REPRODUCED  # 1 of 2 nets
    acts = activations_dataset({"LeNet": 0.1, "AlexNet": 0.2, "VGG11bn": 3.0})  # 2 of 3 nets: below 75 %
    assert claims.check_c10(theory_dataset(2.0, 1.0), acts).verdict == NOT_REPRODUCED


def test_missing_delta_is_incomplete_not_a_nearest_value():
    ds = layered(paperlike()).assign_coords(delta=[0.5])
    assert claims.check_c3(ds).verdict == INCOMPLETE


def _padded(ds: xr.Dataset, arch: str, depth: int) -> xr.Dataset:
    """``arch`` as a shallower net: layers from ``depth`` on are padding, as open_experiment combines
    nets of different depths on the deepest net's layer dimension (no layer_name, values NaN)."""
    names = np.array([[f"layer{k}" for k in range(L)] for _ in ds.arch.values], dtype=object)
    pad = (ds.arch == arch) & (ds.layer >= depth)
    names[np.asarray((ds.arch == arch).values), depth:] = np.nan
    ds = ds.assign_coords(layer_name=(("arch", "layer"), names))
    for v in ("D", "G", "R"):
        ds[v] = ds[v].where(~pad)
    return ds


def test_shallower_nets_padding_is_not_undefined_data_but_a_nan_within_a_net_is():
    ds = layered(paperlike())
    padded = _padded(ds, "net0", 7)
    v = claims.check_c1(padded)  # 3 nets x 10 layers + 7 real layers of net0; the 3 padded ones do not count
    assert v.verdict == REPRODUCED and v.numbers["n"] == 3 * L + 7, v.reason
    assert claims.check_c3(padded).verdict == REPRODUCED
    hole = padded.copy(deep=True)
    hole["R"][0, 0, 0, 0, 2] = np.nan  # a real layer of net0 at init
    v = claims.check_c1(hole)
    assert v.verdict == INCOMPLETE and "1 of 37 init R_k values are undefined" in v.reason, v.reason


# ------------------------------------------------------------------------------------------------
# The sentences book chapters print for this build, and what would decide an unreproduced claim
# ------------------------------------------------------------------------------------------------


def _fake_results(monkeypatch, tmp_path, data: dict[str, xr.Dataset]):
    """Make ``evaluate(..., root=tmp_path)`` see ``data[experiment]`` at the smoke profile (and no other experiment)."""
    from diffeosens import results

    for name in data:
        (tmp_path / "smoke" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "smoke" / name / "run.nc").touch()
    monkeypatch.setattr(results, "open_experiment", lambda name, *, profile, root: data[name])


def _swapped_layers() -> xr.Dataset:
    """Trained D_k rises and G_k falls with depth, and G_out ends below its init value: C3 and C4 fail."""
    nets = paperlike()
    for a in nets.values():
        a["trained"]["D"], a["trained"]["G"] = a["trained"]["G"], a["trained"]["D"] * 0.5
    return layered(nets)


def test_finding_flips_with_the_data(tmp_path, monkeypatch):
    data = {"layers": layered(paperlike())}
    _fake_results(monkeypatch, tmp_path, data)
    holds = {v.claim: claims.finding(v) for v in claims.evaluate("smoke", tmp_path, only=["C3", "C4"])}
    data["layers"] = _swapped_layers()
    fails = {v.claim: claims.finding(v) for v in claims.evaluate("smoke", tmp_path, only=["C3", "C4"])}
    for cid in ("C3", "C4"):
        assert holds[cid].startswith(f"**This build (smoke profile):** the data show it ({cid} *reproduced*): "), holds[cid]
        assert fails[cid].startswith(f"**This build (smoke profile):** the data do not show it ({cid} *not reproduced*): "), fails[cid]
    assert "0 of 4 nets" in fails["C4"] and "4 of 4 nets" in holds["C4"]


def test_finding_follows_r_f_below_or_above_one():
    low = noisy_dataset(True)  # trained R_f = 0.1, G_f above init at every level
    high = noisy_dataset(True)
    high["D"] = high.D * 25  # trained R_f = 2.5: not below 1
    high["R"] = high.D / high.G
    yes, no = claims.finding(claims.check_c5(low)), claims.finding(claims.check_c5(high))
    assert yes.startswith("**This build:** the data show it (C5 *reproduced*)"), yes
    assert no.startswith("**This build:** the data do not show it (C5 *not reproduced*)") and "R\\_f 2.5" in no, no


def test_finding_says_what_was_not_run(tmp_path, monkeypatch):
    _fake_results(monkeypatch, tmp_path, {"layers": layered(paperlike())})
    verdicts = {v.claim: v for v in claims.evaluate("smoke", tmp_path, only=["C1", "C9"])}
    assert list(verdicts) == ["C1", "C9"]
    c1 = claims.finding(verdicts["C1"])
    assert "(C1 *reproduced*)" in c1 and c1.endswith("Not run at this profile, so not part of it: architectures.")
    c9 = claims.finding(verdicts["C9"])
    assert c9.startswith("**This build (smoke profile):** not measured (C9 *not run*): experiment(s) scale1d not run"), c9
    with pytest.raises(ValueError, match="C11"):
        claims.evaluate("smoke", tmp_path, only=["C11"])


def test_finding_of_a_part_and_its_criterion():
    ok = claims.check_c10(theory_dataset(2.0, 1.0))  # the model holds; the trained half was not run
    assert ok.verdict == INCOMPLETE
    assert "the data show it (C10, model part: *reproduced*)" in claims.finding(ok, part="model")
    assert "the data cannot decide it (C10 *incomplete*)" in claims.finding(ok)
    flat_g = claims.finding(claims.check_c10(theory_dataset(1.1, 1.0)), part="model", criterion=True)
    assert "the data do not show it (C10, model part: *not reproduced*)" in flat_g and "Criterion: ReLU slope within 30 %" in flat_g
    assert "not checked" in claims.finding(claims.check_c10(None), part="model")


def test_finding_escapes_markdown_in_the_reason():
    v = claims.Verdict("C4", "", "", verdict=NOT_REPRODUCED, reason="G_out*2 < 1 | $x$")
    assert claims.finding(v).endswith(r"G\_out\*2 \< 1 \| \$x\$.")


def test_deciding_rows_only_for_claims_not_reproduced():
    ds = layered(paperlike())
    reproduced, failed = claims.check_c4(ds), claims.check_c4(_swapped_layers())
    assert (reproduced.verdict, failed.verdict) == (REPRODUCED, NOT_REPRODUCED)
    table = claims.deciding_table([reproduced])
    assert table.empty and list(table.columns) == ["claim", "verdict", "measured trend", "what would decide it", "cost", "source"]
    row = claims.deciding_table([failed]).set_index("claim").loc["C4"]
    entry = claims.DECIDING["C4"]
    assert (row["verdict"], row["measured trend"], row["what would decide it"], row["cost"], row["source"]) == (
        NOT_REPRODUCED, entry.trend, entry.config, entry.cost, entry.source)
    incomplete, not_run = claims.check_c10(theory_dataset(2.0, 1.0)), claims.check_c9(None)
    assert list(claims.deciding_table([reproduced, failed, incomplete, not_run]).claim) == ["C4", "C10"]
    mine = {"C4": claims.Deciding("G_out falls", "250 epochs", "≈ 85 min on 2 CPU cores (estimated)", "docs/regimes.md#choice")}
    assert claims.deciding_table([failed], mine).iloc[0]["what would decide it"] == "250 epochs"
    missing = claims.deciding_table([failed], {}).iloc[0]  # no entry: said so, never dropped
    assert missing["measured trend"] == missing["what would decide it"] == claims.TO_BE_MEASURED


def test_deciding_table_covers_every_claim():
    assert list(claims.DECIDING) == list(claims.CLAIMS)
    for cid, d in claims.DECIDING.items():
        assert all(isinstance(x, str) and x.strip() for x in (d.trend, d.config, d.cost, d.source)), cid
        assert d.pending == tuple(f for f in ("trend", "config", "cost", "source") if "to be measured" in getattr(d, f).lower())
    assert claims.DECIDING["C9"].pending == () and claims.DECIDING["C4"].pending == ()  # C4: measured (250 epochs)
    waiting = claims.Deciding("G_out falls", "candidate, to be measured: 250 epochs", "≈ 85 min (estimated)", "docs/regimes.md")
    assert waiting.pending == ("config",)


def test_deciding_sources_point_at_existing_sections():
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]

    def slug(heading: str) -> str:  # GitHub's anchors
        return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading.strip().lower()))

    for cid, d in claims.DECIDING.items():
        refs = re.findall(r"([\w./-]+\.(?:md|py))(?:#([\w-]+))?", f"{d.source} {d.cost} {d.config}")
        assert refs, cid
        for path, anchor in refs:
            assert (repo / path).is_file(), (cid, path)
            if anchor:
                headings = [slug(line.lstrip("#")) for line in (repo / path).read_text().splitlines() if line.startswith("#")]
                assert anchor in headings, (cid, path, anchor)
