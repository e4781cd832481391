"""What a study module is made of: the Result it returns, the Study protocol it declares, and
the memory preflight the studies share. bncli/studies/__init__.py holds the registry.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd
import torch

from bncli.errors import BncliError


@dataclass
class Result:
    """What a study computes, in memory. `table` goes to the study's CSV."""

    table: pd.DataFrame  # NaN where a statistic is off or not finite
    status: str  # ok | diverged | interrupted
    info: dict[str, Any] = field(default_factory=dict)  # study-specific meta.json fields
    off: list[str] = field(default_factory=list)  # columns not computed: empty cells in the CSV


class Study(Protocol):
    """What every module in REGISTRY declares."""

    NAME: str  # its key in REGISTRY, the CLI command and the results/<NAME>/ directory
    CONFIG: type  # its config model (a bncli.config.Config)
    CSV: str  # the per-run table's file name
    COLUMNS: list[str]  # that table's columns, in order
    ID_COLUMNS: list[str]  # the columns that identify a row within a run (x axis first)
    LABEL_KEYS: list[str]  # settings that label a single run in a plot when none differ
    PLOT: str  # the default plot's file name (a sweep's plot, `bncli plot` of its runs)
    RUN_PLOT: bool  # does a single run's directory get the plot too
    SWEEP_COLUMNS: list[str]  # the sweep summary's columns, one row per config
    # optional: COMPARE_METRIC: str, the column `bncli compare` sets side by side by default
    # (without it, the first column after ID_COLUMNS)

    def label(self, cfg) -> str: ...  # the part of a default run name that tells runs apart
    def describe_size(self, cfg) -> str: ...  # the sizes, for an out-of-memory message
    def progress_total(self, cfg) -> int | None: ...  # steps for a progress bar; None: no bar
    def preflight(self, cfg) -> torch.device: ...  # every check before a run directory exists
    def run(self, cfg, device: torch.device, progress: Callable[[int], None] | None = None) -> Result: ...
    def render(self, run, every: int | None = None) -> list: ...  # rich renderables of a Run with a table
    def sweep_cells(self, runs: list) -> list[str]: ...  # SWEEP_COLUMNS' cells over finished runs
    def draw(self, plt, table, metric: str | None, opts) -> Any: ...  # a matplotlib figure of labelled

    # runs, following a figures.Options (panels, y scale, title); it may define
    # auto_facet(table, metric, columns) -> column | None to pick its panels


def capacity(device: torch.device) -> int:
    """Bytes of memory of `device`: the GPU's, or this machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(device: torch.device, need: int, sizes: str, smaller: str) -> None:
    """Refuse, before anything is allocated, a run whose estimated peak memory is over 90% of
    the device's: one clean line instead of an OOM (or the OS killing the process) mid-run."""
    have = capacity(device)
    if need > 0.9 * have:
        raise BncliError(
            f"too large: {sizes} needs about {need / 2**30:.1f} GiB but {device} has "
            f"{have / 2**30:.1f} GiB; use {smaller}"
        )
