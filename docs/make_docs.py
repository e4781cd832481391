"""Regenerate every command output and picture that README.md and docs/*.md show, from real runs.

    make docs        # or: .venv/bin/python docs/make_docs.py [--force] [--no-images]

A ```console block whose lines start with `$ bncli ` is run: its commands in order, each
file's in one scratch directory holding a copy of configs/, and each command's output is
written under it as a 130-column terminal shows it (a command ending in `| cat`: as piped
into a program). The pictures in IMAGES are drawn by the commands beside them; those in VISION_IMAGES (bncli probe
on torchvision and timm models) by theirs, run in the vision venv: BNCLI_VISION_PYTHON, else
.venv-vision/bin/python (`make docs` builds it first). Without one they are left as they are,
and a line says how to draw them.
An output that differs from the one shown only in its numbers and timestamps is kept as it
is, unless --force. tests/test_docs.py runs the README's blocks again: every command must exit as shown (an
output ending in an `Error:` line means a non-zero exit) and print what is shown, numbers
and timestamps aside (their last digits differ between CPU models); `--help` excerpts must
match exactly.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = [
    "README.md",
    "docs/sweeps.md",
    "docs/configs.md",
    "docs/statistics.md",
    "docs/reference.md",
    "docs/theory.md",
    "docs/probe.md",
    "docs/guarantees.md",
    "docs/train.md",
]
COLUMNS = "130"
# picture -> (the command that draws it, in a scratch directory; the file it draws)
IMAGES = {
    "docs/img/init_vs_norm.png": (
        "sweep configs/sweeps/init_vs_norm.yaml --no-progress",
        "results/sweeps/init_vs_norm/std_by_layer.png",
    ),
    "docs/img/resnet_norms.png": (
        "sweep configs/sweeps/resnet_norms.yaml --no-progress",
        "results/sweeps/resnet_norms/std_by_layer.png",
    ),
    "docs/img/nf_resnet.png": (
        "sweep configs/sweeps/nf_resnet.yaml --no-progress",
        "results/sweeps/nf_resnet/std_by_layer.png",
    ),
    "docs/img/transformer_norms.png": (
        "sweep configs/sweeps/transformer_norms.yaml --no-progress",
        "results/sweeps/transformer_norms/std_by_layer.png",
    ),
}
# picture -> (the commands that draw it, in the vision venv, in one scratch directory; the file they draw)
VISION_IMAGES = {
    "docs/img/probe_resnets.png": (
        [
            "sweep --study probe --set model=torchvision:resnet50 --set batch_size=8 --set device=cpu "
            "--grid swap_norm=none,batchnorm:none --seeds 0-2 --name resnet50 --no-progress -q",
            "sweep --study probe --set model=timm:nf_resnet50 --set batch_size=8 --set device=cpu "
            "--seeds 0-2 --name nf_resnet50 --no-progress -q",
            "plot results/sweeps/resnet50 results/sweeps/nf_resnet50 --out probe_resnets.png",
        ],
        "probe_resnets.png",
    ),
}
BLOCK = re.compile(r"^```console\n(\$ bncli .*?)^```$", re.M | re.S)
# <!-- generated: NAME --> ... <!-- end -->: made by the function NAME below (a table of numbers)
GENERATED = re.compile(r"(<!-- generated: (\w+) -->\n).*?(<!-- end -->)", re.S)


def grad_rates() -> str:
    """docs/theory.md: the mean-field gradient rate per layer against the measured one (the
    growth of grad_std going backwards, mean of seeds 0 and 1, width 512, depth 30)."""
    import math

    import bncli
    from bncli import report
    from bncli.studies.depth import theory

    rows = ["| B | sqrt(lambda(B)) | measured |", "|---|---|---|"]
    for b in (4, 8, 16, 64, 128, 256):
        measured = [
            report.growth(
                bncli.depth_study(depth=30, width=512, batch_size=b, grads=True, seed=s, device="cpu").table[
                    "grad_std"
                ],
                backwards=True,
            )
            for s in (0, 1)
        ]
        rows.append(f"| {b} | {theory.bn_relu_grad_rate(b):.3f} | {sum(measured) / 2:.3f} |")
    rows.append(f"| inf | {math.sqrt(math.pi / (math.pi - 1)):.3f} | |")
    return "\n".join(rows) + "\n"


def _seed_mean(values) -> float:
    return sum(values) / len(values)


def _depth_runs(seeds, **kw):
    """The tables of depth-study runs on the CPU, one per seed."""
    import bncli

    return [bncli.depth_study(seed=s, device="cpu", **kw).table for s in seeds]


def bn_relu_std() -> str:
    """docs/theory.md: the BatchNorm -> ReLU std at the fixed point, by the batch size (theory.py)."""
    import math

    from bncli.studies.depth import theory

    rows = ["| m (batch) | 4 | 16 | 64 | 256 | inf |", "|---|---|---|---|---|---|"]
    cells = []
    for m in (4, 16, 64, 256):
        mu, sq = theory.sphere_moments(lambda z: z.clamp_min(0), m, centred=True)
        cells.append(f"{math.sqrt(sq - mu * mu):.5f}")
    cells.append(f"{math.sqrt((math.pi - 1) / (2 * math.pi)):.5f}")
    return "\n".join(rows + ["| theory_std | " + " | ".join(cells) + " |"]) + "\n"


RESNET_SEEDS = range(4)


def resnet_blocks() -> str:
    """docs/theory.md: what each ResNet block adds to the skip path's variance (BatchNorm) and by
    what it multiplies it (no norm), measured (std^2, mean over seeds 0-3) against theory_std^2;
    the default ResNet (3 stages of 8 blocks, 64 channels at 16 x 16, batch 16)."""
    import numpy as np

    rows = [
        "| norm | per block | stage 1 (16 x 16) | stage 2 (8 x 8) | stage 3 (4 x 4) | overall |",
        "|---|---|---|---|---|---|",
    ]
    for norm in ("batchnorm", "none"):
        runs = _depth_runs(RESNET_SEEDS, arch="resnet", norm=norm)
        measured = np.mean([t["std"].to_numpy() ** 2 for t in runs], 0).reshape(3, 8)
        theory = runs[0]["theory_std"].to_numpy().reshape(3, 8) ** 2
        for name, v in (("measured", measured), ("theory", theory)):
            if norm == "batchnorm":  # an increment per block within each stage (a transition restarts it)
                steps = [f"+{np.diff(v[s]).mean():.3f}" for s in range(3)]
                whole = f"+{np.diff(v, axis=1).mean():.3f}"
            else:  # a factor per block
                steps = [f"x{(v[s, -1] / v[s, 0]) ** (1 / 7):.3f}" for s in range(3)]
                whole = f"x{(v[-1, -1] / v[0, 0]) ** (1 / 23):.3f}"
            rows.append(
                f"| {norm}, {name} | {'added' if norm == 'batchnorm' else 'times'} | "
                + " | ".join(steps)
                + f" | {whole} |"
            )
    return "\n".join(rows) + "\n"


CONV_SEEDS = range(3)


def conv_depth() -> str:
    """docs/theory.md: the conv stack's theory columns against the measurement at the default
    depth (100 layers, 64 channels, 16 x 16, batch 16), both paddings: mean over seeds 0-2
    (min to max in brackets)."""
    rows = [
        "| norm | padding | layer | std | theory_std | chan_sq_mean | theory | chan_var | theory |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for norm in ("batchnorm", "none"):
        for padding in ("zeros", "circular"):
            runs = _depth_runs(CONV_SEEDS, arch="conv", norm=norm, padding=padding)
            for layer in (0, 29, 99):
                cells = []
                for col in ("std", "chan_sq_mean", "chan_var"):
                    v = [float(t[col].iloc[layer]) for t in runs]
                    cells += [
                        f"{_seed_mean(v):.3g} ({min(v):.3g}-{max(v):.3g})",
                        f"{runs[0]['theory_' + col].iloc[layer]:.3g}",
                    ]
                rows.append(f"| {norm} | {padding} | {layer} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def conv_channels() -> str:
    """docs/theory.md: BatchNorm conv stacks with circular padding (8 x 8, batch 16, 100 layers):
    the measured std at layer 99 (mean of seeds 0 and 1) by the number of channels, against the
    mean field's, which does not depend on it."""
    rows = ["| channels | std at layer 29 | std at layer 99 | theory_std |", "|---|---|---|---|"]
    for c in (16, 64, 256):
        runs = _depth_runs(range(2), arch="conv", channels=c, image_size=8, padding="circular")
        at = [_seed_mean([float(t["std"].iloc[i]) for t in runs]) for i in (29, 99)]
        rows.append(f"| {c} | {at[0]:.4f} | {at[1]:.4f} | {runs[0]['theory_std'].iloc[99]:.4f} |")
    return "\n".join(rows) + "\n"


