"""bncli: experiments on how initialization and normalization shape the signal in deep nets.

    bncli depth-study --init kaiming
    bncli running-stats --momentum 0.3

or from Python (see bncli.api):

    import bncli
    r = bncli.depth_study(depth=50, init="xavier", norm="none")

Importing this package is cheap: torch, pandas and matplotlib load only when a study runs.
"""

__version__ = "0.1.0"

from bncli import studies  # noqa: E402 - the registry only: no torch, no pydantic
from bncli.errors import BncliError, RunError  # noqa: E402, F401 - re-exported

# what `bncli.X` finds in bncli.api, which (with torch) loads on the first such use (and is
# api.__all__); and one function per registered study (bncli.depth_study, ...)
API = [
    "Comparison",
    "Run",
    "SavedSweep",
    "compare",
    "execute",
    "list_runs",
    "load",
    "open_run",
    "open_sweep",
    "plan_sweep",
    "plot_runs",
    "run",
    "show",
    "sweep",
]


def _studies() -> list[str]:
    return [name.replace("-", "_") for name in studies.names()]


def __getattr__(name: str) -> object:
    import importlib

    if name not in API and name not in _studies():  # submodules are found by the import system
        raise AttributeError(f"module 'bncli' has no attribute {name!r}")
    return getattr(importlib.import_module("bncli.api"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *API, *_studies()})
