"""The transformer and NF-ResNet figures at init, measured: token_cos and erank by block for
attention only with and without the skip connection, post-LN and pre-LN weight_grad_norm at
depth 6 and 24, and an NF-ResNet's skip-path variance per block with and without Scaled WS.

    .venv/bin/python benchmarks/signal_figures.py        # -> benchmarks/results_signal.md (a few minutes on 2 cores)

Each number is a mean over seeds (± the standard error where it says so), at the sizes of the
tests that check these results (tests/test_transformer.py, tests/test_nf.py).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

import bncli

TRANSFORMER = {"arch": "transformer", "width": 64, "tokens": 16, "heads": 4, "batch_size": 8, "init": "xavier"}
GRADS = {**TRANSFORMER, "tokens": 64, "batch_size": 4, "norm": "layernorm", "grads": True}
NF = {"arch": "resnet", "stages": 3, "blocks": 4, "channels": 32, "image_size": 16, "batch_size": 16}


def runs(n, **kw):
    return [bncli.depth_study(seed=s, device="cpu", **kw).table for s in range(n)]


def mean_sem(tables, column):
    v = np.array([t[column].to_numpy() for t in tables])
    return v.mean(0), v.std(0, ddof=1) / math.sqrt(len(v))


def row(name, values, digits=3):
    return f"| {name} | " + " | ".join(f"{v:.{digits}f}" for v in values) + " |"


def rank_collapse(seeds):
    lines = ["## Rank collapse: attention only, no norm (Dong et al. 2021)", ""]
    lines += [f"token_cos and erank of each block's output, mean over {seeds} seeds ({_size(TRANSFORMER)}).", ""]
    depth = 12
    lines += ["| | " + " | ".join(str(b) for b in range(depth)) + " |", "|---|" + "---:|" * depth]
    for skip in (0.0, 1.0):
        t = runs(seeds, depth=depth, mlp_ratio=0, residual=skip, norm="none", erank=True, **TRANSFORMER)
        name = "with the skip" if skip else "no skip"
        lines.append(row(f"token_cos, {name}", mean_sem(t, "token_cos")[0]))
        lines.append(row(f"erank, {name}", mean_sem(t, "erank")[0], 2))
    return lines


def gradients(seeds):
    lines = ["## weight_grad_norm by block: post-LN and pre-LN (Xiong et al. 2020)", ""]
    lines += [
        f"Mean ± standard error over {seeds} seeds ({_size(GRADS)}); pre-LN's output goes through its final norm.",
        "",
    ]
    for depth in (6, 24):
        blocks = list(range(depth)) if depth <= 6 else [0, 4, 8, 12, 16, 20, 23]
        lines += [
            f"Depth {depth}:",
            "",
            "| | " + " | ".join(str(b) for b in blocks) + " |",
            "|---|" + "---:|" * len(blocks),
        ]
        for pos in ("post", "pre"):
            m, s = mean_sem(runs(seeds, depth=depth, norm_position=pos, **GRADS), "weight_grad_norm")
            lines.append(f"| {pos}-LN | " + " | ".join(f"{m[b]:.0f} ± {s[b]:.0f}" for b in blocks) + " |")
        lines.append("")
    return lines


def nf_variance(seeds):
    lines = ["## NF-ResNet: the skip path's variance per block (Brock et al. 2021)", ""]
    lines += [
        f"chan_var of each block's output (the skip path), mean over {seeds} seeds; --norm none --nf-beta",
        f"--residual 0.2, {_size(NF)}; a transition opens blocks 4 and 8. branch_var is the branch's, before alpha.",
        "",
    ]
    depth = 12
    lines += ["| | " + " | ".join(str(b) for b in range(depth)) + " |", "|---|" + "---:|" * depth]
    for ws in ("scaled", "none"):
        t = runs(seeds, norm="none", residual=0.2, nf_beta=True, ws=ws, **NF)
        lines.append(row(f"chan_var, ws {ws}", mean_sem(t, "chan_var")[0], 4))
        lines.append(row(f"increment, ws {ws}", np.diff(mean_sem(t, "chan_var")[0], prepend=1.0), 4))
        lines.append(row(f"chan_sq_mean, ws {ws}", mean_sem(t, "chan_sq_mean")[0], 4))
        lines.append(row(f"branch_var, ws {ws}", mean_sem(t, "branch_var")[0], 3))
        lines.append(row(f"theory_std^2, ws {ws}", t[0]["theory_std"].to_numpy() ** 2, 4))
    return lines


def _size(kw):
    return ", ".join(f"{k} {v}" for k, v in kw.items() if k not in ("arch", "grads"))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--out", default=str(Path(__file__).with_name("results_signal.md")), help="'-' to only print")
    args = p.parse_args()
    lines = ["# Transformers and NF-ResNets at init: the measured figures", ""]
    lines += ["Written by `benchmarks/signal_figures.py`.", ""]
    for part in (rank_collapse, gradients, nf_variance):
        lines += part(args.seeds) + [""]
    text = "\n".join(lines).rstrip() + "\n"
    print(text)
    if args.out != "-":
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
