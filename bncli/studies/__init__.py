"""The study registry: one module per study, one line here each.

    import bncli; bncli.run("depth-study", depth=50)

A study module declares everything about its study at module level (see `Study` in
bncli/studies/base.py for the full list): its name, its config model, its CSV and columns, what identifies a row in a
sweep, its plot, its labels, its size preflight, `run`, and how a result renders. Nothing
else in bncli switches on a study's name: results, sweeps, plots, `show` and the Python API
all ask the module. Modules load on first use, so listing studies imports nothing heavy.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from bncli.errors import BncliError, not_one_of

if TYPE_CHECKING:
    from bncli.studies.base import Study

# study name -> module in this package; the order is the order of --help and of the docs
REGISTRY = {
    "depth-study": "depth",
    "running-stats": "running_stats",
    "convergence": "convergence",
}
ALIASES = {"running-stats-convergence": "convergence"}  # names runs were saved under before


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str) -> Study | ModuleType:
    """The module of study `name` (or of a name it had before), imported on first use."""
    name = ALIASES.get(name, name)
    if name not in REGISTRY:
        raise BncliError(f"study: {not_one_of(name, REGISTRY)}")
    return importlib.import_module(f"{__name__}.{REGISTRY[name]}")
