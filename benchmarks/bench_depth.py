"""bncli's depth study against the notebook's way and against the machine's lower bound.

    make bench                                    # or: .venv/bin/python benchmarks/bench_depth.py
    .venv/bin/python benchmarks/bench_depth.py --device cuda --sizes large

Every claim is a ratio against a reference run side by side, in this one run:
1. speed vs a notebook-style implementation (nn.Linear modules, default init, kaiming_normal_
   again, nn.BatchNorm1d, x.std().item() every layer), both timed in this process, imports excluded;
2. speed vs the lower bound: drawing each weight once (bncli's own init and generators) plus a
   bare forward pass with no statistics;
3. peak memory (RSS) of each approach, each in a fresh child process;
5. wall time of `bncli --help` and `bncli depth-study --help` vs `python -c "import torch"`.
Writes the table to benchmarks/results.md (--out) with the machine it ran on.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

from bncli import config
from bncli.runtime import torch_threads
from bncli.studies import depth
from bncli.studies.depth import engine
from bncli.studies.depth.net import Net, make_input

# depth, width, batch; "wide" (a GPU's size: 64 GB of notebook-style weights) skips the notebook
SIZES = {
    "notebook": (100, 256, 16),
    "large": (1000, 1024, 128),
    "wide": (1000, 4096, 1024),
    "conv": (50, 64, 32),
}  # conv: depth, channels, batch, on 32 x 32 images (--arch conv)
CONV_IMAGE = 32
TARGETS = {
    "speedup": 2.5,
    "conv_speedup": 1.5,
    "near_limit": 1.3,
    "near_limit_cuda": {"notebook": 1.7, "large": 1.3},
    "stream_rss_gb": 1.5,
    "notebook_rss_gb": 4.0,
    "help_s": 0.3,
    "help_vs_torch": 0.2,
}
GB = 1e9


class MLP(nn.Module):
    """The notebook's model (06-03, cell 7), its per-layer std kept instead of printed."""

    def __init__(self, num_hidden, num_layers):
        super().__init__()
        self.linears = nn.ModuleList([nn.Linear(num_hidden, num_hidden, bias=False) for _ in range(num_layers)])
        self.bns = nn.ModuleList([nn.BatchNorm1d(num_hidden) for _ in range(num_layers)])

    def forward(self, x):
        """As the notebook wrote it: autograd on, x.std() twice a layer."""
        stds = []
        for linear, bn in zip(self.linears, self.bns, strict=True):
            x = torch.relu(bn(linear(x)))
            if torch.isnan(x.std()):
                break
            stds.append(x.std().item())
        return x, stds

    def forward_lean(self, x):
        """The same with no autograd graph and one std a layer: the cheapest notebook-style forward."""
        stds = []
        with torch.no_grad():
            for linear, bn in zip(self.linears, self.bns, strict=True):
                x = torch.relu(bn(linear(x)))
                std = x.std()
                if torch.isnan(std):
                    break
                stds.append(std.item())
        return x, stds

    def initialize(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight.data)


class ConvNet(MLP):
    """The notebook's model with Conv2d(C, C, 3, padding 1) and BatchNorm2d: what one would write."""

    def __init__(self, channels, num_layers):
        nn.Module.__init__(self)
        self.linears = nn.ModuleList(
            [nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in range(num_layers)]
        )
        self.bns = nn.ModuleList([nn.BatchNorm2d(channels) for _ in range(num_layers)])

    def initialize(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight.data)


def notebook_style(cfg, device, lean=False):
    """Build, init again, forward: the notebook's own forward is target 1's reference."""
    torch.manual_seed(cfg.seed)
    if cfg.arch == "conv":
        net = ConvNet(cfg.channels, cfg.depth)
        net.initialize()
        net.to(device)
        x = torch.randn(cfg.batch_size, cfg.channels, cfg.image_size, cfg.image_size, device=device)
        _, stds = net.forward_lean(x) if lean else net(x)
        return stds
    net = MLP(cfg.width, cfg.depth)
    net.initialize()
    net.to(device)
    x = torch.randn(cfg.batch_size, cfg.width, device=device)
    _, stds = net.forward_lean(x) if lean else net(x)
    return stds


