"""Plots of saved runs and sweeps, from their files: a metric against layer (or iteration).

    bncli plot results/sweeps/init_vs_norm --metric std

One line per config, the mean over seeds, with a band of +-1 sd; a diverged run gets an x at
its divergence layer. matplotlib runs on the Agg backend (no display) and is imported only
here, inside the functions, so the rest of bncli never pays for it.
"""

from __future__ import annotations

from pathlib import Path

from bncli import results, sweep
from bncli.errors import BncliError

LABEL_KEYS = {"depth-study": ["init", "norm", "activation"], "running-stats": ["momentum", "dims", "input"],
              "running-stats-convergence": ["momentum", "batch_size", "input_std"]}
LINESTYLES = ["-", "--", ":", "-."]


def load(paths: list[Path]):
    """(study, long table with `label`, `parts`, `seed`, `status`, ids, stats, the stat columns)
    from run and sweep directories."""
    import pandas as pd

    frames, runs, study, stats = [], [], None, {}
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise BncliError(f"PATH: {path} is not a directory (give run or sweep directories)")
        if sweep.is_sweep(path):
            s, keys, table = sweep.open_sweep(path)
            cols = list(table.columns)
            stats.update(dict.fromkeys(cols[cols.index("status") + 1:]))
            prefix = f"{path.name}: " if len(paths) > 1 else ""
            table = table.assign(parts=[tuple((k, sweep.word(r[k])) for k in keys) for _, r in table.iterrows()])
            table["label"] = [prefix + (", ".join(f"{k}={v}" for k, v in p) or path.name) for p in table["parts"]]
            frames.append(table)
        else:
            s, cfg, meta, table = sweep.open_run(path)
            if table is None or table.empty:
                raise BncliError(f"{path}: the run has no results to plot (status {meta.get('status')})")
            runs.append((path, cfg, meta, table))
            stats.update(dict.fromkeys(table.columns))
        if study is not None and s != study:
            raise BncliError(f"PATH: cannot plot {study} and {s} results together")
        study = s
    if runs:
        fields = [k for k in runs[0][1] if k != "seed"]
        varying = [k for k in fields if len({sweep.word(r[1].get(k)) for r in runs}) > 1]
        keys = varying or LABEL_KEYS[study]
        for path, cfg, meta, table in runs:
            parts = tuple((k, sweep.word(cfg.get(k))) for k in keys)
            frames.append(table.assign(label=", ".join(f"{k}={v}" for k, v in parts), parts=[parts] * len(table),
                                       seed=cfg.get("seed"), status=meta.get("status"), run=path.name))
    return study, pd.concat(frames, ignore_index=True), list(stats)


def metrics_of(table, study: str, stats: list[str]) -> list[str]:
    """The numeric statistic columns that hold a finite value: any of them can be plotted."""
    import numpy as np
    import pandas as pd

    return [c for c in stats if c not in sweep.ID_COLUMNS[study] and pd.api.types.is_numeric_dtype(table[c])
            and np.isfinite(table[c].to_numpy(float)).any()]


def _styles(groups: list[tuple]) -> dict[tuple, dict]:
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


def _mean_sd(g, x: str, metric: str):
    import numpy as np

    v = g[[x, metric]].copy()
    v[metric] = v[metric].astype(float).replace([np.inf, -np.inf], np.nan)
    s = v.groupby(x, sort=True)[metric].agg(["mean", "std", "count"])
    return s.index.to_numpy(), s["mean"].to_numpy(), s["std"].to_numpy(), int(g["seed"].nunique())


def _log_scale(values) -> bool:
    import numpy as np

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    pos = v[v > 0]
    return len(pos) > 0 and (v >= 0).all() and pos.max() / pos.min() > 100


def _save(fig, out: Path) -> None:
    """Render in memory, then results.atomic_write: a reader never sees half a PNG."""
    import io

    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120, bbox_inches="tight")
    results.atomic_write(out, png.getvalue())


def default_out(paths: list[Path], study: str, metric: str | None) -> Path:
    if study == "depth-study":
        name = f"{metric or 'std'}_by_layer.png"
    else:
        name = f"{metric}_by_iteration.png" if metric else sweep.PLOT[study]
    return (Path(paths[0]) if len(paths) == 1 else Path.cwd()) / name


def plot(paths: list[Path], out: Path | None = None, metric: str | None = None) -> Path:
    """Draw the runs and sweeps at `paths` into one PNG; returns its path."""
    if not paths:
        raise BncliError("PATH: give at least one run or sweep directory")
    study, table, stats = load(paths)
    available = metrics_of(table, study, stats)
    if metric is not None and metric not in available:
        raise BncliError(f"--metric: {metric!r} is not a numeric column of these results; "
                         f"available: {', '.join(available)}")
    out = Path(out) if out is not None else default_out(paths, study, metric)
    if out.suffix.lower() != ".png":
        raise BncliError(f"--out: {out} must end in .png")
    if not out.parent.is_dir():
        raise BncliError(f"--out: directory {out.parent} does not exist")
    results.check_out(out.parent)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    draw = {"depth-study": _depth, "running-stats-convergence": _convergence}.get(study, _running)
    fig = draw(plt, table, metric)
    try:
        _save(fig, out)
    finally:
        plt.close(fig)
    return out


