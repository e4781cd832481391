"""Sweeps: one study over a grid of settings times seeds, aggregated into one table and one plot.

    bncli sweep configs/sweeps/init_vs_norm.yaml
    bncli sweep --study depth-study --set depth=50 --grid init=kaiming,xavier --seeds 0-4

A sweep is a file, flags (--study, --set, --grid, --seeds), or both, merged by `spec`; the
resolved sweep is saved as the sweep directory's sweep.yaml (a file given alone: as given),
which reruns it. Every grid point is validated by the study's own config model before
anything runs. Runs go to `<out>/sweeps/<name>/runs/<run-name>/`, each written exactly as a
single run would be, then
summary.csv (long: one row per run per layer) and aggregate.csv (mean and sd over seeds); the
caller draws the plot. A run's meta.json is its commit record, so `resume` redoes only runs
that never said ok or diverged. Every run goes through results.compute (in this process, a
pool worker or a Ray task) and results.write_run (always here, in the parent).
"""

from __future__ import annotations

import csv as csvmod
import errno
import fcntl
import hashlib
import itertools
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import pandas as pd
import torch
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from bncli import config as cfgmod
from bncli import fields, ray_backend, results, studies
from bncli.errors import BncliError, Damaged, RunError, describe, first_line, not_a_field, not_one_of, show, word
from bncli.results import FINISHED, Run
from bncli.runtime import check_fits

SWEEPS = "sweeps"
PARENT_CHECK_SECONDS = 1.0  # how soon a pool worker notices its parent is gone
LOCK = ".lock"  # a sweep directory's: flocked by the process working in it, and naming it (pid host)
_HELD: dict[Path, int] = {}  # sweep directory -> the descriptor holding its lock
MAX_RUNS = 100_000  # grid points x seeds: checked from the lists' sizes before any is built
MAX_NAMED = 3  # fields an error names; the rest are counted
MAX_HEADER = 1 << 20  # characters of a run CSV's header line read: a line longer is no header bncli wrote


def _none_is_empty(v: Any) -> Any:
    return {} if v is None else v


_RANGE = re.compile(r"\s*range\(([^()]*)\)\s*")


def expand_range(text: str) -> list[int | float] | None:
    """Hydra's `range(start, stop, step)` (or `range(stop)`, `range(start, stop)`) as its values,
    stop left out as in Python's range; floats too (`range(0, 1, 0.25)`). None for other text.
    A step of 0, an empty range or one over MAX_RUNS values is refused (ValueError)."""
    m = _RANGE.fullmatch(text)
    if m is None:
        return None
    try:
        args = [float(a) if any(c in a for c in ".eE") else int(a) for a in m[1].split(",")]
    except ValueError:
        raise ValueError(f"{text.strip()}: range takes numbers, like range(10, 50, 10)") from None
    if not 1 <= len(args) <= 3:
        raise ValueError(f"{text.strip()}: range takes 1 to 3 numbers, like range(10, 50, 10)")
    start, stop, step = (0, args[0], 1) if len(args) == 1 else (*args[:2], args[2] if len(args) == 3 else 1)
    if step == 0 or not all(math.isfinite(a) for a in (start, stop, step)):
        raise ValueError(f"{text.strip()}: the step must be a finite number other than 0")
    count = math.ceil((stop - start) / step)
    if count <= 0 or count > MAX_RUNS:
        raise ValueError(f"{text.strip()}: a range of {max(count, 0)} values; give 1 to {MAX_RUNS}")
    if all(isinstance(a, int) for a in (start, stop, step)):
        return list(range(int(start), int(stop), int(step)))
    return [round(start + i * step, 12) for i in range(count)]  # 0.1 * 3 is 0.30000000000000004


def _ranges(grid: Any) -> Any:
    """A sweep file's grid with each `range(...)` value expanded."""
    if not isinstance(grid, dict):
        return grid
    return {k: expand_range(v) or v if isinstance(v, str) else v for k, v in grid.items()}


def _registered(v: str) -> str:
    if v not in studies.REGISTRY:
        raise ValueError(not_one_of(v, studies.names()))
    return v


class SweepFile(BaseModel):
    """The sweep file: a study, base settings, a grid of field -> values, and seeds."""

    model_config = ConfigDict(extra="forbid")

    study: Annotated[str, AfterValidator(_registered)]
    name: Optional[str] = None  # default: the file's stem
    base: Annotated[dict[str, Any], BeforeValidator(_none_is_empty)] = {}
    grid: Annotated[
        dict[str, Annotated[list[Any], Field(min_length=1)]], BeforeValidator(_ranges), BeforeValidator(_none_is_empty)
    ] = {}
    seeds: Annotated[list[Any], Field(min_length=1)] = [0]


@dataclass
class Point:
    name: str  # the run's directory name: init=kaiming,norm=batchnorm,seed=0
    values: dict[str, Any]  # the grid values and the seed
    cfg: Any  # the study's validated config


@dataclass
class Plan:
    study: str
    name: str
    dir: Path  # <out>/sweeps/<name>
    text: str  # the sweep file as given
    keys: list[str]  # the grid's fields, in file order
    points: list[Point]
    data: dict[str, Any] = field(default_factory=dict)  # the resolved sweep: study, name, base, grid, seeds
    flags: bool = False  # errors name the command line's flags (--resume, --name), else the API's arguments


