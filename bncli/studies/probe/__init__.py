"""The depth study's statistics for any PyTorch model at init: torchvision, timm, Hugging Face, your own file.

Builds MODEL with its own default init (never downloading weights), feeds it seeded input and
records, inside forward hooks, the statistics of the tapped modules' outputs: by default every
block the structure shows as repeated (ResNet blocks, transformer layers) and the model's
output. MODEL is torchvision:NAME, timm:NAME, hf:MODEL_TYPE (a transformers model from its
config class), path/to/file.py:function or package.module:function. --init and --swap-norm
ask what another init or norm would do. Writes probe.csv, config.yaml and meta.json under
OUT/probe/NAME/. torchvision, timm and transformers are optional: the vision extra
(constraints-vision.txt) has a tested set.

Example: bncli probe torchvision:resnet18 --input-shape 3,64,64 --batch-size 8

Example: bncli probe hf:gpt2 --model-arg n_layer=24 --grads
"""

# This module declares the study and loads nothing heavy; the models (models.py), the taps and
# interventions (taps.py), the statistics (stats.py), the run (engine.py) and the plot
# (plots.py) load when a run needs them.

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from bncli import fields, report
from bncli.errors import BncliError, plural
from bncli.fields import Config, field, int_list
from bncli.runtime import check_fits, resolve_device
from bncli.studies.base import Count, MeanSd, Number, Result, Summary
from bncli.studies.depth.components import INITS
from bncli.studies.probe import stats
from bncli.studies.probe.models import parse as parse_model
from bncli.studies.probe.taps import FAMILIES, TARGETS, check_swap

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

    from bncli.figures import Options
else:
    from bncli.lazy import lazy

    np = lazy("numpy")


class _Inits(Mapping[str, str]):
    """--init's choices: `model` (the model's own init), then the depth study's schemes, as
    registered when asked (an init registered later is a choice too)."""

    def __getitem__(self, word: str) -> str:
        return "the model's own default init (no change)" if word == "model" else INITS[word].help

    def __iter__(self) -> Iterator[str]:
        return iter(["model", *INITS])

    def __len__(self) -> int:
        return 1 + len(INITS)


def _model(v: Any) -> Any:
    if isinstance(v, str):
        parse_model(v)
    return v


def _model_args(v: Any) -> Any:
    items = [v] if isinstance(v, str) else v
    if isinstance(items, list):
        for item in items:
            key, sep, _ = str(item).partition("=")
            if not sep or not key.strip().isidentifier():
                raise ValueError(f"must be KEY=VALUE like n_layer=48 (got {item!r})")
    return items


