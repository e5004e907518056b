"""A sweep on a Dask cluster killed mid-run and restarted elsewhere: nothing that finished is
recomputed, the interrupted cells are rerun and end valid, and no half-written or corrupt
checkpoint is ever accepted.

The sweep trains LeNet on the synthetic two-points task (notebooks/train.ipynb at the smoke
profile: two epochs, so a cell killed after its first epoch resumes from ``last.pt``) for five
activations, on a local cluster of two worker processes (``--dask-workers 2``). It is SIGKILLed
(client, scheduler and both workers: the whole process group) once a cell has finished and another
is running, then restarted by a fresh process from another working directory with the same
results root, as another node of a shared filesystem would.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from diffeosens import results, sweep
from diffeosens.sweep import load_sweep, record_path, run_sweep
from diffeosens.train import digest_path, verify_checkpoint

REPO = Path(__file__).resolve().parents[1]

CONFIG = """\
experiment: cluster
profiles:
  smoke: {{}}
stages:
  - name: train
    notebook: {notebook}
    shared: true
    outputs: [history.nc, best.pt, init.pt]
    grid:
      arch: [LeNet]
      activation: [relu, tanh, gelu, silu, softplus]
      seed: ${{seeds}}
    params:
      dataset: twopoints
      recipe: auto
      profile: ${{profile}}
"""

#: Runs the command line with the library's hash pinned: the library may be edited while the tests
#: run (a changed library is tested in test_sweep.py), and this test is about kills, not code changes.
BOOT = ("import sys\nfrom diffeosens import cli, sweep\npinned = sys.argv.pop(1)\nsweep.library_hash = lambda: pinned\n"
        "sys.exit(cli.main(sys.argv[1:]))")

HISTORY = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")


def _sweep_command(library: str, config: Path, root: Path) -> list[str]:
    return [sys.executable, "-c", BOOT, library, "sweep", str(config), "--profile", "smoke", "--dask-workers", "2",
            "--root", str(root), "--progress", "lines"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DIFFEOSENS_STALE", "DIFFEOSENS_FRESH_KERNEL")}
    return {**env, "PYTHONUNBUFFERED": "1"}


def _status(cell: sweep.Cell) -> str | None:
    """What the cell's record says (``done``, ``running``), ``None`` without one."""
    try:
        return json.loads(record_path(cell).read_text())["status"]
    except (OSError, ValueError):
        return None


def _processes_under(folder: Path) -> list[int]:
    """Processes working in ``folder`` (the sweep's client and workers, and the kernels, which run
    in their cells' folders): all of them were started by this test."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:  # gone, a zombie, or not ours
                continue
            if cwd == str(folder) or cwd.startswith(f"{folder}/"):
                pids.append(int(entry.name))
    return pids


def _wait_for_no_processes_under(folder: Path, seconds: float = 20.0) -> list[int]:
    """Wait until no process works in ``folder``; kill (by id) and return those still there after ``seconds``."""
    deadline = time.monotonic() + seconds
    while _processes_under(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = _processes_under(folder)
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return survivors


def _files(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Inode, modification time and size of each file of a run folder (not its lock file, which
    every sweep opens)."""
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.endswith(".lock"):
            st = p.stat()
            out[p.name] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def _assert_same_results(a: Path, b: Path) -> None:
    """Two run folders hold the same training: history and checkpoints, value for value."""
    ha, hb = results.open_run(a / "history.nc"), results.open_run(b / "history.nc")
    for name in HISTORY:
        np.testing.assert_array_equal(ha[name].values, hb[name].values, err_msg=f"{a.name}: {name}")
    for name in ("init.pt", "best.pt"):
        sa, sb = torch.load(a / name, weights_only=True), torch.load(b / name, weights_only=True)
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), f"{a.name}: {name} differs"


