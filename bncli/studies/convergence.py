"""BatchNorm's running estimates against the true statistics of a seeded stream.

Batches of shape (batch_size, num_features) come from a seeded N(input_mean, input_std^2)
stream. Each iteration feeds the same batch to every estimator and records, per channel, its
estimate of the mean and (unbiased) variance, their errors against the truth, and the gap
between eval-mode output (which uses the estimate) and train-mode output; then how many steps
each needs to stay within 1%. The estimators:

\b
- ema-M: nn.BatchNorm1d(momentum=M), one per momentum given;
- cumulative: nn.BatchNorm1d(momentum=None), the plain average of the
  batch statistics;
- precise: the population statistics of every sample seen so far, from the
  batch means and variances by the law of total variance, as PreciseBN does
  (Wu and Johnson 2021).

Writes convergence.csv, convergence.png, config.yaml and meta.json under
OUT/convergence/NAME/. Definitions and closed forms: docs/statistics.md.

Example: bncli convergence --momentum 0.01,0.1,0.3 --input-std 2
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.table import Table

from bncli import fields, figures, report
from bncli.errors import plural
from bncli.fields import Config, field, float_list
from bncli.runtime import Stream, check_fits, generator, itemsize, resolve_device, torch_dtype, torch_threads
from bncli.studies.base import Median, Number, Result, Summary

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch
    import torch.nn.functional as F
else:
    from bncli.lazy import lazy

    np, pd, torch, F = lazy("numpy"), lazy("pandas"), lazy("torch"), lazy("torch.nn.functional")


class ConvergenceConfig(Config):
    """BatchNorm's running estimates against the true statistics of a seeded stream."""

    momentum: list[float | None] | None = field(
        None,
        ge=0,
        le=1,
        parse=float_list,
        shown="0.01,0.1,0.3",
        help="EMA momenta to compare, a comma list (none: the cumulative average, always compared)",
    )
    keras_momentum: list[float] | None = field(
        None, ge=0, le=1, parse=float_list, help="Keras-style momenta K (comma list), used as PyTorch's m = 1 - K"
    )
    batch_size: int = field(32, ge=1, help="samples per batch")
    num_features: int = field(4, ge=1, help="channels")
    iterations: int = field(1000, ge=1, help="batches fed to the layers")
    input_mean: list[float] = field(
        [1.0], parse=float_list, help="the stream's true mean, one number or one per channel"
    )
    input_std: list[float] = field(
        [2.0], gt=0, parse=float_list, help="the stream's true std, one number or one per channel"
    )
    eps: float = fields.eps()
    seed: int = fields.seed()
    device: str = fields.device()
    dtype: str = fields.dtype(
        fields.FLOAT_DTYPES, "no bfloat16: the checks against float64 formulas need float32 or better"
    )

    def resolve(self, given: set[str]) -> dict[str, Any]:
        if self.momentum is not None and self.keras_momentum is not None:
            raise ValueError("give momentum or keras_momentum, not both (keras K is momentum 1 - K)")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (BatchNorm cannot normalise a single sample)")
        for name in ("input_mean", "input_std"):
            n = len(getattr(self, name))
            if n not in (1, self.num_features):
                raise ValueError(f"{name} must have 1 or num_features ({self.num_features}) values, got {n}")
        return {}

    @property
    def momenta(self) -> list[float]:
        """The EMA momenta in PyTorch's convention, in order, without repeats ('none' is the
        cumulative average, which is always compared)."""
        if self.keras_momentum is not None:
            ms = [1.0 - k for k in self.keras_momentum]
        elif self.momentum is not None:
            ms = [m for m in self.momentum if m is not None]
        else:
            ms = [0.01, 0.1, 0.3]
        return list(dict.fromkeys(ms))


NAME = "convergence"
CONFIG = ConvergenceConfig
CSV = "convergence.csv"
ID_COLUMNS = ["iteration", "estimator", "channel"]
TEXT_COLUMNS = ["estimator"]
INFO = {"iterations_done": int, "estimators": list[str], "steps_to_1pct": dict[str, int | None]}
LABEL_KEYS = ["momentum", "batch_size", "input_std"]
PLOT = "convergence.png"
RUN_PLOT = True  # a single run's directory gets its error-against-iteration plot
OPTIONS = fields.NoOptions
SUMMARY = [
    "median steps to 1%: precise",
    "median steps to 1%: cumulative",
    "worst final mean_error",
    "worst final var_error",
]
COMPARE_METRIC = "var_error"  # what `bncli compare` sets side by side unless --metric says
COLUMNS = ["iteration", "estimator", "channel", "mean", "var", "mean_error", "var_error", "train_eval_gap"]
WITHIN = 0.01  # "within 1% of the truth"


