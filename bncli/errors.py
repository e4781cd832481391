"""Errors a user can act on, and how they read. The CLI prints each as one line and exits with its code.

Light on purpose (no pydantic, no torch): the CLI imports it before it knows what will run.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Iterable


class BncliError(Exception):
    """Bad input: a flag, a config field, a name. Exit code 2, like any usage error."""

    exit_code = 2


class RunError(BncliError):
    """The input was fine but the run could not happen (disk, memory). Exit code 1."""

    exit_code = 1


class _Short(reprlib.Repr):
    """repr for error messages: bounded in length and depth, whatever a YAML file holds."""

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 2, 40, 40, 40
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 4

    def repr_int(self, x, level):
        # repr() of an int over 4300 digits raises ValueError; YAML hex reaches that easily
        return f"<an integer of {x.bit_length()} bits>" if x.bit_length() > 256 else super().repr_int(x, level)


show = _Short().repr  # a value as an error message shows it: one bounded line
MAX_ERRORS = 3  # problems named in one message; the rest are counted


def describe(err, accepted: Iterable[str], name: Callable[[list[str]], str], noun: str = "field") -> str:
    """One line from a pydantic ValidationError: each bad location as `name(loc)` says, its
    problem, and the value given; an unknown key lists the `accepted` ones."""
    parts = []
    errors = err.errors(include_url=False)
    for e in errors[:MAX_ERRORS]:
        loc = [str(p) for p in e["loc"] if p not in ("constrained-float", "constrained-int")]
        msg = str(e["msg"]).removeprefix("Value error, ")
        if not loc:  # a model-level check: its message names the fields itself
            parts.append(msg)
            continue
        got = e.get("input")
        if e["type"] == "extra_forbidden":
            msg = f"unknown {noun}; accepted {noun}s: " + ", ".join(accepted)
        elif got is not None and not isinstance(got, dict):
            msg += f" (got {show(got)})"
        parts.append(f"{name(loc)}: {msg}")
    if len(errors) > MAX_ERRORS:
        parts.append(f"and {len(errors) - MAX_ERRORS} more")
    return "; ".join(parts)
