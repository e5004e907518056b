"""Tests of diffeosens.train: recipes, schedules, checkpoints, resuming, stopping rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn
from torch.optim import optimizer as optim_hooks

from diffeosens import profiles
from diffeosens.train import (
    RECIPES,
    build_model,
    fit,
    load_checkpoint,
    lr_at,
    make_loaders,
    param_groups,
    train_network,
    warmup_factor,
)

torch.set_num_threads(2)


def test_cosine_schedule_follows_pytorch_and_rises_after_t_max():
    r = RECIPES["cifar"]
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=r.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(0.8 * 250))
    for e in range(250):
        assert lr_at(r, e, 250) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12), e
        opt.step()
        sched.step()
    assert lr_at(r, 200, 250) == pytest.approx(0.0, abs=1e-15)
    assert lr_at(r, 249, 250) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 249 / 200)))
    assert lr_at(r, 249, 250) > lr_at(r, 220, 250) > 0
    one = RECIPES["cifar_fast"]
    assert lr_at(one, 0, 20) == 0 and lr_at(one, 5, 20) == pytest.approx(one.lr) and lr_at(one, 20, 20) == pytest.approx(0, abs=1e-12)
    assert lr_at(RECIPES["fcn"], 100, 250) == 0.1


def test_weight_decay_only_on_weights():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, rest = param_groups(net, 5e-4)
    assert decay["weight_decay"] == 5e-4 and rest["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2, 4} and {p.ndim for p in rest["params"]} == {1}
    assert len(decay["params"]) + len(rest["params"]) == len(list(net.parameters()))


def test_training_on_a_cifar10_subset_lowers_the_loss(tmp_path):
    loaders = make_loaders("cifar10", n_train=512, n_test=256, batch_size=64, augment=True, seed=0)
    net = build_model("VGG11bn", seed=0, width_factor=0.125)
    x, y = next(iter(loaders.test))
    with torch.no_grad():
        before = nn.functional.cross_entropy(net.eval()(x), y).item()
    res = fit(net, loaders.train, loaders.test, RECIPES["cifar"].with_(lr=0.05), epochs=4, seed=0, out_dir=tmp_path, progress=False)
    with torch.no_grad():
        after = nn.functional.cross_entropy(res.model(x), y).item()
    assert after < before - 0.1  # measured: 2.31 -> 2.08
    h = res.history
    assert h.train_loss.values[-1] < h.train_loss.values[0] - 0.2  # measured: 2.47 -> 2.01
    assert list(h.epoch.values) == [1, 2, 3, 4] and set(h.data_vars) >= {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "time_s"}
    back = xr.open_dataset(tmp_path / "history.nc", engine="netcdf4")
    np.testing.assert_allclose(back.test_acc.values, h.test_acc.values)
    # checkpoints are plain state dicts readable with weights_only=True
    init = torch.load(tmp_path / "init.pt", weights_only=True)
    fresh = build_model("VGG11bn", seed=0, width_factor=0.125)
    assert all(torch.equal(init[k], v) for k, v in fresh.state_dict().items())
    best = load_checkpoint(build_model("VGG11bn", seed=1, width_factor=0.125), tmp_path / "best.pt")
    assert h.test_acc.values.max() == pytest.approx(res.best_test_acc)
    assert res.best_epoch == int(h.epoch.values[np.nanargmax(h.test_acc.values)])
    assert isinstance(best, nn.Module)


class _Interrupt(Exception):
    pass


class KilledLoader:
    """Wraps a loader and raises at the start of a given epoch, like a killed process."""

    def __init__(self, loader, kill_at_epoch):
        self.loader, self.kill_at, self.epoch = loader, kill_at_epoch, 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.epoch += 1
        if self.epoch == self.kill_at:
            raise _Interrupt
        return iter(self.loader)

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, s):
        self.loader.load_state_dict(s)


# AlexNet: dropout exercises the global RNG state. monitor_every = 2: killed during epoch 4, the
# resume point is epoch 2 (epoch 3 is not evaluated, so not checkpointed) and epoch 3 is repeated.
@pytest.mark.parametrize("arch, monitor_every, epochs, kill_at", [("AlexNet", 1, 3, 3), ("AlexNet", 2, 4, 4)])
def test_resume_after_interruption_continues_identically(tmp_path, arch, monitor_every, epochs, kill_at):
    recipe = RECIPES["cifar"].with_(monitor_every=monitor_every)

    def run(out, kill_at=None):
        loaders = make_loaders("cifar10", n_train=256, n_test=128, batch_size=64, augment=True, train_noise=1.0, seed=3)
        net = build_model(arch, seed=3, width_factor=0.125)
        train = loaders.train if kill_at is None else KilledLoader(loaders.train, kill_at)
        return fit(net, train, loaders.test, recipe, epochs=epochs, seed=3, out_dir=out, progress=False)

    full = run(tmp_path / "a")
    with pytest.raises(_Interrupt):
        run(tmp_path / "b", kill_at=kill_at)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["epoch"] == 1  # resume point: after epoch 2
    resumed = run(tmp_path / "b")
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    np.testing.assert_array_equal(full.history.train_loss.values, resumed.history.train_loss.values)
    np.testing.assert_array_equal(full.history.test_acc.values, resumed.history.test_acc.values)
    again = run(tmp_path / "b")  # a finished run returns at once, unchanged
    assert torch.equal(next(iter(again.model.state_dict().values())), next(iter(full.model.state_dict().values())))


def _recorded_lrs(run) -> list[float]:
    """The lr of every optimiser step taken while ``run()`` executes (a global step pre-hook)."""
    seen: list[float] = []
    handle = optim_hooks.register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    try:
        run()
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_warmup_ramps_the_lr_per_step_then_follows_the_schedule(schedule):
    rec = RECIPES["scale2d"].with_(warmup_epochs=1.5, schedule=schedule)
    loaders = make_loaders("twopoints", n_train=64, n_test=16, batch_size=16, seed=0)
    n = len(loaders.train)
    assert n == 4
    net = build_model("LeNet", seed=0, dataset="twopoints", recipe=rec, width_factor=0.125)
    lrs = _recorded_lrs(lambda: fit(net, loaders.train, loaders.test, rec, epochs=5, progress=False))
    # slow reference, step by step: the schedule's lr times min(1, epochs done after this step / 1.5)
    expected = []
    for e in range(5):
        for b in range(n):
            base = lr_at(rec, e + (b / n if schedule == "onecycle" else 0), 5)
            expected.append(base * min(1.0, (e + (b + 1) / n) / 1.5))
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert lrs[0] == pytest.approx(lr_at(rec, 0, 5) / 6)  # first of 6 warm-up steps
    plain = _recorded_lrs(lambda: fit(build_model("LeNet", seed=0, dataset="twopoints", recipe=rec, width_factor=0.125),
                                      loaders.train, loaders.test, rec.with_(warmup_epochs=0), epochs=5, progress=False))
    assert plain[2 * n:] == lrs[2 * n:] and plain[:n] != lrs[:n]  # from epoch 2 on it is the schedule itself
    assert warmup_factor(rec, 0.75) == 0.5 and warmup_factor(rec, 9.0) == 1.0


def test_gradient_clipping_bounds_every_step_and_is_counted():
    loaders = make_loaders("twopoints", n_train=64, n_test=16, batch_size=16, seed=0)
    plain = RECIPES["scale2d"].with_(momentum=0.0, weight_decay=0.0, schedule="constant", lr=0.5)

    def steps(rec):
        net = build_model("LeNet", seed=0, dataset="twopoints", recipe=rec, width_factor=0.125)
        moves: list[float] = []
        before: list[torch.Tensor] = []

        def pre(opt, args, kwargs):
            before[:] = [p.detach().clone() for p in net.parameters()]

        def post(opt, args, kwargs):
            moves.append(float(torch.sqrt(sum(((p.detach() - q) ** 2).sum() for p, q in zip(net.parameters(), before)))))

        h1 = optim_hooks.register_optimizer_step_pre_hook(pre)
        h2 = optim_hooks.register_optimizer_step_post_hook(post)
        try:
            res = fit(net, loaders.train, loaders.test, rec, epochs=2, progress=False)
        finally:
            h1.remove()
            h2.remove()
        return moves, res.history.clipped_frac.values

    moves, frac = steps(plain.with_(clip_grad_norm=1e-3))
    assert max(moves) <= 0.5 * 1e-3 * (1 + 1e-5) and list(frac) == [1.0, 1.0]  # plain SGD: |step| = lr |g| <= lr * clip
    free, frac = steps(plain.with_(clip_grad_norm=1e9))
    assert max(free) > 10 * 0.5 * 1e-3 and list(frac) == [0.0, 0.0]
    _, frac = steps(plain)
    assert list(frac) == [0.0, 0.0]


def test_an_on_epoch_observer_sees_every_epoch_and_does_not_change_training():
    """The observer is called after each epoch (1..E) in eval mode without autograd, with the history so
    far; an observer that draws from torch's global RNG and runs the model (as a measurement does)
    leaves the run identical to one without it (AlexNet: dropout draws from the global RNG)."""
    def run(observer=None):
        loaders = make_loaders("cifar10", n_train=128, n_test=64, batch_size=32, augment=True, seed=1)
        net = build_model("AlexNet", seed=1, width_factor=0.125)
        return fit(net, loaders.train, loaders.test, "cifar", epochs=3, seed=1, progress=False, on_epoch=observer)

    seen = []

    def observer(epoch, model, history):
        assert not model.training and not torch.is_grad_enabled()
        torch.rand(1000)  # consumes global random numbers
        model(torch.randn(4, 3, 32, 32))
        seen.append((epoch, len(history["epoch"]), history["test_acc"][-1]))

    plain, observed = run(), run(observer)
    assert [(e, n) for e, n, _ in seen] == [(1, 1), (2, 2), (3, 3)]
    np.testing.assert_array_equal([a for _, _, a in seen], observed.history.test_acc.values)
    for k, v in plain.model.state_dict().items():
        assert torch.equal(v, observed.model.state_dict()[k]), k
    np.testing.assert_array_equal(plain.history.train_loss.values, observed.history.train_loss.values)


def test_a_profiles_recipe_departure_is_applied_and_recorded(monkeypatch):
    assert profiles.recipe_departures("cifar", "quick") == {"warmup_epochs": 1.0}
    assert profiles.recipe_departures("cifar", "paper") == {} and profiles.recipe_departures("scale1d", "quick") == {}
    monkeypatch.setitem(profiles.RECIPE_DEPARTURES, "scale2d", {"smoke": {"warmup_epochs": 0.5, "lr": 0.01}})
    res = train_network("LeNet", dataset="twopoints", recipe="scale2d", profile="smoke", epochs=1, progress=False,
                        recipe_overrides={"lr": 0.02})
    import json

    recorded = json.loads(res.history.attrs["recipe"])
    assert recorded["warmup_epochs"] == 0.5 and recorded["lr"] == 0.02  # explicit overrides win over the profile's
    assert "warmup_epochs = 0.5" in profiles.table_markdown()


def test_hinge_recipe_on_the_two_points_task():
    res = train_network("LeNet", dataset="twopoints", recipe="scale2d", profile="smoke", epochs=3, progress=False)
    h = res.history
    assert h.attrs["dataset"] == "twopoints" and h.attrs["recipe_name"] == "scale2d"
    assert 0.0 <= float(h.test_acc.values[-1]) <= 1.0
    assert res.model(torch.zeros(2, 1, 28, 28)).shape == (2, 1)


def test_interpolation_stopping_rule_without_ridge_stops_at_first_zero_loss():
    rec = RECIPES["scale1d"].with_(ridge=0.0, monitor_every=2)
    loaders = make_loaders("scale1d", n_train=32, n_test=64, batch_size=8, seed=0, N=32, xi=8)
    net = build_model("ConvGAP1d", seed=0, dataset="scale1d", recipe=rec, depth=5, width=64)
    res = fit(net, loaders.train, loaders.test, rec, epochs=400, val_loader=loaders.val, progress=False)
    h = res.history
    e0 = h.attrs["interpolation_epoch"]
    assert e0 > 0 and h.attrs["stopped_epoch"] == e0 < 400
    monitored = h.train_loss.values[1::2]
    first_zero = 2 * (int(np.argmax(monitored == 0.0)) + 1)
    assert first_zero == e0


def test_ridge_rule_trains_past_interpolation():
    rec = RECIPES["scale1d"].with_(monitor_every=2, interpolation_factor=3)
    loaders = make_loaders("scale1d", n_train=32, n_test=64, batch_size=8, seed=0, N=32, xi=8)
    net = build_model("ConvGAP1d", seed=0, dataset="scale1d", recipe=rec, depth=5, width=64)
    res = fit(net, loaders.train, loaders.test, rec, epochs=300, val_loader=loaders.val, progress=False)
    e0, stop = res.history.attrs["interpolation_epoch"], res.history.attrs["stopped_epoch"]
    assert e0 > 0 and (stop >= 3 * e0 or stop == 300)


def test_profiles_table_and_sizes():
    table = profiles.table_markdown()
    for recipe in ("cifar", "fcn", "scale2d", "scale1d"):
        for p in profiles.PROFILES:
            assert f"| {recipe} | {p} |" in table
    assert profiles.training("cifar", "paper").epochs == 250
    assert profiles.training("scale2d", "paper").n_train == 1024
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        profiles.training("cifar", "huge")


def test_bad_input_raises_clear_errors():
    loaders = make_loaders("twopoints", n_train=16, n_test=16, seed=0)
    net = build_model("LeNet", dataset="twopoints", recipe="scale2d", width_factor=0.125)
    with pytest.raises(ValueError, match="unknown recipe 'sgd'"):
        fit(net, loaders.train, loaders.test, "sgd")
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        fit(net, loaders.train, loaders.test, "scale2d", epochs=0)
    with pytest.raises(ValueError, match="needs a val_loader"):
        fit(net, loaders.train, loaders.test, "scale1d")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        make_loaders("imagenet")
    with pytest.raises(ValueError, match="warmup_epochs must be a finite number >= 0"):
        fit(net, loaders.train, loaders.test, RECIPES["scale2d"].with_(warmup_epochs=-1), epochs=1)
    with pytest.raises(ValueError, match="clip_grad_norm must be a finite number >= 0"):
        fit(net, loaders.train, loaders.test, RECIPES["scale2d"].with_(clip_grad_norm=float("nan")), epochs=1)
    with pytest.raises(ValueError, match="unknown recipe field"):
        RECIPES["cifar"].with_(learning_rate=1.0)
    with pytest.raises(ValueError, match="train_noise applies to the real-image datasets only"):
        make_loaders("twopoints", train_noise=1.0)


def test_truncated_checkpoints_are_named_errors(tmp_path):
    from diffeosens.sweep import output_is_valid
    from diffeosens.train import CheckpointError, check_checkpoint

    def run():
        loaders = make_loaders("cifar10", n_train=128, n_test=64, batch_size=64, seed=0)
        return fit(build_model("LeNet", seed=0), loaders.train, loaders.test, "cifar", epochs=1, seed=0, out_dir=tmp_path, progress=False)

    run()
    best = tmp_path / "best.pt"
    check_checkpoint(best)
    assert output_is_valid(best)
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])  # a half-written file
    assert not output_is_valid(best)  # a sweep does not count the cell as done
    with pytest.raises(CheckpointError, match="best.pt"):
        load_checkpoint(build_model("LeNet"), best)
    with pytest.raises(CheckpointError, match=r"best.pt.*delete"):
        run()  # the finished run cannot silently keep a broken best.pt
    last = tmp_path / "last.pt"
    last.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="last.pt"):
        run()
    with pytest.raises(CheckpointError, match="does not fit"), pytest.warns(UserWarning, match="no recorded content hash"):
        torch.save(build_model("LeNet").state_dict(), tmp_path / "lenet.pt")
        load_checkpoint(build_model("VGG11", width_factor=0.125), tmp_path / "lenet.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(build_model("LeNet"), tmp_path / "missing.pt")


def test_channels_last_training_matches_nchw_to_float_tolerance():
    """fit trains 2D conv nets in channels-last memory format (faster on CPU, bench/train_throughput.py):
    the same run in NCHW gives the same weights up to float32 rounding, not different numbers."""
    def run(channels_last):
        loaders = make_loaders("cifar10", n_train=128, n_test=64, batch_size=32, augment=False, seed=2)
        net = build_model("VGG11bn", seed=2, width_factor=0.125)
        return fit(net, loaders.train, loaders.test, "cifar", epochs=1, seed=2, progress=False, channels_last=channels_last).model

    a, b = run(True), run(False)
    conv = next(m for m in a.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        if v.is_floating_point():
            torch.testing.assert_close(v, w, rtol=1e-3, atol=1e-5, msg=k)
    assert any(not torch.equal(v, w) for v, w in zip(a.state_dict().values(), b.state_dict().values()))  # two code paths indeed


def test_a_checkpoint_changed_on_disk_is_an_error_naming_it(tmp_path):
    """Flipped bytes inside best.pt load fine with torch (weights only change) and used to give silently
    wrong weights: the content hash recorded at writing catches them on every load (check, load,
    TrainedRun, resume); a file without a recorded hash loads with a warning."""
    import warnings

    from diffeosens.runs import TrainedRun
    from diffeosens.sweep import output_is_valid
    from diffeosens.train import CheckpointError, UnverifiedCheckpointWarning, check_checkpoint, digest_path, verify_checkpoint

    loaders = make_loaders("cifar10", n_train=128, n_test=64, batch_size=64, seed=0)
    fit(build_model("LeNet", seed=0), loaders.train, loaders.test, "cifar", epochs=1, seed=0, out_dir=tmp_path, progress=False,
        attrs={"arch": "LeNet", "dataset": "cifar10", "width_factor": 1.0})
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"
    for f in (best, last, tmp_path / "init.pt"):
        assert digest_path(f).is_file() and verify_checkpoint(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainedRun(tmp_path).model("trained")  # verified, no warning
    data = bytearray(best.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0x5A for b in data[middle:middle + 64])  # 64 flipped bytes inside a tensor
    best.write_bytes(bytes(data))
    assert isinstance(torch.load(best, weights_only=True), dict)  # torch alone does not notice
    for load in (lambda: check_checkpoint(best), lambda: load_checkpoint(build_model("LeNet"), best),
                 lambda: TrainedRun(tmp_path).model("trained")):
        with pytest.raises(CheckpointError, match=r"best\.pt does not match the content hash"):
            load()
    assert not output_is_valid(best)  # a sweep reruns the cell
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"last\.pt does not match"):
        fit(build_model("LeNet", seed=0), loaders.train, loaders.test, "cifar", epochs=2, seed=0, out_dir=tmp_path, progress=False)
    plain = tmp_path / "plain.pt"
    torch.save(build_model("LeNet").state_dict(), plain)
    with pytest.warns(UnverifiedCheckpointWarning, match="plain.pt has no recorded content hash") as rec:
        load_checkpoint(build_model("LeNet"), plain)
    assert rec[0].filename == __file__  # the warning points at the caller


def test_trained_state_follows_the_recipes_checkpoint_selection(tmp_path):
    """The 1D recipe selects the final weights (methods §7.4: measured at the final epoch); the
    CIFAR and 2D recipes the best-test checkpoint (§4.6)."""
    from diffeosens.runs import TrainedRun

    one_d = tmp_path / "1d"
    train_network("ConvGAP1d", dataset="scale1d", recipe="scale1d", profile="smoke", epochs=6, n_train=32, n_test=64, out_dir=one_d, progress=False,
                  model_options={"width": 16, "depth": 5}, task={"N": 32, "xi": 8}, recipe_overrides={"monitor_every": 2})
    run = TrainedRun(one_d)
    assert run.checkpoint("trained").name == "last.pt" and run.checkpoint("last").name == "last.pt"
    last = torch.load(one_d / "last.pt", weights_only=True)["model"]
    for k, v in run.model("trained").state_dict().items():
        assert torch.equal(v, last[k]), k
    assert run.test_error == pytest.approx(1 - float(run.history.test_acc.values[-1]))
    cifar = tmp_path / "cifar"
    train_network("LeNet", profile="smoke", epochs=1, n_train=128, n_test=64, out_dir=cifar, progress=False)
    assert TrainedRun(cifar).checkpoint("trained").name == "best.pt"


def test_laptop_profile_trains_one_long_network_shared_by_three_chapters(tmp_path):
    """The laptop profile: the quick grid and sizes, except one VGG11 trained on the paper's
    250-epoch schedule, the one network of the layers, pooling and spectra sweeps (trained once)."""
    from pathlib import Path

    from diffeosens.sweep import BOOK_EXPERIMENTS, load_sweep

    configs = Path(__file__).resolve().parents[1] / "configs"
    long_runs = set()
    for experiment in BOOK_EXPERIMENTS:
        _, quick = load_sweep(configs / f"{experiment}.yaml", profile="quick", root=tmp_path)
        _, laptop = load_sweep(configs / f"{experiment}.yaml", profile="laptop", root=tmp_path)
        trains = [c for c in laptop if c.shared]
        if experiment in ("layers", "pooling", "spectra"):
            assert {c.grid["arch"] for c in trains} == {"VGG11"} and all(c.params["epochs"] == 250 for c in trains)
            long_runs |= {c.out_dir for c in trains}
        else:  # the quick grid, sizes and training runs (named alike)
            assert [c.grid for c in laptop] == [c.grid for c in quick]
            assert [c.params.get("n_probe") for c in laptop] == [c.params.get("n_probe") for c in quick]
            assert all(c.params.get("epochs") is None for c in trains)
    assert len(long_runs) == 1  # one training, shared by the three chapters
    from diffeosens.train import training_spec

    spec = training_spec("VGG11", dataset="cifar10", recipe="auto", profile="laptop",
                         epochs=profiles.experiment_sizes("layers", "laptop")["epochs"])
    assert spec.epochs == 250 and spec.width_factor == 0.25 and spec.recipe.warmup_epochs == 1.0 and spec.n_train is None
