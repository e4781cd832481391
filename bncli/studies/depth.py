"""Depth study: the std (and friends) of every layer's output in a deep MLP.

    bncli depth-study --init kaiming --norm batchnorm --depth 100 --grads --erank

Statistics stay on the device in one (depth, k) tensor and are read back once at the end:
no .item() per layer, so a GPU never waits on the host mid-run. The costly ones are
opt-in: --erank (an SVD per layer) and --grads (every weight kept, one backward pass);
their columns are left empty when off. Definitions and sources: docs/statistics.md.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import torch

from bncli.errors import BncliError
from bncli.nets import DTYPES, layer_fn, make_cotangent, make_input, make_weight, resolve_device
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
    ahead = max(1, min(torch.get_num_threads(), DRAW_AHEAD_BYTES // (w2 * max(elt, 4))))  # see draw_ahead
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
    if x.dtype == torch.bfloat16:
        x = x.float()
    # one pass per reduction (no abs() or x == 0 temporaries): the same numbers, fewer kernels
    std, mean = torch.std_mean(x)  # unbiased std, as the notebook's x.std()
    lo, hi = torch.aminmax(x)
    zero = (x.numel() - torch.count_nonzero(x)).to(x.dtype) / x.numel()
    cmean = x.mean(0)  # two plain passes: on CPU 15x faster than var_mean(x, dim=0)
    chan_var = (x - cmean).square().mean()
    return torch.stack([mean, std, torch.maximum(-lo, hi), zero, cmean.square().mean(), chan_var])


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


def draw_ahead(cfg, device: torch.device) -> int:
    """How many layers' weights are drawn side by side: one per torch CPU thread, within DRAW_AHEAD_BYTES.

    Each weight comes from one serial generator, so drawing them one by one would leave all
    cores but one idle for most of a run; on CUDA draws are asynchronous kernels already.
    """
    if device.type != "cpu":
        return 1
    size = cfg.width * cfg.width * max(DTYPES[cfg.dtype.value].itemsize, 4)
    return max(1, min(torch.get_num_threads(), cfg.depth, DRAW_AHEAD_BYTES // size))


def draw_weights(cfg, device: torch.device):
    """Yield every layer's weight in order, `draw_ahead` layers drawn at once on CPU threads.

    The numbers do not depend on the grouping: layer i's weight comes from its own (seed, i)
    generator whichever thread draws it. Close the generator to stop early.
    """
    n = draw_ahead(cfg, device)
    if n == 1:
        for i in range(cfg.depth):
            yield make_weight(cfg, i, device)
        return
    with ThreadPoolExecutor(n, thread_name_prefix="bncli-draw") as pool:
        for start in range(0, cfg.depth, n):
            group = [pool.submit(make_weight, cfg, i, device) for i in range(start, min(start + n, cfg.depth))]
            while group:  # layer i runs as soon as its own weight is ready, which is then let go
                yield group.pop(0).result()


def run(cfg, device: torch.device, progress=None) -> Result:
    """Forward N(0,1) input through `cfg.depth` layers; stop at the first non-finite output.

    progress(layers_done) is called every few layers; on CUDA only when given, since each
    call is a host sync. With cfg.grads, one backward pass follows (from the last finite
    layer) and the gradient statistics are read back with a second sync.
    """
    step = layer_fn(cfg, device)
    stat_dtype = torch.float64 if cfg.dtype.value == "float64" else torch.float32
    k = len(BASE) + int(cfg.erank)
    buf = torch.empty(cfg.depth, k, device=device, dtype=stat_dtype)
    check = CHECK_EVERY if device.type == "cpu" or progress is not None else 0
    keep = cfg.keep_weights or cfg.grads
    weights = list(draw_weights(cfg, device)) if keep else None
    draws = iter(weights) if keep else draw_weights(cfg, device)
    outs = [] if cfg.grads else None
    if cfg.grads:
        for w in weights:
            w.requires_grad_(True)

    done, status = 0, "ok"
    try:
        with torch.set_grad_enabled(cfg.grads):
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
