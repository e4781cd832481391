"""BatchNorm's running_mean/var, checked against r = (1 - m) * r + m * batch_stat.

Feeds `iterations` batches to nn.BatchNorm{1,2,3}d in train mode and records, per channel and
iteration, the batch statistics, torch's running buffers, and the values the update formula
predicts, computed independently in float64 from the same input. Writes running_stats.csv,
config.yaml and meta.json under OUT/running-stats/NAME/.

Example: bncli running-stats --momentum 0.3 --dims 2
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from bncli import fields, figures, report
from bncli.errors import plural, show
from bncli.fields import Config, field, int_list, none_word
from bncli.runtime import Stream, check_fits, generator, itemsize, resolve_device, torch_dtype, torch_threads
from bncli.studies.base import Count, MeanSd, Number, Result, Summary

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch
else:
    from bncli.lazy import lazy

    np, pd, torch = lazy("numpy"), lazy("pandas"), lazy("torch")

NOTEBOOK_CHANNELS = {1: 5, 2: 6, 3: 4}
NOTEBOOK_SHAPES = {1: [1], 2: [2, 2], 3: [2, 2, 3]}


def _dims_int(v: Any) -> Any:
    # a Literal of ints also takes true and 1.0 (they compare equal): a wrong type is refused
    if isinstance(v, (bool, float)):
        raise ValueError("Input should be 1, 2 or 3")
    return v


INPUTS = {"constant": "channel c holds c + 1, as in the notebook", "randn": "fresh seeded N(0, 1) batches"}


class RunningStatsConfig(Config):
    """BatchNorm{1,2,3}d fed a few batches; its running stats checked against the formula."""

    momentum: float | None = field(
        0.3, ge=0, le=1, parse=none_word, none="the cumulative average", help="BatchNorm's momentum"
    )
    dims: int = field(1, choices=(1, 2, 3), parse=_dims_int, help="1, 2 or 3: BatchNorm1d, 2d or 3d")
    batch_size: int = field(3, ge=1, help="samples per batch")
    num_features: int = field(None, ge=1, shown="5, 6, 4 for dims 1, 2, 3", help="channels")
    feature_shape: list[int] = field(
        None, ge=1, parse=int_list, shown="1 / 2,2 / 2,2,3 for dims 1 / 2 / 3", help="per-channel shape, like 2,2"
    )
    iterations: int = field(2, ge=1, help="batches fed to the layer")
    input: str = field("constant", choices=INPUTS, help="the batches")
    eps: float = fields.eps()
    seed: int = fields.seed()
    device: str = fields.device()
    dtype: str = fields.dtype(
        fields.FLOAT_DTYPES, "no bfloat16: the checks against float64 formulas need float32 or better"
    )

    def resolve(self, given: set[str]) -> dict[str, Any]:
        """num_features and feature_shape follow dims, the notebook's."""
        shape = list(NOTEBOOK_SHAPES[self.dims]) if self.feature_shape is None else self.feature_shape
        if len(shape) != self.dims:
            raise ValueError(
                f"feature_shape must have {self.dims} entries for dims {self.dims}, got {len(shape)}: {show(shape)}"
            )
        if self.batch_size * math.prod(shape) < 2:
            raise ValueError(
                "batch_size x feature_shape must give at least 2 values per channel "
                "(BatchNorm cannot normalise a single value)"
            )
        features = NOTEBOOK_CHANNELS[self.dims] if self.num_features is None else self.num_features
        return {"num_features": features, "feature_shape": shape}


NAME = "running-stats"
CONFIG = RunningStatsConfig
CSV = "running_stats.csv"
ID_COLUMNS = ["iteration", "channel"]
TEXT_COLUMNS: list[str] = []
INFO = {"shapes": dict[str, list[int]], "iterations_done": int, "random_check": dict[str, float | bool]}
LABEL_KEYS = ["momentum", "dims", "input"]
PLOT = "running_stats.png"
RUN_PLOT = False
OPTIONS = fields.NoOptions
SUMMARY = ["final running_var", "max |mean err|", "max |var err|", "matches formula"]
COMPARE_METRIC = "running_var"  # what `bncli compare` sets side by side unless --metric says
COLUMNS = [
    "iteration",
    "channel",
    "batch_mean",
    "batch_var",
    "running_mean",
    "running_var",
    "expected_mean",
    "expected_var",
]


