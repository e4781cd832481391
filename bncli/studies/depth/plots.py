"""The depth study's plots: a metric against layer, and Brock et al.'s signal-propagation plot.

    bncli plot results/sweeps/init_vs_norm --metric abs_max --facet norm

`draw` and `auto_facet` are the depth study's own (bncli/studies/base.py, Study); the helpers
they share with the other studies are in bncli/figures.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bncli import figures

SPP = ["chan_sq_mean", "chan_var", "branch_var"]  # Brock et al.'s signal-propagation plot
TOKENS = ["std", "token_cos", "erank", "weight_grad_norm"]  # a transformer's: scale, rank collapse, gradients


def draw(plt: Any, table: pd.DataFrame, metric: str | None, opts: figures.Options | None = None) -> Any:
    """`metric` (default std) against layer, log-scaled when it spans decades; an x where a run
    diverged; a note naming the lines that lie on others; with opts.theory each line's
    theory_<metric> dashed over it; a panel per value of opts.facet, those of comparable values
    on one shared y axis (shared), the others on their own. Conv and ResNet runs
    (a `stage` column) default to Brock et al.'s signal propagation plot, a panel per statistic
    (a row per facet value), with the stage boundaries marked; transformer runs (a `token_cos`
    column) to a panel each for std, token_cos and, where computed, erank and weight_grad_norm."""
    if "stage" in table.columns and table["stage"].notna().any():
        return _draw_maps(plt, table, [metric] if metric else [m for m in SPP if table[m].notna().any()], opts)
    if "token_cos" in table.columns and table["token_cos"].notna().any() and metric is None:
        return _draw_maps(plt, table, [m for m in TOKENS if m in table.columns and table[m].notna().any()], opts)
    metric = metric or "std"
    styles = figures.line_styles(table)
    panels = figures.panels(table, opts)
    cols = min(len(panels), 3)
    fig, axes = figures.subplots(
        plt, -(-len(panels) // cols), cols, 10 if cols == 1 else 5, 5.5 if cols == 1 else 4.2, len(panels)
    )
    any_diverged = False
    theory = figures.theory_of(metric, opts)
    logs = [figures.use_log(rows[metric], opts) for _, rows in panels]
    for ax, (name, rows), log in zip(axes, panels, logs, strict=True):
        for parts, g in figures.groups(rows):
            done = g[g["status"].isin(("ok", "diverged"))]
            if not done.empty:
                any_diverged |= _draw_group(ax, done, metric, styles[parts], log, theory)
        ax.set_yscale("log" if log else "linear")
        if not log and (rows[metric].dropna() >= 0).all():  # a std that holds at 0.58 reads flat,
            ax.set_ylim(0, ax.get_ylim()[1] * 1.15)  # not as noise magnified
        figures.note_overlaps(ax)
        if name is not None:
            ax.set_title(name)
        ax.set_xlabel("layer")
        ax.set_ylabel(metric + (" (log scale)" if log else ""))
        ax.grid(True, which="major", alpha=0.3)
    values = [_finite(rows, metric, log) for (_, rows), log in zip(panels, logs, strict=True)]
    share(axes, shared(values, logs))
    figures.title(fig, axes, f"{metric} of each layer's output ({figures.seeds_note(table)})", opts)
    extra: list[tuple[Any, str]] = [figures.theory_entry(theory)] if theory else []
    if any_diverged:
        from matplotlib.lines import Line2D

        extra.append(
            (
                Line2D([], [], marker="x", ls="none", color="0.3", ms=8, mew=2),
                "diverged (x at the first non-finite layer)",
            )
        )
    figures.legend(axes[cols - 1], axes, extra)
    return fig


CROWDED = 6  # more lines than this on one axis are a band of colours, not lines to tell apart


def auto_facet(table: pd.DataFrame, metric: str | None, columns: list[str]) -> str | None:
    """A panel per value of a grid key (2-6 panels, each of two lines or more: a panel of one
    line compares nothing) when one axis would hide lines:

    - squashed: the values span ten decades or more and two stable lines or more share the
      axis with a wild one (diverging, or spanning over two decades): next to a config that
      explodes or vanishes, the ones that hold near 1 are flat lines on top of each other. The
      key that leaves the most stable lines in panels without a wild one wins;
    - crowded: over CROWDED lines (12 configs holding at 0.58 are one band). The key with the
      fewest panels of at most CROWDED lines each wins (init x norm: a panel per norm, each
      comparing the inits); else the one with the fewest lines in its fullest panel.

    Panels whose values are comparable share their y axis (draw), so the lines still compare
    across panels."""
    if "stage" in table.columns and table["stage"].notna().any():
        return None  # the signal-propagation plot compares its configs on one axis
    if "token_cos" in table.columns and table["token_cos"].notna().any() and metric is None:
        return None  # so does a transformer's, a panel per statistic
    metric = metric or "std"
    done = table[table["status"].isin(("ok", "diverged"))]
    wild = {k: figures.decades(g[metric]) > 2 or (g["status"] == "diverged").any() for k, g in done.groupby("line")}
    stable = sum(not w for w in wild.values())
    squashed = figures.decades(done[metric]) >= 10 and stable >= 2 and stable < len(wild)
    if not squashed and len(wild) <= CROWDED:
        return None
    best, score = None, None
    for col in columns:
        split = [set(g["line"]) for _, g in done.groupby(col, sort=False)]
        if not 1 < len(split) <= 6 or min(len(lines) for lines in split) < 2:
            continue
        readable = sum(len(lines) for lines in split if not any(wild[k] for k in lines))  # stable, unsquashed
        s = (-readable if squashed else 0, max(max(len(lines) for lines in split), CROWDED), len(split))
        if (not squashed or readable > 0) and (score is None or s < score):
            best, score = col, s
    return best


def shared(values: list[np.ndarray], logs: list[bool]) -> list[list[int]]:
    """Panels that share a y axis, as lists of indexes (the first one leads): those on the same
    scale whose values each fill a third of the axis they would share or more (BatchNorm's std
    at 0.58 and LayerNorm's at 0.59 compare on one axis; a std that explodes to 1e30 and one
    that holds at 1 do not)."""
    groups: list[list[int]] = []
    for i, log in enumerate(logs):
        for g in groups:
            both = np.concatenate([values[k] for k in [*g, i]])
            if logs[g[0]] == log and all(_fills(values[k], both, log) >= 1 / 3 for k in [*g, i]):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def _fills(v: np.ndarray, both: np.ndarray, log: bool) -> float:
    """The share of an axis holding `both` that `v`'s values span (an axis from 0 when all are >= 0)."""
    v, both = v[np.isfinite(v)], both[np.isfinite(both)]
    if log:
        v, both = np.log10(v[v > 0]), np.log10(both[both > 0])
    elif len(both) and (both >= 0).all():
        v, both = np.append(v, 0.0), np.append(both, 0.0)
    if not len(v) or not len(both):
        return 0.0
    span = both.max() - both.min()
    return 1.0 if span == 0 else float((v.max() - v.min()) / span)


