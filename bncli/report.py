"""Rich renderables shared by the studies' renderers. Nothing here prints: the CLI decides where
output goes. Each study renders its own result (`render` in bncli/studies/*.py) from these."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from bncli.errors import plural
from bncli.studies.base import Count, MeanSd, Median, Number

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from rich.console import JustifyMethod
else:
    from bncli.lazy import lazy

    np = lazy("numpy")


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}" if v == 0 or 1e-3 <= abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def num(v: float) -> str:
    """Three decimals where that reads well (0.583), scientific elsewhere (4.50e+37)."""
    return f"{v:.3f}" if math.isfinite(v) and (v == 0 or 1e-2 <= abs(v) < 1e4) else fmt(float(v))


class Listing(Table):
    """A table that names the columns a too-narrow terminal leaves out first (`drop`, in order),
    the others kept on one line but for those that may `wrap`; a plain Table loses its last columns."""

    drop: tuple[str, ...] = ()
    wrap: tuple[str, ...] = ()


def table(
    columns: list[str],
    title: str | None = None,
    justify: JustifyMethod = "right",
    drop: list[str] | None = None,
    wrap: list[str] | None = None,
) -> Table:
    t = Listing(title=title, header_style="bold")
    t.drop, t.wrap = tuple(drop or ()), tuple(wrap or ())
    for col in columns:
        t.add_column(col, justify=justify, overflow="fold")  # a narrow screen wraps a cell, never cuts it
    return t


def shown_columns(frame: pd.DataFrame) -> list[str]:
    """Columns with any value: an off statistic (all NaN) is not shown."""
    return [c for c in frame.columns if len(frame) == 0 or not frame[c].isna().all()]


def growth(values, backwards: bool = False) -> float | None:
    """Geometric-mean factor per layer, first to last finite positive value (last to first
    when `backwards`, as for gradients); None when fewer than two such layers."""
    v = np.asarray(values, dtype=float)
    ok = np.flatnonzero(np.isfinite(v) & (v > 0))
    if len(ok) < 2:
        return None
    a, b = ok[0], ok[-1]
    ratio = v[a] / v[b] if backwards else v[b] / v[a]
    return float(ratio ** (1 / (b - a)))


def cell(v: MeanSd | Median | Count | Number) -> str:
    """A summary number as a sweep's table shows it: `0.583 ± 0.004` over seeds (`(4/5)` after it
    when it is over some of them only), a median `912 (7/10)` with how many runs got a value (`-`
    when half or more did not), `5/5`, `0.580` (three decimals, Number "fixed") or `2.384e-07`
    (four significant digits, "sig"); `-` for none."""
    if isinstance(v, Count):
        return f"{v.k}/{v.n}"
    if isinstance(v, Number):
        return "-" if v.value is None else num(v.value) if v.digits == "fixed" else fmt(v.value)
    if isinstance(v, Median):
        value = "-" if v.median is None else fmt(v.median)
        return value if v.reached == v.of else f"{value} ({v.reached}/{v.of})"
    if v.mean is None:
        return "-"
    mean = num(v.mean)
    some = f" ({v.n}/{v.of})" if v.n < v.of else ""  # the mean of a subset says so
    if v.sd is None:
        return mean + some
    return f"{mean} ± " + (f"{v.sd:.3f}" if "e" not in mean and mean != "nan" else fmt(v.sd)) + some


def json_number(v: MeanSd | Median | Count | Number) -> Any:
    """A summary number as --format json gives it: a plain number, or its parts by name."""
    if isinstance(v, Number):
        return v.value
    if isinstance(v, Count):
        return {"count": v.k, "of": v.n}
    if isinstance(v, Median):
        return {"median": v.median, "reached": v.reached, "of": v.of}
    return {"mean": v.mean, "sd": v.sd, "n": v.n, "of": v.of}


def sweep_configs(summary: pd.DataFrame, keys: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """(grid values, rows) per config, in the sweep's order."""
    if not keys:
        return [((), summary)]
    groups = summary.groupby(keys, sort=False, dropna=False)
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in groups]


def sweep_table(configs: list[Any], keys: list[str], names: list[str], title: str | None = None) -> Table:
    """One row per config (a results.ConfigSummary): the grid values, the seeds, the study's
    SUMMARY numbers (`names`) over its finished runs, and the failed runs when any failed."""
    failed_any = any(c.failed for c in configs)
    t = Table(title=title, header_style="bold")
    for k in keys:
        t.add_column(k, overflow="fold")
    for c in ["seeds", *names] + (["failed"] if failed_any else []):
        t.add_column(c, justify="right", overflow="fold")
    for c in configs:
        cells: list[Any] = [str(v) for v in c.values] + [str(c.seeds)] + [cell(c.summary[n]) for n in names]
        if failed_any:
            cells.append(Text(str(c.failed), "bold red") if c.failed else "0")
        t.add_row(*cells)
    return t


def sweep_counts(summary: pd.DataFrame) -> Text:
    """`60 runs: 55 ok, 5 diverged, 0 failed`."""
    status = summary.groupby("run", sort=False)["status"].first()
    counts = {s: int((status == s).sum()) for s in ("ok", "diverged", "failed")}
    return Text(f"{plural(len(status), 'run')}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))


def status_line(meta: dict[str, Any]) -> str:
    return f"status: {meta.get('status')}" + (f" ({meta['error']})" if meta.get("error") else "")
