"""Drawing helpers the studies' `draw` functions share: groups, styles, panels, mean and sd
over seeds, the y scale, the title and the legend.

A study draws on a long table with `line` (the rows of one line), `label`, `parts` (the
settings that tell lines apart, for the styles), `seed`, `status`, `setting:<field>` columns
and its own, as bncli.plot.load builds it, following an Options. matplotlib is imported by
the caller (results.write_plot), on the Agg backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from bncli.lazy import lazy

    np = lazy("numpy")

LINESTYLES = ["-", "--", ":", "-."]
SETTING = "setting:"  # the loaded table's settings columns: setting:init holds results.word of init


@dataclass(frozen=True)
class Options:
    """What `bncli plot` asks of a study's figure; None leaves the choice to the study."""

    logy: bool | None = None  # a log y axis (None: where the values span over two decades)
    title: str | None = None  # the figure's title instead of the study's
    facet: str | None = None  # a column of the table: one panel per value (None: one panel)
    note: str = ""  # what the rows were picked by (--where), for the title
    mathtext: bool = False  # the title read as matplotlib mathtext ($x^2$); else plain text, $ signs kept


def styles(groups: list[tuple]) -> dict[tuple, dict]:
    """Line style by the last key when it has 2-4 values (the second grid key, or the source
    when several are plotted), colour by the rest; else a colour each."""
    import matplotlib

    rest = list(dict.fromkeys(p[:-1] for p in groups))
    last = list(dict.fromkeys(p[-1] for p in groups if p))
    split = all(len(p) == len(groups[0]) > 1 for p in groups) and 1 < len(last) <= len(LINESTYLES) and len(rest) <= 20
    palette = matplotlib.colormaps["tab10" if (len(rest) if split else len(groups)) <= 10 else "tab20"]
    out = {}
    for i, p in enumerate(groups):
        if split:
            out[p] = {"color": palette(rest.index(p[:-1]) % palette.N), "linestyle": LINESTYLES[last.index(p[-1])]}
        else:  # the sources alone: a style each as well, as a deeper sweep's first layers match a shallower's
            alone = len(p) == 1 and not p[0][0] and len(groups) <= len(LINESTYLES)
            out[p] = {"color": palette(i % palette.N), "linestyle": LINESTYLES[i] if alone else "-"}
    return out


def line_styles(table: pd.DataFrame) -> dict[tuple, dict]:
    """styles() of every line's parts in the table: the same config looks the same in every panel."""
    return styles(list(dict.fromkeys(table["parts"])))


def mean_sd(g: pd.DataFrame, x: str, metric: str):
    """(x values, mean, sd, seeds) of `metric` over the seeds of one group; inf counts as missing."""
    v = g[[x, metric]].copy()
    v[metric] = v[metric].astype(float).replace([np.inf, -np.inf], np.nan)
    s = v.groupby(x, sort=True)[metric].agg(["mean", "std", "count"])
    return s.index.to_numpy(), s["mean"].to_numpy(), s["std"].to_numpy(), int(g["seed"].nunique())


def decades(values) -> float:
    """log10(max / min) of the finite positive values (0 when there are none)."""
    v = np.asarray(values, dtype=float)
    pos = v[np.isfinite(v) & (v > 0)]
    return float(np.log10(pos.max() / pos.min())) if len(pos) else 0.0


def log_scale(values) -> bool:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return len(v) > 0 and (v >= 0).all() and decades(v) > 2


def use_log(values, opts: Options | None) -> bool:
    """--logy or --linear where given, else log when the values span over two decades."""
    return opts.logy if opts is not None and opts.logy is not None else log_scale(values)


def groups(table: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """(parts, rows) of each line, in order."""
    key = "line" if "line" in table else "parts"
    return [(g["parts"].iloc[0], g) for _, g in table.groupby(key, sort=False)]


def seeds_note(table: pd.DataFrame) -> str:
    """'mean and ±1 sd over 5 seeds' (3-5 where lines have different counts), or 'one seed'."""
    n = sorted({int(g["seed"].nunique()) for _, g in groups(table)})
    if n[-1] <= 1:
        return "one seed"
    return f"mean and \u00b11 sd over {n[0] if len(n) == 1 else f'{n[0]}-{n[-1]}'} seeds"


def panels(table: pd.DataFrame, opts: Options | None) -> list[tuple[str | None, pd.DataFrame]]:
    """(title, rows) of each panel: one per value of opts.facet, in order; else one untitled."""
    facet = opts.facet if opts is not None else None
    if not facet:
        return [(None, table)]
    name = facet.removeprefix(SETTING)
    return [(f"{name}={v}" if facet.startswith(SETTING) else str(v), g) for v, g in table.groupby(facet, sort=False)]


def subplots(plt, rows: int, cols: int, width: float, height: float, n: int | None = None):
    """(figure, the first n axes in reading order): y scales independent, the spare cells off."""
    n = rows * cols if n is None else n
    # constrained: room for the panels' titles under the figure's, and for the legend beside them
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols + 2.5, height * rows), squeeze=False, layout="constrained"
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def title(fig, axes: list, text: str, opts: Options | None) -> None:
    """The figure's title (opts.title, else `text` with the --where note): above the only
    panel, else above them all. Plain text (a `$` is a dollar sign), unless opts.mathtext."""
    if opts is not None and opts.title is not None:
        text = opts.title
    elif opts is not None and opts.note:
        text = f"{text}; {opts.note}"
    math = opts is not None and opts.mathtext
    if len(axes) == 1 and not axes[0].get_title():
        axes[0].set_title(text, parse_math=math)
    else:
        fig.suptitle(text, parse_math=math)


def note_overlaps(ax) -> None:
    """Say which labelled lines of the panel lie on top of each other (within 0.01%): a config
    that seems missing from the plot (LayerNorm makes every init's output the same) is under another."""
    groups: list[tuple[np.ndarray, np.ndarray, list[str]]] = []
    for ln in ax.lines:
        text = ln.get_label()
        x, y = np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)
        if not text or text.startswith("_") or not len(y):
            continue
        for gx, gy, names in groups:
            if gx.shape == x.shape and (gx == x).all() and np.allclose(gy, y, rtol=1e-4, atol=0, equal_nan=True):
                names.append(text)
                break
        else:
            groups.append((x, y, [text]))
    hidden = [" = ".join(names) for _, _, names in groups if len(names) > 1]
    if hidden:  # an empty legend's title: matplotlib puts it where it hides the least ("best")
        note = ax.legend(
            [], [], title="on top of each other:\n" + "\n".join(hidden), loc="best", frameon=False, title_fontsize=7.5
        )
        note.get_title().set_color("0.25")
        ax.add_artist(note)  # stays when the figure's legend goes on this panel
        ax.legend_ = None


def legend(anchor, axes: list, extra: Sequence[tuple[Any, str]] = ()) -> None:
    """One legend for all panels, right of `anchor`: each label once, then `extra` (handle, label)."""
    seen: dict = {}
    for ax in axes:
        for h, text in zip(*ax.get_legend_handles_labels(), strict=True):
            if text and not text.startswith("_"):
                seen.setdefault(text, h)
    for h, text in extra:
        seen.setdefault(text, h)
    anchor.legend(
        list(seen.values()),
        list(seen),
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
        ncol=1 if len(seen) <= 24 else 2,
    )
