"""Errors a user can act on, and how they read. The CLI prints each as one line and exits with its code.

Light on purpose (no pydantic, no torch): the CLI imports it before it knows what will run.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any


class BncliError(Exception):
    """Bad input: a flag, a config field, a name. Exit code 2, like any usage error."""

    exit_code = 2


class RunError(BncliError):
    """The input was fine but the run could not happen (disk, memory). Exit code 1."""

    exit_code = 1


class Damaged(BncliError):
    """Saved results that are not as bncli writes them: a file of the wrong kind, shape or types."""

    def __init__(self, path: object, what: str) -> None:
        super().__init__(f"{path}: these results are damaged or incomplete, and cannot be shown ({what})")


class _Short(reprlib.Repr):
    """repr for error messages: bounded in length and depth, whatever a YAML file holds."""

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 2, 40, 40, 40
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 4

    def repr1(self, x, level):
        # a choice as its value: 'kaiming', never <Init.kaiming: 'kaiming'>
        return super().repr1(x.value if isinstance(x, Enum) else x, level)

    def repr_int(self, x, level):
        # repr() of an int over 4300 digits raises ValueError; YAML hex reaches that easily
        return f"<an integer of {x.bit_length()} bits>" if x.bit_length() > 256 else super().repr_int(x, level)


show = _Short().repr  # a value as an error message shows it: one bounded line
MAX_ERRORS = 3  # problems named in one message; the rest are counted


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """`1 run`, `2 runs`, `0 runs`."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"


def word(v: Any) -> str:
    """A value as people type it and as run names, summary columns and plot labels show it: a
    choice's value (never its Python name), none, true, 1e-05, 2x2 for a list, and a numpy
    scalar (as read from a CSV) as the Python value it holds."""
    if hasattr(v, "item") and getattr(v, "ndim", None) == 0:
        v = v.item()
    if v is None:
        return "none"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, int) and v.bit_length() > 256:  # str() of an int over 4300 digits raises
        return f"int{v.bit_length()}bits"
    if isinstance(v, (list, tuple)):
        return "x".join(word(x) for x in v)
    return str(getattr(v, "value", v))


def first_line(e: BaseException) -> str:
    """`ValueError: the message`, its first line: how a failed run records its error."""
    return f"{type(e).__name__}: {e}".splitlines()[0]


def _close(given, choices: list[str]) -> str | None:
    if not isinstance(given, str):
        return None
    same = [c for c in choices if c.lower() == given.lower()]  # `Kaiming`, `KAIMING`
    # a typo keeps the first letter: `bfloat16` is not a misspelt float64
    close = same or [
        c
        for c in difflib.get_close_matches(given.lower(), choices, n=3, cutoff=0.6)
        if c[:1].lower() == given[:1].lower()
    ]
    return close[0] if close else None


def not_one_of(value, choices: Iterable) -> str:
    """`'kaimng' is not one of kaiming, xavier, ... (did you mean 'kaiming'?)`, for any choice:
    a flag's, a config field's, a sweep grid's."""
    words = [word(c) for c in choices]
    close = _close(word(value), words)
    hint = f" (did you mean {close!r}?)" if close else ""
    return f"{show(getattr(value, 'value', value))} is not one of {', '.join(words)}{hint}"


def not_a_field(key, owner: str, fields: Iterable[str], noun: str = "field") -> str:
    """`not a field of depth-study; did you mean 'depth'?`, else the fields there are."""
    fields = list(fields)
    close = _close(key, fields)
    hint = f"did you mean {close!r}?" if close else f"accepted {noun}s: " + ", ".join(fields)
    return f"not a {noun} of {owner}; {hint}"


def describe(
    err,
    accepted: Iterable[str],
    name: Callable[[list[str]], str],
    noun: str = "field",
    owner: str | None = None,
    choices: Callable[[list[str]], list | None] = lambda loc: None,
) -> str:
    """One line from a pydantic ValidationError: each bad location as `name(loc)` says, its
    problem, and the value given. An unknown key is `not a {noun} of {owner}` with the closest
    `accepted` one; a value outside the `choices(loc)` of its location lists them."""
    parts = []
    errors = err.errors(include_url=False)
    for e in errors[:MAX_ERRORS]:
        loc = [str(p) for p in e["loc"] if p not in ("constrained-float", "constrained-int")]
        msg = str(e["msg"]).removeprefix("Value error, ")
        if not loc:  # a model-level check: its message names the fields itself
            parts.append(msg)
            continue
        got = e.get("input")
        options = choices(loc) if e["type"] in ("enum", "literal_error") else None
        if e["type"] == "extra_forbidden":
            msg = (
                not_a_field(loc[-1], owner, accepted, noun)
                if owner
                else f"unknown {noun}; accepted {noun}s: " + ", ".join(accepted)
            )
        elif options:
            msg = not_one_of(got, options)
        elif got is not None and not isinstance(got, dict) and not (isinstance(got, str) and show(got) in msg):
            msg += f" (got {show(got)})"  # unless the message quotes it already
        parts.append(f"{name(loc)}: {msg}")
    if len(errors) > MAX_ERRORS:
        parts.append(f"and {len(errors) - MAX_ERRORS} more")
    return "; ".join(parts)
