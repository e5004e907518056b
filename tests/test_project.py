"""The project's set-up files agree with each other (one source of truth for versions)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_requirements_are_exact_pins():
    lines = [l.strip() for l in (REPO / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines, "requirements.txt is empty"
    for line in lines:
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.+\-]*", line), f"not an exact pin: {line}"
    names = {l.split("==")[0].split("[")[0].lower() for l in lines}
    for needed in ("torch", "torchvision", "papermill", "jupyter-book", "ipywidgets", "seaborn", "xarray", "netcdf4", "tqdm", "dask"):
        assert needed in names, needed
    torch = next(l for l in lines if l.startswith("torch=="))
    vision = next(l for l in lines if l.startswith("torchvision=="))
    assert (torch, vision) == ("torch==2.14.1", "torchvision==0.29.1")  # the matched pair


def test_environment_yml_points_to_requirements():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-r requirements.txt" in pip and "-e ." in pip


def test_two_commands_and_ci_entry_point():
    make = (REPO / "Makefile").read_text()
    assert re.search(r"^test:", make, re.M) and re.search(r"^book:", make, re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    workflow = (REPO / ".github" / "workflows" / "book.yml").read_text()
    assert ".ci/run" in workflow and "make book" in workflow


def test_profile_descriptions_follow_the_table():
    from diffeosens import profiles

    for recipe, sizes in profiles.TRAINING.items():
        for profile, size in sizes.items():
            text = profiles.describe(recipe, profile)
            assert f"{size.epochs:,} epoch" in text, (recipe, profile, text)
            assert ("all the training" in text) if size.n_train is None else (f"{size.n_train:,} training" in text), text
            if size.width is not None:
                assert f"hidden width {size.width}" in text
    with pytest.raises(ValueError, match="profile"):
        profiles.describe("cifar", "huge")


def test_python_requirement_matches_the_pins_and_licence_files_exist():
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["requires-python"] == ">=3.11"  # numpy 2.4 and pandas 3.1 of the pins need 3.11
    assert "MIT License" in (REPO / "LICENSE").read_text() and meta["license"] == "MIT"
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["preferred-citation"]["doi"] == "10.1088/2632-2153/ad092c"
    pins = (REPO / "requirements.txt").read_text()
    for unused in ("plotly", "nbmake", "\ndistributed=="):
        assert unused not in pins, unused
    make = (REPO / "Makefile").read_text()
    assert re.search(r"^serve:", make, re.M) and re.search(r"^tools:", make, re.M) and "TORCH_INDEX" in make
