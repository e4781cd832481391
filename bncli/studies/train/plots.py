"""The train study's figures: curves against step, final loss against learning rate, and a
layer x step heat map of one run's layers.csv.

    bncli plot results/sweeps/bn_paper       # test accuracy, loss and the last layer's percentiles
    bncli plot results/sweeps/lr_tolerance   # final loss against lr, diverged runs marked

A table whose lines differ in lr (and span more than 2 values of it) is drawn as the final loss
against lr, one line per remaining config; otherwise as curves against step: test_acc and loss,
and, where recorded, the 15/50/85th percentiles of the last layer's pre-activation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bncli import figures
from bncli.figures import SETTING, Options

PERCENTILE_COLUMNS = ["last_p15", "last_p50", "last_p85"]


def draw(plt: Any, table: pd.DataFrame, metric: str | None, opts: Options | None = None) -> Any:
    lr = SETTING + "lr"
    if metric is None and lr in table and table[lr].nunique() > 2:
        return draw_lr(plt, table, opts)
    metrics = [metric] if metric else ["test_acc", "loss"]
    if metric is None and table[PERCENTILE_COLUMNS[1]].notna().any():
        metrics.append("percentiles")
    fig, axes = figures.subplots(plt, 1, len(metrics), 5, 4)
    styles = figures.line_styles(table)
    for ax, m in zip(axes, metrics, strict=True):
        for parts, g in figures.groups(table):
            style = styles[parts]
            cols = PERCENTILE_COLUMNS if m == "percentiles" else [m]
            for j, col in enumerate(cols):
                rows = g[g[col].notna()]
                if not len(rows):
                    continue
                x, mean, sd, n = figures.mean_sd(rows, "step", col)
                label = g["label"].iloc[0] if j == len(cols) // 2 else "_"
                ax.plot(
                    x, mean, color=style["color"], linestyle=style["linestyle"], lw=1.6 if j == 1 else 1.0, label=label
                )
                if n > 1:
                    ax.fill_between(x, mean - sd, mean + sd, alpha=0.15, lw=0, color=style["color"])
        ax.set_xlabel("step")
        ax.set_ylabel(m)
        if m == "percentiles":
            ax.set_title("last layer's pre-activation: 15th, 50th, 85th percentiles", fontsize=9)
            ax.set_ylabel("pre-activation")
        elif m == "loss" and figures.use_log(table[m], opts):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    figures.title(fig, axes, f"training ({figures.seeds_note(table)})", opts)
    figures.legend(axes[-1], axes)
    return fig


def _series(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) of each config but for lr: the label less its lr part."""
    key = table["parts"].map(lambda p: tuple(kv for kv in p if kv[0] != "lr"))
    out = []
    for k, g in table.groupby(key, sort=False):
        out.append((", ".join(f"{a}={b}" for a, b in k if a) or "runs", g))
    return out


def final_losses(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its lr, its last finite loss, whether it diverged."""
    rows = []
    for _, g in table.groupby(["source", "run"], sort=False):
        last = g.sort_values("step").iloc[-1]
        rows.append(
            {
                "lr": float(last[SETTING + "lr"]),
                "loss": float(last["loss"]),
                "diverged": last["status"] == "diverged" or not np.isfinite(float(last["loss"])),
            }
        )
    return pd.DataFrame(rows, columns=["lr", "loss", "diverged"])


def draw_lr(plt: Any, table: pd.DataFrame, opts: Options | None = None) -> Any:
    """The final loss against lr (log x), mean over the seeds that did not diverge; a cross at
    the top of the panel for each diverged run."""
    fig, axes = figures.subplots(plt, 1, 1, 6, 4.2)
    ax = axes[0]
    palette = plt.get_cmap("tab10")
    finals = []
    for i, (label, g) in enumerate(_series(table)):
        f = final_losses(g)
        finals.append((i, label, f))
        ok = f[~f["diverged"]].groupby("lr")["loss"].agg(["mean", "std"])
        ax.plot(ok.index, ok["mean"], marker="o", color=palette(i), label=label)
        ax.fill_between(
            ok.index,
            ok["mean"] - ok["std"].fillna(0),
            ok["mean"] + ok["std"].fillna(0),
            alpha=0.15,
            color=palette(i),
            lw=0,
        )
    top = max([float(f.loc[~f["diverged"], "loss"].max()) for _, _, f in finals if (~f["diverged"]).any()] or [1.0])
    for i, _, f in finals:
        bad = f[f["diverged"]].groupby("lr").size()
        if len(bad):
            ax.scatter(bad.index, [top * 1.15] * len(bad), marker="x", s=60, color=palette(i))
    ax.scatter([], [], marker="x", color="0.3", label="diverged (non-finite loss)")
    ax.set_xscale("log")
    if figures.use_log(table["loss"], opts):
        ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final training loss")
    ax.grid(True, alpha=0.3)
    figures.title(fig, axes, f"final loss against learning rate ({figures.seeds_note(table)})", opts)
    figures.legend(ax, [ax])
    return fig


def heatmap(plt: Any, layers: pd.DataFrame, stat: str = "std", title: str | None = None, ax: Any = None) -> Any:
    """One run's layers.csv: `stat` of every layer (rows) at every recorded step (columns), on
    `ax` (or a figure of its own); the figure."""
    grid = layers.pivot_table(index="layer", columns="step", values=stat, aggfunc="mean")
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    steps = grid.columns.to_numpy()
    image = ax.imshow(
        grid.to_numpy(float),
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        cmap="viridis",
        extent=(steps[0], steps[-1], -0.5, len(grid) - 0.5),
    )
    ax.figure.colorbar(image, ax=ax, label=stat)
    ax.set_xlabel("step")
    ax.set_ylabel("layer")
    ax.set_title(title or f"{stat} per layer over training", fontsize=10)
    return ax.figure