@dataclass
class Outcome:
    dir: Path
    total: int  # runs in the sweep
    status: dict[str, str]  # run name -> status, for runs that ran or were already done
    errors: dict[str, str] = field(default_factory=dict)  # run name -> error, for failed runs
    skipped: int = 0  # runs already done when resuming
    interrupted: bool = False
    stopped: bool = False  # --fail-fast stopped the sweep
    plot: Path | None = None  # drawn by the caller once the sweep is done
    unaggregated: bool = False  # interrupted while writing summary.csv and aggregate.csv

    @property
    def failed(self) -> int:
        return sum(s == "failed" for s in self.status.values())


def _file_error(err: ValidationError, path: Path) -> str:
    return f"{path}: " + describe(err, SweepFile.model_fields, ".".join, noun="key", owner="a sweep file")


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._+-" else "_" for c in text)


def run_name(values: dict[str, Any]) -> str:
    return results.short(",".join(f"{k}={_safe(word(v))}" for k, v in values.items()), 200)


def expand(grid: dict[str, list], seeds: list) -> list[dict[str, Any]]:
    """The cartesian product of the grid (first key slowest), each point times every seed."""
    keys = list(grid)
    return [
        {**dict(zip(keys, combo, strict=True)), "seed": s} for combo in itertools.product(*grid.values()) for s in seeds
    ]


# -- the sweep: a file, flags, or both -------------------------------------------------------------


@dataclass
class Spec:
    """A sweep resolved from its file and its flags (or the API's keyword arguments)."""

    data: dict[str, Any]  # study, name, base, grid, seeds: sweep.yaml's content
    text: str  # sweep.yaml's text: the file as given, or `data` as YAML when flags changed it
    given: set[str]  # "base.K", "grid.K", "seeds": what flags (or keyword arguments) gave, not the file
    labels: dict[str, str]  # "base.K", "grid.K", "seeds" -> how an error names it: `--grid init`, `s.yaml: grid.init`
    source: str  # how an error names the sweep as a whole: `s.yaml`, `--set/--grid`, `s.yaml + --seeds`


_SEEDS = re.compile(r"(\d{1,19})(?:-(\d{1,19}))?")


def parse_seeds(value: Any, label: str = "--seeds") -> list[Any]:
    """Seeds from `0-4` (a range, inclusive), `0,1,5` (a list; ranges may be part of it), `3`,
    an int or a list (whose items the study's seed field checks)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, list, tuple)):
        raise BncliError(f"{label}: give a range like 0-4, a list like 0,1,5 or one seed like 3, got {show(value)}")
    if not isinstance(value, str):
        if isinstance(value, (list, tuple)) and not value:
            raise BncliError(f"{label}: give at least one seed")
        return [value] if isinstance(value, int) else list(value)
    seeds: list[int] = []
    for part in value.split(","):
        m = _SEEDS.fullmatch(part.strip())
        if m is None:
            raise BncliError(f"{label}: give a range like 0-4, a list like 0,1,5 or one seed like 3, got {show(value)}")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if hi < lo or hi > fields.SEED_MAX:
            raise BncliError(f"{label}: {part.strip()}: a range goes up (0-4), to at most {fields.SEED_MAX}")
        if len(seeds) + hi - lo + 1 > MAX_RUNS:  # counted before the list is built
            raise BncliError(f"{label}: {show(value)} is over {MAX_RUNS} seeds; a sweep has at most {MAX_RUNS} runs")
        seeds.extend(range(lo, hi + 1))
    return seeds


def _pairs(items: list[str], flag: str, example: str) -> dict[str, str]:
    """KEY=VALUE strings as {KEY: VALUE}: each key once, each with a value."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip().replace("-", "_")  # init-std, as the study's flag spells it, is init_std
        if not sep or not key.isidentifier():
            raise BncliError(f"{flag}: expected KEY=VALUE like {example}, got {show(item)}")
        if key in out:
            raise BncliError(f"{flag} {key}: given twice; give each key once")
        if not value.strip():
            raise BncliError(f"{flag} {key}: give a value, like {example}")
        out[key] = value
    return out


def parse_set(items: list[str], flag: str = "--set") -> dict[str, Any]:
    """`--set KEY=VALUE` flags as base settings; each value read as YAML reads it (50 an int,
    1e-5 a float, none for None, 2,2 a string the field parses)."""
    return {k: cfgmod.loads(v, f"{flag} {k}", show(v)) for k, v in _pairs(items, flag, "depth=50").items()}


def parse_grid(items: list[str], flag: str = "--grid") -> dict[str, list[Any]]:
    """`--grid KEY=V1,V2,...` flags as grid axes; each value read as YAML reads it.
    `KEY=[...]` is one YAML list, for values that hold commas: `--grid "momentum=[[0.1, 0.3], [0.9]]"`;
    `KEY=range(10,50,10)` is Hydra's range (expand_range)."""
    grid = {}
    for key, text in _pairs(items, flag, "init=kaiming,xavier").items():
        what = f"{flag} {key}"
        try:
            expanded = expand_range(text)
        except ValueError as e:
            raise BncliError(f"{what}: {e}") from None
        if expanded is not None:
            values: Any = expanded
        elif text.lstrip().startswith("["):
            values = cfgmod.loads(text, what, show(text))
        else:
            parts = [p.strip() for p in text.split(",")]
            if not all(parts):
                raise BncliError(f"{what}: an empty value in {show(text)}; give values like init=kaiming,xavier")
            values = [cfgmod.loads(p, what, show(p)) for p in parts]
        if not isinstance(values, list) or not values:
            raise BncliError(f"{what}: give at least one value, like init=kaiming,xavier (got {show(text)})")
        grid[key] = values
    return grid


def _read(path: Path) -> SweepFile:
    data = cfgmod.read_yaml(path, "sweep file")
    if data is not None and not isinstance(data, dict):
        raise BncliError(
            f"{path}: a sweep file is a mapping of study, name, base, grid and seeds, got a {type(data).__name__}"
        )
    try:
        return SweepFile.model_validate(data if data is not None else {})
    except ValidationError as e:
        raise BncliError(_file_error(e, path)) from None


