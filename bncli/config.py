"""Configs from YAML files, flags and keyword arguments, validated with one-line errors.

    bncli depth-study --config configs/depth_study.yaml --depth 50

Each study declares its config as a spec (a bncli.fields.Config class in its module), which
validates what this module reads. Precedence: the
spec's defaults (the notebook's settings) < `--config FILE.yaml` < flags (or keyword arguments
of the Python API). Field names are the flags' names with underscores, so a saved config.yaml
is a valid --config.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bncli import fields
from bncli.errors import BncliError, show
from bncli.fields import INT_MAX, SEED_MAX, Config, model, validate

__all__ = ["INT_MAX", "SEED_MAX", "Config", "load", "model", "read_yaml", "validate"]
MAX_FILE = 2**20  # a config or sweep file is read up to this many bytes
MAX_ALIASED = 10_000  # values aliases may add to a YAML document: a 350-byte billion laughs adds 10^9
C = TypeVar("C", bound=Config)


class _Keys:
    """A key given twice is refused with both lines, not silently resolved to the last one."""

    aliases = True  # whether the text may hold an alias (a `*`): loads says, for libyaml's parser

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}  # key -> the line it is first given at
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
            try:
                hash(key)
            except TypeError:
                continue  # an unhashable key: the base class says so
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{show(key)} is given twice (first at line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)  # type: ignore[misc]


class _Loader(_Keys, yaml.SafeLoader):
    """safe_load with three fixes for YAML as people write it: `1e-5` is the number (YAML 1.1
    wants `1.0e-5`, and PyYAML reads the rest as text), a key given twice is refused, and so are
    aliases that expand the document past MAX_ALIASED values."""

    def compose_document(self):
        node = super().compose_document()
        if node is not None and self.anchors_used:
            _check_aliases(node)
        return node

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.anchors_used = True
        return super().compose_node(parent, index)

    anchors_used = False


def _check_aliases(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand it by over MAX_ALIASED values, or refer to a node
    inside itself, before anything is constructed: the expanded size is counted once per node
    (memoized), so a billion laughs costs what its few lines hold, not what they expand to."""
    size: dict[int, int] = {}  # node id -> its expanded size; -1 while it is being counted
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative: a deeply nested document must not overflow Python's stack here
        node, done = stack.pop()
        if done:
            kids = _children(node)
            size[id(node)] = 1 + sum(size[id(k)] for k in kids)
            continue
        if id(node) in size:
            continue
        size[id(node)] = -1
        stack.append((node, True))
        for kid in _children(node):
            if size.get(id(kid)) == -1:
                raise yaml.constructor.ConstructorError(
                    None, None, "an alias refers to a node that holds it (a recursive document)", kid.start_mark
                )
            stack.append((kid, False))
    if size[id(root)] - len(size) > MAX_ALIASED:
        raise yaml.constructor.ConstructorError(
            None, None, f"its aliases expand it by over {MAX_ALIASED} values", root.start_mark
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))

if yaml.__with_libyaml__:

    class _Saved(_Keys, yaml.CSafeLoader):
        """_Loader's reading with libyaml's parser, for the files bncli wrote and reads back by
        the thousand (`bncli runs`: about 10x faster); its error messages are libyaml's."""

        def get_single_node(self):
            node = super().get_single_node()
            if node is not None and self.aliases:
                _check_aliases(node)
            return node

    _Saved.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
else:  # a PyYAML built without libyaml
    _Saved = _Loader  # type: ignore[misc, assignment]


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


class NotRegular(OSError):
    """A path that is not a regular file: a FIFO (reading blocks), a device (/dev/zero reads forever)."""

    def __str__(self) -> str:
        return str(self.strerror)


class TooLarge(OSError):
    """A regular file over the bound its reader sets."""

    def __str__(self) -> str:
        return str(self.strerror)


def _size(n: int) -> str:
    return f"{n // 2**30} GiB" if n >= 2**30 and n % 2**30 == 0 else f"{n // 2**20} MiB"


