"""A study's config as one declarative spec: a typed class, one line per field, importable without torch or pydantic.

    class ToyConfig(Config):
        steps: int = field(3, ge=1, help="batches drawn")
        scale: float = field(2.0, gt=0, help="std of each batch")

From that class come the validating model (pydantic, built here on first use), the command's
flags with their help and defaults (bncli.cli), the API's keyword arguments, config.yaml, and the field
tables of docs/configs.md (docs/make_docs.py). A config is frozen; building one validates it:
`ToyConfig(steps=0)` raises BncliError naming the field, as a bad flag or YAML value would.

Field order is the line order of config.yaml and the column order of a sweep's summary.csv.
"""

from __future__ import annotations

import functools
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from bncli.errors import BncliError, describe, show, word

if TYPE_CHECKING:
    import pydantic
else:
    from bncli.lazy import lazy

    pydantic = lazy("pydantic")

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # typing_extensions comes with typer and pydantic
    from typing_extensions import dataclass_transform

INT_MAX = 2**63 - 1  # every integer field fits an int64, so no size can overflow torch or a message
SEED_MAX = INT_MAX
_DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,4})?")


class Field:
    """One config field: its default, bounds, closed choices, how the text of a flag or file is read, and help.

    Bounds of a list field apply to its items. `choices` is a mapping of word -> help (a component
    registry is one) or a sequence of words. `none` says what None means where a user may give it
    (`--momentum none`). A default of None on a field not typed Optional follows other fields:
    the config's `resolve` sets it (depth-study's residual follows arch).
    `shown` is the default as --help and the docs say it, where the value alone would not.
    A `positional` field is the command's argument, named by its metavar (probe's MODEL), not a flag.
    """

    def __init__(
        self,
        default: Any,
        *,
        help: str,
        ge: float | None = None,
        gt: float | None = None,
        le: float | None = None,
        choices: Mapping[Any, Any] | Iterable[Any] | None = None,
        parse: Callable[[Any], Any] | None = None,
        none: str | None = None,
        shown: str | None = None,
        flag: str | None = None,
        metavar: str | None = None,
        positional: bool = False,
        name: str = "",
    ) -> None:
        self.default, self.help, self.ge, self.gt, self.le = default, help, ge, gt, le
        self.choices = choices
        self.parse, self.none, self.shown, self.flag, self.metavar, self.name = parse, none, shown, flag, metavar, name
        self.positional = positional

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"field({self.name}={self.default!r})"

    def words(self) -> list[Any] | None:
        """The closed choices, in order: registry names, words or numbers; None for an open field."""
        return None if self.choices is None else list(self.choices)

    def choice_help(self, word: Any) -> str:
        """What one choice means: a registry record's help, or the mapping's text."""
        if not isinstance(self.choices, Mapping):
            return ""
        value = self.choices[word]
        return str(getattr(value, "help", value))

    def bounds(self) -> str:
        """`>= 1`, `> 0`, `in [0, 1]`: the bounds as the docs and messages write them."""
        lo = f">= {_num(self.ge)}" if self.ge is not None else f"> {_num(self.gt)}" if self.gt is not None else ""
        if self.le is None or self.le >= INT_MAX:
            return lo
        if self.ge is not None:
            return f"in [{_num(self.ge)}, {_num(self.le)}]"
        return f"{lo + ', ' if lo else ''}<= {_num(self.le)}"

    def default_text(self) -> str:
        """The default as people type it: `100`, `1.0`, `1e-05`, `kaiming`, `0.01,0.1,0.3`, `true`."""
        if self.shown is not None:
            return self.shown
        values = self.default if isinstance(self.default, list) else [self.default]
        return ",".join(repr(v) if isinstance(v, float) else word(v) for v in values)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


def field(default: Any, *, help: str, **spec: Any) -> Any:
    """A config field (see Field); typed Any so that `depth: int = field(100, ...)` reads as an int."""
    return Field(default, help=help, **spec)


# how a field reads the text of a flag or a file (Field's `parse`): each raises ValueError with the message
def none_word(v: Any) -> Any:
    # YAML has no `none` literal and flags are strings: accept the word for PyTorch's None
    return None if isinstance(v, str) and v.strip().lower() in ("none", "null") else v


def int_list(v: Any) -> Any:
    # "2,2" from a flag or YAML scalar; an int for a 1-element shape
    if isinstance(v, str):
        try:
            return [int(p) for p in v.split(",") if p.strip()]
        except ValueError:
            raise ValueError("must be comma-separated positive integers, like 2,2") from None
    if isinstance(v, int) and not isinstance(v, bool):
        return [v]
    return v


