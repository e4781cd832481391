"""The sweep lock: one holder among processes taking it at once, and every failure one line.

.venv/bin/python -m pytest tests/test_lock.py -q
"""

import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time

import pytest
from test_reliability import one_line_error
from test_sweep import sweep_cli, write_sweep

from bncli import sweeps
from bncli.errors import BncliError

ONE = {"init": ["kaiming"]}  # a sweep of one run
PROCS = 12  # processes at once: more than cores, so the scheduler interleaves them


def _slow_host():
    """In a competitor (a forked child): the host name takes 2 ms, as on a loaded machine. Taking
    the lock asks for it, so a lock that is not atomic has a window where a competitor sees the
    file half made (it broke that way: the file there, its pid not yet in it)."""
    name = socket.gethostname()

    def slow():
        time.sleep(0.002)
        return name

    socket.gethostname = slow


def _take(directory, start, done, got):
    """One competitor: wait for all, take the lock once, say whether it got it, hold it until all tried."""
    _slow_host()
    start.wait()
    try:
        sweeps.lock(directory)
        got.put(os.getpid())
        held = True
    except BncliError:
        held = False
    done.wait()
    if held:
        sweeps.unlock(directory)


def _churn(directory, marker, rounds, clashes):
    """Take and let go of the lock `rounds` times; each time held, `marker` must be ours alone."""
    _slow_host()
    for _ in range(rounds):
        try:
            sweeps.lock(directory)
        except BncliError:
            continue
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if another holder made it
        except FileExistsError:
            clashes.put(os.getpid())
            sweeps.unlock(directory)
            continue
        os.close(fd)
        time.sleep(0.001)
        os.unlink(marker)
        sweeps.unlock(directory)


