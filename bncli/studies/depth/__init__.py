"""Std of every layer's output in a deep MLP, conv stack, ResNet or transformer.

Stops at the first non-finite layer. Linear(bias=False) -> norm -> activation, `depth` times, on N(0,1) input of shape
(batch_size, width). --arch conv uses Conv2d(C, C, k) on (batch_size, C, H, W) maps;
--arch resnet stacks pre-activation residual blocks in stages (a row per block, with the
branch's channel variance), with Brock et al.'s normalizer-free options (--ws scaled,
--nf-beta); --arch transformer stacks self-attention and MLP blocks on (batch_size, tokens,
width) token matrices (a row per block, with the tokens' mean cosine). Writes layers.csv,
config.yaml and meta.json under OUT/depth-study/NAME/.

Each layer's row also has Brock et al.'s chan_sq_mean and chan_var and the mean-field
prediction theory_std; --erank and --grads add the effective rank and the gradients.

Example: bncli depth-study --init normal --norm none --depth 50 --grads
Example: bncli depth-study --arch resnet --norm none --ws scaled --nf-beta
Example: bncli depth-study --arch transformer --norm-position post --grads
"""

# The study is this package: this module declares it (its config, columns and names) and loads
# nothing heavy, so `bncli depth-study --help` is instant; the network code (net.py, the
# architectures mlp.py, conv.py, resnet.py, transformer.py, and components.py), the statistics
# (stats.py), the run (engine.py), the theory (theory.py) and the plots (plots.py) load when a
# run needs them.

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from bncli import fields, report
from bncli.errors import BncliError, plural, word
from bncli.fields import Config, field
from bncli.runtime import capacity, resolve_device
from bncli.studies.base import Count, MeanSd, Number, Result, Summary
from bncli.studies.depth import stats
from bncli.studies.depth.components import ACTIVATIONS, INITS, NORMS
from bncli.studies.depth.net import ARCHS, Net, architecture

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

    from bncli.figures import Options
else:
    from bncli.lazy import lazy

    np = lazy("numpy")

ORDERS = {"linear-norm-act": "act(norm(x W^T)), the notebook's", "linear-act-norm": "norm(act(x W^T))"}
NORM_POSITIONS = {
    "pre": "x + alpha f(norm(x)) for each of attention and MLP (pre-LN)",
    "post": "norm(x + alpha f(x)) (post-LN, the original transformer's)",
}
WS = {
    "none": "the init's weights as drawn",
    "scaled": "Brock et al.'s Scaled WS: per output channel zero mean and std gamma / sqrt(fan_in), "
    "gamma the activation's (1 / its std on N(0, 1))",
}
PADDINGS = {
    "zeros": "zero padding, torch's default: a border pixel's window overhangs the image",
    "circular": "the map wraps around (a torus): every pixel has a full window",
}
# fields that change only these architectures: another with a non-default value is refused
ONLY = {
    "ws": ("resnet",),
    "nf_beta": ("resnet",),
    "causal": ("transformer",),
    "norm_position": ("transformer",),
    "padding": ("conv", "resnet"),
}
BN_MODES = {
    "train": "batch statistics, as during training",
    "eval": "running statistics, 0 and 1 at init: almost the identity",
}


