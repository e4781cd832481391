"""Saved runs of one study side by side: the settings that differ, one metric per row, its
ratio (or difference) to the first run, and the first row where the runs part.

    bncli compare results/depth-study/kaiming results/depth-study/xavier --metric std

`compare` reads runs (directories or in-memory Runs) and returns a Comparison, plain data;
`render` makes rich renderables of one for the CLI. Nothing here prints.

Ratio or difference: the ratio run k / run 1 when every finite value of the metric, in every
run, has one strict sign (a std, a variance, an error); the difference run k - run 1 when
some value is zero or the values take both signs (a mean), where a ratio would blow up or
flip sign. The choice is made once per comparison, so a column reads the same all the way down.

Rows agree when |run k - run 1| <= atol + rtol * |run 1| (numpy.isclose, run 1 the
reference); nan agrees with nan (two runs that diverged at the same layer), and inf with inf
of the same sign. Rows some run lacks (it diverged or was interrupted earlier) are reported
as missing and left out of that test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table
from rich.text import Text

from bncli import report, results, studies
from bncli.errors import BncliError, Damaged, show
from bncli.results import Run

RTOL = 1e-6  # float32 results summed in another order (another device, thread count) differ by ~1e-7
ATOL = 1e-12  # the absolute floor: two values that are both ~0 (a centred mean) agree
AUTO_ROWS = 100  # the table shows every row id up to this many, else about half as many


@dataclass
class Comparison:
    """Runs of one study, one metric side by side. `table` has the study's ID_COLUMNS, one
    column per run (named by `names`) and, for runs 2..n, `b / a` (ratio) or `b - a`
    (difference) columns; `present` says which run holds each row (False: missing, whose
    cells in `table` are NaN, as a non-finite value is)."""

    study: str
    names: list[str]  # one label per run: its directory's name, made unique
    dirs: list[Path | None]
    statuses: list[str]
    settings: dict[str, list[Any]]  # setting -> its value in each run, for those that differ
    metric: str
    ids: list[str]
    mode: str  # "ratio" or "difference"
    rtol: float
    atol: float
    table: pd.DataFrame
    present: pd.DataFrame  # one bool column per run name, on table's index
    computed: pd.DataFrame | None = None  # per run name: False where its metric was not computed (off)

    @cached_property
    def differs(self) -> pd.Series:
        """Per row: True, False, or None where a run lacks it."""
        ref = self.table[self.names[0]].to_numpy(float)
        bad = np.zeros(len(ref), dtype=bool)
        for n in self.names[1:]:
            bad |= ~np.isclose(self.table[n].to_numpy(float), ref, rtol=self.rtol, atol=self.atol, equal_nan=True)
        whole = self.present.all(axis=1).to_numpy()
        return pd.Series([bool(b) if w else None for b, w in zip(bad, whole, strict=True)], dtype=object)

    @property
    def shared(self) -> int:
        """Rows every run holds."""
        return int(self.present.all(axis=1).sum())

    @property
    def first(self) -> int | None:
        """Position (in `table`) of the first row held by every run where some run differs from run 1."""
        hits = np.flatnonzero(self.differs.to_numpy() == True)  # noqa: E712 - None is neither
        return int(hits[0]) if len(hits) else None

    @property
    def missing(self) -> dict[str, int]:
        """Run name -> rows the others hold and it lacks (only runs that lack some)."""
        return {n: int((~self.present[n]).sum()) for n in self.names if not self.present[n].all()}

    @property
    def agree(self) -> bool:
        """Every row in every run, within the tolerance."""
        return self.first is None and not self.missing

    @property
    def identical(self) -> bool:
        """The same settings and exactly the same values (nan where nan): a run against itself."""
        if not self.agree or self.settings:
            return False
        ref = self.table[self.names[0]].to_numpy(float)
        return all(np.array_equal(self.table[n].to_numpy(float), ref, equal_nan=True) for n in self.names[1:])

    @property
    def change_columns(self) -> list[str]:
        sign = " / " if self.mode == "ratio" else " - "
        return [f"{n}{sign}{self.names[0]}" for n in self.names[1:]]

    def row_id(self, i: int) -> str:
        """`layer 12`, `iteration 3, channel 2`."""
        return ", ".join(f"{c} {_cell(self.table[c].iloc[i])}" for c in self.ids)

    def rows(self, every: int | None = None) -> list[int]:
        """Positions of every `every`-th row id (by the first id column: layer, iteration),
        plus the first and last, each run's last row (where a diverged run stopped), the first
        difference and the first missing row, always."""
        x = self.table[self.ids[0]]
        xs = list(dict.fromkeys(x))
        if every is None or every <= 1:
            return list(range(len(x)))
        keep = set(xs[::every]) | ({xs[-1]} if xs else set())
        gaps = np.flatnonzero(~self.present.all(axis=1).to_numpy())
        keep |= {x.iloc[i] for i in (self.first, gaps[0] if len(gaps) else None) if i is not None}
        keep |= {x.iloc[np.flatnonzero(self.present[n].to_numpy())[-1]] for n in self.names if self.present[n].any()}
        return [i for i, v in enumerate(x) if v in keep]

    def frame(self, every: int | None = None) -> pd.DataFrame:
        """The side-by-side rows for --format csv: a missing cell is empty, a non-finite one
        nan (as in the runs' own CSVs), `differs` true/false (empty where a run lacks the row)."""
        out = self.table.astype({c: object for c in [*self.names, *self.change_columns]})
        on = self.present if self.computed is None else self.present & self.computed  # a value to show
        whole = self.present.all(axis=1)
        for n, c in zip(self.names, [None, *self.change_columns], strict=True):
            out.loc[~on[n], n] = ""  # missing or not computed: empty, as in the runs' CSVs (nan: overflow)
            if c is not None:
                out.loc[~whole | ~on[n] | ~on[self.names[0]], c] = ""
        out["differs"] = ["" if d is None else str(d).lower() for d in self.differs]
        return out.iloc[self.rows(every)]

    def to_dict(self, every: int | None = None) -> dict[str, Any]:
        """One JSON-ready document: non-finite numbers and missing cells are None; each row
        lists the runs that lack it."""
        rows = []
        for i in self.rows(every):
            row = {c: results.json_value(self.table[c].iloc[i]) for c in [*self.ids, *self.names, *self.change_columns]}
            lacking = [n for n in self.names if not self.present[n].iloc[i]]
            row.update(differs=self.differs.iloc[i], missing=lacking)
            rows.append(row)
        first = self.first
        return {
            "study": self.study,
            "metric": self.metric,
            "mode": self.mode,
            "rtol": self.rtol,
            "atol": self.atol,
            "runs": [
                {"name": n, "dir": None if d is None else str(d), "status": s}
                for n, d, s in zip(self.names, self.dirs, self.statuses, strict=True)
            ],
            "settings": self.settings,
            "identical": self.identical,
            "agree": self.agree,
            "first_difference": None
            if first is None
            else {c: results.json_value(self.table[c].iloc[first]) for c in self.ids},
            "missing": self.missing,
            "rows": rows,
        }


def _cell(v: Any) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v.item() if hasattr(v, "item") else v)