class _Given(BaseModel):
    """The API's base= and grid= keyword arguments, checked as a sweep file's would be."""

    model_config = ConfigDict(extra="forbid")

    base: dict[str, Any] = {}
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}


def _given(base: Any, grid: Any, flags: bool) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The base settings and grid axes the flags (strings) or keyword arguments (mappings) give."""
    if flags:
        base, grid = parse_set(list(base or [])), parse_grid(list(grid or []))
    else:
        try:
            given = _Given.model_validate({"base": base or {}, "grid": grid or {}})
        except ValidationError as e:
            raise BncliError(describe(e, ["base", "grid"], ".".join, noun="argument")) from None
        base, grid = given.base, given.grid
    both = [k for k in grid if k in base]
    if both:
        where = f"--grid {both[0]}: also given with --set" if flags else f"grid.{both[0]}: also given in base"
        raise BncliError(f"{where}; a setting is either fixed or swept, not both")
    return base, grid


def _from_file(path: Path | None, study: str | None, flag: str) -> tuple[SweepFile, str]:
    """The file's sweep and text; without a file, an empty sweep of `study`."""
    if path is None:
        if study is None:
            raise BncliError(
                f"give a sweep FILE or {flag}: bncli sweep FILE, or bncli sweep {flag} NAME "
                "--grid KEY=V1,V2 (see bncli sweep --help)"
            )
        if study not in studies.REGISTRY:
            raise BncliError(f"{flag}: {show(study)} is not a study; accepted: {', '.join(studies.names())}")
        return SweepFile(study=study), ""
    sf = _read(path)
    if study is not None and study != sf.study:
        raise BncliError(
            f"{flag}: {show(study)} differs from the study of {path} ({sf.study}); "
            "leave out " + flag + " or give a sweep file of that study"
        )
    return sf, cfgmod.read_bytes(path).decode("utf-8")  # as read_yaml read it: bounded, a regular file


def spec(
    file: Path | str | None = None,
    study: str | None = None,
    base: Any = None,
    grid: Any = None,
    seeds: Any = None,
    name: str | None = None,
    *,
    flags: bool = False,
) -> Spec:
    """The sweep that a file and flags give together, the flags winning.

    The file (if any) gives study, name, base, grid and seeds. `base` settings override or add
    to the file's, and remove their key from its grid; a `grid` axis replaces the file's axis of
    that key (in its place) or is added after them, and removes its key from base; `seeds`
    replace the file's. A key both in `base` and `grid` is refused; so is a `study` other than
    the file's. With flags=True, base and grid are the command line's KEY=VALUE strings (--set,
    --grid) and errors name the flags; else they are mappings, and errors name `base.K`.
    Nothing is validated against the study's config here: `plan` does that.
    """
    path = Path(file) if file is not None else None
    sf, text = _from_file(path, study, "--study" if flags else "study")
    sets, axes = _given(base, grid, flags)
    new_seeds = parse_seeds(seeds, "--seeds" if flags else "seeds") if seeds is not None else None
    data: dict[str, Any] = {
        "study": sf.study,
        "name": name if name is not None else sf.name,  # '' is refused as a name, as for a single run
        "base": {k: v for k, v in sf.base.items() if k not in axes} | sets,
        "grid": {k: axes.get(k, v) for k, v in sf.grid.items() if k not in sets} | axes,
        "seeds": sf.seeds if new_seeds is None else new_seeds,
    }
    what = "base" if not flags else "--set"  # how an unwritable value is named
    if data["name"] is None:
        data["name"] = path.stem if path else _default_name(data, what)
    given = {f"base.{k}" for k in sets} | {f"grid.{k}" for k in axes} | ({"seeds"} if new_seeds is not None else set())
    return Spec(
        data,
        text if path and not given else cfgmod.dump_yaml(data, what),
        given,
        *_labels(path, flags, data, given),
    )


def _labels(path: Path | None, flags: bool, data: dict[str, Any], given: set[str]) -> tuple[dict[str, str], str]:
    """How errors name each base and grid key and the seeds (`--grid init`, `grid.init` or
    `s.yaml: grid.init`, by where it came from), and the sweep as a whole."""

    def label(key: str) -> str:
        if key in given or path is None:
            part, _, k = key.partition(".")
            return (f"--{'set' if part == 'base' else part} {k}" if k else "--seeds") if flags else key
        return f"{path}: {key}"

    keys = [f"{part}.{k}" for part in ("base", "grid") for k in data[part]] + ["seeds"]
    parts = sorted({k.partition(".")[0] for k in given}, key=["base", "grid", "seeds"].index)
    words = [{"base": "--set", "grid": "--grid", "seeds": "--seeds"}[p] if flags else p for p in parts]
    source = " + ".join([str(path)] * bool(path) + ["/".join(words)] * bool(words))
    return {k: label(k) for k in keys}, source or (f"--study {data['study']}" if flags else f"study {data['study']}")


def _default_name(data: dict[str, Any], what: str = "base") -> str:
    """A flag-built sweep's name: the study, the grid's keys and a hash of what the sweep runs
    (its base, grid and seeds, as _canonical writes them), like depth-study-init-norm-3f09a1:
    two sweeps of one study with other grids or --set values get two names, and the same
    flags, in any order, name the same sweep again (--resume)."""
    digest = hashlib.sha1("".join(_canonical(data, what).values()).encode()).hexdigest()[:6]
    return results.short("-".join([data["study"], *(_safe(k) for k in data["grid"]), digest]), 120)