def bncli_run(cfg, device):
    return depth.run(cfg, device)


def draw_only(cfg, device):
    """Every weight drawn once, on all torch threads: the draw's share of the lower bound."""
    n = torch.get_num_threads() if device.type == "cpu" and torch.get_num_threads() > 1 else 0
    for _ in engine.draw_weights(Net.of(cfg), device, n):
        pass


def lower_bound(cfg, device):
    """Each weight drawn once, as bncli does it, and the bare forward pass: no statistics.

    The same schedule as bncli: on CPU, half the threads draw the next layers while the
    others compute the current one.
    """
    net = Net.of(cfg)
    step = net.arch_module().step(net, device)
    drawing, computing = engine.split_threads(device)
    with torch.no_grad(), torch_threads(computing):
        x = make_input(net, device)
        for w in engine.draw_weights(net, device, drawing):
            x = step(x, w)
    return x


LEAN = "notebook-style, no_grad"
APPROACHES = {
    "notebook-style": notebook_style,
    LEAN: lambda cfg, device: notebook_style(cfg, device, lean=True),
    "bncli": bncli_run,
    "lower bound": lower_bound,
    "draw only": draw_only,
    "bncli --keep-weights": bncli_run,
}


DTYPE = "float32"  # bncli's and the lower bound's; --dtype bfloat16 for GPUs


def make_cfg(size, device, approach="bncli"):
    d, w, b = SIZES[size]
    shape = {"arch": "conv", "channels": w, "image_size": CONV_IMAGE} if size == "conv" else {"width": w}
    return config.load(
        depth.CONFIG,
        None,
        depth=d,
        batch_size=b,
        device=str(device),
        dtype=DTYPE,
        keep_weights=approach == "bncli --keep-weights",
        **shape,
    )


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, cfg, device) -> float:
    sync(device)
    t = time.perf_counter()
    fn(cfg, device)
    sync(device)
    return time.perf_counter() - t


def time_size(size, device, repeats, names) -> dict[str, list[float]]:
    """Round-robin over the approaches, so a burst of load elsewhere hits them all alike."""
    times = {n: [] for n in names}
    for n in names:  # warm-up: first-call costs (allocator, kernels, MKL init) out of the timings
        APPROACHES[n](make_cfg("notebook", device, n), device)
    for r in range(repeats):
        for n in names:
            if size in ("large", "conv") and n.startswith("notebook") and r >= 2:
                continue  # ~20 s a go on 2 cores: two runs are enough
            times[n].append(timed(APPROACHES[n], make_cfg(size, device, n), device))
            print(f"  {size:8s} {n:22s} {times[n][-1]:8.3f} s", file=sys.stderr, flush=True)
    return times