# -- reading ------------------------------------------------------------------------------------


def load(path: Path | str, flag: str = "RUN") -> Run:
    """A saved run to compare: a run directory with its table, not a sweep, not a listing."""
    path = Path(path)
    if results.is_sweep(path):
        raise BncliError(
            f"{flag}: {path} is a sweep; compare takes run directories, like the ones under {path / 'runs'}"
        )
    if path.is_dir() and not (path / "meta.json").exists() and results.holds_runs(path):
        raise BncliError(f"{flag}: {path} is a results directory, not a run; `bncli runs {path}` lists its runs")
    if not path.is_dir() or not (path / "meta.json").is_file():
        raise BncliError(
            f"{flag}: {path} is not a run directory (no meta.json); give runs like results/depth-study/NAME"
        )
    return _checked(results.open_run(path), str(path), flag)


def _checked(run: Run, where: str, flag: str) -> Run:
    mod = studies.get(run.study)
    if run.table is None:
        raise BncliError(f"{flag}: {where} has no {mod.CSV} (status {run.status}): nothing to compare")
    lacking = [c for c in mod.ID_COLUMNS if c not in run.table.columns]
    if lacking:  # a table of some other making: open_run refuses such a CSV on disk
        raise Damaged(where, f"its table has no column {', '.join(lacking)}")
    return run


def _table(run: Run) -> pd.DataFrame:
    """The table of a run that _checked let through: it has one."""
    assert run.table is not None
    return run.table


def metrics(runs: list[Run]) -> list[str]:
    """The numeric statistic columns every run has, holding a finite value in some run."""
    ids = studies.get(runs[0].study).ID_COLUMNS
    tables = [_table(r) for r in runs]
    cols = [
        c
        for c in tables[0].columns
        if c not in ids and all(c in t.columns and pd.api.types.is_numeric_dtype(t[c]) for t in tables)
    ]
    return [c for c in cols if any(np.isfinite(t[c].to_numpy(float)).any() for t in tables)]


def _names(runs: list[Run], reserved: list[str]) -> list[str]:
    """Each run's directory name (`run k` in memory); a repeated one gets `#k` (k: its place)."""
    names = [r.dir.name if r.dir is not None else f"run {k}" for k, r in enumerate(runs, 1)]
    return [f"{n}#{k}" if names.count(n) > 1 or n in reserved else n for k, n in enumerate(names, 1)]


