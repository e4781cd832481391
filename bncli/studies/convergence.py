"""Running-stats convergence: how far do BatchNorm's running estimates lie from the truth?

    bncli running-stats --study convergence --momentum 0.01,0.1,0.3 --input-mean 1 --input-std 2

Batches of shape (batch_size, num_features) come from a seeded stream with known per-channel
mean and std. Each iteration feeds the same batch to every estimator and records, per
channel, its estimate of the mean and (unbiased) variance, their errors against the truth,
and the gap between eval-mode output (which uses the estimate) and train-mode output:

- `ema-M`: nn.BatchNorm1d(momentum=M), one per momentum given;
- `cumulative`: nn.BatchNorm1d(momentum=None), the plain average of the batch statistics;
- `precise`: the population statistics of every sample seen so far, from the batch means and
  variances by the law of total variance, as PreciseBN does (Wu and Johnson 2021).

Definitions and closed forms: docs/statistics.md.
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from bncli.nets import DTYPES, generator, resolve_device, torch_threads
from bncli.studies import Result, check_fits

CSV = "convergence.csv"
COLUMNS = ["iteration", "estimator", "channel", "mean", "var", "mean_error", "var_error", "train_eval_gap"]
STREAM = 5  # the batches' seed stream (1, 2, 4: depth study; 3: running-stats check)
WITHIN = 0.01  # "within 1% of the truth"


def label(cfg) -> str:
    return f"m{','.join(f'{m:g}' for m in cfg.momenta)}-b{cfg.batch_size}"


def describe_size(cfg) -> str:
    return f"batch_size {cfg.batch_size}, num_features {cfg.num_features}, iterations {cfg.iterations}"


def estimate_bytes(cfg) -> int:
    """Peak memory a run needs, before anything is allocated (reliability: refuse, don't OOM)."""
    e, batch = len(cfg.momenta) + 2, cfg.batch_size * cfg.num_features
    per_batch = batch * (DTYPES[cfg.dtype.value].itemsize * (2 * e + 4) + 2 * 8)  # outputs, gaps, x64
    per_iteration = e * cfg.num_features * (5 * 8 + 3 * 8 * 8)  # kept statistics, then the table
    return per_batch + cfg.iterations * per_iteration


def preflight(cfg) -> torch.device:
    device = resolve_device(cfg.device)
    check_fits(device, estimate_bytes(cfg), describe_size(cfg),
               "a smaller --batch-size, --num-features or --iterations")
    return device


def truth(cfg, device=None, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel true mean and std of the stream."""
    c = cfg.num_features
    mean = torch.tensor(cfg.input_mean, dtype=dtype, device=device).expand(c).clone()
    std = torch.tensor(cfg.input_std, dtype=dtype, device=device).expand(c).clone()
    return mean, std


def make_batch(cfg, iteration: int, device: torch.device) -> torch.Tensor:
    dtype = DTYPES[cfg.dtype.value]
    g = generator(device, cfg.seed, STREAM, iteration)
    z = torch.randn(cfg.batch_size, cfg.num_features, generator=g, device=device, dtype=dtype)
    mean, std = truth(cfg, device, dtype)
    return mean + std * z


def estimator_names(cfg) -> list[str]:
    return [f"ema-{m:g}" for m in cfg.momenta] + ["cumulative", "precise"]


def run(cfg, device: torch.device, progress=None) -> Result:
    dtype = DTYPES[cfg.dtype.value]
    c, b = cfg.num_features, cfg.batch_size
    bns = [torch.nn.BatchNorm1d(c, eps=cfg.eps, momentum=m, device=device, dtype=dtype)
           for m in [*cfg.momenta, None]]
    true_mean, true_std = truth(cfg, device, dtype)
    true_var = true_std.square()
    s_mean = torch.zeros(c, device=device, dtype=torch.float64)  # PreciseBN's running sums
    s_var = torch.zeros_like(s_mean)
    s_sq = torch.zeros_like(s_mean)

    per_iter, status = [], "ok"
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
                    y_eval = F.batch_norm(x, p_mean.to(dtype), p_var.to(dtype), training=False, eps=cfg.eps)
                    gaps.append(y_eval - y_train)
                    ests.append((p_mean.to(dtype), p_var.to(dtype)))
                    means = torch.stack([e[0] for e in ests])  # (estimators, channels)
                    vars_ = torch.stack([e[1] for e in ests])
                    gap = torch.stack(gaps).square().mean(1).sqrt()
                    per_iter.append(torch.stack([means, vars_, (means - true_mean).abs() / true_std,
                                                 (vars_ / true_var - 1).abs(), gap], -1))
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
    return Result(table[COLUMNS], status, {"iterations_done": len(per_iter), "estimators": names,
                                           "steps_to_1pct": steps_within(table)})


def steps_within(table, tol: float = WITHIN) -> dict[str, int | None]:
    """Per estimator: the number of steps after which the mean and variance errors of every
    channel are below `tol` and stay there to the end of the run; None if never."""
    out = {}
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
