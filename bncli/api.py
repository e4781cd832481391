"""The Python API: every study, sweep and plot that the command line runs, as functions.

    import bncli
    r = bncli.depth_study(depth=50, init="xavier", norm="none")
    r.table, r.status, r.info   # a pandas DataFrame (NaN where a statistic is off), ok, {...}
    r.save("results")           # the same files `bncli depth-study` writes
    bncli.compare(r, bncli.depth_study(depth=50, init="kaiming", norm="none")).to_dict()

Each registered study is a function of the same name with underscores (`bncli.depth_study`,
`bncli.running_stats`, `bncli.convergence`), taking its config's fields as keyword
arguments. They validate exactly as the CLI does and raise BncliError with the same one-line
message (naming fields, not flags). Nothing touches the disk unless asked: `out=` writes the
run as it goes, `Run.save` after.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bncli import API, comparison, config, plot, results, studies
from bncli.comparison import Comparison
from bncli.config import Config
from bncli.errors import BncliError, RunError
from bncli.results import Run, SavedSweep, open_run, open_sweep

if TYPE_CHECKING:  # both load torch: imported where a sweep runs, so runs, show and compare never do
    from bncli import ray_backend, sweeps

__all__ = list(API)
# and one function per registered study: bncli.depth_study, bncli.running_stats, ...


def load(study: str, config_file: Path | str | None = None, **fields: Any) -> Config:
    """A study's validated config: its defaults < `config_file` (YAML) < `fields`."""
    path = Path(config_file) if config_file is not None else None
    return config.load(studies.get(study).CONFIG, path, flags=False, whose=studies.whose(study), **fields)


def run(
    study: str,
    config_file: Path | str | None = None,
    *,
    out: Path | str | None = None,
    name: str | None = None,
    progress: Callable[[int], None] | None = None,
    **fields: Any,
) -> Run:
    """Run one study with `fields` (or a YAML `config_file`); see `execute`."""
    return execute(study, load(study, config_file, **fields), out, name, progress)


def execute(
    study: str,
    cfg: Config,
    out: Path | str | None = None,
    name: str | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    flags: bool = False,
) -> Run:
    """Check, run and (with `out`) record one study (flags=True: errors name --out and --name).

    Bad input raises BncliError before any directory exists. With `out`, the run is written to
    `out/<study>/<name>/` as it goes: config.yaml and meta.json (running) first, the results
    last. A run that fails raises RunError once recorded; an interrupted one is returned with
    what it computed (status interrupted).
    """
    mod = studies.get(study)
    device = mod.preflight(cfg)
    start = None
    if out is not None:
        run_dir = results.new_run_dir(out, study, name, results.default_name(study, cfg), flags)

        def start(r: Run) -> None:
            r.dir = run_dir
            try:
                results.write_run(r)
            except BaseException:  # nothing ran yet: leave no directory behind, not even a half-started one
                shutil.rmtree(run_dir, ignore_errors=True)
                raise

    try:
        r = results.compute(study, cfg, device, progress, on_start=start)
    except BaseException:  # an interrupt before the first file: no empty directory blocks the name
        if out is not None and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    if r.dir is not None:
        try:
            results.write_run(r)
        except KeyboardInterrupt:  # the run is done: its files are written all the same (the CLI holds
            results.write_run(r)  # later signals), and the caller is told it was asked to stop
            r.stop_asked = True
    if r.status == "failed":
        where = f"run recorded failed in {r.dir}" if r.dir is not None else "nothing saved"
        if r.out_of_memory:
            raise RunError(f"out of memory on {device}: {mod.describe_size(cfg)}; try smaller values ({where})")
        raise RunError(f"the run failed: {r.meta['error']} ({where})")
    return r


def sweep(
    file: Path | str | None = None,
    out: Path | str = "results",
    name: str | None = None,
    *,
    study: str | None = None,
    base: Any = None,
    grid: Any = None,
    seeds: Any = None,
    flags: bool = False,
    resume: bool = False,
    fail_fast: bool = False,
    workers: int = 1,
    progress: Callable[[int, int, str | None], None] | None = None,
    ray: ray_backend.RayOptions | None = None,
) -> sweeps.Outcome:
    """Run a sweep's grid x seeds under `out/sweeps/<name>/`, aggregate it, and draw its plot.

    The sweep is a sweep file, keyword arguments, or both (they win over the file): `study`,
    `base` (settings, {"depth": 50}), `grid` (axes, {"init": ["kaiming", "xavier"]}) and `seeds`
    ([0, 1], 3 or "0-4"); see sweeps.spec. With flags=True, base and grid are the command line's
    KEY=VALUE strings (["depth=50"], ["init=kaiming,xavier"]) and errors name the flags. Every
    grid point is checked before anything runs; the resolved sweep is saved as sweep.yaml.
    """
    from bncli import sweeps

    plan = plan_sweep(file, out, name, study=study, base=base, grid=grid, seeds=seeds, flags=flags)
    outcome = sweeps.run(plan, resume=resume, fail_fast=fail_fast, workers=workers, progress=progress, ray=ray)
    if (plan.dir / "aggregate.csv").exists() and not outcome.unaggregated:  # else: nothing (new) to draw
        outcome.plot = plot.plot([plan.dir], plan.dir / studies.get(plan.study).PLOT)
    return outcome