@pytest.mark.parametrize("stale", [False, True], ids=["no-lock-file", "a-dead-holder's-file"])
def test_many_processes_taking_the_lock_at_once_see_exactly_one_holder(tmp_path, stale):
    ctx = mp.get_context("fork")  # quick to start; the competitors only touch files
    for attempt in range(8):
        d = tmp_path / f"s{attempt}"
        d.mkdir()
        if stale:  # the case that broke: each competitor deleted the others' fresh lock as stale
            (d / sweeps.LOCK).write_text(f"{2**22 + 1} {socket.gethostname()}\n")
        start, done, got = ctx.Barrier(PROCS), ctx.Barrier(PROCS), ctx.Queue()
        procs = [ctx.Process(target=_take, args=(d, start, done, got)) for _ in range(PROCS)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert all(p.exitcode == 0 for p in procs)
        holders = []
        while not got.empty():
            holders.append(got.get())
        assert len(holders) == 1, f"attempt {attempt}: {len(holders)} holders"
        assert not (d / sweeps.LOCK).exists()  # the holder removed it as it let go


def test_processes_taking_and_releasing_the_lock_never_overlap(tmp_path):
    """Let go (unlink, then close) while others wait on the old file: none of them may hold it too."""
    ctx = mp.get_context("fork")
    clashes = ctx.Queue()
    procs = [ctx.Process(target=_churn, args=(tmp_path, tmp_path / "held", 40, clashes)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert clashes.empty()


def test_a_holder_is_named_and_a_dead_holders_lock_is_taken_over(cli, tmp_path):
    path = write_sweep(tmp_path, grid=ONE, seeds=(0,))
    d = tmp_path / "out" / "sweeps" / "s"
    assert sweep_cli(cli, path, "--out", tmp_path / "out").exit_code == 0
    holder = subprocess.Popen(  # a process holding the lock as bncli takes it: an flock, then its pid and host
        [sys.executable, "-c", "import fcntl, os, socket, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, f'{os.getpid()} {socket.gethostname()}'.encode()); "
         "print(1, flush=True); sys.stdin.read()", str(d / sweeps.LOCK)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "1\n"  # it holds the lock
        line = one_line_error(sweep_cli(cli, path, "--out", tmp_path / "out", "--resume"), 2)
        assert f"is in use by process {holder.pid};" in line
    finally:
        holder.kill()  # dies holding it, leaving the file: the kernel lets the lock go
        holder.wait()
    assert (d / sweeps.LOCK).exists()
    assert sweep_cli(cli, path, "--out", tmp_path / "out", "--resume").exit_code == 0
    assert not (d / sweeps.LOCK).exists()


def test_a_lock_of_another_host_is_refused_naming_it(cli, tmp_path):
    path = write_sweep(tmp_path, grid=ONE, seeds=(0,))
    d = tmp_path / "out" / "sweeps" / "s"
    assert sweep_cli(cli, path, "--out", tmp_path / "out").exit_code == 0
    (d / sweeps.LOCK).write_text("123 elsewhere.example\n")
    line = one_line_error(sweep_cli(cli, path, "--out", tmp_path / "out", "--resume"), 2)
    assert "in use by process 123 on elsewhere.example" in line and "remove" in line


def _not_regular(lock):
    os.mkfifo(lock)


@pytest.mark.parametrize(
    "make,says",
    [
        (lambda lock: lock.mkdir(), "a directory where bncli keeps the sweep's lock"),
        (lambda lock: lock.symlink_to("/dev/zero"), "a symlink where bncli keeps the sweep's lock"),
        (_not_regular, "not a regular file where bncli keeps the sweep's lock"),
    ],
    ids=["directory", "symlink", "fifo"],
)
def test_a_lock_that_is_not_a_file_is_one_line(cli, tmp_path, make, says):
    path = write_sweep(tmp_path, grid=ONE, seeds=(0,))
    d = tmp_path / "out" / "sweeps" / "s"
    assert sweep_cli(cli, path, "--out", tmp_path / "out").exit_code == 0
    before = sorted(p.name for p in (d / "runs").iterdir())
    make(d / sweeps.LOCK)
    line = one_line_error(sweep_cli(cli, path, "--out", tmp_path / "out", "--resume"), 1)
    assert f"{d / sweeps.LOCK}: {says}" in line
    assert sorted(p.name for p in (d / "runs").iterdir()) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_resume_in_a_read_only_sweep_directory_is_one_line(cli, tmp_path):
    path = write_sweep(tmp_path, grid=ONE, seeds=(0,))
    d = tmp_path / "out" / "sweeps" / "s"
    assert sweep_cli(cli, path, "--out", tmp_path / "out").exit_code == 0
    d.chmod(0o555)
    try:
        line = one_line_error(sweep_cli(cli, path, "--out", tmp_path / "out", "--resume"), 1)
    finally:
        d.chmod(0o755)
    assert f"cannot take the lock {d / sweeps.LOCK}: Permission denied" in line


@pytest.mark.parametrize("code", ["EACCES", "EROFS"])
def test_a_lock_the_system_refuses_is_one_line(cli, tmp_path, monkeypatch, code):
    """As the read-only directory above, for a user the mode does not stop (root) and a read-only mount."""
    import errno

    path = write_sweep(tmp_path, grid=ONE, seeds=(0,))
    d = tmp_path / "out" / "sweeps" / "s"
    assert sweep_cli(cli, path, "--out", tmp_path / "out").exit_code == 0
    real = os.open

    def refuse(p, *args, **kw):
        if str(p).endswith(sweeps.LOCK):
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(p))
        return real(p, *args, **kw)

    monkeypatch.setattr(sweeps.os, "open", refuse)
    line = one_line_error(sweep_cli(cli, path, "--out", tmp_path / "out", "--resume"), 1)
    assert f"cannot take the lock {d / sweeps.LOCK}: {os.strerror(getattr(errno, code))}" in line


def test_resume_that_cannot_remove_an_unfinished_run_is_one_line(cli, tmp_path, monkeypatch):
    """A read-only sweep directory whose .lock is still there (a killed holder's): the lock is
    taken, but the unfinished run cannot be cleared to redo it: one line, the lock let go."""
    import shutil

    path = write_sweep(tmp_path, grid={"init": ["kaiming", "xavier"]}, seeds=(0,))
    d = tmp_path / "out" / "sweeps" / "s"
    assert sweep_cli(cli, path, "--out", tmp_path / "out").exit_code == 0
    run = d / "runs" / "init=xavier,seed=0"
    (run / "layers.csv").unlink()  # not really there: to be redone

    def refuse(p, *args, **kw):
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(shutil, "rmtree", refuse)
    line = one_line_error(sweep_cli(cli, path, "--out", tmp_path / "out", "--resume"), 1)
    assert line == f"Error: cannot remove {run} to redo it: Permission denied"
    assert not (d / sweeps.LOCK).exists()
