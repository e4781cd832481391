"""Depth study: the std (and friends) of every layer's output in a deep MLP, conv stack or ResNet.

    bncli depth-study --init kaiming --norm batchnorm --depth 100 --grads --erank
    bncli depth-study --arch resnet --norm none --residual 0.2

Statistics stay on the device in one (depth, k) tensor and are read back once at the end:
no .item() per layer, so a GPU never waits on the host mid-run. The costly ones are
opt-in: --erank (an SVD per layer) and --grads (every weight kept, one backward pass);
their columns are left empty when off. Definitions and sources: docs/statistics.md.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Optional

import numpy as np
import pandas as pd
import torch
from pydantic import Field, model_validator
from rich.table import Table
from rich.text import Text

from bncli import figures, report, theory
from bncli.choices import Activation, Arch, BNMode, Init, Norm, Order
from bncli.config import AnyDType, Config, Device, NonNegFloat, PosFloat, Positive, Seed
from bncli.errors import BncliError, plural
from bncli.nets import (
    DTYPES,
    layer_fn,
    make_cotangent,
    make_input,
    make_weight,
    resolve_device,
    stage_of,
    torch_threads,
)
from bncli.studies.base import Result, capacity


class DepthConfig(Config):
    """A deep MLP, Linear(bias=False) -> norm -> activation, fed N(0,1) input."""

    depth: Positive = 100  # number of layers
    width: Positive = 256  # features per layer
    batch_size: Positive = 16  # rows of the N(0,1) input
    init: Init = Init.kaiming  # weight init scheme
    init_std: PosFloat = 1.0  # std of the `normal` init; ignored by the others
    norm: Norm = Norm.batchnorm  # batchnorm uses batch statistics (train mode)
    activation: Activation = Activation.relu
    seed: Seed  # seeds the input and, per layer, each weight
    device: Device
    dtype: AnyDType
    keep_weights: bool = False  # build every weight up front instead of one layer at a time
    init_gain: PosFloat = 1.0  # gain of orthogonal, xavier, xavier_uniform and lecun_normal
    groups: Positive = 32  # groupnorm's number of groups; must divide width
    bn_mode: BNMode = BNMode.train  # eval: running stats, 0 and 1 at init, so almost the identity
    negative_slope: Annotated[NonNegFloat, Field(le=1e6)] = 0.01  # leaky_relu's slope below zero
    order: Order = Order.linear_norm_act  # or linear-act-norm
    residual: Optional[NonNegFloat] = None  # alpha: each layer is x + alpha f(x); 0 a plain stack (None: 1 for resnet)
    grads: bool = False  # one backward pass for grad_std, weight_grad_norm (keeps every weight)
    erank: bool = False  # effective rank of every layer's output (one SVD per layer)
    arch: Arch = Arch.mlp  # mlp, conv (Conv2d stack on feature maps) or resnet (pre-activation blocks)
    channels: Positive = 64  # conv and resnet: feature maps of the input and the first stage
    image_size: Positive = 16  # conv and resnet: H = W of the input
    kernel_size: Positive = 3  # conv and resnet: odd, padded by kernel_size // 2 to keep H and W
    stages: Positive = 3  # resnet: each stage after the first halves H and W and doubles the channels
    blocks: Positive = 8  # resnet: residual blocks per stage (depth is stages x blocks)

    @model_validator(mode="after")
    def _check(self) -> DepthConfig:
        if self.norm == Norm.batchnorm and self.bn_mode == BNMode.train and self.batch_size < 2:
            raise ValueError(
                "batch_size must be at least 2 with norm batchnorm (BatchNorm cannot normalise a single sample)"
            )
        features, name = (self.width, "width") if self.arch == Arch.mlp else (self.channels, "channels")
        if self.norm == Norm.groupnorm and features % self.groups:
            raise ValueError(
                f"groups must divide {name} for norm groupnorm: {name} {features} "
                f"is not a multiple of groups {self.groups}"
            )
        pixels = 1 if self.arch == Arch.mlp else self.image_size**2
        if self.norm == Norm.groupnorm and features // self.groups * pixels < 2:
            raise ValueError(
                f"groups: each of the {self.groups} groups must hold at least 2 values to normalise "
                f"({name} {features} / groups {self.groups} x {pixels} pixel(s))"
            )
        if self.batch_size * features * pixels < 2:
            raise ValueError(f"batch_size x {name} must be at least 2: a std needs two values")
        if self.residual is None:
            self.residual = 1.0 if self.arch == Arch.resnet else 0.0
        if self.arch != Arch.mlp:
            _check_maps(self)
        return self


def _check_maps(cfg: DepthConfig) -> None:
    """The conv and resnet fields agree with each other."""
    if cfg.kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (padding kernel_size // 2 keeps H and W), got {cfg.kernel_size}")
    if cfg.arch != Arch.resnet:
        return
    if cfg.image_size % 2 ** (cfg.stages - 1):
        raise ValueError(
            f"image_size must be divisible by 2^(stages - 1) = {2 ** (cfg.stages - 1)} "
            f"(each stage after the first halves it), got {cfg.image_size}"
        )
    if cfg.stages * cfg.blocks > 100_000 or cfg.stages > 32:
        raise ValueError("stages x blocks must be at most 100000, and stages at most 32")
    if "depth" in cfg.model_fields_set and cfg.depth != cfg.stages * cfg.blocks:
        raise ValueError(
            f"depth is stages x blocks ({cfg.stages * cfg.blocks}) for arch resnet; give stages and blocks instead"
        )
    cfg.depth = cfg.stages * cfg.blocks


NAME = "depth-study"
CONFIG = DepthConfig
CSV = "layers.csv"
ID_COLUMNS = ["layer"]
LABEL_KEYS = ["init", "norm", "activation"]
PLOT = "std_by_layer.png"
RUN_PLOT = False
SWEEP_COLUMNS = ["last-layer std", "min std", "max std", "diverged"]
COMPARE_METRIC = "std"  # what `bncli compare` sets side by side unless --metric says
BASE = ["mean", "std", "abs_max", "zero_fraction", "chan_sq_mean", "chan_var"]  # always on
COLUMNS = ["layer", *BASE, "erank", "grad_std", "weight_grad_norm", "theory_std"]
MAP_COLUMNS = ["layer", "stage", *BASE, "branch_var", *COLUMNS[len(BASE) + 1 :]]  # conv and resnet
OPTIONAL = {"erank": "erank", "grad_std": "grads", "weight_grad_norm": "grads"}  # column: its flag
# divergence is a non-finite mean, std, abs_max or zero_fraction; chan_sq_mean and chan_var are
# squares, which overflow (inf) sooner and are kept as values
WATCH = 4
CHUNK = 16  # layers whose statistics are computed together (and checked for divergence, on CPU)
CHUNK_BYTES = {"cpu": 2**20, "cuda": 64 * 2**20}  # a chunk's float64 temporaries: in cache on CPU
DRAW_AHEAD_BYTES = 512 * 2**20  # weights in flight at most when streaming: memory stays flat in depth


def columns(cfg: DepthConfig) -> list[str]:
    return COLUMNS if cfg.arch == Arch.mlp else MAP_COLUMNS


def output_elements(cfg: DepthConfig) -> int:
    """Values in the largest layer output: batch x width, or batch x C x H x W (a ResNet's
    first stage is its largest: later ones have twice the channels on a quarter of the pixels)."""
    if cfg.arch == Arch.mlp:
        return cfg.batch_size * cfg.width
    return cfg.batch_size * cfg.channels * cfg.image_size**2


def weight_elements(cfg: DepthConfig) -> int:
    """Values in the largest layer's weights (a ResNet block: two convs and its skip)."""
    if cfg.arch == Arch.mlp:
        return cfg.width * cfg.width
    c, k2 = cfg.channels, cfg.kernel_size**2
    if cfg.arch == Arch.conv:
        return c * c * k2
    c *= 2 ** (cfg.stages - 1)
    return 2 * c * c * k2 + c * c // 2


