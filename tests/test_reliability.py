"""Reliability: nothing lost, nothing half-written, no input that crashes or runs code.

Every promise of README "What bncli guarantees" has a test here (the config fuzzing is in
test_fuzz_configs.py). Kills are simulated twice: KeyboardInterrupt raised inside a run, and
real SIGINT/SIGTERM sent to a `python -m bncli` subprocess.
"""

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from helpers import AUTO, all_files, meta_of, run_dirs, sweep_file

from bncli import results
from bncli.errors import RunError

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"depth-study": ["--depth", 6, "--width", 8, "--batch-size", 4], "running-stats": []}
CSV = {"depth-study": "layers.csv", "running-stats": "running_stats.csv"}


def one_line_error(r, code):
    """The shape of every refusal: exit `code`, exactly one line `Error: ...`, no traceback."""
    assert r.exit_code == code, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = r.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert lines[0].isprintable(), ascii(lines[0])  # no escape sequence from a hostile file or name
    assert "Traceback" not in r.output
    return lines[0]


# -- atomic writes ------------------------------------------------------------------------------


def test_atomic_write_replaces_whole_files(tmp_path):
    f = tmp_path / "meta.json"
    results.atomic_write(f, "old\n")
    results.atomic_write(f, "new\n")
    assert f.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["meta.json"]  # no temporary file left beside it