TANH_SEEDS = range(8)


def tanh_seeds() -> str:
    """docs/statistics.md: the tanh stack (xavier, no norm, width 256, depth 50): measured std
    per seed against theory_std, and the mean gap."""
    runs = _depth_runs(TANH_SEEDS, depth=50, norm="none", activation="tanh", init="xavier")
    layers = (0, 10, 20, 30, 40, 49)
    rows = ["| layer | " + " | ".join(f"seed {s}" for s in TANH_SEEDS) + " | mean | theory_std | theory / mean |"]
    rows.append("|---" * (len(TANH_SEEDS) + 4) + "|")
    for i in layers:
        v = [float(t["std"].iloc[i]) for t in runs]
        th = float(runs[0]["theory_std"].iloc[i])
        rows.append(
            f"| {i} | "
            + " | ".join(f"{x:.4f}" for x in v)
            + f" | {_seed_mean(v):.4f} | {th:.4f} | {th / _seed_mean(v):.3f} |"
        )
    return "\n".join(rows) + "\n"


def train_eval_gap() -> str:
    """docs/statistics.md: the train/eval gap with exact statistics: its leading term
    sqrt(3 / (2B)), the exact sqrt(E(s - 1)^2 + 1/B) (s the biased batch std in units of sigma,
    for Gaussian input), and the measured root-mean-square of `train_eval_gap` over iterations
    500-1499 and the 4 channels (`precise`, seed 0)."""
    import math

    import bncli

    rows = [
        "| B | sqrt(3 / (2B)) | sqrt(E(s - 1)^2 + 1/B) | measured (RMS) | measured (mean) |",
        "|---|---|---|---|---|",
    ]
    for b in (8, 32):
        # E s = sqrt(2 / B) Gamma(B / 2) / Gamma((B - 1) / 2) for s^2 = chi^2_(B-1) / B
        es = math.sqrt(2 / b) * math.exp(math.lgamma(b / 2) - math.lgamma((b - 1) / 2))
        exact = math.sqrt((b - 1) / b - 2 * es + 1 + 1 / b)
        t = bncli.convergence(batch_size=b, iterations=1500, device="cpu").table
        gap = t[(t["estimator"] == "precise") & (t["iteration"] >= 500)]["train_eval_gap"]
        rms = math.sqrt(float((gap**2).mean()))
        rows.append(f"| {b} | {math.sqrt(3 / (2 * b)):.3f} | {exact:.3f} | {rms:.3f} | {float(gap.mean()):.3f} |")
    return "\n".join(rows) + "\n"


