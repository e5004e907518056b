"""The claim checks return each verdict on synthetic datasets built to hold or to fail the claim."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from diffeosens import claims
from diffeosens.claims import NOT_REPRODUCED, NOT_RUN, REPRODUCED

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


def output_only(r_f: dict[str, float], errors: dict[str, float], d_f: dict[str, float] | None = None) -> xr.Dataset:
    curves = {}
    for a in r_f:
        d = (d_f or {}).get(a, 0.05)
        curves[a] = {"init": {"D": flat(0.1), "G": flat(0.1)}, "trained": {"D": flat(d), "G": flat(d / r_f[a])}}
    return layered(curves, errors=errors)


def test_c2_error_follows_square_root_of_r_f():
    rng = np.random.default_rng(0)
    r = {f"n{i}": 10 ** x for i, x in enumerate(np.linspace(-3, 0, 8))}
    err = {a: 0.2 * np.sqrt(v) * np.exp(rng.normal(0, 0.05)) for a, v in r.items()}
    d = {a: 0.01 * np.exp(rng.normal(0, 1.0)) for a in r}  # D_f unrelated to the error
    v = claims.check_c2(output_only(r, err, d))
    assert v.verdict == REPRODUCED and v.value == pytest.approx(0.5, abs=0.05)
    assert v.numbers["prefactor"] == pytest.approx(0.2, rel=0.2)
    flat_err = {a: 0.1 * np.exp(rng.normal(0, 0.05)) for a in r}  # error independent of R_f
    assert claims.check_c2(output_only(r, flat_err, d)).verdict == NOT_REPRODUCED
    few = {a: r[a] for a in list(r)[:3]}
    assert claims.check_c2(output_only(few, {a: err[a] for a in few})).verdict == NOT_RUN


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
    return ds.assign_coords(relative_depth=(("arch", "layer"), DEPTH[None]), layer_kind=(("arch", "layer"), np.array(["act"] * L)[None]))


def test_c6_channel_pooling_in_the_second_half():
    assert claims.check_c6(pooling_dataset(True)).verdict == REPRODUCED
    assert claims.check_c6(pooling_dataset(False)).verdict == NOT_REPRODUCED


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
    assert claims.check_c8(scale2d_dataset(1.2, 0.02)).verdict == REPRODUCED
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


def test_c10_rectification_and_odd_activations():
    assert claims.check_c10(theory_dataset(2.0, 1.0)).verdict == REPRODUCED
    assert claims.check_c10(theory_dataset(2.0, 1.5)).verdict == NOT_REPRODUCED  # tanh noise grows too
    assert claims.check_c10(theory_dataset(1.1, 1.0)).verdict == NOT_REPRODUCED  # no piling up
    assert claims.check_c10(None).verdict == NOT_RUN


def test_evaluate_reports_not_run_for_missing_experiments(tmp_path):
    verdicts = claims.evaluate("smoke", root=tmp_path)
    assert [v.claim for v in verdicts] == list(claims.CLAIMS)
    assert all(v.verdict == NOT_RUN for v in verdicts)
    table = claims.verdict_table(verdicts)
    assert list(table.columns) == ["claim", "verdict", "value", "quantity", "profile", "seeds", "from"]