def share(axes: list, groups: list[list[int]]) -> None:
    """Give each group of axes one y axis holding every member's limits."""
    for g in groups:
        if len(g) < 2:
            continue
        lo = min(axes[i].get_ylim()[0] for i in g)
        hi = max(axes[i].get_ylim()[1] for i in g)
        for i in g[1:]:
            axes[i].sharey(axes[g[0]])
        axes[g[0]].set_ylim(lo, hi)


def _draw_maps(plt: Any, table: pd.DataFrame, metrics: list[str], opts: figures.Options | None) -> Any:
    """One panel per metric against block (layer), mean and +-1 sd over seeds, stage
    boundaries dashed (where there are stages); a row of them per value of opts.facet, a
    metric's comparable panels on one y axis."""
    styles = figures.line_styles(table)
    panels = figures.panels(table, opts)
    fig, axes = figures.subplots(plt, len(panels), len(metrics), 5.2, 4.8)
    logs = [figures.use_log(rows[m], opts) for _, rows in panels for m in metrics]
    for r, (name, rows) in enumerate(panels):
        for c, m in enumerate(metrics):
            ax, log = axes[r * len(metrics) + c], logs[r * len(metrics) + c]
            for parts, g in figures.groups(rows):
                done = g[g["status"].isin(("ok", "diverged"))]
                if not done.empty:
                    _draw_group(ax, done, m, styles[parts], log, figures.theory_of(m, opts))
            figures.note_overlaps(ax)  # pre- and post-LN without a norm are one network
            if "stage" in rows.columns:
                stages = rows.dropna(subset=["stage"]).groupby("stage")["layer"].min()
            else:
                stages = pd.Series([0])  # one stage: no boundary to mark
            for x in stages.iloc[1:]:
                ax.axvline(x - 0.5, color="0.5", lw=0.8, ls="--")
            ax.set_yscale("log" if log else "linear")
            ax.set_title(m if name is None else f"{m}: {name}")
            ax.set_xlabel("block" if len(stages) > 1 else "layer")
            ax.grid(True, which="major", alpha=0.3)
    for c, m in enumerate(metrics):  # a statistic's panels, a row per facet value, share comparable axes
        column = [axes[r * len(metrics) + c] for r in range(len(panels))]
        clogs = logs[c :: len(metrics)]
        values = [_finite(rows, m, log) for (_, rows), log in zip(panels, clogs, strict=True)]
        share(column, shared(values, clogs))
    what = "signal propagation" if "stage" in table.columns else "the residual stream"
    dashed = "; dashed: a new stage" if "stage" in table.columns else ""
    figures.title(fig, axes, f"{what} ({figures.seeds_note(table)}{dashed})", opts)
    theory = [figures.theory_entry(c) for c in (figures.theory_of(m, opts) for m in metrics) if c and c in table]
    figures.legend(axes[len(metrics) - 1], axes, theory)
    return fig


