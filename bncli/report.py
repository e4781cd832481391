"""Rich renderables shared by the studies' renderers. Nothing here prints: the CLI decides where
output goes. Each study renders its own result (`render` in bncli/studies/*.py) from these."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from rich.table import Table
from rich.text import Text

from bncli.errors import plural


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


def table(columns: list[str], title: str | None = None, justify: str = "right") -> Table:
    t = Table(title=title, header_style="bold")
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


def pm(values) -> str:
    """`0.583 ± 0.004` over seeds; `-` when no seed has a value."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return "-"
    mean = num(float(v.mean()))
    if len(v) < 2:
        return mean
    sd = float(v.std(ddof=1))
    return f"{mean} ± " + (f"{sd:.3f}" if "e" not in mean and mean != "nan" else fmt(sd))  # same precision


def sweep_configs(summary: pd.DataFrame, keys: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """(grid values, rows) per config, in the sweep's order."""
    if not keys:
        return [((), summary)]
    groups = summary.groupby(keys, sort=False, dropna=False)
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in groups]


def sweep_summary(summary: pd.DataFrame, keys: list[str], study, title: str | None = None) -> Table:
    """One row per config: the grid values, the seeds, the study's own SWEEP_COLUMNS over its
    finished runs (study.sweep_cells), and the failed runs when any failed."""
    failed_any = (summary["status"] == "failed").any()
    t = Table(title=title, header_style="bold")
    for k in keys:
        t.add_column(k, overflow="fold")
    for c in ["seeds", *study.SWEEP_COLUMNS] + (["failed"] if failed_any else []):
        t.add_column(c, justify="right", overflow="fold")
    for values, g in sweep_configs(summary, keys):
        runs = g.groupby("run", sort=False) if "run" in g else g.groupby("seed", sort=False)
        done = [r for _, r in runs if r["status"].iloc[0] in ("ok", "diverged")]
        failed = sum(r["status"].iloc[0] == "failed" for _, r in runs)
        cells = [str(v) for v in values] + [str(runs.ngroups)] + study.sweep_cells(done)
        if failed_any:
            cells.append(Text(str(failed), "bold red") if failed else "0")
        t.add_row(*cells)
    return t


def sweep_counts(summary: pd.DataFrame) -> Text:
    """`60 runs: 55 ok, 5 diverged, 0 failed`."""
    status = summary.groupby("run", sort=False)["status"].first()
    counts = {s: int((status == s).sum()) for s in ("ok", "diverged", "failed")}
    return Text(f"{plural(len(status), 'run')}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))


def status_line(meta: dict) -> str:
    return f"status: {meta.get('status')}" + (f" ({meta['error']})" if meta.get("error") else "")