def columns(settings: dict[str, Any]) -> list[str]:
    return COLUMNS


def label(cfg: RunningStatsConfig) -> str:
    m = "none" if cfg.momentum is None else f"{cfg.momentum:g}"
    return f"bn{cfg.dims}d-m{m}-{cfg.input}"


def progress_total(cfg: RunningStatsConfig) -> None:
    return None  # a few tiny batches: done before a bar would show


def describe_size(cfg: RunningStatsConfig) -> str:
    return (
        f"batch_size {cfg.batch_size}, num_features {cfg.num_features}, "
        f"feature_shape {','.join(map(str, cfg.feature_shape))}"
    )


def estimate_bytes(cfg: RunningStatsConfig) -> int:
    """Peak memory a run needs, before anything is allocated."""
    elt = itemsize(cfg.dtype)
    batch = cfg.batch_size * cfg.num_features * math.prod(cfg.feature_shape)
    per_batch = batch * (2 * elt + 3 * 8)  # input, BN's output, the float64 copy and its square
    per_iteration = cfg.num_features * (6 + 16) * 8 + 2048  # the kept statistics and their table rows
    return per_batch + cfg.iterations * per_iteration


def preflight(cfg: RunningStatsConfig) -> torch.device:
    device = resolve_device(cfg.device)
    check_fits(
        device,
        estimate_bytes(cfg),
        describe_size(cfg) + f", iterations {cfg.iterations}",
        "a smaller --batch-size, --num-features, --feature-shape or --iterations",
    )
    return device


def make_batch(cfg: RunningStatsConfig, iteration: int, device: torch.device) -> torch.Tensor:
    shape = (cfg.batch_size, cfg.num_features, *cfg.feature_shape)
    kind = torch_dtype(cfg.dtype)
    if cfg.input == "constant":  # channel c holds c + 1, as in the notebook
        values = torch.arange(1, cfg.num_features + 1, device=device, dtype=kind)
        return values.view(1, -1, *[1] * cfg.dims).expand(shape).contiguous()
    g = generator(device, cfg.seed, Stream.BATCH, iteration)
    return torch.randn(shape, generator=g, device=device, dtype=kind)


def batchnorm(cfg: RunningStatsConfig, device: torch.device) -> torch.nn.modules.batchnorm._BatchNorm:
    """A fresh nn.BatchNorm{1,2,3}d of the run's size, in train mode (the one module the study checks)."""
    cls = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}[cfg.dims]
    return cls(
        cfg.num_features, eps=cfg.eps, momentum=cfg.momentum, device=device, dtype=torch_dtype(cfg.dtype)
    ).train()


def random_check(cfg: RunningStatsConfig, device: torch.device) -> dict[str, Any]:
    """The check that can fail: one seeded N(0, 1) batch of two values per channel, fed to a fresh
    BatchNorm, whose running stats are compared with the formula. With the notebook's constant
    input every batch variance is 0, so a BatchNorm that kept the biased variance would pass
    every row; at two values per channel the unbiased variance is twice the biased one."""
    bn = batchnorm(cfg, device)
    shape = (2, cfg.num_features, *[1] * cfg.dims)
    x = torch.randn(shape, generator=generator(device, cfg.seed, Stream.CHECK), device=device, dtype=bn.weight.dtype)
    with torch.no_grad():
        bn(x)
    x64 = x.to("cpu", torch.float64).flatten(2)
    mean, var = x64.mean((0, 2)), x64.var((0, 2), unbiased=True)
    m = cfg.momentum if cfg.momentum is not None else 1.0  # the cumulative average's first batch: all of it
    table = pd.DataFrame(
        {
            "running_mean": bn.running_mean.double().cpu().numpy(),  # type: ignore[union-attr]
            "expected_mean": (m * mean).numpy(),
            "running_var": bn.running_var.double().cpu().numpy(),  # type: ignore[union-attr]
            "expected_var": (1 - m + m * var).numpy(),
        }
    )
    error = max(float(np.abs(table[f"running_{s}"] - table[f"expected_{s}"]).max()) for s in ("mean", "var"))
    return {"matches": bool(agrees(table, cfg.dtype).all()), "max_error": error}