def float_list(v: Any) -> Any:
    # "0.01,0.1,0.3" from a flag, a YAML list, or one number
    if isinstance(v, str):
        parts = [p.strip() for p in v.split(",") if p.strip()]
        try:
            return [none_word(p) if none_word(p) is None else float(p) for p in parts]
        except ValueError:
            raise ValueError(f"must be comma-separated numbers, like 0.01,0.1,0.3 (got {show(v)})") from None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return [float(v)]
    return v


# the fields most studies share, one definition each
def seed() -> Any:
    return field(0, ge=0, le=SEED_MAX, help="seeds every random stream of a run")


def check_device(v: Any) -> Any:
    if isinstance(v, str) and not _DEVICE.fullmatch(v):
        raise ValueError("must be auto, cpu, cuda or cuda:N")
    return v


def device() -> Any:
    return field(
        "auto", parse=check_device, help="where to run: auto (cuda when available, else cpu), cpu, cuda or cuda:N"
    )


DTYPES = {"float32": "single precision", "float64": "double precision", "bfloat16": "bfloat16 (8-bit mantissa)"}
FLOAT_DTYPES = {k: DTYPES[k] for k in ("float32", "float64")}


def dtype(choices: Mapping[str, str] = DTYPES, why: str = "") -> Any:
    return field("float32", choices=choices, help="floating-point type" + (f" ({why})" if why else ""))


def eps() -> Any:
    return field(1e-5, gt=0, help="BatchNorm eps")


C = TypeVar("C", bound="Config")


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field, Field))
class Config:
    """Base of every study's config: frozen, validated when built, unknown fields refused.

    A subclass declares its fields as class attributes `name: type = field(default, ...)`
    (inherited ones first, then its own, in order) and may override `resolve` for checks across
    fields and for defaults that follow other fields.
    """

    FIELDS: ClassVar[dict[str, Field]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = {k: v for k, v in vars(cls).items() if isinstance(v, Field)}
        cls.FIELDS = {**{k: v for base in cls.__bases__ for k, v in getattr(base, "FIELDS", {}).items()}, **own}

    def __init__(self, **values: Any) -> None:
        made = validate(type(self), values)
        for k in self.FIELDS:
            object.__setattr__(self, k, getattr(made, k))

    @classmethod
    def made(cls: type[C], values: Mapping[str, Any]) -> C:
        """A config of values already validated (by `validate`)."""
        cfg = object.__new__(cls)
        for k in cls.FIELDS:
            object.__setattr__(cfg, k, values[k])
        return cfg

    def resolve(self, given: set[str]) -> dict[str, Any]:
        """Checks across fields (raise ValueError with the message) and the values of fields whose
        default follows other fields; `given` names the fields the user gave."""
        return {}

    def settings(self) -> dict[str, Any]:
        """The fields as plain values: what config.yaml holds."""
        return {k: getattr(self, k) for k in self.FIELDS}

    def to_yaml(self, study: str | None = None) -> str:
        """The fields as YAML; with `study`, a first line `study: NAME` (a run's config.yaml)."""
        import yaml

        head = {"study": study} if study else {}
        return yaml.safe_dump({**head, **self.settings()}, sort_keys=False)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: build a new one with the changed fields")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.settings() == other.settings()

    def __hash__(self) -> int:
        return hash((type(self), *(tuple(v) if isinstance(v, list) else v for v in self.settings().values())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.settings().items())})"


class NoOptions(Config):
    """A study command's own options beyond its config (its OPTIONS): none."""


# -- the validating model, built from a spec ----------------------------------------------------------


def _scalar(f: Field, kind: Any) -> Any:
    """The pydantic type of one value of field `f` (an item, for a list field)."""
    words = f.words()
    if words is not None:
        return Literal[tuple(words)]
    if kind is int:
        return Annotated[pydantic.StrictInt, pydantic.Field(ge=f.ge, gt=f.gt, le=INT_MAX if f.le is None else f.le)]
    if kind is float:
        return Annotated[pydantic.StrictFloat, pydantic.Field(ge=f.ge, gt=f.gt, le=f.le, allow_inf_nan=False)]
    return kind  # bool, str: pydantic's own


def without_none(hint: Any) -> tuple[Any, bool]:
    """(a field's type without None, whether None is allowed): (float, True) for `float | None`."""
    if get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint):
        rest = [a for a in get_args(hint) if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Union[tuple(rest)]), True
    return hint, False


def annotation(f: Field, hint: Any) -> Any:
    """The pydantic annotation of field `f` declared as `hint` (int, float | None, list[int] | None, ...):
    strict numbers within the bounds (of each item, for a list), the closed choices as a Literal,
    None where the hint allows it, and first the field's parser of flag and file text."""
    kind, optional = without_none(hint)
    optional = optional or f.default is None  # None until Config.resolve sets what it follows
    if get_origin(kind) is list:
        item, item_optional = without_none(get_args(kind)[0])
        one = _scalar(f, item)
        out: Any = list[Union[one, None]] if item_optional else list[one]  # type: ignore[valid-type]
    else:
        out = _scalar(f, kind)
    if optional:
        out = Union[out, None]
    return Annotated[out, pydantic.BeforeValidator(f.parse)] if f.parse is not None else out


