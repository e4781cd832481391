"""What every study's config shares: field types, YAML loading, validation with one-line errors.

    bncli depth-study --config configs/depth_study.yaml --depth 50

Each study declares its own config model in its module (bncli/studies/*.py) from the pieces
here. Precedence: the model's defaults (the notebook's settings) < `--config FILE.yaml` <
flags (or keyword arguments of the Python API). Field names are the flags' names with
underscores, so a saved config.yaml is a valid --config.

The shared fields (seed, device, dtype) are shared as annotated types with their defaults,
not as a base class: pydantic puts a base's fields first, and a config's field order is the
column order of a sweep's summary.csv and the line order of config.yaml.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import types
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from bncli.choices import DType, FloatType
from bncli.errors import BncliError, describe, show

_DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,4})?")
SEED_MAX = 2**63 - 1
MAX_FILE = 2**20  # a config or sweep file is read up to this many bytes
INT_MAX = 2**63 - 1  # every integer field fits an int64, so no size can overflow torch or a message


def _check_device(v: Any) -> Any:
    if isinstance(v, str) and not _DEVICE.fullmatch(v):
        raise ValueError("must be auto, cpu, cuda or cuda:N")
    return v


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


Positive = Annotated[StrictInt, Field(ge=1, le=INT_MAX)]
PosFloat = Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)]
Unit = Annotated[StrictFloat, Field(ge=0, le=1, allow_inf_nan=False)]
Finite = Annotated[StrictFloat, Field(allow_inf_nan=False)]
Eps = Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False, default=1e-5)]  # the norms' eps

# the fields every study has, each with its default
Seed = Annotated[StrictInt, Field(ge=0, le=SEED_MAX, default=0)]  # seeds every random stream of a run
Device = Annotated[str, BeforeValidator(_check_device), Field(default="auto")]  # auto: cuda if available
AnyDType = Annotated[DType, Field(default=DType.float32)]
FloatDType = Annotated[FloatType, Field(default=FloatType.float32)]  # float32 or float64: no bfloat16


class Config(BaseModel):
    """Base of every study's config: unknown fields refused, defaults validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    def to_yaml(self, study: str | None = None) -> str:
        """The fields as YAML; with `study`, a first line `study: NAME` (a run's config.yaml)."""
        head = {"study": study} if study else {}
        return yaml.safe_dump({**head, **self.model_dump(mode="json")}, sort_keys=False)

    def settings(self) -> dict[str, Any]:
        """The fields as plain values (enums as their words): what config.yaml holds."""
        return self.model_dump(mode="json")


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def study_name(cls: type[Config]) -> str | None:
    """The study whose CONFIG is `cls`: its module's NAME (None for a model of no study)."""
    module = sys.modules.get(cls.__module__)
    return getattr(module, "NAME", None) if getattr(module, "CONFIG", None) is cls else None


def _choices(annotation: Any, depth: int = 0) -> list | None:
    """The closed values of an annotation (an Enum's members, a Literal's values) through
    Annotated and Optional; `depth` steps into list items (a location like momentum[0])."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _choices(get_args(annotation)[0], depth)
    if origin in (Union, types.UnionType):
        found = [_choices(a, depth) for a in get_args(annotation) if a is not type(None)]
        return next((c for c in found if c), None)
    if depth:
        return _choices(get_args(annotation)[0], depth - 1) if origin is list and get_args(annotation) else None
    if origin is Literal:
        return list(get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return list(annotation)
    return None


def field_choices(cls: type[Config], loc: list[str]) -> list | None:
    info = cls.model_fields.get(loc[0]) if loc else None
    return None if info is None else _choices(info.annotation, len(loc) - 1)


def config_error(
    err: ValidationError, cls: type[Config], flags: set[str] = frozenset(), source: str | None = None
) -> str:
    """A config's problems, naming each field as the flag it came from, or as `field in FILE`."""

    def name(loc: list[str]) -> str:
        field = loc[0] if loc[0].isidentifier() else show(loc[0])  # '' or odd characters: quoted
        out = _flag(field) if field in flags else (f"{field} in {source}" if source else field)
        return out + ("[" + ",".join(loc[1:]) + "]" if len(loc) > 1 else "")

    return describe(
        err, cls.model_fields, name, owner=study_name(cls) or "this config", choices=lambda loc: field_choices(cls, loc)
    )