def _check_keys(sp: Spec, cls: type[fields.Config]) -> None:
    """Every base and grid key a field of the study's config (seed in the seeds), and every
    value given by a flag valid for its field on its own: `--grid init: ... (got 'foo')`."""
    for part in ("grid", "base"):
        for key in sp.data[part]:
            label = sp.labels[f"{part}.{key}"]
            if key == "seed":
                raise BncliError(
                    f"{label}: put seeds in {'--seeds' if label.startswith('--') else 'the seeds list'}, not in {part}"
                )
            if key not in cls.FIELDS:
                names = [f for f in cls.FIELDS if f != "seed"]
                raise BncliError(f"{label}: {not_a_field(key, sp.data['study'], names)}")
            if f"{part}.{key}" in sp.given:  # a file's values are checked with their runs, below
                for value in sp.data[part][key] if part == "grid" else [sp.data[part][key]]:
                    _check_value(cls, key, value, label)


def _check_value(cls: type[fields.Config], key: str, value: Any, label: str) -> None:
    try:
        # a class is hashable; mypy checks its instances' __hash__ against Hashable (python/mypy#20409)
        fields.model(cls).model_validate({key: fields.plain(value)})
    except ValidationError as e:  # a field's own error (a combination's is the run's, below)
        if all(err["loc"][:1] == (key,) for err in e.errors()):
            name = lambda loc: label + "".join(f"[{p}]" for p in loc[1:])  # noqa: E731
            raise BncliError(
                describe(
                    e,
                    cls.FIELDS,
                    name,
                    owner=fields.study_name(cls),
                    choices=lambda loc: fields.field_choices(cls, loc),
                )
            ) from None


def _check_sizes(sp: Spec) -> None:
    """At most MAX_RUNS runs (counted, not expanded); each seed and each grid value once."""
    grid, seeds = sp.data["grid"], sp.data["seeds"]
    runs = math.prod(len(v) for v in grid.values()) * len(seeds)
    if runs > MAX_RUNS:
        sizes = " x ".join(str(len(v)) for v in [*grid.values(), seeds])
        raise BncliError(f"{sp.source}: grid and seeds: {sizes} = {runs} runs; a sweep has at most {MAX_RUNS}")
    counts = Counter(word(s) for s in seeds)
    dupes = sorted(w for w, n in counts.items() if n > 1)
    if dupes:
        raise BncliError(f"{sp.labels['seeds']}: each seed once, got {', '.join(dupes[:5])} more than once")
    for key, values in grid.items():
        words = [word(v) for v in values]
        if len(set(words)) != len(words):
            raise BncliError(f"{sp.labels['grid.' + key]}: each value once, got {show(values)}")


def plan(path: Path | str | None, out: Path, name: str | None = None, **given: Any) -> Plan:
    """Resolve (see `spec`: `given` is its study, base, grid, seeds and flags) and check a sweep.
    Any bad value raises BncliError; nothing is written."""
    sp = spec(path, name=name, **given)
    study = sp.data["study"]
    cls = studies.get(study).CONFIG
    _check_keys(sp, cls)
    _check_sizes(sp)
    flags = bool(given.get("flags"))
    label = ("--name" if flags else "name") if name is not None else (f"{path}: name" if path is not None else "name")
    sweep_name = results.check_name(sp.data["name"], label)
    out = results.check_out(out, "--out" if flags else "out")
    points = []
    for values in expand(sp.data["grid"], sp.data["seeds"]):
        rname = results.check_name(run_name(values), "grid")
        try:
            cfg = fields.validate(cls, {**sp.data["base"], **values})
        except BncliError as e:
            raise BncliError(f"{sp.source}: run {rname}: {e}") from None
        points.append(Point(rname, values, cfg))
    return Plan(study, sweep_name, out / SWEEPS / sweep_name, sp.text, list(sp.data["grid"]), points, sp.data, flags)


def _canonical(data: dict[str, Any], what: str = "config") -> dict[str, str]:
    """What makes two sweeps the same runs, each part as YAML text (so 1 and 1.0 differ):
    the study, the base settings in any order, the grid in order, the seeds in order."""
    parts = {**data, "base": dict(sorted(data["base"].items()))}
    return {k: cfgmod.dump_yaml(parts[k], what) for k in ("study", "base", "grid", "seeds")}


def _differs(saved: Path, plan: Plan) -> str | None:
    """How the sweep saved in `saved` differs from the plan's; None when it is the same sweep."""
    try:
        data = SweepFile.model_validate(cfgmod.read_yaml(saved, "--resume")).model_dump()
    except (BncliError, ValidationError):
        return "it cannot be read as a sweep file"
    old, new = _canonical(data), _canonical(plan.data)
    for key in old:
        if old[key] != new[key]:
            return f"in {key}: {show(data[key])} there, {show(plan.data[key])} now"
    return None


# -- running ------------------------------------------------------------------------------------


def _worker_init(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.set_num_threads(threads)
    parent = os.getppid()

    def watch() -> None:  # a parent killed with -9 cannot stop its pool: its workers notice
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="bncli-parent-watch").start()