def _finite(rows: pd.DataFrame, metric: str, log: bool) -> np.ndarray:
    """The panel's plotted values of `metric`: its finished runs', finite (and > 0 on a log axis)."""
    v = rows.loc[rows["status"].isin(("ok", "diverged")), metric].to_numpy(float)
    return v[np.isfinite(v) & ((v > 0) if log else True)]


def _draw_group(ax: Any, done: pd.DataFrame, metric: str, st: dict, log: bool, theory: str | None = None) -> bool:
    """One config's mean line and band, and its `theory` column dashed over it (the mean over
    seeds, as the line: the same for every seed); True when one of its runs diverged (and got an x)."""
    x, mean, sd, n = figures.mean_sd(done, "layer", metric)
    if log:
        mean = np.where(mean > 0, mean, np.nan)  # underflow to 0 cannot sit on a log axis
    ax.plot(x, mean, label=done["label"].iloc[0], lw=1.6, **st)
    if theory is not None and theory in done and done[theory].notna().any():
        tx, predicted, _, _ = figures.mean_sd(done, "layer", theory)
        if log:
            predicted = np.where(predicted > 0, predicted, np.nan)
        ax.plot(
            tx,
            predicted,
            label="_" + theory,
            lw=1.1,
            color=figures.darker(st["color"]),
            ls=figures.THEORY_DASHES,
            gid=theory,
        )
    if n > 1:
        lo, hi = mean - sd, mean + sd
        if log:  # mean - sd can be <= 0, a hole on a log axis: mirror the upper edge in log space
            lo = mean * mean / hi  # = mean - sd + O(sd^2 / mean), for a small sd
        ax.fill_between(x, lo, hi, color=st["color"], alpha=0.15, lw=0)
    diverged = False
    for _, run in done[done["status"] == "diverged"].groupby("run" if "run" in done else "seed", sort=False):
        finite = run[np.isfinite(run[metric].astype(float))]
        if len(finite):
            ax.plot(
                run["layer"].iloc[-1], finite[metric].iloc[-1], marker="x", ms=8, mew=2, color=st["color"], ls="none"
            )
            diverged = True
    return diverged
