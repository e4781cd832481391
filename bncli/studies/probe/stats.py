"""probe's statistics: the depth study's records where the definitions are the same, computed
per tap inside the forward hook, reduced on the device into one small vector.

    python -c "from bncli.studies.probe import stats; print(stats.COLUMNS)"

`x[b, c]` is a tapped output with its channel axis last and every other axis (batch, pixels,
tokens) flattened into `b`, so `mean`, `std`, `abs_max`, `zero_fraction`, `chan_sq_mean`,
`chan_var`, `erank` and `grad_std` read exactly as docs/statistics.md defines them for the
depth study, whose records (bncli/studies/depth/stats.py) they are.

How, for speed (benchmarks/bench_probe.py): per-channel sums and sums of squares in the
tensor's own float32, as reductions over every axis but the channel one (`sum` and
`vector_norm`, one pass each), the extremes with one `aminmax`, and the zeros counted by
writing `x == 0` into one reused float buffer, a chunk at a time, and summing it (not at all
where the extremes are of one sign). A (N, C, ...) tap larger than the L3 cache (FUSE) is read
CHUNK values at a time with all four reductions on the chunk while it is in the L2 cache. On
the CPU everything after those reductions is numpy and Python floats on the small
per-channel vectors (a torch call costs 5-10 us; a probe of every leaf of a ResNet-50 makes
150 calls of the hook). The variance is E x^2 - (E x)^2 in float64, guarded: where that
difference would cancel more than CANCEL allows (E x^2 > CANCEL x the variance, as for a
channel of large mean and little spread) or the squares overflow float32, the tap is redone
two-pass in float64 (the depth study's method, Chunk). Welford's `var_mean` and
`count_nonzero` cost 30x a sum here. On CUDA every tap is computed two-pass in float64 and
left on the device: deciding where to redo would wait on the device once per tap.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from bncli.studies.depth import stats as depth

if TYPE_CHECKING:
    import numpy as np
    import torch
else:
    from bncli.lazy import lazy

    np, torch = lazy("numpy"), lazy("torch")

CANCEL = 8.0  # E x^2 / var beyond which one-pass float32 sums lose more than ~1e-6 of the variance
ZERO_CHUNK = 2**20  # values compared with 0 at once: the buffer stays in cache, whatever the tap's size
FUSE = 2**22  # values beyond which a (N, C, ...) tap, larger than the L3 cache, is read a chunk at a time
CHUNK = 2**19  # values per chunk there (2 MiB of float32): every reduction reads it while it is in cache

_DEPTH = {s.name: s for s in depth.STATS}
TAP = [
    depth.Stat("index", "id", "the tap, from 0, in the order the forward pass reached it"),
    depth.Stat("module", "id", "the module's qualified name (`layer3.1`; `(output)` for the model's output)"),
    depth.Stat("output", "id", "the tensor read: `out` (the output), `out[0]`, `out.last_hidden_state`"),
    depth.Stat("call", "id", "the module's call, from 0: a module called twice gives two rows"),
    depth.Stat("type", "id", "the module's class"),
    depth.Stat("shape", "id", "the output's shape, `8x64x56x56`"),
    depth.Stat("channel_axis", "id", "the axis taken as channels: 1 for (N, C, ...) maps, the last for tokens"),
]
MOMENTS = ["mean", "std", "abs_max", "zero_fraction", "chan_sq_mean", "chan_var"]  # computed together, in order
STATS: list[depth.Stat] = [
    *TAP,
    *(_DEPTH[name] for name in MOMENTS),
    dataclasses.replace(_DEPTH["erank"], compute=lambda rows, branch: depth.erank(rows)),
    dataclasses.replace(
        _DEPTH["grad_std"],
        what="std (unbiased) of `dL/dx`, `L = sum(y * c)`, `y` the model's output and `c` a fixed N(0, 1) tensor",
    ),
]
TEXT = ["module", "output", "type", "shape"]


COLUMNS = [s.name for s in STATS]  # probe.csv's, in order (statistics that are off: empty cells)


def watched() -> list[str]:
    """The columns whose non-finite value means the signal diverged at that tap."""
    return [s.name for s in STATS if s.watch]


class Zeros:
    """One reused buffer per device and dtype, for counting zeros (and squaring channels-last
    values) a chunk at a time."""

    def __init__(self) -> None:
        self._buf: dict[str, torch.Tensor] = {}

    def buffer(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = f"{device}/{dtype}"
        buf = self._buf.get(key)
        if buf is None:
            buf = self._buf[key] = torch.empty(ZERO_CHUNK, device=device, dtype=dtype)
        return buf

    def count(self, flat: torch.Tensor) -> torch.Tensor:
        """The number of exact zeros of a 1-d tensor, as a float64 scalar on its device (each
        chunk's float32 sum is exact: at most ZERO_CHUNK < 2**24)."""
        buf = self.buffer(flat.device, torch.float32)
        parts = []
        for chunk in flat.split(ZERO_CHUNK):
            out = buf[: chunk.numel()]
            torch.eq(chunk, 0, out=out)
            parts.append(out.sum())
        return torch.stack(parts).sum(dtype=torch.float64)

    def number(self, x: torch.Tensor) -> int:
        """count's number for a tensor of any shape, read at once: on the CPU a read waits on nothing."""
        flat = x.reshape(-1) if x.is_contiguous() else x.contiguous().view(-1)
        buf = self.buffer(flat.device, torch.float32)
        total = 0
        for start in range(0, flat.numel(), ZERO_CHUNK):
            chunk = flat[start : start + ZERO_CHUNK]
            out = buf[: chunk.numel()]
            torch.eq(chunk, 0, out=out)
            total += int(out.sum().item())
        return total


def _exact(x: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-channel mean, per-channel biased variance), two-pass in float64 (depth.Chunk's way)."""
    dims = tuple(d for d in range(x.dim()) if d != axis)
    cm = x.mean(dims, keepdim=True, dtype=torch.float64)
    return cm.flatten(), (x - cm).square_().mean(dims)


def _sums(x: torch.Tensor, axis: int, zeros: Zeros) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (sum, sum of squares) in float64, from reductions in x's dtype: (N, C, ...) as
    N x C contiguous rows (a reduction over `dims` there is 20x slower), the N partial sums of a
    channel added in numpy; any other layout (a non-contiguous one) over `dims`."""
    c = x.shape[axis]
    if x.is_contiguous() and axis == 1 and x.dim() > 2:
        rows = x.view(x.shape[0] * c, -1)
        r1 = _np(rows.sum(1)).reshape(-1, c).sum(0)
        r2 = _np(torch.linalg.vector_norm(rows, dim=1))
        return r1, (r2 * r2).reshape(-1, c).sum(0)
    dims = tuple(d for d in range(x.dim()) if d != axis)
    norm = _np(torch.linalg.vector_norm(x, dim=dims))
    return _np(x.sum(dims)), norm * norm


def _np(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor as a float64 numpy array (float32's values, exactly)."""
    return t.numpy().astype(np.float64)


def moments(x: torch.Tensor, axis: int, zeros: Zeros, exact: bool = False) -> torch.Tensor:
    """MOMENTS of tensor x, channels along `axis`, as one float64 vector on x's device. `exact`:
    two-pass in float64 whatever the guard says (the reference, and CUDA's way)."""
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()  # bfloat16 and float16 sums would lose the statistics' digits
    if x.dim() < 2:  # a vector's values are its channels, one value each (as rows() makes it)
        x, axis = x.reshape(1, -1), 1
    if exact or x.device.type != "cpu":
        return _on_device(x, axis, zeros)
    return torch.from_numpy(_on_cpu(x, axis, zeros))


def _on_device(x: torch.Tensor, axis: int, zeros: Zeros) -> torch.Tensor:
    """Two-pass in float64, every value left on the device: nothing here waits on it."""
    n = x.numel()
    lo, hi = torch.aminmax(x)
    abs_max = torch.maximum(lo.abs(), hi.abs()).to(torch.float64)  # not -lo: an all-zero output is 0, not -0
    flat = x.reshape(-1) if x.is_contiguous() else x.contiguous().view(-1)
    zero_fraction = zeros.count(flat) / n
    chan_mean, chan_var = _exact(x, axis)
    mean = chan_mean.mean()
    cv = chan_var.mean()
    var = cv + (chan_mean - mean).square().mean()  # every value's biased variance
    std = (var * (n / (n - 1))).sqrt() if n > 1 else var * float("nan")
    return torch.stack([mean, std, abs_max, zero_fraction, chan_mean.square().mean(), cv])


def _on_cpu(x: torch.Tensor, axis: int, zeros: Zeros) -> np.ndarray:
    """The CPU's way: the big reductions in torch (on torch's threads), the rest on the small
    per-channel vectors in numpy and on Python floats, in float64: a numpy operation on a
    vector costs ~1 us against torch's ~5-10, and the torch version made ~25 of them per tap."""
    n = x.numel()
    c = x.shape[axis]
    per = n // c  # values per channel
    rows = x.shape[0] * c if x.is_contiguous() and axis == 1 and x.dim() > 2 else 0
    if rows and n >= FUSE and n // rows <= CHUNK:
        lo, hi, zero, s1, s2 = _fused(x, rows, zeros)
    elif x.is_contiguous() and axis == x.dim() - 1 and x.dim() > 1 and c <= CHUNK:
        lo, hi, zero, s1, s2 = _fused_last(x, zeros)
    else:
        lo, hi = (float(v) for v in torch.aminmax(x))
        zero = 0 if lo > 0 or hi < 0 else zeros.number(x)  # none outside [lo, hi]; a NaN fails both: counted
        s1, s2 = _sums(x, axis, zeros)
    abs_max = max(abs(lo), abs(hi)) if lo == lo and hi == hi else math.nan  # abs: an all-zero output is 0, not -0
    zero_fraction = zero / n
    with np.errstate(all="ignore"):  # inf - inf: the NaN a diverged tap should read
        cm = s1 / per
        mean = float(cm.sum()) / c
        cm2 = float(cm @ cm) / c  # chan_sq_mean
        second = float(s2.sum()) / n
        cv = second - cm2  # the mean of the channels' variances, one-pass
        bad = not np.isfinite(s2).all() and math.isfinite(abs_max)  # squares past float32's range
        if bad or second > CANCEL * _nanmin(second - mean * mean, cv):
            m, v = _exact(x, axis)
            cm = m.numpy()
            mean, cm2, cv = float(cm.sum()) / c, float(cm @ cm) / c, float(v.sum()) / c
        d = cm - mean
        var = cv + float(d @ d) / c  # every value's biased variance
    std = math.sqrt(var * (n / (n - 1))) if n > 1 and var >= 0 else math.nan  # NaN stays NaN
    return np.array([mean, std, abs_max, zero_fraction, cm2, cv])


def _fused(x: torch.Tensor, rows: int, zeros: Zeros) -> tuple[float, float, int, np.ndarray, np.ndarray]:
    """(min, max, zeros, per-channel sum, per-channel sum of squares) of a large contiguous
    (N, C, ...) tap, its rows read CHUNK values at a time: one read from memory, then each
    reduction from the L2 cache (30% less time than four passes over a 12.8M-value tap)."""
    c = x.shape[1]
    flat = x.view(rows, -1)
    step = max(1, CHUNK // flat.shape[1])
    k = -(-rows // step)
    r1, r2 = torch.empty(rows, dtype=x.dtype), torch.empty(rows, dtype=x.dtype)
    ext, counts = torch.empty(k, 2, dtype=x.dtype), torch.zeros(k, dtype=torch.float32)
    for j in range(k):
        a, b = j * step, min(rows, (j + 1) * step)
        chunk = flat[a:b]
        torch.sum(chunk, 1, out=r1[a:b])
        torch.linalg.vector_norm(chunk, dim=1, out=r2[a:b])
        _extremes(chunk, ext[j], counts[j], zeros)
    q = _np(r2)
    return (*_ends(ext, counts), _np(r1).reshape(-1, c).sum(0), (q * q).reshape(-1, c).sum(0))


def _fused_last(x: torch.Tensor, zeros: Zeros) -> tuple[float, float, int, np.ndarray, np.ndarray]:
    """_fused's five for a contiguous channels-last tap (tokens, (N, H, W, C) blocks) as a
    (M, C) matrix read CHUNK values at a time: its column sums are matrix-vector products with
    ones (BLAS: 2x faster than torch's column reduction), of the chunk and of its squares,
    written into the reused buffer. Each chunk's float32 sums are added in float64."""
    c = x.shape[-1]
    cols = x.view(-1, c)
    m = cols.shape[0]
    step = max(1, CHUNK // c)
    k = -(-m // step)
    ones = torch.ones(min(step, m), dtype=x.dtype)
    s1, s2 = torch.empty(k, c, dtype=x.dtype), torch.empty(k, c, dtype=x.dtype)
    ext, counts = torch.empty(k, 2, dtype=x.dtype), torch.zeros(k, dtype=torch.float32)
    buf = zeros.buffer(x.device, x.dtype)
    for j in range(k):
        chunk = cols[j * step : (j + 1) * step]
        r = chunk.shape[0]
        torch.mv(chunk.t(), ones[:r], out=s1[j])
        sq = buf[: chunk.numel()].view(chunk.shape)
        torch.mul(chunk, chunk, out=sq)
        torch.mv(sq.t(), ones[:r], out=s2[j])
        _extremes(chunk, ext[j], counts[j], zeros)
    return (*_ends(ext, counts), _np(s1).sum(0), _np(s2).sum(0))


def _extremes(chunk: torch.Tensor, ext: torch.Tensor, count: torch.Tensor, zeros: Zeros) -> None:
    """A chunk's (min, max) into ext, its number of zeros into count (exact in float32: at
    most CHUNK < 2**24 values); a chunk all of one sign holds none and is not compared."""
    torch.aminmax(chunk, out=(ext[0], ext[1]))
    lo, hi = ext.tolist()
    if not (lo > 0 or hi < 0):
        out = zeros.buffer(chunk.device, torch.float32)[: chunk.numel()]
        torch.eq(chunk.reshape(-1), 0, out=out)
        torch.sum(out, 0, out=count)


def _ends(ext: torch.Tensor, counts: torch.Tensor) -> tuple[float, float, int]:
    """(min, max, zeros) of the whole tap from its chunks' (a NaN, if any, propagates)."""
    e = ext.numpy()
    return float(e[:, 0].min()), float(e[:, 1].max()), int(counts.sum(dtype=torch.float64))


def _nanmin(a: float, b: float) -> float:
    return math.nan if a != a or b != b else min(a, b)


def rows(x: torch.Tensor, axis: int) -> torch.Tensor:
    """x as a (samples, channels) matrix, the one erank's SVD is of."""
    return x.movedim(axis, -1).reshape(-1, x.shape[axis]) if x.dim() > 1 else x.reshape(-1, 1)