def _work(task: tuple[str, str, Any, torch.device]) -> tuple[str, Run]:
    study, name, cfg, device = task
    return name, results.compute(study, cfg, device)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run(
    plan: Plan,
    resume: bool = False,
    fail_fast: bool = False,
    workers: int = 1,
    progress: Callable[[int, int, str | None], None] | None = None,
    ray: ray_backend.RayOptions | None = None,
) -> Outcome:
    """Run a planned sweep; progress(done, total, current_run) is called as runs start and end.

    `ray` sends each run to Ray as one task instead of running here.

    Ctrl-C keeps finished runs, marks the current one interrupted, still writes summary.csv
    and aggregate.csv for what finished, and returns with `interrupted` set.
    """
    if workers < 1:
        raise BncliError(f"--workers: must be at least 1, got {workers}")
    if workers > _cpus():  # each worker runs a whole study: more than the cores only adds memory
        raise BncliError(f"--workers: at most {_cpus()} here (the CPUs this process may use), got {workers}")
    if ray is not None:
        if workers != 1:
            raise BncliError("--workers: applies to --backend local; with --backend ray use --cpus-per-run")
        ray_backend.import_ray()  # a missing extra is a usage error, before any directory exists
    mod = studies.get(plan.study)
    # device and size checks before any directory exists; on Ray each task checks on its own
    # node, since the driver may well have no GPU
    devices = {p.name: mod.preflight(p.cfg) for p in plan.points} if ray is None else {}
    if workers > 1:  # the runs side by side must fit together
        need = sum(sorted((mod.estimate_bytes(p.cfg) for p in plan.points), reverse=True)[:workers])
        check_fits(
            next(iter(devices.values())), need, f"{workers} runs at once (--workers {workers})", "fewer --workers"
        )
    started = ray_backend.connect(ray) if ray is not None and plan.points else False
    try:
        todo, outcome = _prepare(plan, resume)
        try:
            return _execute(plan, todo, outcome, devices, fail_fast, workers, progress, ray)
        finally:
            unlock(plan.dir)
    finally:
        ray_backend.disconnect(started)


def _execute(
    plan: Plan, todo: list[Point], outcome: Outcome, devices: dict, fail_fast: bool, workers: int, progress, ray
) -> Outcome:
    total = len(plan.points)
    tick = progress or (lambda done, total, current: None)
    tick(outcome.skipped, total, None)

    def store(p: Point, r: Run) -> bool:
        """Write a run computed elsewhere; True when the sweep must stop (--fail-fast)."""
        r.dir = results.make_dir(plan.dir / "runs" / p.name)
        results.write_run(r)
        _record(outcome, p.name, r)
        tick(len(outcome.status), total, p.name)
        outcome.stopped = r.status == "failed" and fail_fast
        return outcome.stopped

    try:
        if ray is not None and todo:
            ray_backend.run(plan.study, [(p, p.cfg) for p in todo], store, ray)
        elif workers == 1 or not todo:
            _sequential(plan, todo, devices, outcome, fail_fast, tick)
        else:
            _pool(plan, todo, devices, workers, store)
    except KeyboardInterrupt:
        outcome.interrupted = True
    try:
        aggregate(plan)
    except KeyboardInterrupt:  # the first signal came after the last run: every run is kept
        outcome.interrupted = outcome.unaggregated = True
    return outcome


def _prepare(plan: Plan, resume: bool) -> tuple[list[Point], Outcome]:
    """Create (or check, on --resume) the sweep directory; the points still to run."""
    given = plan.dir / "sweep.yaml"
    if plan.dir.exists():
        if not resume:
            resume_, name = ("--resume", "--name") if plan.flags else ("resume=True", "name")
            raise BncliError(f"{plan.dir} already exists; add {resume_} to finish that sweep, or give another {name}")
        differs = _differs(given, plan) if given.exists() and plan.data else None
        if differs:
            raise BncliError(
                f"--resume: {given} differs from the sweep given ({differs}); resume with the "
                "same file and flags, or start a new sweep with another --name"
            )
    runs = plan.dir / "runs"
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create {runs}: {e.strerror or e}") from None
    lock(plan.dir)
    try:
        todo = _todo(plan, resume)  # a refusal first: it leaves the directory as it was
        if not given.exists():
            results.atomic_write(given, plan.text)
        return todo
    except BaseException:
        unlock(plan.dir)
        raise


def _todo(plan: Plan, resume: bool) -> tuple[list[Point], Outcome]:
    """The points to run; on --resume, the finished ones (meta.json done, the CSV and config.yaml
    there, and config.yaml the point's config) are kept."""
    runs = plan.dir / "runs"
    csv = studies.get(plan.study).CSV
    outcome = Outcome(plan.dir, len(plan.points), {})
    done = {}
    for p in plan.points if resume else []:  # every kept run checked before anything is removed
        d = runs / p.name
        status = _status(d / "meta.json")
        kept = d.is_dir() and not d.is_symlink() and (d / csv).is_file() and (d / "config.yaml").is_file()
        if status in results.DONE and kept:
            _same_run(plan, p, d / "config.yaml")
            done[p.name] = status
    todo = []
    for p in plan.points:
        d = runs / p.name
        if p.name in done:
            outcome.status[p.name] = done[p.name]
            for tmp in d.glob(".*.tmp"):  # left by a write that a crash cut short
                tmp.unlink(missing_ok=True)
            continue
        try:
            if d.is_symlink() or d.is_file():  # something else in the run's place
                d.unlink()
            elif d.exists():  # unfinished (running, interrupted, failed), or its CSV lost: redo it
                shutil.rmtree(d)
        except OSError as e:  # a read-only sweep directory
            raise RunError(f"cannot remove {d} to redo it: {e.strerror or e}") from None
        todo.append(p)
    outcome.skipped = len(plan.points) - len(todo)
    return todo, outcome


