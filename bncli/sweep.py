"""Sweeps: one study over a grid of settings times seeds, aggregated into one table and one plot.

    bncli sweep configs/sweeps/init_vs_norm.yaml

Every grid point is validated by the study's own config model before anything runs. Runs go
to `<out>/sweeps/<name>/runs/<run-name>/`, each written exactly as a single run would be, then
summary.csv (long: one row per run per layer), aggregate.csv (mean and sd over seeds) and a
plot. A run's meta.json is its commit record, so `resume` redoes only runs that never said
ok or diverged. Computing and writing are separate steps: workers compute, the parent writes.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from bncli import config as cfgmod
from bncli import results
from bncli.choices import Study
from bncli.errors import BncliError, RunError

SWEEPS = "sweeps"
FINISHED = ("ok", "diverged", "failed")  # runs that go into summary.csv
PLOT = {"depth-study": "std_by_layer.png", "running-stats": "running_stats.png",
        "running-stats-convergence": "convergence.png"}
ID_COLUMNS = {"depth-study": ["layer"], "running-stats": ["iteration", "channel"],
              "running-stats-convergence": ["iteration", "estimator", "channel"]}


def _none_is_empty(v: Any) -> Any:
    return {} if v is None else v


class SweepFile(BaseModel):
    """The sweep file: a study, base settings, a grid of field -> values, and seeds."""

    model_config = ConfigDict(extra="forbid")

    study: Study
    name: Optional[str] = None  # default: the file's stem
    base: Annotated[dict[str, Any], BeforeValidator(_none_is_empty)] = {}
    grid: Annotated[dict[str, Annotated[list[Any], Field(min_length=1)]], BeforeValidator(_none_is_empty)] = {}
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


@dataclass
class Outcome:
    dir: Path
    status: dict[str, str]  # run name -> status, for runs that ran or were already done
    errors: dict[str, str] = field(default_factory=dict)  # run name -> error, for failed runs
    skipped: int = 0  # runs already done when resuming
    interrupted: bool = False
    stopped: bool = False  # --fail-fast stopped the sweep
    plot: Path | None = None

    @property
    def failed(self) -> int:
        return sum(s == "failed" for s in self.status.values())


def _file_error(err: ValidationError, path: Path) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown key; accepted keys: {', '.join(SweepFile.model_fields)}")
            continue
        got = e.get("input")
        shown = f" (got {cfgmod.show(got)})" if got is not None and not isinstance(got, (dict, list)) else ""
        parts.append(f"{loc}: {str(e['msg']).removeprefix('Value error, ')}{shown}")
    return f"{path}: " + "; ".join(parts)


def word(v: Any) -> str:
    """A grid value as it appears in run names and summary columns."""
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


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._+-" else "_" for c in text)


def run_name(values: dict[str, Any]) -> str:
    return ",".join(f"{k}={_safe(word(v))}" for k, v in values.items())


def expand(grid: dict[str, list], seeds: list) -> list[dict[str, Any]]:
    """The cartesian product of the grid (first key slowest), each point times every seed."""
    keys = list(grid)
    return [{**dict(zip(keys, combo, strict=True)), "seed": s}
            for combo in itertools.product(*grid.values()) for s in seeds]


def plan(path: Path, out: Path, name: str | None = None) -> Plan:
    """Read and check a sweep file. Any bad value raises BncliError; nothing is written."""
    data = cfgmod.read_yaml(path, "sweep file")
    try:
        spec = SweepFile.model_validate(data if data is not None else {})
    except ValidationError as e:
        raise BncliError(_file_error(e, path)) from None
    study = spec.study.value
    cls = cfgmod.CONFIGS[study]
    for where, keys in (("grid", spec.grid), ("base", spec.base)):
        if "seed" in keys:
            raise BncliError(f"{path}: {where}.seed: put seeds in the `seeds` list, not in {where}")
        unknown = [k for k in keys if k not in cls.model_fields]
        if unknown:
            raise BncliError(f"{path}: {where}.{unknown[0]}: unknown field for {study}; "
                             f"accepted fields: {', '.join(f for f in cls.model_fields if f != 'seed')}")
    words = [word(s) for s in spec.seeds]
    dupes = {w for w in words if words.count(w) > 1}
    if dupes:
        raise BncliError(f"{path}: seeds: each seed once, got {', '.join(sorted(dupes))} more than once")
    for key, values in spec.grid.items():
        words = [word(v) for v in values]
        if len(set(words)) != len(words):
            raise BncliError(f"{path}: grid.{key}: each value once, got {cfgmod.show(values)}")

    sweep_name = results.check_name(name or spec.name or Path(path).stem, "--name" if name else "name")
    out = results.check_out(out)
    points = []
    for values in expand(spec.grid, spec.seeds):
        rname = results.check_name(run_name(values), "grid")
        try:
            cfg = cfgmod.validate(cls, {**spec.base, **values})
        except BncliError as e:
            raise BncliError(f"{path}: run {rname}: {e}") from None
        points.append(Point(rname, values, cfg))
    return Plan(study, sweep_name, out / SWEEPS / sweep_name, Path(path).read_text(encoding="utf-8"),
                list(spec.grid), points)


# -- running ------------------------------------------------------------------------------------

def _compute(study: str, cfg) -> tuple[Any, dict]:
    """One run in memory: (Result or None, meta). A failing run is returned, not raised."""
    from bncli import studies

    device = studies.get(study).preflight(cfg)
    meta = results.base_meta(study, cfg, device)
    try:
        result = results.compute(study, cfg, device, meta)
    except Exception:  # noqa: BLE001 - compute recorded it in meta: the sweep goes on
        result = None
    return result, meta


def _worker_init(threads: int) -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.set_num_threads(threads)


def _work(task: tuple[str, str, Any]) -> tuple[str, Any, dict]:
    study, name, cfg = task
    return (name, *_compute(study, cfg))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run(plan: Plan, resume: bool = False, fail_fast: bool = False, workers: int = 1,
        progress: Callable[[int, int, str | None], None] | None = None, ray=None) -> Outcome:
    """Run a planned sweep; progress(done, total, current_run) is called as runs start and end.

    `ray` (a ray_backend.RayOptions) sends each run to Ray as one task instead of running here.

    Ctrl-C keeps finished runs, marks the current one interrupted, still writes summary.csv
    and aggregate.csv for what finished, and returns with `interrupted` set.
    """
    from bncli import studies

    if workers < 1:
        raise BncliError(f"--workers: must be at least 1, got {workers}")
    if ray is not None:
        from bncli import ray_backend

        if workers != 1:
            raise BncliError("--workers: applies to --backend local; with --backend ray use --cpus-per-run")
        ray_backend.import_ray()  # a missing extra is a usage error, before any directory exists
    mod = studies.get(plan.study)
    # device and size checks before any directory exists; on Ray each task checks on its own
    # node, since the driver may well have no GPU
    devices = {p.name: mod.preflight(p.cfg) for p in plan.points} if ray is None else {}
    given = plan.dir / "sweep.yaml"
    if plan.dir.exists():
        if not resume:
            raise BncliError(f"{plan.dir} already exists; add --resume to finish that sweep, "
                             "or give another --name")
        if given.exists() and given.read_text(encoding="utf-8") != plan.text:
            raise BncliError(f"--resume: {given} differs from the sweep file given; resume with the "
                             "same file, or start a new sweep with another --name")
    runs = plan.dir / "runs"
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create {runs}: {e.strerror or e}") from None
    if not given.exists():
        results.atomic_write(given, plan.text)

    outcome = Outcome(plan.dir, {})
    todo = []
    for p in plan.points:
        meta_path = runs / p.name / "meta.json"
        status = _status(meta_path)
        if resume and status in results.DONE:
            outcome.status[p.name] = status
            continue
        if (runs / p.name).exists():  # unfinished (running, interrupted, failed): redo it
            shutil.rmtree(runs / p.name)
        todo.append(p)
    outcome.skipped = len(plan.points) - len(todo)
    total = len(plan.points)
    tick = progress or (lambda done, total, current: None)
    tick(outcome.skipped, total, None)

    try:
        if ray is not None and todo:
            from bncli import ray_backend

            store = functools.partial(_store, plan, outcome)
            ray_backend.run(plan, todo, outcome, fail_fast, tick, store, ray)
        elif workers == 1 or not todo:
            _sequential(plan, todo, devices, outcome, fail_fast, tick)
        else:
            _pool(plan, todo, outcome, fail_fast, workers, tick)
    except KeyboardInterrupt:
        outcome.interrupted = True
    aggregate(plan)
    outcome.plot = _plot(plan)
    return outcome


def _status(meta_path: Path) -> str | None:
    try:
        return results.read_json(meta_path).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _record(plan: Plan, outcome: Outcome, name: str, meta: dict) -> None:
    outcome.status[name] = meta["status"]
    if meta["status"] == "failed":
        outcome.errors[name] = meta.get("error") or "failed"


def _sequential(plan: Plan, todo: list[Point], devices: dict, outcome: Outcome, fail_fast: bool,
                tick) -> None:
    from bncli import studies

    mod = studies.get(plan.study)
    total = len(plan.points)
    for p in todo:
        tick(len(outcome.status), total, p.name)
        run_dir = results.make_dir(plan.dir / "runs" / p.name)
        meta = results.base_meta(plan.study, p.cfg, devices[p.name])
        result = None
        try:
            results.write_start(run_dir, p.cfg, meta)
            try:
                result = results.compute(plan.study, p.cfg, devices[p.name], meta)
            except Exception:  # noqa: BLE001 - recorded in meta as failed: the sweep goes on
                result = None
            results.write_result(run_dir, mod.CSV, result, meta)
        except KeyboardInterrupt:  # outside the study's own loop: keep the mark, then stop
            meta["status"] = "interrupted"
            results.write_result(run_dir, mod.CSV, result, meta)
            raise
        _record(plan, outcome, p.name, meta)
        tick(len(outcome.status), total, p.name)
        if meta["status"] == "interrupted":
            raise KeyboardInterrupt
        if meta["status"] == "failed" and fail_fast:
            outcome.stopped = True
            return


def _store(plan: Plan, outcome: Outcome, p: Point, result, meta: dict) -> None:
    """Write a run computed elsewhere (a pool worker, a Ray task): the parent writes every file."""
    from bncli import studies

    run_dir = results.make_dir(plan.dir / "runs" / p.name)
    results.write_start(run_dir, p.cfg, {**meta, "status": "running"})
    results.write_result(run_dir, studies.get(plan.study).CSV, result, meta)
    _record(plan, outcome, p.name, meta)


def _pool(plan: Plan, todo: list[Point], outcome: Outcome, fail_fast: bool, workers: int, tick) -> None:
    import multiprocessing as mp

    total = len(plan.points)
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(min(workers, max(1, len(todo))), initializer=_worker_init,
                    initargs=(max(1, _cpus() // workers),))
    try:
        tasks = [(plan.study, p.name, p.cfg) for p in todo]
        points = {p.name: p for p in todo}
        for name, result, meta in pool.imap_unordered(_work, tasks):
            _store(plan, outcome, points[name], result, meta)
            tick(len(outcome.status), total, name)
            if meta["status"] == "failed" and fail_fast:
                outcome.stopped = True
                break
        pool.close()
    finally:
        pool.terminate()
        pool.join()


# -- aggregating --------------------------------------------------------------------------------

def _config_columns(plan: Plan, p: Point) -> dict[str, Any]:
    return {k: word(v) if isinstance(v, (list, tuple)) or v is None else getattr(v, "value", v)
            for k, v in p.cfg.model_dump().items()}


def summary(plan: Plan):
    """summary.csv's table, read back from the runs' own files: one row per run per layer."""
    import pandas as pd

    from bncli import studies

    csv = studies.get(plan.study).CSV
    frames = []
    for p in plan.points:
        run_dir = plan.dir / "runs" / p.name
        status = _status(run_dir / "meta.json")
        if status not in FINISHED:
            continue
        table = read_table(run_dir / csv) if (run_dir / csv).exists() else None
        if table is None or table.empty:  # a failed run: one row, so its status is on record
            table = pd.DataFrame({c: [pd.NA] for c in ID_COLUMNS[plan.study]})
        config = _config_columns(plan, p)
        # a setting named like a statistic (erank: on/off, erank: the value) keeps a cfg. prefix
        config = {f"cfg.{k}" if k in table.columns else k: v for k, v in config.items()}
        cols = {"run": p.name, **config, "status": status}
        head = pd.DataFrame({k: [v] * len(table) for k, v in cols.items()})
        frames.append(pd.concat([head, table.reset_index(drop=True)], axis=1))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    for c in ID_COLUMNS[plan.study]:
        out[c] = out[c].astype("Int64")
    return out


def aggregate_table(table, study: str):
    """Mean and sd (ddof 1) across seeds, per config per layer, over ok and diverged runs.

    `seeds` counts the runs that reached the layer; non-finite values (a diverging layer)
    are left out of the mean and sd.
    """
    import numpy as np
    import pandas as pd

    ids = ID_COLUMNS[study]
    done = table[table["status"].isin(results.DONE)] if len(table) else table
    if done.empty:
        return pd.DataFrame()
    cols = list(table.columns)
    status = cols.index("status")  # layout: run, config fields (seed among them), status, ids, stats
    config = [c for c in cols[1:status] if c != "seed"]
    stats = [c for c in cols[status + 1:] if c not in ids]
    values = done[stats].astype(float).replace([np.inf, -np.inf], np.nan)
    grouped = pd.concat([done[config + ids], values], axis=1).groupby(config + ids, sort=False, dropna=False)
    agg = grouped[stats].agg(["mean", "std"])
    agg.columns = [f"{s}_{'sd' if f == 'std' else f}" for s, f in agg.columns]
    agg.insert(0, "seeds", grouped.size())
    return agg.reset_index()


def aggregate(plan: Plan) -> None:
    """Write summary.csv and aggregate.csv from the runs on disk."""
    table = summary(plan)
    if table.empty:
        return
    results.write_csv(plan.dir / "summary.csv", table)
    agg = aggregate_table(table, plan.study)
    if not agg.empty:
        results.write_csv(plan.dir / "aggregate.csv", agg)


def _plot(plan: Plan) -> Path | None:
    from bncli import plot

    if not (plan.dir / "aggregate.csv").exists():  # no run finished ok or diverged: nothing to draw
        return None
    return plot.plot([plan.dir], plan.dir / PLOT[plan.study])


# -- reading back -------------------------------------------------------------------------------

def read_table(path: Path):
    import pandas as pd

    # the numbers read back must be exactly the ones written: pandas 3 parses round-trip by default
    exact = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
    return pd.read_csv(path, keep_default_na=False, na_values=["nan", ""], **exact)


def keys_of(sweep_dir: Path) -> list[str]:
    """The grid's fields, from the sweep.yaml saved with the sweep."""
    data = cfgmod.read_yaml(Path(sweep_dir) / "sweep.yaml")
    return list((data or {}).get("grid") or {}) if isinstance(data, dict) else []


