"""Plots of saved runs and sweeps, from their files: a metric against layer (or iteration).

    bncli plot results/sweeps/init_vs_norm --metric std

One line per config, the mean over seeds, with a band of +-1 sd. What a study's figure shows
is the study's own `draw` (bncli/studies/*.py, with the helpers in bncli/figures.py); this
module finds and labels the runs, checks the metric and the output path, and has
results.write_plot draw and write the PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bncli import results, studies
from bncli.errors import BncliError


def load(paths: list[Path]) -> tuple[str, pd.DataFrame, list[str]]:
    """(study, long table with `label`, `parts`, `seed`, `status`, ids, stats, the stat columns)
    from run and sweep directories."""
    frames, runs, study, stats = [], [], None, {}
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise BncliError(f"PATH: {path} is not a directory (give run or sweep directories)")
        if results.is_sweep(path):
            sw = results.open_sweep(path)
            s, table = sw.study, sw.table
            cols = list(table.columns)
            stats.update(dict.fromkeys(cols[cols.index("status") + 1:]))
            prefix = f"{path.name}: " if len(paths) > 1 else ""
            table = table.assign(parts=[tuple((k, results.word(r[k])) for k in sw.keys)
                                        for _, r in table.iterrows()])
            table["label"] = [prefix + (", ".join(f"{k}={v}" for k, v in p) or path.name) for p in table["parts"]]
            frames.append(table)
        else:
            run = results.open_run(path)
            s = run.study
            if run.table is None or run.table.empty:
                raise BncliError(f"{path}: the run has no results to plot (status {run.status})")
            runs.append(run)
            stats.update(dict.fromkeys(run.table.columns))
        if study is not None and s != study:
            raise BncliError(f"PATH: cannot plot {study} and {s} results together")
        study = s
    if runs:
        fields = [k for k in runs[0].settings if k != "seed"]
        varying = [k for k in fields if len({results.word(r.settings.get(k)) for r in runs}) > 1]
        keys = varying or studies.get(study).LABEL_KEYS
        for run in runs:
            parts = tuple((k, results.word(run.settings.get(k))) for k in keys)
            frames.append(run.table.assign(label=", ".join(f"{k}={v}" for k, v in parts),
                                           parts=[parts] * len(run.table), seed=run.settings.get("seed"),
                                           status=run.status, run=run.dir.name))
    return study, pd.concat(frames, ignore_index=True), list(stats)


def metrics_of(table: pd.DataFrame, study: str, stats: list[str]) -> list[str]:
    """The numeric statistic columns that hold a finite value: any of them can be plotted."""
    ids = studies.get(study).ID_COLUMNS
    return [c for c in stats if c not in ids and pd.api.types.is_numeric_dtype(table[c])
            and np.isfinite(table[c].to_numpy(float)).any()]


def default_out(paths: list[Path], study: str, metric: str | None) -> Path:
    mod = studies.get(study)
    name = f"{metric}_by_{mod.ID_COLUMNS[0]}.png" if metric else mod.PLOT
    return (Path(paths[0]) if len(paths) == 1 else Path.cwd()) / name


def _free(path: Path) -> Path:
    """A default name never replaces a file (a run's own convergence.png, a sweep's plot): -2, -3..."""
    k = 1
    while path.exists() or path.is_symlink():
        k += 1
        path = path.with_name(f"{path.stem.rsplit('-', 1)[0] if k > 2 else path.stem}-{k}{path.suffix}")
    return path


def plot(paths: list[Path], out: Path | None = None, metric: str | None = None) -> Path:
    """Draw the runs and sweeps at `paths` into one PNG; returns its path."""
    if not paths:
        raise BncliError("PATH: give at least one run or sweep directory")
    study, table, stats = load(paths)
    available = metrics_of(table, study, stats)
    if not available:  # a sweep whose every run failed, a run with no finite value
        raise BncliError("PATH: these results hold no finite statistic to plot (did every run fail?)")
    if metric is not None and metric not in available:
        raise BncliError(f"--metric: {metric!r} is not a numeric column of these results; "
                         f"available: {', '.join(available)}")
    out = Path(out) if out is not None else _free(default_out(paths, study, metric))
    if out.suffix.lower() != ".png":
        raise BncliError(f"--out: {out} must end in .png")
    if not out.parent.is_dir():
        raise BncliError(f"--out: directory {out.parent} does not exist")
    results.check_out(out.parent)
    return results.write_plot(out, study, table, metric)
