"""Depth study: the std (and friends) of every layer's output in a deep MLP.

    bncli depth-study --init kaiming --norm batchnorm --depth 100 --grads --erank

Statistics stay on the device in one (depth, k) tensor and are read back once at the end:
no .item() per layer, so a GPU never waits on the host mid-run. The costly ones are
opt-in: --erank (an SVD per layer) and --grads (every weight kept, one backward pass);
their columns are left empty when off. Definitions and sources: docs/statistics.md.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import torch

from bncli.errors import BncliError
from bncli.nets import DTYPES, layer_fn, make_cotangent, make_input, make_weight, resolve_device, torch_threads
from bncli.studies import Result

CSV = "layers.csv"
BASE = ["mean", "std", "abs_max", "zero_fraction", "chan_sq_mean", "chan_var"]  # always on
COLUMNS = ["layer", *BASE, "erank", "grad_std", "weight_grad_norm", "theory_std"]
OPTIONAL = {"erank": "erank", "grad_std": "grads", "weight_grad_norm": "grads"}  # column: its flag
# divergence is a non-finite mean, std, abs_max or zero_fraction; chan_sq_mean and chan_var are
# squares, which overflow (inf) sooner and are kept as values
WATCH = 4
OFF = ""  # an off statistic's cell: empty in layers.csv, unlike a diverged value's nan
CHECK_EVERY = 16  # layers between divergence checks (host syncs) when they are cheap
DRAW_AHEAD_BYTES = 512 * 2**20  # weights in flight at most when streaming: memory stays flat in depth


def estimate_bytes(cfg) -> int:
    """Peak memory a run needs, before anything is allocated."""
    elt = DTYPES[cfg.dtype.value].itemsize
    draw = 8 if cfg.dtype.value == "float64" else 4
    w2 = cfg.width * cfg.width
    kept = cfg.keep_weights or cfg.grads
    ahead = 1 + draw_ahead(cfg, torch.get_num_threads())  # drawn ahead and in use, when streaming
    weights = (cfg.depth if kept else ahead) * w2 * elt * (2 if cfg.grads else 1)  # + their gradients
    draw_tmp = ahead * w2 * draw * (4 if cfg.init.value == "orthogonal" else 1)  # QR needs workspace
    acts = 4 * cfg.batch_size * cfg.width * max(elt, 4)
    if cfg.grads:  # autograd keeps every layer's intermediates, ~6 activations each
        acts *= 1 + 1.5 * cfg.depth
    return int(weights + draw_tmp + acts + cfg.depth * len(COLUMNS) * 8)


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
    n = cfg.depth if cfg.keep_weights or cfg.grads else 1
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


def enabled(cfg) -> list[str]:
    """The columns this config computes; the others are written empty."""
    return [c for c in COLUMNS if c not in OPTIONAL or getattr(cfg, OPTIONAL[c])]


def _stats(x: torch.Tensor) -> torch.Tensor:
    """BASE statistics of one layer's output (batch x width), as one on-device vector.

    chan_sq_mean and chan_var are Brock et al.'s: the per-channel mean and (biased)
    variance over the batch, averaged over channels, so their sum is mean(x^2).
    """
    n = x.numel()
    # Plain vectorised passes in float64, not std_mean/var_mean: torch's Welford kernels cost
    # ~0.8 ms here at width 1024, batch 128, a quarter of the layer's matmul. float64 also keeps
    # squares of outputs near float32's max finite, so only a non-finite output reads as diverged.
    f64 = torch.float64
    cmean = x.mean(0, dtype=f64)
    chan_var = (x - cmean).square_().mean()  # x - cmean is float64: no float32 copy of x made first
    mean = cmean.mean()
    var = chan_var + (cmean - mean).square().mean()  # all outputs' biased variance (law of total variance)
    std = (var * (n / (n - 1))).sqrt() if n > 1 else var * float("nan")  # unbiased, as the notebook's x.std()
    lo, hi = torch.aminmax(x)  # abs max in one pass, no abs() temporary
    zero = (n - x.bool().sum()).to(f64) / n  # x.bool() is 3x faster than x == 0 on CPU; nan counts as nonzero
    return torch.stack([mean, std, torch.maximum(-lo, hi).to(f64), zero, cmean.square().mean(), chan_var])


def _erank(x: torch.Tensor) -> torch.Tensor:
    """Roy and Vetterli's effective rank: exp(entropy of the singular values / their sum).

    Scale-free, so x is first divided by its abs max (no overflow in the SVD); a non-finite
    x gives nan (the layer has diverged), an all-zero x gives 0.
    """
    x = x.float() if x.dtype != torch.float64 else x
    finite = torch.isfinite(x).all()
    top = x.abs().amax()
    safe = torch.where(finite & (top > 0), x / top, torch.zeros_like(x))
    s = torch.linalg.svdvals(safe)
    total = s.sum()
    p = s / total.clamp_min(torch.finfo(s.dtype).tiny)
    r = torch.exp(-torch.special.xlogy(p, p).sum())
    r = torch.where(total > 0, r, torch.zeros_like(r))
    return torch.where(finite, r, torch.full_like(r, float("nan")))


def split_threads(device: torch.device) -> tuple[int, int]:
    """(drawing, computing) threads for a streamed run.

    A weight comes from one serial generator, so its draw cannot be shared out; instead half
    the torch threads draw the next layers while the others compute the current one (on 2
    cores this is 1.5x faster than drawing and computing in turn). With one thread, or on
    CUDA, where draws are asynchronous kernels, the computing thread draws too.
    """
    n = torch.get_num_threads()
    if device.type != "cpu" or n < 2:
        return 0, n
    return n // 2, n - n // 2


def draw_ahead(cfg, threads: int) -> int:
    """Layers drawn ahead by `threads` threads: one each and one spare, within DRAW_AHEAD_BYTES."""
    size = cfg.width * cfg.width * max(DTYPES[cfg.dtype.value].itemsize, 4)
    return max(1, min(threads + 1, DRAW_AHEAD_BYTES // size)) if threads else 0


def draw_weights(cfg, device: torch.device, threads: int = 0):
    """Yield every layer's weight in order, drawn `draw_ahead` layers ahead on `threads` threads.

    The numbers do not depend on the threads: layer i's weight comes from its own (seed, i)
    generator whichever thread draws it. Close the generator to stop early.
    """
    ahead = draw_ahead(cfg, threads)
    if not ahead:
        for i in range(cfg.depth):
            yield make_weight(cfg, i, device)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="bncli-draw") as pool:
        pending = deque(pool.submit(make_weight, cfg, i, device) for i in range(min(ahead, cfg.depth)))
        for i in range(len(pending), cfg.depth + len(pending)):
            w = pending.popleft().result()
            if i < cfg.depth:
                pending.append(pool.submit(make_weight, cfg, i, device))
            yield w


def run(cfg, device: torch.device, progress=None) -> Result:
    """Forward N(0,1) input through `cfg.depth` layers; stop at the first non-finite output.

    progress(layers_done) is called every few layers; on CUDA only when given, since each
    call is a host sync. With cfg.grads, one backward pass follows (from the last finite
    layer) and the gradient statistics are read back with a second sync.
    """
    step = layer_fn(cfg, device)
    # float64 whatever the dtype: _stats computes in float64, and chan_sq_mean's squares would
    # overflow a float32 cell long before the outputs themselves do
    stat_dtype = torch.float64
    k = len(BASE) + int(cfg.erank)
    buf = torch.empty(cfg.depth, k, device=device, dtype=stat_dtype)
    check = CHECK_EVERY if device.type == "cpu" or progress is not None else 0
    keep = cfg.keep_weights or cfg.grads
    # every op here gives the same bits on any number of threads (nets._bn_train), so the
    # threads only decide speed
    drawing, computing = split_threads(device)
    if cfg.init.value == "orthogonal":  # its QR sets torch's (process-wide) threads: not in a pool
        drawing = 0
    if keep:  # drawn first, on every thread
        with torch_threads(computing):
            weights = list(draw_weights(cfg, device, drawing + computing if drawing else 0))
        draws = iter(weights)
    else:
        weights, draws = None, draw_weights(cfg, device, drawing)
    outs = [] if cfg.grads else None
    if cfg.grads:
        for w in weights:
            w.requires_grad_(True)

    done, status = 0, "ok"
    try:
        with torch.set_grad_enabled(cfg.grads), torch_threads(computing):
            x = make_input(cfg, device)
            for i in range(cfg.depth):
                x = step(x, next(draws))
                xd = x.detach()
                buf[i] = torch.cat([_stats(xd), _erank(xd)[None]]) if cfg.erank else _stats(xd)
                if outs is not None:
                    outs.append(x)
                done = i + 1
                if check and done % check == 0:
                    if not torch.isfinite(buf[done - check : done, :WATCH]).all():
                        break
                    if progress is not None:
                        progress(done)
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        if not keep:
            draws.close()  # waits for the few draws still in flight

    rows = buf[:done].cpu()  # the one read-back (two with --grads)
    bad = (~torch.isfinite(rows[:, :WATCH]).all(dim=1)).nonzero()
    diverged_at = int(bad[0, 0]) if len(bad) else None
    if diverged_at is not None:
        rows, status = rows[: diverged_at + 1], "diverged"
    table = pd.DataFrame(rows.double().numpy(), columns=BASE + (["erank"] if cfg.erank else []))
    table.insert(0, "layer", range(len(table)))
    info = {"diverged_at": diverged_at, "layers_done": len(table)}
    from bncli import theory

    if cfg.grads:
        grads = _grads(cfg, device, outs, weights, len(table) if diverged_at is None else diverged_at)
        if grads is None:
            status = "interrupted"
            table["grad_std"] = table["weight_grad_norm"] = float("nan")
        else:
            table["grad_std"], table["weight_grad_norm"] = grads[: len(table), 0], grads[: len(table), 1]
        if _bn_relu(cfg):
            info["grad_growth_theory"] = round(theory.bn_relu_grad_rate(cfg.batch_size), 4)
    table["theory_std"] = theory.theory_std(cfg)[: len(table)]
    for col in OPTIONAL:
        if col not in table:
            table[col] = OFF
    return Result(table[COLUMNS], status, info)


def _bn_relu(cfg) -> bool:
    """The stack Yang et al.'s ReLU gradient rate is derived for (docs/theory.md)."""
    return (cfg.norm.value == "batchnorm" and cfg.bn_mode.value == "train" and cfg.activation.value == "relu"
            and cfg.order.value == "linear-norm-act" and not cfg.residual and cfg.batch_size >= 4)


def _grads(cfg, device, outs, weights, n: int):
    """(len(outs), 2) float64 array of [grad_std, weight_grad_norm]; rows past n are nan.

    The output of layer n - 1 is contracted with a fixed seeded N(0, 1) cotangent and one
    backward pass gives the gradient with respect to every layer's output and weight.
    """
    import numpy as np

    out = np.full((len(outs), 2), np.nan)
    if n == 0:
        return out
    try:
        ct = make_cotangent(cfg, device)
        g = torch.autograd.grad(outs[n - 1], outs[:n] + weights[:n], ct)
        go, gw = g[:n], g[n:]
        up = (lambda t: t.float()) if ct.dtype == torch.bfloat16 else (lambda t: t)  # noqa: E731
        stats = torch.stack([torch.stack([up(a).std(), torch.linalg.vector_norm(up(b))])
                             for a, b in zip(go, gw, strict=True)])
        out[:n] = stats.double().cpu().numpy()
    except KeyboardInterrupt:
        return None
    return out
