"""Drawing helpers the studies' `draw` functions share: groups, styles, mean and sd over seeds.

A study draws on a long table with `label`, `parts` (the settings that tell configs apart),
`seed`, `status` and its own columns, as bncli.plot.load builds it. matplotlib is imported
by the caller (results.write_plot), on the Agg backend.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LINESTYLES = ["-", "--", ":", "-."]


def styles(groups: list[tuple]) -> dict[tuple, dict]:
    """Colour by the first grid key, line style by the second (when it has few values)."""
    import matplotlib

    first = list(dict.fromkeys(p[0] if p else () for p in groups))
    second = list(dict.fromkeys(p[1] for p in groups if len(p) > 1))
    two = all(len(p) == 2 for p in groups) and 1 < len(second) <= len(LINESTYLES) and len(first) <= 10
    palette = matplotlib.colormaps["tab10" if (two or len(groups) <= 10) else "tab20"]
    out = {}
    for i, p in enumerate(groups):
        if two:
            out[p] = {"color": palette(first.index(p[0])), "linestyle": LINESTYLES[second.index(p[1])]}
        else:
            out[p] = {"color": palette(i % palette.N), "linestyle": "-"}
    return out


def mean_sd(g: pd.DataFrame, x: str, metric: str):
    """(x values, mean, sd, seeds) of `metric` over the seeds of one group; inf counts as missing."""
    v = g[[x, metric]].copy()
    v[metric] = v[metric].astype(float).replace([np.inf, -np.inf], np.nan)
    s = v.groupby(x, sort=True)[metric].agg(["mean", "std", "count"])
    return s.index.to_numpy(), s["mean"].to_numpy(), s["std"].to_numpy(), int(g["seed"].nunique())


def log_scale(values) -> bool:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    pos = v[v > 0]
    return len(pos) > 0 and (v >= 0).all() and pos.max() / pos.min() > 100


def groups(table: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    parts = list(dict.fromkeys(table["parts"]))
    return [(p, table[table["parts"] == p]) for p in parts]


def legend(ax, n: int) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, ncol=1 if n <= 24 else 2)