def columns(settings: dict[str, Any]) -> list[str]:
    return COLUMNS


def label(cfg: ConvergenceConfig) -> str:
    return f"m{','.join(f'{m:g}' for m in cfg.momenta)}-b{cfg.batch_size}"


def progress_total(cfg: ConvergenceConfig) -> None:
    return None


def describe_size(cfg: ConvergenceConfig) -> str:
    return f"batch_size {cfg.batch_size}, num_features {cfg.num_features}, iterations {cfg.iterations}"


def estimate_bytes(cfg: ConvergenceConfig) -> int:
    """Peak memory a run needs, before anything is allocated (reliability: refuse, don't OOM)."""
    e, batch = len(cfg.momenta) + 2, cfg.batch_size * cfg.num_features
    per_batch = batch * (itemsize(cfg.dtype) * (2 * e + 4) + 2 * 8)  # outputs, gaps, x64
    per_iteration = e * cfg.num_features * (5 * 8 + 3 * 8 * 8)  # kept statistics, then the table
    return per_batch + cfg.iterations * per_iteration


def preflight(cfg: ConvergenceConfig) -> torch.device:
    device = resolve_device(cfg.device)
    check_fits(
        device, estimate_bytes(cfg), describe_size(cfg), "a smaller --batch-size, --num-features or --iterations"
    )
    return device


