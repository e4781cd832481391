"""Runs: computed in memory, written to and read back from `<out>/<study>/<run-name>/`.

    run = compute(study, cfg); run.dir = new_run_dir(out, study, ...); write_run(run)

Every run, single or in a sweep, local, in a worker process or on Ray, goes through the same
two functions: `compute` (in memory; a failure of the run is recorded, not raised) and
`write_run` (the one writer of a run directory: config.yaml, meta.json, the study's CSV).

Every file is written to a temporary file in its own directory and moved into place with
os.replace, so a reader sees the old file or the new one, never half of one. meta.json is
written first with status `running` and last with the outcome, so it is the run's commit
record: a run whose meta.json says ok, diverged, failed or interrupted is finished.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

import pandas as pd

from bncli import __version__, studies
from bncli.config import MAX_FILE, NotRegular, TooLarge, read_bytes, read_yaml
from bncli.errors import BncliError, Damaged, RunError, first_line, not_a_field, not_one_of, show, word
from bncli.fields import Config, validate
from bncli.studies.base import Result, Summary

if TYPE_CHECKING:
    import torch
else:
    from bncli.lazy import lazy

    torch = lazy("torch")  # runs, show and compare only read files: they never load torch

STATUSES = ("running", "ok", "diverged", "failed", "interrupted")  # a run's, in meta.json
DONE = ("ok", "diverged")  # statuses a resumed sweep does not redo
FINISHED = ("ok", "diverged", "failed")  # runs that go into a sweep's summary.csv
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=,-]{0,199}$")


def check_name(name: str, flag: str = "--name") -> str:
    """A run name is one plain path component: it can never point outside its parent."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise BncliError(
            f"{flag}: {name!r} is not a valid name: use letters, digits and . _ + = , - "
            "(no '/', no '..', at most 200 characters)"
        )
    return name


def check_out(out: Path | str, flag: str = "--out") -> Path:
    """A results directory: plain (no '..'), a directory if it exists, and a path at all."""
    if "\x00" in str(out):  # click may pass it through; open() and mkdir() would raise ValueError
        raise BncliError(f"{flag}: {str(out)!r} holds a NUL byte, which no path can hold")
    out = Path(out)
    if ".." in out.parts:
        raise BncliError(
            f"{flag}: {str(out)!r} must not contain '..'; give the directory plainly or as an absolute path"
        )
    try:
        if out.exists() and not out.is_dir():
            raise RunError(f"{flag}: {out} exists and is not a directory")
    except OSError as e:  # a name over the system's limit, a loop of links
        raise RunError(f"{flag}: {out}: {e.strerror or e}") from None
    return out


