"""probe's plot: Brock et al.'s signal-propagation plot against tap index, module names on the axis.

    bncli plot results/probe/RUN1 results/probe/RUN2 --metric std

A panel per statistic (chan_sq_mean and chan_var by default, as Brock et al. draw them; one
for --metric), a line per config with its ±1 sd band over seeds, an x where a run diverged;
the x axis is the tap index, labelled with the first line's module names.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bncli import figures

SPP = ["chan_sq_mean", "chan_var"]
MAX_TICKS = 24  # module names on the axis at most: more would overlap


def draw(plt: Any, table: pd.DataFrame, metric: str | None, opts: figures.Options | None = None) -> Any:
    metrics = [metric] if metric else [m for m in SPP if table[m].notna().any()] or ["std"]
    styles = figures.line_styles(table)
    panels = figures.panels(table, opts)
    n = len(table.drop_duplicates("index"))
    width = min(14.0, max(5.5, 0.22 * n))
    fig, axes = figures.subplots(plt, len(panels), len(metrics), width, 5.0)
    diverged = False
    for r, (name, rows) in enumerate(panels):
        for ax, m in zip(axes[r * len(metrics) : (r + 1) * len(metrics)], metrics, strict=True):
            log = figures.use_log(rows[m], opts)
            for parts, g in figures.groups(rows):
                done = g[g["status"].isin(("ok", "diverged"))]
                if not done.empty:
                    diverged |= _line(ax, done, m, styles[parts], log)
            ax.set_yscale("log" if log else "linear")
            ax.set_title(m if name is None else f"{m}: {name}")
            ax.set_ylabel(m + (" (log scale)" if log else ""))
            ax.grid(True, which="major", alpha=0.3)
            _ticks(ax, rows)
    figures.title(fig, axes, f"signal propagation at init ({figures.seeds_note(table)})", opts)
    extra: list[tuple[Any, str]] = []
    if diverged:
        from matplotlib.lines import Line2D

        extra.append((Line2D([], [], marker="x", ls="none", color="0.3", ms=8, mew=2), "diverged (first non-finite)"))
    figures.legend(axes[len(metrics) - 1], axes, extra)
    return fig


def _ticks(ax: Any, rows: pd.DataFrame) -> None:
    """Tap indices labelled with the first line's module names, at most MAX_TICKS of them."""
    first = rows[rows["line"] == rows["line"].iloc[0]].drop_duplicates("index").sort_values("index")
    step = max(1, -(-len(first) // MAX_TICKS))
    shown = first.iloc[::step]
    ax.set_xticks(shown["index"].to_numpy(float))
    ax.set_xticklabels([str(m) for m in shown["module"]], rotation=90, fontsize=7)
    ax.set_xlabel("tap")


def _line(ax: Any, done: pd.DataFrame, metric: str, st: dict, log: bool) -> bool:
    """One config's mean line and band; True when a run of it diverged (and got an x)."""
    x, mean, sd, n = figures.mean_sd(done, "index", metric)
    if log:
        mean = np.where(mean > 0, mean, np.nan)
    ax.plot(x, mean, label=done["label"].iloc[0], lw=1.6, marker=".", ms=4, **st)
    if n > 1:
        lo, hi = mean - sd, mean + sd
        if log:
            lo = mean * mean / hi
        ax.fill_between(x, lo, hi, color=st["color"], alpha=0.15, lw=0)
    hit = False
    for _, run in done[done["status"] == "diverged"].groupby("run" if "run" in done else "seed", sort=False):
        values = run[metric].astype(float)
        bad = run[~np.isfinite(values)]
        finite = run[np.isfinite(values)]
        if len(bad) and len(finite):
            before = finite[finite["index"] < bad["index"].iloc[0]]
            if len(before):
                ax.plot(
                    before["index"].iloc[-1],
                    before[metric].iloc[-1],
                    marker="x",
                    ms=8,
                    mew=2,
                    color=st["color"],
                    ls="none",
                )
                hit = True
    return hit