def truth(cfg: ConvergenceConfig, device: Any = None, dtype: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel true mean and std of the stream."""
    c = cfg.num_features
    dtype = torch.float64 if dtype is None else dtype
    mean = torch.tensor(cfg.input_mean, dtype=dtype, device=device).expand(c).clone()
    std = torch.tensor(cfg.input_std, dtype=dtype, device=device).expand(c).clone()
    return mean, std


def make_batch(cfg: ConvergenceConfig, iteration: int, device: torch.device) -> torch.Tensor:
    dtype = torch_dtype(cfg.dtype)
    g = generator(device, cfg.seed, Stream.STREAM, iteration)
    z = torch.randn(cfg.batch_size, cfg.num_features, generator=g, device=device, dtype=dtype)
    mean, std = truth(cfg, device, dtype)
    return mean + std * z


def estimator_names(cfg: ConvergenceConfig) -> list[str]:
    return [f"ema-{m:g}" for m in cfg.momenta] + ["cumulative", "precise"]


def run(cfg: ConvergenceConfig, device: torch.device, progress: Callable[[int], None] | None = None) -> Result:
    dtype = torch_dtype(cfg.dtype)
    c, b = cfg.num_features, cfg.batch_size
    bns = [torch.nn.BatchNorm1d(c, eps=cfg.eps, momentum=m, device=device, dtype=dtype) for m in [*cfg.momenta, None]]
    true_mean, true_std = truth(cfg, device, dtype)
    true_var = true_std.square()
    s_mean = torch.zeros(c, device=device, dtype=torch.float64)  # PreciseBN's running sums
    s_var = torch.zeros_like(s_mean)
    s_sq = torch.zeros_like(s_mean)

    per_iter: list[torch.Tensor] = []
    status = "ok"
    # (batch x channels)-sized ops: on CPU more threads only add overhead (30x here)
    with torch_threads(1 if device.type == "cpu" else torch.get_num_threads()):
        try:
            with torch.no_grad():
                for t in range(cfg.iterations):
                    x = make_batch(cfg, t, device)
                    ests, gaps = [], []
                    y_train = None
                    for bn in bns:
                        bn.train()
                        y_train = bn(x)
                        bn.eval()
                        gaps.append(bn(x) - y_train)
                        assert bn.running_mean is not None and bn.running_var is not None  # track_running_stats=True
                        ests.append((bn.running_mean.clone(), bn.running_var.clone()))
                    # precise: mean of batch means; E[biased batch var] + Var[batch means], made unbiased
                    x64 = x.double()
                    bm = x64.mean(0)
                    s_mean += bm
                    s_sq += bm.square()
                    s_var += (x64 - bm).square().mean(0)
                    k, n = t + 1, (t + 1) * b
                    p_mean = s_mean / k
                    p_var = (s_var / k + s_sq / k - p_mean.square()) * (n / (n - 1))
                    assert y_train is not None  # bns is never empty: the cumulative estimator is always there
                    y_eval = F.batch_norm(x, p_mean.to(dtype), p_var.to(dtype), training=False, eps=cfg.eps)
                    gaps.append(y_eval - y_train)
                    ests.append((p_mean.to(dtype), p_var.to(dtype)))
                    means = torch.stack([e[0] for e in ests])  # (estimators, channels)
                    vars_ = torch.stack([e[1] for e in ests])
                    gap = torch.stack(gaps).square().mean(1).sqrt()
                    per_iter.append(
                        torch.stack(
                            [means, vars_, (means - true_mean).abs() / true_std, (vars_ / true_var - 1).abs(), gap], -1
                        )
                    )
                    if progress is not None and (t + 1) % 64 == 0:
                        progress(t + 1)
        except KeyboardInterrupt:
            status = "interrupted"

    names = estimator_names(cfg)
    if per_iter:
        vals = torch.stack(per_iter).double().cpu()  # (iterations, estimators, channels, 5): one read-back
        t_, e_, c_ = vals.shape[:3]
        table = pd.DataFrame(vals.reshape(-1, 5).numpy(), columns=COLUMNS[3:])
        idx = pd.MultiIndex.from_product([range(t_), names, range(c_)])
        table.insert(0, "channel", idx.get_level_values(2))
        table.insert(0, "estimator", idx.get_level_values(1))
        table.insert(0, "iteration", idx.get_level_values(0))
    else:
        table = pd.DataFrame({col: pd.Series(dtype=float) for col in COLUMNS})
    return Result(
        table[COLUMNS],
        status,
        {"iterations_done": len(per_iter), "estimators": names, "steps_to_1pct": steps_within(table)},
    )


def steps_within(table, tol: float = WITHIN) -> dict[str, int | None]:
    """Per estimator: the number of steps after which the mean and variance errors of every
    channel are below `tol` and stay there to the end of the run; None if never."""
    out: dict[str, int | None] = {}
    for name, g in table.groupby("estimator", sort=False):
        worst = g.groupby("iteration")[["mean_error", "var_error"]].max().max(axis=1)
        bad = worst.index[~(worst < tol)]
        if len(bad) == 0:
            out[name] = 1
        elif bad.max() == worst.index.max():
            out[name] = None
        else:
            out[name] = int(bad.max()) + 2  # iterations count from 0; steps from 1
    return out


# -- rendering ----------------------------------------------------------------------------------


def estimator_table(table: pd.DataFrame, steps: dict) -> Table:
    """One row per estimator: steps to stay within 1% of the truth, and its last errors."""
    last = table[table["iteration"] == table["iteration"].max()]
    n = int(table["iteration"].max()) + 1
    t = report.table(["estimator", "steps to within 1%", "mean_error", "var_error", "train_eval_gap"])
    for name, g in last.groupby("estimator", sort=False):
        k = steps.get(name)
        t.add_row(
            name,
            str(k) if k is not None else f"not in {n}",
            *[report.fmt(float(g[c].max())) for c in ("mean_error", "var_error", "train_eval_gap")],
        )
    t.caption = (
        f"after {plural(n, 'iteration')}; errors are the worst channel's: |mean - mu| / sigma and "
        "|var / sigma^2 - 1|; gap: RMS of eval-mode minus train-mode output"
    )
    return t


def render(run: Any, every: int | None = None) -> list[Any]:
    """One row per estimator (nothing when no iteration finished)."""
    return [estimator_table(run.table, steps_within(run.table))] if len(run.table) else []


def summarize(runs: list[pd.DataFrame]) -> Summary:
    """SUMMARY over a config's finished runs: the steps the precise and cumulative estimates
    need to stay within 1%, as a median over every seed that counts a seed that never got there
    as more than any (and how many got there), and the worst final errors of any estimator and
    channel. A mean over the seeds that got there would leave the others out and look faster."""
    steps = [steps_within(r) for r in runs]

    def within(name: str) -> Median:
        return Median.over([s.get(name) for s in steps])

    def worst(col: str) -> Number:
        last = [float(r[r["iteration"] == r["iteration"].max()][col].max()) for r in runs]
        return Number(max(last, default=float("nan")), "sig")

    return {
        "median steps to 1%: precise": within("precise"),
        "median steps to 1%: cumulative": within("cumulative"),
        "worst final mean_error": worst("mean_error"),
        "worst final var_error": worst("var_error"),
    }


def draw(plt, table: pd.DataFrame, metric: str | None, opts: figures.Options | None = None):
    """One panel per metric (a row per value of opts.facet); one line per estimator (and
    config): the worst channel's error, as the tables report it (max over channels and seeds)."""
    metrics = [metric] if metric else ["mean_error", "var_error"]
    names = list(dict.fromkeys(table["estimator"]))
    palette = plt.get_cmap("tab10")
    panels = figures.panels(table, opts)
    styles = {p: figures.LINESTYLES[i % len(figures.LINESTYLES)] for i, p in enumerate(dict.fromkeys(table["parts"]))}
    fig, axes = figures.subplots(plt, len(panels), len(metrics), 6, 4.8)
    seeds = max(int(g["seed"].nunique()) for _, g in figures.groups(table))
    one = len(figures.groups(table)) == 1  # one config: it goes in the title, the legend names estimators
    for r, (name, rows) in enumerate(panels):
        for ax, m in zip(axes[r * len(metrics) : (r + 1) * len(metrics)], metrics, strict=True):
            for parts, g in figures.groups(rows):
                for ei, estimator in enumerate(names):
                    e = g[g["estimator"] == estimator]
                    if e.empty:  # an EMA of another config's momentum
                        continue
                    v = _worst(e, m)
                    label = f"{g['label'].iloc[0]}: {estimator}" if g["label"].iloc[0] and not one else estimator
                    y = v.to_numpy(float)
                    wide = {"lw": 3.2, "alpha": 0.45} if estimator == "precise" else {"lw": 1.3}  # the reference:
                    ax.plot(
                        v.index.to_numpy() + 1,
                        np.where(y > 0, y, np.nan),
                        label=label,  # visible under the
                        color=palette(ei % 10),
                        linestyle=styles[parts],
                        **wide,
                    )  # cumulative, its equal on means
            _axes(ax, table, m, opts, name, seeds)
    config = f" ({table['label'].iloc[0]})" if one and table["label"].iloc[0] else ""
    figures.title(
        fig,
        axes,
        "worst channel's error: max over channels" + (f" and {seeds} seeds" if seeds > 1 else "") + config,
        opts,
    )
    figures.legend(axes[len(metrics) - 1], axes)
    return fig


def auto_facet(table: pd.DataFrame, metric: str | None, columns: list[str]) -> str | None:
    """One panel: the estimators' lines compare on one axis."""
    return None


def _worst(e: pd.DataFrame, m: str) -> pd.Series:
    """Per iteration, the largest `m` over channels and runs (seeds): the tables' worst channel."""
    return e[["iteration", m]].astype({m: float}).groupby("iteration", sort=True)[m].max()


def _axes(ax, table: pd.DataFrame, m: str, opts, name: str | None, seeds: int) -> None:
    if m in ("mean_error", "var_error"):
        ax.axhline(WITHIN, color="0.4", lw=0.8, ls=":", label="1%")
    ax.set_xlim(1, max(2, int(table["iteration"].max()) + 1))  # not the data's: it may be all nan
    ax.set_xscale("log")
    y = table[m].to_numpy(float)
    logy = opts.logy if opts is not None and opts.logy is not None else (np.isfinite(y) & (y > 0)).any()
    ax.set_yscale("log" if logy else "linear")  # errors can all be 0 (or nan) on a degenerate stream
    ax.set_xlabel("iteration (steps)")
    ax.set_ylabel(f"{m}, worst channel" + (" (log scale)" if logy else ""))
    ax.set_title(m if name is None else f"{m}: {name}")
    ax.grid(True, which="major", alpha=0.3)