def layer_macs(cfg: DepthConfig) -> int:
    """Multiply-adds of the largest layer: what a layer costs."""
    if cfg.arch == Arch.mlp:
        return cfg.batch_size * cfg.width * cfg.width
    return output_elements(cfg) * cfg.channels * cfg.kernel_size**2 * (1 if cfg.arch == Arch.conv else 2)


def estimate_bytes(cfg: DepthConfig) -> int:
    """Peak memory a run needs, before anything is allocated."""
    elt = DTYPES[cfg.dtype.value].itemsize
    draw = 8 if cfg.dtype.value == "float64" else 4
    w2 = weight_elements(cfg)
    kept = cfg.keep_weights or cfg.grads
    ahead = 1 + draw_ahead(cfg, torch.get_num_threads())  # drawn ahead and in use, when streaming
    weights = (cfg.depth if kept else ahead) * w2 * elt * (2 if cfg.grads else 1)  # + their gradients
    draw_tmp = ahead * w2 * draw * (4 if cfg.init.value == "orthogonal" else 1)  # QR needs workspace
    acts = (4 if cfg.arch == Arch.mlp else 8) * output_elements(cfg) * max(elt, 4)
    if cfg.grads:  # autograd keeps every layer's intermediates, ~6 activations each (~12 a block)
        acts *= 1 + 1.5 * cfg.depth
    chunk = chunk_layers(cfg, torch.device("cuda"))  # the larger of the two devices' chunks
    stats = chunk * output_elements(cfg) * (elt + 2 * 8)  # a chunk and its float64 passes
    return int(weights + draw_tmp + acts + stats + cfg.depth * len(MAP_COLUMNS) * 8)


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def label(cfg: DepthConfig) -> str:
    """The part of the default run name that tells runs apart."""
    arch = "" if cfg.arch == Arch.mlp else f"{cfg.arch.value}-"
    return f"{arch}{cfg.init.value}-{cfg.norm.value}"