class DepthConfig(Config):
    """A deep MLP, Linear(bias=False) -> norm -> activation, on N(0,1) input (or conv, ResNet, transformer stacks)."""

    depth: int = field(100, ge=1, help="number of layers (resnet: stages x blocks; transformer: blocks)")
    width: int = field(256, ge=1, help="features per layer")
    batch_size: int = field(16, ge=1, help="rows of the N(0,1) input")
    init: str = field("kaiming", choices=INITS, help="weight init scheme")
    init_std: float = field(1.0, gt=0, help="std of the normal and trunc_normal inits")
    norm: str = field(
        "batchnorm", choices=NORMS, help="normalization after each linear map (transformer: see norm_position)"
    )
    activation: str = field("relu", choices=ACTIVATIONS, help="activation after the norm (transformer: the MLP's)")
    seed: int = fields.seed()
    device: str = fields.device()
    dtype: str = fields.dtype()
    keep_weights: bool = field(
        False,
        flag="--keep-weights/--stream-weights",
        shown="stream",
        help="build every weight up front, or draw each when its layer runs (same numbers, less memory)",
    )
    init_gain: float = field(1.0, gt=0, help="gain of the orthogonal, xavier, xavier_uniform and lecun_normal inits")
    groups: int = field(32, ge=1, help="the number of groups of groupnorm; must divide width (channels)")
    bn_mode: str = field("train", choices=BN_MODES, help="what batchnorm normalises with")
    negative_slope: float = field(0.01, ge=0, le=1e6, help="slope of leaky_relu below zero")
    order: str = field("linear-norm-act", choices=ORDERS, help="order of norm and activation after each linear map")
    residual: float = field(
        None,
        ge=0,
        shown="0.0, 1.0 for resnet and transformer",
        metavar="ALPHA",
        help="residual stack: each layer (block) is x + ALPHA * f(x); 0: no skip connection (see skipinit)",
    )
    grads: bool = field(False, help="one backward pass: grad_std and weight_grad_norm (keeps every weight)")
    erank: bool = field(False, help="effective rank of every layer's output (an SVD per layer)")
    arch: str = field("mlp", choices=ARCHS, help="architecture")
    channels: int = field(64, ge=1, help="channels of the input and the first stage (conv, resnet)")
    image_size: int = field(16, ge=1, help="height = width of the input (conv, resnet)")
    kernel_size: int = field(3, ge=1, help="odd kernel size of the convs (conv, resnet)")
    stages: int = field(3, ge=1, help="stages; each after the first halves H and W and doubles the channels (resnet)")
    blocks: int = field(8, ge=1, help="residual blocks per stage (resnet)")
    tokens: int = field(64, ge=1, help="tokens per sample: the input is (batch_size, tokens, width) (transformer)")
    heads: int = field(4, ge=1, help="attention heads; must divide width (transformer)")
    mlp_ratio: int = field(4, ge=0, help="the MLP's hidden width over width; 0: attention only (transformer)")
    causal: bool = field(
        False, help="causal attention mask: a token sees itself and the tokens before it (transformer)"
    )
    norm_position: str = field("pre", choices=NORM_POSITIONS, help="where the norm sits in a block (transformer)")
    ws: str = field("none", choices=WS, help="weight standardization of every conv weight (resnet)")
    nf_beta: bool = field(
        False,
        help="each branch sees x / beta, beta^2 = 1 + k alpha^2 its input's variance k blocks into a stage (resnet)",
    )
    skipinit: bool = field(
        False,
        help="SkipInit (De and Smith 2020): the skip connection kept, each branch scaled by 0: blocks are the identity",
    )
    padding: str = field("zeros", choices=PADDINGS, help="how the k x k convs pad each map's border (conv, resnet)")

    def resolve(self, given: set[str]) -> dict[str, Any]:
        """The norm's and the architecture's checks; residual and (resnet) depth follow arch."""
        arch = architecture(self.arch)
        for name, archs in ONLY.items():
            if self.arch not in archs and getattr(self, name) != self.FIELDS[name].default:
                value = word(getattr(self, name))
                raise ValueError(f"{name} {value} is for arch {' or '.join(archs)}, not arch {self.arch}")
        if self.skipinit and self.residual:
            raise ValueError(
                f"skipinit scales each branch by 0 at init: residual must be 0 or left out with it, got {self.residual}"
            )
        residual = 0.0 if self.skipinit else arch.RESIDUAL if self.residual is None else self.residual
        net = Net.of(self, residual=residual)
        features, name, pixels = arch.features(net)
        problem = net.norm.check(net, features, name, pixels)
        if problem:
            raise ValueError(problem)
        if self.batch_size * features * pixels < 2:
            raise ValueError(f"batch_size x {name} must be at least 2: a std needs two values")
        return {"residual": residual, **arch.check(net, given)}


