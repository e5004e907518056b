"""The command line: every user error is one line on stderr with exit status 2, found before any
computation; the same model seed gives the same network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffeosens import cli, usermodels

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    return code, err


def one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_sweep_of_a_folder_is_a_one_line_error(capsys):
    one_line_error(*run(capsys, "sweep", str(REPO / "configs")), "not a file")


def test_sweep_with_malformed_stages(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("experiment: x\nstages: 5\n")
    one_line_error(*run(capsys, "sweep", str(cfg)), "'stages' must be a list")
    cfg.write_text("experiment: x\nstages:\n  - name: a\n    notebook: notebooks/train.ipynb\n    needs: 3\n")
    one_line_error(*run(capsys, "sweep", str(cfg)), "needs")


def test_measure_errors_come_before_any_computation(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(usermodels, "measure_model", lambda *a, **k: calls.append(a))
    one_line_error(*run(capsys, "measure", "--model", "zoo:LeNet", "--out", str(tmp_path / "nofolder" / "x.nc")), "does not exist")
    one_line_error(*run(capsys, "measure", "--model", "zoo:LeNet", "--out", str(tmp_path / "x.csv")), ".nc")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not __import__("os").access(locked, __import__("os").W_OK):  # root can write anywhere
        one_line_error(*run(capsys, "measure", "--model", "zoo:LeNet", "--out", str(locked / "x.nc")), "cannot write")
    one_line_error(*run(capsys, "measure", "--model", "zoo:LeNet", "--out", str(tmp_path / "x.nc"), "--device", "gpu7"), "not a torch device")
    if not torch.cuda.is_available():
        one_line_error(*run(capsys, "measure", "--model", "zoo:LeNet", "--out", str(tmp_path / "x.nc"), "--device", "cuda"), "no CUDA GPU")
    assert calls == []


def test_measure_bad_model_spec(tmp_path, capsys):
    one_line_error(*run(capsys, "measure", "--model", "nosuchmod:f", "--out", str(tmp_path / "x.nc"), "--n-probe", "4"),
                   "cannot import module 'nosuchmod'")
    one_line_error(*run(capsys, "measure", "--model", "zoo:NoSuchNet", "--out", str(tmp_path / "x.nc"), "--n-probe", "4"), "NoSuchNet")


def test_model_construction_is_seeded():
    a = usermodels.load_model("zoo:VGG11bn", seed=0).state_dict()
    b = usermodels.load_model("zoo:VGG11bn", seed=0).state_dict()
    c = usermodels.load_model("zoo:VGG11bn", seed=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    before = torch.random.get_rng_state()
    usermodels.load_model("zoo:LeNet", seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream is untouched


def test_measure_cli_twice_gives_the_same_numbers(tmp_path, capsys):
    import xarray as xr

    outs = []
    for k in range(2):
        out = tmp_path / f"m{k}.nc"
        code, err = run(capsys, "measure", "--model", "zoo:LeNet", "--n-probe", "8", "--layers", "output", "--out", str(out))
        assert code == 0, err
        outs.append(xr.open_dataset(out, engine="netcdf4").load())
    assert outs[0].G.values.tolist() == outs[1].G.values.tolist() and outs[0].D.values.tolist() == outs[1].D.values.tolist()
    assert outs[0].attrs["model_seed"] == 0


def test_data_download_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import urllib.error

    from diffeosens.data import vision

    calls = []

    def offline(name, root=None):
        calls.append((name, root))
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(vision, "download_dataset", offline)
    one_line_error(*run(capsys, "data", "download", "svhn"), "unknown dataset 'svhn'", "cifar10, mnist, fashionmnist")
    afile = tmp_path / "afile"
    afile.write_text("")
    one_line_error(*run(capsys, "data", "download", "cifar10", "--root", str(afile)), "is not a folder")
    assert calls == []
    one_line_error(*run(capsys, "data", "download", "CIFAR-10", "--root", str(tmp_path / "d")),
                   f"cifar10: downloading into {tmp_path / 'd'} failed", "URLError", "Name or service not known")
    assert calls == [("cifar10", tmp_path / "d")]
    with pytest.raises(SystemExit) as info:  # argparse: a dataset is required
        cli.main(["data", "download"])
    assert info.value.code == 2


def test_data_download_and_where(tmp_path, capsys, monkeypatch):
    from diffeosens.data import vision

    calls = []
    monkeypatch.setattr(vision, "download_dataset", lambda name, root=None: calls.append((name, root)) or root)
    monkeypatch.delenv("DIFFEOSENS_DATA", raising=False)
    # a dataset found locally (the shared copy) is not downloaded again; with --root it goes there
    if vision.locate("cifar10")[0] is not None:
        assert cli.main(["data", "download", "cifar10"]) == 0
        assert "cifar10: already here, nothing to download" in capsys.readouterr().out and calls == []
    assert cli.main(["data", "download", "cifar10", "mnist", "cifar10", "--root", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert calls == [("cifar10", tmp_path / "d"), ("mnist", tmp_path / "d")]
    assert f"cifar10: {tmp_path / 'd'}" in out and f"DIFFEOSENS_DATA={tmp_path / 'd'}" in out
    monkeypatch.setenv("DIFFEOSENS_DOWNLOAD", "0")
    assert cli.main(["data", "where", "mnist", "--root", str(tmp_path / "empty")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mnist: ") and "download on first use: off" in out
    monkeypatch.setenv("DIFFEOSENS_DOWNLOAD", "maybe")
    one_line_error(*run(capsys, "data", "where"), "DIFFEOSENS_DOWNLOAD='maybe'")


def real_command(*argv: str, cwd: Path = REPO) -> tuple[int, str]:
    """``python -m diffeosens ...`` in a new process: what a user sees (exit status, stderr)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DIFFEOSENS_DEBUG"}
    proc = subprocess.run([sys.executable, "-m", "diffeosens", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stderr


def test_the_real_command_refuses_what_the_api_refuses(tmp_path):
    """Through the installed command: negative probe and model seeds are refused like --seed -1; the
    measure options of the API exist on the command line; a sweep config with an unknown top-level
    key or an architecture not in the zoo is refused when it is read, before any cell runs."""
    out = str(tmp_path / "x.nc")
    for flag in ("--seed", "--probe-seed", "--model-seed"):
        one_line_error(*real_command("measure", "--model", "zoo:LeNet", "--n-probe", "4", "--out", out, flag, "-1"),
                       flag.lstrip("-").replace("-", "_"), "[0, 2**64)")
    code, err = real_command("measure", "--model", "zoo:LeNet", "--out", out, "--estimator", "mode")
    assert code == 2 and "Traceback" not in err and "invalid choice: 'mode'" in err.splitlines()[-1], err  # argparse: usage + one error line
    cfg = tmp_path / "typo.yaml"
    cfg.write_text((REPO / "configs" / "spectra.yaml").read_text().replace("stages:", "stage_typo: 1\nstages:", 1))
    one_line_error(*real_command("sweep", str(cfg), "--profile", "smoke", "--root", str(tmp_path / "r")), "unknown top-level key", "stage_typo")
    cfg.write_text((REPO / "configs" / "spectra.yaml").read_text().replace("[LeNet, VGG11bn]", "[LeNet, VGG12bn]", 1))
    one_line_error(*real_command("sweep", str(cfg), "--profile", "smoke", "--root", str(tmp_path / "r")), "unknown architecture", "VGG12bn")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*.nc"))  # nothing ran


def test_measure_cli_passes_the_estimator_options(tmp_path, capsys, monkeypatch):
    seen = {}
    monkeypatch.setattr(usermodels, "measure_model", lambda *a, **k: seen.update(k) or (_ for _ in ()).throw(ValueError("stop")))
    code, err = run(capsys, "measure", "--model", "zoo:LeNet", "--out", str(tmp_path / "x.nc"), "--estimator", "median",
                    "--median", "average", "--n-draws", "3", "--interp", "gaussian")
    one_line_error(code, err, "stop")
    assert (seen["estimator"], seen["median"], seen["n_draws"], seen["interp"]) == ("median", "average", 3, "gaussian")
    assert seen["batch_size"] == "auto"  # the default: fits the device's memory at any P
    code, err = run(capsys, "measure", "--model", "zoo:LeNet", "--out", str(tmp_path / "x.nc"), "--batch-size", "64")
    assert seen["batch_size"] == 64
    for bad in ("0", "big"):
        with pytest.raises(SystemExit) as exit_:
            run(capsys, "measure", "--model", "zoo:LeNet", "--out", str(tmp_path / "x.nc"), "--batch-size", bad)
        assert exit_.value.code == 2 and "must be a positive integer or auto" in capsys.readouterr().err