def progress_total(cfg: DepthConfig) -> int | None:
    """Long runs get a progress bar, one step a layer."""
    long = cfg.depth > 500 or cfg.depth * layer_macs(cfg) > 5e10
    return cfg.depth if long else None


def _sizes(cfg: DepthConfig) -> str:
    if cfg.arch == Arch.mlp:
        return f"depth {cfg.depth}, width {cfg.width}, batch_size {cfg.batch_size}"
    shape = f"channels {cfg.channels}, image_size {cfg.image_size}, kernel_size {cfg.kernel_size}"
    blocks = f"stages {cfg.stages}, blocks {cfg.blocks}" if cfg.arch == Arch.resnet else f"depth {cfg.depth}"
    return f"{cfg.arch.value}: {blocks}, {shape}, batch_size {cfg.batch_size}"


def describe_size(cfg: DepthConfig) -> str:
    n = cfg.depth if cfg.keep_weights or cfg.grads else 1
    held = f"{cfg.width}x{cfg.width}" if cfg.arch == Arch.mlp else f"up to {weight_elements(cfg)} values"
    return f"{_sizes(cfg)}, {cfg.dtype.value} ({n} weight(s) of {held} held at once, about {_gb(estimate_bytes(cfg))})"


def preflight(cfg: DepthConfig) -> torch.device:
    device = resolve_device(cfg.device)
    need, have = estimate_bytes(cfg), capacity(device)
    if need > 0.9 * have:
        smaller = (
            "--width, --batch-size or --depth"
            if cfg.arch == Arch.mlp
            else "--channels, --image-size, --batch-size or --depth (--stages, --blocks)"
        )
        raise BncliError(
            f"too large: {_sizes(cfg)}{', keep_weights' if cfg.keep_weights else ''} needs about {_gb(need)} "
            f"but {device} has {_gb(have)}; use a smaller {smaller}"
        )
    return device


def enabled(cfg: DepthConfig) -> list[str]:
    """The columns this config computes; the others are written empty."""
    on = [c for c in columns(cfg) if c not in OPTIONAL or getattr(cfg, OPTIONAL[c])]
    return [c for c in on if c != "branch_var" or cfg.arch == Arch.resnet]


