"""A study's command-line flags, made from its config's spec: no flag of a config field is written by hand.

    bncli depth-study --help     # every flag below --config comes from DepthConfig's fields

Each field is one option, typed as the field is: an int or float (click checks the type, the
config the bounds), a --x/--no-x switch for a bool, the closed choices for a field that has
them, text for a list of numbers (the field's parser reads `2,2` or `0.01,0.1`), and a
repeatable flag for a list of text (`--model-arg a=1 --model-arg b=2`). An Optional float
whose None means something (`none=` in the spec) takes a number or the word none. A field the
spec marks `positional` is the command's argument instead (`bncli probe MODEL`), optional to
click so that --config may give it. Every flag defaults to None, so a flag given wins over
--config and one not given does not.
"""

from __future__ import annotations

import inspect
import math
import typing
from enum import Enum
from typing import Annotated, Any, Optional

import typer

from bncli.choices import Choice
from bncli.errors import BncliError
from bncli.fields import Config, Field, flag_name, without_none


def _help(f: Field) -> str:
    text = f.help[:1].upper() + f.help[1:]
    if f.none is not None:
        bounds = f.bounds()
        text += f": a number{' ' + bounds if bounds else ''}, or none for {f.none}"
    return text + "."


def _choice_type(f: Field) -> type[Enum]:
    """The field's closed choices as the str Enum typer lists in --help."""
    words = [str(w) for w in f.words() or []]
    # Enum's functional API: mypy knows it only as `X = Enum("X", ...)` with literal names, and reads this as str()
    return Choice(f.name, {w: w for w in words})  # type: ignore[call-overload]


def option(f: Field, hint: Any, *, config: bool = True) -> tuple[Any, Any]:
    """(the annotation of field `f`'s parameter, its default): a typer Option. A config field's
    flag defaults to None (not given); a command's own option (config=False) to its default,
    with its bounds checked by click, since no config checks it."""
    kind, _ = without_none(hint)
    shown: Any = f.default_text() if f.shown is not None or f.default is not None else False
    if f.positional:
        arg = typer.Argument(help=_help(f), show_default=False, metavar=f.metavar or f.name.upper())
        return Annotated[Optional[str], arg], None
    decls = [f.flag or flag_name(f.name)]
    words = f.words()
    extra: dict[str, Any] = {}
    if kind is bool:
        decls = [f.flag or f"{flag_name(f.name)}/--no-{f.name.replace('_', '-')}"]
        if f.shown is None and f.default is False:
            shown = False  # --x/--no-x says it
        py: Any = bool
    elif words is not None and all(isinstance(w, str) for w in words):
        py = _choice_type(f)
    elif typing.get_origin(kind) is list and without_none(typing.get_args(kind)[0])[0] is str:
        py = list[str]  # repeated: each KEY=VALUE may hold commas
    elif kind in (int, float) and f.none is None:
        py = kind
        if not config and f.ge is not None:
            extra["min"] = f.ge
    else:  # lists, text, and numbers that may be none: the config's parser reads the text
        py = str
    opt = typer.Option(*decls, help=_help(f), show_default=shown, metavar=f.metavar, **extra)
    return Annotated[Optional[py], opt], (None if config else f.default)


def number_or_none(f: Field, value: str | None) -> Any:
    """An Optional float flag's text: a number, or `none` (kept as the word, which the config reads as None)."""
    if value is None or value.strip().lower() == "none":
        return value
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if math.isnan(number):
        bounds = f.bounds()
        raise BncliError(
            f"{flag_name(f.name)}: expected a number{' ' + bounds if bounds else ''} or none, got {value!r}"
        )
    return number


def parameters(cls: type[Config], config: bool = True) -> list[inspect.Parameter]:
    """One keyword parameter per field of `cls`: a config's (config=True), or a command's own
    options (a study's OPTIONS, whose values go to its render)."""
    hints = typing.get_type_hints(cls)
    kw = inspect.Parameter.KEYWORD_ONLY
    params = []
    for name, f in cls.FIELDS.items():
        annotation, default = option(f, hints[name], config=config)
        params.append(inspect.Parameter(name, kw, default=default, annotation=annotation))
    return params


def config_values(cls: type[Config], given: dict[str, Any]) -> dict[str, Any]:
    """The flags' values as config.load takes them: an Optional float's text read as a number or none."""
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in given.items():
        f = cls.FIELDS[name]
        if f.none is not None and without_none(hints[name])[0] is float:
            value = number_or_none(f, value)
        out[name] = value
    return out
