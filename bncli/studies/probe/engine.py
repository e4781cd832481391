"""probe's run: hooks on the tapped modules, one forward pass, the statistics read back once.

    rows = engine.probe(model, (x,), taps.select(model, [], []), grads=True, seed=0)

Each tapped module's forward hook finds the tensor in its output (taps.find), takes its channel
axis (taps.Layouts) and reduces it on the device at once (stats.moments), before any later
in-place operation (an inplace ReLU after a BatchNorm) can change it; only a small vector per
call is kept. With grads, the hook also puts a tensor hook on that output, and one backward
pass from a seeded N(0, 1) cotangent on the model's output fills grad_std. Every hook is
removed and the model's parameters, buffers and modes are as they were when `probe` returns,
raises or is interrupted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from bncli.runtime import Stream, generator, stream_seed, torch_dtype
from bncli.studies.base import Result
from bncli.studies.depth import stats as depth_stats
from bncli.studies.probe import interventions, models, stats, taps


@dataclass
class Rows:
    """What one probe recorded: a dict of the id columns per tap, and the statistics on the device."""

    ids: list[dict[str, Any]] = field(default_factory=list)
    moments: list[torch.Tensor] = field(default_factory=list)  # (len(MOMENTS),) float64 each
    erank: list[torch.Tensor] = field(default_factory=list)
    grad: dict[int, torch.Tensor] = field(default_factory=dict)  # tap index -> grad std
    interrupted: bool = False

    def table(self, erank: bool, grads: bool) -> pd.DataFrame:
        """The taps' rows, read back from the device in one transfer."""
        n = len(self.ids)
        parts = [torch.stack(self.moments)] if n else []
        if erank and n:
            parts.append(torch.stack(self.erank).to(torch.float64)[:, None])
        if grads and n:
            nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.moments[0].device)
            parts.append(torch.stack([self.grad.get(i, nan).to(torch.float64) for i in range(n)])[:, None])
        values = torch.cat(parts, 1).cpu().numpy() if n else np.zeros((0, 0))
        names = stats.MOMENTS + ["erank"] * erank + ["grad_std"] * grads
        table = pd.DataFrame(self.ids, columns=[s.name for s in stats.TAP])
        for j, name in enumerate(names):
            table[name] = values[:, j] if n else []
        for name in stats.COLUMNS:
            if name not in table:
                table[name] = float("nan")
        return table[stats.COLUMNS]


