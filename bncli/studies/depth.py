"""Depth study: the std (and friends) of every layer's output in a deep MLP.

    bncli depth-study --init kaiming --norm batchnorm --depth 100

Statistics stay on the device in one (depth, k) tensor and are read back once at the end:
no .item() per layer, so a GPU never waits on the host mid-run.
"""

from __future__ import annotations

import os

import pandas as pd
import torch

from bncli.errors import BncliError
from bncli.nets import DTYPES, layer_fn, make_input, make_weight, resolve_device
from bncli.studies import Result

CSV = "layers.csv"
COLUMNS = ["layer", "mean", "std", "abs_max", "zero_fraction"]
CHECK_EVERY = 16  # layers between divergence checks (host syncs) when they are cheap


def estimate_bytes(cfg) -> int:
    """Peak memory a run needs, before anything is allocated."""
    elt = DTYPES[cfg.dtype.value].itemsize
    draw = 8 if cfg.dtype.value == "float64" else 4
    w2 = cfg.width * cfg.width
    weights = (cfg.depth if cfg.keep_weights else 1) * w2 * elt
    draw_tmp = w2 * draw * (4 if cfg.init.value == "orthogonal" else 1)  # QR needs workspace
    acts = 4 * cfg.batch_size * cfg.width * max(elt, 4)
    return weights + draw_tmp + acts + cfg.depth * len(COLUMNS) * 8


def _capacity(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def label(cfg) -> str:
    """The part of the default run name that tells runs apart."""
    return f"{cfg.init.value}-{cfg.norm.value}"


def describe_size(cfg) -> str:
    n = cfg.depth if cfg.keep_weights else 1
    return (f"depth {cfg.depth}, width {cfg.width}, batch_size {cfg.batch_size}, {cfg.dtype.value} "
            f"({n} weight(s) of {cfg.width}x{cfg.width} held at once, about {_gb(estimate_bytes(cfg))})")


def preflight(cfg) -> torch.device:
    device = resolve_device(cfg.device)
    need, have = estimate_bytes(cfg), _capacity(device)
    if need > 0.9 * have:
        raise BncliError(
            f"too large: depth {cfg.depth}, width {cfg.width}, batch_size {cfg.batch_size}"
            f"{', keep_weights' if cfg.keep_weights else ''} needs about {_gb(need)} but {device} "
            f"has {_gb(have)}; use a smaller --width, --batch-size or --depth")
    return device


def _stats(x: torch.Tensor) -> torch.Tensor:
    """[mean, std, abs_max, zero_fraction] of one layer's output, as one on-device vector."""
    if x.dtype == torch.bfloat16:
        x = x.float()
    std, mean = torch.std_mean(x)  # unbiased std, as the notebook's x.std()
    zero = (x == 0).sum().to(x.dtype) / x.numel()
    return torch.stack([mean, std, x.abs().amax(), zero])


def run(cfg, device: torch.device, progress=None) -> Result:
    """Forward N(0,1) input through `cfg.depth` layers; stop at the first non-finite output.

    progress(layers_done) is called every few layers; on CUDA only when given, since each
    call is a host sync.
    """
    step = layer_fn(cfg)
    stat_dtype = torch.float64 if cfg.dtype.value == "float64" else torch.float32
    buf = torch.empty(cfg.depth, len(COLUMNS) - 1, device=device, dtype=stat_dtype)
    check = CHECK_EVERY if device.type == "cpu" or progress is not None else 0
    weights = [make_weight(cfg, i, device) for i in range(cfg.depth)] if cfg.keep_weights else None

    done, status = 0, "ok"
    try:
        with torch.no_grad():
            x = make_input(cfg, device)
            for i in range(cfg.depth):
                w = weights[i] if weights is not None else make_weight(cfg, i, device)
                x = step(x, w)
                buf[i] = _stats(x)
                done = i + 1
                if check and done % check == 0:
                    if not torch.isfinite(buf[done - check : done]).all():
                        break
                    if progress is not None:
                        progress(done)
    except KeyboardInterrupt:
        status = "interrupted"

    rows = buf[:done].cpu()  # the one read-back
    bad = (~torch.isfinite(rows).all(dim=1)).nonzero()
    diverged_at = int(bad[0, 0]) if len(bad) else None
    if diverged_at is not None:
        rows, status = rows[: diverged_at + 1], "diverged"
    table = pd.DataFrame(rows.double().numpy(), columns=COLUMNS[1:])
    table.insert(0, "layer", range(len(table)))
    return Result(table, status, {"diverged_at": diverged_at, "layers_done": len(table)})
