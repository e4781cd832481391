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
from typing import TYPE_CHECKING, cast

from bncli.errors import BncliError, not_one_of, show

if TYPE_CHECKING:
    from bncli.studies.base import Study

# study name -> module in this package; the order is the order of --help and of the docs
REGISTRY = {
    "depth-study": "depth",
    "running-stats": "running_stats",
    "convergence": "convergence",
    "probe": "probe",
    "train": "train",
}
ALIASES = {"running-stats-convergence": "convergence"}  # names runs were saved under before


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str) -> Study:
    """The module of study `name` (or of a name it had before), imported on first use; one
    that lacks a member of the Study protocol is refused, naming what it lacks."""
    name = ALIASES.get(name, name)
    if name not in REGISTRY:
        raise BncliError(f"study: {not_one_of(name, REGISTRY)}")
    module = importlib.import_module(f"{__name__}.{REGISTRY[name]}")
    if module not in _checked:
        from bncli.studies.base import MEMBERS

        missing = [m for m in MEMBERS if not hasattr(module, m)]
        if missing:
            raise TypeError(f"study module {module.__name__} lacks {', '.join(missing)} (bncli/studies/base.py, Study)")
        _checked.add(module)
    return cast("Study", module)


_checked: set[ModuleType] = set()


def whose(study: str):
    """A check for config files of `study` (for bncli.config.load): a `study:` key (a run's
    config.yaml has one) is checked and dropped; a file for another study, by that key or by
    its fields (all another study's), is refused, naming the study and how to run it."""

    def check(data: dict, path, flags: bool) -> dict:
        fields = get(study).CONFIG.FIELDS
        if "study" in fields:
            return data
        data = dict(data)
        if "study" in data:
            named = data.pop("study")
            other = ALIASES.get(named, named) if isinstance(named, str) else None
            if other == study:
                return data
            if other not in REGISTRY:  # a list, a number, a name of no study
                raise BncliError(f"study in {path}: {not_one_of(named, names())}")
            why = f"study: {named}"
        else:
            unknown = [k for k in data if k not in fields]
            fits = [s for s in names() if s != study and unknown and all(k in get(s).CONFIG.FIELDS for k in data)]
            if not fits:
                return data
            other = fits[0]
            why = "fields " + ", ".join(show(k).strip("'") for k in unknown[:6]) + (", ..." if len(unknown) > 6 else "")
        what, how = (
            ("--config", f"bncli {other} --config {path}")
            if flags
            else ("config_file", f"bncli.{other.replace('-', '_')}({str(path)!r})")
        )
        raise BncliError(f"{what}: {path} is a {other} config ({why}); run it with {how}")

    return check