CONVERGENCE_SEEDS = range(10)


def convergence_seeds() -> str:
    """docs/statistics.md: the convergence example's steps to within 1% (momentum 0.01, 0.1, 0.3,
    batch 32, 1000 iterations) for seeds 0-9, in float32 and float64: the cumulative and
    precise estimates."""
    import statistics

    import bncli

    rows = ["| dtype | estimator | " + " | ".join(f"seed {s}" for s in CONVERGENCE_SEEDS) + " | within 1% | median |"]
    rows.append("|---" * (len(CONVERGENCE_SEEDS) + 4) + "|")
    for dtype in ("float32", "float64"):
        steps = [
            bncli.convergence(momentum=[0.01, 0.1, 0.3], seed=s, dtype=dtype, device="cpu").info["steps_to_1pct"]
            for s in CONVERGENCE_SEEDS
        ]
        for name in ("cumulative", "precise"):
            got = [s[name] for s in steps]
            reached = [k for k in got if k is not None]
            # a seed that never got there counts as more than any (a censored median); "-" if half or more did not
            median = statistics.median([k if k is not None else 10**9 for k in got])
            shown = (
                "-" if 2 * len(reached) <= len(got) else str(int(median)) if median == int(median) else f"{median:.1f}"
            )
            cells = " | ".join("-" if k is None else str(k) for k in got)
            rows.append(f"| {dtype} | {name} | {cells} | {len(reached)}/{len(got)} | {shown} |")
    return "\n".join(rows) + "\n"


