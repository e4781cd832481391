"""The Ray watchdog (bncli.ray_watchdog) on real processes, without Ray: a fake driver starts it
the way bncli.ray_backend does, and is killed.

Run as a script, this file is also the processes the tests start (see the end).
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

import pytest

from bncli import ray_watchdog

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc (Linux)")

SLEEP = "import time; time.sleep(60)"  # long enough for any test, short enough if one leaks
ODD_NAME = b"a) b 1 2"  # a process name that a stat parser splitting at the first ")" misreads
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER, PR_SET_NAME = 36, 37, 15
SLEEP_ODD = f"import ctypes, time; ctypes.CDLL(None).prctl({PR_SET_NAME}, {ODD_NAME!r}); {SLEEP}"


def _stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _state(pid):
    """R, S, T (stopped), Z (zombie), ...; None once gone."""
    fields = _stat(pid)
    return None if fields is None else fields[0]


def _start(pid):
    fields = _stat(pid)
    return None if fields is None else fields[19]  # starttime, field 22 of /proc/PID/stat


def _name(pid):
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n")
    except OSError:
        return None


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def _watchdogs(driver):
    return [p for p in ray_watchdog.below([driver]) if "bncli.ray_watchdog" in _cmdline(p)]


def _until(done, timeout=10.0):
    """Poll done() until it is true or timeout seconds pass; its last value."""
    end = time.monotonic() + timeout
    while not done() and time.monotonic() < end:
        time.sleep(0.05)
    return done()


class Procs:
    """What a test started, all killed and reaped in the end: its Popen objects, and every pid
    it knows of, with its start time (a pid reused since is spared)."""

    def __init__(self):
        self.popens = []
        self.pids = {}

    def popen(self, args, **kw):
        p = subprocess.Popen(args, **kw)
        self.popens.append(p)
        self.track(p.pid)
        return p

    def sleeper(self, **kw):
        return self.popen([sys.executable, "-c", SLEEP], **kw)

    def script(self, mode, **kw):
        """This file run as a script (see the end), and the words of its first line out."""
        p = self.popen([sys.executable, __file__, mode], stdout=subprocess.PIPE, text=True, **kw)
        return p, p.stdout.readline().split()

    def track(self, pid):
        self.pids[pid] = _start(pid)
        return pid

    def alive(self, pid):
        return _start(pid) == self.pids[pid] and _state(pid) not in (None, "Z")

    def cleanup(self):
        for pid, start in self.pids.items():
            if start is not None and _start(pid) == start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for p in self.popens:
            p.kill()
            p.wait(timeout=10)
            if p.stdout:
                p.stdout.close()
        for pid in self.pids:  # orphans came to this process (a subreaper): reap them
            end = time.monotonic() + 10
            try:
                while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < end:
                    time.sleep(0.01)
            except ChildProcessError:  # not our child, or reaped
                pass
        assert _until(lambda: not any(self.alive(p) for p in self.pids), 5), "left behind"


def _prctl(option, arg):
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, arg, 0, 0, 0)


@pytest.fixture
def procs():
    """A Procs; this process is a subreaper meanwhile, so the orphans of a test (the driver's
    children, once it is killed) become its children, which it can reap, whatever init does."""
    was = ctypes.c_int(0)
    _prctl(PR_GET_CHILD_SUBREAPER, ctypes.addressof(was))
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    ps = Procs()
    try:
        yield ps
    finally:
        try:
            ps.cleanup()
        finally:
            _prctl(PR_SET_CHILD_SUBREAPER, was.value)


def test_below_is_the_tree_under_the_roots(procs):
    """root -> odd (a sleeper with ") " in its name), mid -> leaf."""
    root, pids = procs.script("tree")
    odd, mid, leaf = (procs.track(int(p)) for p in pids)
    assert _until(lambda: _name(odd) == ODD_NAME)
    assert ray_watchdog.below([root.pid]) == {odd, mid, leaf}
    assert ray_watchdog.below([mid]) == {leaf}
    assert ray_watchdog.below([odd, leaf]) == set()
    assert ray_watchdog.below([odd, mid]) == {leaf}
    # never the caller, nor what is below it: the watchdog is the driver's child and must not stop itself
    around = ray_watchdog.below([os.getppid()])
    assert os.getpid() not in around and root.pid not in around


def test_marked_is_a_whole_entry_of_the_environment(procs):
    token = f"BNCLI_TEST_TOKEN={os.getpid()}-{time.time_ns()}"
    name, _, value = token.partition("=")
    has = procs.sleeper(env={**os.environ, name: value})
    other = procs.sleeper(env={**os.environ, "BNCLI_TEST_OTHER": value})
    procs.sleeper(env={**os.environ, name: value + "0"})  # RAY_RAYLET_PID=12 is not RAY_RAYLET_PID=123
    procs.sleeper()  # neither
    assert ray_watchdog.marked({token.encode()}) == {has.pid}
    assert ray_watchdog.marked({token.encode(), f"BNCLI_TEST_OTHER={value}".encode()}) == {has.pid, other.pid}
    assert ray_watchdog.marked({f"{name}=".encode(), value.encode()}) == set()  # parts of an entry are not it


def test_started_names_a_live_process_and_not_a_zombie(procs):
    p = procs.popen([sys.executable, "-c", SLEEP_ODD])
    assert _until(lambda: _name(p.pid) == ODD_NAME)
    assert ray_watchdog.started(p.pid) == _start(p.pid) and _start(p.pid).isdigit()
    assert ray_watchdog.started(os.getpid()) == _start(os.getpid())
    p.kill()
    assert _until(lambda: _state(p.pid) == "Z")  # not reaped: a zombie
    assert ray_watchdog.started(p.pid) is None
    p.wait()
    assert ray_watchdog.started(p.pid) is None  # gone


def test_signal_all_passes_over_a_pid_that_is_gone(procs):
    with open("/proc/sys/kernel/pid_max") as f:
        never = int(f.read()) + 1  # no process has it, now or later
    live = procs.sleeper()
    ray_watchdog.signal_all([never, live.pid], signal.SIGKILL)
    assert live.wait(timeout=10) == -signal.SIGKILL


def test_watch_returns_what_was_seen_below_the_parent_and_lasts(monkeypatch):
    """A pid seen with one start time and then another is a new process, taken in afresh (reap
    kills a process only while its start time matches); one gone since is dropped. The process
    table is scripted, round by round: what is below the parent (pid 1), and each start time."""
    rounds = iter(
        [
            ({5, 6, 7}, {1: "1", 5: "100", 6: "101", 7: "102"}),
            ({5, 6}, {1: "1", 5: "200", 6: "101"}),  # 5 is a new process, 7 is gone
            ({5, 6}, {5: "200", 6: "101"}),  # the parent is gone
        ]
    )
    now = {}

    def below(roots):
        assert list(roots) == [1]
        tree, times = next(rounds)
        now.clear()
        now.update(times)
        return tree

    monkeypatch.setattr(ray_watchdog, "below", below)
    monkeypatch.setattr(ray_watchdog, "started", now.get)
    assert ray_watchdog.watch(1, every=0) == {5: "200", 6: "101"}


def test_reap_kills_what_was_seen_only_while_its_start_time_matches(procs):
    seen, reused = procs.sleeper(), procs.sleeper()
    mark = f"BNCLI_TEST_MARK={os.getpid()}-{time.time_ns()}".encode()  # carried by none
    killed = ray_watchdog.reap({seen.pid: _start(seen.pid), reused.pid: "0"}, mark)
    assert killed == {seen.pid}
    assert seen.wait(timeout=10) == -signal.SIGKILL
    assert procs.alive(reused.pid)


@pytest.mark.parametrize("end", ["gone", "zombie"])
def test_the_watchdog_kills_what_a_dead_driver_left_and_nothing_else(procs, tmp_path, end):
    """A fake driver starts the watchdog with ray_backend._watch, then (a) a child; outside its
    tree, in their own sessions, run (b) with the watchdog's mark in its environment, (e) its
    child with an empty environment, (c) with RAY_RAYLET_PID=(a), (d) with neither. The driver
    is killed with -9, and reaped (gone) or not (a zombie): (a), (b), (c), (e) die, (d) lives.
    Each is found one way only: (a) seen below the driver, (b) by the mark, (c) by (a)'s pid, (e)
    below what is doomed."""
    driver, (mark, a) = procs.script("driver", cwd=tmp_path)  # elsewhere than the checkout: -m finds bncli anyway
    a = procs.track(int(a))
    assert _until(lambda: _watchdogs(driver.pid))
    (watchdog,) = _watchdogs(driver.pid)
    procs.track(watchdog)
    assert _cmdline(watchdog)[1:5] == ["-m", "bncli.ray_watchdog", str(driver.pid), mark]
    assert os.getsid(watchdog) == watchdog  # its own session: a Ctrl-C to the driver spares it
    name, _, value = mark.partition("=")
    b, (e,) = procs.script("parent", env={**os.environ, name: value}, start_new_session=True)
    e = procs.track(int(e))
    c = procs.sleeper(env={**os.environ, "RAY_RAYLET_PID": str(a)}, start_new_session=True)
    d = procs.sleeper(start_new_session=True)
    doomed = {"a": a, "b": b.pid, "c": c.pid, "e": e}
    assert all(procs.alive(p) for p in [*doomed.values(), d.pid, watchdog])
    time.sleep(1.5)  # the watchdog looks below the driver every 0.5 s: by now it has seen (a)

    driver.kill()
    if end == "gone":
        driver.wait()
    assert _until(lambda: not any(procs.alive(p) for p in [*doomed.values(), watchdog]))
    if end == "zombie":
        assert _state(driver.pid) == "Z"
    assert not [k for k, p in doomed.items() if procs.alive(p)]
    assert procs.alive(d.pid)


# ---- the processes the tests start: python tests/test_ray_watchdog.py MODE ----


def _sleeper(**kw):
    return subprocess.Popen([sys.executable, "-c", SLEEP], **kw)


def _parent():
    """One sleeper child with an empty environment (it carries no mark); prints its pid."""
    print(_sleeper(env={}).pid, flush=True)
    time.sleep(60)


def _tree():
    """Two children: a sleeper that gives itself an odd name, and a parent (of one); prints the
    sleeper's pid, the parent's and its child's."""
    odd = subprocess.Popen([sys.executable, "-c", SLEEP_ODD])
    mid = subprocess.Popen([sys.executable, __file__, "parent"], stdout=subprocess.PIPE, text=True)
    print(odd.pid, mid.pid, mid.stdout.readline().strip(), flush=True)
    time.sleep(60)


def _driver():
    """Starts the watchdog on itself as bncli's Ray backend does, then a child; prints the mark
    and the child's pid."""
    from bncli import ray_backend

    mark = ray_backend._watch()
    print(mark, _sleeper().pid, flush=True)
    time.sleep(60)


if __name__ == "__main__":
    {"parent": _parent, "tree": _tree, "driver": _driver}[sys.argv[1]]()