NAME = "depth-study"
CONFIG = DepthConfig


class DepthOptions(Config):
    """What `bncli depth-study` shows, beyond the config."""

    every: int | None = field(
        None,
        ge=1,
        metavar="K",
        help="show every K-th layer on screen (default: all up to 100 layers, else about 50 rows)",
    )


OPTIONS = DepthOptions
CSV = "layers.csv"
COLUMNS = [s.name for s in stats.STATS]  # every architecture's; stats.columns(arch) gives one's
ID_COLUMNS = ["layer"]
TEXT_COLUMNS: list[str] = []
INFO = {"diverged_at": int | None, "layers_done": int, "grad_growth_theory": float}
LABEL_KEYS = ["init", "norm", "activation"]
PLOT = "std_by_layer.png"
RUN_PLOT = False
SUMMARY = ["last-layer std", "min std", "max std", "diverged"]
COMPARE_METRIC = "std"  # what `bncli compare` sets side by side unless --metric says


def columns(settings: dict[str, Any]) -> list[str]:
    arch = settings.get("arch", DepthConfig.FIELDS["arch"].default)
    return stats.columns(arch if arch in ARCHS else DepthConfig.FIELDS["arch"].default)


def network(cfg: DepthConfig) -> Net:
    return Net.of(cfg)


def flags(cfg: DepthConfig) -> set[str]:
    """The statistics' flags that are set (grads, erank)."""
    return {f for f in stats.flags() if getattr(cfg, f)}


def label(cfg: DepthConfig) -> str:
    """The part of the default run name that tells runs apart."""
    arch = "" if cfg.arch == DepthConfig.FIELDS["arch"].default else f"{cfg.arch}-"
    return f"{arch}{cfg.init}-{cfg.norm}"


def progress_total(cfg: DepthConfig) -> int | None:
    """Long runs get a progress bar, one step a layer."""
    n = network(cfg)
    long = cfg.depth > 500 or cfg.depth * n.arch_module().layer_macs(n) > 5e10
    return cfg.depth if long else None


def estimate_bytes(cfg: DepthConfig) -> int:
    """Peak memory a run needs, before anything is allocated."""
    from bncli.studies.depth import engine

    return engine.estimate_bytes(network(cfg), flags(cfg), cfg.keep_weights)


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def describe_size(cfg: DepthConfig) -> str:
    n = network(cfg)
    held = cfg.depth if cfg.keep_weights or cfg.grads else 1
    return (
        f"{n.arch_module().sizes(n)}, {cfg.dtype} "
        f"({held} weight(s) of {n.arch_module().held(n)} held at once, about {_gb(estimate_bytes(cfg))})"
    )


def preflight(cfg: DepthConfig) -> torch.device:
    device = resolve_device(cfg.device)
    need, have = estimate_bytes(cfg), capacity(device)
    if need > 0.9 * have:
        n = network(cfg)
        arch = n.arch_module()
        raise BncliError(
            f"too large: {arch.sizes(n)}{', keep_weights' if cfg.keep_weights else ''} needs about {_gb(need)} "
            f"but {device} has {_gb(have)}; use a smaller {arch.SMALLER}"
        )
    return device


def run(cfg: DepthConfig, device: torch.device, progress: Callable[[int], None] | None = None) -> Result:
    """Forward N(0,1) input through the network; stop at the first non-finite output (engine.run)."""
    from bncli.studies.depth import engine

    return engine.run(network(cfg), flags(cfg), cfg.keep_weights, device, progress)


# -- rendering ----------------------------------------------------------------------------------


def auto_every(depth: int) -> int:
    """Every layer up to 100 layers, then about 50 rows."""
    return 1 if depth <= 100 else math.ceil(depth / 50)