def rounding() -> str:
    """docs/guarantees.md: how far float32 rounding travels in the notebook's BN-ReLU stack
    (100 layers, width 256, batch 16, seed 0): the same weights and input, cast to float32, run
    in float32 and in float64; the RMS difference of the output values per layer, and the
    relative difference of std, abs_max and grad_std."""
    import math

    import torch

    from bncli import config, report, studies
    from bncli.studies.depth.net import Net, make_cotangent, make_input

    cpu = torch.device("cpu")
    spec = studies.get("depth-study").CONFIG
    nets = {d: Net.of(config.load(spec, None, device="cpu", dtype=d)) for d in ("float32", "float64")}
    net64 = nets["float64"]
    arch = net64.arch_module()
    ws = [arch.make_weight(net64, i, cpu).float() for i in range(net64.depth)]  # float32 values, shared
    x0 = make_input(net64, cpu).float()
    cot = make_cotangent(net64, cpu, tuple(x0.shape)).float()
    out = {}
    for d, net in nets.items():
        dtype = getattr(torch, d)
        step = arch.step(net, cpu)
        xs, x = [], x0.to(dtype).clone().requires_grad_()
        for w in ws:
            x = step(x, w.to(dtype))
            x.retain_grad()
            xs.append(x)
        (x * cot.to(dtype)).sum().backward()
        out[d] = xs
    a, b = out["float32"], out["float64"]
    ga, gb = [t.grad for t in a], [t.grad for t in b]
    a, b = [t.detach() for t in a], [t.detach() for t in b]
    diff = [float((p.double() - q).square().mean().sqrt()) for p, q in zip(a, b, strict=True)]

    def rel(f):
        return [abs(f(p.double()) / f(q) - 1) for p, q in zip(a, b, strict=True)]

    std, amax = rel(lambda t: float(t.std())), rel(lambda t: float(t.abs().max()))
    grad = [abs(float(p.double().std()) / float(q.std()) - 1) for p, q in zip(ga, gb, strict=True)]
    growth = (diff[60] / diff[0]) ** (1 / 60)
    lines = [
        "| layer | 0 | 10 | 20 | 40 | 60 | 80 | 99 |",
        "|---|---|---|---|---|---|---|---|",
        "| RMS difference of the values | " + " | ".join(f"{diff[i]:.1e}" for i in (0, 10, 20, 40, 60, 80, 99)) + " |",
        "| std, relative | " + " | ".join(f"{std[i]:.1e}" for i in (0, 10, 20, 40, 60, 80, 99)) + " |",
        "| abs_max, relative | " + " | ".join(f"{amax[i]:.1e}" for i in (0, 10, 20, 40, 60, 80, 99)) + " |",
        "| grad_std, relative | " + " | ".join(f"{grad[i]:.1e}" for i in (0, 10, 20, 40, 60, 80, 99)) + " |",
        "",
        f"The difference grows x{growth:.2f} per layer (layers 0 to 60); over layers 60 to 99 at most "
        f"{max(amax[60:]):.0%} in abs_max and {max(grad[60:]):.0%} in grad_std. The growth rates per layer: "
        f"std x{report.growth(pd_series([float(t.std()) for t in a])):.4f} in float32 and "
        f"x{report.growth(pd_series([float(t.std()) for t in b])):.4f} in float64; grad_std going backwards "
        f"x{report.growth(pd_series([float(t.std()) for t in ga]), backwards=True):.4f} and "
        f"x{report.growth(pd_series([float(t.std()) for t in gb]), backwards=True):.4f}.",
    ]
    assert math.isfinite(growth)
    return "\n".join(lines) + "\n"