class _Loader(yaml.SafeLoader):
    """safe_load with two fixes for YAML as people write it: `1e-5` is the number (YAML 1.1
    wants `1.0e-5`, and PyYAML reads the rest as text), and a key given twice is refused with
    both lines, not silently resolved to the last one."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # an unhashable key: the base class says so
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{show(key)} is given twice (first at line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


class _Dumper(yaml.SafeDumper):
    """safe_dump that quotes what _Loader would read back as another type (the text '1e-5')."""


_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


_Dumper.add_multi_representer(Enum, lambda dumper, v: dumper.represent_data(v.value))


def dump_yaml(data: Any, what: str = "config") -> str:
    """YAML that read_yaml reads back to `data`: keys in order, innermost lists inline."""
    try:
        return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None, allow_unicode=True)
    except yaml.representer.RepresenterError as e:
        got = show(e.args[1]) if len(e.args) > 1 else "a value"
        raise BncliError(
            f"{what}: {got} cannot be written as YAML; give text, numbers, true/false, null, or lists of them"
        ) from None


def read_yaml(path: Path, what: str = "--config") -> Any:
    """Parse a YAML file with a SafeLoader only: no tag can construct a Python object."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError
        if not stat.S_ISREG(mode):  # /dev/zero reads forever, a FIFO blocks
            raise BncliError(f"{what}: {path} is not a regular file")
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE + 1)  # bounded, whatever the file
        if len(raw) > MAX_FILE:
            raise BncliError(f"{what}: {path} is over {MAX_FILE // 2**20} MiB, too large for a config")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise BncliError(f"{what}: file not found: {path}") from None
    except IsADirectoryError:
        raise BncliError(f"{what}: {path} is a directory, not a YAML file") from None
    except BncliError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: a NUL in the path
        raise BncliError(f"{what}: cannot read {path}: {e}") from None
    return loads(text, what, str(path))


def loads(text: str, what: str, subject: str) -> Any:
    """Parse YAML text (a file's, or one flag's value) as read_yaml does; errors say
    `what: subject is not valid YAML ...`."""
    try:
        loader = _Loader(text)  # what yaml.safe_load does, with the SafeLoader above
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise BncliError(f"{what}: {subject} is not valid YAML{where}: {problem}".strip()) from None
    except yaml.YAMLError as e:
        raise BncliError(f"{what}: {subject} is not valid YAML: {e}") from None
    except RecursionError:
        raise BncliError(f"{what}: {subject} is nested too deeply to be a config") from None
    except ValueError as e:  # an integer over Python's 4300-digit limit
        raise BncliError(f"{what}: {subject} holds a value bncli cannot read: {str(e).split(';')[0]}") from None


def _is_text(s: str) -> bool:
    try:
        s.encode("utf-8")  # YAML's "\\ud800" escape gives a lone surrogate, which no file can hold
    except UnicodeEncodeError:
        return False
    return True


def validate(cls: type[Config], data: Any, flags: set[str] = frozenset(), source: str | None = None) -> Config:
    """`cls` from a mapping, or BncliError with one line naming every bad field."""
    if not isinstance(data, dict):
        raise BncliError(f"{source or 'config'}: must be a mapping of field: value, got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str) or not _is_text(k)]
    if bad:
        raise BncliError(f"{source or 'config'}: field names must be text, got {show(bad[0])}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise BncliError(config_error(e, cls, flags, source)) from None


def load(
    cls: type[Config],
    path: Path | None = None,
    *,
    flags: bool = True,
    whose: Callable[[dict, Path, bool], dict] | None = None,
    **values: Any,
) -> Config:
    """Resolve a config: the model's defaults < the YAML file at `path` < `values` that are not None.

    Errors name the values as the command line's flags (`--depth`), or, with flags=False (the
    Python API), as fields (`depth`). `whose(data, path, flags)` checks the file's mapping is
    for this study (bncli.studies.whose, which knows them all) and drops its `study:` key.
    """
    data = {}
    if path is not None:
        data = read_yaml(path)
        if data is None:  # an empty file means "all defaults"
            data = {}
        if not isinstance(data, dict):
            raise BncliError(f"--config: {path} must hold a mapping of field: value, got {type(data).__name__}")
        if whose is not None:
            data = whose(data, path, flags)
        elif "study" not in cls.model_fields and study_name(cls) is not None and data.get("study") == study_name(cls):
            data = {k: v for k, v in data.items() if k != "study"}  # its own study: a saved config.yaml
    given = {k: v for k, v in values.items() if v is not None}
    return validate(cls, {**data, **given}, set(given) if flags else set(), str(path) if path else None)
