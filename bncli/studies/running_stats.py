"""Running stats: does BatchNorm's running_mean/var follow r = (1 - m) * r + m * batch_stat?

    bncli running-stats --momentum 0.3 --dims 2

Every iteration feeds one batch to nn.BatchNorm{1,2,3}d in train mode and records, per
channel, the batch statistics, torch's running buffers, and the values the update formula
predicts, computed independently in float64.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from bncli.nets import DTYPES, generator, resolve_device, torch_threads
from bncli.studies import Result, check_fits

CSV = "running_stats.csv"
COLUMNS = ["iteration", "channel", "batch_mean", "batch_var", "running_mean", "running_var",
           "expected_mean", "expected_var"]
BATCH_STREAM = 3


def label(cfg) -> str:
    m = "none" if cfg.momentum is None else f"{cfg.momentum:g}"
    return f"bn{cfg.dims}d-m{m}-{cfg.input.value}"


def describe_size(cfg) -> str:
    return (f"batch_size {cfg.batch_size}, num_features {cfg.num_features}, "
            f"feature_shape {','.join(map(str, cfg.feature_shape))}")


def estimate_bytes(cfg) -> int:
    """Peak memory a run needs, before anything is allocated."""
    elt = DTYPES[cfg.dtype.value].itemsize
    batch = cfg.batch_size * cfg.num_features * math.prod(cfg.feature_shape)
    per_batch = batch * (2 * elt + 3 * 8)  # input, BN's output, the float64 copy and its square
    per_iteration = cfg.num_features * (6 + 16) * 8 + 2048  # the kept statistics and their table rows
    return per_batch + cfg.iterations * per_iteration


def preflight(cfg) -> torch.device:
    device = resolve_device(cfg.device)
    check_fits(device, estimate_bytes(cfg), describe_size(cfg) + f", iterations {cfg.iterations}",
               "a smaller --batch-size, --num-features, --feature-shape or --iterations")
    return device


def make_batch(cfg, iteration: int, device: torch.device) -> torch.Tensor:
    shape = (cfg.batch_size, cfg.num_features, *cfg.feature_shape)
    dtype = DTYPES[cfg.dtype.value]
    if cfg.input.value == "constant":  # channel c holds c + 1, as in the notebook
        values = torch.arange(1, cfg.num_features + 1, device=device, dtype=dtype)
        return values.view(1, -1, *[1] * cfg.dims).expand(shape).contiguous()
    g = generator(device, cfg.seed, BATCH_STREAM, iteration)
    return torch.randn(shape, generator=g, device=device, dtype=dtype)


def run(cfg, device: torch.device, progress=None) -> Result:
    bn_cls = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}[cfg.dims]
    bn = bn_cls(cfg.num_features, eps=cfg.eps, momentum=cfg.momentum, device=device,
                dtype=DTYPES[cfg.dtype.value])
    bn.train()
    reduce = [0, *range(2, 2 + cfg.dims)]  # every axis but the channel axis
    n = cfg.batch_size * math.prod(cfg.feature_shape)
    exp_mean = torch.zeros(cfg.num_features, dtype=torch.float64)
    exp_var = torch.ones(cfg.num_features, dtype=torch.float64)

    per_iter, status = [], "ok"
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
                per_iter.append(torch.stack([mean, var, bn.running_mean.detach().double().cpu(),
                                             bn.running_var.detach().double().cpu(), exp_mean, exp_var], 1))
                if progress is not None:
                    progress(t + 1)
        except KeyboardInterrupt:
            status = "interrupted"

    cols = COLUMNS[2:]
    frames = [pd.DataFrame(v.numpy(), columns=cols).assign(iteration=t, channel=range(len(v)))
              for t, v in enumerate(per_iter)]
    table = (pd.concat(frames, ignore_index=True) if frames
             else pd.DataFrame(columns=cols, dtype=float))[COLUMNS]
    shapes = {"running_mean": list(bn.running_mean.shape), "running_var": list(bn.running_var.shape),
              "weight": list(bn.weight.shape), "bias": list(bn.bias.shape),
              "num_batches_tracked": list(bn.num_batches_tracked.shape)}
    return Result(table, status, {"shapes": shapes, "iterations_done": len(per_iter)})