def model(cls: type[Config]) -> type[pydantic.BaseModel]:
    """The pydantic model that validates `cls`'s fields (their defaults too), built once for
    each set of choices (a component registered later makes a new one)."""
    choices = tuple(tuple(f.words() or ()) for f in cls.FIELDS.values())
    return _model(cls, choices)  # type: ignore[arg-type]  # a class is hashable (python/mypy#20409)


@functools.cache
def _model(cls: type[Config], choices: tuple[tuple[Any, ...], ...]) -> type[pydantic.BaseModel]:
    hints = typing.get_type_hints(cls)
    spec: dict[str, Any] = {name: (annotation(f, hints[name]), f.default) for name, f in cls.FIELDS.items()}
    return pydantic.create_model(
        cls.__name__, __config__=pydantic.ConfigDict(extra="forbid", validate_default=True), **spec
    )


def flag_name(field: str) -> str:
    """A field's flag: `--batch-size` for batch_size."""
    return "--" + field.replace("_", "-")


def cli_name(cls: type[Config], field: str) -> str:
    """How the command line names a field of `cls`: its flag, or a positional field's metavar (MODEL)."""
    f = cls.FIELDS.get(field)
    return (f.metavar or field.upper()) if f is not None and f.positional else flag_name(field)


def study_name(cls: type[Config]) -> str | None:
    """The study whose CONFIG is `cls`: its module's NAME (None for a model of no study)."""
    module = sys.modules.get(cls.__module__)
    return getattr(module, "NAME", None) if getattr(module, "CONFIG", None) is cls else None


def _choices(annotation: Any, depth: int = 0) -> list | None:
    """The closed values of an annotation (a Literal's) through Annotated and Optional; `depth`
    steps into list items (a location like momentum[0])."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _choices(get_args(annotation)[0], depth)
    if origin in (Union, types.UnionType):
        found = [_choices(a, depth) for a in get_args(annotation) if a is not type(None)]
        return next((c for c in found if c), None)
    if depth:
        return _choices(get_args(annotation)[0], depth - 1) if origin is list and get_args(annotation) else None
    return list(get_args(annotation)) if origin is Literal else None


def field_choices(cls: type[Config], loc: list[str]) -> list | None:
    info = model(cls).model_fields.get(loc[0]) if loc else None
    return None if info is None else _choices(info.annotation, len(loc) - 1)


def config_error(
    err: pydantic.ValidationError,
    cls: type[Config],
    flags: set[str] | frozenset[str] = frozenset(),
    source: str | None = None,
) -> str:
    """A config's problems, naming each field as the flag it came from, or as `field in FILE`."""

    def name(loc: list[str]) -> str:
        field = loc[0] if loc[0].isidentifier() else show(loc[0])  # '' or odd characters: quoted
        out = cli_name(cls, field) if field in flags else (f"{field} in {source}" if source else field)
        return out + ("[" + ",".join(loc[1:]) + "]" if len(loc) > 1 else "")

    return describe(
        err, cls.FIELDS, name, owner=study_name(cls) or "this config", choices=lambda loc: field_choices(cls, loc)
    )


def is_text(s: str) -> bool:
    try:
        s.encode("utf-8")  # YAML's "\\ud800" escape gives a lone surrogate, which no file can hold
    except UnicodeEncodeError:
        return False
    return True


def plain(v: Any) -> Any:
    """A value with every Enum in it as its value: a choice given as an enum member (the API's,
    or a flag's) is its word, whatever pydantic's version makes of enum members in a Literal."""
    if isinstance(v, Enum):
        return v.value
    return [plain(x) for x in v] if isinstance(v, list) else v


def validate(cls: type[C], data: Any, flags: set[str] | frozenset[str] = frozenset(), source: str | None = None) -> C:
    """`cls` from a mapping, or BncliError with one line naming every bad field: first each
    field's own checks (the spec's types, bounds and choices), then `cls.resolve`'s across fields."""
    if not isinstance(data, dict):
        raise BncliError(f"{source or 'config'}: must be a mapping of field: value, got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str) or not is_text(k)]
    if bad:
        raise BncliError(f"{source or 'config'}: field names must be text, got {show(bad[0])}")
    try:
        checked = model(cls).model_validate({k: plain(v) for k, v in data.items()})
    except pydantic.ValidationError as e:
        raise BncliError(config_error(e, cls, flags, source)) from None
    values = {k: getattr(checked, k) for k in cls.FIELDS}
    try:
        derived = cls.made(values).resolve(set(data))
    except ValueError as e:  # a check across fields: its message names them
        raise BncliError(str(e)) from None
    return cls.made({**values, **derived})
