"""probe's interventions on a model, each undone when its block ends: --init, --swap-norm, and
keeping the model's state (parameters, buffers, modes) as it was.

    with interventions.swapped(model, "batchnorm:none") as n: ...   # n norms replaced, put back after
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bncli.errors import BncliError
from bncli.studies.probe import taps
from bncli.studies.probe.taps import FAMILIES


@contextmanager
def kept(model: nn.Module, params: bool = True) -> Iterator[None]:
    """The model's buffers (BatchNorm's running statistics), train/eval modes and (`params`) its
    parameters are as they were when the block ends, however it ends."""
    saved = {n: p.detach().clone() for n, p in model.named_parameters()} if params else {}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])
            for n, b in model.named_buffers():
                if n in buffers:
                    b.copy_(buffers[n])
        for m, training in modes.items():
            m.training = training


def weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The weights --init redraws: every parameter of two or more dimensions (Linear, conv and
    embedding weights), in the model's order; biases and norms' scales keep the model's values."""
    return [(n, p) for n, p in model.named_parameters() if p.dim() >= 2]


def init_weights(model: nn.Module, scheme: str, net: Any, seed: int) -> None:
    """Redraw every weight with one of the depth study's init schemes (fan-in from the weight's
    own shape), weight k from its own seeded generator. The caller undoes it (`kept`)."""
    from bncli.runtime import Stream, draw_dtype, generator
    from bncli.studies.depth.components import INITS

    fill = INITS[scheme].fill
    with torch.no_grad():
        for k, (_, w) in enumerate(weights(model)):
            g = generator(w.device, seed, Stream.PROBE_WEIGHT, k)
            # drawn in float32 (float64 for a float64 model), as the depth study draws, then rounded
            drawn = torch.empty(w.shape, device=w.device, dtype=draw_dtype(str(w.dtype).removeprefix("torch.")))
            w.copy_(fill(drawn, g, net))


def family(m: nn.Module) -> str | None:
    name = type(m).__name__
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return "batchnorm"
    if isinstance(m, nn.LayerNorm):
        return "layernorm"
    if isinstance(m, nn.GroupNorm):
        return "groupnorm"
    if isinstance(m, taps.rms_classes()) or name.endswith("RMSNorm"):
        return "rmsnorm"
    return None


def _channels(m: nn.Module) -> int:
    for attr in ("num_features", "num_channels"):
        if isinstance(getattr(m, attr, None), int):
            return int(getattr(m, attr))
    shape = getattr(m, "normalized_shape", None)
    if shape is not None:
        return int(shape[-1] if isinstance(shape, (tuple, list)) else shape)
    weight = getattr(m, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 1:
        return int(weight.numel())
    raise BncliError(f"--swap-norm: cannot tell the channels of {type(m).__name__}")


class SwappedNorm(nn.Module):
    """The norm that takes another's place: `kind` over `channels` along the channel axis the
    replaced one normalised (1 for BatchNorm, GroupNorm and LayerNorm2d; the last for LayerNorm
    and RMSNorm), at init (weight 1, bias 0), on the replaced one's device and dtype."""

    running_mean: torch.Tensor | None  # buffers: batchnorm's running statistics, None for the other kinds
    running_var: torch.Tensor | None

    def __init__(self, kind: str, channels: int, axis: int, eps: float, like: torch.Tensor | None) -> None:
        super().__init__()
        self.kind, self.channels, self.axis, self.eps = kind, channels, axis, eps
        device, dtype = (None, None) if like is None else (like.device, like.dtype)
        self.weight = nn.Parameter(torch.ones(channels, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(channels, device=device, dtype=dtype)) if kind != "rmsnorm" else None
        stats = kind == "batchnorm"  # batch norm's running statistics; None for the others, as in F.batch_norm's
        self.register_buffer("running_mean", torch.zeros(channels, device=device, dtype=dtype) if stats else None)
        self.register_buffer("running_var", torch.ones(channels, device=device, dtype=dtype) if stats else None)
        self.groups = math.gcd(32, channels)

    def extra_repr(self) -> str:
        return f"{self.kind}, {self.channels}, axis={self.axis}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x if self.axis == 1 else x.movedim(-1, 1)  # channels at 1: batch and group norm's layout
        if self.kind == "batchnorm":
            out = F.batch_norm(
                first, self.running_mean, self.running_var, self.weight, self.bias, self.training, 0.1, self.eps
            )
        elif self.kind == "groupnorm":
            out = F.group_norm(first, self.groups, self.weight, self.bias, self.eps)
        else:
            last = first.movedim(1, -1)
            if self.kind == "layernorm":
                y = F.layer_norm(last, (self.channels,), self.weight, self.bias, self.eps)
            else:
                y = last * torch.rsqrt(last.square().mean(-1, keepdim=True) + self.eps) * self.weight
            out = y.movedim(-1, 1)
        return out if self.axis == 1 else out.movedim(1, -1)


def _axis_of(m: nn.Module) -> int:
    return 1 if family(m) in ("batchnorm", "groupnorm") or taps.own_axis(m) == 1 else taps.LAST


def replacement(m: nn.Module, to: str, like: torch.Tensor | None) -> nn.Module:
    """What takes norm m's place; `like` (one of the model's parameters) gives the device and
    dtype where m has no parameters of its own."""
    if to == "none":
        return nn.Identity()
    own = next(iter(m.parameters()), None)
    like = own if own is not None else like
    eps = getattr(m, "eps", None) or getattr(m, "variance_epsilon", None) or 1e-5
    return SwappedNorm(to, _channels(m), _axis_of(m), float(eps), like)


@contextmanager
def swapped(model: nn.Module, swap: str | None) -> Iterator[int]:
    """The norms of family FROM replaced by TO (`swap` is FROM:TO) for the block; yields how many.
    Every module is put back when the block ends, however it ends."""
    if swap is None:
        yield 0
        return
    src, _, dst = swap.partition(":")
    found = [(name, m) for name, m in model.named_modules() if name and family(m) == src]
    if not found:
        raise BncliError(f"--swap-norm: {swap}: this model has no {src} module ({FAMILIES[src]})")
    done: list[tuple[nn.Module, str, nn.Module]] = []
    like = next(iter(model.parameters()), None)
    try:
        for name, m in found:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            new = replacement(m, dst, like)
            new.train(m.training)
            setattr(parent, attr, new)
            done.append((parent, attr, m))
        yield len(done)
    finally:
        for parent, attr, m in reversed(done):
            setattr(parent, attr, m)
