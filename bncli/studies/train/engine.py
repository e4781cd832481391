"""The train study's network and loop: the depth study's architecture with a classifier head.

    model = Model(cfg, device); logits = model(x, "fit")

The body is the depth study's: its architecture's `step` and weights (drawn as the depth study
draws them, from the same seeds), with each norm given a per-channel affine weight and bias
(BatchNorm also its running statistics) and each activation watched for its input. The norms'
state is kept by call order within a forward pass (a Sites), so the same code serves every
architecture. An MLP without skip connections reads the data in its first layer (weight
(width, input_dim), drawn as the depth study's layer 0); other architectures get an input map,
Linear(input_dim, the architecture's sample shape). The head averages the last layer's rows
per sample (a conv's pixels, a transformer's tokens) and maps them to the classes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from bncli.runtime import Stream, generator, torch_dtype, torch_threads
from bncli.studies.base import Result
from bncli.studies.depth import stats
from bncli.studies.depth.components import EPS, Activation, Norm
from bncli.studies.depth.net import Net, draw, weights
from bncli.studies.train import data
from bncli.studies.train.spec import LAYERS_CSV

BN_MOMENTUM = 0.1  # torch's default
PERCENTILES = (0.15, 0.50, 0.85)  # Ioffe and Szegedy's Figure 1
# the percentiles of a layer with more values come from this many of them, a fixed seeded subset
# (the same for every layer, step and run of one size): a sort of every value of 20 layers of
# 256 x 256 costs more than the 10 training steps between records (the 15th percentile's
# standard error from 4096 values is about 0.02 of the layer's std)
PERCENTILE_VALUES = 4096
EVAL_CHUNK = 4096  # samples per evaluation forward pass
# below this many multiply-adds a layer step, a CPU run trains on one thread: waking torch's
# pool for a 60 x 100 x 100 product costs more than it saves (6x slower on 2 loaded cores)
ONE_THREAD_MACS = 2**21


@dataclasses.dataclass
class NormState:
    weight: torch.Tensor | None  # None: a norm with nothing to learn (none)
    bias: torch.Tensor | None
    running_mean: torch.Tensor | None  # BatchNorm's only
    running_var: torch.Tensor | None


class Sites:
    """The trained state of every norm, by call order in a forward pass, and the activations'
    inputs while a probe records them. mode: fit (batch statistics, running ones updated, as in training),
    eval (running statistics), peek (batch statistics, running ones left alone: the probe)."""

    def __init__(self) -> None:
        self.mode = "fit"
        self.norms: list[NormState] = []
        self.cursor = 0
        self.acts: list[torch.Tensor] | None = None

    def start(self, mode: str) -> None:
        self.mode, self.cursor = mode, 0

    def parameters(self) -> list[torch.Tensor]:
        return [t for s in self.norms for t in (s.weight, s.bias) if t is not None]


def trained_norm(record: Norm, sites: Sites, batch_stats: bool, learns: bool) -> Norm:
    """`record` with an affine weight and bias per channel (created on the first pass, 1 and 0,
    as torch's norms start), and, for batch statistics (train-mode BatchNorm), running ones."""

    def build(net: Net, device: torch.device, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
        base = record.build(net, device, dtype)

        def norm(x: torch.Tensor) -> torch.Tensor:
            i = sites.cursor
            sites.cursor += 1
            if i == len(sites.norms):
                c = x.shape[1]
                w, b = (torch.ones(c, device=device, dtype=dtype), torch.zeros(c, device=device, dtype=dtype))
                run = (torch.zeros_like(w), torch.ones_like(w)) if batch_stats else (None, None)
                sites.norms.append(
                    NormState(w.requires_grad_(), b.requires_grad_(), *run)
                    if learns
                    else NormState(None, None, None, None)
                )
            s = sites.norms[i]
            if batch_stats:
                if sites.mode == "eval":
                    return F.batch_norm(x, s.running_mean, s.running_var, s.weight, s.bias, False, 0.0, EPS)
                keep = sites.mode == "fit"
                return F.batch_norm(
                    x,
                    s.running_mean if keep else None,
                    s.running_var if keep else None,
                    s.weight,
                    s.bias,
                    True,
                    BN_MOMENTUM,
                    EPS,
                )
            y = base(x)
            if s.weight is None or s.bias is None:
                return y
            shape = (1, -1) + (1,) * (x.dim() - 2)
            return y * s.weight.view(shape) + s.bias.view(shape)

        return norm

    return dataclasses.replace(record, build=build)


def watched(record: Activation, sites: Sites) -> Activation:
    """`record`, its inputs kept while the sites record (the pre-activations)."""

    def build(net: Net) -> Callable[[torch.Tensor], torch.Tensor]:
        act = record.build(net)

        def f(x: torch.Tensor) -> torch.Tensor:
            if sites.acts is not None:
                sites.acts.append(x.detach())
            return act(x)

        return f

    return dataclasses.replace(record, build=build)


class Model:
    """The trained network: `model(x, mode)` gives the logits of data rows x (n, input_dim)."""

    def __init__(self, net: Net, input_dim: int, classes: int, device: torch.device) -> None:
        self.net, self.device, self.dtype = net, device, torch_dtype(net.dtype)
        self.arch = net.arch_module()
        self.sites = Sites()
        batch_stats = net.norm.across_samples(net)  # train-mode BatchNorm
        learns = net.norm.group(net, 2, 1) is not None or batch_stats  # a norm that normalises
        self.tnet = dataclasses.replace(
            net,
            norm=trained_norm(net.norm, self.sites, batch_stats, learns),
            activation=watched(net.activation, self.sites),
        )
        self._built: dict[int, tuple[Net, Any, Any]] = {}
        self.layers = [self.arch.make_weight(net, i, device) for i in range(net.depth)]
        self.sample = tuple(self.arch.input_shape(net)[1:])
        self.direct = len(self.sample) == 1 and not net.skip  # the first layer reads the data
        self.embed: torch.Tensor | None = None
        if self.direct:
            self.layers[0] = draw(net, (net.width, input_dim), 0, device)  # the depth study's layer 0 if square
        else:
            self.embed = torch.empty(math.prod(self.sample), input_dim, device=device, dtype=self.dtype)
            net.init.fill(self.embed, generator(device, net.seed, Stream.TRAIN_WEIGHT, 0), net)
        for t in self.body_weights():
            t.requires_grad_(True)
        with torch.no_grad():  # one pass makes the norms' state and gives the head's width
            width = self.features(torch.zeros(2, input_dim, device=device, dtype=self.dtype), "peek").shape[-1]
        bound = 1 / math.sqrt(width)  # nn.Linear's own init
        g = generator(device, net.seed, Stream.TRAIN_WEIGHT, 1)
        self.head_w = torch.empty(classes, width, device=device, dtype=self.dtype).uniform_(-bound, bound, generator=g)
        self.head_b = torch.zeros(classes, device=device, dtype=self.dtype)
        self.head_w.requires_grad_(True)
        self.head_b.requires_grad_(True)

    def body_weights(self) -> list[torch.Tensor]:
        return [t for w in self.layers for t in weights(w)] + ([self.embed] if self.embed is not None else [])

    def parameters(self) -> list[torch.Tensor]:
        return [*self.body_weights(), *self.sites.parameters(), self.head_w, self.head_b]

    def built(self, n: int) -> tuple[Net, Any, Any]:
        """(net, step, readout) for batches of n samples (a transformer's step is made for its batch)."""
        if n not in self._built:
            net = dataclasses.replace(self.tnet, batch_size=n)
            self._built[n] = (net, self.arch.step(net, self.device), self.arch.readout(net, self.device))
        return self._built[n]

    def features(
        self, x: torch.Tensor, mode: str, layers: list[tuple[torch.Tensor, Any, torch.Tensor | None]] | None = None
    ) -> torch.Tensor:
        """The pooled (n, channels) features of data rows x; with `layers`, each layer's (output,
        branch output, last pre-activation) appended to it."""
        n = x.shape[0]
        _, step, readout = self.built(n)
        self.sites.start(mode)
        h = x if self.embed is None else F.linear(x, self.embed).view(n, *self.sample)
        for w in self.layers:
            if layers is not None:
                self.sites.acts = []
            out = step(h, w)
            h, branch = out if isinstance(out, tuple) else (out, None)
            if layers is not None and self.sites.acts is not None:
                layers.append((h, branch, self.sites.acts[-1] if self.sites.acts else None))
                self.sites.acts = None
        r = self.arch.rows(readout(h))
        return r.reshape(n, -1, r.shape[-1]).mean(1)

    def __call__(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        return F.linear(self.features(x, mode), self.head_w, self.head_b)


def make_optimizer(cfg: Any, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum_sgd, weight_decay=cfg.weight_decay)


def layer_columns(net: Net, on: set[str]) -> tuple[list[str], list[stats.Stat]]:
    """layers.csv's columns (step, layer, the architecture's ids, the depth study's statistics
    of a probe, the percentiles, grad_norm) and the statistics computed."""
    arch = net.arch_module()
    computed = [s for s in stats.buffered(net.arch, on, arch.BRANCH)]
    cols = ["step", "layer", *arch.IDS, *[s.name for s in computed], "p15", "p50", "p85", "grad_norm"]
    return cols, computed


def _runs_of_equal_shape(ts: list[torch.Tensor]) -> list[tuple[int, int]]:
    """(start, stop) of each run of consecutive tensors of one shape (a ResNet's stages differ)."""
    spans, start = [], 0
    for k in range(1, len(ts) + 1):
        if k == len(ts) or ts[k].shape != ts[start].shape:
            spans.append((start, k))
            start = k
    return spans


_SUBSETS: dict[tuple[int, str], torch.Tensor] = {}


def subset(n: int, device: torch.device) -> torch.Tensor | None:
    """The fixed indices of PERCENTILE_VALUES of n values (None: n is no more than that)."""
    if n <= PERCENTILE_VALUES:
        return None
    key = (n, str(device))
    if key not in _SUBSETS:
        g = generator(torch.device("cpu"), 0, Stream.SUBSET)
        _SUBSETS[key] = torch.randperm(n, generator=g)[:PERCENTILE_VALUES].to(device)
    return _SUBSETS[key]


def _percentiles(pres: list[torch.Tensor | None], device: torch.device) -> torch.Tensor:
    """(depth, 3): PERCENTILES of each layer's pre-activation (its values, or a fixed subset of
    PERCENTILE_VALUES of them), nan where it has none; one torch.quantile over the rows of a run
    of layers of one size."""
    out = torch.full((len(pres), 3), math.nan, device=device, dtype=torch.float64)
    have = [k for k, p in enumerate(pres) if p is not None]
    flats = [pres[k].flatten() for k in have]  # type: ignore[union-attr]
    q = torch.tensor(PERCENTILES, device=device, dtype=torch.float64)
    for a, b in _runs_of_equal_shape(flats):
        rows = torch.stack(flats[a:b])
        idx = subset(rows.shape[1], device)
        rows = (rows if idx is None else rows[:, idx]).to(torch.float64)
        out[have[a:b]] = torch.quantile(rows, q, dim=1).T
    return out


def probe_rows(
    model: Model, x: torch.Tensor, computed: list[stats.Stat], outputs: Callable[[list[Any]], None] | None = None
) -> torch.Tensor:
    """(depth, len(computed) + 3) on the device: each layer's depth-study statistics of the
    probe batch x, the batch statistics' network (running ones left alone), and the
    percentiles of its last pre-activation (nan where a layer has none). The chunk statistics
    of a run of layers of one shape are computed together, as the depth study's chunks."""
    layers: list[tuple[torch.Tensor, Any, torch.Tensor | None]] = []
    with torch.no_grad():
        model.features(x, "peek", layers)
    if outputs is not None:
        outputs([h for h, _, _ in layers])
    net = model.built(x.shape[0])[0]
    chunked = [s for s in computed if s.kind == "chunk"]
    per_layer = [s for s in computed if s.kind == "layer"]
    with torch.no_grad():
        rows = [model.arch.rows(h) for h, _, _ in layers]
        rows = [r.reshape(-1, r.shape[-1]) for r in rows]
        parts = [torch.cat([stats.of_chunk(chunked, torch.stack(rows[a:b])) for a, b in _runs_of_equal_shape(rows)])]
        if per_layer:
            one = []
            for r, (_, branch, _) in zip(rows, layers, strict=True):
                layer = stats.Layer(r, branch, model.arch.matrices(net, r))
                one.append(torch.stack([s.compute(layer).to(torch.float64) for s in per_layer]))  # type: ignore[misc]
            parts.append(torch.stack(one))
        parts.append(_percentiles([pre for _, _, pre in layers], x.device))
    return torch.cat(parts, 1)


def grad_norms(model: Model) -> torch.Tensor:
    """(depth,) Frobenius norm of the loss's gradient with respect to each layer's weights (a
    block's: over all of them)."""
    norms = []
    for w in model.layers:
        g = [t.grad for t in weights(w) if t.grad is not None]
        norms.append(
            torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in g]))
            if g
            else torch.tensor(math.nan, device=model.device)
        )
    return torch.stack(norms).to(torch.float64)


