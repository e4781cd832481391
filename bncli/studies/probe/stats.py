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
writing `x == 0` into one reused float buffer, a chunk at a time, and summing it. The
variance is then E x^2 - (E x)^2 in float64, guarded: where that difference would cancel more
than CANCEL allows (E x^2 > CANCEL x the variance, as for a channel of large mean and little
spread) or the squares overflow float32, the tap is redone two-pass in float64 (the depth
study's method, Chunk). Welford's `var_mean` and `count_nonzero` cost 30x a sum here. On CUDA
every tap is computed two-pass in float64: deciding where to redo would wait on the device
once per tap.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from bncli.studies.depth import stats as depth

if TYPE_CHECKING:
    import torch
else:
    from bncli.lazy import lazy

    torch = lazy("torch")

CANCEL = 8.0  # E x^2 / var beyond which one-pass float32 sums lose more than ~1e-6 of the variance
ZERO_CHUNK = 2**20  # values compared with 0 at once: the buffer stays in cache, whatever the tap's size

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


def _exact(x: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-channel mean, per-channel biased variance), two-pass in float64 (depth.Chunk's way)."""
    dims = tuple(d for d in range(x.dim()) if d != axis)
    cm = x.mean(dims, keepdim=True, dtype=torch.float64)
    return cm.flatten(), (x - cm).square_().mean(dims)


def _sums(x: torch.Tensor, axis: int, zeros: Zeros) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (sum, sum of squares) in float64, from float32 row reductions: (N, C, ...) as
    N x C contiguous rows (a reduction over `dims` there is 20x slower), channels-last as columns
    squared a chunk at a time into the reused buffer."""
    c = x.shape[axis]
    if x.is_contiguous() and axis == 1 and x.dim() > 2:
        rows = x.view(x.shape[0] * c, -1)
        s1 = rows.sum(1).view(-1, c).sum(0, dtype=torch.float64)
        s2 = torch.linalg.vector_norm(rows, dim=1).to(torch.float64).square().view(-1, c).sum(0)
        return s1, s2
    if x.is_contiguous() and axis == x.dim() - 1:
        cols = x.view(-1, c)
        s1 = cols.sum(0, dtype=torch.float64) if cols.shape[0] < 2 else cols.sum(0).to(torch.float64)
        buf = zeros.buffer(x.device, x.dtype)
        step = max(1, buf.numel() // c)
        parts = []
        for chunk in cols.split(step):
            sq = buf[: chunk.numel()].view(chunk.shape)
            torch.mul(chunk, chunk, out=sq)
            parts.append(sq.sum(0))
        return s1, torch.stack(parts).to(torch.float64).sum(0)
    dims = tuple(d for d in range(x.dim()) if d != axis)
    return x.sum(dims).to(torch.float64), torch.linalg.vector_norm(x, dim=dims).to(torch.float64).square()


def moments(x: torch.Tensor, axis: int, zeros: Zeros, exact: bool = False) -> torch.Tensor:
    """MOMENTS of tensor x, channels along `axis`, as one float64 vector on x's device. `exact`:
    two-pass in float64 whatever the guard says (the reference, and CUDA's way)."""
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()  # bfloat16 and float16 sums would lose the statistics' digits
    if x.dim() == 0:
        x = x.reshape(1)
    n = x.numel()
    per = n // x.shape[axis]  # values per channel
    lo, hi = torch.aminmax(x)
    abs_max = torch.maximum(lo.abs(), hi.abs()).to(torch.float64)  # not -lo: an all-zero output is 0, not -0
    flat = x.reshape(-1) if x.is_contiguous() else x.contiguous().view(-1)
    zero_fraction = zeros.count(flat) / n
    if exact or x.device.type != "cpu":
        chan_mean, chan_var = _exact(x, axis)
    else:
        s1, s2 = _sums(x, axis, zeros)
        chan_mean = s1 / per
        chan_var = s2 / per - chan_mean.square()
        second = (s2 / per).mean()
        var = second - chan_mean.mean().square()
        bad = ~torch.isfinite(s2).all() & torch.isfinite(abs_max)  # squares past float32's range
        cancels = second > CANCEL * torch.minimum(var, chan_var.mean())
        if bool(bad | cancels):  # on the CPU a read of a computed value waits on nothing
            chan_mean, chan_var = _exact(x, axis)
    mean = chan_mean.mean()
    cv = chan_var.mean()
    var = cv + (chan_mean - mean).square().mean()  # every value's biased variance
    std = (var * (n / (n - 1))).sqrt() if n > 1 else var * float("nan")
    return torch.stack([mean, std, abs_max, zero_fraction, chan_mean.square().mean(), cv])


def rows(x: torch.Tensor, axis: int) -> torch.Tensor:
    """x as a (samples, channels) matrix, the one erank's SVD is of."""
    return x.movedim(axis, -1).reshape(-1, x.shape[axis]) if x.dim() > 1 else x.reshape(-1, 1)