class _Recorder:
    def __init__(self, erank: bool, grads: bool, exact: bool) -> None:
        self.rows = Rows()
        self.calls: Counter[str] = Counter()
        self.layouts = taps.Layouts()
        self.zeros = stats.Zeros()
        self.erank, self.grads, self.exact = erank, grads, exact

    def tap(self, name: str):
        def hook(m: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            hit = taps.find(out)
            if hit is None:
                return
            path, t = hit
            inputs = (*args, *kwargs.values())
            axis = self.layouts.axis(m, inputs, t)
            x = t.detach()
            i = len(self.rows.ids)
            self.rows.moments.append(stats.moments(x, axis, self.zeros, self.exact))
            if self.erank:
                self.rows.erank.append(depth_stats.erank(stats.rows(x, axis)))
            if self.grads and t.requires_grad:
                grad = self.rows.grad

                def keep(g: torch.Tensor, i: int = i) -> None:
                    grad[i] = g.float().std() if g.dtype not in (torch.float32, torch.float64) else g.std()

                t.register_hook(keep)
            self.rows.ids.append(
                {
                    "index": i,
                    "module": name,
                    "output": path,
                    "call": self.calls[name],
                    "type": type(m).__name__,
                    "shape": "x".join(str(s) for s in t.shape) or "1",
                    "channel_axis": axis,
                }
            )
            self.calls[name] += 1

        return hook

    def layout(self, m: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        hit = taps.find(out)
        if hit is not None:
            self.layouts.axis(m, (*args, *kwargs.values()), hit[1])


def probe(
    model: nn.Module,
    args: Sequence[Any] = (),
    names: Sequence[str] = (),
    *,
    kwargs: dict[str, Any] | None = None,
    output: bool = True,
    erank: bool = False,
    grads: bool = False,
    seed: int = 0,
    exact: bool = False,
) -> Rows:
    """Forward `model(*args, **kwargs)` once with the modules `names` tapped (and, with `output`,
    the model's own output); the statistics of every call, on the device. Dropout and anything
    else drawing from torch's global generator draw from one seeded by `seed`. `exact`: every tap
    two-pass in float64 (the reference the guarded one-pass is checked against)."""
    rec = _Recorder(erank, grads, exact)
    named = dict(model.named_modules())
    handles = []
    tapped = set(names)
    device = _device(model, args, kwargs or {})
    try:
        for name, m in named.items():
            if name in tapped:
                handles.append(m.register_forward_hook(rec.tap(name), with_kwargs=True))
            elif name and (taps.own_axis(m) is not None or type(m).__name__ == "Permute"):
                handles.append(m.register_forward_hook(rec.layout, with_kwargs=True))
        if output:
            handles.append(model.register_forward_hook(rec.tap(taps.OUTPUT), with_kwargs=True))
        with interventions.kept(model, params=False), _seeded(device, seed), torch.set_grad_enabled(grads):
            try:
                out = model(*args, **(kwargs or {}))
                if grads:
                    _backward(model, args, out, seed)
            except KeyboardInterrupt:
                rec.rows.interrupted = True
    finally:
        for h in handles:
            h.remove()
    return rec.rows


def _device(model: nn.Module, args: Sequence[Any], kwargs: dict[str, Any]) -> torch.device:
    for a in (*args, *kwargs.values(), *model.parameters()):
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


class _seeded:
    """torch's global generator (the CPU's and the device's) seeded for the block, then as it was."""

    def __init__(self, device: torch.device, seed: int) -> None:
        self.devices = [device] if device.type == "cuda" else []
        self.seed = stream_seed(seed, Stream.MODEL, 1)

    def __enter__(self) -> None:
        self.fork = torch.random.fork_rng(devices=self.devices)
        self.fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        self.fork.__exit__(*exc)


def _backward(model: nn.Module, args: Sequence[Any], out: Any, seed: int) -> None:
    """One backward pass from a seeded N(0, 1) cotangent on the model's output tensor: the tensor
    hooks the taps put on their outputs take their gradients. Nothing is accumulated in .grad."""
    hit = taps.find(out)
    if hit is None or not hit[1].requires_grad:
        return
    y = hit[1]
    g = generator(y.device, seed, Stream.PROBE_GRAD)
    ct = torch.randn(y.shape, generator=g, device=y.device, dtype=torch.float32).to(y.dtype)
    inputs: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
    inputs += [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    if inputs:
        torch.autograd.grad(y, inputs, ct, allow_unused=True)


# -- the study's run ------------------------------------------------------------------------------


def build(cfg: Any, device: torch.device) -> nn.Module:
    """cfg.model with its own init, torch's global generator seeded by cfg.seed while it is built,
    then on `device` in cfg.dtype and in cfg.mode."""
    with _seeded(torch.device("cpu"), cfg.seed):
        torch.manual_seed(stream_seed(cfg.seed, Stream.MODEL))
        model = models.build(cfg.model, list(cfg.model_arg))
    model = model.to(device=device, dtype=torch_dtype(cfg.dtype))
    return model.train(cfg.mode == "train")


def make_input(cfg: Any, model: nn.Module, device: torch.device) -> tuple[tuple[Any, ...], dict[str, Any], list[int]]:
    """(positional args, keyword args, one sample's shape) of the seeded input: token ids for
    --input tokens (and, by default, for a Hugging Face model taking input_ids), else N(0, 1)."""
    spec = models.parse(cfg.model)
    key = models.main_input(model)
    kind = cfg.input if cfg.input != "auto" else "tokens" if key == "input_ids" else "randn"
    g = generator(device, cfg.seed, Stream.PROBE_INPUT)
    if kind == "tokens":
        vocab = models.vocab_size(model)
        if vocab is None:
            raise ValueError(f"--input tokens: {cfg.model} has no vocab_size in its config and no nn.Embedding")
        shape = [cfg.seq_len]
        x = torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len), generator=g, device=device)
    else:
        given = cfg.input_shape or models.default_input_shape(spec, model)
        if given is None:
            raise ValueError(f"--input-shape: give one sample's shape for {cfg.model}, like 3,32,32 or 64")
        shape = list(given)
        x = torch.randn((cfg.batch_size, *shape), generator=g, device=device, dtype=torch.float32)
        x = x.to(torch_dtype(cfg.dtype))
        if cfg.grads:
            x.requires_grad_(True)
    return ((), {key: x}, list(shape)) if key else ((x,), {}, list(shape))


def relu_net(cfg: Any) -> SimpleNamespace:
    """What the depth study's init schemes read of a network: the activation (relu: its kaiming
    gain), init_gain and init_std."""
    from bncli.studies.depth.components import ACTIVATIONS

    return SimpleNamespace(
        activation=ACTIVATIONS["relu"], init_gain=cfg.init_gain, init_std=cfg.init_std, negative_slope=0.01
    )


def run(cfg: Any, device: torch.device) -> Result:
    model = build(cfg, device)
    with interventions.swapped(model, cfg.swap_norm) as swapped:
        if cfg.init != "model":
            interventions.init_weights(model, cfg.init, relu_net(cfg), cfg.seed)
        try:
            names = taps.select(model, cfg.layers, cfg.types)
            args, kwargs, shape = make_input(cfg, model, device)
        except ValueError as e:
            from bncli.errors import BncliError

            raise BncliError(str(e)) from None
        rows = probe(
            model,
            args,
            names,
            kwargs=kwargs,
            output=not cfg.layers and not cfg.types,
            erank=cfg.erank,
            grads=cfg.grads,
            seed=cfg.seed,
        )
    table = rows.table(cfg.erank, cfg.grads)
    watch = table[stats.watched()].to_numpy(float)
    bad = np.flatnonzero(~np.isfinite(watch).all(axis=1))
    diverged_at = int(bad[0]) if len(bad) else None
    status = "interrupted" if rows.interrupted else "diverged" if diverged_at is not None else "ok"
    info = {
        "taps": len(table),
        "diverged_at": diverged_at,
        "model_class": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "swapped": swapped,
        "input_shape": shape,
    }
    off = ["erank"] * (not cfg.erank) + ["grad_std"] * (not cfg.grads)
    return Result(table, status, info, off)
