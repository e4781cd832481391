"""Rich renderables for results. Nothing here prints: the CLI decides where output goes."""

from __future__ import annotations

import math

from rich.table import Table
from rich.text import Text


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}" if v == 0 or 1e-3 <= abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def _num(v: float) -> str:
    """Three decimals where that reads well (0.583), scientific elsewhere (4.50e+37)."""
    return f"{v:.3f}" if math.isfinite(v) and (v == 0 or 1e-2 <= abs(v) < 1e4) else fmt(float(v))


def auto_every(depth: int) -> int:
    """Every layer up to 100 layers, then about 50 rows."""
    return 1 if depth <= 100 else math.ceil(depth / 50)


def shown_layers(n: int, every: int, diverged_at: int | None = None) -> list[int]:
    """Every `every`-th layer, plus the first, the last and the diverging one, always."""
    keep = set(range(0, n, every)) | {0, n - 1}
    if diverged_at is not None:
        keep.add(diverged_at)
    return sorted(i for i in keep if 0 <= i < n)


def depth_table(table, every: int | None = None, diverged_at: int | None = None,
                title: str | None = None) -> Table:
    every = every or auto_every(len(table))
    t = Table(title=title, header_style="bold")
    cols = shown_columns(table)
    for col in cols:
        t.add_column(col, justify="right")
    for i in shown_layers(len(table), every, diverged_at):
        row = table.iloc[i]
        style = "red" if i == diverged_at else None
        t.add_row(*[str(int(row[c])) if c == "layer" else fmt(float(row[c])) for c in cols],
                  style=style)
    return t


def shown_columns(table) -> list[str]:
    """Columns with any value: an off statistic (all "" in memory, all nan read from CSV) is not shown."""
    import pandas as pd

    def on(col) -> bool:
        v = table[col]
        if not pd.api.types.is_numeric_dtype(v):  # "" cells: str or object dtype
            v = pd.to_numeric(v.replace("", float("nan")), errors="coerce")
        return len(v) == 0 or not v.isna().all()

    return [c for c in table.columns if on(c)]


def growth(values, backwards: bool = False) -> float | None:
    """Geometric-mean factor per layer, first to last finite positive value (last to first
    when `backwards`, as for gradients); None when fewer than two such layers."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    ok = np.flatnonzero(np.isfinite(v) & (v > 0))
    if len(ok) < 2:
        return None
    a, b = ok[0], ok[-1]
    ratio = v[a] / v[b] if backwards else v[b] / v[a]
    return float(ratio ** (1 / (b - a)))


def depth_summary(table, diverged_at: int | None, status: str = "ok", info: dict | None = None) -> Text:
    """`std over 100 layers: min 0.570, max 0.595, last 0.583`, the growth factors per layer
    of std and (going backwards) grad_std, and, if so, where it diverged."""
    lines = []
    finite = table["std"][table["std"].map(math.isfinite)]
    if len(finite):
        lines.append(f"std over {len(table)} layers: min {_num(finite.min())}, "
                     f"max {_num(finite.max())}, last {_num(table['std'].iloc[-1])}")
    g = growth(table["std"]) if len(table) else None
    if g is not None:
        lines.append(f"std growth per layer: x{g:.4f} (geometric mean, first to last layer)")
    cols = shown_columns(table)
    g = growth(table["grad_std"], backwards=True) if "grad_std" in cols else None
    if g is not None:
        pred = (info or {}).get("grad_growth_theory")
        lines.append(f"grad_std growth per layer, going backwards: x{g:.4f}"
                     + (f" (mean-field theory, Yang et al. 2019: x{pred:.4f})" if pred else ""))
    if diverged_at is not None:
        lines.append(f"diverged: non-finite output at layer {diverged_at}")
    if status == "interrupted":
        lines.append(f"interrupted after {len(table)} layers")
    return Text("\n".join(lines))


def agrees(table, dtype: str = "float32"):
    """Does torch's running stat match the formula, to the precision of `dtype`?"""
    import numpy as np

    rtol, atol = (1e-5, 1e-6) if dtype == "float32" else (1e-12, 1e-14)
    return (np.isclose(table["running_mean"], table["expected_mean"], rtol=rtol, atol=atol)
            & np.isclose(table["running_var"], table["expected_var"], rtol=rtol, atol=atol))


def running_table(table, dtype: str = "float32", title: str | None = None) -> Table:
    t = Table(title=title, header_style="bold")
    for col in (*table.columns, "matches formula"):
        t.add_column(col, justify="right")
    for ok, (_, row) in zip(agrees(table, dtype), table.iterrows(), strict=True):
        cells = [str(int(row[c])) if c in ("iteration", "channel") else fmt(float(row[c]))
                 for c in table.columns]
        t.add_row(*cells, Text("yes", "green") if ok else Text("NO", "bold red"))
    return t