def _stats(xs: torch.Tensor) -> torch.Tensor:
    """BASE statistics of a chunk of layers' outputs (layers x batch x width), as one on-device
    (layers, 6) tensor: one set of kernels per chunk, not per layer (on a GPU the launches, not
    the arithmetic, cost the time at the notebook's sizes).

    chan_sq_mean and chan_var are Brock et al.'s: the per-channel mean and (biased) variance
    over the batch, averaged over channels, so their sum is mean(x^2). Every floating-point sum
    has one output per layer and channel, or per layer, never a single number: torch's CPU
    kernels then sum each output in a fixed order whatever the threads, so the bits do not
    depend on them.
    """
    n = xs.shape[1] * xs.shape[2]
    # float64 passes: squares of outputs near float32's max finite stay finite, so only a
    # non-finite output reads as diverged
    f64 = torch.float64
    cmean = xs.mean(1, dtype=f64)  # (layers, width)
    chan_var = (xs - cmean[:, None]).square_().mean(1).mean(1)  # xs - cmean is float64: no float32 copy first
    mean = cmean.mean(1)
    var = chan_var + (cmean - mean[:, None]).square().mean(1)  # all outputs' biased variance (total variance)
    std = (var * (n / (n - 1))).sqrt() if n > 1 else var * float("nan")  # unbiased, as the notebook's x.std()
    flat = xs.flatten(1)  # min, max and counts are exact in any order: one pass over each layer
    absmax = torch.maximum(-flat.amin(1), flat.amax(1)).to(f64)  # no abs() temporary
    zero = (n - flat.bool().sum(1)).to(f64) / n  # x.bool() is 3x faster than x == 0 on CPU; nan is nonzero
    return torch.stack([mean, std, absmax, zero, cmean.square().mean(1), chan_var], 1)