def _differing(runs: list[Run]) -> dict[str, list[Any]]:
    keys = list(dict.fromkeys(k for r in runs for k in r.settings))
    absent = object()
    values = {k: [r.settings.get(k, absent) for r in runs] for k in keys}
    return {
        k: [None if v is absent else v for v in vs]
        for k, vs in values.items()
        if any(v != vs[0] or (v is absent) != (vs[0] is absent) for v in vs)
    }


# -- comparing ----------------------------------------------------------------------------------


def compare(*runs: Path | str | Run, metric: str | None = None, rtol: float = RTOL, atol: float = ATOL) -> Comparison:
    """Runs of one study (run directories or Runs) side by side on `metric` (default: the
    study's COMPARE_METRIC): see the module's docstring for ratio or difference and tolerance."""
    for name, v in (("rtol", rtol), ("atol", atol)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise BncliError(f"--{name}: expected a finite number >= 0, got {show(v)}")
    if len(runs) < 2:
        raise BncliError(
            f"RUN: give at least two runs to compare (got {len(runs)}); a run against itself is the same path twice"
        )
    loaded = [_checked(r, f"run {k}", "RUN") if isinstance(r, Run) else load(r) for k, r in enumerate(runs, 1)]
    kinds = list(dict.fromkeys(r.study for r in loaded))
    if len(kinds) > 1:
        other = next(r for r in loaded if r.study != kinds[0])
        raise BncliError(
            f"RUN: {_where(loaded[0])} is a {kinds[0]} run but {_where(other)} is a {other.study} run; "
            "compare runs of one study"
        )
    study, ids = kinds[0], studies.get(kinds[0]).ID_COLUMNS
    metric = metric or studies.get(study).COMPARE_METRIC
    available = metrics(loaded)
    if metric not in available:
        raise BncliError(
            f"--metric: {metric!r} is not a numeric column of these runs; available: {', '.join(available) or 'none'}"
        )
    names = _names(loaded, [*ids, "differs", "missing"])
    table, present = _side_by_side(loaded, names, ids, metric)
    computed = _side_by_side(loaded, names, ids, metric, _computed)[0][names].astype("boolean").fillna(False)
    mode = _mode(table[names].to_numpy(float))
    changes = _changes(table, names, mode)
    return Comparison(
        study,
        names,
        [r.dir for r in loaded],
        [r.status for r in loaded],
        _differing(loaded),
        metric,
        ids,
        mode,
        float(rtol),
        float(atol),
        pd.concat([table, changes], axis=1),
        present,
        computed.astype(bool),
    )


def _computed(run: Run, metric: str) -> np.ndarray:
    """Per row of the run's table: whether `metric` was computed (the run's CSV holds a value,
    nan and inf included, not an empty cell; a run in memory: the metric is not among its off)."""
    assert run.table is not None
    if run.result is not None and metric in run.result.off:
        return np.zeros(len(run.table), bool)
    csv = None if run.dir is None else run.dir / studies.get(run.study).CSV
    if csv is None or not csv.is_file():
        return np.ones(len(run.table), bool)
    try:  # only the one column, as text: read_table without keep_empty reads both as NaN
        cells = results.read_table(csv, keep_empty=True, usecols=[metric], dtype=str)[metric]
    except (BncliError, ValueError, OSError):
        return np.ones(len(run.table), bool)
    return (cells != "").to_numpy() if len(cells) == len(run.table) else np.ones(len(run.table), bool)


def _where(run: Run) -> str:
    return str(run.dir) if run.dir is not None else "an in-memory run"


def _side_by_side(runs: list[Run], names: list[str], ids: list[str], metric: str, value=None):
    """Every row id any run holds, in the order the runs hold them (run 1's first), with
    each run's value (or value(run, metric) per row) and whether it holds the row."""
    parts: list[pd.DataFrame] = []
    for run, name in zip(runs, names, strict=True):
        table = _table(run)
        part = table[ids].copy()
        if parts and not len(part):  # an empty CSV reads its id columns as text
            part = part.astype(parts[0][ids].dtypes.to_dict())
        cells = table[metric].to_numpy(float) if value is None else value(run, metric)
        columns: dict[str, Any] = {name: cells, f"\0{name}": True}
        parts.append(part.assign(**columns))
    # a left merge keeps the keys' order; an outer one would sort them (estimator names, alphabetically)
    merged = pd.concat([p[ids] for p in parts], ignore_index=True).drop_duplicates(ignore_index=True)
    for part in parts:
        merged = merged.merge(part, on=ids, how="left", validate="one_to_one")
    flags = [f"\0{n}" for n in names]  # which run holds the row; a NaN value alone cannot say
    present = merged[flags].astype("boolean").fillna(False).astype(bool)
    present.columns = names
    return merged.drop(columns=flags), present


def _mode(values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    return "ratio" if len(finite) and ((finite > 0).all() or (finite < 0).all()) else "difference"


def _changes(table: pd.DataFrame, names: list[str], mode: str) -> pd.DataFrame:
    ref = table[names[0]].to_numpy(float)
    sign = " / " if mode == "ratio" else " - "
    with np.errstate(all="ignore"):  # inf / inf, x / nan: nan, as the cell then shows
        return pd.DataFrame(
            {
                f"{n}{sign}{names[0]}": (
                    table[n].to_numpy(float) / ref if mode == "ratio" else table[n].to_numpy(float) - ref
                )
                for n in names[1:]
            }
        )


# -- rendering ----------------------------------------------------------------------------------


def auto_every(cmp: Comparison) -> int:
    """Every row id up to AUTO_ROWS of them, else about AUTO_ROWS / 2, as `show` thins layers."""
    n = cmp.table[cmp.ids[0]].nunique()
    return 1 if n <= AUTO_ROWS else math.ceil(n / (AUTO_ROWS // 2))


def render(cmp: Comparison, every: int | None = None) -> list:
    """The runs, the settings that differ, the side-by-side rows and the verdict lines."""
    runs = ", ".join(
        f"{n} = {d if d is not None else 'in memory'} ({s})"
        for n, d, s in zip(cmp.names, cmp.dirs, cmp.statuses, strict=True)
    )
    parts: list[Text | Table] = [Text(f"{len(cmp.names)} {cmp.study} runs: {runs}")]
    if cmp.settings:
        t = report.table(["setting", *cmp.names], title="settings that differ", justify="left")
        for k, vs in cmp.settings.items():
            t.add_row(k, *["-" if v is None else results.word(v) for v in vs])
        parts.append(t)
    else:
        parts.append(Text("settings: the same in every run"))
    every = every or auto_every(cmp)
    shown = cmp.rows(every)
    parts.append(_rows_table(cmp, shown))
    if len(shown) < len(cmp.table):
        parts.append(
            Text(
                f"showing {len(shown)} of {len(cmp.table)} rows (every {every}-th {cmp.ids[0]}, the first "
                "and last, each run's last, and any row named below); --format csv has them all"
            )
        )
    return [*parts, Text("\n".join(verdict(cmp)))]


def _rows_table(cmp: Comparison, shown: list[int]) -> Table:
    title = f"{cmp.metric}, and each run's {cmp.mode} to {cmp.names[0]}"
    t = report.table([*cmp.ids, *cmp.names, *cmp.change_columns], title=title)
    whole = cmp.present.all(axis=1)
    first = cmp.first
    for i in shown:
        cells = [_cell(cmp.table[c].iloc[i]) for c in cmp.ids]
        cells += [report.fmt(float(cmp.table[n].iloc[i])) if cmp.present[n].iloc[i] else "missing" for n in cmp.names]
        cells += [report.fmt(float(cmp.table[c].iloc[i])) if whole.iloc[i] else "-" for c in cmp.change_columns]
        t.add_row(*cells, style="red" if i == first else None)
    return t


def verdict(cmp: Comparison) -> list[str]:
    """Where the runs part (or that they agree), and the rows some run lacks."""
    tol = f"rtol {cmp.rtol:g}, atol {cmp.atol:g}"
    first, shared = cmp.first, cmp.shared
    if cmp.identical:
        lines = [f"identical: the same settings and exactly the same {cmp.metric} in all {shared} rows"]
    elif first is not None:
        ref = float(cmp.table[cmp.names[0]].iloc[first])
        k = next(
            n
            for n in cmp.names[1:]
            if not np.isclose(float(cmp.table[n].iloc[first]), ref, rtol=cmp.rtol, atol=cmp.atol, equal_nan=True)
        )
        n_bad = int((cmp.differs == True).sum())  # noqa: E712
        lines = [
            f"first difference: {cmp.row_id(first)}: {k} has {report.fmt(float(cmp.table[k].iloc[first]))}, "
            f"{cmp.names[0]} {report.fmt(ref)} ({tol}); {n_bad} of {shared} shared rows differ"
        ]
    else:
        where = "every row" if not cmp.missing else f"all {shared} rows every run holds"
        lines = [f"agree: {cmp.metric} is the same within {tol} in {where}"]
    for name, n in cmp.missing.items():
        i = cmp.names.index(name)
        rows = np.flatnonzero(~cmp.present[name].to_numpy())
        lines.append(
            f"missing: {name} ({cmp.statuses[i]}) lacks {n} of {len(cmp.table)} rows, "
            f"{cmp.row_id(int(rows[0]))} to {cmp.row_id(int(rows[-1]))}"
        )
    return lines
