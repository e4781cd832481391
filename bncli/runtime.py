"""Where and how a run computes: its device, dtype, seeded random streams, torch threads and memory.

    g = generator(resolve_device("auto"), seed=0, stream=Stream.WEIGHT, index=layer)

The lowest layer of the studies: it knows no study and no config. Every random tensor a run
draws comes from a generator seeded by (seed, stream, index), so any part of a run can be drawn
alone, in any order, on any thread, and give the same numbers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import TYPE_CHECKING

from bncli.errors import BncliError

if TYPE_CHECKING:
    import torch
else:
    from bncli.lazy import lazy

    torch = lazy("torch")

_MASK64 = (1 << 64) - 1


class Stream(IntEnum):
    """Every seeded random stream, one number each: a new stream is a new member, never a reused number."""

    INPUT = 1  # the depth study's N(0, 1) input
    WEIGHT = 2  # the depth study's weights, one index per weight
    BATCH = 3  # running-stats' batches, one index per iteration
    GRAD = 4  # the depth study's backward cotangent (--grads)
    STREAM = 5  # convergence's batches, one index per iteration
    MODEL = 6  # probe: torch's global generator while the model is built with its own init (and runs dropout)
    PROBE_INPUT = 7  # probe: the N(0, 1) input or the token ids
    PROBE_WEIGHT = 8  # probe's --init, one index per weight in the model's order
    PROBE_GRAD = 9  # probe's backward cotangent (--grads)
    CHECK = 10  # running-stats' random batch, the check that can tell the unbiased variance from the biased
    DATA = 11  # train: the gaussians' and teacher's data sets
    SHUFFLE = 12  # train: the order of the training samples, one index per epoch
    TRAIN_WEIGHT = 13  # train: the input map and the classifier head
    SUBSET = 14  # train: the values a layer's pre-activation percentiles are taken from


def stream_seed(seed: int, stream: int, index: int = 0) -> int:
    """A well-mixed 63-bit seed from (seed, stream, index) (splitmix64 finaliser)."""
    h = 0
    for part in (seed, stream, index):
        h = (h + (part & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h >> 1


_GENERATORS = threading.local()  # per thread: one generator per device, reseeded for each use


def generator(device: torch.device, seed: int, stream: int, index: int = 0) -> torch.Generator:
    """A generator seeded for (seed, stream, index), to be used at once: this thread's own for
    `device`, reseeded. manual_seed resets a generator's whole state, so it draws exactly what
    a new one would, without building one per layer (a cost that shows on a GPU)."""
    cache = _GENERATORS.__dict__
    g = cache.get(str(device))
    if g is None:
        g = cache[str(device)] = torch.Generator(device=device)
    g.manual_seed(stream_seed(seed, stream, index))
    return g


def resolve_device(spec: str) -> torch.device:
    """auto -> cuda when available, else cpu. A CUDA device that is not there is a usage error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BncliError(
                f"--device {spec}: CUDA is not available on this machine "
                f"(torch {torch.__version__}); use --device cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BncliError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) "
                f"here (cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    return dev


def torch_dtype(name: str) -> torch.dtype:
    """torch's dtype of a config's `dtype` word (float32, float64, bfloat16)."""
    return {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}[name]


def draw_dtype(name: str) -> torch.dtype:
    """What a tensor of dtype `name` is drawn in: float64 as itself, the rest in float32 and then
    rounded (some draws, orthogonal's QR among them, have no bfloat16 kernel)."""
    return torch.float64 if name == "float64" else torch.float32


def itemsize(name: str) -> int:
    return {"float32": 4, "float64": 8, "bfloat16": 2}[name]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to n for the block, then put back."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


def capacity(device: torch.device) -> int:
    """Bytes of memory of `device`: the GPU's, or what this process may use of the machine's
    RAM (a container's cgroup limit or an address-space rlimit, where lower: `ulimit -v 8000000`
    caps at 8 GB a machine of 128)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return min([os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), *_limits()])


def _limits() -> list[int]:
    import resource

    out = []
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft != resource.RLIM_INFINITY:
        out.append(soft)
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read(64).strip()
        except OSError:
            continue
        if text.isdigit():
            out.append(int(text))
    return out


def check_fits(device: torch.device, need: int, sizes: str, smaller: str) -> None:
    """Refuse, before anything is allocated, a run whose estimated peak memory is over 90% of
    the device's: one clean line instead of an OOM (or the OS killing the process) mid-run."""
    have = capacity(device)
    if need > 0.9 * have:
        raise BncliError(
            f"too large: {sizes} needs about {need / 2**30:.1f} GiB but {device} has "
            f"{have / 2**30:.1f} GiB; use {smaller}"
        )
