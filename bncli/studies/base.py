"""What a study module is made of: the Result it returns, the numbers it summarises a sweep's
runs with, and the Study protocol it declares. bncli/studies/__init__.py holds the registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

    from bncli.fields import Config
    from bncli.figures import Options
else:
    from bncli.lazy import lazy

    np = lazy("numpy")


@dataclass
class Result:
    """What a study computes, in memory. `table` goes to the study's CSV."""

    table: pd.DataFrame  # NaN where a statistic is off or not finite
    status: str  # ok | diverged | interrupted
    info: dict[str, Any] = field(default_factory=dict)  # study-specific meta.json fields
    off: list[str] = field(default_factory=list)  # columns not computed: empty cells in the CSV
    files: dict[str, pd.DataFrame] = field(default_factory=dict)  # more CSVs of the run (train's layers.csv), by name


# -- what a sweep's summary holds: named numbers, formatted only when shown (bncli.report.cell) ----


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


@dataclass(frozen=True)
class MeanSd:
    """The mean and sd (ddof 1) of the finite values among `of` runs' (a seed's) values; `n` of
    them counted. None where fewer than one (two, for the sd) value is finite."""

    mean: float | None
    sd: float | None
    n: int
    of: int

    @classmethod
    def over(cls, values: Sequence[float | None], of: int | None = None) -> MeanSd:
        v = np.asarray([np.nan if x is None else x for x in values], dtype=float)
        v = v[np.isfinite(v)]
        mean = float(v.mean()) if len(v) else None
        return cls(mean, float(v.std(ddof=1)) if len(v) > 1 else None, len(v), len(values) if of is None else of)


@dataclass(frozen=True)
class Median:
    """The median of `of` runs' values, where a run that never got one (the steps to within 1%
    of a run that never got there) counts as more than any: a censored median. None where it
    falls on such a run (half of them or more never got there); `reached` runs got a value."""

    median: float | None
    reached: int
    of: int

    @classmethod
    def over(cls, values: Sequence[float | None]) -> Median:
        v = np.asarray([np.inf if x is None or not math.isfinite(x) else x for x in values], dtype=float)
        median = float(np.median(v)) if len(v) else math.inf
        return cls(median if math.isfinite(median) else None, int(np.isfinite(v).sum()), len(v))


@dataclass(frozen=True)
class Count:
    """`k` of `n` runs (diverged, matching the formula)."""

    k: int
    n: int


@dataclass(frozen=True)
class Number:
    """One number; `digits` "fixed" shows three decimals where that reads well (0.583), "sig"
    four significant digits (a tolerance-sized error: 2.384e-07)."""

    value: float | None
    digits: str = "fixed"

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _finite(self.value))


Summary = dict[str, "MeanSd | Median | Count | Number"]  # a config's runs, summarised: column -> number


class Study(Protocol):
    """What every module in REGISTRY declares (bncli.studies.get checks it is all there)."""

    NAME: str  # its key in REGISTRY, the CLI command and the results/<NAME>/ directory
    CONFIG: type[Config]  # its config: a bncli.fields.Config spec
    OPTIONS: type[Config]  # its command's own flags beyond the config, passed to render (depth-study's --every)
    CSV: str  # the per-run table's file name
    COLUMNS: list[str]  # every column its table may have, in order
    ID_COLUMNS: list[str]  # the columns that identify a row within a run (x axis first)
    TEXT_COLUMNS: list[str]  # the columns that hold text (every other one holds numbers)
    INFO: dict[str, Any]  # the types of the study's own meta.json fields (Result.info), checked when read back
    LABEL_KEYS: list[str]  # settings that label a single run in a plot when none differ
    PLOT: str  # the default plot's file name (a sweep's plot, `bncli plot` of its runs)
    RUN_PLOT: bool  # does a single run's directory get the plot too
    SUMMARY: list[str]  # the names `summarize` gives its numbers: a sweep table's columns, one row per config
    COMPARE_METRIC: str  # the column `bncli compare` sets side by side unless --metric says

    def columns(self, settings: dict[str, Any]) -> list[str]: ...  # a run's table's columns, given its settings

    def label(self, cfg: Any) -> str: ...  # the part of a default run name that tells runs apart

    def describe_size(self, cfg: Any) -> str: ...  # the sizes, for an out-of-memory message

    def estimate_bytes(self, cfg: Any) -> int: ...  # peak memory of a run, before it starts

    def progress_total(self, cfg: Any) -> int | None: ...  # steps for a progress bar; None: no bar

    def preflight(self, cfg: Any) -> torch.device: ...  # every check before a run directory exists

    def run(self, cfg: Any, device: torch.device, progress: Callable[[int], None] | None = None) -> Result: ...

    def render(self, run: Any, every: int | None = None) -> list[Any]: ...  # rich renderables of a Run's table;

    # `every` and the other OPTIONS thin it

    def summarize(self, runs: list[pd.DataFrame]) -> Summary: ...  # SUMMARY's numbers over finished runs

    def draw(self, plt: Any, table: pd.DataFrame, metric: str | None, opts: Options) -> Any: ...

    # a matplotlib figure of labelled runs, following a figures.Options (panels, y scale, title)

    def auto_facet(self, table: pd.DataFrame, metric: str | None, columns: list[str]) -> str | None: ...

    # the column to make a panel per value of, when --facet is not given (None: one panel)


MEMBERS = [name for name in Study.__annotations__] + [
    name for name in vars(Study) if not name.startswith("_") and callable(getattr(Study, name))
]
