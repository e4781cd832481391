"""Plots of saved runs and sweeps, from their files: a metric against layer (or iteration).

    bncli plot results/sweeps/init_vs_norm --metric std --where init=kaiming --facet norm

One line per config, the mean over seeds, with a band of +-1 sd. What a study's figure shows
is the study's own `draw` (bncli/studies/*.py, with the helpers in bncli/figures.py); this
module finds the runs, decides which rows make one line and what the legend calls it, picks
the rows (--where) and the panels (--facet), checks the metric and the output path, and has
results.write_plot draw and write the file.

A line is the runs of one source (a sweep, or the single runs given) that differ only by
seed: lines from different sweeps never merge, and single runs with the same settings and
seed (a re-run in another directory) stay separate lines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bncli import results, studies
from bncli.errors import BncliError, show, word
from bncli.figures import SETTING, THEORY, Options

FORMATS = (".png", ".svg", ".pdf")  # what --out's extension picks


def _word(v) -> str:
    """results.word of a value read from a CSV or a config.yaml alike: an empty cell is none."""
    if v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return "none"
    return results.word(v)


def _names(paths: list[Path]) -> list[str]:
    """What the legend calls each source: the directory's name, its path where two names agree."""
    names = [p.name for p in paths]
    return [str(p) if names.count(p.name) > 1 else p.name for p in paths]


def _sweep_frame(path: Path, name: str, i: int) -> tuple[str, pd.DataFrame, list[str], list[str]]:
    sw = results.open_sweep(path)
    table = sw.table
    columns = {f: c for f, c in sw.settings.items() if f != "seed"}
    settings = {SETTING + f: table[c].map(_word) for f, c in columns.items()}
    missing = [k for k in sw.keys if SETTING + k not in settings]
    if missing:
        raise BncliError(
            f"{path}: these results are damaged or incomplete, and cannot be shown "
            f"(summary.csv has no column {missing[0]!r}, a key of the sweep's grid)"
        )
    lines = [(i, tuple(s)) for s in zip(*settings.values(), strict=True)]
    # pandas-stubs types a list column as scalars only; pandas takes one of tuples
    table = table.assign(**settings, source=name, line=lines)  # type: ignore[arg-type]
    stats = [c for c in sw.table.columns if c not in {"run", "status", "seed", *columns.values()}]
    return sw.study, table, stats, sw.keys


def _runs_frame(runs: list, name: str, i: int) -> pd.DataFrame:
    """The single runs given: one line per settings (seed aside) whose seeds all differ, else a
    line per run (the same seed twice is two runs, not two seeds)."""

    def key(run):
        return tuple(sorted((k, _word(v)) for k, v in run.settings.items() if k != "seed"))

    by_key: dict[tuple, list] = {}
    for run in runs:
        by_key.setdefault(key(run), []).append(run)
    frames = []
    for k, group in by_key.items():
        seeds = [_word(r.settings.get("seed")) for r in group]
        apart = len(set(seeds)) < len(seeds)
        for run in group:
            frames.append(
                run.table.assign(
                    **{SETTING + f: _word(v) for f, v in run.settings.items() if f != "seed"},
                    seed=run.settings.get("seed"),
                    status=run.status,
                    run=run.dir.name,
                    source=name,
                    line=[(i, k, str(run.dir) if apart else "")] * len(run.table),
                )
            )
    return pd.concat(frames, ignore_index=True)


def load(paths: list[Path]) -> tuple[str, pd.DataFrame, list[str]]:
    """(study, long table, the stat columns) from run and sweep directories. The table holds
    the results' own columns, `setting:<field>` for every setting (as results.word writes it),
    `source` (the sweep's name, or `runs`), `line` (the rows of one line) and, for the draw,
    `label`, `parts` and `seed`, `status`."""
    paths = list(dict.fromkeys(Path(p) for p in paths))
    frames: list[pd.DataFrame] = []
    runs: list[results.Run] = []
    study: str | None = None
    stats: dict[str, None] = {}  # the columns of every source, in order (a dict as an ordered set)
    grid: dict[str, None] = {}  # the sweeps' grid keys, in order
    names = _names(paths)
    for path, name in zip(paths, names, strict=True):
        if not path.is_dir():
            raise BncliError(f"PATH: {path} is not a directory (give run or sweep directories)")
        if results.is_sweep(path):
            s, table, cols, keys = _sweep_frame(path, name, len(frames))
            stats.update(dict.fromkeys(cols))
            grid.update(dict.fromkeys(keys))
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
        frames.append(_runs_frame(runs, "runs" if frames else "", len(frames)))
    table = pd.concat(frames, ignore_index=True)
    assert study is not None  # set by the loop: with no paths, pd.concat has raised (no frames)
    return study, label(table, study, list(grid)), [c for c in stats if not c.startswith(SETTING)]