def run(cfg: RunningStatsConfig, device: torch.device, progress: Callable[[int], None] | None = None) -> Result:
    bn = batchnorm(cfg, device)
    # track_running_stats is on (the default): the buffers exist
    assert bn.running_mean is not None and bn.running_var is not None and bn.num_batches_tracked is not None
    reduce = [0, *range(2, 2 + cfg.dims)]  # every axis but the channel axis
    n = cfg.batch_size * math.prod(cfg.feature_shape)
    exp_mean = torch.zeros(cfg.num_features, dtype=torch.float64)
    exp_var = torch.ones(cfg.num_features, dtype=torch.float64)

    per_iter: list[torch.Tensor] = []
    status = "ok"
    # torch's CPU BatchNorm splits its sums across threads and its last bits follow the thread
    # count; these tensors are tiny, so one thread costs nothing and gives the same bytes anywhere
    with torch_threads(1 if device.type == "cpu" else torch.get_num_threads()):
        try:
            for t in range(cfg.iterations):
                x = make_batch(cfg, t, device)
                with torch.no_grad():
                    bn(x)
                # the formula, in float64 on the host, from the same input but not from torch's BN
                x64 = x.detach().to("cpu", torch.float64)
                mean = x64.mean(dim=reduce)
                var = ((x64 - mean.view(1, -1, *[1] * cfg.dims)) ** 2).sum(dim=reduce) / (n - 1)
                m = cfg.momentum if cfg.momentum is not None else 1.0 / (t + 1)  # None: cumulative
                exp_mean = (1 - m) * exp_mean + m * mean
                exp_var = (1 - m) * exp_var + m * var
                per_iter.append(
                    torch.stack(
                        [
                            mean,
                            var,
                            bn.running_mean.detach().double().cpu(),
                            bn.running_var.detach().double().cpu(),
                            exp_mean,
                            exp_var,
                        ],
                        1,
                    )
                )
                if progress is not None:
                    progress(t + 1)
        except KeyboardInterrupt:
            status = "interrupted"

    cols = COLUMNS[2:]
    frames = [
        pd.DataFrame(v.numpy(), columns=cols).assign(iteration=t, channel=range(len(v))) for t, v in enumerate(per_iter)
    ]
    table = (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols, dtype=float))[COLUMNS]
    shapes = {
        "running_mean": list(bn.running_mean.shape),
        "running_var": list(bn.running_var.shape),
        "weight": list(bn.weight.shape),
        "bias": list(bn.bias.shape),
        "num_batches_tracked": list(bn.num_batches_tracked.shape),
    }
    info = {"shapes": shapes, "iterations_done": len(per_iter), "random_check": random_check(cfg, device)}
    return Result(table, status, info)


# -- rendering ----------------------------------------------------------------------------------


def agrees(table: pd.DataFrame, dtype: str = "float32", stat: str | None = None) -> np.ndarray:
    """Per row: do torch's running stats (or the one `stat`, mean or var) match the formula, to the
    precision of `dtype`?"""
    rtol, atol = (1e-5, 1e-6) if dtype == "float32" else (1e-12, 1e-14)
    if stat is not None:
        return np.isclose(table[f"running_{stat}"], table[f"expected_{stat}"], rtol=rtol, atol=atol)
    return agrees(table, dtype, "mean") & agrees(table, dtype, "var")