def _write_error(path: Path, e: OSError) -> RunError:
    return RunError(f"cannot write {path}: {e.strerror or e}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp's 0600 would hide results from others


def _sync_dir(directory: Path) -> None:
    # the rename itself is only durable once the directory is on disk (a power cut, not a crash)
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write to a temporary file beside `path`, fsync it, then os.replace it into place.

    A reader (or a crash) sees the old file or the new one, never part of one. Any failure
    (disk full, no permission, interrupt) removes the temporary file and leaves `path` as it was.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _MODE)
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _sync_dir(path.parent)
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise _write_error(path, e) from None
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_csv(path: Path, table: pd.DataFrame, off: Sequence[str] = ()) -> None:
    """na_rep "nan": a diverged layer's statistics are written as nan; the `off` columns (not
    computed at all) as empty cells, so the two read differently."""
    if off:
        table = table.astype({c: object for c in off})
        table.loc[:, list(off)] = ""
    atomic_write(path, table.to_csv(index=False, na_rep="nan", lineterminator="\n"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


MAX_TABLE = 2**30  # a saved CSV is read up to this many bytes (a million-layer run writes ~300 MiB)


def read_file(path: Path, limit: int = MAX_FILE) -> bytes:
    """A saved file's bytes, bounded (config.read_bytes): one that is not a regular file (a FIFO,
    a link to /dev/zero) or is over `limit` is Damaged, naming its directory; never waited on."""
    path = Path(path)
    try:
        return read_bytes(path, limit)
    except (NotRegular, TooLarge) as e:
        raise Damaged(path.parent, f"{path.name} {e}") from None


def read_json(path: Path) -> Any:
    """meta.json's content (bounded, a regular file); ValueError where it is not JSON."""
    return json.loads(read_file(path))


def read_table(path: Path, keep_empty: bool = False, **options: Any) -> pd.DataFrame:
    """A CSV as written: empty cells and nan read as NaN, floats exactly as written; with
    `keep_empty`, an empty cell (not computed) stays "" apart from nan (computed, overflowed).
    `options` go to pandas' read_csv (usecols, dtype)."""
    # pandas 3 parses round-trip by default; older pandas needs asking
    exact: dict[str, Any] = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
    raw = read_file(path, MAX_TABLE)
    na = ["nan"] if keep_empty else ["nan", ""]
    try:
        return pd.read_csv(io.BytesIO(raw), keep_default_na=False, na_values=na, **exact, **options)
    except (ValueError, UnicodeDecodeError) as e:  # pandas' parser and empty-data errors are ValueErrors
        raise Damaged(Path(path).parent, f"{Path(path).name} is not a CSV table: {first_line(e)}") from None


def check_table(table: pd.DataFrame, csv: Path, columns: list[str], ids: list[str], text: list[str]) -> pd.DataFrame:
    """`table`, read from `csv`, if it has `columns`, numeric but for the `text` ones, and its
    row ids (`ids`) filled, the numeric ones whole numbers; else Damaged (naming the run or
    sweep directory, and what is wrong)."""
    path = csv.parent
    for c in columns:
        if c not in table.columns:
            raise Damaged(path, f"{csv.name} has no column {c!r}")
        numeric = pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
        if c not in text and not numeric and len(table):
            raise Damaged(path, f"column {c!r} of {csv.name} holds values that are not numbers")
        if c in ids and (table[c].isna().any() or (numeric and not (table[c] % 1 == 0).all())):
            raise Damaged(path, f"column {c!r} of {csv.name} must hold a whole number in every row")
    return table


_NONE = type(None)
META: dict[str, Any] = {  # the fields every run's meta.json has, and their types (a study's own: its INFO)
    "study": str,
    "status": str,
    "bncli_version": str | _NONE,
    "torch_version": str | _NONE,
    "python_version": str | _NONE,
    "device": str | _NONE,
    "device_name": str | _NONE,
    "dtype": str | _NONE,
    "seed": int | _NONE,
    "torch_threads": int | _NONE,
    "started_at": str | _NONE,
    "wall_seconds": float | _NONE,
    "git_commit": str | _NONE,
    "argv": list[str] | _NONE,
    "error": str | _NONE,
    "plot_error": str | _NONE,
}


def fits(v: Any, kind: Any) -> bool:
    """Does JSON value `v` have type `kind` (int, float, str, bool, None, unions, list[...], dict[...])?"""
    origin, args = get_origin(kind), get_args(kind)
    if kind is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(fits(v, a) for a in args)
    if kind is _NONE:
        return v is None
    if kind in (int, float):
        return isinstance(v, (int, float) if kind is float else int) and not isinstance(v, bool)
    if origin is list:
        return isinstance(v, list) and all(fits(x, args[0]) for x in v)
    if origin is dict:
        return isinstance(v, dict) and all(fits(a, args[0]) and fits(b, args[1]) for a, b in v.items())
    return isinstance(v, kind)


def check_meta(meta: Any, path: Path, info: dict[str, Any]) -> dict[str, Any]:
    """meta.json's content if every field bncli and the study (`info`) know has its type; else Damaged."""
    if not isinstance(meta, dict):
        raise Damaged(path, f"meta.json holds a {type(meta).__name__}, not a mapping")
    for key, kind in {**META, **info}.items():
        if key in meta and not fits(meta[key], kind):
            raise Damaged(path, f"meta.json: {key} is {show(meta[key])}, not of type {kind}")
    if meta.get("status", "running") not in STATUSES:
        raise Damaged(path, f"meta.json: status is {show(meta['status'])}, not one of {', '.join(STATUSES)}")
    return meta


@cache
def git_commit() -> str | None:
    """The commit of the bncli source tree, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def make_dir(path: Path, flag: str = "name") -> Path:
    """Create a new directory; an existing one is never reused. `flag` is how an error names the
    name that chose it: `name` (the API's argument) or `--name` (the command line's flag)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:  # a file in the way, no permission, a NUL in the path
        raise RunError(f"cannot create {path.parent}: {getattr(e, 'strerror', None) or e}") from None
    try:
        path.mkdir()
    except FileExistsError:
        raise BncliError(
            f"{flag}: {path} already exists; bncli never overwrites a run, choose another {flag}"
        ) from None
    except (OSError, ValueError) as e:
        raise RunError(f"cannot create {path}: {getattr(e, 'strerror', None) or e}") from None
    return path


def new_run_dir(out: Path | str, study: str, name: str | None, default: str, flags: bool = False) -> Path:
    """<out>/<study>/<name>. Explicit names must be new; default names get a -2, -3... suffix.
    Errors name `out` and `name` as the API's arguments, or with flags=True as --out and --name."""
    parent = check_out(out, "--out" if flags else "out") / study
    if name is not None:
        flag = "--name" if flags else "name"
        return make_dir(parent / check_name(name, flag), flag)
    for k in range(1, 1000):
        candidate = parent / (default if k == 1 else f"{default}-{k}")
        if not candidate.exists():
            try:
                return make_dir(candidate)
            except RunError:  # the disk refused: no other name will do better
                raise
            except BncliError:  # lost a race with a parallel run: try the next suffix
                continue
    raise RunError(f"cannot find a free run name under {parent}")


def base_meta(study: str, cfg: Config, device: torch.device) -> dict:
    settings = cfg.settings()  # every study's config has dtype, seed and device fields
    dev = str(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    return {
        "study": study,
        "status": "running",
        "bncli_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": dev,
        "device_name": name,
        "dtype": settings["dtype"],
        "seed": settings["seed"],
        "torch_threads": torch.get_num_threads(),  # speed only: the numbers do not depend on it
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": None,
        "git_commit": git_commit(),
        "argv": sys.argv[1:] if sys.argv and "pytest" not in sys.argv[0] else None,
        "error": None,
    }


@dataclass
class Run:
    """One run of a study: what the Python API returns and what `bncli show` reads back.

    `meta` is meta.json's content (status, versions, device, timings and the study's own
    fields); `settings` is config.yaml's. `dir` is set once the run is on disk.
    """

    study: str
    settings: dict[str, Any]
    meta: dict[str, Any]
    result: Result | None = None  # None: failed, or interrupted before any result
    cfg: Config | None = None  # the validated config (None when read back from files)
    dir: Path | None = None
    out_of_memory: bool = field(default=False, repr=False)
    stop_asked: bool = field(default=False, repr=False)  # a signal came while its files were written

    @property
    def status(self) -> str:
        return self.meta.get("status", "running")

    @property
    def table(self) -> pd.DataFrame | None:
        return None if self.result is None else self.result.table

    @property
    def info(self) -> dict[str, Any]:
        """The study's own outcome fields (diverged_at, shapes, ...), as in meta.json."""
        return {} if self.result is None else self.result.info

    def to_dict(self) -> dict[str, Any]:
        """The run as one JSON-ready document: a number that is not finite (a diverged layer, an
        off statistic) is None, and `status` says why a run stopped."""
        rows = (
            []
            if self.table is None
            else [{k: json_value(v) for k, v in row.items()} for row in self.table.to_dict(orient="records")]
        )
        return {
            "study": self.study,
            "status": self.status,
            "dir": None if self.dir is None else str(self.dir),
            "settings": self.settings,
            "info": {k: json_value(v) for k, v in self.info.items()},
            "rows": rows,
        }

    def save(self, out: Path | str = "results", name: str | None = None) -> Path:
        """Write this run under `out` as `bncli` would (a new directory); returns it."""
        if self.dir is not None:
            raise BncliError(f"this run is already saved in {self.dir}")
        if self.cfg is None:
            raise BncliError("only a computed run can be saved")
        self.dir = new_run_dir(out, self.study, name, default_name(self.study, self.cfg))
        write_run(self)
        return self.dir


def short(name: str, limit: int = 120) -> str:
    """A generated name within file-name limits: a long one keeps its start and a hash of the rest."""
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):  # numpy scalars
        return json_value(v.item())
    return v


def default_name(study: str, cfg: Config) -> str:
    return short(f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{studies.get(study).label(cfg)}")


def _out_of_memory(e: BaseException) -> bool:
    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def failed(study: str, cfg: Config, error: str) -> Run:
    """A run that failed before it could start (a Ray task whose worker died, a device missing
    on the node that took it): the device is the one asked for."""
    settings = cfg.settings()
    meta = base_meta(study, cfg, torch.device("cpu"))
    meta.update(status="failed", error=error, device=settings["device"], device_name=None, torch_threads=None)
    return Run(study, settings, meta, cfg=cfg)


def compute(
    study: str,
    cfg: Config,
    device: torch.device | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[Run], None] | None = None,
) -> Run:
    """Run one study in memory. Never raises for a failure of the run itself: the Run says
    failed (with the error's first line) or interrupted, with what was computed.

    `device`: from the study's preflight; None runs the preflight here and records its refusal
    as a failure (a Ray task, on whatever node took it). `on_start(run)` is called once the
    run's meta exists and before the study starts: a single run writes its first files there.
    """
    mod = studies.get(study)
    if device is None:
        try:
            device = mod.preflight(cfg)
        except BncliError as e:
            return failed(study, cfg, first_line(e))
    run = Run(study, cfg.settings(), base_meta(study, cfg, device), cfg=cfg)
    if on_start is not None:
        on_start(run)
    t0 = time.perf_counter()
    try:
        run.result = mod.run(cfg, device, progress)
    except KeyboardInterrupt:  # outside the study's own loop: nothing computed to keep
        run.meta["status"] = "interrupted"
    except Exception as e:  # noqa: BLE001 - recorded: the caller decides whether it stops
        run.meta.update(status="failed", error=first_line(e))
        run.out_of_memory = _out_of_memory(e)
    run.meta["wall_seconds"] = round(time.perf_counter() - t0, 6)
    if run.result is not None:
        run.meta.update(status=run.result.status, **run.result.info)
    return run


def write_run(run: Run) -> None:
    """The one writer of a run directory (`run.dir`, which exists).

    A running run gets config.yaml and meta.json saying running. A finished one gets those
    first if it has not (it was computed elsewhere), then its CSV, then meta.json last: a run
    is finished once meta.json says so. When the disk refuses (full, read-only) after the run
    has started, the run is recorded failed if it still can be, and RunError is raised.
    """
    mod = studies.get(run.study)
    d = run.dir
    assert d is not None  # the caller sets it first
    try:
        if run.status == "running" or not (d / "config.yaml").exists():
            assert run.cfg is not None  # runs are written as computed (with their cfg), never as read back
            atomic_write(d / "config.yaml", run.cfg.to_yaml(run.study))  # `study:` first: a --config that says whose
            write_json(d / "meta.json", {**run.meta, "status": "running"})
        if run.status == "running":
            return
        if run.result is not None:
            for name, extra in run.result.files.items():  # before the study's CSV: a finished run has them all
                write_csv(d / name, extra)
            write_csv(d / mod.CSV, run.result.table, run.result.off)
            if mod.RUN_PLOT and len(run.result.table):  # unlabelled: the one run's own lines
                table = run.result.table
                try:
                    # pandas-stubs types a list column as scalars only; pandas takes one of tuples
                    unlabelled = table.assign(label="", parts=[()] * len(table), seed=0)  # type: ignore[list-item]
                    write_plot(d / mod.PLOT, run.study, unlabelled)
                except Exception as e:  # noqa: BLE001 - a plot that cannot be drawn loses no result
                    run.meta["plot_error"] = first_line(e)
        write_json(d / "meta.json", run.meta)
    except RunError as e:
        if run.status == "running":
            raise  # nothing ran yet: the caller removes the directory
        run.meta.update(status="failed", error=str(e))
        try:
            write_json(d / "meta.json", run.meta)
        except RunError:
            pass  # meta.json still says running: the run is not mistaken for a finished one
        raise


def write_plot(path: Path, study: str, table: pd.DataFrame, metric: str | None = None, opts=None) -> Path:
    """The study's `draw` of a labelled table (following a figures.Options), rendered in memory
    as PNG, SVG or PDF by `path`'s extension and written with atomic_write: a reader never sees
    half a file. matplotlib loads here, on first use: nothing else needs it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bncli.figures import Options

    fig = studies.get(study).draw(plt, table, metric, opts or Options())
    try:
        data = io.BytesIO()
        fig.savefig(data, format=Path(path).suffix.lower().lstrip(".") or "png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write(path, data.getvalue())
    return path


# -- reading back -------------------------------------------------------------------------------


def _study_of(value: Any, where: Path) -> str:
    if not isinstance(value, str) or studies.ALIASES.get(value, value) not in studies.REGISTRY:
        raise BncliError(f"{where}: study: expected one of {', '.join(studies.names())}, got {show(value)}")
    return studies.ALIASES.get(value, value)


def open_run(path: Path, table: bool = True) -> Run:
    """A saved run directory, from its files only (its table None when it has no CSV); files
    that are not as bncli writes them are Damaged. With table=False the CSV is only checked to be
    a regular file, not read: what `bncli runs` shows of a run is in meta.json and config.yaml."""
    path = Path(path)
    if not (path / "meta.json").exists():  # exists, not is_file: a FIFO meta.json is damaged, not absent
        raise BncliError(f"{path}: not a run or sweep directory (no meta.json or sweep.yaml)")
    try:
        meta = read_json(path / "meta.json")
    except ValueError as e:
        raise Damaged(path, f"meta.json is not valid JSON: {first_line(e)}") from None
    study = _study_of(meta.get("study") if isinstance(meta, dict) else None, path / "meta.json")
    mod = studies.get(study)
    meta = check_meta(meta, path, mod.INFO)
    settings = read_yaml(path / "config.yaml", "config.yaml", saved=True) or {}
    settings = {k: v for k, v in settings.items() if k != "study"} if isinstance(settings, dict) else {}
    csv = path / mod.CSV
    result = None
    if not table:
        if csv.exists() and not csv.is_file():  # a FIFO or a device: damaged, whoever reads it next
            raise Damaged(path, f"{mod.CSV} is not a regular file")
    elif csv.exists():
        checked = check_table(read_table(csv), csv, mod.columns(settings), mod.ID_COLUMNS, mod.TEXT_COLUMNS)
        result = Result(checked, meta.get("status", "running"))
    return Run(study, settings, meta, result, dir=path)


@dataclass
class SavedSweep:
    dir: Path
    study: str
    keys: list[str]  # the grid's fields, in file order
    table: pd.DataFrame  # summary.csv

    @property
    def settings(self) -> dict[str, str]:
        """summary.csv's setting columns, by field (setting_columns)."""
        return setting_columns(self.study, self.table.columns)

    def configs(self) -> list[ConfigSummary]:
        """One summary per config of the grid, in the sweep's order: its runs, failed runs and
        the study's SUMMARY numbers over its finished (ok and diverged) runs."""
        mod = studies.get(self.study)
        cols = [self.settings.get(k, k) for k in self.keys]
        groups = self.table.groupby(cols, sort=False, dropna=False) if cols else [((), self.table)]
        out = []
        for values, g in groups:
            runs = g.groupby("run", sort=False) if "run" in g else g.groupby("seed", sort=False)
            done = [r for _, r in runs if r["status"].iloc[0] in DONE]
            failed = sum(r["status"].iloc[0] == "failed" for _, r in runs)
            key = values if isinstance(values, tuple) else (values,)
            out.append(ConfigSummary(key, runs.ngroups, failed, mod.summarize(done)))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The sweep as one JSON-ready document: its configs' summary numbers and summary.csv's rows."""
        from bncli import report

        rows = self.table.to_dict(orient="records")
        configs = [
            {
                "settings": {k: json_value(v) for k, v in zip(self.keys, c.values, strict=True)},
                "seeds": c.seeds,
                "failed": c.failed,
                "summary": {name: report.json_number(v) for name, v in c.summary.items()},
            }
            for c in self.configs()
        ]
        return {
            "study": self.study,
            "dir": str(self.dir),
            "keys": self.keys,
            "configs": configs,
            "rows": [{k: json_value(v) for k, v in r.items()} for r in rows],
        }


@dataclass(frozen=True)
class ConfigSummary:
    """One config of a sweep: its grid values (as summary.csv holds them), its runs (seeds), how
    many failed, and the study's summary of the finished ones."""

    values: tuple[Any, ...]
    seeds: int
    failed: int
    summary: Summary


def setting_column(field: str, stats: Any) -> str:
    """The name of setting `field` in a sweep table beside the statistics `stats`: itself, or
    `cfg.FIELD` where a statistic has its name (the depth study's erank: the flag and the value)."""
    return f"cfg.{field}" if field in stats else field


def setting_columns(study: str, columns: Any) -> dict[str, str]:
    """A sweep table's setting columns by field: each field of the study's config that the table
    has, in the config's order, named as itself or, where a statistic has its name (the depth
    study's erank: the flag and the value), `cfg.` and the field."""
    cols = set(columns)
    return {
        f: f"cfg.{f}" if f"cfg.{f}" in cols else f
        for f in studies.get(study).CONFIG.FIELDS
        if f in cols or f"cfg.{f}" in cols
    }


def is_sweep(path: Path) -> bool:
    # exists, not is_file: a sweep whose sweep.yaml is a FIFO is a damaged sweep, refused by read_yaml
    return (Path(path) / "sweep.yaml").exists()


def open_sweep(path: Path) -> SavedSweep:
    """A saved sweep, from its files only."""
    path = Path(path)
    if not (path / "summary.csv").exists():
        raise BncliError(f"{path}: no summary.csv yet (has any run finished? try bncli sweep --resume)")
    data = read_yaml(path / "sweep.yaml")
    data = data if isinstance(data, dict) else {}
    study = _study_of(data.get("study"), path / "sweep.yaml")
    keys = list(data.get("grid") or {}) if isinstance(data.get("grid"), dict) else []
    csv = path / "summary.csv"
    mod = studies.get(study)
    _check_readable(csv)
    table = read_table(csv)
    grid = [setting_column(k, mod.COLUMNS) for k in keys]
    return SavedSweep(
        path,
        study,
        keys,
        check_table(
            table, csv, ["run", "status", *grid, *mod.ID_COLUMNS], [], ["run", "status", *grid, *mod.TEXT_COLUMNS]
        ),
    )


SUMMARY_BYTES = 4  # bytes in memory per byte of summary.csv, read as a table (measured: 2.2 to 3.2)


def _check_readable(csv: Path) -> None:
    """A summary.csv is read whole (show groups it by config): one that would not fit in this
    process's memory is refused up front, not a MemoryError (the sweep wrote it run by run)."""
    from bncli.runtime import check_fits

    try:
        size = csv.stat().st_size
    except OSError:
        return  # read_table names what is wrong
    check_fits(
        torch.device("cpu"),
        SUMMARY_BYTES * size,
        f"reading {csv} ({size / 2**30:.1f} GiB) as a table",
        f"its aggregate.csv (per config per layer) or the runs under {csv.parent / 'runs'}",
    )


# -- listing -------------------------------------------------------------------------------------

LISTED = (*STATUSES, "damaged")  # what `bncli runs` says of a run: its status, or that its files are damaged


@cache
def defaults(study: str) -> dict[str, Any]:
    """The study's default settings (built once: a listing of 10,000 runs asks for them 10,000 times)."""
    return studies.get(study).CONFIG().settings()


def changed_settings(run: Run) -> dict[str, Any]:
    """The run's settings that differ from its study's defaults, in config.yaml's order: what
    `bncli runs`, `bncli show` and `bncli compare` say about a run. Keys the study no longer
    has (a file from an older bncli) are left out: they have no default to differ from."""
    cls = studies.get(run.study).CONFIG
    known = defaults(run.study)
    changed = {k: v for k, v in run.settings.items() if k in known and not _unchanged(known[k], v)}
    follows = [k for k in changed if cls.FIELDS[k].default is None]  # residual: 1 for a resnet, 0 for an mlp
    if follows:  # at the default its other settings give it (given explicitly or not): not a change
        try:
            own = validate(cls, {k: v for k, v in run.settings.items() if k in known and k not in follows})
        except BncliError:  # settings an older bncli wrote: compare them as they are
            return changed
        resolved = own.settings()
        changed = {k: v for k, v in changed.items() if k not in follows or not _unchanged(resolved[k], v)}
    return changed


def _unchanged(a: Any, b: Any) -> bool:
    """Equal as settings: a tuple default and the list config.yaml reads back, 1 and 1.0."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_unchanged(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def settings_line(run: Run) -> str:
    """`settings: init=normal norm=none depth=30`, or `settings: defaults`."""
    changed = changed_settings(run)
    return "settings: " + (" ".join(f"{k}={word(v)}" for k, v in changed.items()) or "defaults")


def settings_text(entry: dict[str, Any]) -> str:
    """A listing entry's settings as `bncli runs` shows them: `dims=2x2 init=normal` for a run
    (a list as `word` writes it, as show and plot titles do), `depth=10,20` for a sweep's grid
    (its values, comma-separated)."""
    if entry["kind"] == "sweep":
        return " ".join(f"{k}={','.join(word(v) for v in vs)}" for k, vs in entry["settings"].items())
    return " ".join(f"{k}={word(v)}" for k, v in entry["settings"].items())


def parse_where(items: list[str]) -> dict[str, list[str]]:
    """`--where KEY=VALUE` filters (bncli runs, bncli plot) as KEY -> the values it may take:
    a key given twice matches either value."""
    wanted: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BncliError(f"--where: expected KEY=VALUE, got {show(item)}")
        wanted.setdefault(key, []).append(value)
    return wanted


def typed(study: str, key: str, value: Any) -> Any:
    """A `--where` value as the study's field `key` holds it: text read as a config file reads it
    (`2.0` the number, `2,2` a list where the field is one), then the field's own reading;
    BncliError where it is not one of the field's choices."""
    from bncli.config import loads

    f = studies.get(study).CONFIG.FIELDS[key]
    if isinstance(value, str):
        try:
            value = loads(value, "--where", f"{key}={value}") if value.strip() else value
        except BncliError:
            pass  # text YAML cannot read is text
    if f.parse is not None:
        try:
            value = f.parse(value)
        except ValueError as e:
            raise BncliError(f"--where: {key}={show(value)}: {key} {e}") from None
    value = getattr(value, "value", value)
    words = f.words()
    if words is not None and not isinstance(value, list) and value not in words:
        raise BncliError(f"--where: {key}: {not_one_of(value, words)}")
    return value


def _wanted(where: Any) -> dict[str, list[Any]]:
    if isinstance(where, dict):
        return {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in where.items()}
    return {k: list(vs) for k, vs in parse_where(list(where)).items()}


def _same(a: Any, b: Any) -> bool:
    """Settings equal as values: 2 and 2.0, [2] and [2]; text only as the same text."""
    if isinstance(a, list) or isinstance(b, list):
        a, b = (a if isinstance(a, list) else [a]), (b if isinstance(b, list) else [b])
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b or word(a) == word(b)


def filters(*, study: str | None = None, status: str | None = None, where: Any = ()):
    """A check of listing entries (select's), built once: the study, status and `where` keys and
    values are checked against what bncli knows first, and a typo is refused in one line naming
    the valid ones (`--where nope=1`, `--status okk`, `--study depth`), never an empty listing."""
    if study is not None and study not in studies.REGISTRY:
        if studies.ALIASES.get(study) not in studies.REGISTRY:
            raise BncliError(f"--study: {not_one_of(study, studies.names())}")
        study = studies.ALIASES[study]
    if status is not None and status not in LISTED:
        raise BncliError(f"--status: {not_one_of(status, LISTED)}")
    wanted = _wanted(where)
    values = _where_values(study, wanted)

    def keep(entry: dict[str, Any]) -> bool:
        if study is not None and entry["study"] != study:
            return False
        if status is not None and status not in entry["status"].replace(",", " ").split():
            return False
        if not wanted:
            return True
        own = values.get(entry["study"] or "")
        if own is None or set(own) != set(wanted):  # a study without one of the keys, or damaged
            return False
        resolved = resolved_settings(entry)
        return all(
            any(_has(resolved.get(k), v, entry["kind"] == "sweep" and k in entry["settings"]) for v in vs)
            for k, vs in own.items()
        )

    return keep


def _where_values(study: str | None, wanted: dict[str, list[Any]]) -> dict[str, dict[str, list[Any]]]:
    """study -> key -> the typed values `wanted` asks of it; BncliError for a key no study (or
    not `study`) has, or a value its field cannot take in any study that has it."""
    owners = [study] if study is not None else studies.names()
    keys = list(dict.fromkeys(k for s in owners for k in studies.get(s).CONFIG.FIELDS))
    values: dict[str, dict[str, list[Any]]] = {}
    for key, given in wanted.items():
        if key not in keys:
            raise BncliError(f"--where: {show(key)} is {not_a_field(key, study or 'any study', keys, 'setting')}")
        errors = []
        for s in owners:
            if key in studies.get(s).CONFIG.FIELDS:
                try:
                    values.setdefault(s, {})[key] = [typed(s, key, v) for v in given]
                except BncliError as e:
                    errors.append(e)
        if errors and not any(key in v for v in values.values()):
            raise errors[0]
    return values


def _has(got: Any, value: Any, alternatives: bool) -> bool:
    if alternatives:  # a sweep's grid key: its values as words, one of them the wanted one
        return any(g == word(value) for g in got)
    return _same(got, value)


def resolved_settings(entry: dict[str, Any]) -> dict[str, Any]:
    """Every setting of a listed run (its study's defaults and those that differ); a sweep's base
    settings likewise, its grid keys as the lists of words they take."""
    return {**defaults(entry["study"]), **getattr(entry, "base", {}), **entry["settings"]}


def select(
    entries: list[dict[str, Any]], *, study: str | None = None, status: str | None = None, where: Any = ()
) -> list[dict[str, Any]]:
    """The entries of list_runs of `study`, with `status` (a sweep: holding a run with it), and
    matching every `where` filter: KEY=VALUE strings (bncli runs --where) or a mapping of key to
    one value or a list of them; a key given twice, or a list, matches either value. Values are
    compared with each run's resolved settings (its defaults too), as typed values: `init_std=2`
    matches `init_std: 2.0`. An unknown study, status, key or value is refused (BncliError)."""
    keep = filters(study=study, status=status, where=where)
    return [e for e in entries if keep(e)]


def holds_runs(out: Path | str) -> bool:
    """Whether `out` holds any run or sweep, found without listing them all."""
    out = Path(out)
    return any(m.parent.parent.name != "sweeps" for m in out.glob("*/*/meta.json")) or any(
        out.glob("sweeps/*/sweep.yaml")
    )


def list_runs(out: Path | str = "results") -> list[dict[str, Any]]:
    """Every run and sweep under `out`, newest first: kind, study, name (its path under out),
    status, start time, wall time and the settings that differ from the study's defaults (a
    sweep's: its grid keys). Only meta.json and config.yaml are read (a sweep's: sweep.yaml and
    its runs' meta.json): a run whose files cannot be read is listed as `damaged`."""
    out = Path(out)
    found = []
    for meta in sorted(out.glob("*/*/meta.json")):
        if meta.parent.parent.name == "sweeps":
            continue
        found.append(_run_entry(meta.parent, out))
    for spec in sorted(out.glob("sweeps/*/sweep.yaml")):
        found.append(_sweep_entry(spec.parent, out))
    return sorted(found, key=lambda e: e["started"] or "", reverse=True)


class Entry(dict):
    """One listed run or sweep: a plain dict (what --format json prints), and for a sweep, as an
    attribute, the base settings --where compares its keys outside the grid with."""

    base: dict[str, Any] = {}


def _entry(kind: str, study: str | None, name: str) -> Entry:
    return Entry(
        {
            "kind": kind,
            "study": study,
            "name": name,
            "status": "damaged",
            "started": None,
            "wall_seconds": None,
            "settings": {},
        }
    )


def _run_entry(path: Path, out: Path) -> dict[str, Any]:
    entry = _entry("run", path.parent.name, str(path.relative_to(out)))
    try:
        run = open_run(path, table=False)
        entry.update(
            study=run.study,
            status=run.status,
            started=run.meta.get("started_at"),
            wall_seconds=run.meta.get("wall_seconds"),
            settings=changed_settings(run),
        )
    except (BncliError, OSError):  # damaged (BncliError) or unreadable: listed as damaged
        pass
    return entry


def _sweep_entry(path: Path, out: Path) -> dict[str, Any]:
    entry = _entry("sweep", None, str(path.relative_to(out)))
    try:
        data = read_yaml(path / "sweep.yaml", "sweep.yaml", saved=True)
        if not isinstance(data, dict):
            raise Damaged(path / "sweep.yaml", f"it holds a {type(data).__name__}, not a sweep's mapping")
        grid = data.get("grid") or {}
        if not isinstance(grid, dict) or not all(isinstance(vs, list) for vs in grid.values()):
            raise Damaged(path / "sweep.yaml", "its grid is not a mapping of field: [values]")
        for name in ("summary.csv", "aggregate.csv"):  # not read here; a FIFO would hang show and plot
            if (path / name).exists() and not (path / name).is_file():
                raise Damaged(path, f"{name} is not a regular file")
        base = data.get("base") or {}
        study = _study_of(data.get("study"), path / "sweep.yaml")
        runs = [_run_entry(m.parent, path / "runs") for m in sorted((path / "runs").glob("*/meta.json"))]
        counts = {
            s: sum(r["status"] == s for r in runs)
            for s in ("ok", "diverged", "failed", "interrupted", "running", "damaged")
        }
        starts = [r["started"] for r in runs if r["started"]]
        entry.update(
            study=study,
            started=min(starts, default=None),
            wall_seconds=round(sum(r["wall_seconds"] or 0 for r in runs), 6),
            status=", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no run yet",
            settings={k: [word(v) for v in vs] for k, vs in grid.items()},
        )
        if isinstance(base, dict):  # what --where compares a sweep's other settings with; not listed
            entry.base = {k: v for k, v in base.items() if k in defaults(study)}
    except (BncliError, OSError):  # damaged (BncliError) or unreadable: listed as damaged
        pass
    return entry