def chunk_layers(cfg: DepthConfig, device: torch.device) -> int:
    """Layers whose outputs are kept to compute their statistics together: up to CHUNK, within
    CHUNK_BYTES of float64 temporaries. On a GPU fewer, larger kernels save launches; on a CPU
    past its cache a larger chunk only costs memory traffic (1.5x slower at width 1024, batch 128)."""
    limit = CHUNK_BYTES.get(device.type, CHUNK_BYTES["cuda"])
    return max(1, min(CHUNK, cfg.depth, limit // (output_elements(cfg) * 8)))


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


def draw_ahead(cfg: DepthConfig, threads: int) -> int:
    """Layers drawn ahead by `threads` threads: one each and one spare, within DRAW_AHEAD_BYTES."""
    size = weight_elements(cfg) * max(DTYPES[cfg.dtype.value].itemsize, 4)
    return max(1, min(threads + 1, DRAW_AHEAD_BYTES // size)) if threads else 0


def draw_weights(cfg: DepthConfig, device: torch.device, threads: int = 0):
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


def run(cfg: DepthConfig, device: torch.device, progress=None) -> Result:
    """Forward N(0,1) input through `cfg.depth` layers; stop at the first non-finite output.

    progress(layers_done) is called every few layers; on CUDA only when given, since each
    call is a host sync. With cfg.grads, one backward pass follows (from the last finite
    layer) and the gradient statistics are read back with a second sync.
    """
    # float64 whatever the dtype: _stats computes in float64, and chan_sq_mean's squares would
    # overflow a float32 cell long before the outputs themselves do
    buf = torch.empty(cfg.depth, len(buffered(cfg)), device=device, dtype=torch.float64)
    keep = cfg.keep_weights or cfg.grads
    weights, draws, computing = _weights(cfg, device, keep)
    outs = [] if cfg.grads else None
    status = "ok"
    try:
        done = _forward(cfg, device, draws, buf, outs, computing, progress)
    except _Interrupted as e:
        done, status = e.done, "interrupted"
    finally:
        if not keep:
            draws.close()  # waits for the few draws still in flight

    rows = buf[:done].cpu()  # the one read-back (two with --grads)
    bad = (~torch.isfinite(rows[:, :WATCH]).all(dim=1)).nonzero()
    diverged_at = int(bad[0, 0]) if len(bad) else None
    if diverged_at is not None:
        rows, status = rows[: diverged_at + 1], "diverged"
    table = pd.DataFrame(rows.double().numpy(), columns=buffered(cfg))
    if cfg.arch != Arch.mlp:
        table.insert(0, "stage", [stage_of(cfg, i)[0] if cfg.arch == Arch.resnet else 0 for i in range(len(table))])
    table.insert(0, "layer", range(len(table)))
    info = {"diverged_at": diverged_at, "layers_done": len(table)}
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
    off = [c for c in columns(cfg) if c not in enabled(cfg)]
    for col in off:
        table[col] = float("nan")
    return Result(table[columns(cfg)], status, info, off)


def buffered(cfg: DepthConfig) -> list[str]:
    """The statistics kept on the device during a run, in the buffer's column order."""
    return BASE + (["branch_var"] if cfg.arch == Arch.resnet else []) + (["erank"] if cfg.erank else [])


def _weights(cfg: DepthConfig, device: torch.device, keep: bool):
    """(every weight or None, an iterator over the weights, the computing threads).

    Every op here gives the same bits on any number of threads (nets._bn_train), so the
    threads only decide speed. Kept weights are drawn first, on every thread.
    """
    drawing, computing = split_threads(device)
    if cfg.init.value == "orthogonal":  # its QR sets torch's (process-wide) threads: not in a pool
        drawing = 0
    if not keep:
        return None, draw_weights(cfg, device, drawing), computing
    with torch_threads(computing):
        weights = list(draw_weights(cfg, device, drawing + computing if drawing else 0))
    if cfg.grads:
        for w in weights:
            for t in w if isinstance(w, tuple) else (w,):
                if t is not None:
                    t.requires_grad_(True)
    return weights, iter(weights), computing


class _Interrupted(Exception):
    def __init__(self, done: int):
        self.done = done


def _forward(
    cfg: DepthConfig, device: torch.device, draws, buf: torch.Tensor, outs: list | None, computing: int, progress
) -> int:
    """Fill buf's rows layer by layer; the number of layers done (early at a non-finite chunk).

    Each output, as a (samples, channels) matrix, is copied into a chunk buffer and the chunk's
    statistics computed at once (a ResNet's stages start new chunks: their shapes differ). On
    CPU (or with a progress bar) each chunk is then checked for a non-finite output with one
    host sync; on CUDA without one the run never waits for the host until the end.
    """
    step = layer_fn(cfg, device)
    check = device.type == "cpu" or progress is not None
    k, cols = chunk_layers(cfg, device), buffered(cfg)
    stash, done, flushed = None, 0, 0

    def flush() -> bool:
        """Statistics of the stashed layers into buf; False when one of them is not finite."""
        nonlocal flushed
        if done == flushed:
            return True
        buf[flushed:done, : len(BASE)] = _stats(stash[: done - flushed])
        ok = not check or bool(torch.isfinite(buf[flushed:done, :WATCH]).all())
        flushed = done
        return ok

    try:
        with torch.set_grad_enabled(cfg.grads), torch_threads(computing):
            x = make_input(cfg, device)
            for i in range(cfg.depth):
                out = step(x, next(draws))
                x, branch = out if isinstance(out, tuple) else (out, None)
                xd = x.detach()
                rows = _samples_by_channels(xd)
                shape = (rows[..., 0].numel(), rows.shape[-1])
                if stash is None or stash.shape[1:] != shape:  # the first layer, or a new stage
                    if not flush():
                        break
                    stash = torch.empty(k, *shape, device=device, dtype=xd.dtype)
                row = stash[i - flushed]
                row.view(rows.shape).copy_(rows)
                _layer_stats(buf[i], cols, row, branch)
                if outs is not None:
                    outs.append(x)
                done = i + 1
                if done - flushed == k:
                    if not flush():
                        break
                    if progress is not None:
                        progress(done)
            flush()  # the last, partial chunk
    except KeyboardInterrupt:
        with torch_threads(computing):
            flush()  # the layers done since the last chunk are kept too
        raise _Interrupted(done) from None
    return done


def _layer_stats(out: torch.Tensor, cols: list[str], row: torch.Tensor, branch: torch.Tensor | None) -> None:
    """The statistics computed a layer at a time, into its buffer row: the residual branch's
    channel variance (resnet) and the effective rank (--erank, an SVD per layer)."""
    if branch is not None:
        out[cols.index("branch_var")] = _chan_var(branch.detach())
    if "erank" in cols:
        out[cols.index("erank")] = _erank(row)


def _samples_by_channels(x: torch.Tensor) -> torch.Tensor:
    """A layer's output with its channels last: the MLP's (batch, width) as it is, a feature
    map's (N, C, H, W) as an (N, H, W, C) view. Copied into a chunk, it is the (samples,
    channels) matrix of the statistics: each pixel of each image a sample, as Brock et al.
    count them."""
    return x if x.dim() == 2 else x.permute(0, 2, 3, 1)


def _chan_var(f: torch.Tensor) -> torch.Tensor:
    """Average over channels of the (biased) variance over N, H and W: Brock et al.'s average
    channel variance, here of a residual branch's output."""
    cm = f.mean((0, 2, 3), keepdim=True, dtype=torch.float64)
    return (f - cm).square_().mean((0, 2, 3)).mean()


def _bn_relu(cfg: DepthConfig) -> bool:
    """The stack Yang et al.'s ReLU gradient rate is derived for (docs/theory.md)."""
    return (
        cfg.norm.value == "batchnorm"
        and cfg.bn_mode.value == "train"
        and cfg.activation.value == "relu"
        and cfg.order.value == "linear-norm-act"
        and not cfg.residual
        and cfg.batch_size >= 4
    )


def _grads(cfg: DepthConfig, device, outs, weights, n: int):
    """(len(outs), 2) float64 array of [grad_std, weight_grad_norm]; rows past n are nan.

    The output of layer n - 1 is contracted with a fixed seeded N(0, 1) cotangent and one
    backward pass gives the gradient with respect to every layer's output and weight.
    """
    out = np.full((len(outs), 2), np.nan)
    if n == 0:
        return out
    try:
        ct = make_cotangent(cfg, device, tuple(outs[n - 1].shape))
        # a ResNet block's weights are a tuple: its gradient norm is over all of them
        parts = [[t for t in (w if isinstance(w, tuple) else (w,)) if t is not None] for w in weights[:n]]
        g = torch.autograd.grad(outs[n - 1], outs[:n] + [t for p in parts for t in p], ct)
        go, gw = g[:n], iter(g[n:])
        up = (lambda t: t.float()) if ct.dtype == torch.bfloat16 else (lambda t: t)  # noqa: E731

        def norm(p):
            norms = [torch.linalg.vector_norm(up(next(gw))) for _ in p]
            return norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))

        stats = torch.stack([torch.stack([up(a).std(), norm(p)]) for a, p in zip(go, parts, strict=True)])
        out[:n] = stats.double().cpu().numpy()
    except KeyboardInterrupt:
        return None
    return out


# -- rendering ----------------------------------------------------------------------------------


def auto_every(depth: int) -> int:
    """Every layer up to 100 layers, then about 50 rows."""
    return 1 if depth <= 100 else math.ceil(depth / 50)


def shown_layers(n: int, every: int, diverged_at: int | None = None) -> list[int]:
    """Every `every`-th layer, plus the first, the last and the diverging one, always."""
    keep = set(range(0, n, every)) | {0, n - 1}
    if diverged_at is not None:
        keep.add(diverged_at)
    return sorted(i for i in keep if 0 <= i < n)


def layer_table(table: pd.DataFrame, every: int | None = None, diverged_at: int | None = None) -> Table:
    every = every or auto_every(len(table))
    cols = report.shown_columns(table)
    t = report.table(cols)
    for i in shown_layers(len(table), every, diverged_at):
        row = table.iloc[i]
        style = "red" if i == diverged_at else None
        t.add_row(*[str(int(row[c])) if c == "layer" else report.fmt(float(row[c])) for c in cols], style=style)
    return t


def summary(table: pd.DataFrame, meta: dict) -> Text:
    """`std over 100 layers: min 0.570, max 0.595, last 0.583`, the growth factors per layer
    of std and (going backwards) grad_std, and, if so, where it diverged."""
    lines = []
    diverged_at = meta.get("diverged_at")
    finite = table["std"][table["std"].map(math.isfinite)]
    if len(finite):
        lines.append(
            f"std over {plural(len(table), 'layer')}: min {report.num(finite.min())}, "
            f"max {report.num(finite.max())}, last {report.num(table['std'].iloc[-1])}"
        )
    g = report.growth(table["std"]) if len(table) else None
    if g is not None:
        lines.append(f"std growth per layer: x{g:.4f} (geometric mean, first to last layer)")
    g = report.growth(table["grad_std"], backwards=True) if "grad_std" in report.shown_columns(table) else None
    if g is not None:
        pred = meta.get("grad_growth_theory")
        lines.append(
            f"grad_std growth per layer, going backwards: x{g:.4f}"
            + (f" (mean-field theory, Yang et al. 2019: x{pred:.4f})" if pred else "")
        )
    if diverged_at is not None:
        lines.append(f"diverged: non-finite output at layer {diverged_at}")
    if meta.get("status") == "interrupted":
        lines.append(f"interrupted after {plural(len(table), 'layer')}")
    return Text("\n".join(lines))


def render(run, every: int | None = None) -> list:
    """The layers (every `every`-th) and the summary lines, after a run and in `bncli show`."""
    return [layer_table(run.table, every, run.meta.get("diverged_at")), summary(run.table, run.meta)]


def sweep_cells(runs: list[pd.DataFrame]) -> list[str]:
    """SWEEP_COLUMNS over a config's finished runs: the last layer's std as mean ± sd over the
    seeds that did not diverge, the min and max std over layers and seeds, the diverged count."""
    std = np.concatenate([r["std"].to_numpy(float) for r in runs]) if runs else np.array([])
    std = std[np.isfinite(std)]
    last = [r["std"].iloc[-1] for r in runs if r["status"].iloc[0] == "ok"]
    diverged = sum(r["status"].iloc[0] == "diverged" for r in runs)
    return [
        report.pm(last),
        report.num(float(std.min())) if len(std) else "-",
        report.num(float(std.max())) if len(std) else "-",
        f"{diverged}/{len(runs)}",
    ]


SPP = ["chan_sq_mean", "chan_var", "branch_var"]  # Brock et al.'s signal-propagation plot


def draw(plt, table: pd.DataFrame, metric: str | None, opts: figures.Options | None = None):
    """`metric` (default std) against layer, log-scaled when it spans decades; an x where a run
    diverged; a panel per value of opts.facet, each with its own y scale. Conv and ResNet runs
    (a `stage` column) default to Brock et al.'s signal propagation plot, a panel per statistic
    (a row per facet value), with the stage boundaries marked."""
    if "stage" in table.columns and table["stage"].notna().any():
        return _draw_maps(plt, table, [metric] if metric else [m for m in SPP if table[m].notna().any()], opts)
    metric = metric or "std"
    styles = figures.line_styles(table)
    panels = figures.panels(table, opts)
    cols = min(len(panels), 3)
    fig, axes = figures.subplots(
        plt, -(-len(panels) // cols), cols, 10 if cols == 1 else 5, 5.5 if cols == 1 else 4.2, len(panels)
    )
    any_diverged = False
    for ax, (name, rows) in zip(axes, panels, strict=True):
        log = figures.use_log(rows[metric], opts)
        for parts, g in figures.groups(rows):
            done = g[g["status"].isin(("ok", "diverged"))]
            if not done.empty:
                any_diverged |= _draw_group(ax, done, metric, styles[parts], log)
        ax.set_yscale("log" if log else "linear")
        if not log and (rows[metric].dropna() >= 0).all():  # a std that holds at 0.58 reads flat,
            ax.set_ylim(0, ax.get_ylim()[1] * 1.15)  # not as noise magnified
        figures.note_overlaps(ax)
        if name is not None:
            ax.set_title(name)
        ax.set_xlabel("layer")
        ax.set_ylabel(metric + (" (log scale)" if log else ""))
        ax.grid(True, which="major", alpha=0.3)
    figures.title(fig, axes, f"{metric} of each layer's output ({figures.seeds_note(table)})", opts)
    extra = []
    if any_diverged:
        from matplotlib.lines import Line2D

        extra.append(
            (
                Line2D([], [], marker="x", ls="none", color="0.3", ms=8, mew=2),
                "diverged (x at the first non-finite layer)",
            )
        )
    figures.legend(axes[cols - 1], axes, extra)
    return fig


def auto_facet(table: pd.DataFrame, metric: str | None, columns: list[str]) -> str | None:
    """A panel per value of the grid key that leaves the most stable configs in panels without
    a wild one (diverging, or spanning over two decades), when one axis would span ten decades
    or more: next to a config that explodes or vanishes, the ones that hold near 1 are flat
    lines on top of each other on one log axis."""
    if "stage" in table.columns and table["stage"].notna().any():
        return None  # the signal-propagation plot compares its configs on one axis
    metric = metric or "std"
    done = table[table["status"].isin(("ok", "diverged"))]
    if figures.decades(done[metric]) < 10:
        return None
    wild = {k: figures.decades(g[metric]) > 2 or (g["status"] == "diverged").any() for k, g in done.groupby("line")}
    best, most = None, 0
    for col in columns:
        split = [set(g["line"]) for _, g in done.groupby(col, sort=False)]
        readable = sum(len(lines) for lines in split if not any(wild[k] for k in lines))  # stable, unsquashed
        if 1 < len(split) <= 6 and readable > most:
            best, most = col, readable
    return best


def _draw_maps(plt, table: pd.DataFrame, metrics: list[str], opts: figures.Options | None):
    """One panel per metric against block (layer), mean and +-1 sd over seeds, stage
    boundaries dashed; a row of them per value of opts.facet."""
    styles = figures.line_styles(table)
    panels = figures.panels(table, opts)
    fig, axes = figures.subplots(plt, len(panels), len(metrics), 5.2, 4.8)
    for r, (name, rows) in enumerate(panels):
        for ax, m in zip(axes[r * len(metrics) : (r + 1) * len(metrics)], metrics, strict=True):
            log = figures.use_log(rows[m], opts)
            for parts, g in figures.groups(rows):
                done = g[g["status"].isin(("ok", "diverged"))]
                if not done.empty:
                    _draw_group(ax, done, m, styles[parts], log)
            stages = rows.dropna(subset=["stage"]).groupby("stage")["layer"].min()
            for x in stages.iloc[1:]:
                ax.axvline(x - 0.5, color="0.5", lw=0.8, ls="--")
            ax.set_yscale("log" if log else "linear")
            ax.set_title(m if name is None else f"{m}: {name}")
            ax.set_xlabel("block" if len(stages) > 1 else "layer")
            ax.grid(True, which="major", alpha=0.3)
    figures.title(fig, axes, f"signal propagation ({figures.seeds_note(table)}; dashed: a new stage)", opts)
    figures.legend(axes[len(metrics) - 1], axes)
    return fig


def _draw_group(ax, done: pd.DataFrame, metric: str, st: dict, log: bool) -> bool:
    """One config's mean line and band; True when one of its runs diverged (and got an x)."""
    x, mean, sd, n = figures.mean_sd(done, "layer", metric)
    if log:
        mean = np.where(mean > 0, mean, np.nan)  # underflow to 0 cannot sit on a log axis
    ax.plot(x, mean, label=done["label"].iloc[0], lw=1.6, **st)
    if n > 1:
        lo, hi = mean - sd, mean + sd
        if log:  # mean - sd can be <= 0, a hole on a log axis: mirror the upper edge in log space
            lo = mean * mean / hi  # = mean - sd + O(sd^2 / mean), for a small sd
        ax.fill_between(x, lo, hi, color=st["color"], alpha=0.15, lw=0)
    diverged = False
    for _, run in done[done["status"] == "diverged"].groupby("run" if "run" in done else "seed", sort=False):
        finite = run[np.isfinite(run[metric].astype(float))]
        if len(finite):
            ax.plot(
                run["layer"].iloc[-1], finite[metric].iloc[-1], marker="x", ms=8, mew=2, color=st["color"], ls="none"
            )
            diverged = True
    return diverged
