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
    theory: bool = False  # each line's theory_<metric> dashed over it, where the results have one
    mathtext: bool = False  # the title read as matplotlib mathtext ($x^2$); else plain text, $ signs kept


THEORY = "theory_"  # a statistic's prediction is the column theory_<statistic> (theory_std)


def theory_of(metric: str, opts: Options | None) -> str | None:
    """The column to draw dashed over `metric`'s lines: theory_<metric> when opts.theory."""
    return THEORY + metric if opts is not None and opts.theory else None


THEORY_DASHES = (0, (4, 1.5))  # thin short dashes, unlike LINESTYLES' "--" (which may tell sources apart)


def darker(color) -> tuple[float, float, float]:
    """`color` at 55% of its brightness: a theory line drawn on its own line still shows."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return (0.55 * r, 0.55 * g, 0.55 * b)


def theory_entry(column: str) -> tuple[Any, str]:
    """The legend's (handle, label) for the dashed theory lines: a grey one stands for every colour."""
    from matplotlib.lines import Line2D

    return Line2D([], [], color="0.3", lw=1.1, ls=THEORY_DASHES), f"dashed: {column}, each line's theory (darker)"


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


def _same(x, y, bx, by) -> bool:
    """Whether the line (x, y) lies on (bx, by) at every x it has (within 0.01%; nan on nan)."""
    at = np.searchsorted(bx, x)
    if (at >= len(bx)).any() or (bx[np.minimum(at, len(bx) - 1)] != x).any():
        return False
    return bool(np.allclose(by[at], y, rtol=1e-4, atol=0, equal_nan=True))


def overlaps(ax) -> list[str]:
    """The panel's labelled lines that lie on top of others, in words: lines the same at every
    x ("init=kaiming = init=xavier": LayerNorm makes every init's output the same), and lines
    the same as part of a longer one ("depth=10, depth=20 = part of depth=50": the shallower
    runs of a seed are the deeper one's first layers), each said once."""
    groups: list[tuple[np.ndarray, np.ndarray, list[str]]] = []  # lines equal at every x, drawn order
    for ln in ax.lines:
        text = ln.get_label()
        x, y = np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)
        if not text or text.startswith("_") or not len(y):
            continue
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        for gx, gy, names in groups:
            if gx.shape == x.shape and _same(x, y, gx, gy):
                names.append(text)
                break
        else:
            groups.append((x, y, [text]))
    under: dict[int, list[list[str]]] = {}  # a group -> the shorter groups that lie on it
    for gx, gy, names in groups:
        covers = [i for i, (bx, by, _) in enumerate(groups) if len(bx) > len(gx) and _same(gx, gy, bx, by)]
        if covers:  # the longest: depth=10 is part of depth=20 and of depth=50, said once
            under.setdefault(max(covers, key=lambda i: len(groups[i][0])), []).append(names)
    said = [names for short in under.values() for names in short]
    out = []
    for i, (_, _, names) in enumerate(groups):
        if i in under:
            out.append(_said([*under[i], names]))
        elif len(names) > 1 and names not in said:
            out.append(_said([names]))
    return out


def _said(groups: list[list[str]]) -> str:
    """Groups of equal lines in words, the last the one the others are part of: "A = B" or
    "A and B = C = part of D", with the settings every label shares said once in front
    ("norm=none: norm_position=pre = norm_position=post"; labels are "key=value, key=value")."""
    labels = [name for names in groups for name in names]
    common = [p for p in labels[0].split(", ") if all(p in name.split(", ") for name in labels)]

    def short(name: str) -> str:
        return ", ".join(p for p in name.split(", ") if p not in common)

    if not all(short(name) for name in labels):
        common = []  # a label that is nothing but the shared settings: say them all
    words = [" = ".join(short(name) for name in names) for names in groups]
    text = words[0] if len(words) == 1 else f"{' and '.join(words[:-1])} = part of {words[-1]}"
    return f"{', '.join(common)}: {text}" if common else text


def note_overlaps(ax) -> None:
    """Say which labelled lines of the panel lie on top of each other (overlaps): a config that
    seems missing from the plot is under another."""
    import textwrap

    hidden = [textwrap.fill(text, 72, subsequent_indent="    ") for text in overlaps(ax)]  # within a panel
    if hidden:  # an empty legend's title: matplotlib puts it where it hides the least ("best")
        note = ax.legend(
            [], [], title="on top of each other:\n" + "\n".join(hidden), loc="best", frameon=False, title_fontsize=7.5
        )
        note.get_title().set_color("0.25")
        note.set_gid("overlaps")  # what tests find it by
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