def shapes_line(shapes: dict) -> Text:
    return Text("  ".join(f"{k} {tuple(v)}" for k, v in shapes.items()))


def running_summary(table, shapes: dict, dtype: str = "float32") -> Text:
    ok = agrees(table, dtype)
    verdict = (f"torch matches the update formula on all {len(table)} values" if ok.all()
               else f"torch differs from the update formula on {int((~ok).sum())} of {len(table)} values")
    return Text(f"{verdict}\nshapes: ") + shapes_line(shapes)


def _pm(values) -> str:
    """`0.583 ± 0.004` over seeds; `-` when no seed has a value."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return "-"
    mean = _num(float(v.mean()))
    if len(v) < 2:
        return mean
    sd = float(v.std(ddof=1))
    return f"{mean} ± " + (f"{sd:.3f}" if "e" not in mean and mean != "nan" else fmt(sd))  # same precision


def sweep_configs(summary, keys: list[str]) -> list[tuple[tuple, object]]:
    """(grid values, rows) per config, in the sweep's order."""
    if not keys:
        return [((), summary)]
    groups = summary.groupby(keys, sort=False, dropna=False)
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in groups]


def sweep_summary(summary, keys: list[str], study: str, title: str | None = None) -> Table:
    """One row per config: depth studies give the last layer's std as mean ± sd over seeds, the
    min and max std over layers and seeds, and how many seeds diverged; running-stats sweeps
    give the largest gap between torch's running stats and the formula, and the final
    running_var."""
    import numpy as np

    failed_any = (summary["status"] == "failed").any()
    t = Table(title=title, header_style="bold")
    for k in keys:
        t.add_column(k, no_wrap=True)
    t.add_column("seeds", justify="right", no_wrap=True)
    if study == "depth-study":
        cols = ["last-layer std", "min std", "max std", "diverged"]
    else:
        cols = ["final running_var", "max |mean err|", "max |var err|", "matches formula"]
    for c in cols + (["failed"] if failed_any else []):
        t.add_column(c, justify="right", no_wrap=True)
    for values, g in sweep_configs(summary, keys):
        runs = g.groupby("run", sort=False) if "run" in g else g.groupby("seed", sort=False)
        done = [r for _, r in runs if r["status"].iloc[0] in ("ok", "diverged")]
        failed = sum(r["status"].iloc[0] == "failed" for _, r in runs)
        cells = [str(v) for v in values] + [str(runs.ngroups)]
        if study == "depth-study":
            std = np.concatenate([r["std"].to_numpy(float) for r in done]) if done else np.array([])
            std = std[np.isfinite(std)]
            last = [r["std"].iloc[-1] for r in done if r["status"].iloc[0] == "ok"]
            diverged = sum(r["status"].iloc[0] == "diverged" for r in done)
            cells += [_pm(last), _num(float(std.min())) if len(std) else "-",
                      _num(float(std.max())) if len(std) else "-", f"{diverged}/{len(done)}"]
        else:
            def gap(col, r):
                return float(np.abs(r[f"running_{col}"] - r[f"expected_{col}"]).max()) if len(r) else float("nan")

            final = [r[r["iteration"] == r["iteration"].max()]["running_var"].mean() for r in done]
            match = sum(bool(agrees(r, str(r["dtype"].iloc[0]) if "dtype" in r else "float32").all()) for r in done)
            cells += [_pm(final), fmt(max((gap("mean", r) for r in done), default=float("nan"))),
                      fmt(max((gap("var", r) for r in done), default=float("nan"))), f"{match}/{len(done)}"]
        if failed_any:
            cells.append(Text(str(failed), "bold red") if failed else "0")
        t.add_row(*cells)
    return t


def sweep_counts(summary) -> Text:
    """`60 runs: 55 ok, 5 diverged, 0 failed`."""
    status = summary.groupby("run", sort=False)["status"].first()
    counts = {s: int((status == s).sum()) for s in ("ok", "diverged", "failed")}
    return Text(f"{len(status)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))


def convergence_table(table, steps: dict, title: str | None = None) -> Table:
    """One row per estimator: steps to stay within 1% of the truth, and its last errors."""
    last = table[table["iteration"] == table["iteration"].max()]
    n = int(table["iteration"].max()) + 1
    t = Table(title=title, header_style="bold")
    for col in ("estimator", "steps to within 1%", "mean_error", "var_error", "train_eval_gap"):
        t.add_column(col, justify="right")
    for name, g in last.groupby("estimator", sort=False):
        k = steps.get(name)
        t.add_row(name, str(k) if k is not None else f"not in {n}",
                  *[fmt(float(g[c].max())) for c in ("mean_error", "var_error", "train_eval_gap")])
    t.caption = (f"after {n} iterations; errors are the worst channel's: |mean - mu| / sigma and "
                 "|var / sigma^2 - 1|; gap: RMS of eval-mode minus train-mode output")
    return t