@pytest.mark.slow
def test_a_dask_sweep_killed_mid_run_resumes_on_another_node_recomputing_nothing_finished(tmp_path, monkeypatch):
    library = sweep.library_hash()
    monkeypatch.setattr(sweep, "library_hash", lambda: library)
    monkeypatch.delenv("DIFFEOSENS_STALE", raising=False)
    config = tmp_path / "cluster.yaml"
    config.write_text(CONFIG.format(notebook=REPO / "notebooks" / "train.ipynb"))
    root = tmp_path / "shared" / "results"  # the shared filesystem
    node1, node2 = tmp_path / "node1", tmp_path / "node2"
    node1.mkdir()
    node2.mkdir()
    _, cells = load_sweep(config, profile="smoke", root=root)
    assert len(cells) == 5
    folder = {c.cell_id: Path(c.out_dir) for c in cells}

    # a run that is never killed, in this process (one thread per kernel, as on a Dask worker)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    baseline_root = tmp_path / "baseline"
    baseline = run_sweep(config, profile="smoke", root=baseline_root, progress=False)
    assert baseline.ok and len(baseline.by_status("ran")) == 5
    _, baseline_cells = load_sweep(config, profile="smoke", root=baseline_root)
    reference = {c.cell_id: Path(c.out_dir) for c in baseline_cells}

    # node 1: the sweep, killed (client, scheduler, both workers) once a cell is done and one runs
    log = tmp_path / "node1.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(_sweep_command(library, config, root), cwd=node1, env=_env(), start_new_session=True,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, satisfied = time.monotonic() + 600, None
        while True:
            assert proc.poll() is None, f"the sweep ended before it was killed:\n{log.read_text()}"
            assert time.monotonic() < deadline, "no cell finished within 600 s"
            states = {c.cell_id: _status(c) for c in cells}
            done = [k for k, s in states.items() if s == "done"]
            running = [k for k, s in states.items() if s == "running"]
            if done and running:
                satisfied = satisfied or time.monotonic()
                # preferably while a cell is between its two epochs (it then resumes from last.pt)
                if (any((folder[k] / "last.pt").exists() for k in running) or len(done) >= 2
                        or time.monotonic() - satisfied > 1.5):
                    break
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # a killed worker's kernel (in a session of its own) stops as soon as its parent is gone: it
    # does not go on writing the cell that the restarted sweep reruns
    survivors = _wait_for_no_processes_under(tmp_path)
    assert not survivors, f"processes of the killed sweep still running: {survivors}"

    states = {c.cell_id: _status(c) for c in cells}
    done = sorted(k for k, s in states.items() if s == "done")
    interrupted = sorted(k for k, s in states.items() if s == "running")
    assert 1 <= len(done) <= 2 and interrupted, states
    finished = {k: (_files(folder[k]), (folder[k] / "train.cell.json").read_text()) for k in done}
    # one interrupted cell stays as the kill left it (preferably mid-training), plus a temporary
    # file of a checkpoint write cut short by the kill
    natural = max(interrupted, key=lambda k: (folder[k] / "last.pt").exists())
    mid_training = (folder[natural] / "last.pt").exists()
    init_before = _files(folder[natural]).get("init.pt")
    (folder[natural] / ".last.pt.tmp4242").write_bytes(b"PK\x03\x04 half a checkpoint")
    # two other unfinished cells look finished (a done record, every file), each with a bad best.pt:
    # truncated, and a loadable checkpoint that is not the one its recorded SHA-256 names
    truncated, swapped = sorted(set(folder) - set(done) - {natural})[:2]
    for k in (truncated, swapped):
        shutil.rmtree(folder[k], ignore_errors=True)
        shutil.copytree(reference[k], folder[k], ignore=shutil.ignore_patterns("*.lock"))
    best = folder[truncated] / "best.pt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    (folder[swapped] / "best.pt").write_bytes((folder[swapped] / "init.pt").read_bytes())
    for k in (truncated, swapped):
        assert json.loads((folder[k] / "train.cell.json").read_text())["status"] == "done"
        assert digest_path(folder[k] / "best.pt").is_file() and not sweep.output_is_valid(folder[k] / "best.pt")

    # node 2: a fresh process, another working directory, the same results root
    rerun = subprocess.run(_sweep_command(library, config, root), cwd=node2, env=_env(), capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    status = dict(re.findall(r"cells: (\S+) (ran|skipped|failed|blocked) in", rerun.stdout))
    assert status == {k: "skipped" if k in done else "ran" for k in folder}, rerun.stdout
    assert f"{5 - len(done)} ran (0 stale), {len(done)} skipped (up to date), 0 failed, 0 blocked" in rerun.stdout
    assert not _wait_for_no_processes_under(tmp_path)

    # what had finished was not touched: same files (inode, mtime, size) and the same record
    for k, (files, record) in finished.items():
        assert _files(folder[k]) == files and (folder[k] / "train.cell.json").read_text() == record
    if mid_training:  # resumed from its last.pt, not retrained from scratch (which rewrites init.pt)
        assert _files(folder[natural])["init.pt"] == init_before
    # every cell is done and valid; the bad checkpoints were replaced, never resumed from
    assert all(sweep.is_done(c) for c in cells)
    for k in folder:
        for name in ("init.pt", "best.pt", "last.pt"):
            assert verify_checkpoint(folder[k] / name)
    assert not [p for p in root.rglob("*") if re.search(r"\.tmp\d", p.name)]  # no temporary file left
    # and the results are those of the run that was never killed
    for k in folder:
        _assert_same_results(folder[k], reference[k])