def is_sweep(path: Path) -> bool:
    return (Path(path) / "sweep.yaml").is_file()


def open_sweep(path: Path):
    """(study, grid keys, summary table) of a saved sweep, from its files only."""
    path = Path(path)
    if not (path / "summary.csv").exists():
        raise BncliError(f"{path}: no summary.csv yet (has any run finished? try bncli sweep --resume)")
    data = cfgmod.read_yaml(path / "sweep.yaml") or {}
    study = data.get("study") if isinstance(data, dict) else None
    if not isinstance(study, str) or study not in cfgmod.CONFIGS:
        raise BncliError(f"{path}/sweep.yaml: study: expected depth-study or running-stats, "
                         f"got {cfgmod.show(study)}")
    return study, keys_of(path), read_table(path / "summary.csv")


def open_run(path: Path):
    """(study, config dict, meta, table) of a saved run directory, from its files only."""
    from bncli import studies

    path = Path(path)
    if not (path / "meta.json").is_file():
        raise BncliError(f"{path}: not a run or sweep directory (no meta.json or sweep.yaml)")
    try:
        meta = results.read_json(path / "meta.json")
    except ValueError as e:
        raise BncliError(f"{path}/meta.json: not valid JSON: {e}") from None
    study = meta.get("study") if isinstance(meta, dict) else None
    if not isinstance(study, str) or study not in cfgmod.CONFIGS:
        raise BncliError(f"{path}/meta.json: study: expected depth-study or running-stats, "
                         f"got {cfgmod.show(study)}")
    cfg = cfgmod.read_yaml(path / "config.yaml") or {}
    csv = path / studies.get(study).CSV
    table = read_table(csv) if csv.exists() else None
    return study, cfg, meta, table