def peak_rss() -> int:
    """This process's peak resident set size, in bytes.

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent through
    fork and exec, so a child of a parent that once held 4 GB would report 4 GB.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def child_main(args):
    """One approach in a fresh process: print its wall time and peak memory as JSON."""
    device = torch.device(args.device)
    cfg = make_cfg(args.size, device, args.child)
    seconds = timed(APPROACHES[args.child], cfg, device)
    rss = peak_rss()
    cuda = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    print(json.dumps({"seconds": seconds, "rss": rss, "cuda_peak": cuda}))


def peak_memory(size, device, names) -> dict[str, dict]:
    out = {}
    for n in names:
        cmd = [sys.executable, __file__, "--child", n, "--size", size, "--device", str(device), "--dtype", DTYPE]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            out[n] = {"error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]}
        else:
            out[n] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"  {size:8s} {n:22s} peak RSS {out[n].get('rss', 0) / GB:6.2f} GB", file=sys.stderr, flush=True)
    return out


def startup(repeats) -> dict[str, list[float]]:
    exe = Path(sys.executable).with_name("bncli")
    bncli = [str(exe)] if exe.exists() else [sys.executable, "-m", "bncli"]
    cmds = {
        "bncli --help": bncli + ["--help"],
        "bncli depth-study --help": bncli + ["depth-study", "--help"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
    }
    times = {k: [] for k in cmds}
    for r in range(repeats + 1):
        for k, cmd in cmds.items():
            t = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            if r:  # the first round warms the file cache
                times[k].append(time.perf_counter() - t)
    return times


def machine(device) -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        cpu = f"{fields['model name']} (family {fields['cpu family']}, model {fields['model']})"
    except (OSError, KeyError):
        pass
    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def fmt_s(s):
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def verdict(ok):
    return "**met**" if ok else "**NOT met**"


def report(info, load, times, mem, start, repeats, cuda=False) -> str:
    med = {size: {n: statistics.median(v) for n, v in t.items() if v} for size, t in times.items()}
    lines = [
        "# bncli depth-study benchmark",
        "",
        "Written by `make bench` (`benchmarks/bench_depth.py`); medians of a few repeats, forward only,",
        f"kaiming init, batchnorm, relu, bncli in {DTYPE}. Every ratio compares runs made side by side",
        "in this one run. The lower bound draws each weight once as bncli does (one generator, reseeded",
        "per layer; on CPU half the threads draw the next layers while the others compute) and runs",
        "the bare forward pass (on CUDA with native F.batch_norm), with no statistics. notebook-style",
        "is the notebook's MLP and forward verbatim, print aside (nn.Linear with its default init,",
        "kaiming_normal_ again, nn.BatchNorm1d, relu, autograd on, x.std() twice and .item() once a",
        "layer): target 1's reference. The",
        "no_grad variant, one std a layer, is the cheapest a notebook could do; shown for comparison.",
        "",
        "| machine | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    lines += [f"| load average (1 min) before / after | {load[0]:.2f} / {load[1]:.2f} |", ""]
    lines += [
        "## Time (in-process, imports excluded)",
        "",
        "| size (depth x width x batch) | approach | median | runs | vs bncli |",
        "|---|---|---:|---:|---:|",
    ]
    for size, m in med.items():
        d, w, b = SIZES[size]
        for n, s in m.items():
            shape = f"{d}x{w}x{b}" + (f" on {CONV_IMAGE}x{CONV_IMAGE}" if size == "conv" else "")
            lines.append(f"| {size} ({shape}) | {n} | {fmt_s(s)} | {len(times[size][n])} | {s / m['bncli']:.2f}x |")
    lines += [
        "",
        "## Peak memory (peak RSS, VmHWM, of a fresh process running one approach, torch included)",
        "",
        "| size | approach | peak RSS | wall time |",
        "|---|---|---:|---:|",
    ]
    for size, m in mem.items():
        for n, r in m.items():
            if "error" in r:
                lines.append(f"| {size} | {n} | failed: {r['error']} | |")
                continue
            gpu = f" (GPU peak {r['cuda_peak'] / GB:.2f} GB)" if r.get("cuda_peak") else ""
            lines.append(f"| {size} | {n} | {r['rss'] / GB:.2f} GB{gpu} | {fmt_s(r['seconds'])} |")
    st = {k: statistics.median(v) for k, v in start.items()}
    torch_s = st['python -c "import torch"']
    lines += [
        "",
        f"## Start-up (wall time of a subprocess, median of {repeats})",
        "",
        "| command | median | vs import torch |",
        "|---|---:|---:|",
    ]
    lines += [f"| `{k}` | {fmt_s(s)} | {s / torch_s:.2f}x |" for k, s in st.items()]

    lines += ["", "## Targets (issue 3)", ""]
    for size, m in med.items():
        if "notebook-style" in m:
            r = m["notebook-style"] / m["bncli"]
            want = {"large": TARGETS["speedup"], "conv": TARGETS["conv_speedup"]}.get(size)
            ok = f" {verdict(r >= want)} (>= {want}x)" if want else ""
            lean = f" ({m[LEAN] / m['bncli']:.2f}x than its no_grad variant)" if LEAN in m else ""
            lines.append(f"- 1. {size}: bncli is {r:.2f}x faster than notebook-style{lean}.{ok}")
        limit = (TARGETS["near_limit_cuda"] if cuda else {"large": TARGETS["near_limit"]}).get(size)
        limit = TARGETS["near_limit"] if size == "conv" else limit
        if "lower bound" in m:
            r = m["bncli"] / m["lower bound"]
            ok = f" {verdict(r <= limit)} (<= {limit}x)" if limit else ""
            lines.append(
                f"- 2. {size}: bncli takes {r:.2f}x the lower bound (draw each weight once + bare forward).{ok}"
            )
    big = mem.get("large", {})
    if "rss" in big.get("bncli", {}):
        s = big["bncli"]["rss"] / GB
        lines.append(
            f"- 3. large: bncli (streaming) peaks at {s:.2f} GB RSS "
            f"{verdict(s < TARGETS['stream_rss_gb'])} (< {TARGETS['stream_rss_gb']} GB)"
        )
    if "rss" in big.get("notebook-style", {}):
        s = big["notebook-style"]["rss"] / GB
        lines.append(
            f"- 3. large: notebook-style peaks at {s:.2f} GB RSS "
            f"{verdict(s > TARGETS['notebook_rss_gb'])} (> {TARGETS['notebook_rss_gb']} GB)"
        )
    for k in ("bncli --help", "bncli depth-study --help"):
        s = st[k]
        ok = s <= TARGETS["help_s"] and s / torch_s <= TARGETS["help_vs_torch"]
        lines.append(
            f"- 5. `{k}`: {fmt_s(s)}, {s / torch_s:.2f}x `import torch` {verdict(ok)} "
            f"(<= {TARGETS['help_s']} s and <= {TARGETS['help_vs_torch']}x)"
        )
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (timed with torch.cuda.synchronize)")
    p.add_argument("--dtype", default="float32", help="bncli's dtype (notebook-style is float32): float32, bfloat16")
    p.add_argument("--sizes", default="notebook,large,conv", help="comma-separated: notebook, large, wide, conv")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per approach (large notebook-style: 2)")
    p.add_argument("--startup-repeats", type=int, default=7)
    p.add_argument("--no-memory", action="store_true", help="skip the child processes that measure peak RSS")
    p.add_argument("--out", default=str(Path(__file__).with_name("results.md")), help="'-' to only print")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    args = p.parse_args()
    global DTYPE
    DTYPE = args.dtype
    if args.child:
        return child_main(args)

    device = torch.device(args.device)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    load_before = os.getloadavg()[0]
    info = machine(device)
    print("start-up ...", file=sys.stderr, flush=True)
    start = startup(args.startup_repeats)
    times, mem = {}, {}
    for size in sizes:
        print(f"time {size} ...", file=sys.stderr, flush=True)
        notebook = ["notebook-style", LEAN] if size != "wide" else []
        times[size] = time_size(size, device, args.repeats, [*notebook, "bncli", "lower bound", "draw only"])
        if not args.no_memory:
            print(f"memory {size} ...", file=sys.stderr, flush=True)
            mem[size] = peak_memory(
                size, device, ["notebook-style", LEAN, "bncli", "bncli --keep-weights", "lower bound"]
            )
    text = report(
        info, (load_before, os.getloadavg()[0]), times, mem, start, args.startup_repeats, cuda=device.type == "cuda"
    )
    print(text)
    if args.out != "-":
        Path(args.out).write_text(text)
        print(f"written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