def fields(table: pd.DataFrame) -> list[str]:
    """The settings the table's rows carry (`--where` and `--facet` keys)."""
    return [c.removeprefix(SETTING) for c in table.columns if c.startswith(SETTING)]


def varying(table: pd.DataFrame, first: Sequence[str] = ()) -> list[str]:
    """The settings that differ between the table's lines, `first` (a sweep's grid) first."""
    lines = table.drop_duplicates("line")
    found = [f for f in fields(table) if lines[SETTING + f].nunique() > 1]
    return [f for f in first if f in found] + [f for f in found if f not in first]


def label(table: pd.DataFrame, study: str, grid: Sequence[str] = (), facet: str | None = None) -> pd.DataFrame:
    """`label` and `parts` (what the legend and the styles go by) of each line: the settings that
    differ between lines (the panel's own aside). With several sources, the source's name comes
    first, with the settings that tell sources apart (depth=60), and goes last in `parts`: the
    line style tells the sources apart, the colour the configs."""
    keys = [k for k in varying(table, grid) if SETTING + k != facet] or [
        k for k in varying(table, grid) if SETTING + k == facet
    ]  # a line per panel: the panel's value names it
    several = table["source"].nunique() > 1
    if several:  # a setting constant within each source labels the source, not the line
        own = [k for k in keys if (table.groupby("source")[SETTING + k].nunique() == 1).all()]
        keys = [k for k in keys if k not in own]
    elif not keys and table["line"].nunique() == 1:
        keys = [k for k in studies.get(study).LABEL_KEYS if SETTING + k in table]  # one line: say what it is
    tags, lines = {}, table.drop_duplicates("line")
    for _, row in lines.iterrows():
        parts = tuple((k, row[SETTING + k]) for k in keys)
        text = ", ".join(f"{k}={v}" for k, v in parts)
        if several or not text:
            told = ", ".join(f"{k}={row[SETTING + k]}" for k in own) if several else ""
            source = f"{row['source']} ({told})" if told else row["source"]
            parts += (("", source),)
            text = f"{source}: {text}" if text and source else text or source
        alone = row["line"][-1] if isinstance(row["line"][-1], str) else ""
        if alone:  # a run that shares its settings and seed with another: its directory tells it apart
            parts += (("run", alone),)
            text = f"{text} ({Path(alone).name})" if text else Path(alone).name
        tags[row["line"]] = (text, parts)
    return table.assign(label=table["line"].map(lambda k: tags[k][0]), parts=table["line"].map(lambda k: tags[k][1]))


def select(table: pd.DataFrame, items: list[str], study: str | None = None) -> tuple[pd.DataFrame, str]:
    """The rows whose settings match every KEY=VALUE (a key given twice: either value), and the
    filter in words for the title. Values are read as `bncli runs --where` reads them (typed by
    the study's field: `init_std=2.0` is the 2 the rows hold; a choice that is not one refused)."""
    wanted = results.parse_where(items)
    for key, values in wanted.items():
        if SETTING + key not in table:
            raise BncliError(f"--where: no setting {key!r} in these results; available: {', '.join(fields(table))}")
        if study is not None and key in studies.get(study).CONFIG.FIELDS:
            values[:] = [word(results.typed(study, key, v)) for v in values]
        have = list(dict.fromkeys(table[SETTING + key]))
        for value in values:
            if value not in have:
                raise BncliError(f"--where: no run has {key}={value}; {key} is one of: {', '.join(have)}")
    for key, values in wanted.items():
        table = table[table[SETTING + key].isin(values)]
    if table.empty:
        raise BncliError(f"--where: no run matches {' and '.join(items)} together")
    return table, ", ".join(f"{k}={'|'.join(v)}" for k, v in wanted.items())


def metrics_of(table: pd.DataFrame, study: str, stats: list[str]) -> list[str]:
    """The numeric statistic columns that hold a finite value: any of them can be plotted."""
    ids = studies.get(study).ID_COLUMNS
    return [
        c
        for c in stats
        if c not in ids and pd.api.types.is_numeric_dtype(table[c]) and np.isfinite(table[c].to_numpy(float)).any()
    ]


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


