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