def read_bytes(path: Path | str, limit: int = MAX_FILE) -> bytes:
    """The bytes of `path`, a regular file (or a link to one), read up to `limit` bytes: the one way
    bncli reads a file back (configs, sweep files, meta.json, the CSVs). A FIFO, a device or a file
    over the bound raise NotRegular or TooLarge (OSErrors, as a missing file's FileNotFoundError),
    before anything is read or waited on."""
    if not stat.S_ISREG(mode := os.stat(path).st_mode):  # checked before open: opening a device can act
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "is a directory", str(path))
        raise NotRegular(None, "is not a regular file", str(path))
    # O_NONBLOCK: should it have become a FIFO since, opening it does not wait for a writer
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegular(None, "is not a regular file", str(path))
        # bounded, whatever the file's size says; asked for its size (not the bound) first, since
        # read(n) allocates n bytes up front: a 1 GiB bound would cost 1 GiB for a 2 kB file
        chunks, total, want = [], 0, min(os.fstat(fd).st_size, limit) + 1
        while total <= limit:
            ask = min(want, limit + 1 - total)
            chunk = f.read(ask)
            chunks.append(chunk)
            total, want = total + len(chunk), 1 << 20  # a file that grew meanwhile: the rest in steps
            if len(chunk) < ask:  # the end of a regular file
                break
        raw = b"".join(chunks)
    if len(raw) > limit:
        raise TooLarge(None, f"is over {_size(limit)}", str(path))
    return raw


def read_yaml(path: Path, what: str = "--config", saved: bool = False) -> Any:
    """Parse a YAML file with a SafeLoader only: no tag can construct a Python object. `saved`:
    a file bncli wrote (a run's config.yaml, a sweep's sweep.yaml), parsed by libyaml where it can."""
    try:
        text = read_bytes(path).decode("utf-8")
    except FileNotFoundError:
        raise BncliError(f"{what}: file not found: {path}") from None
    except IsADirectoryError:
        raise BncliError(f"{what}: {path} is a directory, not a YAML file") from None
    except NotRegular:
        raise BncliError(f"{what}: {path} is not a regular file") from None
    except TooLarge as e:
        raise BncliError(f"{what}: {path} {e}, too large for a config") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: a NUL in the path
        raise BncliError(f"{what}: cannot read {path}: {e}") from None
    return loads(text, what, str(path), saved)


def loads(text: str, what: str, subject: str, saved: bool = False) -> Any:
    """Parse YAML text (a file's, or one flag's value) as read_yaml does; errors say
    `what: subject is not valid YAML ...`."""
    try:
        loader = (_Saved if saved else _Loader)(text)  # what yaml.safe_load does, with the SafeLoader above
        if saved:
            loader.aliases = "*" in text  # no `*`, no alias: the check is skipped (a listing reads thousands)
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


def load(
    cls: type[C],
    path: Path | None = None,
    *,
    flags: bool = True,
    whose: Callable[[dict, Path, bool], dict] | None = None,
    **values: Any,
) -> C:
    """Resolve a config: the spec's defaults < the YAML file at `path` < `values` that are not None.

    Errors name the values as the command line's flags (`--depth`), or, with flags=False (the
    Python API), as fields (`depth`). `whose(data, path, flags)` checks the file's mapping is
    for this study (bncli.studies.whose, which knows them all) and drops its `study:` key.
    """
    data: Any = {}
    if path is not None:
        data = read_yaml(path)
        if data is None:  # an empty file means "all defaults"
            data = {}
        if not isinstance(data, dict):
            raise BncliError(f"--config: {path} must hold a mapping of field: value, got {type(data).__name__}")
        if whose is not None:
            data = whose(data, path, flags)
        elif (
            "study" not in cls.FIELDS
            and fields.study_name(cls) is not None
            and data.get("study") == fields.study_name(cls)
        ):
            data = {k: v for k, v in data.items() if k != "study"}  # its own study: a saved config.yaml
    given = {k: v for k, v in values.items() if v is not None}
    return validate(cls, {**data, **given}, set(given) if flags else set(), str(path) if path else None)