def _same_run(plan: Plan, p: Point, path: Path) -> None:
    """Refuse (naming each field that differs) to keep a finished run whose config.yaml is not
    the config the sweep gives that point now: a saved sweep.yaml edited by hand, or a sweep
    deleted and resumed with other values, would otherwise label old runs with new settings."""
    resume = "--resume" if plan.flags else "resume"
    try:
        saved = cfgmod.load(type(p.cfg), path, flags=False, whose=studies.whose(plan.study))
    except BncliError as e:
        raise BncliError(
            f"{resume}: run {p.name}'s config.yaml cannot be read as a config of {plan.study} ({e}); "
            "remove the run to redo it"
        ) from None
    old, new = saved.settings(), p.cfg.settings()
    changed = [k for k in new if old.get(k) != new[k]]
    if changed:
        what = ", ".join(f"{k}: {show(old.get(k))} there, {show(new[k])} now" for k in changed[:MAX_NAMED])
        more = f" and {len(changed) - MAX_NAMED} more" if len(changed) > MAX_NAMED else ""
        raise BncliError(
            f"{resume}: run {p.name} in {plan.dir} was made with other settings than the sweep gives it "
            f"({what}{more}); resume with the sweep that made it, or start a new sweep with another name"
        )


def lock(directory: Path) -> None:
    """Take `directory/.lock` for this process, or refuse in one line naming its holder.

    The lock is an flock on the file, held by an open descriptor for as long as the sweep
    runs: the kernel gives it to one process at a time, and drops it when its holder dies
    (SIGKILL, a crash), so a dead holder's lock is free again with no guessing from pids. The
    file's content (pid and host, written once the lock is held) only names the holder. A file
    we lock that is no longer the one at the path (its holder unlinked it as it finished) is let
    go and the path tried again, so two processes never hold two files. A holder on another
    host (a shared disk whose flocks do not reach here) is refused by its content, as before.
    """
    path = directory / LOCK
    for _ in range(10):
        fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, host = _holder(fd)
            os.close(fd)
            where = "" if host in (None, socket.gethostname()) else f" on {host}"
            who = f"process {pid}{where}" if pid is not None else "another process"
            raise BncliError(
                f"{directory} is in use by {who}; wait for it to finish or stop it, then --resume"
            ) from None
        except OSError as e:
            os.close(fd)
            raise RunError(f"cannot lock {path}: {e.strerror or e}") from None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # unlinked by the holder we waited on: lock the file now at the path
            os.close(fd)
            continue
        pid, host = _holder(fd)
        if pid is not None and host is not None and host != socket.gethostname():
            os.close(fd)
            raise BncliError(
                f"{directory} is in use by process {pid} on {host}; wait for it to finish or stop it "
                f"(or remove {path} if it is gone), then --resume"
            )
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except OSError as e:
            os.close(fd)
            raise RunError(f"cannot write {path}: {e.strerror or e}") from None
        _HELD[directory] = fd
        return
    raise RunError(f"{directory}: cannot take its lock {path} (other processes keep replacing it)")


def _open_lock(path: Path) -> int:
    """The lock file's descriptor, created if need be; refused if anything but a regular file is there."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise RunError(f"{path}: a symlink where bncli keeps the sweep's lock; remove it, then --resume") from None
        if e.errno == errno.EISDIR:
            raise RunError(
                f"{path}: a directory where bncli keeps the sweep's lock; remove it, then --resume"
            ) from None
        raise RunError(f"cannot take the lock {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device: never read or locked
        os.close(fd)
        raise RunError(f"{path}: not a regular file where bncli keeps the sweep's lock; remove it, then --resume")
    return fd


def unlock(directory: Path) -> None:
    """Remove the lock file and let the lock go (closing its descriptor releases the flock). A
    lock file that cannot be removed (the directory made read-only meanwhile) is left: it is
    free once closed."""
    fd = _HELD.pop(directory, None)
    if fd is None:
        return
    try:
        (directory / LOCK).unlink(missing_ok=True)  # while still held: no one has locked it since
    except OSError:
        pass
    finally:
        os.close(fd)


def _holder(fd: int) -> tuple[int | None, str | None]:
    """The pid and host a lock file names (at most 256 bytes read), or None, None."""
    try:
        pid, host = os.pread(fd, 256, 0).decode().split()
        return int(pid), host
    except (OSError, ValueError):
        return None, None


def _status(meta_path: Path) -> str | None:
    """A run's status by its meta.json; None where there is none, or it is not JSON of a run."""
    try:
        meta = results.read_json(meta_path)
    except (OSError, ValueError):
        return None
    status = meta.get("status") if isinstance(meta, dict) else None
    return status if isinstance(status, str) else None


def _record(outcome: Outcome, name: str, r: Run) -> None:
    outcome.status[name] = r.status
    if r.status == "failed":
        outcome.errors[name] = r.meta.get("error") or "failed"


def _sequential(plan: Plan, todo: list[Point], devices: dict, outcome: Outcome, fail_fast: bool, tick) -> None:
    total = len(plan.points)
    for p in todo:
        tick(len(outcome.status), total, p.name)
        run_dir = results.make_dir(plan.dir / "runs" / p.name)

        def start(r: Run, run_dir=run_dir) -> None:
            r.dir = run_dir
            results.write_run(r)

        r = None
        try:
            r = results.compute(plan.study, p.cfg, devices[p.name], on_start=start)
            results.write_run(r)
        except KeyboardInterrupt:  # outside the study's own loop: keep the mark, then stop
            if r is not None:
                r.meta["status"] = "interrupted"
                results.write_run(r)
            raise
        _record(outcome, p.name, r)
        tick(len(outcome.status), total, p.name)
        if r.status == "interrupted":
            raise KeyboardInterrupt
        if r.status == "failed" and fail_fast:
            outcome.stopped = True
            return


