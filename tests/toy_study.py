"""A study written the way a new one would be: this module plus one REGISTRY line.

    bncli toy --width 8     # once registered: REGISTRY["toy"] = "toy" (tests register it for a test)

Each step draws a fresh seeded N(0, scale^2) batch and records its std: the smallest study
that still has every part a study declares (config, CSV, sweep columns, render, plot).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from bncli import figures, report
from bncli.config import Config, Device, FloatDType, PosFloat, Positive, Seed
from bncli.nets import DTYPES, generator, resolve_device
from bncli.studies.base import Result, check_fits


class ToyConfig(Config):
    """Seeded N(0, scale^2) batches."""

    steps: Positive = 3
    width: Positive = 16
    scale: PosFloat = 2.0
    seed: Seed
    device: Device
    dtype: FloatDType


NAME = "toy"
CONFIG = ToyConfig
CSV = "toy.csv"
COLUMNS = ["step", "std"]
ID_COLUMNS = ["step"]
LABEL_KEYS = ["scale"]
PLOT = "toy.png"
RUN_PLOT = False
SWEEP_COLUMNS = ["mean std"]


def label(cfg: ToyConfig) -> str:
    return f"s{cfg.scale:g}"


def describe_size(cfg: ToyConfig) -> str:
    return f"width {cfg.width}"


def progress_total(cfg: ToyConfig) -> None:
    return None


def preflight(cfg: ToyConfig) -> torch.device:
    device = resolve_device(cfg.device)
    check_fits(device, cfg.width * 64 * 8, describe_size(cfg), "a smaller --width")
    return device


def run(cfg: ToyConfig, device: torch.device, progress=None) -> Result:
    stds = torch.stack(
        [
            cfg.scale
            * torch.randn(
                64, cfg.width, device=device, dtype=DTYPES[cfg.dtype.value], generator=generator(device, cfg.seed, 9, t)
            ).std()
            for t in range(cfg.steps)
        ]
    )
    return Result(pd.DataFrame({"step": range(cfg.steps), "std": stds.double().cpu().numpy()}), "ok")


def render(run, every=None) -> list:
    t = report.table(COLUMNS)
    for _, row in run.table.iterrows():
        t.add_row(str(int(row["step"])), report.fmt(float(row["std"])))
    return [t]


def sweep_cells(runs: list[pd.DataFrame]) -> list[str]:
    return [report.pm([r["std"].mean() for r in runs])]


def draw(plt, table: pd.DataFrame, metric: str | None, opts=None):
    fig, ax = plt.subplots()
    for _, g in figures.groups(table):
        x, mean, _, _ = figures.mean_sd(g, "step", metric or "std")
        ax.plot(x, np.asarray(mean), label=g["label"].iloc[0])
    return fig
