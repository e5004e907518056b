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


def test_environment_yml_points_to_the_lock():
    text = (REPO / "environment.yml").read_text()
    env = yaml.safe_load(text)
    assert "conda-forge" in env["channels"]
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    # The hashed lock turns on pip's hash checking, which refuses an editable install in the same
    # step: the package is installed after, as the comment says.
    assert pip == ["-r requirements.lock"]
    assert "pip install --no-build-isolation --no-deps -e ." in text


# --- The locks (`make lock`): the whole tree with hashes, from the pins of requirements*.txt. ---

LOCKS = ("requirements.lock", "requirements-test.lock", "requirements-notorch.lock")
# What the notorch lock leaves out: PyPI's torch, torchvision and the CUDA libraries they pull in.
TORCH_BUILD = re.compile(r"torch|torchvision|triton|nvidia-.*|cuda-.*")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: str) -> dict[str, str]:
    """Exact pins of a hand-edited requirements file: normalised name (no extras) -> version."""
    out = {}
    for line in (REPO / path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            out[_name(name.split("[")[0])] = version
    return out


def _lock(path: str) -> dict[tuple[str, str], dict]:
    """Entries of a lock: (name, marker) -> {"version", "hashes"}; a name may appear once per marker."""
    entries: dict[tuple[str, str], dict] = {}
    current = None
    for line in (REPO / path).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            spec = line.rstrip(" \\")
            requirement, _, marker = spec.partition(";")
            m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", requirement.strip())
            assert m, f"{path}: not an exact pin: {line!r}"
            current = (_name(m[1]), marker.strip())
            assert current not in entries, f"{path}: {current} twice"
            entries[current] = {"version": m[2], "hashes": []}
        else:
            for h in re.findall(r"--hash=(\S+)", line):
                assert current is not None
                entries[current]["hashes"].append(h)
    assert entries, f"{path} is empty"
    return entries


def _versions(entries) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for (name, _), entry in entries.items():
        out.setdefault(name, set()).add(entry["version"])
    return out


@pytest.mark.parametrize("path", LOCKS)
def test_every_lock_entry_is_pinned_with_sha256_hashes(path):
    text = (REPO / path).read_text()
    assert "make lock" in text.splitlines()[1] or "make lock" in text[:400], f"{path} does not say how it is made"
    assert "-e " not in text and "file:" not in text and "git+" not in text
    for key, entry in _lock(path).items():
        assert entry["hashes"], f"{path}: {key} has no hash"
        for h in entry["hashes"]:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", h), (path, key, h)


def test_every_direct_pin_is_in_its_lock_at_the_same_version():
    for source, lock in (("requirements.txt", "requirements.lock"), ("requirements-test.txt", "requirements-test.lock")):
        locked = _versions(_lock(lock))
        for name, version in _pins(source).items():
            assert locked.get(name) == {version}, f"{source} pins {name}=={version}, {lock} has {locked.get(name)}: run make lock"


def test_test_tools_are_not_in_the_base_lock_and_shared_packages_agree():
    base, test = _versions(_lock("requirements.lock")), _versions(_lock("requirements-test.lock"))
    tools = set(_pins("requirements-test.txt"))
    assert {"pytest", "playwright"} <= tools
    assert not tools & set(base), "test-only tools in requirements.lock"
    assert not tools & set(_pins("requirements.txt")), "test-only tools pinned in requirements.txt"
    for name in set(base) & set(test):  # e.g. packaging, pygments: the base versions (-c requirements.lock)
        assert base[name] == test[name], name


def test_notorch_lock_is_the_base_lock_without_the_torch_build():
    base, notorch = _lock("requirements.lock"), _lock("requirements-notorch.lock")
    expected = {key: entry for key, entry in base.items() if not TORCH_BUILD.fullmatch(key[0])}
    assert notorch == expected
    names = {name for name, _ in base}
    assert {"torch", "torchvision", "triton"} <= names and any(n.startswith("nvidia-") for n in names)
    # What a CPU torch needs besides (sympy, networkx, ...) stays, with its hashes.
    assert {"sympy", "networkx", "filelock", "fsspec", "jinja2", "typing-extensions"} <= {n for n, _ in notorch}


def test_torch_hashes_cover_pypi_wheels_for_linux_and_macos():
    torch = next(e for (name, _), e in _lock("requirements.lock").items() if name == "torch")
    assert len(torch["hashes"]) >= 4  # one wheel per platform and Python; PyPI's x86_64 Linux wheel is the CUDA build


def _make_dry_run(target: str, **variables: str) -> str:
    import subprocess

    args = ["make", "-n", "-C", str(REPO), target, "VENV=/nonexistent/diffeosens-venv"] + [f"{k}={v}" for k, v in variables.items()]
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("TORCH_INDEX", "MAKEFLAGS", "MFLAGS")}
    return subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout


