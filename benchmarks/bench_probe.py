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
bare forward, peak memory at most 1.3x. On a shared, loaded machine two calls' wall-clock
times differ more than probe costs: `--threads 1` makes the CPU-time column (this thread's)
the robust one, and the hooks' own time is also taken within one call, against the rest of it.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
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


def timed(fn) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds) of fn(): CPU time is this thread's with one torch thread
    (then the other processes on a shared machine change it little), the process's otherwise."""
    cpu = time.thread_time if torch.get_num_threads() == 1 else time.process_time
    t0, c0 = time.perf_counter(), cpu()
    fn()
    return time.perf_counter() - t0, cpu() - c0


def in_hooks(model, args, kwargs, names, output: bool) -> tuple[float, float, int]:
    """(seconds spent inside probe's forward hooks, the whole probe's seconds, the hooks' calls)
    in one probe: the overhead measured directly, against the forward's own kernels in the same
    call (on a loaded machine two calls' times differ more than the hooks cost)."""
    spent = [0.0, 0]
    tap = engine._Recorder.tap

    def timed_tap(self, name):
        hook = tap(self, name)

        def timed_hook(*a):
            t0 = time.perf_counter()
            hook(*a)
            spent[0] += time.perf_counter() - t0
            spent[1] += 1

        return timed_hook

    engine._Recorder.tap = timed_tap
    t0 = time.perf_counter()
    try:
        engine.probe(model, args, names, kwargs=kwargs, output=output)
    finally:
        engine._Recorder.tap = tap
    return spent[0], time.perf_counter() - t0, int(spent[1])


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
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    hooks: list[float] = []
    per_call: list[float] = []
    for _ in range(rounds):
        for k, fn in runs.items():
            wall, c = timed(fn)
            times[k].append(wall)
            cpu[k].append(c)
        spent, total, calls = in_hooks(model, args, kwargs, every, False)
        hooks.append(spent / (total - spent))
        per_call.append(spent / calls)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    f32 = engine.probe(model, args, every, kwargs=kwargs, output=False)
    f64 = engine.probe(model, args, every, kwargs=kwargs, output=False, exact=True)
    a, b = torch.stack(f32.moments), torch.stack(f64.moments)
    # each statistic's error on its own scale: the mean's on the std, chan_sq_mean's on E x^2 (both ~0 after a norm)
    scale = b.abs().clone()
    scale[:, 0] = b[:, 1]
    scale[:, 4] = b[:, 4] + b[:, 5]
    rel = ((a - b).abs() / scale.clamp_min(1e-30)).nan_to_num(0.0).max().item()
    hook = statistics.median(hooks)  # the hooks' time over the rest of the same call's
    return {
        "name": name,
        "taps": (len(default) + 1, len(every)),
        "med": med,
        "cpu": med_cpu,
        "rel": rel,
        "hooks": (1 + hook, statistics.median(per_call) * 1e3, calls),
    }


def _status(key: str) -> float:
    """A /proc/self/status field (VmRSS, VmHWM) in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 2**20
    raise KeyError(key)


def child(name: str, variant: str) -> None:
    """Prints (RSS before the forward, peak RSS during it) in GiB: the peak is reset first
    (clear_refs 5), so that building the model (its init's temporaries) does not count."""
    batch, sample = MEMORY.get(name) or CASES[name]
    model, args, kwargs = setup(name, batch, sample)
    names = taps.select(model, [] if variant == "default" else ["*"], []) if variant != "bare" else []
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    if variant == "bare":
        bare(model, args, kwargs)
    else:
        engine.probe(model, args, names, kwargs=kwargs, output=variant == "default")
    print(base, _status("VmHWM"))


def peak(name: str, variant: str) -> tuple[float, float]:
    threads = ["--threads", str(torch.get_num_threads())]
    out = subprocess.run(
        [sys.executable, __file__, *threads, "--child", name, variant], capture_output=True, text=True, check=True
    )
    base, top = (float(v) for v in out.stdout.split()[-2:])
    return base, top


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results_probe.md")
    p.add_argument("--threads", type=int, help="torch's threads (default: torch's own choice)")
    p.add_argument("--models", nargs="*", default=list(CASES), help="the speed rows' models")
    p.add_argument("--no-memory", action="store_true", help="leave out the peak-memory rows")
    p.add_argument("--memory-only", action="store_true", help="only the peak-memory rows")
    p.add_argument("--child", nargs=2, metavar=("MODEL", "VARIANT"))
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
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
        "CPU time: default, every leaf | every leaf, the hooks' own time counted in the same call: "
        "1 + hooks / the rest, time per call | "
        "largest error vs float64 (relative; the mean on the std) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in [] if a.memory_only else a.models:
        r = speed(name, a.rounds)
        m, c, h = r["med"], r["cpu"], r["hooks"]
        lines.append(
            f"| {name} | {CASES[name][0]} | {r['taps'][0]}, {r['taps'][1]} | {m['bare']:.3f} s | "
            f"{m['default'] / m['bare']:.3f}x | {m['every_leaf'] / m['bare']:.3f}x | "
            f"{c['default'] / c['bare']:.3f}x, {c['every_leaf'] / c['bare']:.3f}x | "
            f"{h[0]:.3f}x, {h[1]:.2f} ms ({h[2]} calls) | {r['rel']:.1e} |"
        )
        print(lines[-1], flush=True)
    if a.no_memory:
        a.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {a.out}")
        return None
    lines += [
        "",
        "Peak RSS during the forward pass, each in a fresh process (the peak reset once the model and "
        "its input are built); in brackets the rise above the RSS before the forward.",
        "",
        "| model | batch | RSS before | bare forward: peak (rise) | default taps | every leaf |",
        "|---|---|---|---|---|---|",
    ]
    for name, (batch, _) in MEMORY.items():
        b0, b1 = peak(name, "bare")
        (d0, d1), (e0, e1) = peak(name, "default"), peak(name, "every_leaf")
        lines.append(
            f"| {name} | {batch} | {b0:.2f} GiB | {b1:.2f} GiB ({b1 - b0:.2f} GiB) | {d1 / b1:.3f}x "
            f"({(d1 - d0) / (b1 - b0):.3f}x) | {e1 / b1:.3f}x ({(e1 - e0) / (b1 - b0):.3f}x) |"
        )
        print(lines[-1], flush=True)
    a.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
