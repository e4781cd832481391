"""bncli probe against the bare forward pass of the same model, side by side in one process.

    make setup-vision && .venv-vision/bin/python benchmarks/bench_probe.py   # -> benchmarks/results_probe.md

For each model (torchvision:resnet50 at batch 16, 224 x 224; torchvision:vit_b_16 at batch 8;
hf:gpt2 at batch 4 x 128 tokens), one model object, one input, the rounds interleaved: the bare
forward (the model's mode, no_grad, no hook), probe with the default taps, probe with
`--layers '*'` (every statistic but erank). The medians' ratios to the bare forward are the
speed; the float32 statistics' largest relative difference from the same taps computed
two-pass in float64 is their accuracy. Peak memory (RSS) of the bare forward and of probe,
each in a fresh child process, adds torchvision:resnet152 at batch 32: probe keeps a small
vector per tap, never an activation. Targets: 1.1x (default taps) and 1.25x (every leaf) the
bare forward, peak memory at most 1.3x.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from bncli.studies.probe import engine, models, taps  # noqa: E402

CASES = {  # model -> (batch, one sample's shape or token count)
    "torchvision:resnet50": (16, [3, 224, 224]),
    "torchvision:vit_b_16": (8, [3, 224, 224]),
    "hf:gpt2": (4, 128),
}
MEMORY = {"torchvision:resnet50": (16, [3, 224, 224]), "torchvision:resnet152": (32, [3, 224, 224])}
TARGETS = {"default": 1.1, "every_leaf": 1.25, "memory": 1.3}


def setup(name: str, batch: int, sample) -> tuple[torch.nn.Module, tuple, dict]:
    torch.manual_seed(0)
    model = models.build(name, []).train()
    if isinstance(sample, int):
        vocab = models.vocab_size(model) or 1000
        return model, (), {"input_ids": torch.randint(0, vocab, (batch, sample))}
    return model, (torch.randn(batch, *sample),), {}


def bare(model, args, kwargs) -> None:
    with torch.no_grad():
        model(*args, **kwargs)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def speed(name: str, rounds: int) -> dict:
    batch, sample = CASES[name]
    model, args, kwargs = setup(name, batch, sample)
    default, every = taps.select(model, [], []), taps.select(model, ["*"], [])
    runs = {
        "bare": lambda: bare(model, args, kwargs),
        "default": lambda: engine.probe(model, args, default, kwargs=kwargs),
        "every_leaf": lambda: engine.probe(model, args, every, kwargs=kwargs, output=False),
    }
    for fn in runs.values():  # warm up: the allocator, the kernels' first calls
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for k, fn in runs.items():
            times[k].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    f32 = engine.probe(model, args, every, kwargs=kwargs, output=False)
    f64 = engine.probe(model, args, every, kwargs=kwargs, output=False, exact=True)
    a, b = torch.stack(f32.moments), torch.stack(f64.moments)
    # each statistic's error on its own scale: the mean's on the std, chan_sq_mean's on E x^2 (both ~0 after a norm)
    scale = b.abs().clone()
    scale[:, 0] = b[:, 1]
    scale[:, 4] = b[:, 4] + b[:, 5]
    rel = ((a - b).abs() / scale.clamp_min(1e-30)).nan_to_num(0.0).max().item()
    return {"name": name, "taps": (len(default) + 1, len(every)), "med": med, "rel": rel}


def child(name: str, variant: str) -> None:
    batch, sample = MEMORY.get(name) or CASES[name]
    model, args, kwargs = setup(name, batch, sample)
    if variant == "bare":
        bare(model, args, kwargs)
    else:
        engine.probe(model, args, taps.select(model, [] if variant == "default" else ["*"], []), kwargs=kwargs)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def peak(name: str, variant: str) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, variant], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1]) / 2**20  # KiB -> GiB


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results_probe.md")
    p.add_argument("--child", nargs=2, metavar=("MODEL", "VARIANT"))
    a = p.parse_args()
    if a.child:
        return child(*a.child)
    lines = [
        "# bncli probe against the bare forward pass",
        "",
        f"{datetime.date.today()}, {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, float32, CPU; `{' '.join(['benchmarks/bench_probe.py', *sys.argv[1:]])}`; medians of "
        f"{a.rounds} interleaved rounds. Targets: default taps <= {TARGETS['default']}x, every leaf <= "
        f"{TARGETS['every_leaf']}x, peak memory <= {TARGETS['memory']}x.",
        "",
        "| model | batch | taps (default, every leaf) | bare forward | default taps | every leaf | "
        "largest error vs float64 (relative; the mean on the std) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in CASES:
        r = speed(name, a.rounds)
        m = r["med"]
        lines.append(
            f"| {name} | {CASES[name][0]} | {r['taps'][0]}, {r['taps'][1]} | {m['bare']:.3f} s | "
            f"{m['default'] / m['bare']:.3f}x | {m['every_leaf'] / m['bare']:.3f}x | {r['rel']:.1e} |"
        )
        print(lines[-1], flush=True)
    lines += ["", "| model | batch | peak RSS, bare forward | default taps | every leaf |", "|---|---|---|---|---|"]
    for name, (batch, _) in MEMORY.items():
        base = peak(name, "bare")
        d, e = peak(name, "default"), peak(name, "every_leaf")
        lines.append(f"| {name} | {batch} | {base:.2f} GiB | {d / base:.3f}x | {e / base:.3f}x |")
        print(lines[-1], flush=True)
    a.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