def test_make_installs_the_locks_with_hashes_and_torch_once():
    book = [l for l in _make_dry_run("book-only").splitlines() if "pip install" in l]
    assert any("--require-hashes -r requirements.lock" in l for l in book)
    assert not any("requirements-test.lock" in l or "-r requirements.txt" in l for l in book), book
    test = _make_dry_run("test")
    assert "--require-hashes -r requirements.lock" in test and "--require-hashes -r requirements-test.lock" in test
    cpu = _make_dry_run("test", TORCH_INDEX="https://download.pytorch.org/whl/cpu")
    installs = [l for l in cpu.splitlines() if "pip install" in l]
    assert any("--require-hashes -r requirements-notorch.lock" in l for l in installs)
    assert not any("-r requirements.lock" in l for l in installs)
    torch = [l for l in installs if "torch" in l.replace("notorch", "")]
    assert len(torch) == 1 and "--index-url https://download.pytorch.org/whl/cpu" in torch[0], torch
    lock = _make_dry_run("lock")
    assert "uv pip compile" in lock and "--generate-hashes" in lock and "-o requirements.lock" in lock
    assert "-c requirements.lock -o requirements-test.lock" in lock and "requirements-notorch.lock" in lock


# --- The GitHub workflow: publishes quick or paper builds only; torch once; caches keyed on the locks. ---

def _workflow() -> dict:
    return yaml.safe_load((REPO / ".github" / "workflows" / "book.yml").read_text())


def _steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def test_workflow_caches_pip_on_the_locks_and_the_data_folder():
    wf = _workflow()
    assert wf["env"]["DIFFEOSENS_DATA"], "DIFFEOSENS_DATA must point to the cached data folder"
    for name, job in wf["jobs"].items():
        runs = " ".join(s.get("run", "") for s in _steps(job))
        if "make" not in runs:
            continue
        pip = [s for s in _steps(job) if str(s.get("uses", "")).startswith("actions/setup-python")]
        assert pip and pip[0]["with"].get("cache") == "pip", name
        keyed_on = pip[0]["with"]["cache-dependency-path"]
        assert "requirements.lock" in keyed_on and "requirements-notorch.lock" in keyed_on, (name, keyed_on)
        caches = [s for s in _steps(job) if str(s.get("uses", "")).startswith("actions/cache")]
        for cache in caches:  # any other cache of installed packages is keyed on the locks too
            if any(p in cache["with"]["path"] for p in ("pip", ".venv", "site-packages")):
                assert ".lock" in cache["with"]["key"], (name, cache)
        data = [c for c in caches if c["with"]["path"] == "${{ env.DIFFEOSENS_DATA }}"]
        assert data, f"{name}: no cache of the data folder"
        order = [s.get("run", s.get("uses", "")) for s in _steps(job)]
        assert order.index("make data") > order.index("make setup") > order.index(data[0]["uses"]), name


def test_workflow_installs_torch_once_as_cpu_wheels():
    wf = _workflow()
    assert wf["env"]["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    for name, job in wf["jobs"].items():
        assert "TORCH_INDEX" not in job.get("env", {}), name
        for step in _steps(job):
            run = step.get("run", "")
            # Every install goes through make (one torch, from TORCH_INDEX); .ci/fetch-data would pip
            # install a second, CUDA torch into the system Python.
            assert "pip install" not in run and "pip3 install" not in run and "fetch-data" not in run, (name, run)
            assert "TORCH_INDEX=" not in run, (name, run)


def test_workflow_publishes_only_real_profiles():
    wf = _workflow()
    jobs = wf["jobs"]
    on = wf.get("on", wf.get(True))
    assert set(on["workflow_dispatch"]["inputs"]["profile"]["options"]) <= {"quick", "laptop", "paper"}
    uploads = [n for n, j in jobs.items() if any("upload-pages-artifact" in str(s.get("uses", "")) for s in _steps(j))]
    assert uploads == ["publish"]
    publish = jobs["publish"]
    profile = publish["env"]["PROFILE"]
    assert "smoke" not in profile and set(re.findall(r"'([^']*)'", profile)) <= {"quick", "laptop", "paper"}, profile
    assert "pull_request" not in publish["if"] and "push'" not in publish["if"]
    runs = [s.get("run", "") for s in _steps(publish)]
    guard = next(i for i, r in enumerate(runs) if "refusing to publish" in r)
    assert "quick|laptop|paper)" in runs[guard] and "exit 1" in runs[guard]
    book = next(i for i, r in enumerate(runs) if r.startswith("make book"))
    assert guard < book and runs[book] == 'make book PROFILE="$PROFILE"'
    assert jobs["deploy"]["needs"] == "publish" and publish["needs"] == "test"
    for name, job in jobs.items():  # smoke builds happen only where nothing is uploaded
        if any("smoke" in s.get("run", "") for s in _steps(job)):
            assert name not in uploads
    assert any(s.get("run") == ".ci/run" for s in _steps(jobs["test"]))


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