def pd_series(values):
    import pandas as pd

    return pd.Series(values)


# -- the train study's shipped sweeps, at full size: run once per make docs, for the numbers and pictures --

TRAIN_SWEEPS = ("bn_paper", "lr_tolerance")
_train_dir: list[Path] = []


def train_sweeps() -> Path:
    """A directory holding both shipped train sweeps, run once (at their full size) per make docs."""
    if not _train_dir:
        import atexit

        import bncli

        out = Path(tempfile.mkdtemp(prefix="bncli-train-docs-"))
        atexit.register(shutil.rmtree, out, True)
        for name in TRAIN_SWEEPS:
            bncli.sweep(ROOT / "configs" / "sweeps" / f"{name}.yaml", out=out)
        _train_dir.append(out)
    return _train_dir[0]


def _runs(name: str):
    """(settings, train.csv, layers.csv) of every run of shipped train sweep `name`."""
    import pandas as pd
    import yaml

    for run in sorted((train_sweeps() / "sweeps" / name / "runs").iterdir()):
        settings = yaml.safe_load((run / "config.yaml").read_text())
        yield settings, pd.read_csv(run / "train.csv"), pd.read_csv(run / "layers.csv")


def _mean_sd(values) -> str:
    import statistics

    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def bn_paper_numbers() -> str:
    """README and docs/train.md: bn_paper's test accuracy at fixed steps and the last layer's
    pre-activation percentiles at the first and last step, per norm (mean ± sd over seeds)."""
    steps = (50, 100, 250, 500, 2000)
    acc: dict = {}
    pct: dict = {}
    for settings, table, _ in _runs("bn_paper"):
        t = table.set_index("step")
        acc.setdefault(settings["norm"], []).append([t.loc[s, "test_acc"] for s in steps])
        last = int(t.index.max())
        pct.setdefault(settings["norm"], []).append(
            [t.loc[s, c] for s in (0, last) for c in ("last_p15", "last_p50", "last_p85")]
        )
    rows = ["| norm | " + " | ".join(f"test acc, step {s}" for s in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for norm, runs in acc.items():
        rows.append(f"| {norm} | " + " | ".join(_mean_sd([r[i] for r in runs]) for i in range(len(steps))) + " |")
    rows += ["", "| norm | p15, p50, p85 at step 0 | at step 2000 |", "|---|---|---|"]
    for norm, runs in pct.items():
        mean = [sum(r[i] for r in runs) / len(runs) for i in range(6)]
        rows.append(
            f"| {norm} | {', '.join(f'{v:.2f}' for v in mean[:3])} | {', '.join(f'{v:.2f}' for v in mean[3:])} |"
        )
    return "\n".join(rows) + "\n"


def lr_tolerance_numbers() -> str:
    """README and docs/train.md: per norm, the largest learning rate no seed diverged at, and
    the largest whose final loss (mean over seeds) is under half the initial ln(classes)."""
    import math

    final: dict = {}
    for settings, table, _ in _runs("lr_tolerance"):
        loss = float(table["loss"].iloc[-1])
        final.setdefault(settings["norm"], {}).setdefault(settings["lr"], []).append(loss)
    half = math.log(10) / 2
    rows = [
        f"| norm | largest lr, no seed diverged | largest lr, final loss < ln(10) / 2 = {half:.3f} | diverged runs |",
        "|---|---|---|---|",
    ]
    for norm, by_lr in final.items():
        finite = [lr for lr, v in by_lr.items() if all(math.isfinite(x) for x in v)]
        trains = [lr for lr in finite if sum(by_lr[lr]) / len(by_lr[lr]) < half]
        bad = (
            ", ".join(
                f"{lr:g}: {sum(not math.isfinite(x) for x in v)}/{len(v)}"
                for lr, v in by_lr.items()
                if not all(math.isfinite(x) for x in v)
            )
            or "none"
        )
        rows.append(f"| {norm} | {max(finite):g} | {max(trains):g} | {bad} |")
    return "\n".join(rows) + "\n"


def train_summary() -> str:
    """README: bn_paper's test accuracy at steps 100 and 2000 and lr_tolerance's largest learning
    rates per norm, in words (docs/train.md has the tables)."""
    import math
    import statistics

    acc: dict = {}
    for settings, table, _ in _runs("bn_paper"):
        t = table.set_index("step")
        acc.setdefault(settings["norm"], []).append((t.loc[100, "test_acc"], t.loc[2000, "test_acc"]))
    final: dict = {}
    for settings, table, _ in _runs("lr_tolerance"):
        final.setdefault(settings["norm"], {}).setdefault(settings["lr"], []).append(float(table["loss"].iloc[-1]))

    def largest(norm: str) -> tuple[float, float]:
        by_lr = final[norm]
        finite = [lr for lr, v in by_lr.items() if all(math.isfinite(x) for x in v)]
        return max(finite), max(lr for lr in finite if statistics.mean(by_lr[lr]) < math.log(10) / 2)

    def at(norm: str, i: int) -> str:
        return f"{statistics.mean(a[i] for a in acc[norm]):.3f}"

    (bn_finite, bn_trains), (none_finite, none_trains) = largest("batchnorm"), largest("none")
    return (
        f"Test accuracy (mean of 3 seeds) at step 100: {at('batchnorm', 0)} with BN, {at('none', 0)} without; at step "
        f"2000: {at('batchnorm', 1)} and {at('none', 1)}.\nThe largest learning rate whose final loss is under half of "
        f"ln(10): {bn_trains:g} with BN, {none_trains:g} without; no seed diverged up to lr {bn_finite:g} with BN, "
        f"{none_finite:g} without.\n"
    )


def train_images() -> None:
    """docs/img/bn_paper.png and lr_tolerance.png (the sweeps' own plots) and train_heatmap.png
    (lr_tolerance's std per layer over training at lr 0.3, seed 0, with and without BN)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bncli.studies.train import plots

    out = train_sweeps() / "sweeps"
    for name in TRAIN_SWEEPS:
        shutil.copyfile(out / name / "train.png", ROOT / "docs" / "img" / f"{name}.png")
        print(f"drew docs/img/{name}.png")
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), layout="constrained")
    for ax, (settings, _, layers) in zip(
        axes, [r for r in _runs("lr_tolerance") if r[0]["lr"] == 0.3 and r[0]["seed"] == 0], strict=True
    ):
        plots.heatmap(plt, layers, "std", f"std per layer, lr 0.3, norm {settings['norm']}", ax=ax)
    fig.savefig(ROOT / "docs" / "img" / "train_heatmap.png", dpi=110)
    plt.close(fig)
    print("drew docs/img/train_heatmap.png")


def _accepted(f, hint) -> str:
    """What a field accepts, in words: its type and bounds or its choices (with what each means),
    then its help."""
    import typing

    from bncli.fields import without_none

    kind, optional = without_none(hint)
    listed = typing.get_origin(kind) is list
    item = without_none(typing.get_args(kind)[0])[0] if listed else kind
    bounds = f" {f.bounds()}" if f.bounds() else ""
    if f.choices is not None and any(f.choice_help(w) for w in f.words()):
        what = f"{f.help}. " + "; ".join(f"`{w}`: {f.choice_help(w)}" for w in f.words())
    elif f.choices is not None:
        what = "one of " + ", ".join(f"`{w}`" for w in f.words()) + f": {f.help}"
    elif item is str:
        what = f.help
    else:
        noun = {int: "integer", float: "number", bool: "true or false"}[item]
        what = (
            f"{noun}s{bounds}, a list or one; comma-separated on the command line" if listed else f"{noun}{bounds}"
        ) + f": {f.help}"
    if f.none is not None:
        what += f"; `none` (YAML `null`) for {f.none}"
    elif optional and f.default is None and f.shown is None:
        what += " (`null`: not given)"
    return what


def _default(f) -> str:
    """The default as config.yaml writes it, or, for one that follows other fields, what it follows."""
    if f.default is None:
        return f.shown or "null"
    values = f.default if isinstance(f.default, list) else [f.default]
    return ", ".join(
        repr(v) if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v) for v in values
    )


def config_fields() -> str:
    """docs/configs.md: every field of every study, from its spec (bncli/fields.py)."""
    import typing

    from bncli import studies

    out = []
    for name in studies.names():
        mod = studies.get(name)
        out += [f"**{name}** (`bncli {name} --help`)", "", "| field | default | accepted |", "|---|---|---|"]
        hints = typing.get_type_hints(mod.CONFIG)
        for field, f in mod.CONFIG.FIELDS.items():
            out.append(f"| `{field}` | {_default(f)} | {_accepted(f, hints[field])} |")
        own = mod.OPTIONS.FIELDS
        if own:
            out.append("")
            out.append(
                "Its command's own options (not config fields): "
                + "; ".join(f"`--{k.replace('_', '-')}`: {f.help}" for k, f in own.items())
                + "."
            )
        out.append("")
    return "\n".join(out)


def statistics_table() -> str:
    """docs/statistics.md: the depth study's columns, from their records (studies/depth/stats.py)."""
    from bncli.studies.depth import stats
    from bncli.studies.depth.net import ARCHS, architecture

    branch = [a for a in ARCHS if architecture(a).BRANCH]
    rows = ["| column | on | definition | source |", "|---|---|---|---|"]
    for s in stats.STATS:
        if s.kind == "id":
            continue
        on = f"`--{s.on.replace('_', '-')}`" if s.on else "always"
        if s.branch:
            on = ", ".join(branch)
        elif s.archs:
            on += f" ({', '.join(s.archs)})"
        rows.append(f"| `{s.name}` | {on} | {s.what} | {s.source} |".replace("|  |", "| |"))
    return "\n".join(rows) + "\n"


def probe_columns() -> str:
    """docs/probe.md: probe.csv's columns, from their records (studies/probe/stats.py: the depth study's, where
    the definitions are the same)."""
    from bncli.studies.probe import stats

    rows = ["| column | on | definition |", "|---|---|---|"]
    for s in stats.STATS:
        on = f"`--{s.on.replace('_', '-')}`" if s.on else "always"
        rows.append(f"| `{s.name}` | {on} | {s.what} |")
    return "\n".join(rows) + "\n"


# made from the specs, records and closed forms alone: tests/test_docs.py checks them
FAST = ("config_fields", "statistics_table", "probe_columns", "bn_relu_std")


def generate(text: str, only: tuple[str, ...] | None = None) -> str:
    """The text with every generated section (or those named in `only`) made again."""

    def again(m: re.Match) -> str:
        if only is not None and m.group(2) not in only:
            return m.group(0)
        return m.group(1) + globals()[m.group(2)]() + m.group(3)

    return GENERATED.sub(again, text)


def commands(block: str) -> list[tuple[str, str]]:
    """(command, output shown) pairs of one console block."""
    parts = re.split(r"^\$ (bncli .*)$", block, flags=re.M)
    return [(parts[i], parts[i + 1].strip("\n")) for i in range(1, len(parts), 2)]


@contextmanager
def scratch():
    """A scratch directory, the working directory meanwhile, with configs/ copied in."""
    old = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="bncli-docs-") as tmp:
        shutil.copytree(ROOT / "configs", Path(tmp) / "configs")
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


def run(command: str) -> tuple[int, str]:
    """Run `bncli ...` in this process, as a 130-column terminal (or, ending in `| cat`, a
    pipe) shows it; (exit code, stdout and stderr as the terminal interleaves them)."""
    from typer.testing import CliRunner

    from bncli import cli

    piped = command.endswith("| cat")
    args = shlex.split(command.removesuffix("| cat"))[1:]
    old_env, old_tty = os.environ.get("COLUMNS"), cli._is_terminal
    os.environ["COLUMNS"] = COLUMNS
    cli._is_terminal = (lambda stream: False) if piped else (lambda stream: True)
    try:
        result = CliRunner().invoke(cli.app, args, prog_name="bncli")
    finally:
        cli._is_terminal = old_tty
        if old_env is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = old_env
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise RuntimeError(f"{command}: {result.exception!r}") from result.exception
    return result.exit_code, "\n".join(line.rstrip() for line in result.output.rstrip("\n").splitlines())


def render(text: str) -> str:
    """The markdown with every console block's outputs made again (in the working directory)."""

    def block(match: re.Match) -> str:
        shown = []
        for command, old in commands(match.group(1)):
            code, output = run(command)
            if (code != 0) != ends_in_error(output):
                raise RuntimeError(f"{command}: exit code {code}, output:\n{output}")
            if normalize(output) == normalize(old) and "--force" not in sys.argv:
                output = old  # only numbers or times differ: keep the diff to what changed
            shown.append(f"$ {command}\n{output}\n" if output else f"$ {command}\n")
        return "```console\n" + "".join(shown) + "```"

    return BLOCK.sub(block, text)


def ends_in_error(output: str) -> bool:
    lines = output.splitlines()
    return bool(lines) and lines[-1].startswith("Error: ")


NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?")


def normalize(output: str) -> str:
    """The output with timestamps and numbers masked, runs of a box character made one and
    spaces collapsed: what must not differ between two machines."""
    out = re.sub(r"\d{8}-\d{6}", "<time>", output)
    out = re.sub(r"\d{4}-\d\d-\d\dT[\d:.+]+", "<time>", out)
    out = NUMBER.sub("#", out)
    out = re.sub(r"([─━═│┃┏┓┗┛┡┩└┘┌┐├┤┬┴┼╇╈┳┻╋])\1+", r"\1", out)
    return "\n".join(" ".join(line.split()) for line in out.splitlines() if line.strip())


def images() -> None:
    for target, (command, drawn) in IMAGES.items():
        with scratch() as tmp:
            code, output = run(f"bncli {command}")
            if code != 0:
                raise RuntimeError(f"bncli {command}: exit code {code}\n{output}")
            shutil.copyfile(tmp / drawn, ROOT / target)
        print(f"drew {target}")


def vision_python() -> Path | None:
    """The vision venv's python (torchvision, timm, transformers), where there is one."""
    given = os.environ.get("BNCLI_VISION_PYTHON")
    path = Path(given) if given else ROOT / ".venv-vision" / "bin" / "python"
    # absolute: the pictures are drawn from a scratch directory, where a relative path would not resolve
    path = path if path.is_absolute() else ROOT / path
    return path if path.exists() else None


def vision_images() -> None:
    python = vision_python()
    if python is None:
        print(f"left {', '.join(VISION_IMAGES)} as they are: no vision venv (make docs builds .venv-vision)")
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # built from configs, never downloaded
    for target, (commands, drawn) in VISION_IMAGES.items():
        with scratch() as tmp:
            for command in commands:
                subprocess.run([str(python), "-m", "bncli", *shlex.split(command)], check=True, env=env)
            shutil.copyfile(tmp / drawn, ROOT / target)
        print(f"drew {target} ({python})")


def main() -> None:
    for name in FILES:
        path = ROOT / name
        if not path.exists() or not (BLOCK.search(path.read_text()) or GENERATED.search(path.read_text())):
            continue
        with scratch():
            text = generate(render(path.read_text()))
        if text != path.read_text():
            path.write_text(text)
            print(f"updated {name}")
        else:
            print(f"{name}: unchanged")
    if "--no-images" not in sys.argv:
        images()
        train_images()
        vision_images()


if __name__ == "__main__":
    main()