def _groups(table):
    parts = list(dict.fromkeys(table["parts"]))
    return [(p, table[table["parts"] == p]) for p in parts]


def _legend(ax, n: int) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, ncol=1 if n <= 24 else 2)


def _depth(plt, table, metric: str | None):
    import numpy as np

    metric = metric or "std"
    groups = _groups(table)
    styles = _styles([p for p, _ in groups])
    fig, ax = plt.subplots(figsize=(10, 5.5))
    log = _log_scale(table[metric])
    seeds = max(int(g["seed"].nunique()) for _, g in groups)
    any_diverged = False
    for parts, g in groups:
        st = styles[parts]
        label = g["label"].iloc[0]
        done = g[g["status"].isin(results.DONE)]
        if done.empty:
            continue
        x, mean, sd, n = _mean_sd(done, "layer", metric)
        if log:
            mean = np.where(mean > 0, mean, np.nan)  # underflow to 0 cannot sit on a log axis
        ax.plot(x, mean, label=label, lw=1.6, **st)
        if n > 1:
            lo, hi = mean - sd, mean + sd
            if log:
                lo = np.where(lo > 0, lo, np.nan)
            ax.fill_between(x, lo, hi, color=st["color"], alpha=0.15, lw=0)
        for _, run in done[done["status"] == "diverged"].groupby("run" if "run" in done else "seed", sort=False):
            finite = run[np.isfinite(run[metric].astype(float))]
            if len(finite):
                ax.plot(run["layer"].iloc[-1], finite[metric].iloc[-1], marker="x", ms=8, mew=2,
                        color=st["color"], ls="none")
                any_diverged = True
    if log:
        ax.set_yscale("log")
    if any_diverged:
        ax.plot([], [], marker="x", ls="none", color="0.3", ms=8, mew=2,
                label="diverged (x at the first non-finite layer)")
    band = f"mean and \u00b11 sd over {seeds} seeds" if seeds > 1 else "one seed"
    ax.set_title(f"{metric} of each layer's output ({band})")
    ax.set_xlabel("layer")
    ax.set_ylabel(metric + (" (log scale)" if log else ""))
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, len(groups) + any_diverged)
    return fig


def _running(plt, table, metric: str | None):
    from matplotlib.lines import Line2D

    metrics = [metric] if metric else ["running_mean", "running_var"]
    groups = _groups(table)
    styles = _styles([p for p, _ in groups])
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics) + 2.5, 4.8), squeeze=False)
    seeds = max(int(g["seed"].nunique()) for _, g in groups)
    dashed = False
    for ax, m in zip(axes[0], metrics, strict=True):
        expected = m.replace("running_", "expected_")
        for parts, g in groups:
            st = {"color": styles[parts]["color"]}
            done = g[g["status"].isin(results.DONE)]
            for i, (_, ch) in enumerate(done.groupby("channel", sort=True)):
                x, mean, sd, n = _mean_sd(ch, "iteration", m)
                ax.plot(x, mean, marker="o", ms=3, lw=1.5, label=g["label"].iloc[0] if i == 0 else None, **st)
                if n > 1:
                    ax.fill_between(x, mean - sd, mean + sd, alpha=0.15, lw=0, **st)
                if expected in ch.columns and expected != m:
                    x, emean, _, _ = _mean_sd(ch, "iteration", expected)
                    ax.plot(x, emean, ls="--", lw=1.0, alpha=0.9, **st)
                    dashed = True
        ax.set_title(m + (f" per channel (mean over {seeds} seeds)" if seeds > 1 else " per channel"))
        ax.set_xlabel("iteration")
        ax.set_ylabel(m)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    if dashed:
        handles.append(Line2D([], [], ls="--", color="0.3"))
        labels.append("expected: (1 - m) r + m batch_stat")
    axes[0][-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def convergence(table, out: Path) -> Path:
    """The convergence study's own plot of one run: error against iteration, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = _convergence(plt, table.assign(label="", parts=[()] * len(table), seed=0), None)
    try:
        _save(fig, Path(out))
    finally:
        plt.close(fig)
    return Path(out)


def _convergence(plt, table, metric: str | None):
    """One panel per metric; one line per estimator (and run), the mean over channels and seeds."""
    import numpy as np

    metrics = [metric] if metric else ["mean_error", "var_error"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics) + 2.5, 4.8), squeeze=False)
    names = list(dict.fromkeys(table["estimator"]))
    palette = plt.get_cmap("tab10")
    groups = _groups(table)
    for ax, m in zip(axes[0], metrics, strict=True):
        for gi, (_, g) in enumerate(groups):
            for ei, name in enumerate(names):
                e = g[g["estimator"] == name]
                v = e.groupby("iteration", sort=True)[m].mean()
                label = f"{g['label'].iloc[0]}: {name}" if g["label"].iloc[0] else name
                y = v.to_numpy(float)
                ax.plot(v.index.to_numpy() + 1, np.where(y > 0, y, np.nan), lw=1.3, label=label,
                        color=palette(ei % 10), linestyle=LINESTYLES[gi % len(LINESTYLES)])
        if m in ("mean_error", "var_error"):
            ax.axhline(0.01, color="0.4", lw=0.8, ls=":", label="1%")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("iteration (steps)")
        ax.set_ylabel(m + " (log scale)")
        ax.set_title(f"{m}, mean over channels")
        ax.grid(True, which="major", alpha=0.3)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
