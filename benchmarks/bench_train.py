"""bncli train against a plain PyTorch training loop of the same network, side by side.

    .venv/bin/python benchmarks/bench_train.py              # -> benchmarks/results_train.md
    .venv/bin/python benchmarks/bench_train.py --device cuda --rounds 5 --out -

The size is issue 21's: a depth-20 width-256 MLP with BatchNorm and ReLU on gaussians (2000
samples, 32 features, 10 classes), batches of 64, SGD with momentum 0.9, 500 steps, float32.
bncli's run is the study's whole run (the data drawn, every weight drawn by its init, the loop,
train and test accuracy every 50 steps, the tables read back), without recording and with
--record-every 10 (the depth study's statistics, the percentiles and the gradient norms of
every layer on a 256-sample probe batch). The reference is what one would write: nn.Sequential
of nn.Linear(bias=False), nn.BatchNorm1d and nn.ReLU and a Linear head, torch.optim.SGD, the
same data and batches, and the same evaluations every 50 steps (nn.Module.eval()), with one
loss.item() per step (bncli checks every step's loss on CPU). Round-robin repeats, medians, in
this one process (targets: at most 1.1x without recording, 1.3x with --record-every 10).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from bench_depth import machine  # this directory's: the machine table of every benchmark

from bncli import config
from bncli.studies import train
from bncli.studies.train import data

SIZE = dict(data="gaussians", depth=20, width=256, norm="batchnorm", activation="relu", batch_size=64, steps=500)
SGD = dict(optimizer="sgd", lr=0.05, momentum_sgd=0.9, eval_every=50)
TARGETS = {"bncli train": 1.1, "bncli train --record-every 10": 1.3}


def cfg_of(device: torch.device, record: int):
    return config.load(train.CONFIG, None, device=str(device), record_every=record, **SIZE, **SGD)


def bncli_run(device: torch.device, record: int) -> float:
    cfg = cfg_of(device, record)
    t = time.perf_counter()
    r = train.run(cfg, device)
    assert r.status == "ok", r.status
    return time.perf_counter() - t


def plain_run(device: torch.device) -> float:
    """The plain loop, timed from the data on: the same work as bncli's run but for its records."""
    cfg = cfg_of(device, 0)
    t = time.perf_counter()
    d = data.load(cfg, device, torch.float32)
    w = cfg.width
    mods: list[nn.Module] = [nn.Linear(cfg.input_dim, w, bias=False), nn.BatchNorm1d(w), nn.ReLU()]
    for _ in range(cfg.depth - 1):
        mods += [nn.Linear(w, w, bias=False), nn.BatchNorm1d(w), nn.ReLU()]
    net = nn.Sequential(*mods, nn.Linear(w, cfg.classes)).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum_sgd)
    batches = data.Batches(len(d.y_train), cfg.batch_size, cfg.seed, device)
    accs = []
    for step in range(cfg.steps + 1):
        if step % cfg.eval_every == 0 or step == cfg.steps:
            net.eval()
            with torch.no_grad():
                accs.append(
                    [(net(x).argmax(1) == y).double().mean() for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test))]
                )
            net.train()
        idx = batches(step)
        loss = F.cross_entropy(net(d.x_train[idx]), d.y_train[idx])
        loss.item()
        if step < cfg.steps:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    [[a.item() for a in pair] for pair in accs]
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's)")
    p.add_argument("--note", default="", help="a line about the machine's state, added to the results")
    p.add_argument("--out", default=str(Path(__file__).with_name("results_train.md")))
    a = p.parse_args()
    device = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    bncli_run(device, 10), plain_run(device)  # warm-up: kernels, allocator
    times: dict[str, list[float]] = {"plain PyTorch loop": [], **{k: [] for k in TARGETS}}
    for _ in range(a.rounds):  # round-robin: a slow moment of a shared machine hits every entry
        times["plain PyTorch loop"].append(plain_run(device))
        times["bncli train"].append(bncli_run(device, 0))
        times["plain PyTorch loop"].append(plain_run(device))
        times["bncli train --record-every 10"].append(bncli_run(device, 10))
        print(f"round done: {times}", file=sys.stderr, flush=True)
    ref = statistics.median(times["plain PyTorch loop"])
    lines = [
        "# bncli train against a plain PyTorch loop",
        "",
        f"`.venv/bin/python benchmarks/bench_train.py{' --device ' + a.device if a.device != 'cpu' else ''}`: "
        f"{SIZE['depth']}-layer width-{SIZE['width']} MLP, BatchNorm, ReLU, gaussians, batch {SIZE['batch_size']}, "
        f"SGD momentum 0.9, {SIZE['steps']} steps, float32; median of {a.rounds} round-robin rounds "
        f"({2 * a.rounds} of the reference).",
        "",
        "| | |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in machine(device).items()],
        "",
        "| run | median | ratio to the plain loop | target |",
        "| --- | ---: | ---: | ---: |",
        f"| plain PyTorch loop | {ref:.2f} s | 1.00x | |",
    ]
    verdicts = []
    for k, target in TARGETS.items():
        m = statistics.median(times[k])
        lines.append(f"| {k} | {m:.2f} s | {m / ref:.2f}x | <= {target}x |")
        verdicts.append(m / ref <= target)
    lines += ["", "All times (s): " + "; ".join(f"{k}: {', '.join(f'{t:.2f}' for t in v)}" for k, v in times.items())]
    if a.note:
        lines += ["", a.note]
    text = "\n".join(lines) + "\n"
    if a.out == "-":
        sys.stdout.write(text)
    else:
        Path(a.out).write_text(text)
        sys.stdout.write(text)
    sys.exit(0 if all(verdicts) else 1)


if __name__ == "__main__":
    main()