def _texts(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


INPUTS = {
    "auto": "token ids for a model whose input is input_ids (Hugging Face language models), else randn",
    "randn": "seeded N(0, 1) of --input-shape",
    "tokens": "seeded token ids, uniform over the vocabulary, --seq-len per sample",
}
MODES = {"train": "model.train(): batch statistics in BatchNorm, dropout on", "eval": "model.eval()"}


class ProbeConfig(Config):
    """Any PyTorch model, its tapped modules' output statistics at init."""

    model: str = field(
        None,
        positional=True,
        metavar="MODEL",
        parse=_model,
        shown="required",
        help="the model: torchvision:NAME, timm:NAME, hf:MODEL_TYPE, path/to/file.py:function or "
        "package.module:function",
    )
    model_arg: list[str] = field(
        [],
        parse=_model_args,
        metavar="KEY=VALUE",
        shown="none",
        help="a keyword argument of the model's builder, function or config class (repeatable), "
        "its value read as YAML: n_layer=48",
    )
    input: str = field("auto", choices=INPUTS, help="what the model is fed")
    input_shape: list[int] | None = field(
        None,
        ge=1,
        parse=int_list,
        shown="the model's: 3,224,224 for torchvision, timm's input_size",
        help="one sample's shape of the N(0, 1) input, like 3,224,224 or 64",
    )
    seq_len: int = field(128, ge=1, help="tokens per sample (--input tokens)")
    batch_size: int = field(8, ge=1, help="samples in the batch")
    layers: list[str] = field(
        [],
        parse=_texts,
        metavar="GLOB",
        shown="the repeated blocks and the output",
        help="tap the modules whose qualified names match (repeatable; the innermost where one holds another, "
        "so '*' is every leaf and 'layer3.?' layer3's blocks)",
    )
    types: list[str] = field(
        [], parse=_texts, metavar="CLASS", shown="none", help="tap the modules of this class (repeatable), like Conv2d"
    )
    init: str = field("model", choices=_Inits(), help="redraw every weight of 2 or more dims with this scheme")
    init_std: float = field(1.0, gt=0, help="std of the normal and trunc_normal inits")
    init_gain: float = field(1.0, gt=0, help="gain of the orthogonal, xavier, xavier_uniform and lecun_normal inits")
    swap_norm: str | None = field(
        None,
        parse=check_swap,
        metavar="FROM:TO",
        help="replace every norm of one kind, FROM "
        + ", ".join(FAMILIES)
        + ", by TO "
        + ", ".join(TARGETS)
        + ", like batchnorm:groupnorm (none: no swap)",
    )
    mode: str = field("train", choices=MODES, help="the model's mode")
    grads: bool = field(False, help="one backward pass from a seeded N(0, 1) cotangent: grad_std of every tap")
    erank: bool = field(False, help="effective rank of every tap's (samples, channels) matrix (an SVD each)")
    seed: int = fields.seed()
    device: str = fields.device()
    dtype: str = fields.dtype()

    def resolve(self, given: set[str]) -> dict[str, Any]:
        # no model is a config still (the defaults `bncli runs` compares runs with); preflight refuses to run it
        if self.input == "tokens" and self.input_shape is not None:
            raise ValueError("input_shape: only for N(0, 1) input; token ids take --seq-len")
        return {}


NAME = "probe"
CONFIG = ProbeConfig


class ProbeOptions(Config):
    """What `bncli probe` shows, beyond the config."""

    every: int | None = field(
        None, ge=1, metavar="K", help="show every K-th tap on screen (default: all up to 100 taps, else about 50)"
    )


OPTIONS = ProbeOptions
CSV = "probe.csv"
COLUMNS = stats.COLUMNS
ID_COLUMNS = ["index"]
TEXT_COLUMNS = stats.TEXT
INFO = {
    "taps": int,
    "diverged_at": int | None,
    "model_class": str,
    "parameters": int,
    "swapped": int,
    "input_shape": list[int],
}
LABEL_KEYS = ["model", "init", "swap_norm"]
PLOT = "probe.png"
RUN_PLOT = False
SUMMARY = ["taps", "output std", "min std", "max std", "diverged"]
COMPARE_METRIC = "std"


def columns(settings: dict[str, Any]) -> list[str]:
    return COLUMNS


def label(cfg: ProbeConfig) -> str:
    spec = parse_model(cfg.model)
    name = spec.name if spec.source not in ("file", "module") else f"{PurePath(spec.name).stem}-{spec.function}"
    parts = [name, *(cfg.init,) * (cfg.init != "model")]
    if cfg.swap_norm:
        parts.append(cfg.swap_norm.replace(":", "-"))
    return "-".join(parts)


def describe_size(cfg: ProbeConfig) -> str:
    shape = "x".join(map(str, cfg.input_shape)) if cfg.input_shape else f"{cfg.seq_len} tokens"
    return f"{cfg.model}, batch {cfg.batch_size} of {shape}, {cfg.dtype}"


def estimate_bytes(cfg: ProbeConfig) -> int:
    """A rough peak before the model is built: its input times what a deep net holds at once (about
    50 inputs' worth at inference, every activation with --grads). Only refuses what cannot fit."""
    sample = math.prod(cfg.input_shape) if cfg.input_shape else 3 * 224 * 224 if cfg.input != "tokens" else 0
    values = cfg.batch_size * max(sample, cfg.seq_len * 768)
    return values * 4 * (500 if cfg.grads else 50)


def progress_total(cfg: ProbeConfig) -> None:
    return None  # one forward pass: nothing to count


def preflight(cfg: ProbeConfig) -> torch.device:
    """The device, the model's package and name, and the size, before a run directory exists."""
    from bncli.studies.probe import models

    if cfg.model is None:
        raise BncliError("MODEL: give the model to probe, like torchvision:resnet18 or my_model.py:build")
    device = resolve_device(cfg.device)
    models.check(parse_model(cfg.model))
    check_fits(device, estimate_bytes(cfg), describe_size(cfg), "a smaller --batch-size or --input-shape")
    return device


def run(cfg: ProbeConfig, device: torch.device, progress: Callable[[int], None] | None = None) -> Result:
    """Build the model, tap it, one forward pass (engine.run)."""
    from bncli.studies.probe import engine

    return engine.run(cfg, device)


# -- rendering ----------------------------------------------------------------------------------

SHOWN = ["index", "module", "type", "shape", *stats.MOMENTS, "erank", "grad_std"]


def tap_table(table: pd.DataFrame, every: int | None = None, diverged_at: int | None = None) -> Table:
    from bncli.studies.depth import shown_layers

    n = len(table)
    every = every or (1 if n <= 100 else math.ceil(n / 50))
    cols = [c for c in SHOWN if c in report.shown_columns(table)]
    t = report.table(cols)
    for c in ("module", "type"):
        if c in cols:
            t.columns[cols.index(c)].justify = "left"
    for i in shown_layers(n, every, diverged_at):
        row = table.iloc[i]
        cells = []
        for c in cols:
            if c == "index":
                cells.append(str(int(row[c])))
            elif c == "module":
                cells.append(_where(row))
            elif c in stats.TEXT:
                cells.append(str(row[c]))
            else:
                cells.append(report.fmt(float(row[c])))
        t.add_row(*cells, style="red" if i == diverged_at else None)
    return t


def _where(row: Any) -> str:
    """`layer1.0`, with the call (`#1`) and where the tensor is in the output (`[0]`) where they are not the first."""
    text = str(row["module"])
    call = row.get("call", 0)
    if isinstance(call, (int, float)) and not math.isnan(call) and call:
        text += f" #{int(call)}"
    out = row.get("output", "out")
    return text + (str(out).removeprefix("out") if isinstance(out, str) and out != "out" else "")


def summary(table: pd.DataFrame, meta: dict[str, Any]) -> Text:
    lines = []
    finite = table["std"][np.isfinite(table["std"].to_numpy(float))] if len(table) else table["std"]
    if len(finite):
        lines.append(
            f"std over {plural(len(table), 'tap')}: min {report.num(finite.min())}, "
            f"max {report.num(finite.max())}, output {report.num(float(table['std'].iloc[-1]))}"
        )
    if meta.get("diverged_at") is not None:
        row = table.iloc[int(meta["diverged_at"])]
        lines.append(f"diverged: non-finite output at tap {int(row['index'])} ({row['module']})")
    if meta.get("swapped"):
        lines.append(f"swapped {plural(int(meta['swapped']), 'norm')}")
    if meta.get("status") == "interrupted":
        lines.append(f"interrupted after {plural(len(table), 'tap')}")
    return Text("\n".join(lines))


def render(run: Any, every: int | None = None) -> list[Any]:
    return [tap_table(run.table, every, run.meta.get("diverged_at")), summary(run.table, run.meta)]


def summarize(runs: list[pd.DataFrame]) -> Summary:
    """SUMMARY over a config's finished runs: taps, the last tap's std over seeds, min and max
    std over taps and seeds, the diverged count."""
    std = np.concatenate([r["std"].to_numpy(float) for r in runs]) if runs else np.array([])
    std = std[np.isfinite(std)]
    last = [float(r["std"].iloc[-1]) for r in runs if r["status"].iloc[0] == "ok"]
    return {
        "taps": Number(float(max((len(r) for r in runs), default=0)) if runs else None, "sig"),
        "output std": MeanSd.over(last, len(runs)),
        "min std": Number(float(std.min()) if len(std) else None),
        "max std": Number(float(std.max()) if len(std) else None),
        "diverged": Count(sum(r["status"].iloc[0] == "diverged" for r in runs), len(runs)),
    }


def draw(plt: Any, table: pd.DataFrame, metric: str | None, opts: Options | None = None) -> Any:
    from bncli.studies.probe import plots

    return plots.draw(plt, table, metric, opts)


def auto_facet(table: pd.DataFrame, metric: str | None, columns: list[str]) -> str | None:
    return None  # every config on one axis: the plot is there to set them side by side
