"""bncli sweep --backend ray: same files as local, failures recorded, resume across backends.

One local Ray instance (2 CPUs, no dashboard) serves the whole module; bncli joins it.
"""

import os
import sys
from pathlib import Path

import pytest
import yaml
from helpers import file_bytes, sweep_file

from bncli import results, sweeps

BASE = {"depth": 4, "width": 16, "batch_size": 4}
GRID = {"init": ["kaiming", "normal"], "norm": ["batchnorm", "none"]}


def write_sweep(tmp_path, name="s", seeds=(0, 1)):
    return sweep_file(tmp_path, name, base=BASE, grid=GRID, seeds=seeds)


def test_missing_ray_is_a_clean_error(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    r = cli("sweep", write_sweep(tmp_path), "--backend", "ray", "--out", tmp_path / "out", "--no-progress")
    assert r.exit_code == 2
    assert r.output == (
        "Error: --backend ray: Ray is not installed; install it with: "
        'pip install -c constraints.txt -e ".[ray]" (in your bncli checkout)\n'
    )
    assert not (tmp_path / "out").exists()


def test_address_needs_the_ray_backend(cli, tmp_path):
    r = cli("sweep", write_sweep(tmp_path), "--address", "auto", "--out", tmp_path / "out", "--no-progress")
    assert r.exit_code == 2 and r.output == "Error: --address: only with --backend ray\n"


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def ray_opts(**kw):
    from bncli.ray_backend import RayOptions

    return RayOptions(**kw)


def test_ray_gives_the_same_files_as_local(ray_session, tmp_path, cli):
    path = write_sweep(tmp_path)
    local = sweeps.run(sweeps.plan(path, tmp_path / "local"))
    r = cli("sweep", path, "--backend", "ray", "--out", tmp_path / "ray", "--no-progress")
    assert r.exit_code == 0, r.output
    a, b = file_bytes(local.dir), file_bytes(tmp_path / "ray" / "sweeps" / "s")
    assert len(a) == 8 * 2 + 3  # layers.csv and config.yaml per run, sweep.yaml, summary.csv, aggregate.csv
    assert a == b
    meta = yaml.safe_load((tmp_path / "ray/sweeps/s/runs/init=normal,norm=none,seed=0/meta.json").read_text())
    assert meta["status"] in ("ok", "diverged") and meta["error"] is None


def test_a_task_that_raises_or_dies_is_recorded_failed(ray_session, tmp_path, monkeypatch):
    from bncli import ray_backend

    real = ray_backend.task

    def flaky(study, cfg, threads):  # defined here, so Ray ships it by value
        name = f"init={cfg.init},norm={cfg.norm},seed={cfg.seed}"
        if name == "init=normal,norm=none,seed=1":
            raise RuntimeError("boom")
        if name == "init=kaiming,norm=none,seed=0":
            os._exit(3)  # the worker process dies
        return real(study, cfg, threads)

    monkeypatch.setattr(ray_backend, "task", flaky)
    out = sweeps.run(sweeps.plan(write_sweep(tmp_path), tmp_path / "out"), ray=ray_opts())
    assert out.failed == 2 and not out.stopped
    assert out.errors["init=normal,norm=none,seed=1"] == "RuntimeError: boom"
    assert "init=kaiming,norm=none,seed=0" in out.errors
    assert sum(s in ("ok", "diverged") for s in out.status.values()) == 6
    meta = yaml.safe_load((out.dir / "runs/init=normal,norm=none,seed=1/meta.json").read_text())
    assert meta["status"] == "failed" and meta["error"] == "RuntimeError: boom"
    summary = results.read_table(out.dir / "summary.csv")
    assert (summary.groupby("run")["status"].first() == "failed").sum() == 2


def test_fail_fast_stops_and_cancels(ray_session, tmp_path, monkeypatch):
    from bncli import ray_backend

    real = ray_backend.task

    def fail_first(study, cfg, threads):
        if cfg.seed == 0 and cfg.init == "kaiming" and cfg.norm == "batchnorm":
            raise ValueError("first")
        return real(study, cfg, threads)

    monkeypatch.setattr(ray_backend, "task", fail_first)
    out = sweeps.run(sweeps.plan(write_sweep(tmp_path), tmp_path / "out"), fail_fast=True, ray=ray_opts())
    assert out.stopped and out.failed == 1
    assert len(out.status) < 8


def test_resume_across_backends(ray_session, tmp_path, monkeypatch):
    """Half a sweep locally, killed; --resume on Ray ends with the files of an uninterrupted sweep."""
    from bncli import results

    path = write_sweep(tmp_path)
    clean = sweeps.run(sweeps.plan(path, tmp_path / "clean"))
    real, calls = results.compute, []

    def killed_at_fourth(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(results, "compute", killed_at_fourth)
    half = sweeps.run(sweeps.plan(path, tmp_path / "out"))
    assert half.interrupted and sum(s in ("ok", "diverged") for s in half.status.values()) == 3
    monkeypatch.setattr(results, "compute", real)
    done = sweeps.run(sweeps.plan(path, tmp_path / "out"), resume=True, ray=ray_opts())
    assert done.skipped == 3 and not done.interrupted and done.failed == 0
    assert file_bytes(done.dir) == file_bytes(clean.dir)


def test_a_run_that_cannot_fit_on_the_cluster_is_refused_before_any_directory(ray_session, tmp_path):
    from bncli.errors import BncliError

    plan = sweeps.plan(write_sweep(tmp_path), tmp_path / "out")
    with pytest.raises(BncliError, match=r"--cpus-per-run: 10000 is more than the Ray cluster's \d+ CPUs"):
        sweeps.run(plan, ray=ray_opts(cpus_per_run=10_000))
    with pytest.raises(BncliError, match=r"--gpus-per-run: 1 is more than the Ray cluster's 0 GPUs"):
        sweeps.run(plan, ray=ray_opts(gpus_per_run=1))
    assert not (tmp_path / "out").exists()


def _descendants(pid: int) -> set[int]:
    kids = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            kids.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    out, todo = set(), [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            if k not in out:
                out.add(k)
                todo.append(k)
    return out


def _stat(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _started(pid):
    fields = _stat(pid)
    return None if fields is None else fields[19]  # starttime, field 22 of /proc/PID/stat


def _state(pid):
    fields = _stat(pid)
    return None if fields is None else fields[0]


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="reads /proc")
@pytest.mark.parametrize("when", ["running", "starting"])
def test_ray_processes_stop_when_the_driver_is_killed(tmp_path, when):
    """A driver that started its own Ray instance, killed with -9 while its runs run, or while
    ray.init is still starting Ray's processes: Ray's GCS, raylet and agents (which Ray's own
    fate-sharing misses) are gone within seconds."""
    import signal
    import subprocess
    import time

    pytest.importorskip("ray")
    sweep_file(tmp_path, "s", base={"depth": 300_000, "width": 8, "batch_size": 4}, seeds=list(range(4)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bncli", "sweep", "s.yaml", "--backend", "ray", "--out", "out", "--no-progress"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + 60
        if when == "running":
            while time.monotonic() < end and len(_descendants(proc.pid)) < 4:  # GCS, raylet, agents, workers
                time.sleep(0.5)
            time.sleep(3)
        else:  # the moment Ray's first server exists, ray.init has not returned
            while time.monotonic() < end and not any("gcs_server" in _cmdline(p) for p in _descendants(proc.pid)):
                time.sleep(0.05)
        ray_procs = {p: _started(p) for p in _descendants(proc.pid)}  # a pid and its start: reuse is not a survivor
        assert ray_procs, "Ray did not start"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        end = time.monotonic() + 20
        while time.monotonic() < end and any(Path(f"/proc/{p}").exists() for p in ray_procs):
            time.sleep(0.5)
        left = [p for p, start in ray_procs.items() if _started(p) == start and _state(p) not in (None, "Z")]
        assert not left, [_cmdline(p)[:120] for p in left]
    finally:
        proc.kill()
