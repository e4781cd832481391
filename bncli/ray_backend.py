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
from bncli.errors import BncliError, first_line

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


# the environment variable that carries the watchdog's mark (bncli.ray_watchdog) into the
# processes Ray starts
MARK = "BNCLI_RAY_DRIVER"


def _watch() -> str | None:
    """Start the watchdog (bncli.ray_watchdog: it kills what Ray left when this process dies;
    Linux: it reads /proc), in its own session so a Ctrl-C spares it; returns the mark
    (NAME=VALUE) Ray's processes must carry, None without /proc."""
    import os
    import subprocess
    import sys

    if not os.path.isdir("/proc/self"):
        return None
    mark = f"{MARK}={os.getpid()}-{time.time_ns()}"
    subprocess.Popen(
        [sys.executable, "-m", "bncli.ray_watchdog", str(os.getpid()), mark],
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
                r = results.failed(study, cfg, _task_error(e))
            if store(key, r):
                break
    finally:
        for ref in keys:
            ray.cancel(ref, force=True)  # a no-op for tasks already done


def _task_error(e: BaseException) -> str:
    """What a failed Ray task records: its own exception's first line (Ray wraps it, as the
    cause), else the last line of Ray's message (a worker that died says why there)."""
    cause = getattr(e, "cause", None)
    if cause is not None:
        return first_line(cause)
    lines = [line for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"