def accuracy(model: Model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Accuracy in eval mode (BatchNorm's running statistics), on the device."""
    with torch.no_grad():
        hits = [
            (model(x[i : i + EVAL_CHUNK], "eval").argmax(1) == y[i : i + EVAL_CHUNK]).sum()
            for i in range(0, len(y), EVAL_CHUNK)
        ]
    return torch.stack(hits).sum().to(torch.float64) / len(y)


class Recorder:
    """The rows a run keeps on the device until its end: the losses, the evaluations and the
    per-layer records, read back once."""

    def __init__(self, steps: int, device: torch.device) -> None:
        self.loss = torch.full((steps + 1,), math.nan, device=device, dtype=torch.float64)
        self.evals: list[tuple[int, torch.Tensor]] = []  # (step, [train_acc, test_acc])
        self.layers: list[tuple[int, torch.Tensor]] = []  # (step, (depth, k))
        self.last: dict[int, torch.Tensor] = {}  # step -> the last layer's percentiles

    def table(self, done: int, lr: float) -> pd.DataFrame:
        loss = self.loss[:done].cpu().numpy()
        t = pd.DataFrame({"step": range(done), "loss": loss})
        for col in ("train_acc", "test_acc", "last_p15", "last_p50", "last_p85"):
            t[col] = np.nan
        t["lr"] = lr
        for step, acc in self.evals:
            if step < done:
                t.loc[step, ["train_acc", "test_acc"]] = acc.cpu().numpy()
        for step, rows in self.layers:
            if step < done:
                t.loc[step, ["last_p15", "last_p50", "last_p85"]] = rows[-1, -4:-1].cpu().numpy()
        return t[["step", "loss", "train_acc", "test_acc", "lr", "last_p15", "last_p50", "last_p85"]]


@dataclasses.dataclass
class Training:
    """A run's parts: what the loop reads and writes."""

    cfg: Any
    net: Net
    model: Model
    opt: torch.optim.Optimizer
    sets: data.Data
    batches: data.Batches
    probe: torch.Tensor
    cols: list[str]
    computed: list[stats.Stat]
    rec: Recorder
    writer: Any
    check: bool  # a host sync every step to stop at a non-finite loss (CPU), else only at evaluations


def checks_every_step(device: torch.device) -> bool:
    """A host sync a step costs nothing on CPU: stop at the first non-finite loss. On CUDA the
    losses are checked at evaluations only, and the rows past the first non-finite one dropped."""
    return device.type == "cpu"


def train(cfg: Any, device: torch.device, progress: Callable[[int], None] | None = None) -> Result:
    """Train for cfg.steps steps; rows 0..steps, row t the loss of batch t after t updates (the
    last row's batch is not stepped on), evaluations and records before the update of their step."""
    from bncli.studies.train.tensorboard import Writer

    net = Net.of(cfg)
    d = data.load(cfg, device, torch_dtype(cfg.dtype))
    model = Model(net, cfg.input_dim, cfg.classes, device)
    cols, computed = layer_columns(net, {f for f in stats.flags() if getattr(cfg, f, False)})
    run = Training(
        cfg,
        net,
        model,
        make_optimizer(cfg, model.parameters()),
        d,
        data.Batches(len(d.y_train), cfg.batch_size, cfg.seed, device),
        d.x_train[: min(cfg.probe_size, len(d.y_train))],
        cols,
        computed,
        Recorder(cfg.steps, device),
        Writer(cfg.tensorboard) if cfg.tensorboard else None,
        checks_every_step(device),
    )
    macs = model.arch.layer_macs(dataclasses.replace(net, batch_size=cfg.batch_size))
    small = device.type == "cpu" and macs < ONE_THREAD_MACS
    with torch_threads(1 if small else torch.get_num_threads()):
        status, done = _loop(run, progress)
    return _finish(run, done, status)


def _loop(run: Training, progress: Callable[[int], None] | None) -> tuple[str, int]:
    """(status, rows done): steps 0..steps, stopping at the first non-finite loss seen."""
    cfg, model, d, rec, opt = run.cfg, run.model, run.sets, run.rec, run.opt
    done = 0
    try:
        for t in range(cfg.steps + 1):
            evaluate = t % cfg.eval_every == 0 or t == cfg.steps
            record = bool(cfg.record_every) and (t % cfg.record_every == 0 or t == cfg.steps)
            if evaluate:
                accs = [accuracy(model, d.x_train, d.y_train), accuracy(model, d.x_test, d.y_test)]
                rec.evals.append((t, torch.stack(accs)))
            hist = (lambda outs, t=t: run.writer.histograms(t, outs)) if run.writer is not None else None
            probed = probe_rows(model, run.probe, run.computed, hist) if record else None
            idx = run.batches(t)
            loss = F.cross_entropy(model(d.x_train[idx], "fit"), d.y_train[idx])
            rec.loss[t] = loss.detach()
            done = t + 1
            opt.zero_grad(set_to_none=True)
            if record or t < cfg.steps:
                loss.backward()
            if probed is not None:
                rec.layers.append((t, torch.cat([probed, grad_norms(model)[:, None]], 1)))
            if run.check and not math.isfinite(loss.item()):  # the one sync a step: a CPU tensor's value
                break
            if evaluate and not run.check and not bool(torch.isfinite(rec.loss[:done]).all()):
                break
            if t < cfg.steps:
                opt.step()
            if progress is not None and (t % max(1, cfg.steps // 100) == 0 or t == cfg.steps):
                progress(min(t + 1, cfg.steps))
    except KeyboardInterrupt:
        return "interrupted", done
    return "ok", done


def _finish(run: Training, done: int, status: str) -> Result:
    """The tables read back once; a non-finite loss makes the run diverged at its step."""
    table = run.rec.table(done, run.cfg.lr)
    bad = np.flatnonzero(~np.isfinite(table["loss"].to_numpy()))
    diverged_at = None
    if len(bad):
        diverged_at, status = int(bad[0]), "diverged"
        table = table.iloc[: diverged_at + 1]
    layers = layer_table(run.net, run.cols, run.rec, len(table))
    if run.writer is not None:
        run.writer.write(table, layers)
    evals = table["test_acc"].dropna()
    info = {
        "diverged_at": diverged_at,
        "steps_done": max(0, len(table) - 1),
        "final_test_acc": float(evals.iloc[-1]) if len(evals) else None,
    }
    off = [] if run.cfg.record_every else ["last_p15", "last_p50", "last_p85"]  # not recorded: empty cells
    return Result(table.reset_index(drop=True), status, info, off, files={LAYERS_CSV: layers})


def layer_table(net: Net, cols: list[str], rec: Recorder, done: int) -> pd.DataFrame:
    arch = net.arch_module()
    kept = [(step, rows) for step, rows in rec.layers if step < done]
    read: Any = torch.stack([rows for _, rows in kept]).cpu().numpy() if kept else []  # one read-back for all steps
    frames = []
    for (step, _), values in zip(kept, read, strict=True):
        f = pd.DataFrame(values, columns=cols[2 + len(arch.IDS) :])
        for name in reversed(arch.IDS):
            f.insert(0, name, [arch.stage(net, i) for i in range(len(f))])
        f.insert(0, "layer", range(len(f)))
        f.insert(0, "step", step)
        frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
