"""bncli's --arch transformer against an nn.TransformerEncoder forward of the same size, side by side.

    .venv/bin/python benchmarks/bench_transformer.py            # -> benchmarks/results_transformer.md
    .venv/bin/python benchmarks/bench_transformer.py --device cuda --out -

The size is the issue's: depth 48, width 256, 64 tokens, 4 heads, MLP 4 x 256, batch 16, pre-LN,
float32. bncli's run is the whole run: every weight drawn by its init, the forward pass, every
statistic of every block (token_cos included) read back, and theory_std. The reference is what
one would write: nn.TransformerEncoder of nn.TransformerEncoderLayer(norm_first=True, bias=False,
dropout=0), built once (not timed), its forward under no_grad on the same N(0, 1) tokens, in eval
mode (bias=False keeps it off the fused inference path); for comparison, with bias=True on that
fused path, and on as many threads as bncli computes on (on CPU, bncli's streamed run draws
the next blocks' weights on half the threads while the other half computes: engine.split_threads).
Round-robin repeats, medians, in this one process (target: at most 1.3x the first reference).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from bench_depth import machine  # this directory's: the machine table of every benchmark

from bncli import config
from bncli.runtime import torch_threads
from bncli.studies import depth
from bncli.studies.depth import engine

SIZE = {"depth": 48, "width": 256, "tokens": 64, "heads": 4, "mlp_ratio": 4, "batch_size": 16}
TARGET = 1.3


def bncli_cfg(device):
    return config.load(depth.CONFIG, None, arch="transformer", norm="layernorm", device=str(device), **SIZE)


def encoder(device, bias=False):
    layer = nn.TransformerEncoderLayer(
        SIZE["width"], SIZE["heads"], SIZE["mlp_ratio"] * SIZE["width"], dropout=0.0, batch_first=True,
        norm_first=True, bias=bias,
    )  # fmt: skip
    return nn.TransformerEncoder(layer, SIZE["depth"], enable_nested_tensor=False).to(device).eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(Path(__file__).with_name("results_transformer.md")), help="'-' to only print")
    args = p.parse_args()
    device = torch.device(args.device)
    cfg = bncli_cfg(device)
    x = torch.randn(SIZE["batch_size"], SIZE["tokens"], SIZE["width"], device=device)
    plain, fused = encoder(device), encoder(device, bias=True)

    def run_bncli():
        r = depth.run(cfg, device)
        assert r.status == "ok"

    def run_encoder(model, threads=None):
        with torch.no_grad(), torch_threads(threads or torch.get_num_threads()):
            model(x)

    computing = engine.split_threads(device)[1]
    approaches = {
        "bncli --arch transformer": run_bncli,
        "nn.TransformerEncoder, bias=False": lambda: run_encoder(plain),
        "nn.TransformerEncoder, bias=True (fused path)": lambda: run_encoder(fused),
        f"nn.TransformerEncoder, bias=False, {computing} thread(s) (bncli's computing threads)": lambda: run_encoder(
            plain, computing
        ),
    }
    for fn in approaches.values():  # warm-up: first-call costs out of the timings
        fn()
    times = {k: [] for k in approaches}
    load = os.getloadavg()[0]
    for _ in range(args.repeats):
        for k, fn in approaches.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t)
            print(f"  {k:48s} {times[k][-1]:7.3f} s", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["nn.TransformerEncoder, bias=False"]
    ratio = med["bncli --arch transformer"] / ref
    same = med["bncli --arch transformer"] / med[list(approaches)[-1]]
    lines = [
        "# bncli --arch transformer against nn.TransformerEncoder",
        "",
        "Written by `benchmarks/bench_transformer.py`: "
        + ", ".join(f"{k} {v}" for k, v in SIZE.items())
        + ", float32,",
        f"pre-LN; medians of {args.repeats} round-robin repeats in one process. bncli's time is a whole run (weights",
        "drawn, forward, every statistic of every block, theory_std); the reference's a forward under no_grad.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine(device).items()),
        f"| load average (1 min) before / after | {load:.2f} / {os.getloadavg()[0]:.2f} |",
        "",
        "| approach | median | runs | vs nn.TransformerEncoder, bias=False |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {k} | {v:.3f} s | {len(times[k])} | {v / ref:.2f}x |" for k, v in med.items()]
    verdict = "**met**" if max(ratio, same) <= TARGET else "**NOT met**"
    lines += [
        "",
        f"bncli takes {ratio:.2f}x the nn.TransformerEncoder forward, and {same:.2f}x that forward on bncli's "
        f"{computing} computing thread(s): {verdict} (both <= {TARGET}x).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out != "-":
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