def plan_sweep(
    file: Path | str | None = None,
    out: Path | str = "results",
    name: str | None = None,
    *,
    study: str | None = None,
    base: Any = None,
    grid: Any = None,
    seeds: Any = None,
    flags: bool = False,
) -> sweeps.Plan:
    """The sweep `sweep` would run, checked, with nothing run or written: its name, directory and
    points (.points: each run's name, grid values and validated config); `bncli sweep --dry-run`."""
    from bncli import sweeps

    path = Path(file) if file is not None else None
    return sweeps.plan(path, Path(out), name, study=study, base=base, grid=grid, seeds=seeds, flags=flags)


def list_runs(
    out: Path | str = "results", *, study: str | None = None, status: str | None = None, where: Any = ()
) -> list[dict[str, Any]]:
    """The runs and sweeps under `out`, newest first, as `bncli runs` lists them (one dict each:
    kind, study, name, status, started, wall_seconds, settings), only those of `study`, with
    `status` and matching `where` (["init=normal"], or {"init": "normal"} or {"init": [...]})."""
    if not Path(out).is_dir():
        raise BncliError(f"OUT: {out} is not a directory (give a results directory, like results)")
    keep = results.filters(study=study, status=status, where=where)  # a typo refused before any reading
    return [e for e in results.list_runs(out) if keep(e)]


def show(path: Path | str) -> Run | SavedSweep | list[dict[str, Any]]:
    """What `bncli show PATH` shows, from the files alone: a Run (its table, meta and settings),
    a SavedSweep (its summary: .configs(), .table) or, for a results directory, its listing."""
    path = Path(path)
    if not path.is_dir():
        raise BncliError(f"PATH: {path} is not a directory (give a run or sweep directory)")
    if results.is_sweep(path):
        return open_sweep(path)
    if not (path / "meta.json").exists():
        listed = results.list_runs(path)
        if listed:
            return listed
    return open_run(path)


def plot_runs(
    paths: Sequence[Path | str],
    out: Path | str | None = None,
    metric: str | None = None,
    *,
    where: Sequence[str] = (),
    logy: bool | None = None,
    title: str | None = None,
    facet: str | None = None,
    theory: bool = False,
    mathtext: bool = False,
) -> Path:
    """Draw saved runs and sweeps into one PNG, SVG or PDF (`bncli plot`, by `out`'s extension);
    returns its path. `where`: "key=value" filters on settings (a key twice: either value);
    `logy`: True or False forces the y scale; `title`: the figure's, plain text (read as
    matplotlib mathtext with `mathtext`); `facet`: a setting with a panel per value ("none": one
    panel; default: the study's pick); `theory`: each line's theory_<metric> column dashed over
    it (theory_std on std plots)."""
    return plot.plot(
        [Path(p) for p in paths],
        Path(out) if out is not None else None,
        metric,
        where=list(where),
        logy=logy,
        title=title,
        facet=facet,
        theory=theory,
        mathtext=mathtext,
    )


def compare(
    *runs: Path | str | Run, metric: str | None = None, rtol: float = comparison.RTOL, atol: float = comparison.ATOL
) -> Comparison:
    """Runs of one study (run directories or Runs) side by side on one metric (`bncli compare`):
    the settings that differ, each run's value and its ratio (or difference) to the first
    run's per row, the first row where they differ beyond rtol/atol, and rows some run lacks."""
    return comparison.compare(*runs, metric=metric, rtol=rtol, atol=atol)


@functools.cache  # bncli.depth_study is the same function each time it is looked up
def _study_function(study: str) -> Callable[..., Run]:
    def fn(
        config_file: Path | str | None = None,
        *,
        out: Path | str | None = None,
        name: str | None = None,
        progress: Callable[[int], None] | None = None,
        **fields: Any,
    ) -> Run:
        return run(study, config_file, out=out, name=name, progress=progress, **fields)

    fn.__name__ = fn.__qualname__ = study.replace("-", "_")
    fn.__doc__ = (
        f"Run the {study} study with its config's fields as keyword arguments "
        f"(bncli.load('{study}') shows them); see bncli.execute.\n\n{studies.get(study).__doc__}"
    )
    return fn


def __getattr__(attr: str):
    study = attr.replace("_", "-")
    if study in studies.REGISTRY:
        return _study_function(study)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {s.replace("-", "_") for s in studies.names()})
