"""One module per study. Each exposes:

    CSV: str                         # the per-run table's file name
    preflight(cfg) -> device         # everything that can fail before a run directory exists
    run(cfg, device, progress=None) -> Result

Modules load lazily (`get`), so listing studies never imports torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

MODULES = {"depth-study": "depth", "running-stats": "running_stats", "running-stats-convergence": "convergence"}


@dataclass
class Result:
    table: pd.DataFrame  # what goes to the study's CSV
    status: str  # ok | diverged | interrupted
    info: dict[str, Any] = field(default_factory=dict)  # study-specific meta.json fields


def get(study: str):
    return importlib.import_module(f"bncli.studies.{MODULES[study]}")


def check_fits(device, need: int, sizes: str, smaller: str) -> None:
    """Refuse, before anything is allocated, a run whose estimated peak memory is over 90% of
    the device's: one clean line instead of an OOM (or the OS killing the process) mid-run."""
    import os

    from bncli.errors import BncliError

    if device.type == "cuda":
        import torch

        have = torch.cuda.get_device_properties(device).total_memory
    else:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > 0.9 * have:
        raise BncliError(f"too large: {sizes} needs about {need / 2**30:.1f} GiB but {device} has "
                         f"{have / 2**30:.1f} GiB; use {smaller}")