def shown_layers(n: int, every: int, diverged_at: int | None = None) -> list[int]:
    """Every `every`-th layer, plus the first, the last and the diverging one, always."""
    keep = set(range(0, n, every)) | {0, n - 1}
    if diverged_at is not None:
        keep.add(diverged_at)
    return sorted(i for i in keep if 0 <= i < n)


def layer_table(table: pd.DataFrame, every: int | None = None, diverged_at: int | None = None) -> Table:
    every = every or auto_every(len(table))
    cols = report.shown_columns(table)
    t = report.table(cols)
    for i in shown_layers(len(table), every, diverged_at):
        row = table.iloc[i]
        style = "red" if i == diverged_at else None
        t.add_row(*[str(int(row[c])) if c == "layer" else report.fmt(float(row[c])) for c in cols], style=style)
    return t


def summary(table: pd.DataFrame, meta: dict[str, Any], batch_size: Any = None) -> Text:
    """`std over 100 layers: min 0.570, max 0.595, last 0.583`, the growth factors per layer
    of std and (going backwards) grad_std, with the mean field's (bncli's formula at the run's
    batch size, and Yang et al.'s large-batch limit), and, if so, where it diverged."""
    lines = []
    diverged_at = meta.get("diverged_at")
    finite = table["std"][table["std"].map(math.isfinite)]
    if len(finite):
        lines.append(
            f"std over {plural(len(table), 'layer')}: min {report.num(finite.min())}, "
            f"max {report.num(finite.max())}, last {report.num(table['std'].iloc[-1])}"
        )
    g = report.growth(table["std"]) if len(table) else None
    if g is not None:
        lines.append(f"std growth per layer: x{g:.4f} (geometric mean, first to last layer)")
    g = report.growth(table["grad_std"], backwards=True) if "grad_std" in report.shown_columns(table) else None
    if g is not None:
        pred = meta.get("grad_growth_theory")
        lines.append(
            f"grad_std growth per layer, going backwards: x{g:.4f}"
            + (
                f" (mean field: x{pred:.4f} at batch {batch_size}, bncli's finite-batch formula; "
                f"x{math.sqrt(math.pi / (math.pi - 1)):.4f} as the batch grows, Yang et al. 2019)"
                if pred
                else ""
            )
        )
    if diverged_at is not None:
        lines.append(f"diverged: non-finite output at layer {diverged_at}")
    if meta.get("status") == "interrupted":
        lines.append(f"interrupted after {plural(len(table), 'layer')}")
    return Text("\n".join(lines))


def render(run: Any, every: int | None = None) -> list[Any]:
    """The layers (every `every`-th) and the summary lines, after a run and in `bncli show`."""
    table = layer_table(run.table, every, run.meta.get("diverged_at"))
    return [table, summary(run.table, run.meta, run.settings.get("batch_size"))]


def summarize(runs: list[pd.DataFrame]) -> Summary:
    """SUMMARY over a config's finished runs: the last layer's std as mean ± sd over the seeds
    that did not diverge, the min and max std over layers and seeds, the diverged count."""
    std = np.concatenate([r["std"].to_numpy(float) for r in runs]) if runs else np.array([])
    std = std[np.isfinite(std)]
    last = [float(r["std"].iloc[-1]) for r in runs if r["status"].iloc[0] == "ok"]
    return {
        "last-layer std": MeanSd.over(last, len(runs)),
        "min std": Number(float(std.min()) if len(std) else None),
        "max std": Number(float(std.max()) if len(std) else None),
        "diverged": Count(sum(r["status"].iloc[0] == "diverged" for r in runs), len(runs)),
    }


def draw(plt: Any, table: pd.DataFrame, metric: str | None, opts: Options | None = None) -> Any:
    """`metric` (default std) against layer; conv and ResNet runs default to Brock et al.'s
    signal propagation plot (plots.py)."""
    from bncli.studies.depth import plots

    return plots.draw(plt, table, metric, opts)


def auto_facet(table: pd.DataFrame, metric: str | None, columns: list[str]) -> str | None:
    from bncli.studies.depth import plots

    return plots.auto_facet(table, metric, columns)
