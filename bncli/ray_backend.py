"""Sweeps on Ray: each run is one Ray task that computes in memory and returns its results.

    bncli sweep configs/sweeps/init_vs_norm.yaml --backend ray --address auto

The driver writes every file, exactly as the local backend does, so workers need bncli and
torch installed but no shared filesystem. Ray is an optional extra: pip install "bncli[ray]".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bncli.errors import BncliError

INSTALL = 'pip install "bncli[ray]"'


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


def _task(study: str, name: str, cfg, threads: int) -> tuple[str, Any, dict]:
    """Runs on a Ray worker: the same in-memory computation as a local pool worker."""
    import torch

    from bncli import sweep

    torch.set_num_threads(threads)
    return (name, *sweep._compute(study, cfg))


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


def run(plan, todo, outcome, fail_fast: bool, tick, store, opts: RayOptions) -> None:
    """Submit every run in `todo` as a task; store(point, result, meta) each as it finishes.

    A task that raises or whose worker dies is stored as a failed run. Ctrl-C cancels the
    outstanding tasks; what finished is already stored.
    """
    ray = import_ray()
    started = _connect(ray, opts)
    threads = max(1, int(opts.cpus_per_run))
    remote = ray.remote(_task).options(num_cpus=opts.cpus_per_run, num_gpus=opts.gpus_per_run,
                                       max_retries=0)
    points = {}
    try:
        for p in todo:
            points[remote.remote(plan.study, p.name, p.cfg, threads)] = p
        pending = list(points)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            p = points[done[0]]
            try:
                _, result, meta = ray.get(done[0])
            except ray.exceptions.RayError as e:  # the task raised, or its worker died
                result, meta = None, _failed_meta(plan.study, p.cfg, _first_line(e))
            store(p, result, meta)
            tick(len(outcome.status), len(plan.points), p.name)
            if meta["status"] == "failed" and fail_fast:
                outcome.stopped = True
                break
    finally:
        for ref in points:
            ray.cancel(ref, force=True)  # a no-op for tasks already done
        if started:
            ray.shutdown()


def _failed_meta(study: str, cfg, error: str) -> dict:
    """meta.json of a run whose task never returned: the device is the one asked for."""
    import torch

    from bncli import results

    meta = results.base_meta(study, cfg, torch.device("cpu"))
    meta.update(status="failed", error=error, device=cfg.device, device_name=None, torch_threads=None)
    return meta


def _first_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    lines = [line for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"