@pytest.mark.parametrize("fail", ["fsync", "replace", "write"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, fail):
    f = tmp_path / "layers.csv"
    results.atomic_write(f, "layer,std\n0,1.0\n")

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    if fail == "write":  # the data itself does not fit: mkstemp's file is half-written, then refused
        real_fdopen = os.fdopen

        class Half:
            def __init__(self, f):
                self.f = f

            def write(self, raw):
                self.f.write(raw[: len(raw) // 2])
                self.f.flush()
                disk_full()

            def __getattr__(self, name):
                return getattr(self.f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

        monkeypatch.setattr(os, "fdopen", lambda fd, mode: Half(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(os, fail, disk_full)
    with pytest.raises(RunError, match=rf"cannot write {f}: No space left on device"):
        results.atomic_write(f, "layer,std\n0,2.0\n1,3.0\n")
    monkeypatch.undo()
    assert f.read_text() == "layer,std\n0,1.0\n"
    assert os.listdir(tmp_path) == ["layers.csv"]


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    f = tmp_path / "meta.json"
    results.atomic_write(f, '{"status": "running"}\n')

    def ctrl_c(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        results.atomic_write(f, '{"status": "ok"}\n')
    monkeypatch.undo()
    assert f.read_text() == '{"status": "running"}\n' and os.listdir(tmp_path) == ["meta.json"]


def test_a_reader_never_sees_a_partial_file(tmp_path):
    f = tmp_path / "summary.csv"
    versions = [("a" * 200_000 + "\n").encode(), ("b" * 300_000 + "\n").encode()]
    results.atomic_write(f, versions[0])
    seen, stop = set(), threading.Event()

    def read():
        while not stop.is_set():
            seen.add(f.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(60):
            results.atomic_write(f, versions[i % 2])
    finally:
        stop.set()
        reader.join()
    assert seen and seen <= set(versions), sorted(len(s) for s in seen - set(versions))


def test_result_files_are_readable_like_any_other_file(tmp_path):
    # mkstemp makes 0600 files: results handed to a colleague must get the umask's mode
    mask = os.umask(0o022)
    os.umask(mask)
    f = tmp_path / "config.yaml"
    results.atomic_write(f, "depth: 3\n")
    assert f.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("study", ["depth-study", "running-stats"])
def test_every_result_file_is_written_atomically(cli, monkeypatch, study):
    written, real = [], results.atomic_write

    def spy(path, data):
        written.append(Path(path).name)
        real(path, data)

    monkeypatch.setattr(results, "atomic_write", spy)
    r = cli(study, *SMALL[study], "--name", "a")
    assert r.exit_code == 0, r.output
    run = cli.out / study / "a"
    assert sorted(os.listdir(run)) == sorted(set(written))  # nothing on disk that bypassed it
    assert written == ["config.yaml", "meta.json", CSV[study], "meta.json"]  # meta.json first and last


# -- run status ---------------------------------------------------------------------------------


@pytest.mark.parametrize("study", ["depth-study", "running-stats"])
def test_meta_says_running_while_the_study_runs_then_the_outcome(cli, monkeypatch, study):
    from bncli import studies

    mod = studies.get(study)
    real, during = mod.run, {}

    def watched(cfg, device, progress=None):
        run = cli.out / study / "a"
        during.update(meta=meta_of(run), files=sorted(os.listdir(run)))
        return real(cfg, device, progress)

    monkeypatch.setattr(mod, "run", watched)
    r = cli(study, *SMALL[study], "--name", "a")
    assert r.exit_code == 0, r.output
    assert during["meta"]["status"] == "running" and during["meta"]["wall_seconds"] is None
    assert during["files"] == ["config.yaml", "meta.json"]  # no result file before the run ends
    after = meta_of(cli.out / study / "a")
    assert after["status"] == "ok" and after["wall_seconds"] > 0 and after["error"] is None


# -- Ctrl-C and SIGTERM -------------------------------------------------------------------------


def test_keyboard_interrupt_at_layer_k_saves_the_layers_done(cli, monkeypatch):
    from bncli.studies.depth import mlp

    real, k = mlp.step, 7

    def ctrl_c_at_layer_k(net, device):
        step, calls = real(net, device), [0]

        def counted(x, w):
            calls[0] += 1
            if calls[0] == k + 1:
                raise KeyboardInterrupt
            return step(x, w)

        return counted

    monkeypatch.setattr(mlp, "step", ctrl_c_at_layer_k)
    r = cli("depth-study", "--depth", 40, "--width", 16, "--name", "cut")
    assert r.exit_code == 130, r.output
    run = cli.out / "depth-study" / "cut"
    assert f"interrupted: partial results saved in {run}" in r.output
    meta = meta_of(run)
    assert meta["status"] == "interrupted" and meta["layers_done"] == k
    cut = pd.read_csv(run / "layers.csv")
    assert cut["layer"].tolist() == list(range(k))
    # the saved layers are the real ones: equal to an uninterrupted run of depth k
    monkeypatch.setattr(mlp, "step", real)
    assert cli("depth-study", "--depth", k, "--width", 16, "--name", "whole").exit_code == 0
    whole = pd.read_csv(cli.out / "depth-study" / "whole" / "layers.csv")
    pd.testing.assert_frame_equal(cut, whole)


def test_keyboard_interrupt_in_running_stats_saves_the_iterations_done(cli, monkeypatch):
    import bncli.studies.running_stats as rs

    real, calls = rs.make_batch, []

    def ctrl_c_at_third(cfg, t, device):
        calls.append(t)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(cfg, t, device)

    monkeypatch.setattr(rs, "make_batch", ctrl_c_at_third)
    r = cli("running-stats", "--iterations", 10, "--name", "cut")
    assert r.exit_code == 130, r.output
    run = cli.out / "running-stats" / "cut"
    assert f"interrupted: partial results saved in {run}" in r.output
    assert meta_of(run)["status"] == "interrupted" and meta_of(run)["iterations_done"] == 2
    table = pd.read_csv(run / "running_stats.csv")
    assert sorted(set(table["iteration"])) == [0, 1] and len(table) == 2 * 5


def _default_sigint():
    # a shell's background job inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt: give the child the default a terminal's process has
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    return subprocess.Popen(
        [sys.executable, *map(str, args)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _wait_for(cond, proc, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"exited {proc.returncode} before the condition held:\n{out}\n{err}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("timed out")


def assert_ok(run):
    assert meta_of(run)["status"] == "ok"


def _signal_when(proc, ready, sig, delay: float, check=lambda: None):
    """Wait until ready(), run check(), let the process go on for `delay` s, send sig, and
    return (out, err) once it exits; a process that hangs is killed, never left behind."""
    try:
        _wait_for(ready, proc)
        check()
        time.sleep(delay)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    return out, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_real_signal_saves_the_layers_done_and_exits_130(tmp_path, sig):
    depth = 100_000  # minutes of work: the signal always lands mid-run
    run = tmp_path / "out" / "depth-study" / "sig"
    proc = _start(
        ["-m", "bncli", "depth-study", "--depth", depth, "--width", 64, "--out", "out", "--name", "sig"], tmp_path
    )
    out, _ = _signal_when(proc, lambda: (run / "meta.json").exists(), sig, 0.5)  # 0.5 s: into the layers
    assert f"interrupted: partial results saved in {Path('out/depth-study/sig')}" in out
    meta = meta_of(run)
    assert meta["status"] == "interrupted"
    table = pd.read_csv(run / "layers.csv")
    assert 0 < len(table) < depth and len(table) == meta["layers_done"]
    assert table["layer"].tolist() == list(range(len(table))) and table["std"].notna().all()
    assert [p.name for p in run.iterdir()] and not list(run.glob(".*.tmp"))


SWEEP_SLOW = """
import runpy, time
from bncli.studies.depth import mlp

real = mlp.step


def slow(net, device):  # long runs take 20 ms a layer: the SIGINT lands mid-run on any machine
    step = real(net, device)
    return (lambda x, w: (time.sleep(0.02), step(x, w))[1]) if net.depth > 100 else step


mlp.step = slow
runpy.run_module("bncli", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_a_sweep_keeps_what_finished_and_resume_completes_it(tmp_path, sig):
    """`python -m bncli sweep`, a signal mid-way through its second run, then `--resume`."""
    sweep_file(tmp_path, "s", base={"width": 8, "batch_size": 4}, grid={"depth": [3, 300]})
    done, cut = "depth=3,seed=0", "depth=300,seed=0"
    d = tmp_path / "out" / "sweeps" / "s"
    args = ["sweep", "s.yaml", "--out", "out", "--no-progress"]
    proc = _start(["-c", SWEEP_SLOW, *args], tmp_path)
    out, _ = _signal_when(
        proc, lambda: (d / "runs" / cut / "meta.json").exists(), sig, 0.3, check=lambda: assert_ok(d / "runs" / done)
    )
    assert "interrupted: 1 of 2 runs finished" in out and "--resume" in out
    assert meta_of(d / "runs" / done)["status"] == "ok"  # kept
    partial = meta_of(d / "runs" / cut)
    assert partial["status"] == "interrupted" and 0 < partial["layers_done"] < 300
    summary = pd.read_csv(d / "summary.csv")
    assert set(summary["run"]) == {done} and len(summary) == 3  # what finished, and only that
    kept = (d / "runs" / done / "meta.json").read_text()
    if sig == signal.SIGTERM:
        return  # resuming is the same as after SIGINT

    r = subprocess.run(
        [sys.executable, "-m", "bncli", *args, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "resumed: 1 of 2 runs was already done" in r.stdout
    assert (d / "runs" / done / "meta.json").read_text() == kept  # not redone
    assert meta_of(d / "runs" / cut)["status"] == "ok"
    assert len(pd.read_csv(d / "runs" / cut / "layers.csv")) == 300
    summary = pd.read_csv(d / "summary.csv")
    assert set(summary["run"]) == {done, cut} and len(summary) == 303


# -- no overwrites ------------------------------------------------------------------------------


@pytest.mark.parametrize("study", ["depth-study", "running-stats"])
def test_a_taken_name_is_refused_and_the_run_is_untouched(cli, study):
    assert cli(study, *SMALL[study], "--name", "x").exit_code == 0
    run = cli.out / study / "x"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    r = cli(study, *SMALL[study], "--seed", 1, "--name", "x")
    line = one_line_error(r, 2)
    assert line.startswith(f"Error: --name: {run} already exists") and "choose another --name" in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert run_dirs(cli.out, study) == [run]


def test_the_apis_taken_name_error_names_its_argument_not_a_flag(tmp_path):
    """The API has no --name: its refusals name the `name` and `out` arguments (the CLI: the flags)."""
    import bncli

    r = bncli.depth_study(depth=2, width=4, batch_size=2, out=tmp_path, name="x")
    for again in (
        lambda: bncli.depth_study(depth=2, width=4, batch_size=2, out=tmp_path, name="x"),
        lambda: bncli.depth_study(depth=2, width=4, batch_size=2).save(tmp_path, name="x"),
    ):
        with pytest.raises(results.BncliError) as e:
            again()
        assert str(e.value) == f"name: {r.dir} already exists; bncli never overwrites a run, choose another name"
    with pytest.raises(results.BncliError, match="^out: 'a/../b' must not contain '..'"):
        bncli.depth_study(depth=2, width=4, out="a/../b")
    f = tmp_path / "s.yaml"
    f.write_text("study: depth-study\nbase: {depth: 2, width: 4, batch_size: 2}\n")
    bncli.sweep(f, tmp_path)
    with pytest.raises(results.BncliError, match="add resume=True to finish that sweep, or give another name$"):
        bncli.sweep(f, tmp_path)


def test_a_taken_sweep_name_suggests_resume(cli, tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("study: depth-study\nbase: {depth: 2, width: 4, batch_size: 2}\nseeds: [0]\n")
    assert cli("sweep", f, "--out", cli.out, "--no-progress").exit_code == 0
    summary = (cli.out / "sweeps" / "s" / "summary.csv").read_bytes()
    mask = os.umask(0o022)
    os.umask(mask)
    made = [p for p in (cli.out / "sweeps" / "s").rglob("*") if p.is_file()]
    assert {p.suffix for p in made} >= {".csv", ".json", ".yaml", ".png"}
    assert {oct(p.stat().st_mode & 0o777) for p in made} == {oct(0o666 & ~mask)}  # plots too
    assert not [p for p in made if p.name.endswith(".tmp")]
    line = one_line_error(cli("sweep", f, "--out", cli.out, "--no-progress"), 2)
    assert "already exists" in line and "--resume" in line
    assert (cli.out / "sweeps" / "s" / "summary.csv").read_bytes() == summary


# -- unwritable output --------------------------------------------------------------------------


@pytest.mark.parametrize("study", ["depth-study", "running-stats"])
def test_output_under_a_file_is_a_clean_error(cli, tmp_path, study):
    # tests run as root, where chmod cannot stop a write: a regular file in the path can
    blocker = tmp_path / "somefile"
    blocker.write_text("not a directory\n")
    line = one_line_error(cli(study, *SMALL[study], "--out", blocker / "sub"), 1)
    assert f"cannot create {blocker / 'sub' / study}" in line and "Not a directory" in line
    line = one_line_error(cli(study, *SMALL[study], "--out", blocker), 1)
    assert f"--out: {blocker} exists and is not a directory" in line
    assert blocker.read_text() == "not a directory\n" and all_files(tmp_path) == ["somefile"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores chmod: see the file-in-the-way and disk-full tests")
def test_a_read_only_directory_is_a_clean_error(cli, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        line = one_line_error(cli("depth-study", *SMALL["depth-study"], "--out", ro), 1)
        assert f"cannot create {ro / 'depth-study'}" in line and "Permission denied" in line
    finally:
        ro.chmod(0o700)


def _fd_path(fd):
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to name a file descriptor")
@pytest.mark.parametrize("study", ["depth-study", "running-stats"])
def test_disk_full_on_the_results_is_a_clean_error_and_the_run_says_failed(cli, monkeypatch, study):
    real_fsync = os.fsync

    def full_for_the_csv(fd):
        if f".{CSV[study]}." in _fd_path(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_for_the_csv)
    r = cli(study, *SMALL[study], "--name", "full")
    run = cli.out / study / "full"
    line = one_line_error(r, 1)
    assert line == f"Error: cannot write {run / CSV[study]}: No space left on device"
    assert sorted(os.listdir(run)) == ["config.yaml", "meta.json"]  # no CSV, no temporary file
    meta = meta_of(run)
    assert meta["status"] == "failed" and "No space left on device" in meta["error"]


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to name a file descriptor")
def test_disk_full_before_the_run_leaves_no_run_directory(cli, monkeypatch):
    real_fsync = os.fsync

    def full(fd):
        if ".config.yaml." in _fd_path(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    line = one_line_error(cli("depth-study", *SMALL["depth-study"], "--name", "full"), 1)
    assert "cannot write" in line and "config.yaml: No space left on device" in line
    assert run_dirs(cli.out, "depth-study") == []


# -- out of memory ------------------------------------------------------------------------------

OOMS = [
    lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB"),
    lambda: RuntimeError(
        "[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: "
        "can't allocate memory: you tried to allocate 68719476736 bytes."
    ),
    lambda: MemoryError(),
]


@pytest.mark.parametrize("make_error", OOMS, ids=["cuda", "cpu", "python"])
@pytest.mark.parametrize(
    "study,sizes",
    [
        ("depth-study", "depth 6, width 8, batch_size 4"),
        ("running-stats", "batch_size 3, num_features 5, feature_shape 1"),
    ],
)
def test_out_of_memory_names_the_sizes_and_records_failed(cli, monkeypatch, study, sizes, make_error):
    from bncli import studies

    def oom(cfg, device, progress=None):
        raise make_error()

    monkeypatch.setattr(studies.get(study), "run", oom)
    line = one_line_error(cli(study, *SMALL[study], "--name", "oom"), 1)
    run = cli.out / study / "oom"
    assert line.startswith(f"Error: out of memory on {AUTO}: {sizes}")
    assert "try smaller values" in line and str(run) in line
    meta = meta_of(run)
    assert meta["status"] == "failed" and meta["error"].split(":")[0] == type(make_error()).__name__
    assert sorted(os.listdir(run)) == ["config.yaml", "meta.json"]


# -- limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,says",
    [
        (["depth-study", "--width", 10**6], "width 1000000"),
        (["depth-study", "--depth", 10**12, "--width", 8], "depth 1000000000000"),
        (["depth-study", "--batch-size", 10**13], "batch_size 10000000000000"),
        (["depth-study", "--arch", "transformer", "--tokens", 10**6, "--width", 8, "--heads", 1], "tokens 1000000"),
        (["running-stats", "--batch-size", 10**12], "batch_size 1000000000000"),
        (
            ["running-stats", "--dims", 3, "--feature-shape", "100000,100000,100000"],
            "feature_shape 100000,100000,100000",
        ),
        (["running-stats", "--iterations", 10**12], "iterations 1000000000000"),
    ],
)
def test_sizes_that_cannot_fit_are_refused_before_any_allocation(cli, monkeypatch, args, says):
    def no_allocation(*a, **k):
        raise AssertionError("allocated before refusing")

    for fn in ("empty", "zeros", "ones", "randn", "arange", "full"):
        monkeypatch.setattr(torch, fn, no_allocation)
    line = one_line_error(cli(*args), 2)
    assert line.startswith("Error: too large: ") and says in line
    assert f"GiB but {AUTO} has" in line and "use a smaller --" in line
    assert not cli.out.exists()


# -- no code from configs -----------------------------------------------------------------------

PAYLOADS = [
    'depth: !!python/object/apply:os.system ["touch {m}"]\n',
    '!!python/object/apply:os.system ["touch {m}"]\n',
    'depth: !!python/object/apply:subprocess.check_call [["touch", "{m}"]]\n',
    "width: !!python/object/apply:builtins.exec [\"open('{m}', 'w').close()\"]\n",
    'depth: !!python/object/new:subprocess.Popen [["touch", "{m}"]]\n',
    '? !!python/object/apply:os.system ["touch {m}"]\n: 1\n',
    "depth: !!python/name:os.system\n",
    "depth: !!python/module:os\n",
    "depth: !!python/object:pathlib.PurePosixPath {{}}\n",
    "depth: !!python/tuple [1, 2]\n",
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=[p.split("!!")[1].split()[0] for p in PAYLOADS])
@pytest.mark.parametrize("study", ["depth-study", "running-stats", "sweep"])
def test_python_tags_are_refused_and_never_run(cli, tmp_path, payload, study):
    marker = tmp_path / "pwned"
    text = payload.format(m=marker)
    if "/apply:" in text:  # the payload is live: unsafe YAML runs it
        yaml.unsafe_load(text)
        assert marker.exists()
        marker.unlink()
    f = tmp_path / "evil.yaml"
    if study == "sweep":
        f.write_text("study: depth-study\nbase:\n  " + text.replace("\n", "\n  ").rstrip() + "\nseeds: [0]\n")
        r = cli("sweep", f, "--out", cli.out, "--no-progress")
    else:
        f.write_text(text)
        r = cli(study, "--config", f)
    line = one_line_error(r, 2)
    assert "python/" in line and str(f) in line
    assert not marker.exists()
    assert not cli.out.exists()


def test_yaml_is_only_ever_safe_loaded():
    sources = "\n".join(p.read_text() for p in (ROOT / "bncli").rglob("*.py"))
    for unsafe in (
        "yaml.load(",
        "unsafe_load",
        "full_load",
        "yaml.Loader",
        "yaml.CLoader",
        "FullLoader",
        "UnsafeLoader",
    ):
        assert unsafe not in sources, unsafe
    # the one loader, and its libyaml twin for saved files: both safe
    assert "class _Loader(_Keys, yaml.SafeLoader)" in sources and "class _Saved(_Keys, yaml.CSafeLoader)" in sources


# -- hostile names ------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "../escape",
    "..",
    ".",
    "a/b",
    "/tmp/abs",
    "a/../../b",
    "x/..",
    "..\\x",
    "",
    " ",
    "-",
    ".hidden",
    "a\x00b",
    "a\nb",
    "ab\n",
    "x" * 201,
    "~root",
    "$HOME",
    "*",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=[ascii(n)[:30] for n in HOSTILE_NAMES])
def test_hostile_names_cannot_escape_the_output_directory(cli, tmp_path, name):
    out = tmp_path / "a" / "b" / "results"
    line = one_line_error(cli("depth-study", *SMALL["depth-study"], "--out", out, "--name", name), 2)
    assert line.startswith("Error: --name: ") and "is not a valid name" in line
    assert all_files(tmp_path) == []


@pytest.mark.parametrize("out", ["../results", "results/../../x", "a/../b", "./x/../../y"])
def test_hostile_out_is_refused(cli, tmp_path, monkeypatch, out):
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    line = one_line_error(cli("depth-study", *SMALL["depth-study"], "--out", out), 2)
    assert line.startswith("Error: --out: ") and "'..'" in line
    assert all_files(tmp_path) == ["deep", "deep/work"]


def test_a_nul_in_out_is_a_clean_error(cli, tmp_path):
    r = cli("depth-study", *SMALL["depth-study"], "--out", f"{tmp_path}/a\x00b")
    assert "--out" in one_line_error(r, 2)
    assert all_files(tmp_path) == []


def test_a_hostile_sweep_name_is_refused(cli, tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("study: depth-study\nname: ../../escape\nseeds: [0]\n")
    line = one_line_error(cli("sweep", f, "--out", cli.out, "--no-progress"), 2)
    assert "is not a valid name" in line
    line = one_line_error(cli("sweep", f, "--out", cli.out, "--name", "a/b", "--no-progress"), 2)
    assert "--name: 'a/b' is not a valid name" in line
    assert all_files(tmp_path) == ["s.yaml"]


# -- determinism --------------------------------------------------------------------------------

DETERMINISM = [
    ("depth-study", ["--depth", 30, "--width", 24, "--init", "xavier", "--norm", "batchnorm"]),
    ("depth-study", ["--depth", 40, "--width", 16, "--init", "normal", "--norm", "none"]),  # diverges
    ("running-stats", ["--input", "randn", "--dims", 2, "--iterations", 4]),
    ("running-stats", ["--input", "randn", "--momentum", "none", "--dtype", "float64"]),
]


@pytest.mark.parametrize("study,args", DETERMINISM, ids=[f"{s}-{i}" for i, (s, _) in enumerate(DETERMINISM)])
def test_same_config_and_seed_give_byte_identical_csvs(cli, study, args):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        assert cli(study, *args, "--seed", seed, "--name", name).exit_code == 0
    a, b, c = (cli.out / study / n for n in "abc")
    assert (a / CSV[study]).read_bytes() == (b / CSV[study]).read_bytes()
    assert (a / CSV[study]).read_bytes() != (c / CSV[study]).read_bytes()  # the seed does matter
    # the seed is on record twice, and the saved config alone reproduces the run
    assert meta_of(a)["seed"] == 7 and yaml.safe_load((a / "config.yaml").read_text())["seed"] == 7
    assert cli(study, "--config", a / "config.yaml", "--name", "again").exit_code == 0
    assert (cli.out / study / "again" / CSV[study]).read_bytes() == (a / CSV[study]).read_bytes()


@pytest.mark.parametrize(
    "args",
    [
        ["depth-study", "--init", "\x1b[2J\x1b[31mkaiming"],
        ["depth-study", "--config", "\x1b]0;pwned\x07.yaml"],
        ["running-stats", "--momentum", "\x1b[31m0.3"],
        ["depth-study", "--name", "\x1b[31mred"],
    ],
    ids=["flag-value", "config-path", "momentum", "name"],
)
def test_terminal_escapes_in_input_never_reach_the_terminal(cli, args):
    line = one_line_error(cli(*args), 2)  # isprintable: the escape is shown as \x1b, not sent
    assert "\\x1b" in line


# -- numbers at the ends of their ranges --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["depth-study", "--init", "normal", "--init-std", "1e200"],
        ["depth-study", "--init", "trunc_normal", "--init-std", "1e200"],
        ["depth-study", "--init", "xavier", "--init-gain", "1e200"],
        ["depth-study", "--init", "lecun_normal", "--init-gain", "1e200"],
        ["depth-study", "--activation", "leaky_relu", "--negative-slope", "1e6"],
        ["depth-study", "--residual", "1e200"],
        ["depth-study", "--init", "normal", "--init-std", "1e-300"],
        ["depth-study", "--arch", "resnet", "--blocks", 1, "--channels", 4, "--image-size", 4, "--residual", "1e200"],
        ["convergence", "--input-std", "1e200"],
        ["convergence", "--input-std", "1e-320"],
        ["convergence", "--input-mean", "1e308", "--dtype", "float64"],
    ],
)
def test_any_accepted_number_runs_overflow_is_a_result(cli, args):
    """Overflow in the network is a divergence (or nan) in the results, not an error: the run
    is ok or diverged, and its files are there."""
    small = ["--depth", 4, "--width", 8] if args[0] == "depth-study" and "resnet" not in args else []
    small += ["--iterations", 5] if args[0] == "convergence" else []
    r = cli(*args, *small, "--device", "cpu", "--name", "n")
    assert r.exit_code == 0, r.output
    assert meta_of(cli.out / args[0] / "n")["status"] in ("ok", "diverged")


@pytest.mark.parametrize(
    "args,says",
    [
        (["--activation", "leaky_relu", "--negative-slope", "1e200"], "--negative-slope: Input should be less than"),
        (["--norm", "groupnorm", "--width", 2, "--groups", 2, "--batch-size", 1], "each of the 2 groups must hold"),
        (["--norm", "layernorm", "--width", 1, "--batch-size", 1], "batch_size x width must be at least 2"),
    ],
)
def test_numbers_that_cannot_run_are_refused_up_front(cli, args, says):
    line = one_line_error(cli("depth-study", *args), 2)
    assert says in line and not cli.out.exists()


# -- bounded work, and stdout's failures --------------------------------------------------------


def test_files_that_are_not_regular_or_too_large_are_one_line(cli, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "is not a regular file" in one_line_error(cli("depth-study", "--config", fifo), 2)
    assert "is not a regular file" in one_line_error(cli("depth-study", "--config", "/dev/zero"), 2)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * 2**20 + "\n")
    assert "too large for a config" in one_line_error(cli("depth-study", "--config", big), 2)


def test_a_huge_grid_is_counted_not_built(cli, tmp_path):
    keys = ["depth", "width", "batch_size", "groups", "init_std", "init_gain", "negative_slope", "residual"]
    path = sweep_file(tmp_path, grid={k: list(range(1, 11)) for k in keys})  # 10^8 points: refused, not built
    line = one_line_error(cli("sweep", path, "--out", tmp_path / "o", "--no-progress"), 2)
    assert "10 x 10 x 10 x 10 x 10 x 10 x 10 x 10 x 1 = 100000000 runs" in line
    path = sweep_file(
        tmp_path, "g", grid={"depth": list(range(1, 101)), "width": list(range(1, 101))}, seeds=list(range(11))
    )
    line = one_line_error(cli("sweep", path, "--out", tmp_path / "o", "--no-progress"), 2)
    assert "100 x 100 x 11 = 110000 runs; a sweep has at most 100000" in line
    assert not (tmp_path / "o").exists()
    path = sweep_file(tmp_path, "w", base={"depth": 2, "width": 4, "batch_size": 2})
    assert "--workers: at most" in one_line_error(cli("sweep", path, "--workers", 10_000, "--no-progress"), 2)


def test_long_running_stats_show_a_screenful_and_keep_every_value(cli):
    r = cli("running-stats", "--iterations", 200, "--name", "long")
    assert r.exit_code == 0, r.output
    assert "showing 21 of 200 iterations (every 10-th and the last)" in r.output
    assert (
        "torch matches the update formula on all 2000 values (running_mean and running_var, 5 channels x 200"
        in r.output
    )
    assert len(pd.read_csv(cli.out / "running-stats" / "long" / "running_stats.csv")) == 1000


@pytest.mark.parametrize("how,code", [("| head -1", 0), ("> /dev/full", 1), ("| cat", 0)])
def test_stdout_failures_never_lose_results_or_print_a_traceback(tmp_path, how, code):
    env = {**os.environ, "PYTHONIOENCODING": "ascii"} if how == "| cat" else dict(os.environ)
    cmd = f"set -o pipefail; {sys.executable} -m bncli depth-study --depth 30 --width 16 --out out --name s {how}"
    r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) <= 1, r.stderr
    if code:
        assert r.stderr.startswith("Error: cannot write the output: No space left on device")
    assert meta_of(tmp_path / "out" / "depth-study" / "s")["status"] == "ok"


def test_a_closed_stdout_makes_and_saves_the_run_and_fails_in_one_line(tmp_path):
    """`>&-`: Python has no sys.stdout at all. The command runs and saves as ever; the output it
    cannot print is one line on stderr and exit 1; and a saved result shown to a closed or full
    stdout is never called damaged (the failure is the output's, not the files')."""
    import bncli

    bncli.sweep(study="depth-study", base={"depth": 2, "width": 4, "batch_size": 2}, name="s", out=tmp_path / "out")
    py = f"{sys.executable} -m bncli"
    cases = [
        (f"{py} depth-study --depth 3 --width 4 --batch-size 2 --out out --name q -q >&-", "stdout is closed"),
        (f"{py} show out/sweeps/s >&-", "stdout is closed"),
        (f"{py} show out/sweeps/s --format csv > /dev/full", "No space left on device"),
        (f"{py} --help >&-", "stdout is closed"),
    ]
    pipe = subprocess.PIPE
    procs = [  # side by side: each pays the interpreter's start and imports
        (cmd, says, subprocess.Popen(["bash", "-c", cmd], cwd=tmp_path, stdout=pipe, stderr=pipe, text=True))
        for cmd, says in cases
    ]
    for cmd, says, proc in procs:
        err = proc.communicate(timeout=120)[1]
        assert proc.returncode == 1, (cmd, err)
        assert err == f"Error: cannot write the output: {says} (what the command saved is on disk)\n", (cmd, err)
    assert meta_of(tmp_path / "out" / "depth-study" / "q")["status"] == "ok"


# -- a second signal, an early one, a parent that dies ------------------------------------------


@pytest.mark.parametrize("gap", [0.05, 0.3])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_never_loses_the_layers_done(tmp_path, gap, sig):
    """Ctrl-C (or SIGTERM) twice in quick succession: the second lands while the first is saved."""
    run = tmp_path / "out" / "depth-study" / "sig"
    proc = _start(
        ["-c", SWEEP_SLOW, "depth-study", "--depth", 5000, "--width", 16, "--out", "out", "--name", "sig"], tmp_path
    )
    try:
        _wait_for(lambda: (run / "meta.json").exists(), proc)
        time.sleep(0.5)
        proc.send_signal(sig)
        time.sleep(gap)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, (out, err)
    meta = meta_of(run)
    table = pd.read_csv(run / "layers.csv")
    assert meta["status"] == "interrupted" and 0 < len(table) == meta["layers_done"]


def test_an_interrupt_before_the_first_file_leaves_no_directory(cli, monkeypatch):
    from bncli import results

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(results, "base_meta", ctrl_c)
    r = cli("depth-study", *SMALL["depth-study"], "--name", "early")
    assert r.exit_code == 130
    assert not (cli.out / "depth-study" / "early").exists()  # the name is free again


def test_an_interrupt_while_aggregating_says_so_and_resume_finishes(cli, tmp_path, monkeypatch):
    from bncli import sweeps

    path = sweep_file(tmp_path, base={"depth": 3, "width": 8, "batch_size": 4}, seeds=[0, 1])
    real = sweeps.aggregate

    def ctrl_c(plan):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweeps, "aggregate", ctrl_c)
    r = cli("sweep", path, "--out", tmp_path / "o", "--no-progress")
    assert r.exit_code == 130 and "every finished run is kept; rerun with --resume" in r.output
    monkeypatch.setattr(sweeps, "aggregate", real)
    r = cli("sweep", path, "--out", tmp_path / "o", "--resume", "--no-progress")
    assert r.exit_code == 0 and "resumed: 2 of 2 runs were already done" in r.output
    assert (tmp_path / "o" / "sweeps" / "s" / "aggregate.csv").exists()


def test_pool_workers_stop_when_their_parent_is_killed(tmp_path):
    sweep_file(tmp_path, "s", base={"width": 8, "batch_size": 4, "depth": 400}, seeds=list(range(8)))
    d = tmp_path / "out" / "sweeps" / "s"
    proc = _start(["-c", SWEEP_SLOW, "sweep", "s.yaml", "--out", "out", "--workers", 2, "--no-progress"], tmp_path)
    try:
        _wait_for(lambda: (d / "runs").is_dir() and len(_children(proc.pid)) >= 2, proc)
        time.sleep(1.0)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        end = time.monotonic() + 15
        while time.monotonic() < end and any(_alive(p) for p in workers):
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers), workers
    finally:
        proc.kill()


def _children(pid: int) -> list[int]:
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid) and "python" in fields.get("Name", ""):
            out.append(int(status.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "status").read_text().split("State:\t", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# -- damaged results, names and lines that stay in bounds ---------------------------------------


def _damage_empty_csv(run):
    (run / "layers.csv").write_text("")


def _damage_text_in_numbers(run):
    (run / "layers.csv").write_text("layer,mean\n0,abc\n")


def _damage_meta_types(run):
    (run / "meta.json").write_text('{"study": "depth-study", "status": 5, "diverged_at": "x"}')


def _damage_dir_for_file(run):
    (run / "layers.csv").unlink()
    (run / "layers.csv").mkdir()


@pytest.mark.parametrize(
    "damage", [_damage_empty_csv, _damage_text_in_numbers, _damage_meta_types, _damage_dir_for_file]
)
def test_damaged_results_are_one_line_in_show_and_plot(cli, damage):
    assert cli("depth-study", *SMALL["depth-study"], "--name", "d").exit_code == 0
    run = cli.out / "depth-study" / "d"
    damage(run)
    for command in ("show",) if damage is _damage_meta_types else ("show", "plot"):  # plot needs no meta
        line = one_line_error(cli(command, run), 2)
        assert "damaged or incomplete" in line and str(run) in line or "no finite statistic to plot" in line


def test_plot_never_replaces_a_file_by_default(cli):
    assert cli("convergence", "--iterations", 10, "--name", "c").exit_code == 0
    run = cli.out / "convergence" / "c"
    own = (run / "convergence.png").read_bytes()
    for k in (2, 3):
        r = cli("plot", run)
        assert r.exit_code == 0 and f"convergence-{k}.png" in r.output
    assert (run / "convergence.png").read_bytes() == own


def test_generated_names_stay_within_file_name_limits(cli, tmp_path):
    momenta = ",".join(f"0.{i:03d}" for i in range(1, 60))
    r = cli("convergence", "--momentum", momenta, "--iterations", 3)
    assert r.exit_code == 0, r.output
    (run,) = run_dirs(cli.out, "convergence")
    assert len(run.name) <= 120
    grid = {
        "depth": [2],
        "width": [4],
        "batch_size": [2],
        "norm": ["none"],
        "init": ["kaiming_uniform"],
        "activation": ["leaky_relu"],
        "negative_slope": [0.01],
        "order": ["linear-norm-act"],
        "bn_mode": ["train"],
        "dtype": ["float32"],
        "device": ["cpu"],
        "init_gain": [1.0],
        "init_std": [1.0],
        "residual": [0.0],
        "groups": [2],
        "channels": [4],
        "kernel_size": [3, 5],
    }
    path = sweep_file(tmp_path, grid=grid)  # run names of over 200 characters
    r = cli("sweep", path, "--out", tmp_path / "o", "--no-progress")
    assert r.exit_code == 0, r.output
    assert all(len(p.name) <= 200 for p in (tmp_path / "o" / "sweeps" / "s" / "runs").iterdir())


def test_error_lines_are_bounded_and_paths_printed_plainly(cli, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("x" * 1_000_000 + ": 1\n")
    line = one_line_error(cli("depth-study", "--config", f), 2)
    assert len(line) < 1200
    out = tmp_path / "out\x1b[31m"
    r = cli("depth-study", *SMALL["depth-study"], "--out", out, "--name", "e")
    assert r.exit_code == 0 and "\x1b" not in r.output and "results: " in r.output


def test_a_sweep_file_that_is_not_a_mapping_and_a_sweep_whose_runs_all_failed(cli, tmp_path, monkeypatch):
    f = tmp_path / "l.yaml"
    f.write_text("- 1\n- 2\n")
    assert "a sweep file is a mapping of study, name, base, grid and seeds, got a list" in one_line_error(
        cli("sweep", f, "--out", tmp_path / "o", "--no-progress"), 2
    )
    import bncli.studies.depth as depth

    def boom(cfg, device, progress=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(depth, "run", boom)
    path = sweep_file(tmp_path, base={"depth": 3, "width": 4, "batch_size": 2})
    assert cli("sweep", path, "--out", tmp_path / "o", "--no-progress").exit_code == 1
    line = one_line_error(cli("plot", tmp_path / "o" / "sweeps" / "s"), 2)
    assert "no finite statistic to plot" in line


def test_ray_options_that_cannot_work_are_refused_up_front(cli, tmp_path):
    path = sweep_file(tmp_path, base={"depth": 2, "width": 4, "batch_size": 2})
    for flag in ("--cpus-per-run", "--gpus-per-run"):
        line = one_line_error(cli("sweep", path, "--backend", "ray", flag, "inf", "--out", tmp_path / "o"), 2)
        assert f"{flag}: must be a finite number" in line
    assert not (tmp_path / "o").exists()


def test_workers_side_by_side_must_fit_together(cli, tmp_path, monkeypatch):
    import bncli.studies.depth as depth
    from bncli.runtime import capacity

    path = sweep_file(tmp_path, base={"depth": 2, "width": 4, "batch_size": 2}, seeds=[0, 1])
    half = int(0.6 * capacity(torch.device("cpu")))  # each run fits alone, two do not
    monkeypatch.setattr(depth, "estimate_bytes", lambda cfg: half)
    monkeypatch.setattr(depth, "preflight", lambda cfg: torch.device("cpu"))
    monkeypatch.setattr("bncli.sweeps._cpus", lambda: 2)
    line = one_line_error(cli("sweep", path, "--workers", 2, "--out", tmp_path / "o", "--no-progress"), 2)
    assert "too large: 2 runs at once (--workers 2)" in line and "use fewer --workers" in line
    assert not (tmp_path / "o").exists()


SLOW_WRITES = """
import runpy, time
from pathlib import Path
from bncli import results

real = results.atomic_write


def slow(path, data):  # the CSV's write takes a second: the signal lands in the final writes
    if Path(path).name == "layers.csv":
        Path("writing").touch()
        time.sleep(1.0)
    return real(path, data)


results.atomic_write = slow
runpy.run_module("bncli", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_the_final_writes_keeps_the_finished_run(tmp_path, sig):
    run = tmp_path / "out" / "depth-study" / "w"
    proc = _start(
        ["-c", SLOW_WRITES, "depth-study", "--depth", 10, "--width", 8, "--out", "out", "--name", "w"], tmp_path
    )
    out, err = _signal_when(proc, lambda: (tmp_path / "writing").exists(), sig, 0.2)
    assert f"interrupted while saving: the finished run is saved in {Path('out/depth-study/w')}" in out
    assert meta_of(run)["status"] == "ok" and len(pd.read_csv(run / "layers.csv")) == 10
    assert not list(run.glob(".*.tmp"))


SLOW_START = """
import runpy, time
from pathlib import Path
from bncli import results

real = results.base_meta


def slow(*a, **k):  # the run directory exists, its first file does not: the signal lands here
    Path("starting").touch()
    time.sleep(2.0)
    return real(*a, **k)


results.base_meta = slow
runpy.run_module("bncli", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_before_the_first_write_says_nothing_was_saved(tmp_path, sig):
    proc = _start(
        ["-c", SLOW_START, "depth-study", "--depth", 5, "--width", 8, "--out", "out", "--name", "early"], tmp_path
    )
    out, err = _signal_when(proc, lambda: (tmp_path / "starting").exists(), sig, 0.2)
    assert "interrupted before the run started: nothing was saved" in out
    assert not (tmp_path / "out" / "depth-study" / "early").exists()  # the name is free


def test_a_path_over_the_systems_limit_and_a_summary_missing_its_grid_key_are_one_line(cli, tmp_path):
    long = tmp_path / ("x" * 300)
    assert "File name too long" in one_line_error(cli("depth-study", *SMALL["depth-study"], "--out", long), 1)
    path = sweep_file(tmp_path, base={"depth": 3, "width": 4, "batch_size": 2}, grid={"init": ["kaiming", "xavier"]})
    assert cli("sweep", path, "--out", tmp_path / "o", "--no-progress").exit_code == 0
    d = tmp_path / "o" / "sweeps" / "s"
    summary = pd.read_csv(d / "summary.csv").drop(columns=["init"])
    summary.to_csv(d / "summary.csv", index=False)
    for command in ("show", "plot"):
        assert "damaged or incomplete" in one_line_error(cli(command, d), 2)


@pytest.mark.parametrize("where", ["run", "sweep"])
def test_a_ctrl_c_while_the_report_is_printed_says_the_results_are_saved(cli, tmp_path, monkeypatch, where):
    """A Ctrl-C after the work is saved, while its table is printed (outside the study's own
    handling), used to reach typer, which exits 130 printing nothing."""
    from bncli import cli as cli_module

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    if where == "run":
        monkeypatch.setattr(cli_module, "_streams", ctrl_c)
        r = cli("depth-study", *SMALL["depth-study"], "--name", "late")
        saved = cli.out / "depth-study" / "late"
    else:
        monkeypatch.setattr(cli_module, "_report_sweep", ctrl_c)
        f = sweep_file(tmp_path, "late", base={"depth": 2, "width": 4, "batch_size": 2})
        r = cli("sweep", f, "--out", cli.out, "--no-progress")
        saved = cli.out / "sweeps" / "late"
    assert r.exit_code == 130
    assert r.output.splitlines()[-1] == f"interrupted: the results are saved in {saved}"
    assert meta_of(saved if where == "run" else saved / "runs" / "seed=0")["status"] == "ok"
    monkeypatch.setattr(results, "base_meta", ctrl_c)  # and before anything was saved: says so
    r = cli("depth-study", *SMALL["depth-study"], "--name", "early")
    assert r.exit_code == 130 and "nothing was saved" in r.output.splitlines()[-1]