def value_table(table: pd.DataFrame, dtype: str = "float32") -> Table:
    t = report.table([*table.columns, "matches formula"])
    for ok, (_, row) in zip(agrees(table, dtype), table.iterrows(), strict=True):
        cells = [
            str(int(row[c])) if c in ("iteration", "channel") else report.fmt(float(row[c])) for c in table.columns
        ]
        t.add_row(*cells, Text("yes", "green") if ok else Text("NO", "bold red"))
    return t


def summary(table: pd.DataFrame, meta: dict[str, Any], dtype: str = "float32") -> Text:
    """The verdict over every value (a row holds two: running_mean and running_var), the random
    batch's check, and the buffers' shapes."""
    wrong = int((~agrees(table, dtype, "mean")).sum() + (~agrees(table, dtype, "var")).sum())
    n = 2 * len(table)
    channels, iterations = table["channel"].nunique(), table["iteration"].nunique()
    what = f"running_mean and running_var, {plural(channels, 'channel')} x {plural(iterations, 'iteration')}"
    lines = [
        f"torch matches the update formula on {'all ' if n > 1 else ''}{plural(n, 'value')} ({what})"
        if not wrong
        else f"torch differs from the update formula on {wrong} of {plural(n, 'value')} ({what})"
    ]
    check = meta.get("random_check")
    if check is not None:  # runs saved before the check existed have none
        verdict = (
            "matches the formula"
            if check["matches"]
            else f"DIFFERS from the formula by {report.fmt(check['max_error'])}"
        )
        lines.append(
            f"check on a random batch (2 values per channel: the unbiased variance is twice the biased): {verdict}"
        )
    shapes = meta.get("shapes") or {}
    return Text("\n".join(lines) + "\nshapes: ") + Text("  ".join(f"{k} {tuple(v)}" for k, v in shapes.items()))


SHOWN_ITERATIONS = 20  # a screen's worth: the CSV holds every iteration


def render(run: Any, every: int | None = None) -> list[Any]:
    """The values of every `every`-th iteration (all up to 20, else about 20) and the last,
    each with its verdict; then the verdict over every value and the buffers' shapes."""
    dtype = str(run.settings.get("dtype", "float32"))
    table = run.table
    n = int(table["iteration"].max()) + 1 if len(table) else 0
    every = every or max(1, math.ceil(n / SHOWN_ITERATIONS))
    keep = set(range(0, n, every)) | {n - 1}
    parts: list[Table | Text] = [value_table(table[table["iteration"].isin(keep)], dtype)]
    if len(keep) < n:
        parts.append(
            Text(
                f"showing {len(keep)} of {n} iterations (every {every}-th and the last); running_stats.csv has them all"
            )
        )
    return [*parts, summary(table, run.meta, dtype)]


def summarize(runs: list[pd.DataFrame]) -> Summary:
    """SUMMARY over a config's finished runs: the final running_var (mean ± sd over seeds), the
    largest gaps between torch and the formula, and how many runs match it everywhere."""

    def gap(col: str) -> float | None:
        gaps = [float(np.abs(r[f"running_{col}"] - r[f"expected_{col}"]).max()) for r in runs if len(r)]
        return max(gaps, default=None)

    final = [float(r[r["iteration"] == r["iteration"].max()]["running_var"].mean()) for r in runs]
    match = sum(bool(agrees(r, str(r["dtype"].iloc[0]) if "dtype" in r else "float32").all()) for r in runs)
    return {
        "final running_var": MeanSd.over(final),
        "max |mean err|": Number(gap("mean"), "sig"),
        "max |var err|": Number(gap("var"), "sig"),
        "matches formula": Count(match, len(runs)),
    }


MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]  # one per config sharing a panel; colour is the channel's


