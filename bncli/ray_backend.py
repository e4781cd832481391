"""Sweeps on Ray: each run is one Ray task that computes in memory and returns its results.

    bncli sweep configs/sweeps/init_vs_norm.yaml --backend ray --address auto

The driver writes every file, exactly as the local backend does, so workers need bncli and
torch installed but no shared filesystem. Ray is an optional extra: pip install -e ".[ray]".
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bncli import results
from bncli.errors import BncliError

INSTALL = 'pip install -c constraints.txt -e ".[ray]" (in your bncli checkout)'


@dataclass
class RayOptions:
    address: str | None = None  # None: start a local Ray instance sized to this machine
    cpus_per_run: float = 1.0  # also the torch threads of each run
    gpus_per_run: float = 0.0  # fractions pack several runs onto one GPU


def import_ray():
    try:
        import ray
    except ImportError:
        raise BncliError(f"--backend ray: Ray is not installed; install it with: {INSTALL}") from None
    return ray


def task(study: str, cfg, threads: int) -> results.Run:
    """Runs on a Ray worker: results.compute, with the device checked on that worker's node."""
    torch.set_num_threads(threads)
    return results.compute(study, cfg)


def connect(opts: RayOptions) -> bool:
    """Join (or start) Ray, and check that a run fits on it; True when this call started Ray,
    whose caller must then shut it down (disconnect)."""
    ray = import_ray()
    local = not opts.address and not ray.is_initialized()
    # the watchdog starts before Ray does, and every process Ray starts carries its mark
    with _marked(_watch()) if local else contextlib.nullcontext():
        started = _connect(ray, opts)
    try:
        have = ray.cluster_resources()
        for flag, need, kind in (
            ("--cpus-per-run", opts.cpus_per_run, "CPU"),
            ("--gpus-per-run", opts.gpus_per_run, "GPU"),
        ):
            if need > have.get(kind, 0):  # such a task would wait forever, silently
                raise BncliError(
                    f"{flag}: {need:g} is more than the Ray cluster's {have.get(kind, 0):g} {kind}s; "
                    f"ask for at most that"
                )
    except BaseException:
        disconnect(started)
        raise
    return started


# Runs beside the driver that started a local Ray instance and kills what Ray left when the
# driver dies (Ray's own fate-sharing misses its agents, which outlive a driver killed with -9
# by minutes). It knows Ray's processes two ways: every process seen below the driver while it
# lived, and every process whose environment holds the mark the driver set while Ray started
# them (GCS, raylet, agents and, through the raylet, workers): a process started just before
# the driver died, whose parent Ray's fate-sharing had already ended, is known by its mark
# (an agent, by the raylet's pid in its environment).
MARK = "BNCLI_RAY_DRIVER"
_WATCHDOG = """
import os, sys, time, signal
parent, me, mark = int(sys.argv[1]), os.getpid(), sys.argv[2].encode()

def below(roots):
    kids = {}
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as f:
                kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    out, todo = set(), list(roots)
    while todo:
        for k in kids.get(todo.pop(), []):
            if k != me and k not in out:
                out.add(k)
                todo.append(k)
    return out

def marked(tokens):
    out = set()
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if d.isdigit() and int(d) != me and tokens & set(f.read().split(b"\\0")):
                    out.add(int(d))
        except OSError:
            pass
    return out

def started(pid):  # a pid and its start time name one process, whatever reuses the pid later
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]

def signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass

seen = {}  # pid -> start time, while the process lasts
while True:
    look = below([parent])
    if started(parent) is None:  # gone, or a zombie: its children have already left its tree
        break
    seen = {p: t for p, t in seen.items() if started(p) == t}
    seen.update({p: started(p) for p in look if p not in seen})
    time.sleep(0.5)
# stop them all (so they start nothing more), take in what is below them, then kill them
# known by a mark: ours, or the raylet's pid its agents are given (they write their titles over
# the start of their environment, ours with it)
tokens = {mark} | {b"RAY_RAYLET_PID=%d" % p for p in seen}
doomed = {p for p, t in seen.items() if started(p) == t} | marked(tokens)
while True:
    signal_all(doomed, signal.SIGSTOP)
    more = below(doomed) - doomed
    if not more:
        break
    doomed |= more
signal_all(doomed, signal.SIGKILL)
"""


def _watch() -> str | None:
    """Start the watchdog (Linux: it reads /proc), in its own session so a Ctrl-C spares it;
    returns the mark (NAME=VALUE) Ray's processes must carry, None without /proc."""
    import os
    import subprocess
    import sys

    if not os.path.isdir("/proc/self"):
        return None
    mark = f"{MARK}={os.getpid()}-{time.time_ns()}"
    subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), mark],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return mark


@contextlib.contextmanager
def _marked(mark: str | None):
    """The mark in this process's environment while Ray starts, so its processes inherit it;
    taken out after, so nothing else this process starts carries it."""
    import os

    if mark is None:
        yield
        return
    old = os.environ.get(MARK)
    os.environ[MARK] = mark.partition("=")[2]
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(MARK, None)
        else:
            os.environ[MARK] = old


def disconnect(started: bool) -> None:
    if started:
        import_ray().shutdown()


def _connect(ray, opts: RayOptions) -> bool:
    """Join (or start) Ray; True when this call started it and so must shut it down."""
    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        if opts.address:
            ray.init(address=opts.address, **kwargs)
        else:
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = opts.address or "a local instance"
        raise BncliError(f"--address {where}: cannot connect to Ray: {str(e).splitlines()[0]}") from None
    return True


def run(study: str, items: list[tuple[Any, Any]], store: Callable[[Any, results.Run], bool], opts: RayOptions) -> None:
    """Submit one task per (key, cfg) in `items`; store(key, run) each as it finishes, and stop
    when store says so.

    A task that raises or whose worker dies is stored as a failed run. Ctrl-C cancels the
    outstanding tasks; what finished is already stored.
    """
    ray = import_ray()  # connected by the caller (connect), which checked that a run fits
    threads = max(1, int(opts.cpus_per_run))
    remote = ray.remote(task).options(num_cpus=opts.cpus_per_run, num_gpus=opts.gpus_per_run, max_retries=0)
    keys = {}
    try:
        for key, cfg in items:
            keys[remote.remote(study, cfg, threads)] = (key, cfg)
        pending = list(keys)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            key, cfg = keys[done[0]]
            try:
                r = ray.get(done[0])
            except ray.exceptions.RayError as e:  # the task raised, or its worker died
                r = results.failed(study, cfg, _first_line(e))
            if store(key, r):
                break
    finally:
        for ref in keys:
            ray.cancel(ref, force=True)  # a no-op for tasks already done


def _first_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    lines = [line for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"
