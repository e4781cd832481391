"""A study written the way a new one would be: this module plus one REGISTRY line.

Seeded N(0, scale^2) batches, and the std of each.

    bncli toy --width 8     # once registered: REGISTRY["toy"] = "toy" (tests register it for a test)

Each step draws a fresh seeded batch and records its std: the smallest study that still has
every part a study declares (config, CSV, summary, render, plot).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from bncli import fields, figures, report
from bncli.fields import Config, field
from bncli.runtime import Stream, check_fits, generator, resolve_device, torch_dtype
from bncli.studies.base import MeanSd, Result, Summary


class ToyConfig(Config):
    """Seeded N(0, scale^2) batches."""

    steps: int = field(3, ge=1, help="batches drawn")
    width: int = field(16, ge=1, help="features per batch")
    scale: float = field(2.0, gt=0, help="std of each batch")
    seed: int = fields.seed()
    device: str = fields.device()
    dtype: str = fields.dtype(fields.FLOAT_DTYPES)


NAME = "toy"
CONFIG = ToyConfig
OPTIONS = fields.NoOptions
CSV = "toy.csv"
COLUMNS = ["step", "std"]
ID_COLUMNS = ["step"]
TEXT_COLUMNS: list[str] = []
INFO: dict[str, Any] = {}
LABEL_KEYS = ["scale"]
PLOT = "toy.png"
RUN_PLOT = False
SUMMARY = ["mean std"]
COMPARE_METRIC = "std"


def columns(settings: dict[str, Any]) -> list[str]:
    return COLUMNS


def label(cfg: ToyConfig) -> str:
    return f"s{cfg.scale:g}"


def describe_size(cfg: ToyConfig) -> str:
    return f"width {cfg.width}"


def estimate_bytes(cfg: ToyConfig) -> int:
    return cfg.width * 64 * 8


def progress_total(cfg: ToyConfig) -> None:
    return None


def preflight(cfg: ToyConfig) -> torch.device:
    device = resolve_device(cfg.device)
    check_fits(device, estimate_bytes(cfg), describe_size(cfg), "a smaller --width")
    return device


def run(cfg: ToyConfig, device: torch.device, progress: Callable[[int], None] | None = None) -> Result:
    def draw(t: int) -> torch.Tensor:
        g = generator(device, cfg.seed, Stream.BATCH, t)
        return torch.randn(64, cfg.width, device=device, dtype=torch_dtype(cfg.dtype), generator=g)

    stds = torch.stack([(cfg.scale * draw(t)).std() for t in range(cfg.steps)])
    return Result(pd.DataFrame({"step": range(cfg.steps), "std": stds.double().cpu().numpy()}), "ok")


def render(run: Any, every: int | None = None) -> list[Any]:
    t = report.table(COLUMNS)
    for _, row in run.table.iterrows():
        t.add_row(str(int(row["step"])), report.fmt(float(row["std"])))
    return [t]


def summarize(runs: list[pd.DataFrame]) -> Summary:
    return {"mean std": MeanSd.over([float(r["std"].mean()) for r in runs])}


def draw(plt: Any, table: pd.DataFrame, metric: str | None, opts: Any = None) -> Any:
    fig, ax = plt.subplots()
    for _, g in figures.groups(table):
        x, mean, _, _ = figures.mean_sd(g, "step", metric or "std")
        ax.plot(x, np.asarray(mean), label=g["label"].iloc[0])
    return fig


def auto_facet(table: pd.DataFrame, metric: str | None, columns: list[str]) -> str | None:
    return None