def draw(plt, table: pd.DataFrame, metric: str | None, opts: figures.Options | None = None):
    """running_mean and running_var (or `metric`) against iteration, a colour per channel, the
    formula's values dashed in the channel's colour; a row of panels per config (or per value
    of opts.facet; configs sharing a panel differ by marker)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    metrics = [metric] if metric else ["running_mean", "running_var"]
    panels = figures.panels(table, opts)
    channels = sorted(table["channel"].dropna().unique())
    palette = plt.get_cmap("tab10" if len(channels) <= 10 else "viridis")
    colors = {c: palette(i if len(channels) <= 10 else i / max(1, len(channels) - 1)) for i, c in enumerate(channels)}
    markers = {p: MARKERS[i % len(MARKERS)] for i, p in enumerate(dict.fromkeys(table["parts"]))}
    fig, axes = figures.subplots(plt, len(panels), len(metrics), 6, 3.6 if len(panels) > 1 else 4.8)
    dashed, shared = False, False
    for r, (name, rows) in enumerate(panels):
        lines = figures.groups(rows)
        shared |= len(lines) > 1
        for ax, m in zip(axes[r * len(metrics) : (r + 1) * len(metrics)], metrics, strict=True):
            for parts, g in lines:
                dashed |= _draw_group(ax, g, m, colors, markers[parts] if len(lines) > 1 else "o")
            ax.set_title(m if name is None else f"{m}: {name}", fontsize=10)
            ax.set_xlabel("iteration")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(m)
            if opts is not None and opts.logy is not None:
                ax.set_yscale("log" if opts.logy else "linear")
            ax.grid(True, alpha=0.3)
            figures.note_overlaps(ax)  # constant input: every channel's running_var is the same
    seeds = figures.seeds_note(table)
    figures.title(
        fig,
        axes,
        f"{' and '.join(metrics)} per channel"
        + ("" if seeds == "one seed" else f" ({seeds})")
        + ("; markers: measured, dashed: the formula" if dashed else ""),
        opts,
    )
    extra = [
        (Line2D([], [], color=colors[c], marker="o", ms=4, ls="--" if dashed else "-"), f"channel {c:g}")
        for c in channels[:12]
    ]
    if len(channels) > 12:
        extra.append((Line2D([], []), f"... channel {channels[-1]:g} ({palette.name})"))
    if dashed:
        extra.append((Line2D([], [], ls="--", color="0.3"), "dashed: expected, (1 - m) r + m batch_stat"))
    if shared:
        extra += [
            (Line2D([], [], ls="none", color="0.3", marker=markers[p]), g["label"].iloc[0])
            for p, g in figures.groups(table)
        ]
    figures.legend(axes[len(metrics) - 1], [], extra)
    return fig


def auto_facet(table: pd.DataFrame, metric: str | None, columns: list[str]) -> str | None:
    """A row of panels per config (up to 8; more share a row, a marker each): each has its own
    channels, in their own colours."""
    return "label" if 1 < table["line"].nunique() <= 8 else None


def _draw_group(ax, g: pd.DataFrame, m: str, colors: dict, marker: str) -> bool:
    """One config's channels; True when the formula's values were drawn (dashed) too."""
    expected = m.replace("running_", "expected_")
    dashed = False
    done = g[g["status"].isin(("ok", "diverged"))]
    for c, ch in done.groupby("channel", sort=True):
        x, mean, sd, n = figures.mean_sd(ch, "iteration", m)
        formula = expected in ch.columns and expected != m
        if formula:  # under the measured markers: where they agree, each marker sits on its dashed line
            ex, emean, _, _ = figures.mean_sd(ch, "iteration", expected)
            ax.plot(ex, emean, ls="--", lw=1.2, color=colors[c], zorder=1)
            dashed = True
        ax.plot(
            x,
            mean,
            marker=marker,
            ms=4,
            lw=1.5,
            ls="none" if formula else "-",
            color=colors[c],
            zorder=2,
            label=f"channel {c:g}",
        )
        if n > 1:
            ax.fill_between(x, mean - sd, mean + sd, alpha=0.15, lw=0, color=colors[c])
    return dashed