def _pool(plan: Plan, todo: list[Point], devices: dict, workers: int, store) -> None:
    ctx = mp.get_context("spawn")
    # workers start with Ctrl-C ignored (a process group's Ctrl-C while they import would print a
    # traceback per worker); the parent handles it, and _worker_init keeps it so
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pool = ctx.Pool(
            min(workers, max(1, len(todo))), initializer=_worker_init, initargs=(max(1, _cpus() // workers),)
        )
    finally:
        signal.signal(signal.SIGINT, ignored)
    try:
        points = {p.name: p for p in todo}
        tasks = [(plan.study, p.name, p.cfg, devices[p.name]) for p in todo]
        for name, r in pool.imap_unordered(_work, tasks):
            if store(points[name], r):
                break
        pool.close()
    finally:
        pool.terminate()
        pool.join()


# -- aggregating --------------------------------------------------------------------------------


def _config_columns(p: Point) -> dict[str, Any]:
    return {k: word(v) if isinstance(v, (list, tuple)) or v is None else v for k, v in p.cfg.settings().items()}


def _cell(v: Any) -> str:
    """A setting as summary.csv writes it (what pandas' to_csv wrote: 1e-05, True, 10000000000.0)."""
    return repr(v) if isinstance(v, float) else str(v)


@dataclass
class _Finished:
    """A run that goes into summary.csv: its point, status, CSV (None: a failed run without one)
    and that CSV's header."""

    point: Point
    status: str
    csv: Path | None
    header: list[str]


def _finished(plan: Plan) -> list[_Finished]:
    """The sweep's finished runs in its order, each CSV's header read (one line, bounded)."""
    mod = studies.get(plan.study)
    out = []
    for p in plan.points:
        run_dir = plan.dir / "runs" / p.name
        status = _status(run_dir / "meta.json")
        if status not in FINISHED:
            continue
        csv_path = run_dir / mod.CSV
        header = _header(csv_path) if csv_path.is_file() else []
        out.append(_Finished(p, status, csv_path if header else None, header))
    return out


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f, _damaged(path):
        line = f.readline(MAX_HEADER)
        return next(csvmod.reader([line]), []) if line.endswith("\n") else []


def _setting_names(plan: Plan, runs: list[_Finished]) -> dict[str, str]:
    """Each setting -> its summary.csv column: itself, or cfg.FIELD where a statistic of the
    runs (any run's: a failed run has none of its own) has its name (the depth study's erank)."""
    seen = {c for r in runs for c in r.header} or set(studies.get(plan.study).COLUMNS)
    return {k: results.setting_column(k, seen) for k in studies.get(plan.study).CONFIG.FIELDS}


def summary_columns(plan: Plan, runs: list[_Finished]) -> list[str]:
    """summary.csv's header: run, the settings, status, then every run's columns in the order
    they first appear (ID columns alone for a sweep whose runs all failed)."""
    mod = studies.get(plan.study)
    cols: dict[str, None] = {"run": None, **dict.fromkeys(_setting_names(plan, runs).values()), "status": None}
    for r in runs:
        cols.update(dict.fromkeys(r.header or mod.ID_COLUMNS))
    return list(cols)


def write_summary(plan: Plan, runs: list[_Finished]) -> None:
    """summary.csv, one row per run per layer, written run by run as each run's CSV streams by:
    memory holds one row at a time. A run's cells are copied as its CSV holds them, so an empty
    cell (a statistic not computed) stays empty and nan or inf (computed, overflowed) stays so;
    a failed run with no CSV is one row of empty cells but its settings and status."""
    columns, names = summary_columns(plan, runs), _setting_names(plan, runs)
    with _streamed(plan.dir / "summary.csv") as out:
        writer = csvmod.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for r in runs:
            head = {"run": r.point.name, "status": r.status}
            head.update({names[k]: _cell(v) for k, v in _config_columns(r.point).items()})
            where = [head.get(c) for c in columns]
            at = {c: i for i, c in enumerate(r.header)}
            picks = [at.get(c) for c in columns]
            if r.csv is None:
                writer.writerow(["" if h is None else h for h in where])
                continue
            with open(r.csv, newline="", encoding="utf-8") as f, _damaged(r.csv):
                rows = csvmod.reader(f)
                next(rows)
                for row in rows:
                    writer.writerow(
                        [
                            h if h is not None else "" if k is None or k >= len(row) else row[k]
                            for h, k in zip(where, picks, strict=True)
                        ]
                    )


@contextmanager
def _damaged(csv: Path) -> Iterator[None]:
    """A run CSV that does not read as one (a field over the csv module's limit, bytes that are
    not UTF-8) is Damaged, naming the run: one line, as everywhere results are read."""
    try:
        yield
    except (csvmod.Error, UnicodeDecodeError) as e:
        raise Damaged(csv.parent, f"{csv.name} is not a CSV table: {first_line(e)}") from None


@contextmanager
def _streamed(path: Path) -> Iterator[Any]:
    """A text file written line by line into a temporary file beside `path`, moved into place
    (results.atomic_write's promise: a reader sees the old file or the whole new one)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            os.fchmod(f.fileno(), results._MODE)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        results._sync_dir(path.parent)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise RunError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Moments:
    """Per row id and statistic, over a config's runs one at a time: how many runs have the row,
    have the statistic computed (a cell not empty), and finite; the mean and the sum of squared
    deviations of the finite values. Mean as pandas' groupby computes it (a Kahan-compensated
    sum over the count), sd as its Welford update: the numbers aggregate.csv held when it was
    made by one groupby over every run at once."""

    def __init__(self, stats: list[str]) -> None:
        self.stats = stats
        self.keys: Any = None  # the row ids seen, in order (a pandas Index; a MultiIndex for several)
        self.rows = np.zeros(0)
        self.computed = self.n = self.sum = self.comp = self.mean = self.m2 = np.zeros((0, len(stats)))

    def _grow(self, k: int) -> None:
        extra = k - len(self.rows)
        self.rows = np.concatenate([self.rows, np.zeros(extra)])
        for name in ("computed", "n", "sum", "comp", "mean", "m2"):
            setattr(self, name, np.vstack([getattr(self, name), np.zeros((extra, len(self.stats)))]))

    def add(self, keys: pd.Index, values: np.ndarray, computed: np.ndarray) -> None:
        if self.keys is None:
            self.keys = keys[:0]
        new = keys.difference(self.keys, sort=False)
        if len(new):
            self.keys = self.keys.append(new)
            self._grow(len(self.keys))
        at = self.keys.get_indexer(keys)
        self.rows[at] += 1
        self.computed[at] += computed
        ok = np.isfinite(values)
        x = np.where(ok, values, 0.0)
        n, s, c, mean, m2 = (a[at] for a in (self.n, self.sum, self.comp, self.mean, self.m2))
        n1 = n + ok
        y = x - c
        t = s + y
        c = np.where(ok, t - s - y, c)
        s = np.where(ok, t, s)
        old = mean
        mean = np.where(ok, old + (x - old) / np.maximum(n1, 1), old)
        m2 = np.where(ok, m2 + (x - mean) * (x - old), m2)
        self.n[at], self.sum[at], self.comp[at], self.mean[at], self.m2[at] = n1, s, c, mean, m2

    def frame(self) -> pd.DataFrame:
        """seeds, then each statistic's _mean and _sd, as cells: empty where no run computed it
        (the sd: fewer than two), nan where none (two) of those that computed it were finite."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.n > 0, self.sum / self.n, np.nan)
            sd = np.sqrt(np.where(self.n > 1, self.m2 / (self.n - 1), np.nan))
        cols: dict[str, Any] = {"seeds": self.rows.astype(int)}
        for j, s in enumerate(self.stats):
            for part, v, need in (("mean", mean[:, j], 1), ("sd", sd[:, j], 2)):
                col = pd.Series(v, dtype=object)
                col[self.computed[:, j] < need] = ""
                cols[f"{s}_{part}"] = col
        return pd.DataFrame(cols)


def _read_run(path: Path, ids: list[str], stats: list[str]) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """A run's CSV as (row ids, its statistics as floats, whether each cell was computed): an
    empty cell is not computed, nan and inf are computed values that overflowed."""
    table = results.read_table(path, keep_empty=True)  # a regular file, bounded, as every result read back
    values = np.full((len(table), len(stats)), np.nan)
    computed = np.zeros((len(table), len(stats)), bool)
    for j, s in enumerate(stats):
        if s not in table:
            continue
        col = table[s]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            computed[:, j], values[:, j] = True, col.to_numpy(float)
            continue
        cells = ["nan" if isinstance(x, float) else str(x) for x in col]  # text: the column has empty cells
        computed[:, j] = [x != "" for x in cells]
        try:  # float() reads each cell exactly as written, nan and inf included
            values[:, j] = [float(x) if x != "" else np.nan for x in cells]
        except ValueError:
            raise Damaged(path.parent, f"column {s!r} of {path.name} holds values that are not numbers") from None
    keys = pd.MultiIndex.from_frame(table[ids]) if len(ids) > 1 else pd.Index(table[ids[0]])
    return keys, values, computed


def write_aggregate(plan: Plan, runs: list[_Finished], columns: list[str]) -> bool:
    """aggregate.csv: mean and sd (ddof 1) across seeds, per config per layer, over ok and
    diverged runs, of every statistic (the study's text columns aside), written config by config
    with one run's table in memory at a time. `seeds` counts the runs that reached the layer;
    non-finite values (a diverging layer) are left out of the mean and sd, and a statistic no
    run computed is an empty cell (nan: computed, and none finite). False when no run is done."""
    mod = studies.get(plan.study)
    ids = mod.ID_COLUMNS
    settings = results.setting_columns(plan.study, columns)
    skip = {"run", "status", *ids, *mod.TEXT_COLUMNS, *settings.values()}  # text (module names) has no mean
    stats = [c for c in columns if c not in skip]
    done = [r for r in runs if r.status in results.DONE and r.csv is not None]
    if not done:
        return False
    config = [f for f in settings if f != "seed"]
    with _streamed(plan.dir / "aggregate.csv") as out:
        first = True
        for _, group in itertools.groupby(done, key=lambda r: tuple(word(r.point.cfg.settings()[f]) for f in config)):
            members = list(group)  # a config's runs: its seeds, next to each other (expand: seeds fastest)
            moments = _Moments(stats)
            for r in members:
                assert r.csv is not None  # done runs have their CSV
                moments.add(*_read_run(r.csv, ids, stats))
            keys = moments.keys.to_frame(index=False) if len(ids) > 1 else pd.DataFrame({ids[0]: moments.keys})
            head = _config_columns(members[0].point)
            frame = pd.concat(
                [pd.DataFrame({settings[f]: [head[f]] * len(keys) for f in config}), keys, moments.frame()], axis=1
            )
            out.write(frame.to_csv(index=False, header=first, na_rep="nan", lineterminator="\n"))
            first = False
    return True


def aggregate(plan: Plan) -> None:
    """Write summary.csv and aggregate.csv from the runs on disk, run by run (bounded memory)."""
    runs = _finished(plan)
    if not runs:
        return
    write_summary(plan, runs)
    if not write_aggregate(plan, runs, summary_columns(plan, runs)):
        (plan.dir / "aggregate.csv").unlink(missing_ok=True)