def _facet(table: pd.DataFrame, study: str, metric: str | None, facet: str | None, grid: list[str]) -> str | None:
    """The column with one panel per value: --facet's setting, none, or the study's own choice."""
    if facet == "none":
        return None
    if facet is not None:
        if SETTING + facet not in table:
            raise BncliError(
                f"--facet: no setting {facet!r} in these results; available: none, {', '.join(fields(table))}"
            )
        return SETTING + facet
    return studies.get(study).auto_facet(table, metric, [SETTING + k for k in varying(table, grid)])


def _check_theory(available: list[str], metric: str | None) -> None:
    """--theory draws theory_<metric> dashed: the results must hold that column (any, for the default plot)."""
    have = [c.removeprefix(THEORY) for c in available if c.startswith(THEORY)]
    if (THEORY + metric not in available) if metric is not None else not have:
        what = f"no column {THEORY}{metric}" if metric is not None else "no theory column"
        raise BncliError(
            f"--theory: these results have {what} to draw; "
            + (f"the metrics with one: {', '.join(have)}" if have else "none has a theory column")
        )


def prepare(
    paths: list[Path],
    metric: str | None = None,
    *,
    where: Sequence[str] = (),
    logy: bool | None = None,
    title: str | None = None,
    facet: str | None = None,
    theory: bool = False,
    mathtext: bool = False,
) -> tuple[str, pd.DataFrame, Options]:
    """(study, the labelled rows to draw, the figure's Options) of `plot`'s arguments, all checked."""
    check_title(title, mathtext)
    if not paths:
        raise BncliError("PATH: give at least one run or sweep directory")
    study, table, stats = load(paths)
    available = metrics_of(table, study, stats)
    if not available:  # a sweep whose every run failed, a run with no finite value
        raise BncliError("PATH: these results hold no finite statistic to plot (did every run fail?)")
    if metric is not None and metric not in available:
        raise BncliError(
            f"--metric: {metric!r} is not a numeric column of these results; available: {', '.join(available)}"
        )
    if theory:
        _check_theory(available, metric)
    note = ""
    if where:
        table, note = select(table, list(where), study)
    grid = [k for k in dict.fromkeys(k for p in table["parts"] for k, _ in p) if k and k != "run"]  # load's order
    column = _facet(table, study, metric, facet, grid)
    return study, label(table, study, grid, column), Options(logy, title, column, note, theory, mathtext=mathtext)


def check_title(title: str | None, mathtext: bool = False) -> None:
    """A title is text matplotlib can draw: printable characters and new lines; with `mathtext`,
    each line's $...$ parts as matplotlib's mathtext parses them. Else one line naming --title."""
    if title is None:
        return
    bad = next((c for c in title if not c.isprintable() and c != "\n"), None)
    if bad is not None:
        raise BncliError(f"--title: {show(title)} holds {ascii(bad)}, which cannot be drawn; give printable text")
    if not mathtext:
        return
    from matplotlib import cbook
    from matplotlib.mathtext import MathTextParser

    parser = MathTextParser("path")
    for line in title.split("\n"):
        if cbook.is_math_text(line):
            try:
                parser.parse(line)
            except ValueError as e:  # pyparsing's message: the expression, a caret, then the grammar expected
                found = re.search(r"found (.*?)\s*\(at char (\d+)\)", " ".join(str(e).split()))
                where = f": {found[1]} at character {int(found[2]) + 1} of its math" if found else ""
                raise BncliError(
                    f"--title: {show(title)} is not valid mathtext{where}; leave out --mathtext for plain text"
                ) from None


def plot(
    paths: list[Path],
    out: Path | None = None,
    metric: str | None = None,
    *,
    where: Sequence[str] = (),
    logy: bool | None = None,
    title: str | None = None,
    facet: str | None = None,
    theory: bool = False,
    mathtext: bool = False,
) -> Path:
    """Draw the runs and sweeps at `paths` into one figure (PNG, SVG or PDF by `out`'s
    extension); returns its path. `where`: KEY=VALUE filters; `logy`: force the y scale;
    `facet`: a setting with one panel per value ("none": one panel; default: the study's pick);
    `theory`: each line's theory_<metric> column dashed over it (theory_std on std plots);
    `title`: plain text, or matplotlib mathtext with `mathtext`."""
    if out is not None and Path(out).suffix.lower() not in FORMATS:
        raise BncliError(f"--out: {out}: the extension picks the format; use one of {', '.join(FORMATS)}")
    study, table, opts = prepare(
        paths, metric, where=where, logy=logy, title=title, facet=facet, theory=theory, mathtext=mathtext
    )
    out = Path(out) if out is not None else _free(default_out(paths, study, metric))
    if not out.parent.is_dir():
        raise BncliError(f"--out: directory {out.parent} does not exist")
    results.check_out(out.parent)
    return results.write_plot(out, study, table, metric, opts)
