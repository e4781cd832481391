"""The depth study's run: the forward pass layer by layer, its statistics in chunks, one backward pass.

    engine.run(Net.of(cfg), on={"grads"}, keep_weights=False, device=torch.device("cpu"))

Statistics stay on the device in one (depth, k) tensor and are read back once at the end: no
.item() per layer, so a GPU never waits on the host mid-run. Each weight is drawn once, on the
target device, from its own (seed, layer) generator, so it can be made on demand and dropped
after use: memory stays O(one layer's weights) however deep the stack. With --grads every
weight is kept and one backward pass follows (a second read-back).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import torch

from bncli.runtime import itemsize, torch_threads
from bncli.studies.base import Result
from bncli.studies.depth import stats, theory
from bncli.studies.depth.net import Arch, Net, Weight, make_cotangent, make_input, weights

CHUNK = 16  # layers whose statistics are computed together (and checked for divergence, on CPU)
CHUNK_BYTES = {"cpu": 2**20, "cuda": 64 * 2**20}  # a chunk's float64 temporaries: in cache on CPU
DRAW_AHEAD_BYTES = 512 * 2**20  # weights in flight at most when streaming: memory stays flat in depth


def chunk_layers(net: Net, device: torch.device) -> int:
    """Layers whose outputs are kept to compute their statistics together: up to CHUNK, within
    CHUNK_BYTES of float64 temporaries. On a GPU fewer, larger kernels save launches; on a CPU
    past its cache a larger chunk only costs memory traffic (1.5x slower at width 1024, batch 128)."""
    limit = CHUNK_BYTES.get(device.type, CHUNK_BYTES["cuda"])
    return max(1, min(CHUNK, net.depth, limit // (net.arch_module().output_elements(net) * 8)))


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


def draw_ahead(net: Net, threads: int) -> int:
    """Layers drawn ahead by `threads` threads: one each and one spare, within DRAW_AHEAD_BYTES."""
    size = net.arch_module().weight_elements(net) * max(itemsize(net.dtype), 4)
    return max(1, min(threads + 1, DRAW_AHEAD_BYTES // size)) if threads else 0


def estimate_bytes(net: Net, on: Collection[str], keep_weights: bool) -> int:
    """Peak memory a run needs, before anything is allocated."""
    arch = net.arch_module()
    grads = "grads" in on
    elt = itemsize(net.dtype)
    draw = 8 if net.dtype == "float64" else 4
    w2 = arch.weight_elements(net)
    ahead = 1 + draw_ahead(net, torch.get_num_threads())  # drawn ahead and in use, when streaming
    held = (net.depth if keep_weights or grads else ahead) * w2 * elt * (2 if grads else 1)  # + their gradients
    draw_tmp = ahead * w2 * draw * (4 if net.init.name == "orthogonal" else 1)  # QR needs workspace
    acts = arch.activations(net) * arch.output_elements(net) * max(elt, 4)
    if grads:  # autograd keeps every layer's intermediates, ~6 activations each (~12 a block)
        acts = int(acts * (1 + 1.5 * net.depth))
    chunk = chunk_layers(net, torch.device("cuda"))  # the larger of the two devices' chunks
    kept = chunk * arch.output_elements(net) * (elt + 2 * 8)  # a chunk and its float64 passes
    return int(held + draw_tmp + acts + kept + net.depth * len(stats.STATS) * 8)


def draw_weights(net: Net, device: torch.device, threads: int = 0) -> Iterator[Weight]:
    """Yield every layer's weight in order, drawn `draw_ahead` layers ahead on `threads` threads.

    The numbers do not depend on the threads: layer i's weight comes from its own (seed, i)
    generator whichever thread draws it. Close the generator to stop early.
    """
    arch = net.arch_module()
    ahead = draw_ahead(net, threads)
    if not ahead:
        for i in range(net.depth):
            yield arch.make_weight(net, i, device)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="bncli-draw") as pool:
        pending = deque(pool.submit(arch.make_weight, net, i, device) for i in range(min(ahead, net.depth)))
        for i in range(len(pending), net.depth + len(pending)):
            w = pending.popleft().result()
            if i < net.depth:
                pending.append(pool.submit(arch.make_weight, net, i, device))
            yield w


class _Interrupted(Exception):
    def __init__(self, done: int) -> None:
        self.done = done


def run(
    net: Net,
    on: Collection[str],
    keep_weights: bool,
    device: torch.device,
    progress: Callable[[int], None] | None = None,
) -> Result:
    """Forward N(0,1) input through `net.depth` layers; stop at the first non-finite output.

    `on` names the flags of the optional statistics that are set (grads, erank). progress(layers
    done) is called every few layers; on CUDA only when given, since each call is a host sync.
    With grads, one backward pass follows (from the last finite layer) and the gradient
    statistics are read back with a second sync.
    """
    arch = net.arch_module()
    grads = "grads" in on
    cols = stats.buffered(net.arch, on, arch.BRANCH)
    # float64 whatever the dtype: the statistics are computed in float64, and chan_sq_mean's
    # squares would overflow a float32 cell long before the outputs themselves do
    buf = torch.empty(net.depth, len(cols), device=device, dtype=torch.float64)
    keep = keep_weights or grads
    kept, draws, computing = _weights(net, device, keep, grads)
    outs: list[torch.Tensor] | None = [] if grads else None
    status = "ok"
    try:
        done = _forward(net, arch, cols, device, draws, buf, outs, computing, grads, progress)
    except _Interrupted as e:
        done, status = e.done, "interrupted"
    finally:
        if not keep:
            draws.close()  # type: ignore[attr-defined]  # waits for the few draws still in flight

    rows = buf[:done].cpu()  # the one read-back (two with --grads)
    watch = [j for j, s in enumerate(cols) if s.watch]
    bad = (~torch.isfinite(rows[:, watch]).all(dim=1)).nonzero()
    diverged_at = int(bad[0, 0]) if len(bad) else None
    if diverged_at is not None:
        rows, status = rows[: diverged_at + 1], "diverged"
    table = pd.DataFrame(rows.double().numpy(), columns=[s.name for s in cols])
    for name in reversed(arch.IDS):
        table.insert(0, name, [arch.stage(net, i) for i in range(len(table))])
    table.insert(0, "layer", range(len(table)))
    info: dict[str, Any] = {"diverged_at": diverged_at, "layers_done": len(table)}
    if grads:
        assert kept is not None and outs is not None
        g = _grads(net, device, outs, kept, len(table) if diverged_at is None else diverged_at)
        if g is None:
            status = "interrupted"
            table["grad_std"] = table["weight_grad_norm"] = float("nan")
        else:
            table["grad_std"], table["weight_grad_norm"] = g[: len(table), 0], g[: len(table), 1]
        rate = theory.grad_rate(net)
        if rate is not None:
            info["grad_growth_theory"] = rate
    for s in stats.columns_of(net.arch, "theory"):  # theory_std, and conv's per-channel ones
        table[s] = getattr(arch, s)(net)[: len(table)]
    columns = stats.columns(net.arch)
    computed = {s.name for s in stats.computed(net.arch, on, arch.BRANCH)}
    off = [c for c in columns if c not in computed]
    for col in off:
        table[col] = float("nan")
    return Result(table[columns], status, info, off)


def _weights(
    net: Net, device: torch.device, keep: bool, grads: bool
) -> tuple[list[Weight] | None, Iterator[Weight], int]:
    """(every weight or None, an iterator over the weights, the computing threads).

    Every op here gives the same bits on any number of threads (components._bn_train), so the
    threads only decide speed. Kept weights are drawn first, on every thread.
    """
    drawing, computing = split_threads(device)
    if net.init.name == "orthogonal":  # its QR sets torch's (process-wide) threads: not in a pool
        drawing = 0
    if not keep:
        return None, draw_weights(net, device, drawing), computing
    with torch_threads(computing):
        kept = list(draw_weights(net, device, drawing + computing if drawing else 0))
    if grads:
        for w in kept:
            for t in weights(w):
                t.requires_grad_(True)
    return kept, iter(kept), computing


def _forward(
    net: Net,
    arch: Arch,
    cols: list[stats.Stat],
    device: torch.device,
    draws: Iterator[Weight],
    buf: torch.Tensor,
    outs: list[torch.Tensor] | None,
    computing: int,
    grads: bool,
    progress: Callable[[int], None] | None,
) -> int:
    """Fill buf's rows layer by layer; the number of layers done (early at a non-finite chunk).

    Each output, as a (samples, channels) matrix, is copied into a chunk buffer and the chunk's
    statistics computed at once (a ResNet's stages start new chunks: their shapes differ). On
    CPU (or with a progress bar) each chunk is then checked for a non-finite output with one
    host sync; on CUDA without one the run never waits for the host until the end.
    """
    step = arch.step(net, device)
    check = device.type == "cpu" or progress is not None
    k = chunk_layers(net, device)
    chunked = [s for s in cols if s.kind == "chunk"]
    per_layer = [(j, s) for j, s in enumerate(cols) if s.kind == "layer"]
    watch = [j for j, s in enumerate(chunked) if s.watch]
    stash: torch.Tensor | None = None
    done = flushed = 0

    def flush() -> bool:
        """Statistics of the stashed layers into buf; False when one of them is not finite."""
        nonlocal flushed
        if done == flushed or stash is None:
            return True
        buf[flushed:done, : len(chunked)] = stats.of_chunk(chunked, stash[: done - flushed])
        ok = not check or bool(torch.isfinite(buf[flushed:done, watch]).all())
        flushed = done
        return ok

    try:
        with torch.set_grad_enabled(grads), torch_threads(computing):
            x = make_input(net, device)
            for i in range(net.depth):
                out = step(x, next(draws))
                x, branch = out if isinstance(out, tuple) else (out, None)
                rows = arch.rows(x.detach())
                shape = (rows[..., 0].numel(), rows.shape[-1])
                if stash is None or stash.shape[1:] != shape:  # the first layer, or a new stage
                    if not flush():
                        break
                    stash = torch.empty(k, *shape, device=device, dtype=rows.dtype)
                row = stash[i - flushed]
                row.view(rows.shape).copy_(rows)
                if per_layer:  # the statistics computed a layer at a time (erank: an SVD)
                    _layer_stats(per_layer, stats.Layer(row, branch, arch.matrices(net, row)), buf[i])
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


def _layer_stats(per_layer: list[tuple[int, stats.Stat]], layer: stats.Layer, row: torch.Tensor) -> None:
    for j, s in per_layer:
        row[j] = s.compute(layer)  # type: ignore[misc]


def _grads(net: Net, device: torch.device, outs: list[torch.Tensor], kept: list[Weight], n: int) -> np.ndarray | None:
    """(len(outs), 2) float64 array of [grad_std, weight_grad_norm]; rows past n are nan.

    The network's output (Arch.readout of layer n - 1's) is contracted with a fixed seeded
    N(0, 1) cotangent and one backward pass gives the gradient with respect to every layer's
    output and weight.
    """
    out = np.full((len(outs), 2), np.nan)
    if n == 0:
        return out
    try:
        ct = make_cotangent(net, device, tuple(outs[n - 1].shape))
        with torch.enable_grad():
            y = net.arch_module().readout(net, device)(outs[n - 1])
        # a ResNet or transformer block's weights are a tuple: its gradient norm is over all of them
        parts = [weights(w) for w in kept[:n]]
        g = torch.autograd.grad(y, outs[:n] + [t for p in parts for t in p], ct)
        go, gw = g[:n], iter(g[n:])

        def up(t: torch.Tensor) -> torch.Tensor:
            return t.float() if ct.dtype == torch.bfloat16 else t

        def norm(p: list[torch.Tensor]) -> torch.Tensor:
            norms = [torch.linalg.vector_norm(up(next(gw))) for _ in p]
            return norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))

        rows = torch.stack([torch.stack([up(a).std(), norm(p)]) for a, p in zip(go, parts, strict=True)])
        out[:n] = rows.double().cpu().numpy()
    except KeyboardInterrupt:
        return None
    return out
